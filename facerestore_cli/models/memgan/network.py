"""MemGAN: blind face restoration with a multi-scale memory network and a StyleGAN2 prior.

Implemented from Ning et al., "Exploring Correlations in Degraded Spatial Identity Features for Blind
Face Restoration" (ACM MM 2023), section 3; there is no public code or checkpoint, so where the paper
is silent the choice made here is stated in the docstring that owns it.

Data flow for a 512x512 aligned face ``x`` in [-1, 1]:

1. **Encoder** (:class:`Encoder`): a 3x3 conv gives ``F^E_512``, residual down blocks give
   ``F^E_256 .. F^E_4``. Channels follow the decoder's table at every scale, so ``F^M`` and the
   decoder features always have the same channel count and no 1x1 matching conv is needed (the
   fusion convs would absorb a mismatch anyway, they take ``F^M`` as their input).
2. **Mapping**: ``F^E_4`` flattened -> linear to the style dim -> the StyleGAN2 mapping MLP
   (``decoder.style_mlp``: pixel-norm + 8 linear/leaky-ReLU layers, loadable from a pretrained
   StyleGAN2) -> one latent ``w`` shared by every style layer (the paper's single "latent code").
3. **Memory** (:class:`MemoryBank`, eqs. 1-5) at every scale in ``Config.memory_scales``: ``K = h = w``
   slots; cosine similarity, softmax over slots, weighted sum of slots gives ``F^M_l``; in training
   mode the slots then move towards the mean of the features that voted for them. At scales
   without memory the fusion uses ``F^E_l`` itself (a "memory bypass"); the default leaves only 512
   without memory because 512 slots x 262144 positions per image costs more than the whole rest of
   the compact model (see ``Config.memory_scales``).
4. **Decoder** (Fig. 1(b)) per resolution: StyleGAN2 conv 1 (upsampling) -> ``F^GAN1``; affine
   ``s * F^GAN1 + b`` with ``s, b = conv(F^M)`` (eqs. 6-7); StyleGAN2 conv 2 -> ``F^GAN2``; blend
   ``F^D = conv(concat(F^M, F^GAN2))`` (eq. 8); ToRGB of ``F^D`` into the StyleGAN2 RGB skip.
   At 4x4, where StyleGAN2 has a single conv (``style_conv1`` on ``constant_input``), the affine acts
   on its output and the blend on the affine result.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerestore_cli.models.memgan import DEFAULT_MEMORY_SCALES, Config  # noqa: F401 (re-exported)
from facerestore_cli.models.registry import ConversionError
from facerestore_cli.models.stylegan2 import (
    BASE_STYLE_DIM,
    LRELU_SLOPE,
    StyleGAN2Decoder,
    decoder_layout,
    resolutions,
    stylegan2_channels,
)


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Keep the memory's cosine/softmax in float32 even inside an autocast region."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):
        return contextlib.nullcontext()


class MemoryBank(nn.Module):
    """One scale's memory ``M in R^{K x c}`` (eqs. 1-5), a buffer that gradients never reach.

    Read (every mode): ``alpha_ik = softmax_k(cos(F_i, M_k) / T)``, ``F^M_i = sum_k alpha_ik M_k``.
    Update (training mode only, after the read, from the same similarities): each feature vector
    votes for its most similar slot, and every slot with voters becomes
    ``lambda * M_k + (1 - lambda) * mean(voters)`` over all positions of the whole batch; slots
    without voters stay bit-identical. The raw (un-normalised) features are averaged, as in eq. 5.
    Slots start as random unit vectors: the paper trains the memory online, with no pre-training.

    The read runs in float32 in chunks of positions so that the ``n x K`` similarity matrix stays
    bounded (about 16 MB per chunk). Under data-parallel training each replica updates its own copy
    and DDP re-broadcasts rank 0's buffers; averaging votes across ranks is not implemented.
    """

    memory: Tensor
    chunk_elements = 1 << 22

    def __init__(self, num_slots: int, channels: int, momentum: float = 0.999, temperature: float = 1.0) -> None:
        super().__init__()
        self.num_slots = num_slots
        self.channels = channels
        self.momentum = momentum
        self.temperature = temperature
        self.register_buffer("memory", F.normalize(torch.randn(num_slots, channels), dim=1))

    def extra_repr(self) -> str:
        return f"slots={self.num_slots}, channels={self.channels}, momentum={self.momentum}"

    def forward(self, features: Tensor) -> Tensor:
        b, c, h, w = features.shape
        if c != self.channels:
            raise ValueError(f"memory of {self.channels} channels got features with {c}")
        flat = features.permute(0, 2, 3, 1).reshape(-1, c)
        update = self.training
        with _no_autocast(features.device):
            feats = flat.float()
            # a copy: the in-place update below must not touch a tensor autograd saved for backward
            mem = self.memory.to(torch.float32, copy=True)
            feats_n = F.normalize(feats, dim=1)
            mem_n = F.normalize(mem, dim=1)
            # Exported graphs read every position at once: chunk bounds would be traced as constants of
            # the example batch, so a larger batch would be read only in part.
            step = feats.shape[0] if torch.onnx.is_in_onnx_export() else max(1, self.chunk_elements // self.num_slots)
            outs, votes = [], []
            for start in range(0, feats.shape[0], step):
                sim = feats_n[start : start + step] @ mem_n.t()  # eq. 1
                if update:
                    votes.append(sim.detach().argmax(dim=1))  # eq. 4
                alpha = torch.softmax(sim / self.temperature, dim=1)  # eq. 2
                outs.append(alpha @ mem)  # eq. 3
            out = torch.cat(outs)
        if update:
            self._update(feats.detach(), torch.cat(votes))
        return out.to(features.dtype).reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def _update(self, feats: Tensor, index: Tensor) -> None:
        """Eq. 5 for every slot that received at least one vote."""
        counts = torch.bincount(index, minlength=self.num_slots)
        sums = feats.new_zeros(self.num_slots, self.channels).index_add_(0, index, feats)
        voted = counts > 0
        mean = sums[voted] / counts[voted].unsqueeze(1).to(sums.dtype)
        old = self.memory[voted].float()
        self.memory[voted] = (self.momentum * old + (1.0 - self.momentum) * mean).to(self.memory.dtype)


def _init_conv(conv: nn.Conv2d | nn.Linear, activation: bool) -> None:
    """Variance-preserving init (He, for the leaky ReLU that follows, or linear).

    PyTorch's default init shrinks activations about threefold per layer, which left the 4x4
    features, hence ``z``, tiny; the mapping's pixel norm then amplified rounding noise of the
    encoder fifty-fold. With this init ``z`` starts at about unit scale.
    """
    if activation:
        nn.init.kaiming_normal_(conv.weight, a=LRELU_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
    else:
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="linear")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ResBlockDown(nn.Module):
    """Residual block halving the resolution (GFPGAN encoder style; 2x2 mean = bilinear x0.5).

    The two branches are summed and divided by sqrt(2) so that the seven blocks keep the scale.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        _init_conv(self.conv1, activation=True)
        _init_conv(self.conv2, activation=True)
        _init_conv(self.skip, activation=False)

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv1(x), LRELU_SLOPE)
        h = F.leaky_relu(self.conv2(F.avg_pool2d(h, 2)), LRELU_SLOPE)
        return (h + self.skip(F.avg_pool2d(x, 2))) * (1 / math.sqrt(2))


