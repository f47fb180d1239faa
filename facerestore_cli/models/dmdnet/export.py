"""DMDNet as ONNX graphs: the component crops and pastes computed in the graph from per-face boxes.

The torch network slices each face's eye and mouth regions with Python integers, which a trace folds
into constants (every face would be cropped where the traced face was). Here the same official
``roi_align_self`` crop (slice, then bilinear resize without antialias, ``align_corners=False``) and
the same paste (bilinear resize of the restored part into its region) are written as interpolation
matrices built from the boxes, a graph input: ``crop = Ry @ feature @ Rx^T`` and
``pasted = where(region, Uy @ part @ Ux^T, feature)``. A bilinear resize is exactly such a product
(two non-zero weights per row, the same indices and weights as PyTorch's CPU kernel), so the graphs
compute the torch network's numbers to float rounding, for every face of a dynamic batch.

Three graphs (:data:`GRAPHS`):

* ``generic``: ``(lq, boxes) -> out``, the generic dictionary inside the graph;
* ``specific``: ``(lq, boxes, LE256Key, ...) -> out``, a person's dictionary (R references, R dynamic)
  as 18 inputs, shared by the batch, as the engine groups faces by person;
* ``encode``: ``(refs, boxes) -> LE256Key, ...``, the reference encoding that compiles dictionaries.

Boxes must pass :func:`~facerestore_cli.models.dmdnet.boxes.box_problem` (the torch network raises on
the others; the matrices would not).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from facerestore_cli.models.dmdnet.boxes import BOX_ORDER, PARTS, SCALES, part_size
from facerestore_cli.models.dmdnet.network import DMDNet, adain, dict_key

__all__ = ["DICTIONARY_NAMES", "GRAPHS", "onnx_graph"]

GRAPHS = ("generic", "specific", "encode")
#: The specific dictionary's tensors, in graph-input (and encode-output) order.
DICTIONARY_NAMES = tuple(
    dict_key(part, size, kind) for size, _ in SCALES for part in PARTS for kind in ("Key", "Value")
)


#: The boxes of an FFHQ-aligned face (LE, RE, NO, MO), for tracing: any valid boxes give the same graph.
EXAMPLE_BOXES = [[161, 203, 249, 250], [265, 203, 353, 250], [216, 222, 296, 310], [197, 302, 317, 422]]


def _region(boxes: Tensor, part: str, stride: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(B,) float regions ``x1, y1, x2, y2`` of one part at a scale: floor division of the 512 box."""
    box = boxes[:, BOX_ORDER.index(part)].to(torch.float32)
    r = torch.floor(box / stride)
    return r[:, 0], r[:, 1], r[:, 2], r[:, 3]


def _crop_matrix(start: Tensor, stop: Tensor, out: int, full: int) -> Tensor:
    """(B, out, full): resizing ``[start, stop)`` of an axis of length ``full`` to ``out`` samples.

    PyTorch's bilinear kernel without ``align_corners``: ``src = max((j + 0.5) * L / out - 0.5, 0)``,
    ``i0 = floor(src)``, ``i1 = min(i0 + 1, L - 1)``, weights ``1 - l`` and ``l`` with ``l = src - i0``.
    """
    length = (stop - start)[:, None]
    j = torch.arange(out, dtype=torch.float32)[None]
    src = torch.clamp((j + 0.5) * (length / out) - 0.5, min=0.0)
    i0 = torch.floor(src)
    lam = torch.clamp(src - i0, 0.0, 1.0)
    i1 = torch.minimum(i0 + 1, length - 1)
    cols = torch.arange(full, dtype=torch.float32)[None, None]
    first = (cols == (start[:, None] + i0)[..., None]).to(torch.float32)
    second = (cols == (start[:, None] + i1)[..., None]).to(torch.float32)
    return (1 - lam)[..., None] * first + lam[..., None] * second


def _paste_matrix(start: Tensor, stop: Tensor, size: int, full: int) -> tuple[Tensor, Tensor]:
    """(B, full, size) resizing ``size`` samples into ``[start, stop)`` of an axis of ``full`` (zero rows
    outside it), and the (B, full) mask of that region."""
    length = (stop - start)[:, None]
    o = torch.arange(full, dtype=torch.float32)[None] - start[:, None]
    inside = (o >= 0) & (o < length)
    src = torch.clamp((o + 0.5) * (size / length) - 0.5, min=0.0)
    i0 = torch.clamp(torch.floor(src), max=size - 1)
    lam = torch.clamp(src - i0, 0.0, 1.0)
    i1 = torch.clamp(i0 + 1, max=size - 1)
    k = torch.arange(size, dtype=torch.float32)[None, None]
    first = (k == i0[..., None]).to(torch.float32)
    second = (k == i1[..., None]).to(torch.float32)
    matrix = ((1 - lam)[..., None] * first + lam[..., None] * second) * inside[..., None].to(torch.float32)
    return matrix, inside


def _crop(feat: Tensor, boxes: Tensor, part: str, stride: int) -> Tensor:
    """Every face's ``part`` crop at this scale: (B, C, t, t)."""
    t = part_size(part, stride)
    x1, y1, x2, y2 = _region(boxes, part, stride)
    ry = _crop_matrix(y1, y2, t, feat.shape[2]).to(feat.dtype)
    rx = _crop_matrix(x1, x2, t, feat.shape[3]).to(feat.dtype)
    return ry[:, None] @ feat @ rx[:, None].transpose(-1, -2)


