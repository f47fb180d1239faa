"""Synthetic degradations that turn a sharp aligned face into its low-quality training input.

Both papers train on pairs made from sharp faces with the same classic model, only their ranges and
resampling differ:

* DMDNet eq. 19: ``I^d = ((I ⊗ k_σ)↓r + n_σ)_JPEGq`` with σ ∈ {1:0.1:3}, r ∈ {1:0.1:10},
  noise σ ∈ {0:1:15}, q ∈ {50:1:100} (MATLAB-style grids: every value on the grid is equally likely).
  The paper does not name the resampling kernel; we use bicubic both ways, and resize the result back
  to the input size because DMDNet's test code takes 512x512 inputs.
* MemGAN eq. 14: ``y = {[(x ⊗ k_δ)↓s + n_σ]_JPEGq}↑s`` with δ ∈ [0.2, 10], s ∈ [1, 8], σ ∈ [0, 15]
  (continuous uniform) and integer q ∈ {60..100}; bilinear down- and up-sampling as the paper says.

Conventions shared by both:

* The Gaussian kernel is isotropic, ``2·ceil(3σ) + 1`` pixels wide (±3σ holds 99.7% of its mass), with
  OpenCV's reflect-101 border.
* The down-sampled size is ``round(size / r)`` per side (at least 1 pixel).
* Noise is white Gaussian, drawn independently per pixel and channel, with standard deviation σ in
  0–255 units (MemGAN's text says "variance", but its ranges come from GFP-GAN where σ is the standard
  deviation). It comes from its own seed stored in the parameters, so ``degrade`` is a pure function of
  ``(image, params)``.
* Noisy values are clipped and rounded to 8 bits, then JPEG-encoded and decoded by OpenCV at quality q
  (the image is handed to OpenCV as BGR so its 4:2:0 chroma subsampling hits the real chroma).

Both papers also augment with horizontal flips and colour jitter. Those are applied to the sharp
image *before* it is degraded (:func:`make_pair`), so the target and the input see exactly the same
flip and colours. A flip is recorded in the parameters so the caller can flip its landmarks with
:func:`flip_landmarks68` / :func:`flip_landmarks5`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

_INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


@dataclass(frozen=True)
class Range:
    """A sampling range: uniform on ``[lo, hi]``, or on the grid ``lo:step:hi`` when ``step`` is set."""

    lo: float
    hi: float
    step: float | None = None

    def sample(self, rng: np.random.Generator) -> float:
        if self.step is None:
            return float(rng.uniform(self.lo, self.hi))
        n = round((self.hi - self.lo) / self.step)
        return round(self.lo + int(rng.integers(0, n + 1)) * self.step, 10)

    def contains(self, value: float, tol: float = 1e-6) -> bool:
        if not self.lo - tol <= value <= self.hi + tol:
            return False
        if self.step is None:
            return True
        k = (value - self.lo) / self.step
        return abs(k - round(k)) < tol


@dataclass(frozen=True)
class DegradationSpec:
    """The ranges one paper samples its degradations and augmentations from.

    Colour jitter follows torchvision's meaning: brightness/contrast/saturation factors are uniform in
    ``[1 - b, 1 + b]`` and the hue shift is uniform in ``[-h, h]`` turns of the colour wheel. The
    papers give no jitter ranges; ours are small so that skin tones stay plausible.
    """

    name: str
    blur_sigma: Range
    scale: Range
    noise_sigma: Range
    jpeg_quality: Range
    down_interp: str
    up_interp: str
    flip_prob: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02

    def contains(self, params: DegradationParams) -> bool:
        """Whether ``params`` could have been drawn from this spec (used by the tests)."""
        return (
            self.blur_sigma.contains(params.blur_sigma)
            and self.scale.contains(params.scale)
            and self.noise_sigma.contains(params.noise_sigma)
            and self.jpeg_quality.contains(params.jpeg_quality)
            and params.down_interp == self.down_interp
            and params.up_interp == self.up_interp
            and abs(params.brightness - 1) <= self.brightness + 1e-9
            and abs(params.contrast - 1) <= self.contrast + 1e-9
            and abs(params.saturation - 1) <= self.saturation + 1e-9
            and abs(params.hue) <= self.hue + 1e-9
        )


#: DMDNet eq. 19 (section 4.2) grids; bicubic resampling (the paper does not name one).
DMDNET_EQ19 = DegradationSpec(
    name="dmdnet-eq19",
    blur_sigma=Range(1.0, 3.0, 0.1),
    scale=Range(1.0, 10.0, 0.1),
    noise_sigma=Range(0.0, 15.0, 1.0),
    jpeg_quality=Range(50.0, 100.0, 1.0),
    down_interp="bicubic",
    up_interp="bicubic",
)

#: MemGAN eq. 14 (section 4.1) ranges; bilinear down- and up-sampling as the paper says.
MEMGAN_EQ14 = DegradationSpec(
    name="memgan-eq14",
    blur_sigma=Range(0.2, 10.0),
    scale=Range(1.0, 8.0),
    noise_sigma=Range(0.0, 15.0),
    jpeg_quality=Range(60.0, 100.0, 1.0),
    down_interp="bilinear",
    up_interp="bilinear",
)

SPECS: dict[str, DegradationSpec] = {"dmdnet": DMDNET_EQ19, "memgan": MEMGAN_EQ14}


@dataclass(frozen=True)
class DegradationParams:
    """One drawn degradation plus augmentation; everything :func:`degrade` and :func:`augment` need.

    ``blur_sigma <= 0`` means no blur, ``scale == 1`` no resampling, ``noise_sigma == 0`` no noise and
    ``jpeg_quality=None`` no JPEG round trip.
    """

    blur_sigma: float
    scale: float
    noise_sigma: float
    jpeg_quality: int | None
    noise_seed: int = 0
    down_interp: str = "bicubic"
    up_interp: str = "bicubic"
    flip: bool = False
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0


def sample_params(spec: DegradationSpec, rng: np.random.Generator) -> DegradationParams:
    """Draw one set of parameters; the same generator state always gives the same parameters."""
    blur = spec.blur_sigma.sample(rng)
    scale = spec.scale.sample(rng)
    noise = spec.noise_sigma.sample(rng)
    quality = round(spec.jpeg_quality.sample(rng))
    noise_seed = int(rng.integers(0, 2**31 - 1))
    flip = bool(rng.random() < spec.flip_prob)
    brightness = float(rng.uniform(1 - spec.brightness, 1 + spec.brightness))
    contrast = float(rng.uniform(1 - spec.contrast, 1 + spec.contrast))
    saturation = float(rng.uniform(1 - spec.saturation, 1 + spec.saturation))
    hue = float(rng.uniform(-spec.hue, spec.hue))
    return DegradationParams(
        blur_sigma=blur,
        scale=scale,
        noise_sigma=noise,
        jpeg_quality=quality,
        noise_seed=noise_seed,
        down_interp=spec.down_interp,
        up_interp=spec.up_interp,
        flip=flip,
        brightness=brightness,
        contrast=contrast,
        saturation=saturation,
        hue=hue,
    )


#: The fixed evaluation degradation (see :func:`fixed_degradation`): mid-range values of eq. 19's grids.
FIXED_BLUR_SIGMA = 2.0
FIXED_NOISE_SIGMA = 8.0
FIXED_JPEG_QUALITY = 75


def fixed_degradation(
    scale: int,
    *,
    blur_sigma: float = FIXED_BLUR_SIGMA,
    noise_sigma: float = FIXED_NOISE_SIGMA,
    jpeg_quality: int = FIXED_JPEG_QUALITY,
    seed: int = 0,
    interp: str = "bicubic",
) -> DegradationParams:
    """The x4 / x8 benchmark degradation "following DMDNet eq. 19" at fixed mid-range strength.

    The papers evaluate on x4 and x8 inputs made with *random* eq. 19 parameters and do not publish
    the draws, so our benchmark fixes the other factors at the middle of eq. 19's grids: blur σ = 2.0
    (of 1–3), noise σ = 8 (of 0–15, 0–255 units), JPEG q = 75 (of 50–100), bicubic resampling, noise
    drawn from ``seed``, no flip and no colour jitter. Only the scale differs between x4 and x8.
    """
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    return DegradationParams(
        blur_sigma=float(blur_sigma),
        scale=float(scale),
        noise_sigma=float(noise_sigma),
        jpeg_quality=int(jpeg_quality),
        noise_seed=int(seed),
        down_interp=interp,
        up_interp=interp,
    )


def gaussian_kernel_size(sigma: float) -> int:
    """Odd kernel width covering ±3σ: ``2·ceil(3σ) + 1``."""
    return 2 * math.ceil(3 * sigma) + 1


def degrade(hq: np.ndarray, params: DegradationParams) -> np.ndarray:
    """Blur, down-sample, add noise, JPEG and resize back: a uint8 RGB image the size of ``hq``.

    ``hq`` is HxWx3 RGB, ``uint8`` or float in [0, 1]. No flip or colour jitter is applied here:
    use :func:`make_pair`, which augments the sharp image first.
    """
    x = _to_float255(hq)
    h, w = x.shape[:2]
    if params.blur_sigma > 0:
        k = gaussian_kernel_size(params.blur_sigma)
        x = cv2.GaussianBlur(
            x, (k, k), sigmaX=params.blur_sigma, sigmaY=params.blur_sigma, borderType=cv2.BORDER_REFLECT_101
        )
    if params.scale != 1:
        small = (max(1, round(w / params.scale)), max(1, round(h / params.scale)))
        x = cv2.resize(x, small, interpolation=_interp(params.down_interp))
    if params.noise_sigma > 0:
        noise_rng = np.random.default_rng(params.noise_seed)
        x = x + noise_rng.standard_normal(x.shape, dtype=np.float32) * np.float32(params.noise_sigma)
    lq = _round_uint8(x)
    if params.jpeg_quality is not None:
        lq = jpeg_roundtrip(lq, int(params.jpeg_quality))
    if lq.shape[:2] != (h, w):
        up = cv2.resize(lq.astype(np.float32), (w, h), interpolation=_interp(params.up_interp))
        lq = _round_uint8(up)
    return lq


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode a uint8 RGB image with OpenCV's JPEG codec at ``quality`` (0–100)."""
    if not 0 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 0..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the image")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def augment(image: np.ndarray, params: DegradationParams) -> np.ndarray:
    """Apply the flip and colour jitter of ``params`` (uint8 RGB out, same size).

    Jitter runs in a fixed order (brightness, contrast, saturation, hue) so that it is reproducible;
    torchvision shuffles the order, which makes no practical difference at these small ranges.
    """
    x = _to_float255(image) / 255.0
    if params.flip:
        x = np.ascontiguousarray(x[:, ::-1])
    if params.brightness != 1:
        x = np.clip(x * params.brightness, 0, 1)
    if params.contrast != 1:
        mean = float(_grey(x).mean())
        x = np.clip((x - mean) * params.contrast + mean, 0, 1)
    if params.saturation != 1:
        grey = _grey(x)[..., None]
        x = np.clip(grey + (x - grey) * params.saturation, 0, 1)
    if params.hue != 0:
        hsv = cv2.cvtColor(x.astype(np.float32), cv2.COLOR_RGB2HSV)  # float input: H in [0, 360)
        hsv[..., 0] = np.mod(hsv[..., 0] + params.hue * 360.0, 360.0)
        x = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1)
    return _round_uint8(x * 255.0)