class Encoder(nn.Module):
    """Spatial identity features ``F^E`` at every resolution, and the input of the mapping MLP."""

    def __init__(self, size: int, channels: dict[int, int], style_dim: int) -> None:
        super().__init__()
        self.size = size
        self.conv_first = nn.Conv2d(3, channels[size], 3, padding=1)
        self.down = nn.ModuleDict(
            {str(r): ResBlockDown(channels[2 * r], channels[r]) for r in reversed(resolutions(size)[:-1])}
        )
        self.to_latent = nn.Linear(channels[4] * 16, style_dim)
        _init_conv(self.conv_first, activation=True)
        _init_conv(self.to_latent, activation=False)

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        feats = {self.size: F.leaky_relu(self.conv_first(x), LRELU_SLOPE)}
        h = feats[self.size]
        for name, block in self.down.items():
            h = block(h)
            feats[int(name)] = h
        return feats

    def latent_input(self, smallest: Tensor) -> Tensor:
        """``z`` for the mapping MLP from the 4x4 features."""
        return self.to_latent(smallest.flatten(1))


class MemoryFusion(nn.Module):
    """The paper's two fusions of ``F^M`` into the decoder at one resolution.

    ``affine``: one conv from ``F^M`` to ``2C`` channels split into scale ``s`` and shift ``b``
    (eq. 6); ``blend``: one conv over ``concat(F^M, F^GAN2)`` (eq. 8). Both are initialised so
    that the block starts as the plain StyleGAN2 block (``s ~ 1``, ``b ~ 0``, blend ~ identity on
    the GAN features) with small random weights on ``F^M``, so a pretrained prior works from step
    one and gradients reach the encoder through ``F^M``.
    """

    def __init__(self, mem_channels: int, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.channels = channels
        self.affine = nn.Conv2d(mem_channels, 2 * channels, kernel_size, padding=pad)
        self.blend = nn.Conv2d(mem_channels + channels, channels, kernel_size, padding=pad)
        with torch.no_grad():
            small = 0.1 / math.sqrt(mem_channels * kernel_size * kernel_size)
            self.affine.weight.normal_(0.0, small)
            self.affine.bias.zero_()
            self.affine.bias[:channels] = 1.0
            self.blend.weight.zero_()
            self.blend.weight[:, :mem_channels].normal_(0.0, small)
            eye = torch.arange(channels)
            self.blend.weight[eye, mem_channels + eye, pad, pad] = 1.0
            self.blend.bias.zero_()

    def affine_transform(self, f_mem: Tensor, f_gan1: Tensor) -> Tensor:
        """Eqs. 6-7: ``s * F^GAN1 + b`` with ``s, b = conv(F^M)``."""
        scale, shift = self.affine(f_mem).split(self.channels, dim=1)
        return scale * f_gan1 + shift

    def blend_fusion(self, f_mem: Tensor, f_gan2: Tensor) -> Tensor:
        """Eq. 8: ``conv(concat(F^M, F^GAN2))``."""
        return self.blend(torch.cat([f_mem, f_gan2], dim=1))


class MemGAN(nn.Module):
    """Encoder, memory banks, fusion modules and the StyleGAN2 decoder (``decoder.*``, clean names)."""

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config = config or Config()
        ch = config.channels()
        self.encoder = Encoder(config.size, ch, config.style_dim)
        self.memories = nn.ModuleDict(
            {str(r): MemoryBank(r, ch[r], config.lambda_ema, config.memory_temperature) for r in config.memory_scales}
        )
        self.fusions = nn.ModuleDict(
            {str(r): MemoryFusion(ch[r], ch[r], config.fusion_kernel) for r in resolutions(config.size)}
        )
        self.decoder = StyleGAN2Decoder(config.size, ch, config.style_dim, config.num_mlp)

    def memorized(self, feats: dict[int, Tensor]) -> dict[int, Tensor]:
        """``F^M`` per resolution (``F^E`` itself where there is no memory bank)."""
        out = {}
        for r, f in feats.items():
            if str(r) not in self.memories:
                out[r] = f
            else:
                read = self.memories[str(r)](f)
                out[r] = f + read if self.config.memory_residual else read
        return out

    def forward(
        self, x: Tensor, return_features: bool = False, randomize_noise: bool | None = None
    ) -> Tensor | tuple[Tensor, dict[str, object]]:
        """Restore ``x`` (N, 3, size, size) in [-1, 1]; the output is not clamped.

        Noise injection uses fresh noise in training mode and the stored ``decoder.noises`` maps in
        eval mode (deterministic, batch-independent restorations) unless ``randomize_noise`` says
        otherwise. With ``return_features`` also returns ``{"encoder": F^E, "memory": F^M,
        "latent": w}`` (dicts keyed by resolution).
        """
        size = self.config.size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
            raise ValueError(f"MemGAN expects (N, 3, {size}, {size}) input, got {tuple(x.shape)}")
        feats = self.encoder(x)
        w = self.decoder.mapping(self.encoder.latent_input(feats[4]))
        mem = self.memorized(feats)
        dec = self.decoder
        noise = dec.noise_maps(self.training if randomize_noise is None else randomize_noise)

        fusion = self.fusions["4"]
        out = dec.style_conv1(dec.constant_input(x.shape[0]).to(x.dtype), w, noise[0])
        out = fusion.blend_fusion(mem[4], fusion.affine_transform(mem[4], out))
        skip = dec.to_rgb1(out, w)
        for i, res in enumerate(resolutions(size)[1:]):
            fusion = self.fusions[str(res)]
            gan1 = dec.style_convs[2 * i](out, w, noise[2 * i + 1])
            gan2 = dec.style_convs[2 * i + 1](fusion.affine_transform(mem[res], gan1), w, noise[2 * i + 2])
            out = fusion.blend_fusion(mem[res], gan2)
            skip = dec.to_rgbs[i](out, w, skip)
        if return_features:
            return skip, {"encoder": feats, "memory": mem, "latent": w}
        return skip

    def load_stylegan2(self, state_dict: Mapping[str, object]) -> None:
        """Initialise the decoder from a clean StyleGAN2 generator state dict (see convert_stylegan2)."""
        converted = convert_stylegan2(state_dict, self.config)
        result = self.load_state_dict(converted, strict=False)
        left = [k for k in result.missing_keys if k.startswith("decoder.")]
        if left or result.unexpected_keys:  # would mean the two layouts drifted apart: a bug here
            raise ConversionError(f"decoder keys not loaded: {left}, unexpected: {result.unexpected_keys}")


def build(config: Config) -> MemGAN:
    return MemGAN(config)


#: MemGAN's ONNX graphs (:mod:`facerestore_cli.models.onnx_export`): the face alone in, the face out.
GRAPHS = ("restore",)


def onnx_graph(model: MemGAN, graph: str, dtype: torch.dtype = torch.float32) -> dict[str, object]:
    """The module, example input, names and dynamic batch axis of MemGAN's one ONNX graph (eval mode:
    the stored noise maps, no memory update)."""
    if graph not in GRAPHS:
        raise ValueError(f"MemGAN has no ONNX graph {graph!r}; it has {', '.join(GRAPHS)}")
    size = model.config.size
    return {
        "module": model, "args": (torch.zeros(1, 3, size, size, dtype=dtype),), "inputs": ["lq"],
        "outputs": ["out"], "dynamic": {"lq": {0: "batch"}, "out": {0: "batch"}},
    }  # fmt: skip


def _fan_in_dim(key: str) -> int | None:
    """Which dimension of a weight is its fan-in (for rescaling sliced weights), if any."""
    if key.endswith("modulated_conv.weight"):
        return 2
    if key.endswith("modulation.weight") or (key.startswith("style_mlp.") and key.endswith(".weight")):
        return 1
    return None


def convert_stylegan2(state_dict: Mapping[str, object], config: Config) -> dict[str, Tensor]:
    """Map a clean StyleGAN2 generator (full width, e.g. GFPGAN's Cmul1 512 model) onto ``decoder.*``.

    Every key of the clean layout must be present with exactly its shape, and nothing else may be
    there; otherwise :class:`ConversionError` names the offending keys. With ``config.width < 1``
    the leading channels (and style dims) of every tensor are kept, a cheap but legitimate
    initialisation for a narrow model to be fine-tuned; weights whose fan-in is cut are multiplied
    by ``sqrt(full_fan_in / kept_fan_in)`` so activations keep roughly their scale. ``width > 1``
    cannot be initialised from a full-width file and raises.
    """
    if config.width > 1:
        raise ConversionError(f"width {config.width} > 1: a full-width StyleGAN2 cannot fill a wider decoder")
    sd = state_dict
    full = stylegan2_channels(config.size, 1.0, config.channel_multiplier)
    source = decoder_layout(config.size, full, BASE_STYLE_DIM, config.num_mlp)
    target = decoder_layout(config.size, config.channels(), config.style_dim, config.num_mlp)
    missing = [k for k in source if k not in sd]
    unexpected = [k for k in sd if k not in source]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {', '.join(missing[:8])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {', '.join(map(str, unexpected[:8]))}")
        raise ConversionError(f"not a clean StyleGAN2-{config.size} generator: {'; '.join(parts)}")
    out: dict[str, Tensor] = {}
    for key, src_shape in source.items():
        tensor = sd[key]
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            raise ConversionError(f"{key}: expected a floating-point tensor, got {type(tensor).__name__}")
        if tuple(tensor.shape) != src_shape:
            raise ConversionError(
                f"{key}: shape {tuple(tensor.shape)}, but the clean StyleGAN2-{config.size} layout has {src_shape}"
            )
        if not torch.isfinite(tensor).all():
            raise ConversionError(f"{key}: holds NaN or infinite values")
        tgt_shape = target[key]
        value = tensor.detach()
        if tgt_shape != src_shape:
            value = value[tuple(slice(0, n) for n in tgt_shape)]
            dim = _fan_in_dim(key)
            if dim is not None and tgt_shape[dim] != src_shape[dim]:
                value = value * math.sqrt(src_shape[dim] / tgt_shape[dim])
        out[f"decoder.{key}"] = value.contiguous().clone()
    return out