def _paste(feat: Tensor, part_out: Tensor, boxes: Tensor, part: str, stride: int) -> Tensor:
    """``feat`` with every face's ``part`` region replaced by ``part_out`` resized into it."""
    t = part_out.shape[-1]
    x1, y1, x2, y2 = _region(boxes, part, stride)
    uy, in_y = _paste_matrix(y1, y2, t, feat.shape[2])
    ux, in_x = _paste_matrix(x1, x2, t, feat.shape[3])
    pasted = uy.to(feat.dtype)[:, None] @ part_out @ ux.to(feat.dtype)[:, None].transpose(-1, -2)
    region = in_y[:, None, :, None] & in_x[:, None, None, :]
    return torch.where(region, pasted, feat)


def _read(query: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """:func:`~facerestore_cli.models.dmdnet.network.read_memory` for items shared by the batch, with
    the number of items taken from the graph (a specific dictionary has any number of references)
    instead of a traced constant."""
    if query.dtype == torch.float16:  # as the torch network: a whole-patch dot product can leave fp16
        return _read(query.float(), keys.float(), values.float()).to(torch.float16)
    q = query.flatten(1)
    k = keys.flatten(1)
    items = torch.ones_like(k[:, 0]).sum()
    score = torch.softmax((q @ k.t()) / torch.sqrt(items), dim=-1)
    return (score @ values.flatten(1)).reshape(-1, *values.shape[1:])


class _Restore(nn.Module):
    """``DMDNet.forward`` with in-graph crops and pastes (plain modules: the fused path is torch's)."""

    def __init__(self, net: DMDNet, specific: bool) -> None:
        super().__init__()
        self.net = net
        self.specific = specific

    def forward(self, lq: Tensor, boxes: Tensor, *dictionary: Tensor) -> Tensor:
        net = self.net
        generic = net.generic_dictionary()
        specific = dict(zip(DICTIONARY_NAMES, dictionary, strict=True)) if self.specific else None
        f256, f128, f64 = net.E_lq(lq)
        feats = {256: f256, 128: f128, 64: f64}
        pasted = {}
        for size, stride in SCALES:
            base = feats[size]
            up_in = base
            for part in PARTS:
                crop = _crop(base, boxes, part, stride)
                query = getattr(net.E_lq, f"{part}_{size}_Q")(crop)
                name = f"{part}{size}"
                mem = mem_g = _read(query, generic[name + "Key"], generic[name + "Value"])
                if specific is not None:
                    mem_s = _read(query, specific[name + "Key"], specific[name + "Value"])
                    mask = getattr(net, f"{part}_{size}_Mask")(crop, mem_s, mem_g)
                    mem = mask * mem_s + (1 - mask) * mem_g
                mem_norm = adain(mem, crop)
                final = getattr(net, f"{part}_{size}_Attention")(mem_norm - crop) * mem_norm + crop
                up_in = _paste(up_in, final, boxes, part, stride)
            pasted[size] = up_in
        out = net.up1(net.MSDilate(f64), pasted[64])
        out = net.up2(out, pasted[128])
        out = net.up3(out, pasted[256])
        return net.up4(out)


class _Encode(nn.Module):
    """``DMDNet.encode_references`` with in-graph crops: one output per dictionary tensor."""

    def __init__(self, net: DMDNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, refs: Tensor, boxes: Tensor) -> tuple[Tensor, ...]:
        net = self.net
        feats = dict(zip((256, 128, 64), net.E_hq(refs), strict=True))
        out = {}
        for size, stride in SCALES:
            for part in PARTS:
                key, value = getattr(net, f"{part}_{size}_KV")(_crop(feats[size], boxes, part, stride))
                out[dict_key(part, size, "Key")] = key
                out[dict_key(part, size, "Value")] = value
        return tuple(out[name] for name in DICTIONARY_NAMES)


def onnx_graph(model: DMDNet, graph: str, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """What :func:`facerestore_cli.models.onnx_export.export_graph` needs to export one of :data:`GRAPHS`:
    the module, example inputs, input and output names, and the dynamic axes."""
    if graph not in GRAPHS:
        raise ValueError(f"DMDNet has no ONNX graph {graph!r}; it has {', '.join(GRAPHS)}")
    face = torch.zeros(1, 3, 512, 512, dtype=dtype)
    boxes = torch.tensor([EXAMPLE_BOXES])
    if graph == "encode":
        return {
            "module": _Encode(model), "args": (face, boxes), "inputs": ["refs", "boxes"],
            "outputs": list(DICTIONARY_NAMES),
            "dynamic": {"refs": {0: "refs"}, "boxes": {0: "refs"}, **{n: {0: "refs"} for n in DICTIONARY_NAMES}},
        }  # fmt: skip
    dynamic: dict[str, dict[int, str]] = {"lq": {0: "batch"}, "boxes": {0: "batch"}, "out": {0: "batch"}}
    args: tuple[Tensor, ...] = (face, boxes)
    inputs = ["lq", "boxes"]
    if graph == "specific":
        refs = model.encode_references(face, boxes)  # shapes (and two references) for the trace
        args += tuple(torch.cat([refs[n]] * 2).to(dtype) for n in DICTIONARY_NAMES)
        inputs += list(DICTIONARY_NAMES)
        dynamic.update({n: {0: "refs"} for n in DICTIONARY_NAMES})
    return {
        "module": _Restore(model, specific=graph == "specific"), "args": args, "inputs": inputs,
        "outputs": ["out"], "dynamic": dynamic,
    }  # fmt: skip
