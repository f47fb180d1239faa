"""The two papers' discriminators, sized for CPU training by a ``width`` knob.

* :class:`MultiScaleSNDiscriminator` — DMDNet section 3.4: SNGAN-style spectrally normalised patch
  discriminators judging the image at full, half and quarter resolution (r ∈ {1, 2, 4}), one
  independent network per scale, trained with the hinge loss of eq. 15–16.
* :class:`StyleGAN2Discriminator` — MemGAN follows StyleGAN2: a residual discriminator that halves the
  resolution from ``size`` down to 4x4 (blurred [1, 3, 3, 1] down-sampling, equalised learning rate,
  residual branches scaled by 1/√2), then minibatch standard deviation, a 3x3 conv and two linear
  layers down to one logit. ``width`` is the channel count at full resolution; it doubles at each
  halving up to ``max_channels`` (the official 512 px network is width 64, max 512).

Both take NCHW images in [-1, 1] and can also return their intermediate activations (for feature
matching or a discriminator-feature style loss).

Cost on the shared 2-core development CPU (forward + backward, batch 2, 512x512, default widths,
``channels_last``, one torch thread; two threads were slower while other jobs shared the cores):
MultiScaleSNDiscriminator(width=32) ≈ 0.45 s (2.1 M parameters; width 16: 0.12 s),
StyleGAN2Discriminator(width=16, max_channels=128) ≈ 1.3 s (1.8 M parameters; width 8: 0.7 s).
Without ``channels_last`` they took ≈ 0.5–0.8 s and ≈ 2.2–2.8 s.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

# --------------------------------------------------------------------------------------------------
# DMDNet: multi-scale spectral-norm patch discriminators


class SNPatchDiscriminator(nn.Module):
    """``layers`` spectral-normalised 4x4 stride-2 convs with LeakyReLU(0.2), then a 3x3 conv to one
    logit per patch (a 512 input gives a 32x32 logit map with 4 layers)."""

    def __init__(self, width: int = 32, layers: int = 4, max_channels: int = 256) -> None:
        super().__init__()
        blocks = []
        cin = 3
        for i in range(layers):
            cout = min(max_channels, width * 2**i)
            blocks.append(
                nn.Sequential(
                    spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = spectral_norm(nn.Conv2d(cin, 1, 3, padding=1))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return self.head(x), features


class MultiScaleSNDiscriminator(nn.Module):
    """DMDNet's discriminators D_r for r in ``scales`` (default 1, 2, 4, i.e. 512, 256 and 128 px).

    The input is box-averaged by r (an anti-aliased down-sampling) before D_r. ``forward`` returns the
    list of logit maps in ``scales`` order — feed it to :func:`~facerestore_cli.train.losses.hinge_d_loss`
    / :func:`~facerestore_cli.train.losses.hinge_g_loss` — and with ``return_features=True`` also, per
    scale, the list of intermediate activations.
    """

    def __init__(
        self,
        width: int = 32,
        scales: tuple[int, ...] = (1, 2, 4),
        layers: int = 4,
        max_channels: int = 256,
    ) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.discriminators = nn.ModuleList(SNPatchDiscriminator(width, layers, max_channels) for _ in self.scales)

    def forward(
        self, x: Tensor, return_features: bool = False
    ) -> list[Tensor] | tuple[list[Tensor], list[list[Tensor]]]:
        logits, features = [], []
        for r, d in zip(self.scales, self.discriminators, strict=True):
            xr = F.avg_pool2d(x, r) if r > 1 else x
            out, feats = d(xr)
            logits.append(out)
            features.append(feats)
        return (logits, features) if return_features else logits


# --------------------------------------------------------------------------------------------------
# MemGAN: StyleGAN2 residual discriminator


class _ScaledLeakyReLU(nn.Module):
    """LeakyReLU(0.2)·√2, StyleGAN2's gain-preserving activation."""

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, 0.2) * math.sqrt(2.0)


