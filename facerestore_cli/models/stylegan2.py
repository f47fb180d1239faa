"""StyleGAN2 generator building blocks in the public "clean" layout.

MemGAN decodes with a pretrained StyleGAN2. The checkpoints we can start from (e.g. GFPGAN's
``StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth``) use the "clean" generator of GFPGAN/basicsr, so
the modules here reproduce its parameter names, shapes *and meaning*:

* every ``nn.Linear`` (mapping MLP and per-conv ``modulation``) is a plain linear layer: the
  equalised-learning-rate scale (and the mapping's ``lr_mul``) is already baked into the stored
  weights, so nothing is rescaled at run time;
* a modulated conv weight is stored as ``(1, out, in, k, k)``; its style is
  ``modulation(w)`` (bias initialised to 1), weights are demodulated with ``eps = 1e-8``;
* a style conv multiplies the conv result by ``sqrt(2)`` (the gain of the leaky ReLU that the
  original arch folds into its fused activation), then adds ``weight * noise`` (a scalar ``weight``
  per conv), then ``bias`` ``(1, C, 1, 1)``, then a leaky ReLU with slope 0.2;
* upsampling by 2 is bilinear (``align_corners=False``), applied to the input of the first conv of
  each resolution and to the RGB skip.

The generator here has no encoder; ``memgan.py`` drives the same modules and inserts its fusion
steps between them. :class:`StyleGAN2Decoder` also runs on its own (``z``/``w`` to image), which is
handy to look at an imported checkpoint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerestore_cli.models.stylegan2_layout import (
    BASE_CHANNELS,
    BASE_STYLE_DIM,
    LRELU_SLOPE,
    resolutions,
    stylegan2_channels,
)


def upsample2x(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class NormStyleCode(nn.Module):
    """Scales each code to unit root-mean-square (the mapping network's first step)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution, with optional demodulation and a bilinear 2x upsample before it.

    Computed as ``conv(x * s, W) * d`` instead of building one weight per sample: the two are the
    same linear map, and this form uses one ordinary convolution for the whole batch. The
    demodulation factor ``d`` is computed in float32 so that fp16 runs keep ``eps`` meaningful.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.eps = eps
        self.modulation = nn.Linear(style_dim, in_channels, bias=True)
        nn.init.normal_(self.modulation.weight, std=1.0 / math.sqrt(style_dim))
        nn.init.ones_(self.modulation.bias)
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size) / math.sqrt(fan_in)
        )

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        s = self.modulation(style)  # (b, in)
        weight = self.weight[0]
        x = x * s.to(x.dtype)[:, :, None, None]  # scaling commutes with the (linear, per-channel) upsample
        if self.upsample:
            x = upsample2x(x)
        out = F.conv2d(x, weight.to(x.dtype), padding=self.kernel_size // 2)
        if self.demodulate:
            w2 = weight.float().pow(2).sum(dim=(2, 3))  # (out, in)
            demod = torch.rsqrt(s.float().pow(2) @ w2.t() + self.eps)  # (b, out)
            out = out * demod.to(out.dtype)[:, :, None, None]
        return out

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, out={self.out_channels}, k={self.kernel_size}, "
            f"demodulate={self.demodulate}, upsample={self.upsample}"
        )


