"""Putting restored faces back into the photo so that nothing else changes.

Three things make a paste invisible:

* a mask that follows the face outline (jaw line, and the brows lifted to the forehead), feathered
  inwards, instead of a square that would also replace hair, ears and background;
* the restored face's low frequencies (colour cast, lighting gradients) matched to the original face,
  so the model's small tints never show as a seam; detail comes from the restorer, tone from the photo;
* compositing that is exact outside the masks: a pixel whose mask is zero is copied, never recomputed,
  so lossless photos keep every pixel away from faces bit for bit. Overlapping faces are combined by
  mask-weighted averaging, so the order of the faces does not matter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facerestore_cli.colour import bound_chroma, keep_chroma
from facerestore_cli.face.align import FACE_SIZE, Region, warp_from_face

#: Feather width as a fraction of the face crop (Gaussian sigma of the mask edge).
FEATHER = 0.025
#: Gaussian sigma, as a fraction of the crop, of the low-pass used to match tone to the original.
TONE_SIGMA = 0.05
#: Width (px of the 512 crop) over which an ``--aligned`` result fades back to its input at the border.
ALIGNED_EDGE = 12.0
#: Rec. 601 luma, used when restoring into a grey photo.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: The mask and the tone correction are smooth (sigmas of 13 and 26 px on the 512 crop), so they are
#: computed on a grid this many times coarser and interpolated up: ~20x faster, within 2% of the
#: full-resolution result.
COARSE = 4


def face_outline(landmarks68: np.ndarray) -> np.ndarray:
    """Polygon of the face: the jaw line and the eyebrows lifted to the forehead (crop coords)."""
    lm = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
    jaw = lm[0:17]
    brows = lm[17:27]
    brow_y = brows[:, 1].mean()
    chin_y = lm[8, 1]
    lift = max(chin_y - brow_y, 1.0) * 0.35
    forehead = brows.copy()
    forehead[:, 1] -= lift
    return np.concatenate([jaw, forehead[::-1]])


def _inside_distance(poly: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Distance from each grid point to the outline of a convex polygon: positive inside, <= 0 outside.

    Inside a convex polygon that distance is the smallest distance to the lines of its edges, which
    makes an erosion by a disc of radius r exactly ``distance > r``, at any resolution.
    """
    pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    centre = pts.mean(axis=0)
    dist = np.full((len(ys), len(xs)), np.inf, dtype=np.float32)
    for a, b in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        edge = b - a
        length = math.hypot(edge[0], edge[1])
        if length < 1e-9:
            continue
        normal = np.array([-edge[1], edge[0]]) / length
        if normal @ (centre - a) < 0:
            normal = -normal
        col = (normal[0] * xs).astype(np.float32)
        row = (normal[1] * ys - normal @ a).astype(np.float32)
        np.minimum(dist, row[:, None] + col[None, :], out=dist)
    return dist


