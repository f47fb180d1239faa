"""The ONNX files of a weights file: shipped next to it, or exported once and cached.

A restore on onnxruntime needs one ``.onnx`` file per graph of the method (``MethodSpec.onnx_graphs``).
They are found, in order:

1. **Next to the weights**, listed in the folder's ``MANIFEST.json`` as ``<stem>.<graph>.onnx`` with the
   weights' sha256 as ``source_sha256`` (the shipped compact weights come with theirs: the default
   restore needs no torch at all).
2. **In the export cache**, ``<user weights folder>/onnx/<sha256[:32]>-opset<N>-e<V>-<fp32|fp16>/``,
   keyed by the weights' sha256, the opset and the exporter version (a new exporter never reuses an old
   file). The folder has its own manifest, so a damaged cached file fails its hash like any weights file.

:func:`export_onnx` fills the cache (it needs torch and the ``onnx`` package: the first use of other
weights, or ``weights import``); finding files never imports torch. Files are checked (size, sha256)
against their manifest entry before they are used.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facerestore_cli.weights.errors import WeightsError, WeightsIntegrityError
from facerestore_cli.weights.files import file_sha256, read_safetensors_metadata
from facerestore_cli.weights.lookup import WeightsLocation, user_weights_dir
from facerestore_cli.weights.manifest import manifest_entry, read_manifest, update_manifest

__all__ = ["OnnxFiles", "can_export_onnx", "export_onnx", "find_onnx", "onnx_cache_dir", "shipped_onnx_name"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnnxFiles:
    """The ONNX graphs of one weights file, checked and ready for onnxruntime."""

    method: str
    #: the safetensors file the graphs were exported from, and its sha256
    weights: Path
    sha256: str
    #: graph name -> file
    paths: dict[str, Path]
    #: "shipped" (next to the weights) or "cache" (exported here)
    origin: str
    half: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    #: graph -> the sha256 its manifest promises, for graphs not hashed yet (see :meth:`check`)
    unchecked: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def check(self, graph: str) -> Path:
        """The graph's file, hashed against its manifest first if :func:`find_onnx` left it for later;
        ``WeightsIntegrityError`` for a damaged file. A run uses one graph or two of three (DMDNet's
        ``specific`` only with references, ``encode`` only to build a dictionary), so each is hashed
        when first used instead of at every start (0.03 s each)."""
        path = self.paths[graph]
        want = self.unchecked.get(graph)
        if want is not None:
            _check_digest(path, want)
            self.unchecked.pop(graph, None)
        return path


def _constants() -> tuple[int, int]:
    from facerestore_cli.models.onnx_export import EXPORTER_VERSION, OPSET

    return OPSET, EXPORTER_VERSION


def _graphs(method: str) -> tuple[str, ...]:
    from facerestore_cli.models import get_method

    return get_method(method).onnx_graphs


def shipped_onnx_name(weights: Path | str, graph: str, half: bool = False) -> str:
    """``dmdnet-compact.generic.onnx``: the name of a graph file next to its weights."""
    return f"{Path(weights).stem}.{graph}{'.fp16' if half else ''}.onnx"


def onnx_cache_dir(sha256: str, half: bool = False) -> Path:
    """The export cache folder of one weights file (sha256), at this opset and exporter version."""
    opset, version = _constants()
    return user_weights_dir() / "onnx" / f"{sha256[:32]}-opset{opset}-e{version}-{'fp16' if half else 'fp32'}"


def _weights_sha256(location: WeightsLocation) -> str:
    """The weights' sha256: its manifest's (the torch path checks the file against it), else hashed."""
    entry = location.manifest if location.manifest is not None else manifest_entry(location.path)
    if entry and entry.get("sha256"):
        return str(entry["sha256"]).lower()
    return file_sha256(location.path)


def _config(location: WeightsLocation) -> dict[str, Any]:
    entry = location.manifest or {}
    if entry.get("config"):
        return dict(entry["config"])
    try:
        return dict(read_safetensors_metadata(location.path).get("config") or {})
    except WeightsError:
        return {}


def _check_digest(path: Path, want: str) -> None:
    digest = file_sha256(path)
    if want and want.lower() != digest:
        raise WeightsIntegrityError(
            f"{path} has sha256 {digest} but its manifest expects {want}: the file is damaged or was "
            "replaced (delete it: it is exported again)"
        )


def _checked(folder: Path, name: str, sha256: str, half: bool, pending: dict[str, str] | None = None) -> Path | None:
    """``folder/name`` when its manifest entry is for these weights at this opset and exporter, and the
    file matches it; ``None`` when there is no such entry; ``WeightsIntegrityError`` for a damaged file.
    ``pending``: the hash is left for later, recorded there under ``name`` (the size is checked now)."""
    entry = read_manifest(folder)["files"].get(name)
    opset, version = _constants()
    if (
        not entry
        or str(entry.get("source_sha256", "")).lower() != sha256
        or int(entry.get("opset", -1)) != opset
        or int(entry.get("exporter_version", -1)) != version
        or bool(entry.get("half", False)) != half
    ):
        return None
    path = folder / name
    if not path.is_file():
        return None
    size = path.stat().st_size
    if entry.get("size") is not None and int(entry["size"]) != size:
        raise WeightsIntegrityError(f"{path} is {size} bytes but its manifest says {entry['size']}: delete it")
    if pending is not None:
        pending[name] = str(entry.get("sha256") or "")
    else:
        _check_digest(path, str(entry.get("sha256") or ""))
    return path


def find_onnx(method: str, location: WeightsLocation, half: bool = False) -> OnnxFiles | None:
    """The ONNX files of ``location``'s weights for every graph of ``method``, or ``None`` when some are
    missing (shipped or cached: see the module docstring). Never imports torch."""
    graphs = _graphs(method)
    if not graphs:
        return None
    sha256 = _weights_sha256(location)
    places = [(location.path.parent, "shipped", lambda g: shipped_onnx_name(location.path, g, half))]
    places.append((onnx_cache_dir(sha256, half), "cache", lambda g: f"{g}.onnx"))
    for folder, origin, name_of in places:
        if not folder.is_dir():
            continue
        paths: dict[str, Path] = {}
        pending: dict[str, str] = {}
        for graph in graphs:  # the first graph (the one every run uses) is hashed now, the others when used
            path = _checked(folder, name_of(graph), sha256, half, pending if paths else None)
            if path is None:
                break
            paths[graph] = path
        else:
            unchecked = {g: pending[p.name] for g, p in paths.items() if p.name in pending}
            return OnnxFiles(method, location.path, sha256, paths, origin, half, _config(location), unchecked)
    return None


def can_export_onnx() -> bool:
    """Whether this installation can export (torch and the ``onnx`` package), without importing them."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "onnx"))


