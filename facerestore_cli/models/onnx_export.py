"""Exporting a registered model to ONNX: one file per graph, dynamic batch, for CPU, CUDA and TensorRT.

Each method's card names its graphs (``MethodSpec.onnx_graphs``) and the module that describes them
(``onnx_graph(model, graph, dtype)``: the module to trace, example inputs, names, dynamic axes). This
module does the rest the same way for every method: the TorchScript-based exporter (``torch.onnx``
with ``dynamo=False``: it needs only the ``onnx`` package), opset :data:`OPSET`, constant folding,
metadata saying what the file was made from, and a written-then-renamed file.

Opset 17 is the newest that onnxruntime's CPU and CUDA providers and TensorRT 8.6 and later all run
(LayerNormalization, the first op that would need more, is not used). Weights whose values are exactly
float16 (the shipped compact weights are stored as float16) are kept as float16 initializers with a
Cast in front: half the file, the same numbers (onnxruntime folds the Cast once, at session start).

``EXPORTER_VERSION`` changes whenever a graph would come out different for the same weights; the
weights cache keys exported files by the weights' sha256, the opset, this version and the precision.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facerestore_cli.models.registry import get_method

if TYPE_CHECKING:  # torch is imported by export_graph: the constants here are read without it
    import torch

__all__ = ["EXPORTER_VERSION", "OPSET", "export_graph", "graph_metadata", "read_metadata"]

#: The ONNX opset of every exported graph (see the module docstring).
OPSET = 17
#: Bumped whenever an exported graph would change for the same weights (invalidates the cache).
EXPORTER_VERSION = 1
#: Initializers smaller than this stay float32 (a Cast costs more than the bytes it saves).
_MIN_HALF_ELEMENTS = 4096


def graph_metadata(method: str, graph: str, weights_sha256: str, half: bool, opset: int = OPSET) -> dict[str, str]:
    """The ``metadata_props`` an exported file carries; the runtime checks them against what it wants."""
    return {
        "facerestore.method": method,
        "facerestore.graph": graph,
        "facerestore.weights_sha256": weights_sha256,
        "facerestore.opset": str(opset),
        "facerestore.exporter_version": str(EXPORTER_VERSION),
        "facerestore.precision": "float16" if half else "float32",
    }


def export_graph(
    model: torch.nn.Module,
    method: str,
    graph: str,
    path: Path | str,
    *,
    weights_sha256: str = "",
    half: bool = False,
    opset: int = OPSET,
) -> Path:
    """Export one graph of ``model`` (a built, loaded network of ``method``) to ``path``.

    ``half`` exports a float16 graph for the CUDA provider (the network's own float32 islands, such as
    DMDNet's memory reads, stay float32 in it). Raises ``ValueError`` for a method without that graph
    and ``ImportError`` when the ``onnx`` package is missing.
    """
    import onnx
    import torch

    spec = get_method(method)
    if graph not in spec.onnx_graphs or spec.exporter is None:
        raise ValueError(f"{method} has no ONNX graph {graph!r}")
    dtype = torch.float16 if half else torch.float32
    model = model.eval().requires_grad_(False)
    if half:
        import copy

        model = copy.deepcopy(model).to(torch.float16)
    described = spec.exporter.onnx_graph(model, graph, dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
            torch.onnx.export(
                described["module"],
                described["args"],
                str(tmp),
                input_names=described["inputs"],
                output_names=described["outputs"],
                dynamic_axes=described["dynamic"],
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        _store_half_exact_weights(proto)
        for key, value in graph_metadata(method, graph, weights_sha256, half, opset).items():
            proto.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o644 & ~umask)  # mkstemp's 0600 would hide a shared install's graphs from its users
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _store_half_exact_weights(proto: Any) -> None:
    """Store float32 initializers whose every value is a float16 value as float16, behind a Cast."""
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        if values.size < _MIN_HALF_ELEMENTS:
            continue
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, name + "__fp16"))
        casts.append(onnx.helper.make_node("Cast", [name + "__fp16"], [name], to=onnx.TensorProto.FLOAT))
    if casts:
        nodes = list(graph.node)
        del graph.node[:]
        graph.node.extend([*casts, *nodes])


def read_metadata(path: Path | str) -> Mapping[str, str]:
    """The ``metadata_props`` of an ONNX file (for tests and ``tools/ship_weights.py``)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