class StyleConv(nn.Module):
    """Modulated conv, ``sqrt(2)`` gain, per-conv scaled noise, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        out = self.modulated_conv(x, style) * math.sqrt(2.0)
        if noise is None:
            b, _, h, w = out.shape
            noise = torch.randn(b, 1, h, w, device=out.device, dtype=out.dtype)
        out = out + self.weight.to(out.dtype) * noise.to(out.dtype)
        out = out + self.bias.to(out.dtype)
        return F.leaky_relu(out, LRELU_SLOPE)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB plus bias, added to the (upsampled) skip image."""

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.modulated_conv(x, style) + self.bias.to(x.dtype)
        if skip is not None:
            if self.upsample:
                skip = upsample2x(skip)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class StyleGAN2Decoder(nn.Module):
    """The clean StyleGAN2 generator's modules, with its exact state-dict names.

    ``style_mlp`` (``NormStyleCode`` then ``num_mlp`` x (linear, leaky ReLU), so linear layers sit at
    the odd indices 1, 3, ...), ``constant_input``, ``style_conv1``/``to_rgb1`` at 4x4, then for each
    resolution 8..size two ``style_convs`` (the first upsamples) and one ``to_rgbs`` entry, and the
    fixed noise maps ``noises.noise0..`` (one per style conv).
    """

    def __init__(
        self,
        size: int = 512,
        channels: dict[int, int] | None = None,
        style_dim: int = BASE_STYLE_DIM,
        num_mlp: int = 8,
    ) -> None:
        super().__init__()
        if size not in BASE_CHANNELS or size < 8:
            raise ValueError(f"StyleGAN2 size must be a power of two in 8..1024, got {size}")
        channels = channels or stylegan2_channels(size)
        self.size = size
        self.style_dim = style_dim
        self.channels = dict(channels)

        layers: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            linear = nn.Linear(style_dim, style_dim, bias=True)
            nn.init.kaiming_normal_(linear.weight, a=LRELU_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.LeakyReLU(LRELU_SLOPE)]
        self.style_mlp = nn.Sequential(*layers)

        c4 = channels[4]
        self.constant_input = ConstantInput(c4, 4)
        self.style_conv1 = StyleConv(c4, c4, style_dim)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False)

        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        cin = c4
        for res in resolutions(size)[1:]:
            cout = channels[res]
            self.style_convs.append(StyleConv(cin, cout, style_dim, upsample=True))
            self.style_convs.append(StyleConv(cout, cout, style_dim))
            self.to_rgbs.append(ToRGB(cout, style_dim, upsample=True))
            cin = cout
        for idx, res in enumerate(self.noise_resolutions()):
            self.noises.register_buffer(f"noise{idx}", torch.randn(1, 1, res, res))

    def noise_resolutions(self) -> list[int]:
        """Resolution of each style conv's noise, in order (4, 8, 8, 16, 16, ...)."""
        return [4] + [r for r in resolutions(self.size)[1:] for _ in range(2)]

    def noise_maps(self, randomize: bool) -> list[Tensor | None]:
        """One noise per style conv: the stored maps, or ``None`` (fresh noise per call and sample)."""
        n = len(self.noise_resolutions())
        if randomize:
            return [None] * n
        return [getattr(self.noises, f"noise{i}") for i in range(n)]

    def mapping(self, z: Tensor) -> Tensor:
        return self.style_mlp(z)

    def forward(self, styles: Tensor, input_is_latent: bool = False, randomize_noise: bool = True) -> Tensor:
        """Plain StyleGAN2 synthesis from ``z`` (or ``w`` with ``input_is_latent``), one code per sample."""
        w = styles if input_is_latent else self.mapping(styles)
        noise = self.noise_maps(randomize_noise)
        out = self.style_conv1(self.constant_input(w.shape[0]).to(w.dtype), w, noise[0])
        skip = self.to_rgb1(out, w)
        for i, to_rgb in enumerate(self.to_rgbs):
            out = self.style_convs[2 * i](out, w, noise[2 * i + 1])
            out = self.style_convs[2 * i + 1](out, w, noise[2 * i + 2])
            skip = to_rgb(out, w, skip)
        return skip


def decoder_layout(
    size: int = 512, channels: dict[int, int] | None = None, style_dim: int = BASE_STYLE_DIM, num_mlp: int = 8
) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of a :class:`StyleGAN2Decoder`, computed without allocating it."""
    with torch.device("meta"):
        decoder = StyleGAN2Decoder(size, channels, style_dim, num_mlp)
    return {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
