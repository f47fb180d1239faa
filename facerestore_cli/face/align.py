"""Aligning faces onto the FFHQ layout at 512x512, and mapping them back.

Both models were trained on faces aligned like FFHQ: a similarity transform (rotation, uniform scale,
translation) that puts the two eyes, the nose tip and the mouth corners on fixed template points. We
estimate that transform from the detector's 5 points and warp *only the face's region*: the forward
warp computes 512x512 output pixels (after shrinking just the face's neighbourhood when the face is
much larger than 512, so that no aliasing creeps in), and the inverse warp computes only the pixels of
the face's footprint in the photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FACE_SIZE = 512

#: FFHQ 5-point template at 512x512 (image-left eye, image-right eye, nose tip, mouth corners), the
#: layout DMDNet and MemGAN were trained on (the same numbers facexlib/GFPGAN use).
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)

#: Where a face's crop reaches past the photo's edge it is filled by reflecting the photo (a
#: constant colour there made the restorers paint amber irises and magenta fringes into edge faces),
#: and :attr:`AlignedFace.valid` says which crop pixels came from inside the photo.
BORDER_MODE = cv2.BORDER_REFLECT101


@dataclass(frozen=True)
class Region:
    """An integer pixel rectangle ``[x0, x1) x [y0, y1)`` of a photo."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def union(self, other: Region) -> Region:
        return Region(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1), max(self.y1, other.y1))

    def intersects(self, other: Region) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1


@dataclass
class AlignedFace:
    """One face warped onto the template: the crop and the transform that made it.

    ``matrix`` maps photo pixel coordinates to crop coordinates (2x3, OpenCV convention).
    """

    image: np.ndarray
    matrix: np.ndarray
    landmarks5: np.ndarray
    #: float32 (S, S): 1 where the crop pixel lies inside the photo, 0 where it was filled by reflection;
    #: None when the whole crop is inside.
    valid: np.ndarray | None = None

    @property
    def inverse(self) -> np.ndarray:
        return cv2.invertAffineTransform(self.matrix)

    @property
    def scale(self) -> float:
        """Crop pixels per photo pixel (> 1 when the face is smaller than the crop)."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))


def estimate_transform(landmarks5: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """Least-squares similarity transform from the 5 points onto the template (2x3 float64).

    A closed-form Umeyama fit on all five points: robust estimators (RANSAC/LMedS) would throw away
    the one point that is off, but with only five points that point is usually the mouth of an
    expressive face, which we want to keep.
    """
    return similarity_transform(landmarks5, FFHQ_TEMPLATE_512 * (size / FACE_SIZE))


def similarity_transform(src_points: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """The least-squares similarity (Umeyama) mapping ``src_points`` onto ``dst_points`` (2x3 float64)."""
    src = np.asarray(src_points, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_points, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ValueError(f"{len(src)} source points but {len(dst)} destination points")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (s**2).sum() / len(src)
    scale = (sig * sign).sum() / var if var > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def footprint(inverse: np.ndarray, size: int, shape: tuple[int, int], pad: int = 2) -> Region:
    """Photo region covered by the ``size`` square mapped through ``inverse`` (clipped to the photo)."""
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    pts = corners @ inverse.T
    h, w = shape
    x0 = max(int(np.floor(pts[:, 0].min())) - pad, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - pad, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + pad, w)
    y1 = min(int(np.ceil(pts[:, 1].max())) + pad, h)
    return Region(x0, y0, x1, y1)


def warp_to_face(photo_rgb: np.ndarray, matrix: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """The aligned crop. Only the face's neighbourhood is read; large faces are area-shrunk first."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale >= 0.5:
        return cv2.warpAffine(photo_rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=BORDER_MODE)
    # The face is more than twice the crop: bilinear sampling would alias, so area-shrink the face's
    # neighbourhood (not the photo) to about the crop's resolution first.
    region = footprint(cv2.invertAffineTransform(matrix), size, photo_rgb.shape[:2], pad=4)
    patch = photo_rgb[region.slices()]
    factor = scale * 1.25  # leave a little resolution for the final bilinear warp
    new_w, new_h = max(1, round(patch.shape[1] * factor)), max(1, round(patch.shape[0] * factor))
    small = cv2.resize(patch, (new_w, new_h), interpolation=cv2.INTER_AREA)
    # Photo coords -> patch coords -> small coords, then the crop transform.
    fx, fy = new_w / patch.shape[1], new_h / patch.shape[0]
    to_photo = np.array([[1 / fx, 0, region.x0 + 0.5 / fx - 0.5], [0, 1 / fy, region.y0 + 0.5 / fy - 0.5]])
    composed = matrix[:, :2] @ to_photo[:, :2]
    offset = matrix[:, :2] @ to_photo[:, 2] + matrix[:, 2]
    m = np.concatenate([composed, offset[:, None]], axis=1)
    return cv2.warpAffine(small, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=BORDER_MODE)


