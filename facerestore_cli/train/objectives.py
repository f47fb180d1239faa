"""What the sharper fine-tuning adds to both trainers: face losses, a chroma term, the detail ratio,
the adversarial ramp and the clean-input fraction.

Why these exist: the first shipped weights beat the degraded input on PSNR but returned averages, not
faces (on the London pairs at x8 the restored centre had 6–10 % of the original's Laplacian energy)
and MemGAN left green specks. Every term that pushed towards detail was a stand-in (SSIM + Sobel for
VGG, Laplacian Grams for the style loss) and the adversarial weight was scaled down 50x. The pieces:

* :class:`FaceLosses`: dlib's face-trained ResNet (:class:`~facerestore_cli.train.face_features.
  FaceFeatureLoss`) as the perceptual term, on dlib's 150 px face chip *and* on the 256x256 centre of
  the crop at full resolution (the chip alone sees the face at a third of its size, below the scale
  where pores and eyelashes live), plus its identity term (1 − cosine of the 128-d descriptors),
  the way GFP-GAN adds an ArcFace identity loss.
* :func:`chroma_loss`: L1 between the output's and the target's YCbCr chroma at full resolution, and
  a hinge on chroma errors beyond ``tau`` that weighs isolated specks more than a smooth tint.
* :func:`detail_ratio`: the figure the issue is judged by, computed exactly as
  ``bench/quality_metrics.detail_ratio`` does (BT.601 luma, 3x3 Laplacian, reflect-101 border, the
  central half of each side), so training curves and the benchmark speak of the same number.
* :class:`AdversarialRamp`: the adversarial weight grows geometrically from where the shipped weights
  were trained towards the papers' value, and validation holds it (and steps it back) whenever the
  restorer falls below the degraded input's x8 PSNR or overshoots the original's detail.
* :func:`light_degradation`: the clean or barely degraded inputs whose target is themselves, so a
  sharp face maps to itself instead of being smoothed like a degraded one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerestore_cli.train.degrade import DegradationParams

# --------------------------------------------------------------------------------------------------
# loss weights


@dataclass(frozen=True)
class FaceLossWeights:
    """Weights of the face-network terms and the chroma term.

    Each trainer has its own defaults (``DMDNET_FACE_WEIGHTS``, ``MEMGAN_FACE_WEIGHTS``), chosen from
    the gradient each term sends to the output of the first shipped weights on x8-degraded training
    faces, against that trainer's pixel term; the constants' comments give the figures. The field
    defaults here serve tests and scripts. With VGG19 (or the SSIM + Sobel stand-in) the perceptual
    term has the papers' weight 1 and ``perceptual``/``detail`` are not used.
    """

    perceptual: float = 1.0
    #: the same perceptual term on the 256x256 centre at full resolution (fine texture)
    detail: float = 0.5
    identity: float = 1.0
    chroma: float = 1.0
    #: :func:`spectrum_loss`, the fine detail's power spectrum against the target's (0 = off)
    spectrum: float = 0.0


# --------------------------------------------------------------------------------------------------
# face losses


def centre_crop(x: Tensor, dy: int = 0, dx: int = 0) -> Tensor:
    """The central half of each side of NCHW images (the 256x256 centre of a 512 crop), moved by (dy, dx)."""
    h, w = x.shape[-2:]
    top, left = h // 4 + dy, w // 4 + dx
    return x[..., top : top + h // 2, left : left + w // 2]


#: The span of the full-resolution term's random window shift (±half of it), drawn at each call. The
#: face net samples with strides of 4 to 32 px: on a window that never moves, the same pixels sit on
#: its sampling grid at every step, and a texture on that grid is rewarded at every step alike. (The
#: step-2000 weights of the first sharper run laid a crosshatch over skin; its gradient at step 0
#: shows no grid, so this is a precaution, beside the weights' moving average.)
DETAIL_JITTER = 16


class FaceLosses(nn.Module):
    """dlib face-net perceptual (chip and full-resolution centre) and identity terms.

    ``forward(pred, target)`` returns ``{"perceptual", "detail", "identity"}``; all are zero when the
    two are equal. The full-resolution term runs the same frozen network on the centre crop: its
    early layers are edge and texture detectors, and at full resolution their 4 px stride reaches
    the detail that the chip (349 px of the face squeezed into 150) averages away. Its window moves
    at random at each call (:data:`DETAIL_JITTER`).
    """

    def __init__(self, net: nn.Module | None = None, path: Path | None = None) -> None:
        super().__init__()
        from facerestore_cli.train.face_features import FaceFeatureLoss

        self.face = FaceFeatureLoss(net if net is not None else load_face_net(path))
        self._path = path

    def describe(self) -> str:
        where = self._path or "face_recognition_models"
        return (
            f"perceptual: dlib face recognition ResNet features ({where}) on the 150 px face chip and on "
            f"the 256x256 centre at full resolution (moved by up to ±{DETAIL_JITTER // 2} px), plus identity "
            "(1 - cosine of its descriptors)"
        )

    def _maps(self, x: Tensor) -> list[Tensor]:
        return self.face.net.features((x + 1) / 2)[:-1]

    def forward(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        terms = self.face(pred, target)
        reach = min(DETAIL_JITTER // 2, pred.shape[-2] // 4, pred.shape[-1] // 4)
        dy, dx = (int(v) for v in torch.randint(-reach, reach + 1, (2,))) if reach else (0, 0)
        fp = self._maps(centre_crop(pred, dy, dx))
        with torch.no_grad():
            ft = self._maps(centre_crop(target, dy, dx))
        detail = pred.new_zeros(())
        for weight, a, b in zip(self.face.weights, fp, ft, strict=True):
            a, b = _unit(a), _unit(b)
            detail = detail + weight * ((a - b).abs().sum(dim=1) / math.sqrt(a.shape[1])).mean()
        return {"perceptual": terms["perceptual"], "detail": detail, "identity": terms["identity"]}


def _unit(f: Tensor, eps: float = 1e-8) -> Tensor:
    return f * torch.rsqrt(f.pow(2).sum(dim=1, keepdim=True) + eps)


PERCEPTUAL_CHOICES = ("auto", "face", "vgg", "structure")


class SharedTerms(nn.Module):
    """The perceptual, style, identity and chroma terms both trainers add to their pixel loss.

    ``perceptual``: ``"auto"`` uses VGG19 where its weights are found (the papers' loss) and the face
    net otherwise; ``"face"`` the face net; ``"vgg"`` insists on VGG19; ``"structure"`` is the
    SSIM + Sobel stand-in the first shipped weights were trained with. The identity term comes from
    the face net whatever the perceptual term is (weight 0 leaves the net unloaded when nothing else
    needs it). DMDNet also gets its style term (VGG Grams, or the Laplacian-band stand-in).
    """

    def __init__(
        self,
        kind: str,
        perceptual: str = "auto",
        vgg: object = "auto",
        face_net: Path | None = None,
        weights: FaceLossWeights | None = None,
    ) -> None:
        super().__init__()
        from facerestore_cli.train.losses import PerceptualLoss, StyleLoss, resolve_vgg19

        if perceptual not in PERCEPTUAL_CHOICES:
            raise ValueError(f"perceptual must be one of {PERCEPTUAL_CHOICES}, got {perceptual!r}")
        self.weights = weights or FaceLossWeights()
        have_vgg = resolve_vgg19(vgg)[0] is not None
        if perceptual == "auto":
            perceptual = "vgg" if have_vgg else "face"
        self.choice = perceptual
        self.pixel_loss: nn.Module | None = None  # VGG19 or the SSIM + Sobel stand-in
        if perceptual == "vgg":
            self.pixel_loss = PerceptualLoss(kind, vgg=vgg)
            if not self.pixel_loss.pretrained:
                raise FileNotFoundError("--perceptual vgg needs VGG19 weights: " + self.pixel_loss.describe())
        elif perceptual == "structure":
            self.pixel_loss = PerceptualLoss(kind, vgg=None)
        w = self.weights
        needs_face = perceptual == "face" and (w.perceptual > 0 or w.detail > 0)
        self.face = FaceLosses(path=face_net) if needs_face or w.identity > 0 else None
        self.style = StyleLoss(vgg=vgg if have_vgg else None) if kind == "dmdnet" else None

    @property
    def pretrained(self) -> bool:
        """Whether the papers' VGG19 perceptual term is in use (their pixel weights then apply)."""
        return self.choice == "vgg"

    def describe(self) -> str:
        parts = []
        if self.pixel_loss is not None:
            parts.append(self.pixel_loss.describe())
        if self.face is not None:
            parts.append(self.face.describe() if self.choice == "face" else "identity: dlib face recognition ResNet")
        if self.style is not None:
            parts.append(self.style.describe())
        w = self.weights
        face = f"perceptual {w.perceptual:g}, detail {w.detail:g}, " if self.choice == "face" else "perceptual 1, "
        spectrum = f", spectrum {w.spectrum:g}" if w.spectrum > 0 else ""
        parts.append(f"weights: {face}identity {w.identity:g}, chroma {w.chroma:g}{spectrum}")
        return "; ".join(parts)

    def forward(self, pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(weighted sum, raw terms)``; the raw terms are what the log shows."""
        w = self.weights
        zero = pred.new_zeros(())
        raw = {"perc": zero, "detail": zero, "id": zero, "style": zero, "chroma": zero, "spectrum": zero}
        total = zero
        if self.pixel_loss is not None:  # the papers' λ_perc = α2 = 1
            raw["perc"] = self.pixel_loss(pred, target)
            total = total + raw["perc"]
        if self.face is not None:
            terms = self.face(pred, target)
            raw["id"] = terms["identity"]
            total = total + w.identity * raw["id"]
            if self.choice == "face":
                raw["perc"], raw["detail"] = terms["perceptual"], terms["detail"]
                total = total + w.perceptual * raw["perc"] + w.detail * raw["detail"]
        if self.style is not None:
            from facerestore_cli.train.losses import DMDNetLossWeights

            raw["style"] = self.style(pred, target)
            total = total + DMDNetLossWeights().style * raw["style"]
        if w.chroma > 0:
            raw["chroma"] = chroma_loss(pred, target)
            total = total + w.chroma * raw["chroma"]
        if w.spectrum > 0:
            raw["spectrum"] = spectrum_loss(pred, target)
            total = total + w.spectrum * raw["spectrum"]
        return total, raw


# --------------------------------------------------------------------------------------------------
# the face network file: dlib's .dat, or a half-size pack of it for machines without the package


def load_face_net(path: Path | None = None) -> nn.Module:
    """dlib's face net from its ``.dat`` (default: face_recognition_models) or from a ``.npz`` pack."""
    from facerestore_cli.train.face_features import DlibFaceNet, load_dlib_face_net

    if path is not None and Path(path).suffix == ".npz":
        net = DlibFaceNet(_unpack_face_net(Path(path)))
        net.eval()
        return net.requires_grad_(False)
    return load_dlib_face_net(path)


def pack_face_net(dat: Path | None, out: Path) -> Path:
    """Write dlib's parsed face net as an fp16 ``.npz`` (11 MB instead of 22 MB).

    A GPU machine that cannot install ``face_recognition_models`` gets the network this way; fp16
    rounding moves the descriptor cosine of a face by about 1e-4, far below what the losses resolve.
    """
    import json

    from facerestore_cli.train.face_features import default_model_path, parse_dlib_face_net

    parsed = parse_dlib_face_net(dat or default_model_path())
    arrays: dict[str, np.ndarray] = {}
    layers = []
    for i, layer in enumerate(parsed.layers):
        for name, a in layer.arrays.items():
            arrays[f"{i}.{name}"] = a.astype(np.float16)
        layers.append({"kind": layer.kind, "stride": layer.stride, "padding": list(layer.padding),
                       "size": layer.size, "arrays": sorted(layer.arrays)})  # fmt: skip
    meta = {"mean_rgb": list(parsed.mean_rgb), "input_size": list(parsed.input_size), "layers": layers}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return out


def _unpack_face_net(path: Path):
    import json

    from facerestore_cli.train.face_features import DlibLayer, DlibNetFile

    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        layers = []
        for i, m in enumerate(meta["layers"]):
            arrays = {k: data[f"{i}.{k}"].astype(np.float32) for k in m["arrays"]}
            layers.append(DlibLayer(m["kind"], arrays, stride=m["stride"], padding=tuple(m["padding"]), size=m["size"]))
    return DlibNetFile(tuple(meta["mean_rgb"]), tuple(meta["input_size"]), layers)


# --------------------------------------------------------------------------------------------------
# chroma


#: BT.601 Cb and Cr rows of the RGB -> YCbCr matrix (what JPEG uses; offsets cancel in differences).
_CBCR = ((-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def chroma(x: Tensor) -> Tensor:
    """(N, 2, H, W) Cb and Cr of NCHW RGB images in [-1, 1], on the [0, 1] scale (±0.5)."""
    w = torch.tensor(_CBCR, dtype=x.dtype, device=x.device).view(2, 3, 1, 1)
    return F.conv2d((x + 1) * 0.5, w)


def chroma_loss(pred: Tensor, target: Tensor, tau: float = 0.04, outlier_weight: float = 4.0) -> Tensor:
    """L1 between the Cb/Cr planes at full resolution plus ``outlier_weight`` × mean(relu(|Δ| − tau)).

    The pixel losses spread a colour error over RGB, where a green speck on a cheek costs no more
    than a slightly wrong grey; in chroma it is the whole error. ``tau`` = 0.04 (about 10/255 of
    chroma) is above what a faithful restoration of a JPEG-degraded face gets wrong on smooth skin, so
    the hinge falls on the specks and blotches, each of whose pixels then pulls ``1 + outlier_weight``
    times harder. Zero when the images are equal.
    """
    d = (chroma(pred) - chroma(target)).abs()
    return d.mean() + outlier_weight * F.relu(d - tau).mean()


# --------------------------------------------------------------------------------------------------
# the fine detail's power spectrum

#: The shortest period (pixels, on a 512 face) of the fine detail whose power :func:`spectrum_loss`
#: compares: 12 px and finer is pores, lashes, stubble and the crosshatch; coarser is shape.
SPECTRUM_PERIOD = 12.0
#: The power a bin gets from white noise of a quarter of a grey level (0.25/255 on the 0-1 scale,
#: below 8-bit rounding's 0.29/255) through the Hann window: differences below it are not seen.
_SPECTRUM_FLOOR = (0.25 / 255) ** 2


@functools.cache
def _spectrum_parts(n: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    window = np.outer(np.hanning(n), np.hanning(n))
    return (f > 1.0 / SPECTRUM_PERIOD).astype(np.float32), window.astype(np.float32)


def fine_spectrum(x: Tensor) -> Tensor:
    """(N, n, n) power spectra of the luma of NCHW images in [-1, 1] on their central half.

    Hann-windowed, smoothed over each bin's 3x3 neighbours (a lone image's periodogram scatters by
    its own size from bin to bin), and offset by the floor of a quarter grey level of white noise.
    """
    luma = (x[:, 0] * 0.299 + x[:, 1] * 0.587 + x[:, 2] * 0.114 + 1) * 0.5
    c = centre_crop(luma)
    n = c.shape[-1]
    _, window = _spectrum_parts(n)
    w = torch.as_tensor(window, device=x.device, dtype=x.dtype)
    c = (c - c.mean(dim=(-2, -1), keepdim=True)) * w
    power = torch.fft.fft2(c.float()).abs().square()
    power = F.avg_pool2d(F.pad(power[:, None], (1, 1, 1, 1), mode="circular"), 3, stride=1)[:, 0]
    return power + _SPECTRUM_FLOOR * float((w.float() ** 2).sum())


def spectrum_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean |log P_pred − log P_target| over the fine detail's frequencies (periods under 12 px).

    Why: the pixel and face terms cannot tell an invented texture on a grid from real detail, and a
    GAN's fine detail often comes with spectral peaks that no photo has (Durall et al., "Watch your
    up-convolution", CVPR 2020, match spectra for that reason). The log power is compared, not the
    complex spectrum, so detail that cannot be recovered is asked for in the right amount at each
    frequency and direction, not at the right place: missing fine detail (blur) and excess power at
    a grid's periods both cost. Zero when the images are equal.
    """
    mask, _ = _spectrum_parts(pred.shape[-1] // 2)
    m = torch.as_tensor(mask, device=pred.device)
    with torch.no_grad():
        reference = fine_spectrum(target).log()
    difference = (fine_spectrum(pred).log() - reference).abs()
    return (difference * m).sum(dim=(-2, -1)).mean() / m.sum()


# --------------------------------------------------------------------------------------------------
# the detail ratio (as bench/quality_metrics.py computes it)

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def laplacian_variance(rgb: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian of the BT.601 luma (0–255): the energy of the finest detail."""
    lap = cv2.Laplacian(np.asarray(rgb, dtype=np.float64) @ _LUMA, cv2.CV_64F, ksize=3,
                        borderType=cv2.BORDER_REFLECT_101)  # fmt: skip
    return float(lap.var())


def centre(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return image[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2]


#: Periods (pixels, on a 512 face) of the band :func:`grid_energy` measures, and of the bands beside it.
GRID_BAND = (3.8, 4.9)
GRID_NEIGHBOURS = ((3.0, 3.5), (5.5, 7.0))


@functools.cache
def _grid_masks(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    period = np.divide(1.0, f, out=np.full_like(f, np.inf), where=f > 0)

    def within(lo: float, hi: float) -> np.ndarray:
        return (period > lo) & (period < hi)

    window = np.outer(np.hanning(n), np.hanning(n))
    return within(*GRID_BAND), within(*GRID_NEIGHBOURS[0]) | within(*GRID_NEIGHBOURS[1]), window


def grid_energy(rgb: np.ndarray) -> float:
    """Spectral power of the face centre's fine detail at 4-5 px periods over the bands beside them.

    A texture laid on a grid (a learnt crosshatch, JPEG blocks' harmonics) is a peak there; real
    detail is not. The face is taken at 512 px, its luma high-passed (minus a Gaussian of σ 3) and
    Hann-windowed on the central 256x256. Sharp real faces give about 0.8 (0.82 median, 0.97 at most
    on 28 training faces); the shipped MemGAN 0.24 (smooth); the first sharper run's step-3000 weights,
    whose crosshatch is plain to see on real crops, 1.15 (median of the 13 real cropped faces).
    """
    image = np.asarray(rgb)
    if image.shape[:2] != (512, 512):
        image = cv2.resize(image, (512, 512), interpolation=cv2.INTER_AREA)
    y = image.astype(np.float64) @ _LUMA if image.ndim == 3 else image.astype(np.float64)
    fine = (y - cv2.GaussianBlur(y, (0, 0), 3))[128:384, 128:384]
    band, beside, window = _grid_masks(256)
    power = np.abs(np.fft.fft2(fine * window)) ** 2
    return float(power[band].mean() / max(power[beside].mean(), 1e-12))


def detail_ratio(restored: np.ndarray, original: np.ndarray) -> float:
    """Laplacian energy of the restored centre over the original's (1 = as detailed as the real face).

    uint8 RGB HxWx3 images; NaN when the original's centre is flat.
    """
    if restored.shape != original.shape:
        raise ValueError(f"images differ in shape: {restored.shape} vs {original.shape}")
    reference = laplacian_variance(centre(original))
    return float("nan") if reference == 0 else laplacian_variance(centre(restored)) / reference


# --------------------------------------------------------------------------------------------------
# the adversarial ramp


@dataclass
class AdversarialRamp:
    """Adversarial weight scale that grows geometrically from ``start`` to ``target`` over ``steps``.

    Geometric because the distance is a factor (0.02 → 1 for DMDNet): every doubling gets the same
    number of steps, so the discriminator and generator adapt to each one before the next. The
    ramp's clock (``progress``) only runs while it is not held; :meth:`review` holds it after a
    validation whose x8 PSNR fell below the degraded input's by more than ``psnr_margin`` dB, or whose
    x8 detail ratio passed ``max_detail`` (more high-frequency energy than the real face: noise, not
    detail), or whose x8 grid energy passed ``max_grid`` (a texture on a grid: :func:`grid_energy`),
    and steps it back by ``backoff`` of the ramp. The divergence guard's halving
    (``adv_factor``) stays separate and multiplies on top.
    """

    start: float
    target: float
    steps: int
    progress: float = 0.0
    held: bool = False
    psnr_margin: float = 0.0
    max_detail: float = 1.2
    max_grid: float = 1.0
    backoff: float = 0.1

    def value(self) -> float:
        if self.steps <= 0 or self.start == self.target:
            return self.target
        t = min(1.0, max(0.0, self.progress / self.steps))
        if self.start <= 0:
            return self.target * t
        return self.start * (self.target / self.start) ** t

    def advance(self, n: int = 1) -> None:
        if not self.held:
            self.progress = min(float(self.steps), self.progress + n)

    def review(
        self, psnr: float | None, input_psnr: float | None, detail: float | None, grid: float | None = None
    ) -> str:
        """Hold or release the ramp from one validation; returns why, for the log."""
        reasons = []
        if psnr is not None and input_psnr is not None and psnr < input_psnr + self.psnr_margin:
            reasons.append(f"x8 PSNR {psnr:.2f} < input {input_psnr:.2f} + {self.psnr_margin:g}")
        if detail is not None and np.isfinite(detail) and detail > self.max_detail:
            reasons.append(f"x8 detail {detail:.2f} > {self.max_detail:g}")
        if grid is not None and np.isfinite(grid) and grid > self.max_grid:
            reasons.append(f"x8 grid {grid:.2f} > {self.max_grid:g}")
        self.held = bool(reasons)
        if self.held:
            self.progress = max(0.0, self.progress - self.backoff * self.steps)
            return "held: " + "; ".join(reasons)
        return "running"

    def state(self) -> dict:
        return {"progress": self.progress, "held": self.held}

    def load(self, state: dict | None) -> None:
        if state:
            self.progress = float(state.get("progress", 0.0))
            self.held = bool(state.get("held", False))


# --------------------------------------------------------------------------------------------------
# clean and barely degraded inputs


def light_degradation(params: DegradationParams, rng: np.random.Generator) -> DegradationParams:
    """``params`` with the degradation replaced by none (half the time) or a barely visible one.

    Flip and colour jitter stay, so target and input still match. Barely degraded: blur σ ≤ 0.6,
    no resampling or at most 1.25x, noise σ ≤ 2 and JPEG quality 90–100: a sharp photo's own
    imperfections, which the restorer should leave alone.
    """
    if rng.random() < 0.5:
        return replace(params, blur_sigma=0.0, scale=1.0, noise_sigma=0.0, jpeg_quality=None)
    scale = 1.0 if rng.random() < 0.5 else float(rng.uniform(1.0, 1.25))
    return replace(
        params,
        blur_sigma=float(rng.uniform(0.0, 0.6)),
        scale=scale,
        noise_sigma=float(rng.uniform(0.0, 2.0)),
        jpeg_quality=int(rng.integers(90, 101)),
    )
