"""Training losses of DMDNet (eq. 11–17) and MemGAN (eq. 9–13), with an honest stand-in for VGG19.

Images are NCHW tensors in [-1, 1] (the networks' range) unless a function says otherwise.

Pixel losses: :func:`mse_loss` (DMDNet eq. 11, ``||Î − I||² / CHW``) and :func:`l1_loss` (MemGAN eq. 9),
plus :func:`low_frequency_loss` (ours, off unless a training command asks for it).

Feature losses: :class:`PerceptualLoss` (DMDNet eq. 12 or MemGAN eq. 10) and :class:`StyleLoss`
(DMDNet eq. 14) share one interface whatever runs underneath: ``loss(pred, target) -> scalar``,
``.backend``, ``.pretrained`` and ``.describe()``. With a torchvision VGG19 checkpoint
(``$FACERESTORE_VGG19`` or ``~/.cache/torch/hub/checkpoints/vgg19-dcbb9e9d.pth``) they use
:class:`VGG19Features`, our own copy of torchvision's ``features`` stack that loads that file with
``torch.load(weights_only=True)``. Without it (this machine is offline) they fall back, say so in
``describe()`` and log a warning:

* perceptual → mean over 3 scales (1, 1/2, 1/4) of ``(1 − SSIM) + λ_g·L1(Sobel gradients)`` with
  λ_g = 10, which makes both terms similar in size on degraded faces (≈0.2 and ≈0.09 at x4). What a
  VGG perceptual term buys over a pixel loss is mostly that it punishes lost local structure (edges,
  fine contrast) rather than averaged intensities; SSIM measures exactly local structure and contrast,
  and the gradient L1 punishes soft edges that MSE/L1 tolerate. Both are parameter free, so nothing
  pretends to be a learned "perceptual" metric.
* style → relative Gram-matrix error of fixed Laplacian-pyramid bands (4 octaves; per octave the
  three colour bands and their horizontal/vertical Sobel responses, 9 channels). A Gram matrix of
  these is the per-octave, per-orientation texture energy and its colour correlation, i.e. the
  "is there skin/hair texture at this frequency" statistic the style loss exists for. We preferred
  it to Gram matrices of the discriminator's features because those move while the discriminator
  trains (a non-stationary target that also couples G's loss to D's graph), and because a fixed
  filter bank behaves identically in every run. Raw band Grams are ~1e-4, so each octave's squared
  Frobenius error is divided by the target's squared Gram norm (about 1 when the output has no
  texture at that octave, 0 when it matches).

Neither stand-in matches VGG numerically: loss weights tuned for one do not carry to the other.
The trainers now use the SSIM + Sobel stand-in only when asked (``--perceptual structure``, to
reproduce the first shipped weights): without VGG19 their perceptual term is dlib's face net, see
:mod:`facerestore_cli.train.objectives`.

Adversarial: DMDNet's multi-scale SNGAN hinge (eq. 15–16, :func:`hinge_d_loss`, :func:`hinge_g_loss`)
and MemGAN's StyleGAN2 logistic loss (eq. 11–12 read as StyleGAN2's softplus form,
:func:`logistic_d_loss`, :func:`logistic_g_loss`) with StyleGAN2's lazy R1 penalty
(:func:`r1_penalty`, :func:`lazy_r1_loss`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# loss weights from the papers


@dataclass(frozen=True)
class DMDNetLossWeights:
    """DMDNet eq. 13, 16 and 17: λ_mse = 300, λ_perc = 1, λ_style = 0.1, λ_a,r = {4, 1, 0.5}."""

    mse: float = 300.0
    perceptual: float = 1.0
    style: float = 0.1
    adversarial: tuple[float, ...] = (4.0, 1.0, 0.5)


@dataclass(frozen=True)
class MemGANLossWeights:
    """MemGAN eq. 13: α1 = 0.1 (L1), α2 = 1 (perceptual), α3 = 0.1 (adversarial)."""

    l1: float = 0.1
    perceptual: float = 1.0
    adversarial: float = 0.1


#: DMDNet's λ_a,r for the discriminators at scales r = 1, 2, 4.
DMDNET_ADV_WEIGHTS: tuple[float, ...] = DMDNetLossWeights().adversarial
#: StyleGAN2's R1 γ at 512 px (rosinality / config-f) and its lazy-regularisation interval.
R1_GAMMA = 10.0
R1_INTERVAL = 16

# --------------------------------------------------------------------------------------------------
# pixel losses


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """DMDNet eq. 11: ``||Î − I||² / CHW``, averaged over the batch (i.e. the mean squared error)."""
    return F.mse_loss(pred, target)


def low_frequency_loss(pred: Tensor, target: Tensor, factors: Sequence[int] = (8, 16, 32)) -> Tensor:
    """L1 between block averages (8, 16 and 32 px blocks), averaged over the block sizes.

    Not in either paper. A restorer should keep the tone and colour that even a badly degraded input
    still carries. The pixel loss weighs a tone shift by its tiny square, and the structure, texture and
    adversarial terms hardly see one (only SSIM's luminance factor does, weakly). DMDNet trained 9,500
    steps without this term returned faces whose 32×32 thumbnails were further from the originals than
    the degraded inputs' were (held-out training faces at x4: 37.5 dB against the input's 40.1, the
    ``tone_psnr`` validation figure). Pasting into a photo matches tone anyway
    (:func:`facerestore_cli.paste.match_tone`), but ``--aligned`` crops and the model itself are judged
    on the raw output, and there the shift cost identity: on the dev pairs, the faces whose tone
    drifted more lost more identity (r = 0.44). L1 keeps pushing when the shift is small, and only
    block averages enter, so fine detail stays with the other terms.
    """
    losses = [F.l1_loss(F.avg_pool2d(pred, f), F.avg_pool2d(target, f)) for f in factors]
    return torch.stack(losses).mean()


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """MemGAN eq. 9: mean absolute error (the paper writes ||·||₁; we average so it is size-free)."""
    return F.l1_loss(pred, target)


# --------------------------------------------------------------------------------------------------
# SSIM (shared with evaluation)


def _gaussian_1d(sigma: float, truncate: float, device, dtype) -> Tensor:
    radius = int(truncate * sigma + 0.5)  # same radius as scipy.ndimage / skimage
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).to(dtype)


def _separable_filter(x: Tensor, w: Tensor) -> Tensor:
    """Depthwise 'valid' filtering with the 1-D window along H then W."""
    c = x.shape[1]
    k = w.numel()
    x = F.conv2d(x, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim(
    a: Tensor | np.ndarray,
    b: Tensor | np.ndarray,
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor | float:
    """Gaussian-window SSIM (Wang et al. 2004), the per-image mean over pixels and channels.

    Tensors: NCHW or CHW, returns a tensor of N values (differentiable). NumPy: HxW or HxWxC,
    returns a float. Same definition as ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=..., channel_axis=-1)``: an 11-tap window
    (truncated at 3.5σ) and only the positions where the window fits inside the image, which is what
    skimage's border crop keeps, so no padding rule is involved.
    """
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        ta = _numpy_to_nchw(np.asarray(a))
        tb = _numpy_to_nchw(np.asarray(b))
        return float(ssim(ta, tb, data_range=data_range, sigma=sigma, k1=k1, k2=k2)[0])
    if a.shape != b.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    squeeze = a.dim() == 3
    if squeeze:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    if a.dim() != 4:
        raise ValueError(f"expected NCHW or CHW tensors, got shape {tuple(a.shape)}")
    w = _gaussian_1d(sigma, 3.5, a.device, a.dtype)
    if min(a.shape[-2:]) < w.numel():
        raise ValueError(f"ssim needs images of at least {w.numel()}x{w.numel()} pixels")
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    c = a.shape[1]
    mu_a, mu_b, aa, bb, ab = _separable_filter(torch.cat([a, b, a * a, b * b, a * b], dim=1), w).split(c, 1)
    var_a = aa - mu_a * mu_a
    var_b = bb - mu_b * mu_b
    cov = ab - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    per_image = s.flatten(1).mean(1)
    return per_image[0] if squeeze else per_image


def _numpy_to_nchw(x: np.ndarray) -> Tensor:
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"expected HxW or HxWxC arrays, got shape {x.shape}")
    # float32 is plenty for 1e-6 agreement with skimage's float64 and several times faster here
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)).unsqueeze(0)


# --------------------------------------------------------------------------------------------------
# VGG19


_VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip


def _vgg19_layer_names() -> dict[str, int]:
    """torchvision ``features`` indices by name: conv1_1=0, relu1_1=1, …, relu4_4=26, conv5_4=34, pool5=36."""
    names: dict[str, int] = {}
    block, conv, index = 1, 1, 0
    for v in _VGG19_CFG:
        if v == "M":
            names[f"pool{block}"] = index
            index += 1
            block, conv = block + 1, 1
        else:
            names[f"conv{block}_{conv}"] = index
            names[f"relu{block}_{conv}"] = index + 1
            index += 2
            conv += 1
    return names


VGG19_LAYERS: dict[str, int] = _vgg19_layer_names()
VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: DMDNet eq. 12/14 "the first 4 blocks": the last activation of VGG19 blocks 1–4.
DMDNET_VGG_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_4", "relu4_4")
#: MemGAN eq. 10 "conv1 … conv5": the last convolution of each block, before its ReLU, as in GFP-GAN's
#: perceptual loss that MemGAN follows.
MEMGAN_VGG_LAYERS: tuple[str, ...] = ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")


class VGG19Features(nn.Module):
    """torchvision's VGG19 ``features`` stack (same order and ``features.N.*`` keys), frozen.

    ReLUs are not in-place, so a pre-activation output (``conv5_4``) survives for the caller.
    ``forward`` takes images in [-1, 1], applies ImageNet normalisation and stops at the deepest
    requested layer.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)  # a frozen feature extractor never leaves eval mode

    def forward(self, x: Tensor, layers: Sequence[str] = DMDNET_VGG_LAYERS) -> dict[str, Tensor]:
        wanted = {VGG19_LAYERS[name]: name for name in layers}
        x = ((x + 1) * 0.5 - self.mean) / self.std
        out: dict[str, Tensor] = {}
        last = max(wanted)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
            if i == last:
                break
        return out


