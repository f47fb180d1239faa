"""DMDNet: blind and reference-based face restoration with dual memory dictionaries.

Li et al., "Learning Dual Memory Dictionaries for Blind Face Restoration" (TPAMI 2022). This is a port
of the official network (csxmli2016/DMDNet @ 37f2e0e) that computes the same numbers from the same
checkpoint, reorganised for production use:

* plain convolutions: spectral norm is folded into the weights once, at import
  (:func:`convert_official`), instead of a hook recomputing ``weight_orig / sigma`` on every forward;
* a *specific dictionary* (the references' keys and values) is a plain mapping of tensors that can be
  computed once per person and cached (:meth:`DMDNet.encode_references`), and a restore with references
  runs only the specific path instead of decoding twice;
* batches of faces, each with its own component boxes; an optional generic dictionary override so the
  training stages of the paper (dictionary from an extractor, forward update, backward update) can
  drive the same module;
* a fused CPU inference path (see :func:`fused_convolutions_available`), taken automatically in
  ``eval()`` under ``torch.inference_mode()``; training, ``no_grad`` evaluation and other devices run
  the plain modules.

Every numerical detail that the official code has and a port must keep is documented where it is
implemented (see also ``../shared/golden/dmdnet/OFFICIAL_BEHAVIOUR_NOTES.md``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerestore_cli.models.dmdnet import Config
from facerestore_cli.models.dmdnet.boxes import (  # noqa: F401 (component_boxes, PART_SIZES: re-exported)
    BOX_ORDER,
    PART_SIZES,
    PARTS,
    SCALES,
    component_boxes,
    part_size,
)
from facerestore_cli.models.registry import ConversionError

SpecificDictionary = dict[str, Tensor]
"""18 tensors ``{LE,RE,MO}{256,128,64}{Key,Value}``: (R, C, t, t) for R references, or (B, R, C, t, t)
with one set of references per face of the batch."""


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=True)


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2)


def _two_convs(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """[conv, lrelu, conv]: the official building block (indices 0 and 2 hold weights)."""
    return nn.Sequential(_conv(cin, cout, stride, dilation), _lrelu(), _conv(cout, cout, dilation=dilation))


# --------------------------------------------------------------------------------------------------
# Fused CPU inference


@functools.cache
def fused_convolutions_available() -> bool:
    """Whether oneDNN's fused convolution (``torch.ops.mkldnn._convolution_pointwise``) works here.

    It runs each 3x3 convolution on ``channels_last`` activations with its LeakyReLU or residual add
    inside the call, which saves the layout reorders and extra memory passes of eager PyTorch: 1.25-1.4x
    faster on CPU (the measurements and what was tried: ``docs/studies/dmdnet-fused-cpu-path.md``). The
    operator is PyTorch-internal, so it is probed once on a tiny input and the plain modules are used
    if it is missing or disagrees.
    """
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        if not torch.backends.mkldnn.is_available():
            return False
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 8, 7, 7, generator=gen).contiguous(memory_format=torch.channels_last)
        w = torch.randn(8, 8, 3, 3, generator=gen) * 0.1
        b = torch.randn(8, generator=gen)
        with torch.no_grad():
            ref = F.conv2d(x, w, b, padding=2, dilation=2)
            act = op(x, w, b, (2, 2), (1, 1), (2, 2), 1, "leaky_relu", [0.2], "")
            res = op.binary(x, x, w, b, (2, 2), (1, 1), (2, 2), 1, "add", None, None, [], None)
        return bool(
            torch.allclose(act, F.leaky_relu(ref, 0.2), rtol=1e-5, atol=1e-5)
            and torch.allclose(res, ref + x, rtol=1e-5, atol=1e-5)
        )
    except Exception:  # missing operator, no oneDNN build, unsupported CPU: use the plain modules
        return False


def _fused_conv(conv: nn.Conv2d, x: Tensor, slope: float | None = None, residual: Tensor | None = None) -> Tensor:
    """``conv(x)``, then ``leaky_relu(., slope)`` or ``. + residual``, in one oneDNN call.

    A conv with hooks (e.g. the official hook-style spectral norm, which sets ``weight`` in a
    pre-forward hook) or another padding mode is called as a module instead.
    """
    if conv._forward_pre_hooks or conv._forward_hooks or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        y = conv(x)
        y = F.leaky_relu(y, slope) if slope is not None else y
        return y if residual is None else residual + y
    args = (conv.padding, conv.stride, conv.dilation, conv.groups)
    op = torch.ops.mkldnn._convolution_pointwise
    if residual is not None:
        return op.binary(x, residual, conv.weight, conv.bias, *args, "add", None, None, [], None)
    if slope is not None:
        return op(x, conv.weight, conv.bias, *args, "leaky_relu", [slope], "")
    return op(x, conv.weight, conv.bias, *args, "none", [], "")


def _fused_seq(seq: nn.Sequential, x: Tensor, residual: Tensor | None = None) -> Tensor:
    """Run a Sequential with each conv fused with the LeakyReLU after it, and ``residual`` added by the
    last conv. Modules with a ``fused`` method use it; anything else runs as it is."""
    mods = list(seq)
    i = 0
    while i < len(mods):
        mod = mods[i]
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(mod, nn.Conv2d) and isinstance(nxt, nn.LeakyReLU):
            x = _fused_conv(mod, x, slope=nxt.negative_slope)
            i += 2
            continue
        if isinstance(mod, nn.Conv2d) and nxt is None and residual is not None:
            return _fused_conv(mod, x, residual=residual)
        x = _fused_conv(mod, x) if isinstance(mod, nn.Conv2d) else mod.fused(x) if hasattr(mod, "fused") else mod(x)
        i += 1
    return x if residual is None else residual + x


def _channels_last(x: Tensor) -> Tensor:
    """A copy with the standard channels_last strides. ``contiguous(memory_format=...)`` is not enough:
    a batch of one made with ``[None]`` from an HWC array passes as channels_last with a batch stride of
    3, and convolutions then fall back to NCHW for the whole network (measured 1.3x slower)."""
    return x.clone(memory_format=torch.channels_last)


def _run(module: nn.Module, fused: bool, *args: Tensor):
    """``module(*args)``, or its fused inference version."""
    if not fused:
        return module(*args)
    if isinstance(module, nn.Sequential):
        return _fused_seq(module, *args)
    return module.fused(*args)


class DilateResBlock(nn.Module):
    """``x + conv_d1(lrelu(conv_d0(x)))`` with padding equal to the dilation."""

    def __init__(self, channels: int, dilations: tuple[int, int]) -> None:
        super().__init__()
        self.Res = nn.Sequential(
            _conv(channels, channels, dilation=dilations[0]), _lrelu(), _conv(channels, channels, dilation=dilations[1])
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.Res(x)

    def fused(self, x: Tensor) -> Tensor:
        return _fused_seq(self.Res, x, residual=x)


class Query(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.Query = _two_convs(channels, channels // 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.Query(x)

    def fused(self, x: Tensor) -> Tensor:
        return _fused_seq(self.Query, x)


class KeyValue(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.Key = _two_convs(channels, channels // 4)
        self.Value = _two_convs(channels, channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.Key(x), self.Value(x)

    def fused(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _fused_seq(self.Key, x), _fused_seq(self.Value, x)


class MaskAttention(nn.Module):
    """Identity score M_I of eq. 8: how much of the specific read to trust. No sigmoid (official)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        branch = channels // 3
        self.conv1 = _two_convs(channels, branch)
        self.conv2 = _two_convs(channels, branch)
        self.conv3 = _two_convs(channels, branch)
        self.convCat = _two_convs(branch * 3, channels)

    def forward(self, part: Tensor, mem_s: Tensor, mem_g: Tensor) -> Tensor:
        return self.convCat(torch.cat([self.conv1(part), self.conv2(mem_s), self.conv3(mem_g)], dim=1))

    def fused(self, part: Tensor, mem_s: Tensor, mem_g: Tensor) -> Tensor:
        branches = [_fused_seq(self.conv1, part), _fused_seq(self.conv2, mem_s), _fused_seq(self.conv3, mem_g)]
        return _fused_seq(self.convCat, torch.cat(branches, dim=1))