def onnx_entry(path: Path, method: str, graph: str, source: Path, sha256: str, half: bool) -> dict[str, Any]:
    """The manifest entry of an exported graph file (shipped or cached)."""
    opset, version = _constants()
    return {
        "sha256": file_sha256(path, use_cache=False),
        "size": path.stat().st_size,
        "method": method,
        "kind": "onnx",
        "graph": graph,
        "source": source.name,
        "source_sha256": sha256,
        "opset": opset,
        "exporter_version": version,
        "half": half,
    }


def export_onnx(
    method: str, location: WeightsLocation, half: bool = False, folder: Path | None = None
) -> OnnxFiles:
    """Export every graph of ``method`` from ``location``'s weights into the cache (or ``folder``, named
    as shipped files are) and record them in its manifest. Needs torch and ``onnx``."""
    from facerestore_cli.models import create_model
    from facerestore_cli.models.onnx_export import export_graph
    from facerestore_cli.weights.lookup import load_weights

    if not can_export_onnx():
        raise WeightsError(
            f"cannot export {method} to ONNX here: exporting needs torch and the onnx package (pip install onnx)"
        )
    loaded = load_weights(location)
    config = loaded.config or {}
    model = create_model(method, config)
    try:
        model.load_state_dict({k: v.float() for k, v in loaded.tensors.items()}, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise WeightsError(f"{loaded.path} does not fit the {method} network: {str(exc)[:300]}") from None
    del loaded.tensors
    shipped = folder is not None
    folder = folder if folder is not None else onnx_cache_dir(loaded.sha256, half)
    paths = {}
    for graph in _graphs(method):
        name = shipped_onnx_name(location.path, graph, half) if shipped else f"{graph}.onnx"
        path = folder / name
        log.info("exporting %s %s graph to %s", method, graph, path)
        try:
            export_graph(model, method, graph, path, weights_sha256=loaded.sha256, half=half)
        except (RuntimeError, ValueError, OSError, ImportError) as exc:  # the tracer's and onnx's errors
            detail = " ".join(str(exc).split())[:300]
            raise WeightsError(f"cannot export {loaded.path} to ONNX ({graph}): {detail}; use --backend torch") from exc
        update_manifest(folder, name, onnx_entry(path, method, graph, location.path, loaded.sha256, half))
        paths[graph] = path
    return OnnxFiles(method, location.path, loaded.sha256, paths, "shipped" if shipped else "cache", half, config)
