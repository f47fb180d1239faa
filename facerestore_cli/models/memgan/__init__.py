"""MemGAN (Ning et al., ACM MM 2023): a memory network fused into a StyleGAN2 decoder.

No public code or weights exist: ours is the only implementation, and facerestore ships its own
compact weights. This file is the model's card, registered with :mod:`facerestore_cli.models.registry`;
the network is in :mod:`.network`, imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from facerestore_cli._lazy import lazy_exports
from facerestore_cli.models.registry import MethodSpec, register_method
from facerestore_cli.models.stylegan2_layout import BASE_CHANNELS, BASE_STYLE_DIM, resolutions, stylegan2_channels

#: the paper's memory placement minus 512x512 (see Config)
DEFAULT_MEMORY_SCALES: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class Config:
    """MemGAN hyper-parameters.

    ``width`` multiplies every channel count including the style dim: 1.0 is the paper's model
    (style dim 512, clean StyleGAN2-512 "Cmul1" channels 512,512,512,512,256,128,64,32 for 4..512).
    ``size`` is the aligned face size (512 in facerestore; smaller only for tests), and
    ``channel_multiplier`` the clean generator's multiplier for resolutions >= 64 (1 = "Cmul1").
    ``memory_scales`` lists the resolutions that get a memory bank of ``K = resolution`` slots;
    the others fuse ``F^E`` directly. The default is every scale but 512: a 512-slot bank read at
    262144 positions per face costs several times the rest of the compact model on CPU (the whole
    forward gets about 4x slower); listing 512 works (the read is chunked) and costs that time.
    The paper (eq. 5) sets ``lambda_ema = 0.999`` and uses a plain softmax over cosine similarities,
    i.e. ``memory_temperature = 1``; the temperature is a knob we add (similarities are divided by
    it before the softmax) because with cosines in [-1, 1] the paper's softmax is very flat.
    ``fusion_kernel`` is the kernel of the affine and blend convs ("a simple convolution").
    ``memory_residual``: section 3.2 says the degraded features are *enhanced* by being fused with
    what is retrieved ("we fuse them with similar facial features retrieved from the memory network"),
    and Fig. 2 shows F^M keeping the face's spatial layout; the read of eq. 3 alone is a convex
    combination of slots that, with cosine similarities in [-1, 1], is nearly the same at every
    position. So by default ``F^M = F^E + read`` (eq. 3 is the ``read``); ``False`` gives the literal
    ``F^M = read``.
    """

    width: float = 1.0
    size: int = 512
    channel_multiplier: int = 1
    num_mlp: int = 8
    memory_scales: tuple[int, ...] = field(default=DEFAULT_MEMORY_SCALES)
    lambda_ema: float = 0.999
    memory_temperature: float = 1.0
    memory_residual: bool = True
    fusion_kernel: int = 3

    def __post_init__(self) -> None:
        scales = tuple(sorted({int(s) for s in self.memory_scales}))
        object.__setattr__(self, "memory_scales", scales)
        if self.size not in BASE_CHANNELS or self.size < 8:
            raise ValueError(f"MemGAN size must be a power of two in 8..1024, got {self.size}")
        if not self.width > 0:
            raise ValueError(f"width must be positive, got {self.width}")
        bad = [s for s in scales if s not in resolutions(self.size)]
        if bad:
            raise ValueError(f"memory_scales {bad} are not decoder resolutions 4..{self.size}")
        if not 0.0 <= self.lambda_ema <= 1.0:
            raise ValueError(f"lambda_ema must be in [0, 1], got {self.lambda_ema}")
        if not self.memory_temperature > 0:
            raise ValueError(f"memory_temperature must be positive, got {self.memory_temperature}")
        if self.fusion_kernel < 1 or self.fusion_kernel % 2 == 0:
            raise ValueError(f"fusion_kernel must be odd and positive, got {self.fusion_kernel}")
        if self.num_mlp < 1:
            raise ValueError(f"num_mlp must be at least 1, got {self.num_mlp}")

    @classmethod
    def paper(cls) -> Config:
        """The full-size model of the paper: 87 M parameters (42 M of them in the 3x3 fusion convs of
        the 512-channel scales), 2-5 s per face on two CPU threads."""
        return cls()

    @classmethod
    def compact(cls) -> Config:
        """Our CPU model: quarter width (style dim 128, channels 128,128,128,128,64,32,16,8), memory
        at 4..256.

        5.5 M parameters plus 0.72 M buffer values (noise maps, 20k memory values): 12 MiB as fp16.
        One 512x512 face takes about 0.25-0.4 s on two CPU threads (width 0.375 would be 12.3 M
        parameters and about 0.5 s).
        """
        return cls(width=0.25)

    @property
    def style_dim(self) -> int:
        return max(1, int(BASE_STYLE_DIM * self.width))

    def channels(self) -> dict[int, int]:
        """Channels per resolution, shared by encoder, memory and decoder."""
        return stylegan2_channels(self.size, self.width, self.channel_multiplier)


SPEC = register_method(
    MethodSpec(
        name="memgan",
        summary="MemGAN: a memory network fused into a StyleGAN2 decoder (our weights)",
        config=Config,
        uses_references=False,
        official=None,
        network=__name__ + ".network",
        tiny_config=lambda: Config(width=1 / 32, size=32, memory_scales=(4, 8, 16, 32)),
        onnx_graphs=("restore",),
        onnx_export=__name__ + ".network",
    )
)

_NETWORK = __name__ + ".network"
_EXPORTS = {
    name: _NETWORK
    for name in ("Encoder", "MemGAN", "MemoryBank", "MemoryFusion", "ResBlockDown", "build", "convert_stylegan2")
}
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