def make_pair(hq: np.ndarray, params: DegradationParams) -> tuple[np.ndarray, np.ndarray]:
    """``(target, input)``: the augmented sharp image and its degraded copy, both uint8 RGB."""
    target = augment(hq, params)
    return target, degrade(target, params)


#: Index permutation of the iBUG/dlib 68-point scheme under a horizontal flip: point ``i`` of the
#: flipped face is point ``FLIP_PERMUTATION_68[i]`` of the original, mirrored. Jaw 0–16 reversed,
#: brows 17–21 ↔ 26–22, nose bridge 27–30 fixed, nostrils 31–35 reversed, eyes 36–41 ↔ 45,44,43,42,47,46
#: (corners to corners, upper lid to upper lid), outer lips 48–54 reversed and 55–59 reversed,
#: inner lips 60–64 reversed and 65–67 reversed.
FLIP_PERMUTATION_68: tuple[int, ...] = (
    *range(16, -1, -1),
    *range(26, 21, -1),
    *range(21, 16, -1),
    27, 28, 29, 30,
    *range(35, 30, -1),
    45, 44, 43, 42, 47, 46,
    39, 38, 37, 36, 41, 40,
    *range(54, 47, -1),
    *range(59, 54, -1),
    *range(64, 59, -1),
    *range(67, 64, -1),
)  # fmt: skip