def vgg19_weight_candidates() -> list[Path]:
    """Where we look for the torchvision checkpoint, in order."""
    paths = []
    env = os.environ.get("FACERESTORE_VGG19")
    if env:
        paths.append(Path(env).expanduser())
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")).expanduser()
    paths.append(hub / "hub" / "checkpoints" / VGG19_FILENAME)
    default = Path.home() / ".cache" / "torch" / "hub" / "checkpoints" / VGG19_FILENAME
    if default not in paths:
        paths.append(default)
    return paths


def find_vgg19_weights() -> Path | None:
    """The first existing file of :func:`vgg19_weight_candidates`, or None."""
    return next((p for p in vgg19_weight_candidates() if p.is_file()), None)


_VGG_CACHE: dict[str, VGG19Features] = {}


def load_vgg19(path: str | Path) -> VGG19Features:
    """Load torchvision's VGG19 state dict (``features.*`` used, ``classifier.*`` ignored), cached by path."""
    path = Path(path).expanduser().resolve()
    key = f"{path}:{path.stat().st_mtime_ns}"
    if key not in _VGG_CACHE:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path} does not hold a state dict")
        state = {k: v for k, v in state.items() if k.startswith("features.")}
        model = VGG19Features()
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path} is not a torchvision VGG19 state dict (missing {missing[:4]}, unexpected {unexpected[:4]})"
            )
        _VGG_CACHE[key] = model
    return _VGG_CACHE[key]