class FeatureExtractor(nn.Module):
    """Three-scale encoder (f256, f128, f64); E_lq also owns the component query networks."""

    def __init__(self, ngf: int, with_queries: bool) -> None:
        super().__init__()
        c1, c2, c3 = ngf, ngf * 2, ngf * 4
        self.conv1 = _two_convs(3, c1, stride=2)
        self.res1 = DilateResBlock(c1, (5, 3))
        self.conv2 = _two_convs(c1, c1)
        self.res2 = DilateResBlock(c1, (5, 3))
        self.conv3 = _two_convs(c1, c2, stride=2)
        self.res3 = DilateResBlock(c2, (3, 1))
        self.conv4 = _two_convs(c2, c2)
        self.res4 = DilateResBlock(c2, (3, 1))
        self.conv5 = _two_convs(c2, c3, stride=2)
        self.res5 = DilateResBlock(c3, (1, 1))
        self.conv6 = _two_convs(c3, c3)
        self.res6 = DilateResBlock(c3, (1, 1))
        self.with_queries = with_queries
        if with_queries:
            for size, _ in SCALES:
                for part in PARTS:
                    self.add_module(f"{part}_{size}_Q", Query({256: c1, 128: c2, 64: c3}[size]))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f256 = self.res2(self.conv2(self.res1(self.conv1(x))))
        f128 = self.res4(self.conv4(self.res3(self.conv3(f256))))
        f64 = self.res6(self.conv6(self.res5(self.conv5(f128))))
        return f256, f128, f64

    def fused(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f256 = self.res2.fused(_fused_seq(self.conv2, self.res1.fused(_fused_seq(self.conv1, x))))
        f128 = self.res4.fused(_fused_seq(self.conv4, self.res3.fused(_fused_seq(self.conv3, f256))))
        f64 = self.res6.fused(_fused_seq(self.conv6, self.res5.fused(_fused_seq(self.conv5, f128))))
        return f256, f128, f64


class MSDilateBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        for i, d in enumerate((4, 3, 2, 1), start=1):
            self.add_module(f"conv{i}", _two_convs(channels, channels, dilation=d))
        self.convi = _conv(channels * 4, channels)

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.conv1(x), self.conv2(x), self.conv3(x), self.conv4(x)]
        return self.convi(torch.cat(branches, dim=1)) + x

    def fused(self, x: Tensor) -> Tensor:
        branches = [_fused_seq(getattr(self, f"conv{i}"), x) for i in range(1, 5)]
        return _fused_conv(self.convi, torch.cat(branches, dim=1), residual=x)