class _Blur(nn.Module):
    """Depthwise [1, 3, 3, 1]ᵀ[1, 3, 3, 1] low-pass with explicit zero padding (StyleGAN2's FIR)."""

    def __init__(self, pad: tuple[int, int]) -> None:
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        k = torch.outer(k, k)
        self.register_buffer("kernel", (k / k.sum())[None, None], persistent=False)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, (self.pad[0], self.pad[1], self.pad[0], self.pad[1]))
        return F.conv2d(x, self.kernel.expand(c, 1, 4, 4), groups=c)


class _EqualConv2d(nn.Module):
    """Conv with weights drawn N(0, 1) and scaled by 1/√fan_in at run time (equalised learning rate)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = 1 / math.sqrt(cin * k * k)
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class _EqualLinear(nn.Module):
    def __init__(self, cin: int, cout: int, activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = 1 / math.sqrt(cin)
        self.act = _ScaledLeakyReLU() if activate else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(F.linear(x, self.weight * self.scale, self.bias))


def _conv_layer(cin: int, cout: int, k: int, downsample: bool = False, activate: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    if downsample:
        p = (4 - 2) + (k - 1)  # blur pads so that the stride-2 conv exactly halves the size
        layers.append(_Blur(((p + 1) // 2, p // 2)))
        layers.append(_EqualConv2d(cin, cout, k, stride=2, padding=0, bias=activate))
    else:
        layers.append(_EqualConv2d(cin, cout, k, padding=k // 2, bias=activate))
    if activate:
        layers.append(_ScaledLeakyReLU())
    return nn.Sequential(*layers)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _conv_layer(cin, cin, 3)
        self.conv2 = _conv_layer(cin, cout, 3, downsample=True)
        self.skip = _conv_layer(cin, cout, 1, downsample=True, activate=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


def minibatch_stddev(x: Tensor, group_size: int = 4, features: int = 1) -> Tensor:
    """Append StyleGAN's minibatch standard-deviation channel(s).

    Samples ``i, i + N/G, i + 2N/G, …`` form a group of G (the largest divisor of N not above
    ``group_size``); the std over the group, averaged over channels and pixels, becomes ``features``
    extra constant channels.
    """
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    y = x.view(g, n // g, features, c // features, h, w)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)
    y = y.mean(dim=(2, 3, 4)).view(n // g, features, 1, 1)
    y = y.repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2's residual discriminator (see module docstring); returns (N, 1) logits."""

    def __init__(
        self,
        size: int = 512,
        width: int = 16,
        max_channels: int = 128,
        stddev_group: int = 4,
        stddev_features: int = 1,
    ) -> None:
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"size must be a power of two of at least 8, got {size}")
        self.size = size
        self.stddev_group, self.stddev_features = stddev_group, stddev_features

        def ch(res: int) -> int:
            return min(max_channels, width * size // res)

        self.channels = {res: ch(res) for res in (2**i for i in range(2, int(math.log2(size)) + 1))}
        self.from_rgb = _conv_layer(3, ch(size), 1)
        blocks = []
        res = size
        while res > 4:
            blocks.append(_ResBlock(ch(res), ch(res // 2)))
            res //= 2
        self.blocks = nn.ModuleList(blocks)
        c4 = ch(4)
        if c4 % stddev_features:
            raise ValueError("the 4x4 channel count must be divisible by stddev_features")
        self.final_conv = _conv_layer(c4 + stddev_features, c4, 3)
        self.final_linear = nn.Sequential(_EqualLinear(c4 * 16, c4, activate=True), _EqualLinear(c4, 1))

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        if x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"expected {self.size}x{self.size} images, got {tuple(x.shape[-2:])}")
        features = []
        x = self.from_rgb(x)
        features.append(x)
        for block in self.blocks:
            x = block(x)
            features.append(x)
        x = minibatch_stddev(x, self.stddev_group, self.stddev_features)
        x = self.final_conv(x)
        logits = self.final_linear(x.flatten(1))
        return (logits, features) if return_features else logits