VGGChoice = str | Path | VGG19Features | None


def resolve_vgg19(vgg: VGGChoice = "auto") -> tuple[VGG19Features | None, str]:
    """``(model or None, where it came from / why it is missing)``.

    ``"auto"`` searches :func:`vgg19_weight_candidates` and falls back when nothing is there; an
    explicit path must exist; ``None`` disables VGG on purpose; a module is used as given.
    """
    if isinstance(vgg, VGG19Features):
        return vgg, "a VGG19Features module given by the caller"
    if vgg is None:
        return None, "VGG19 disabled by the caller"
    if isinstance(vgg, str) and vgg == "auto":
        found = find_vgg19_weights()
        if found is None:
            where = ", ".join(str(p) for p in vgg_candidates_described())
            return None, f"VGG19 weights not found at {where}"
        return load_vgg19(found), f"VGG19 weights from {found}"
    path = Path(vgg).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"VGG19 weights {path} do not exist")
    return load_vgg19(path), f"VGG19 weights from {path}"


def vgg_candidates_described() -> list[str]:
    env = os.environ.get("FACERESTORE_VGG19")
    out = [f"$FACERESTORE_VGG19={env}" if env else "$FACERESTORE_VGG19 (unset)"]
    out += [str(p) for p in vgg19_weight_candidates()[1 if env else 0 :]]
    return out


