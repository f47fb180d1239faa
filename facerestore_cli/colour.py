"""Colour that a restorer must not invent: monochrome and toned prints, and chroma specks.

Restorers trained on colour faces paint colour into black-and-white prints (pink lips, violet eyes)
and leave specks of false colour in detail they make up. Two rules keep the photo's own colour:

* **Monochrome and toned photos** (grey, sepia, selenium, cyanotype, a scanner's tint) have chroma
  that is a function of luma alone. :func:`photo_colour` recognises them, robustly to JPEG chroma
  noise, and for them only the luma of a restored face is used: the pasted pixels keep the input's
  chroma exactly (:func:`keep_chroma`).
* **Colour photos**: a restored face's chroma may not stray more than :data:`CHROMA_MARGIN` levels
  outside the range of the input's own chroma around each pixel (:func:`bound_chroma`). The
  restorer's job is detail, which lives in luma; at the resolution where faces need restoring the
  input's chroma is as good as anything a model invents (JPEG keeps it at half resolution anyway), so
  the bound removes green specks and magenta fringes and leaves real colour alone.

All in BT.601 full-range Y'CbCr (JPEG's), in 8-bit levels for thresholds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "CHROMA_MARGIN",
    "PhotoColour",
    "bound_chroma",
    "from_ycbcr",
    "keep_chroma",
    "photo_colour",
    "to_ycbcr",
]

#: How far (8-bit levels) a restored face's Cb/Cr may go past the input's local range. Twice the
#: chroma error of a JPEG q75 round trip on faces (measured ~3 levels p99), so real colour never hits
#: it; a green speck or a magenta lip fringe is 15-40 levels out.
CHROMA_MARGIN = 6.0
#: Half-size of the window (px, on the 512 crop) of the input's local chroma range.
CHROMA_WINDOW = 3

_RGB_TO_YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32
)
_YCC_TO_RGB = np.linalg.inv(_RGB_TO_YCC.astype(np.float64)).astype(np.float32)


def to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """Float RGB (any scale) -> Y, Cb, Cr in the same scale, chroma centred on 0."""
    return _transform(rgb, _RGB_TO_YCC)


def from_ycbcr(ycc: np.ndarray) -> np.ndarray:
    return _transform(ycc, _YCC_TO_RGB)


def _transform(pixels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``pixels @ matrix.T`` over the last axis (3 channels), in float32.

    OpenCV's per-pixel transform is 5-10x faster than NumPy's matmul, which does not use BLAS for an
    inner dimension of 3; the two agree to float32 rounding.
    """
    px = np.ascontiguousarray(pixels, dtype=np.float32)
    if px.ndim < 2 or px.shape[-1] != 3 or px.size == 0:
        return px @ matrix.T
    flat = px.reshape(-1, 1, 3)
    return cv2.transform(flat, matrix).reshape(px.shape)


@dataclass(frozen=True)
class PhotoColour:
    """What kind of colour a photo has. ``kind``: ``colour``, ``grey`` or ``toned``."""

    kind: str
    #: median |chroma| in 8-bit levels (how strongly toned; ~0 for grey)
    tint: float
    #: share of sampled pixels whose chroma is not explained by their luma (colour photos: > 5%)
    unexplained: float
    #: 90th percentile of the chromatic pixels' hue distance from the dominant hue, in degrees
    hue_spread: float

    @property
    def monochrome(self) -> bool:
        return self.kind != "colour"


#: A pixel's chroma is "explained" by its luma when it is within this many levels of the median
#: chroma of pixels with the same luma (JPEG q75 chroma noise on grey prints stays under 4).
EXPLAINED_LEVELS = 6.0
#: At most this share of unexplained pixels for a photo to count as monochrome or toned: dust,
#: scratches and a little colour fringing of a scan fit in it, a colour photo's skin and sky do not.
MONOCHROME_SHARE = 0.02
#: Median |chroma| below which a monochrome photo is grey rather than toned.
GREY_TINT = 1.5
#: A photo whose chromatic pixels (|chroma| > 4 levels) nearly all share one hue (90% within this many
#: degrees of the dominant one) is toned even when its tint varies across it (a faded or unevenly
#: toned print). Measured: toned prints 4-14 degrees, colour photos 23-150 (a warm-lit brown still
#: life 14: taking it for toned costs only the restorer's own chroma, which is the safe side).
TONED_HUE_SPREAD = 15.0


