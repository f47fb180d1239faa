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

from dataclasses import dataclass

import cv2
import numpy as np

from facerestore_cli.align import FACE_SIZE, Region, footprint, warp_from_face

#: Feather width as a fraction of the face crop (Gaussian sigma of the mask edge).
FEATHER = 0.025
#: Gaussian sigma, as a fraction of the crop, of the low-pass used to match tone to the original.
TONE_SIGMA = 0.05
#: Rec. 601 luma, used when restoring into a grey photo.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


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


def face_mask(landmarks68: np.ndarray | None, size: int = FACE_SIZE) -> np.ndarray:
    """Feathered face mask in [0, 1] on the crop, from the 68 landmarks.

    Without landmarks (or with a degenerate outline) an ellipse around the template's face is used.
    The mask is eroded before blurring so that the feathered edge stays inside the outline.
    """
    mask = np.zeros((size, size), np.float32)
    poly = None
    if landmarks68 is not None:
        poly = cv2.convexHull(face_outline(landmarks68).astype(np.float32))
        if cv2.contourArea(poly) < (0.05 * size) ** 2:
            poly = None
    if poly is not None:
        cv2.fillConvexPoly(mask, np.round(poly * 16).astype(np.int32), 1.0, lineType=cv2.LINE_AA, shift=4)
    else:
        c = size / 512
        cv2.ellipse(mask, (round(256 * c), round(290 * c)), (round(150 * c), round(190 * c)), 0, 0, 360, 1.0, -1)
    sigma = FEATHER * size
    k = int(2 * round(2 * sigma) + 1)
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    mask[mask < 1e-3] = 0.0
    return mask


def match_tone(restored: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Replace the restored face's lowest frequencies inside the mask by the original's.

    Normalised convolution (low-pass of the masked difference divided by the low-pass of the mask)
    keeps the correction from being pulled towards the background. Both images float32 in [0, 1].
    """
    sigma = TONE_SIGMA * restored.shape[0]
    w = (mask > 0.5).astype(np.float32)
    if w.sum() < 16:
        return restored
    diff = (original - restored) * w[..., None]
    num = cv2.GaussianBlur(diff, (0, 0), sigma)
    den = cv2.GaussianBlur(w, (0, 0), sigma)[..., None]
    correction = num / np.maximum(den, 1e-3)
    return np.clip(restored + correction, 0.0, 1.0)


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


def paste_faces(pixels: np.ndarray, jobs: list[PasteJob], *, upscale: float = 1) -> tuple[np.ndarray, list[Region]]:
    """Composite restored faces into ``pixels`` (HxW, HxWx2, HxWx3 or HxWx4; uint8 or uint16).

    ``pixels`` is the photo already at its output size (up-scaled by the caller when ``upscale`` > 1).
    Alpha channels are never touched. Returns the new array (``pixels`` itself is not modified) and the
    regions that may have changed.
    """
    out = pixels.copy()
    if not jobs:
        return out, []
    grey = out.ndim == 2 or out.shape[2] in (1, 2)
    colour_channels = 1 if grey else 3
    maxval = float(np.iinfo(out.dtype).max) if out.dtype.kind in "ui" else 1.0
    h, w = out.shape[:2]

    warped = []
    for job in jobs:
        inverse = _scaled_inverse(job.inverse, upscale)
        region = footprint(inverse, job.face.shape[0], (h, w))
        if region.empty:
            continue
        alpha = warp_from_face(job.alpha, inverse, region)
        alpha = np.clip(alpha, 0.0, 1.0)
        if not (alpha > 0).any():
            continue
        face = warp_from_face(job.face, inverse, region)
        face = np.clip(_to_colour_space(face, colour_channels), 0.0, 1.0) * maxval
        warped.append((region, alpha, face))

    regions = [r for r, _, _ in warped]
    for cluster in _clusters(regions):
        box = regions[cluster[0]]
        for i in cluster[1:]:
            box = box.union(regions[i])
        sl = box.slices()
        num = np.zeros((box.height, box.width, colour_channels), np.float32)
        den = np.zeros((box.height, box.width), np.float32)
        keep = np.ones((box.height, box.width), np.float32)  # product of (1 - alpha_i)
        for i in cluster:
            region, alpha, face = warped[i]
            sub = (slice(region.y0 - box.y0, region.y1 - box.y0), slice(region.x0 - box.x0, region.x1 - box.x0))
            num[sub] += face * alpha[..., None]
            den[sub] += alpha
            keep[sub] *= 1.0 - alpha
        touched = den > 0
        cover = 1.0 - keep
        restored = num / np.maximum(den, 1e-12)[..., None]
        target = out[sl]
        colour = target if not grey else (target if target.ndim == 2 else target[..., :1])
        colour = colour.reshape(box.height, box.width, -1)[..., :colour_channels].astype(np.float32)
        blended = colour + cover[..., None] * (restored - colour)
        blended = np.clip(np.rint(blended), 0, maxval).astype(out.dtype)
        if out.ndim == 2:
            target[touched] = blended[touched][:, 0]
        else:
            target[..., :colour_channels][touched] = blended[touched]
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