# --------------------------------------------------------------------------------------------------
# fixed filters for the stand-ins


def _sobel(x: Tensor) -> Tensor:
    """Per-channel horizontal and vertical Sobel derivatives (replicate border), 2C channels."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype)
    k = torch.stack([kx, kx.t()]).unsqueeze(1) / 8.0  # (2, 1, 3, 3): an intensity-per-pixel slope
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.repeat(c, 1, 1, 1), groups=c)
    return y


def _binomial_blur(x: Tensor) -> Tensor:
    w = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device, dtype=x.dtype) / 16.0
    c = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, w.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)
    return F.conv2d(x, w.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)


def laplacian_bands(x: Tensor, levels: int = 4) -> list[Tensor]:
    """Band-pass octaves ``g_k − blur(g_k)`` with ``g_{k+1} = blur(g_k)↓2`` (finest first)."""
    bands = []
    g = x
    for _ in range(levels):
        blurred = _binomial_blur(g)
        bands.append(g - blurred)
        if min(blurred.shape[-2:]) < 8:
            break
        g = blurred[..., ::2, ::2]
    return bands


def gram(features: Tensor) -> Tensor:
    """DMDNet eq. 14's ``ΦᵀΦ / (C·H·W)`` for NCHW features: N×C×C."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


# --------------------------------------------------------------------------------------------------
# perceptual and style losses