class StyledUpBlock(nn.Module):
    """Decoder step: two convs, SFT modulation by the pasted features, then x2 bilinear up and two convs.

    Official details kept: no ``+1`` on the scale, no activation after the up-sampling convs,
    ``align_corners=False``.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(_conv(cin, cout), _lrelu(), _conv(cout, cout), _lrelu())
        self.convup = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            _conv(cout, cout),
            _lrelu(),
            _conv(cout, cout),
        )
        self.ScaleModel1 = _two_convs(cin, cout)
        self.ShiftModel1 = _two_convs(cin, cout)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        h = self.conv1(x)
        h = h * self.ScaleModel1(style) + self.ShiftModel1(style)
        return self.convup(h)

    def fused(self, x: Tensor, style: Tensor) -> Tensor:
        h = _fused_seq(self.conv1, x)
        # the shift network's last conv adds h * scale itself (the same sum, one pass fewer)
        h = _fused_seq(self.ShiftModel1, style, residual=h * _fused_seq(self.ScaleModel1, style))
        return _fused_seq(self.convup, h)


class UpResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.Model = _two_convs(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.Model(x)

    def fused(self, x: Tensor) -> Tensor:
        return _fused_seq(self.Model, x, residual=x)


# --------------------------------------------------------------------------------------------------
# Component boxes (computed by .boxes, without torch)


def _check_boxes(boxes: Tensor, batch: int) -> Tensor:
    boxes = torch.as_tensor(boxes).to("cpu", torch.int64)
    if boxes.ndim == 2:
        boxes = boxes.unsqueeze(0)
    if boxes.shape != (batch, 4, 4):
        raise ValueError(f"expected boxes of shape ({batch}, 4, 4) for LE, RE, NO, MO; got {tuple(boxes.shape)}")
    return boxes


def _region(box: Tensor, stride: int) -> tuple[int, int, int, int]:
    """Integer region at a feature scale: numpy-style floor division of the 512 box."""
    x1, y1, x2, y2 = (int(v) for v in box.tolist())
    return x1 // stride, y1 // stride, x2 // stride, y2 // stride


def _crop(feat: Tensor, box: Tensor, stride: int, size: int) -> Tensor:
    """Official ``roi_align_self``: slice (a negative start wraps, as Python slicing does), then bilinear
    resize without antialias and with ``align_corners=False``."""
    x1, y1, x2, y2 = _region(box, stride)
    patch = feat[:, :, y1:y2, x1:x2]
    if patch.shape[-1] == 0 or patch.shape[-2] == 0:
        raise ValueError("empty component crop: the landmarks put a facial part outside the face")
    return F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------------------
# Memory reads


def read_memory(query: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """Attention read of eq. 7 as the official code computes it.

    ``sim`` is the plain dot product of the whole flattened patch with each item, scaled by
    ``sqrt(M)`` where M is the *number of items* (128 generic, or the number of references), not by
    the key dimension; softmax over items; weighted sum of values.

    query (B, Ck, t, t); keys (M, Ck, t, t) shared by the batch or (B, M, Ck, t, t); values likewise
    with C channels. Returns (B, C, t, t).
    """
    if query.dtype == torch.float16:
        # fp16 (CUDA inference): a whole-patch dot product can leave fp16's range, so read in float32.
        return read_memory(query.float(), keys.float(), values.float()).to(torch.float16)
    b = query.shape[0]
    q = query.reshape(b, 1, -1)
    if keys.ndim == 4:
        m = keys.shape[0]
        sim = (q.squeeze(1) @ keys.reshape(m, -1).t()).unsqueeze(1)  # (B, 1, M)
        v = values.reshape(m, -1)
        score = torch.softmax(sim / math.sqrt(m), dim=-1)
        out = score.squeeze(1) @ v
    else:
        m = keys.shape[1]
        sim = q @ keys.reshape(b, m, -1).transpose(1, 2)  # (B, 1, M)
        score = torch.softmax(sim / math.sqrt(m), dim=-1)
        out = (score @ values.reshape(b, m, -1)).squeeze(1)
    return out.reshape(b, *values.shape[-3:])


def adain(content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    """Official ``adaptive_instance_normalization_4D``: per-channel statistics over H x W with the
    *unbiased* variance and ``eps`` inside the square root, for content and style alike."""
    b, c = content.shape[:2]
    cv = content.reshape(b, c, -1)
    sv = style.reshape(b, c, -1)
    c_mean = cv.mean(-1).reshape(b, c, 1, 1)
    c_std = (cv.var(-1, unbiased=True) + eps).sqrt().reshape(b, c, 1, 1)
    s_mean = sv.mean(-1).reshape(b, c, 1, 1)
    s_std = (sv.var(-1, unbiased=True) + eps).sqrt().reshape(b, c, 1, 1)
    return (content - c_mean) / c_std * s_std + s_mean


def dict_key(part: str, size: int, kind: str) -> str:
    """Name of a specific-dictionary tensor, e.g. ``LE256Key`` (the official names)."""
    return f"{part}{size}{kind}"


def mem_buffer_name(part: str, size: int, kind: str) -> str:
    """Name of a generic-dictionary buffer, e.g. ``le_256_mem_key`` (the official names)."""
    return f"{part.lower()}_{size}_mem_{kind.lower()}"


# --------------------------------------------------------------------------------------------------
# The network


class DMDNet(nn.Module):
    """The DMDNet generator with plain (spectral-norm-folded) convolutions.

    ``forward(lq, boxes)`` restores with the generic dictionary; ``forward(lq, boxes, specific)`` with
    both dictionaries (the official second output). ``lq`` is (B, 3, 512, 512) RGB in [-1, 1] and
    ``boxes`` (B, 4, 4) integer component boxes from :func:`component_boxes`.

    In ``eval()`` under ``torch.inference_mode()`` on a float32 CPU tensor the forward pass and
    :meth:`encode_references` take the fused path (:func:`fused_convolutions_available`); set
    ``fused_inference = False`` on an instance to run the plain modules there too.
    """

    #: Allow the fused CPU inference path (it is only ever taken under ``torch.inference_mode()``).
    fused_inference: bool = True

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config or Config()
        ngf, banks = self.config.ngf, self.config.banks
        self.E_lq = FeatureExtractor(ngf, with_queries=True)
        self.E_hq = FeatureExtractor(ngf, with_queries=False)
        for size, stride in SCALES:
            c = self.config.channels(size)
            for part in PARTS:
                t = part_size(part, stride)
                self.add_module(f"{part}_{size}_KV", KeyValue(c))
                self.add_module(f"{part}_{size}_Mask", MaskAttention(c))
                self.add_module(f"{part}_{size}_Attention", _two_convs(c, c))
                self.register_buffer(mem_buffer_name(part, size, "Key"), torch.zeros(banks, c // 4, t, t))
                self.register_buffer(mem_buffer_name(part, size, "Value"), torch.zeros(banks, c, t, t))
        self.MSDilate = MSDilateBlock(ngf * 4)
        self.up1 = StyledUpBlock(ngf * 4, ngf * 2)
        self.up2 = StyledUpBlock(ngf * 2, ngf)
        self.up3 = StyledUpBlock(ngf, ngf)
        self.up4 = nn.Sequential(_conv(ngf, ngf), _lrelu(), UpResBlock(ngf), UpResBlock(ngf), _conv(ngf, 3), nn.Tanh())

    def uses_fused_path(self, x: Tensor) -> bool:
        """Whether a forward (or reference encoding) of ``x`` now takes the fused inference path."""
        return (
            self.fused_inference
            and not self.training
            and torch.is_inference_mode_enabled()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and fused_convolutions_available()
        )

    # -- dictionaries -------------------------------------------------------------------------------

    def generic_dictionary(self) -> dict[str, Tensor]:
        """The generic dictionary buffers under the specific-dictionary names (``LE256Key`` ...)."""
        out = {}
        for size, _ in SCALES:
            for part in PARTS:
                for kind in ("Key", "Value"):
                    out[dict_key(part, size, kind)] = getattr(self, mem_buffer_name(part, size, kind))
        return out

    def encode_references(self, refs: Tensor, boxes: Tensor) -> SpecificDictionary:
        """Keys and values of references (R, 3, 512, 512) with their boxes (R, 4, 4): E_hq, crop, KV.

        This is the official ``generate_specific_dictionary``; it is also the generic feature
        extractor F_gen of the paper's dictionary initialisation.
        """
        boxes = _check_boxes(boxes, refs.shape[0])
        fused = self.uses_fused_path(refs)
        if fused:
            refs = _channels_last(refs)
        feats = dict(zip((256, 128, 64), _run(self.E_hq, fused, refs), strict=True))
        out: SpecificDictionary = {}
        for size, stride in SCALES:
            for part in PARTS:
                idx = BOX_ORDER.index(part)
                t = part_size(part, stride)
                crops = torch.cat(
                    [_crop(feats[size][i : i + 1], boxes[i, idx], stride, t) for i in range(refs.shape[0])]
                )
                key, value = _run(getattr(self, f"{part}_{size}_KV"), fused, crops)
                if fused:  # plain layout for callers that store or reshape the dictionary
                    key, value = key.contiguous(), value.contiguous()
                out[dict_key(part, size, "Key")] = key
                out[dict_key(part, size, "Value")] = value
        return out

    # -- forward ------------------------------------------------------------------------------------

    def forward(
        self,
        lq: Tensor,
        boxes: Tensor,
        specific: Mapping[str, Tensor] | None = None,
        generic: Mapping[str, Tensor] | None = None,
        return_reads: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Restore a batch. ``generic`` overrides the generic dictionary (training stages only).

        With ``return_reads`` also returns the AdaIN-normalised memory reads (``LE256Norm`` ...) and
        the raw generic/specific reads, which is what the paper's forward update and our golden tests
        look at. With references it also gives ``LE256GenericNorm`` ..., the normalised generic read
        that a generic-only forward would use, so one forward shows what the references change.
        """
        batch = lq.shape[0]
        boxes = _check_boxes(boxes, batch)
        generic = generic if generic is not None else self.generic_dictionary()
        fused = self.uses_fused_path(lq)
        if fused:
            lq = _channels_last(lq)
        f256, f128, f64 = _run(self.E_lq, fused, lq)
        feats = {256: f256, 128: f128, 64: f64}
        pasted = {}
        reads: dict[str, Tensor] = {}
        for size, stride in SCALES:
            base = feats[size]
            up_in = base.clone()
            for part in PARTS:
                idx = BOX_ORDER.index(part)
                t = part_size(part, stride)
                # Per-face crops (each face has its own boxes), then one batched pass per component.
                crop = torch.cat([_crop(base[i : i + 1], boxes[i, idx], stride, t) for i in range(batch)])
                query = _run(getattr(self.E_lq, f"{part}_{size}_Q"), fused, crop)
                name = f"{part}{size}"
                mem_g = read_memory(query, generic[name + "Key"], generic[name + "Value"])
                if specific is not None:
                    mem_s = read_memory(query, specific[name + "Key"], specific[name + "Value"])
                    mask = _run(getattr(self, f"{part}_{size}_Mask"), fused, crop, mem_s, mem_g)
                    mem = mask * mem_s + (1 - mask) * mem_g
                else:
                    mem = mem_g
                mem_norm = adain(mem, crop)
                att = _run(getattr(self, f"{part}_{size}_Attention"), fused, mem_norm - crop)
                final = att * mem_norm + crop
                if return_reads:
                    reads[name + "Norm"] = mem_norm
                    reads[name + "Generic"] = mem_g
                    if specific is not None:
                        reads[name + "Specific"] = mem_s
                        reads[name + "Mask"] = mask
                        reads[name + "GenericNorm"] = adain(mem_g, crop)
                for i in range(batch):
                    x1, y1, x2, y2 = _region(boxes[i, idx], stride)
                    up_in[i : i + 1, :, y1:y2, x1:x2] = F.interpolate(
                        final[i : i + 1], size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False
                    )
            pasted[size] = up_in
        ms = _run(self.MSDilate, fused, f64)  # the un-pasted f64, as the official code does
        out = _run(self.up1, fused, ms, pasted[64])
        out = _run(self.up2, fused, out, pasted[128])
        out = _run(self.up3, fused, out, pasted[256])
        out = _run(self.up4, fused, out)
        if fused:
            out = out.contiguous()
        return (out, reads) if return_reads else out