def inside_mask(matrix: np.ndarray, shape: tuple[int, int], size: int = FACE_SIZE) -> np.ndarray | None:
    """1 for the crop pixels whose source lies inside a photo of ``shape``, 0 outside; None if all inside."""
    h, w = shape
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]], np.float64)
    pts = corners @ inverse.T
    if pts[:, 0].min() >= 0 and pts[:, 1].min() >= 0 and pts[:, 0].max() <= w - 1 and pts[:, 1].max() <= h - 1:
        return None
    grid = np.arange(size, dtype=np.float32)
    x = inverse[0, 0] * grid[None, :] + inverse[0, 1] * grid[:, None] + np.float32(inverse[0, 2])
    y = inverse[1, 0] * grid[None, :] + inverse[1, 1] * grid[:, None] + np.float32(inverse[1, 2])
    return ((x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)).astype(np.float32)


def align_face(photo_rgb: np.ndarray, landmarks5: np.ndarray, size: int = FACE_SIZE) -> AlignedFace:
    matrix = estimate_transform(landmarks5, size)
    return AlignedFace(
        image=warp_to_face(photo_rgb, matrix, size), matrix=matrix, landmarks5=np.asarray(landmarks5),
        valid=inside_mask(matrix, photo_rgb.shape[:2], size),
    )  # fmt: skip


def warp_from_face(
    face: np.ndarray, inverse: np.ndarray, region: Region, *, border_value: float | tuple = 0.0
) -> np.ndarray:
    """Map a crop (or its mask) back into a photo ``region`` only.

    ``inverse`` maps crop coordinates to photo coordinates. When the face is smaller in the photo than
    in the crop, the crop is area-shrunk first so fine restored detail does not alias.
    """
    scale = float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))  # photo px per crop px
    src = face
    m = _translate_dst(inverse, -region.x0, -region.y0)
    if scale < 0.5:
        n = face.shape[0]
        new = max(8, round(n * scale * 1.25))
        src = cv2.resize(face, (new, new), interpolation=cv2.INTER_AREA)
        f = new / n
        # small coords -> crop coords: c = (s + 0.5) / f - 0.5
        to_crop = np.array([[1 / f, 0, 0.5 / f - 0.5], [0, 1 / f, 0.5 / f - 0.5]])
        m = np.concatenate([m[:, :2] @ to_crop[:, :2], (m[:, :2] @ to_crop[:, 2] + m[:, 2])[:, None]], axis=1)
    flags = cv2.INTER_LINEAR if scale < 1.0 else cv2.INTER_CUBIC
    out = cv2.warpAffine(
        src, m, (region.width, region.height), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value
    )
    return out


def _translate_dst(matrix: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Shift the *destination* of ``matrix`` by (dx, dy)."""
    out = matrix.copy()
    out[:, 2] += (dx, dy)
    return out


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]