def photo_colour(pixels: np.ndarray, *, samples: int = 100_000) -> PhotoColour:
    """Classify a photo's colour from a sparse, regular sample of its pixels (uint8/uint16, any layout)."""
    px = np.asarray(pixels)
    if px.ndim == 2 or px.shape[2] < 3:
        return PhotoColour("grey", 0.0, 0.0, 0.0)
    step = max(1, math.ceil(math.sqrt(px.shape[0] * px.shape[1] / samples)))  # at most ``samples`` pixels
    scale = 255.0 / float(np.iinfo(px.dtype).max)
    ycc = to_ycbcr(px[::step, ::step, :3].reshape(-1, 3).astype(np.float32) * np.float32(scale))
    y, chroma = ycc[:, 0], ycc[:, 1:]
    bins = np.clip((y / 8).astype(np.int32), 0, 31)
    expected = np.zeros((32, 2), np.float32)
    # one stable sort, then each bin is a slice: the same medians as 32 boolean masks, 4x faster
    order = np.argsort(bins, kind="stable")
    edges = np.searchsorted(bins[order], np.arange(33))
    for b in range(32):
        if edges[b + 1] > edges[b]:
            expected[b] = np.median(chroma[order[edges[b] : edges[b + 1]]], axis=0)
    residual = np.abs(chroma - expected[bins]).max(axis=1)
    unexplained = float(np.mean(residual > EXPLAINED_LEVELS))
    magnitude = np.hypot(chroma[:, 0], chroma[:, 1])
    tint = float(np.median(magnitude))
    spread = _hue_spread(chroma[magnitude > 4.0]) if np.mean(magnitude > 4.0) > 0.01 else 0.0
    if unexplained > MONOCHROME_SHARE and spread > TONED_HUE_SPREAD:
        return PhotoColour("colour", tint, unexplained, spread)
    return PhotoColour("grey" if tint < GREY_TINT else "toned", tint, unexplained, spread)


def _hue_spread(chroma: np.ndarray) -> float:
    angles = np.arctan2(chroma[:, 1], chroma[:, 0])
    dominant = np.angle(np.exp(1j * angles).mean())
    distance = np.abs((angles - dominant + np.pi) % (2 * np.pi) - np.pi)
    return float(np.degrees(np.percentile(distance, 90)))


def keep_chroma(new: np.ndarray, original: np.ndarray, maxval: float) -> np.ndarray:
    """``new``'s luma with ``original``'s chroma (float HxWx3 in [0, maxval]; ``original`` any dtype).

    Adding one luma difference to all three channels changes Y by it and leaves Cb and Cr exactly as
    they were (their coefficients sum to zero), so a grey pixel stays exactly grey. The difference is
    limited to what the pixel can take without clipping a channel, which would shift its chroma.
    """
    orig = original.astype(np.float32)
    delta = to_ycbcr(new)[..., 0] - to_ycbcr(orig)[..., 0]
    delta = np.clip(delta, -orig.min(axis=-1), np.float32(maxval) - orig.max(axis=-1))
    return orig + delta[..., None]


def bound_chroma(restored: np.ndarray, original: np.ndarray, margin: float = CHROMA_MARGIN) -> np.ndarray:
    """Clamp a restored face's chroma into the input's local chroma range (+/- ``margin`` levels).

    ``restored``: float RGB [0, 1] (the aligned 512 face); ``original``: the aligned uint8 crop.
    """
    ycc = to_ycbcr(restored)
    orig = to_ycbcr(original.astype(np.float32) * np.float32(1 / 255))
    size = 2 * CHROMA_WINDOW + 1
    kernel = np.ones((size, size), np.uint8)
    m = np.float32(margin / 255.0)
    chroma = cv2.GaussianBlur(orig[..., 1:], (0, 0), 1.0)  # JPEG's chroma noise must not widen the range
    lo = cv2.erode(chroma, kernel) - m
    hi = cv2.dilate(chroma, kernel) + m
    ycc[..., 1:] = np.clip(ycc[..., 1:], lo, hi)
    return np.clip(from_ycbcr(ycc), 0.0, 1.0)