class _FeatureLoss(nn.Module):
    backend: str
    pretrained: bool
    _description: str

    def describe(self) -> str:
        """One line saying what this loss really computes (VGG19 or which stand-in, and why)."""
        return self._description

    def _vgg_pair(self, pred: Tensor, target: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """VGG19 features of both; the target's carry no graph unless the target itself needs one."""
        fp = self.vgg(pred, self.layers)
        with torch.set_grad_enabled(target.requires_grad and torch.is_grad_enabled()):
            ft = self.vgg(target, self.layers)
        return fp, ft


class PerceptualLoss(_FeatureLoss):
    """DMDNet eq. 12 (``kind="dmdnet"``: MSE of relu1_2…relu4_4, each normalised by CᵢHᵢWᵢ, summed)
    or MemGAN eq. 10 (``kind="memgan"``: mean L1 of conv1_2…conv5_4, summed) on VGG19, or the
    SSIM + Sobel stand-in described in the module docstring when no VGG19 weights are available.
    """

    def __init__(
        self,
        kind: str = "dmdnet",
        vgg: VGGChoice = "auto",
        layers: Sequence[str] | None = None,
        scales: int = 3,
        gradient_weight: float = 10.0,
    ) -> None:
        super().__init__()
        if kind not in ("dmdnet", "memgan"):
            raise ValueError(f"kind must be 'dmdnet' or 'memgan', got {kind!r}")
        self.kind = kind
        self.layers = tuple(layers or (DMDNET_VGG_LAYERS if kind == "dmdnet" else MEMGAN_VGG_LAYERS))
        unknown = [name for name in self.layers if name not in VGG19_LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}")
        self.scales = scales
        self.gradient_weight = gradient_weight
        model, source = resolve_vgg19(vgg)
        self.vgg = model
        eq = "DMDNet eq. 12" if kind == "dmdnet" else "MemGAN eq. 10"
        if model is not None:
            self.backend, self.pretrained = "vgg19", True
            crit = "MSE" if kind == "dmdnet" else "L1"
            self._description = f"perceptual ({eq}): {crit} of VGG19 {', '.join(self.layers)}; {source}"
        else:
            self.backend, self.pretrained = "ssim+sobel", False
            self._description = (
                f"perceptual ({eq}): {source}: using multi-scale SSIM + Sobel-gradient L1 "
                f"(weight {gradient_weight:g}, {scales} scales) instead"
            )
            log.warning("%s", self._description)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.vgg is not None:
            fp, ft = self._vgg_pair(pred, target)
            crit = F.mse_loss if self.kind == "dmdnet" else F.l1_loss
            return sum(crit(fp[name], ft[name]) for name in self.layers)
        return structure_loss(pred, target, self.scales, self.gradient_weight)


def structure_loss(pred: Tensor, target: Tensor, scales: int = 3, gradient_weight: float = 10.0) -> Tensor:
    """Mean over scales of ``(1 − SSIM) + gradient_weight · L1(Sobel)`` on images in [-1, 1].

    Sobel responses are divided by 8 (intensity change per pixel of a [0, 1] image).
    """
    p = (pred + 1) * 0.5
    t = (target + 1) * 0.5
    terms = []
    for s in range(scales):
        if s:
            p, t = F.avg_pool2d(p, 2), F.avg_pool2d(t, 2)
        if min(p.shape[-2:]) < 11:
            break
        term = 1 - ssim(p, t).mean()
        if gradient_weight:
            term = term + gradient_weight * F.l1_loss(_sobel(p), _sobel(t))
        terms.append(term)
    if not terms:
        raise ValueError("images are too small for the SSIM stand-in (need at least 11x11)")
    return torch.stack(terms).mean()


class StyleLoss(_FeatureLoss):
    """DMDNet eq. 14 on VGG19 relu1_2…relu4_4 Grams (``ΦᵀΦ / CHW``), or the Laplacian-band stand-in.

    With VGG the per-layer squared Gram difference is averaged over the C×C entries
    (``reduction="mean"``, the usual implementation and scale-stable with λ_style = 0.1) or summed as
    eq. 14 literally writes (``reduction="sum"``, C² times larger).
    """

    def __init__(
        self,
        vgg: VGGChoice = "auto",
        layers: Sequence[str] = DMDNET_VGG_LAYERS,
        reduction: str = "mean",
        levels: int = 4,
        eps: float = 1e-10,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError("reduction must be 'mean' or 'sum'")
        self.layers = tuple(layers)
        self.reduction = reduction
        self.levels = levels
        self.eps = eps
        model, source = resolve_vgg19(vgg)
        self.vgg = model
        if model is not None:
            self.backend, self.pretrained = "vgg19", True
            self._description = (
                f"style (DMDNet eq. 14): Gram matrices of VGG19 {', '.join(self.layers)} "
                f"({reduction} of squared differences); {source}"
            )
        else:
            self.backend, self.pretrained = "laplacian-gram", False
            self._description = (
                f"style (DMDNet eq. 14): {source}: using relative Gram-matrix error of fixed "
                f"Laplacian-pyramid bands ({levels} octaves, colour + Sobel orientations) instead"
            )
            log.warning("%s", self._description)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.vgg is not None:
            fp, ft = self._vgg_pair(pred, target)
            total = []
            for name in self.layers:
                d = (gram(fp[name]) - gram(ft[name])) ** 2
                total.append(d.mean() if self.reduction == "mean" else d.flatten(1).sum(1).mean())
            return torch.stack(total).sum()
        return band_style_loss(pred, target, self.levels, self.eps)


def _band_features(x: Tensor, levels: int) -> list[Tensor]:
    return [torch.cat([b, _sobel(b)], dim=1) for b in laplacian_bands(x, levels)]


def band_style_loss(pred: Tensor, target: Tensor, levels: int = 4, eps: float = 1e-10) -> Tensor:
    """Mean over octaves of ``||G(pred) − G(target)||²_F / (||G(target)||²_F + eps)`` per image."""
    fp = _band_features(pred, levels)
    ft = _band_features(target, levels)
    terms = []
    for a, b in zip(fp, ft, strict=True):
        ga, gb = gram(a), gram(b)
        num = (ga - gb).pow(2).flatten(1).sum(1)
        den = gb.detach().pow(2).flatten(1).sum(1) + eps
        terms.append((num / den).mean())
    return torch.stack(terms).mean()


def feature_losses(kind: str = "dmdnet", vgg: VGGChoice = "auto") -> tuple[PerceptualLoss, StyleLoss | None]:
    """The feature losses a paper uses: DMDNet → (perceptual, style), MemGAN → (perceptual, None).

    Both share one VGG19 instance (:func:`load_vgg19` caches by path).
    """
    perceptual = PerceptualLoss(kind, vgg=vgg)
    style = StyleLoss(vgg=vgg) if kind == "dmdnet" else None
    return perceptual, style


# --------------------------------------------------------------------------------------------------
# adversarial losses


def _as_list(logits: Tensor | Sequence[Tensor]) -> list[Tensor]:
    return [logits] if isinstance(logits, Tensor) else list(logits)


def hinge_d_loss(real_logits: Tensor | Sequence[Tensor], fake_logits: Tensor | Sequence[Tensor]) -> Tensor:
    """DMDNet eq. 15 (SNGAN hinge) summed over scales.

    ``Σ_r E[relu(1 − D_r(real))] + E[relu(1 + D_r(fake))]``.

    Pass the fake logits of a detached generator output.
    """
    real, fake = _as_list(real_logits), _as_list(fake_logits)
    if len(real) != len(fake):
        raise ValueError("need as many real as fake logit maps")
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake, strict=True))