def face_mask(landmarks68: np.ndarray | None, size: int = FACE_SIZE) -> np.ndarray:
    """Feathered face mask in [0, 1] on the crop, from the 68 landmarks.

    Without landmarks (or with a degenerate outline) an ellipse around the template's face is used.
    The outline is eroded by two feather widths, blurred, and the blur's remaining tail is taken off,
    so the mask is exactly 0 on and outside the outline (hair, ears and background are never blended)
    and exactly 1 well inside it. The smooth part is computed on a coarse grid (see ``COARSE``).
    """
    poly = None
    if landmarks68 is not None:
        hull = cv2.convexHull(face_outline(landmarks68).astype(np.float32))
        if cv2.contourArea(hull) >= (0.05 * size) ** 2:
            poly = hull.reshape(-1, 2)
    if poly is None:
        c = size / 512
        poly = cv2.ellipse2Poly(
            (round(256 * c), round(290 * c)), (round(150 * c), round(190 * c)), 0, 0, 360, 5
        ).astype(np.float32)
    sigma = FEATHER * size
    inset = round(2 * sigma)
    cells = max(1, -(-size // COARSE)) if size >= 16 * COARSE else size
    step = size / cells
    grid = (np.arange(cells) + 0.5) * step - 0.5  # pixel centres of the coarse grid, in crop pixels
    dist = _inside_distance(poly, grid, grid)
    # the eroded outline, anti-aliased over one coarse cell
    core = np.clip((dist - (inset - 0.5)) / step + 0.5, 0.0, 1.0)
    soft = cv2.GaussianBlur(core, (0, 0), sigma / step)
    if cells != size:
        soft = cv2.resize(soft, (size, size), interpolation=cv2.INTER_LINEAR)
    # take off the Gaussian tail that reaches past the outline (its value there, for a straight edge)
    tail = 0.5 * math.erfc(inset / (sigma * math.sqrt(2.0)))
    mask = (soft - np.float32(tail)) * np.float32(1.0 / (1.0 - tail))
    outline = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(outline, np.round(poly * 16).astype(np.int32), 1.0, lineType=cv2.LINE_AA, shift=4)
    mask *= outline
    mask[mask < 1e-3] = 0.0
    mask[mask > 1.0 - 1e-3] = 1.0
    return mask


def match_tone(
    restored: np.ndarray, original: np.ndarray, mask: np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """Replace the restored face's lowest frequencies inside the mask by the original's.

    Normalised convolution (low-pass of the masked difference divided by the low-pass of the mask)
    keeps the correction from being pulled towards the background. Both images float32 in [0, 1].
    ``valid`` (1 inside the photo) keeps crop pixels that were filled past the photo's edge out of the
    statistics: only the photo's own pixels decide the tone.
    The low-pass (sigma 5% of the crop) runs on a ``COARSE`` times smaller grid and is interpolated
    back: the correction has no detail finer than that, and the result is within 0.1 of an 8-bit level.
    """
    h, w_ = restored.shape[:2]
    sigma = TONE_SIGMA * h
    inside = mask > 0.5
    if valid is not None:
        inside &= valid > 0.5
    if np.count_nonzero(inside) < 16:
        return restored
    w = inside.astype(np.float32)
    diff = np.subtract(original, restored, dtype=np.float32)
    diff *= w[..., None]
    factor = COARSE if min(h, w_) >= 16 * COARSE else 1
    if factor > 1:
        small = (max(1, w_ // factor), max(1, h // factor))
        diff = cv2.resize(diff, small, interpolation=cv2.INTER_AREA)
        w = cv2.resize(w, small, interpolation=cv2.INTER_AREA)
    num = cv2.GaussianBlur(diff, (0, 0), sigma / factor)
    den = cv2.GaussianBlur(w, (0, 0), sigma / factor)
    correction = num / np.maximum(den, 1e-3)[..., None]
    if factor > 1:
        correction = cv2.resize(correction, (w_, h), interpolation=cv2.INTER_LINEAR)
    out = np.add(restored, correction.reshape(restored.shape), dtype=np.float32)
    return np.clip(out, 0.0, 1.0, out=out)


@dataclass
class PasteJob:
    """One restored face to composite.

    ``inverse`` maps crop coordinates to the *original photo's* coordinates; ``alpha`` is the
    feathered mask already multiplied by the user's blend weight.
    """

    face: np.ndarray  # (S, S, 3) float32 RGB in [0, 1]
    alpha: np.ndarray  # (S, S) float32 in [0, 1]
    inverse: np.ndarray  # (2, 3)


def _scaled_inverse(inverse: np.ndarray, upscale: float) -> np.ndarray:
    """Compose with the photo's up-scaling (pixel centres: x' = (x + 0.5) * s - 0.5)."""
    if upscale == 1:
        return inverse
    out = inverse * upscale
    out[:, 2] += 0.5 * upscale - 0.5
    return out


def _to_colour_space(face: np.ndarray, colour_channels: int) -> np.ndarray:
    if colour_channels == 1:
        return (face @ LUMA)[..., None]
    return face


def _support_region(alpha: np.ndarray, inverse: np.ndarray, shape: tuple[int, int]) -> Region | None:
    """Photo region outside which the warped ``alpha`` is certainly 0 (clipped to the photo).

    Only the mask's non-zero part of the crop is mapped, padded by the reach of the interpolation
    (bicubic: 2 crop pixels; when the crop is area-shrunk first, 2 pixels of the shrunk crop).
    """
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(alpha.any(axis=0))
    scale = float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))  # photo px per crop px
    reach = 3.0 + (2.0 / (scale * 1.25) + 1.0 if scale < 0.5 else 0.0)
    x0, x1 = cols[0] - reach, cols[-1] + reach
    y0, y1 = rows[0] - reach, rows[-1] + reach
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64)
    pts = corners @ inverse[:, :2].T + inverse[:, 2]
    h, w = shape
    region = Region(
        max(int(np.floor(pts[:, 0].min())) - 1, 0),
        max(int(np.floor(pts[:, 1].min())) - 1, 0),
        min(int(np.ceil(pts[:, 0].max())) + 2, w),
        min(int(np.ceil(pts[:, 1].max())) + 2, h),
    )
    return None if region.empty else region


def _trim(alpha: np.ndarray, region: Region) -> tuple[np.ndarray, Region] | None:
    """Shrink ``region`` (and its ``alpha``) to the bounding box of the pixels with alpha > 0."""
    positive = alpha > 0
    rows = np.flatnonzero(positive.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(positive.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    trimmed = Region(region.x0 + c0, region.y0 + r0, region.x0 + c1, region.y0 + r1)
    return np.ascontiguousarray(alpha[r0:r1, c0:c1]), trimmed


def paste_faces(
    pixels: np.ndarray, jobs: list[PasteJob], *, upscale: float = 1, keep: bool = False
) -> tuple[np.ndarray, list[Region]]:
    """Composite restored faces into ``pixels`` (HxW, HxWx2, HxWx3 or HxWx4; uint8 or uint16).

    ``pixels`` is the photo already at its output size (up-scaled by the caller when ``upscale`` > 1).
    Alpha channels are never touched. Returns the new array (``pixels`` itself is not modified) and,
    per pasted face, the region outside which no pixel changed (the bounding box of its warped mask).

    Only each face's footprint is warped and only pixels whose mask is above zero are written; all the
    float work is done on those small regions, never on the whole photo. ``keep``: a monochrome or
    toned photo, whose pixels keep their own chroma (only the faces' luma is pasted).
    """
    out = pixels.copy()
    if not jobs:
        return out, []
    grey = out.ndim == 2 or out.shape[2] in (1, 2)
    colour_channels = 1 if grey else 3
    maxval = np.float32(np.iinfo(out.dtype).max if out.dtype.kind in "ui" else 1.0)
    h, w = out.shape[:2]

    warped: list[tuple[Region, np.ndarray, np.ndarray]] = []
    keys: list[tuple] = []  # a canonical order for overlapping faces, whatever order they came in
    for job in jobs:
        inverse = _scaled_inverse(np.asarray(job.inverse, dtype=np.float64), upscale)
        job_alpha = np.asarray(job.alpha, dtype=np.float32)
        region = _support_region(job_alpha, inverse, (h, w))
        if region is None:
            continue
        alpha = warp_from_face(job_alpha, inverse, region)
        np.clip(alpha, 0.0, 1.0, out=alpha)
        trimmed = _trim(alpha, region)
        if trimmed is None:
            continue
        alpha, region = trimmed
        face = warp_from_face(np.asarray(job.face, dtype=np.float32), inverse, region)
        face = _to_colour_space(face.reshape(region.height, region.width, -1), colour_channels)
        np.clip(face, 0.0, 1.0, out=face)
        face *= maxval
        warped.append((region, alpha, face))
        keys.append((region.y0, region.x0, region.y1, region.x1, float(alpha.sum()), float(face.sum())))

    regions = [r for r, _, _ in warped]
    colour_view = out[..., None] if out.ndim == 2 else out[..., :colour_channels]
    for cluster in _clusters(regions):
        if len(cluster) == 1:
            box, cover, restored = warped[cluster[0]]
        else:
            # Overlapping faces: the mask-weighted mean of the faces, covering 1 - prod(1 - alpha_i).
            cluster = sorted(cluster, key=keys.__getitem__)  # float sums then do not depend on the order
            box = regions[cluster[0]]
            for i in cluster[1:]:
                box = box.union(regions[i])
            num = np.zeros((box.height, box.width, colour_channels), np.float32)
            den = np.zeros((box.height, box.width), np.float32)
            uncovered = np.ones((box.height, box.width), np.float32)
            for i in cluster:
                region, alpha, face = warped[i]
                sub = (slice(region.y0 - box.y0, region.y1 - box.y0), slice(region.x0 - box.x0, region.x1 - box.x0))
                num[sub] += face * alpha[..., None]
                den[sub] += alpha
                uncovered[sub] *= 1.0 - alpha
            restored = num / np.maximum(den, 1e-12)[..., None]
            cover = 1.0 - uncovered
            cover[den <= 0] = 0.0
        target = colour_view[box.slices()]
        blended = target.astype(np.float32)
        blended += cover[..., None] * (restored - blended)
        if keep and colour_channels == 3:
            blended = keep_chroma(blended, target, float(maxval))
        np.rint(blended, out=blended)
        np.clip(blended, 0, maxval, out=blended)
        np.copyto(target, blended.astype(out.dtype), where=(cover > 0)[..., None])
    return out, regions


def _clusters(regions: list[Region]) -> list[list[int]]:
    """Group indices of regions that overlap (transitively)."""
    parent = list(range(len(regions)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(regions)):
        for j in range(i + 1, len(regions)):
            if regions[i].intersects(regions[j]):
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(regions)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def finish_face(
    restored: np.ndarray,
    original: np.ndarray,
    mask: np.ndarray,
    *,
    tone_match: bool = True,
    colour: str = "colour",
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """The restored face as it will be pasted: tone matched to the original crop, its chroma bounded.

    ``restored`` is float RGB in [0, 1], ``original`` the aligned uint8 crop it was restored from,
    ``colour`` the photo's kind (:func:`colour.photo_colour`): a colour photo's face may not invent
    chroma (:func:`colour.bound_chroma`); a grey one becomes grey; a toned one keeps the input's chroma
    when it is composited (:func:`paste_faces` with ``keep_chroma``). All the colour arithmetic of a
    paste lives here and in :func:`paste_faces`, so whole photos and ``--aligned`` crops get the same.
    """
    face = restored
    if tone_match:
        face = match_tone(face, original.astype(np.float32) * np.float32(1 / 255), mask, valid)
    if colour == "colour":
        face = bound_chroma(face, original)
    elif colour == "grey":
        face = np.repeat((face @ LUMA)[..., None], 3, axis=2)
    return face


def edge_ramp(size: int, width: float = ALIGNED_EDGE) -> np.ndarray:
    """1 inside a square crop, falling smoothly to 0 at its edge over ``width`` px: the pixels at a crop's
    border come from the input, so a restorer's edge artefacts never show as a frame."""
    d = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32) + 0.5
    ramp = np.clip(d / np.float32(width), 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)
    return np.minimum(ramp[:, None], ramp[None, :])


def composite_crop(face: np.ndarray, crop: np.ndarray, alpha: np.ndarray, *, keep: bool = False) -> np.ndarray:
    """A finished face over its aligned crop (what ``--save-faces`` shows: the face as it was pasted)."""
    base = crop.astype(np.float32) * np.float32(1 / 255)
    out = base + alpha[..., None] * (face - base)
    if keep:
        out = keep_chroma(out, base, 1.0)
    return np.clip(out, 0.0, 1.0)


def paste_aligned(
    restored: np.ndarray,
    crop: np.ndarray,
    like: np.ndarray,
    *,
    strength: float = 1.0,
    tone_match: bool = True,
    colour: str = "colour",
) -> tuple[np.ndarray, np.ndarray]:
    """``--aligned``: the photo *is* the face. The same tone and colour rules as a whole photo's face, mixed
    with ``crop`` by ``strength`` and by :func:`edge_ramp` at the border, resized to the photo's size.

    Returns (pixels in the layout and depth of ``like``, the float face as written).
    """
    size = crop.shape[0]
    alpha = edge_ramp(size) * np.float32(strength)
    face = finish_face(restored, crop, np.ones((size, size), np.float32), tone_match=tone_match, colour=colour)
    face = composite_crop(face, crop, alpha, keep=colour == "toned")
    h, w = like.shape[:2]
    if (h, w) != (size, size):
        face = cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA if h < size else cv2.INTER_CUBIC)
    return _from_float(face, like), face


def _from_float(face: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A float RGB [0, 1] face in the layout and depth of ``like`` (alpha copied from ``like``)."""
    maxval = float(np.iinfo(like.dtype).max)
    grey = like.ndim == 2 or like.shape[2] in (1, 2)
    colour = (face @ LUMA)[..., None] if grey else face
    values = np.clip(np.rint(colour * maxval), 0, maxval).astype(like.dtype)
    if like.ndim == 2:
        return values[..., 0]
    out = like.copy()
    out[..., : values.shape[2]] = values
    return out