def build(config: Config) -> DMDNet:
    return DMDNet(config)


# --------------------------------------------------------------------------------------------------
# Official checkpoint conversion


def _official_keys(config: Config) -> dict[str, tuple[int, ...]]:
    """Every key of the official state dict for a config (hook-style spectral norm), with shapes."""
    ref = DMDNet(config)
    expected: dict[str, tuple[int, ...]] = {}
    for name, module in ref.named_modules():
        if isinstance(module, nn.Conv2d):
            o, i, kh, kw = module.weight.shape
            expected[f"{name}.weight_orig"] = (o, i, kh, kw)
            expected[f"{name}.bias"] = (o,)
            expected[f"{name}.weight_u"] = (o,)
            expected[f"{name}.weight_v"] = (i * kh * kw,)
    # The official E_hq also builds query networks that it never uses; they are in the checkpoint.
    for size, _ in SCALES:
        c = config.channels(size)
        for part in PARTS:
            for j, (cin, cout) in ((0, (c, c // 4)), (2, (c // 4, c // 4))):
                prefix = f"E_hq.{part}_{size}_Q.Query.{j}"
                expected[f"{prefix}.weight_orig"] = (cout, cin, 3, 3)
                expected[f"{prefix}.bias"] = (cout,)
                expected[f"{prefix}.weight_u"] = (cout,)
                expected[f"{prefix}.weight_v"] = (cin * 9,)
    for name, buf in ref.named_buffers():
        expected[name] = tuple(buf.shape)
    return expected


def infer_config(state_dict: Mapping[str, Tensor]) -> Config:
    """Read ngf and the number of generic items from an official-format state dict."""
    try:
        ngf = int(state_dict["E_lq.conv1.0.weight_orig"].shape[0])
        banks = int(state_dict["le_256_mem_key"].shape[0])
    except KeyError as exc:
        raise ConversionError(f"not a DMDNet checkpoint: key {exc.args[0]!r} is missing") from None
    return Config(ngf=ngf, banks=banks)


def fold_spectral_norm(weight_orig: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """``weight_orig / sigma`` with ``sigma = u . (W v)`` from the stored vectors, in float32.

    This is what the hook computes in eval mode (no power iteration), so the folded weight is the one
    the official network convolves with.
    """
    w = weight_orig.float()
    sigma = torch.dot(u.float(), torch.mv(w.reshape(w.shape[0], -1), v.float()))
    return w / sigma


def convert_official(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], Config]:
    """Check an official DMDNet state dict key by key and fold its spectral norm.

    Raises ``ConversionError`` (a ``ValueError``) naming missing, unexpected or mis-shaped keys.
    """
    config = infer_config(state_dict)
    expected = _official_keys(config)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k}: {tuple(state_dict[k].shape)} (expected {shape})"
        for k, shape in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:5])}")
    if wrong:
        problems.append(f"{len(wrong)} wrong shape(s): {'; '.join(wrong[:5])}")
    if problems:
        raise ConversionError(f"not an official DMDNet (ngf={config.ngf}) checkpoint: " + "; ".join(problems))
    for k in expected:
        # A float64 sum is finite exactly when every float32/16 element is (inf and nan propagate, and
        # finite float32 values cannot overflow it); unlike isfinite() it allocates nothing per element.
        t = state_dict[k]
        if not torch.is_floating_point(t):
            finite = False
        elif t.dtype == torch.float64:
            finite = bool(torch.isfinite(t).all())
        else:
            finite = bool(torch.isfinite(t.sum(dtype=torch.float64)))
        if not finite:
            raise ConversionError(f"tensor {k} is not finite floating point data: the file is damaged")
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("E_hq.") and "_Q." in key:
            continue  # unused by the official network
        if key.endswith(".weight_orig"):
            prefix = key[: -len(".weight_orig")]
            out[prefix + ".weight"] = fold_spectral_norm(
                value, state_dict[prefix + ".weight_u"], state_dict[prefix + ".weight_v"]
            ).contiguous()
        elif key.endswith((".weight_u", ".weight_v")):
            continue
        else:
            out[key] = value.float().contiguous()
    return out, config