#: 5-point order (left eye, right eye, nose, left mouth, right mouth) under a horizontal flip.
FLIP_PERMUTATION_5: tuple[int, ...] = (1, 0, 2, 4, 3)


def flip_landmarks68(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the horizontally flipped image: mirror x (``width - 1 - x``, OpenCV pixel centres)
    and swap left and right points so that every index keeps its meaning. ``(..., 68, 2)`` in and out.
    """
    return _flip_points(landmarks, width, FLIP_PERMUTATION_68)


def flip_landmarks5(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Like :func:`flip_landmarks68` for the 5-point (RetinaFace / FFHQ template) order."""
    return _flip_points(landmarks, width, FLIP_PERMUTATION_5)


def _flip_points(landmarks: np.ndarray, width: int, permutation: tuple[int, ...]) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim < 2 or pts.shape[-2:] != (len(permutation), 2):
        raise ValueError(f"expected (..., {len(permutation)}, 2) landmarks, got {pts.shape}")
    out = pts[..., list(permutation), :].copy()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def _interp(name: str) -> int:
    try:
        return _INTERPOLATIONS[name]
    except KeyError:
        known = sorted(_INTERPOLATIONS)
        raise ValueError(f"unknown interpolation {name!r}; expected one of {known}") from None


def _to_float255(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and (float(arr.min()) < -0.01 or float(arr.max()) > 1.01):
            raise ValueError("float images must be in [0, 1]")
        return np.clip(arr.astype(np.float32), 0, 1) * 255.0
    raise TypeError(f"expected uint8 or float in [0, 1], got {arr.dtype}")


def _round_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _grey(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114], dtype=x.dtype)