def hinge_g_loss(
    fake_logits: Tensor | Sequence[Tensor], weights: Sequence[float] | None = DMDNET_ADV_WEIGHTS
) -> Tensor:
    """DMDNet eq. 16: ``−Σ_r λ_r E[D_r(fake)]`` with λ = {4, 1, 0.5} for r = {1, 2, 4}.

    A single logit tensor gets weight 1 unless ``weights`` has exactly one entry.
    """
    fake = _as_list(fake_logits)
    if weights is None or (isinstance(fake_logits, Tensor) and len(weights) != 1):
        weights = [1.0] * len(fake)
    if len(weights) != len(fake):
        raise ValueError(f"{len(fake)} logit maps but {len(weights)} weights")
    return -sum(w * f.mean() for w, f in zip(weights, fake, strict=True))


def logistic_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """MemGAN eq. 12 / StyleGAN2: ``E[softplus(D(fake))] + E[softplus(−D(real))]``."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def logistic_g_loss(fake_logits: Tensor) -> Tensor:
    """MemGAN eq. 11 / StyleGAN2 non-saturating loss: ``E[softplus(−D(fake))]``."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: Tensor | Sequence[Tensor], real_images: Tensor) -> Tensor:
    """``E[||∇ₓ D(x)||²]`` on real images (call with ``real_images.requires_grad_(True)`` before D).

    Zero (not an error) when D's output does not depend on its input.
    """
    total = sum(r.sum() for r in _as_list(real_logits))
    if not isinstance(total, Tensor) or not total.requires_grad:
        return real_images.new_zeros(())
    (grad,) = torch.autograd.grad(total, real_images, create_graph=True, allow_unused=True)
    if grad is None:
        return real_images.new_zeros(())
    return grad.pow(2).flatten(1).sum(1).mean()


def lazy_r1_loss(
    real_logits: Tensor | Sequence[Tensor],
    real_images: Tensor,
    gamma: float = R1_GAMMA,
    interval: int = R1_INTERVAL,
) -> Tensor:
    """StyleGAN2's lazy R1: ``γ/2 · R1 · interval``, applied every ``interval`` D steps."""
    return gamma / 2 * r1_penalty(real_logits, real_images) * interval
