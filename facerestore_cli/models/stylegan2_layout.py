"""The clean StyleGAN2 generator's channel table: plain numbers, so configs can use it without torch."""

from __future__ import annotations

import math

#: channels per resolution of the clean generator at ``narrow=1`` before the channel multiplier
#: is applied to resolutions >= 64 (the public StyleGAN2 channel table)
BASE_CHANNELS: dict[int, int] = {
    4: 512,
    8: 512,
    16: 512,
    32: 512,
    64: 256,
    128: 128,
    256: 64,
    512: 32,
    1024: 16,
}
BASE_STYLE_DIM = 512
LRELU_SLOPE = 0.2


def stylegan2_channels(size: int, width: float = 1.0, channel_multiplier: float = 1) -> dict[int, int]:
    """Channels per resolution ``4..size``; ``width`` scales every count (the clean ``narrow``)."""
    out = {}
    for res, base in BASE_CHANNELS.items():
        if res > size:
            break
        mult = channel_multiplier if res >= 64 else 1
        out[res] = max(1, int(base * mult * width))
    return out


def resolutions(size: int) -> list[int]:
    """``[4, 8, ..., size]``."""
    return [2**i for i in range(2, int(math.log2(size)) + 1)]
