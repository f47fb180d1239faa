"""Restorers: a model plus everything needed to run it on aligned faces.

The pipeline hands a restorer a batch of aligned 512x512 uint8 RGB crops with their 68 landmarks and
gets float32 RGB in [0, 1] back. Restorers own the model's device, dtype and batching, so the pipeline
never touches torch. ``none`` is the identity restorer: it lets a user check detection and alignment,
and it is the pipeline's own end-to-end test.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerestore_cli.device import Runtime, make_runtime

__all__ = [
    "METHODS",
    "NONE",
    "IdentityRestorer",
    "ImageRestorer",
    "ReferenceRestorer",
    "Restorer",
    "RestorerInfo",
    "TorchRestorer",
    "create_restorer",
    "method_uses_references",
    "output_problem",
    "resolve_backend",
]

#: ``none``: detect, align and paste only (the identity restorer).
NONE = "none"


def _registered() -> dict[str, Any]:
    from facerestore_cli.models import methods

    return methods()


#: Every ``--method``: the registered models, then ``none``.
METHODS: tuple[str, ...] = (*_registered(), NONE)


def method_uses_references(method: str) -> bool:
    """Whether ``method`` can read a person's references (a specific dictionary)."""
    spec = _registered().get(method)
    return bool(spec and spec.uses_references)


#: A raw output value this far outside [0, 1] is not a near-miss of a trained network; a face with more
#: than WILD_FRACTION of such values is rejected (trained weights put well under 0.1% of values there).
OUT_OF_RANGE = 0.5
WILD_FRACTION = 0.01


def output_problem(face: np.ndarray, restored: np.ndarray) -> str | None:
    """Why a restored face must not be pasted, or None when it may be.

    Damaged weights do not fail loudly: they compute, and the album would report every face restored
    while pasting black or flat blobs (and ``--in-place`` would replace the original). This is the
    last check before pixels reach a photo: non-finite values, an output far out of range (see
    :meth:`TorchRestorer.from_tensor`), or a flat patch where the input had a face.
    """
    if not np.isfinite(restored).all():
        return "the restorer's output is not finite or far out of range (damaged or wrong weights?)"
    spread = float(restored.std())
    if spread < 0.01 and float(face.std()) / 255.0 > 0.03:
        return f"the restorer's output is a flat patch (std {spread:.4f}) where the input has a face"
    return None


@dataclass
class RestorerInfo:
    """What a restorer runs with, for reports and ``doctor``."""

    method: str
    weights: Path | None = None
    sha256: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"
    #: ``torch`` or ``onnxruntime``, and the latter's execution providers in the order they take nodes
    backend: str = "torch"
    providers: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "weights": None if self.weights is None else str(self.weights)}


class Restorer(ABC):
    """Turns aligned faces into restored faces."""

    info: RestorerInfo
    #: Whether this restorer can use a specific (per-person) dictionary.
    uses_references: bool = False

    @abstractmethod
    def restore(
        self, faces: np.ndarray, landmarks68: np.ndarray, dictionary: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """(N, 512, 512, 3) uint8 RGB and (N, 68, 2) landmarks -> (N, 512, 512, 3) float32 in [0, 1]."""


class IdentityRestorer(Restorer):
    """Returns the aligned faces unchanged (``--method none``)."""

    def __init__(self) -> None:
        self.info = RestorerInfo(method="none")

    def restore(self, faces, landmarks68, dictionary=None):
        return faces.astype(np.float32) / 255.0


class TorchRestorer(Restorer):
    """Shared plumbing for the torch models: weights, device, dtype, batching, conversions."""

    def __init__(self, method: str, weights: Path | None, runtime: Runtime | None, batch_size: int) -> None:
        import torch

        from facerestore_cli import weights as weights_mod
        from facerestore_cli.models import create_model

        self.torch = torch
        self.runtime = runtime or make_runtime("cpu")
        location = weights_mod.locate_weights(method, weights)
        loaded = weights_mod.load_weights(location)
        config = loaded.config or {}
        try:
            self.model = create_model(method, config)
            self.model.load_state_dict({k: v.float() for k, v in loaded.tensors.items()}, strict=True)
        except (TypeError, ValueError, KeyError, RuntimeError) as exc:  # a bad config, missing or misshapen tensors
            detail = " ".join(str(exc).split())
            raise weights_mod.WeightsError(
                f"{loaded.path} does not fit the {method} network its metadata describes: "
                f"{detail[:400]}{'…' if len(detail) > 400 else ''}"
            ) from None
        self.model.eval().requires_grad_(False)
        self.model.to(device=self.runtime.device, dtype=self.runtime.dtype)
        self.batch_size = max(1, batch_size)
        self.info = RestorerInfo(
            method=method,
            weights=Path(loaded.path),
            sha256=loaded.sha256,
            config=dict(config),
            device=str(self.runtime.device),
            dtype=str(self.runtime.dtype).replace("torch.", ""),
        )

    def to_tensor(self, faces: np.ndarray):
        """uint8 RGB -> (N, 3, H, W) in [-1, 1], exactly as the official DMDNet test code does."""
        from facerestore_cli.models.tensors import faces_to_tensor

        return faces_to_tensor(faces).to(device=self.runtime.device, dtype=self.runtime.dtype)

    def from_tensor(self, out) -> np.ndarray:
        """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) in [0, 1].

        A face whose raw output is far outside the network's range (damaged or wrong weights make
        values of 1e3 and more, which clamping would turn into a flat patch that looks plausible) is
        returned as NaN, so that :func:`output_problem` rejects it instead of it being pasted.
        """
        y = out.float() * 0.5 + 0.5
        wild = ((y < -OUT_OF_RANGE) | (y > 1.0 + OUT_OF_RANGE)).flatten(1).float().mean(1) > WILD_FRACTION
        y = y.clamp_(0, 1)
        if bool(wild.any()):
            y[wild] = float("nan")
        return y.permute(0, 2, 3, 1).cpu().numpy()

    def restore(self, faces, landmarks68, dictionary=None):
        results = []
        with self.torch.inference_mode():
            for start in range(0, len(faces), self.batch_size):
                stop = start + self.batch_size
                results.append(self._restore_batch(faces[start:stop], landmarks68[start:stop], dictionary))
        if not results:
            return np.zeros((0, *faces.shape[1:]), np.float32)
        return np.concatenate(results)

    @abstractmethod
    def _restore_batch(self, faces: np.ndarray, landmarks68: np.ndarray, dictionary) -> np.ndarray: ...


class ReferenceRestorer(TorchRestorer):
    """A method that reads references (DMDNet): its network takes the face, its component boxes (from
    the landmarks, by the network module's ``component_boxes``) and optionally a specific dictionary."""

    uses_references = True

    def __init__(self, method: str, weights: Path | None, runtime: Runtime | None, batch_size: int) -> None:
        super().__init__(method, weights, runtime, batch_size)
        from facerestore_cli.models import get_method

        self._component_boxes = get_method(method).module.component_boxes

    def boxes(self, landmarks68: np.ndarray) -> np.ndarray:
        return np.stack([self._component_boxes(lm) for lm in landmarks68])

    def encode_references(self, faces: np.ndarray, landmarks68: np.ndarray) -> dict[str, Any]:
        """Specific dictionary of reference crops as float32 NumPy arrays (what the cache stores)."""
        torch = self.torch
        keys: dict[str, list] = {}
        with torch.inference_mode():
            for start in range(0, len(faces), self.batch_size):
                sl = slice(start, start + self.batch_size)
                part = self.model.encode_references(
                    self.to_tensor(faces[sl]), torch.from_numpy(self.boxes(landmarks68[sl]))
                )
                for k, v in part.items():
                    keys.setdefault(k, []).append(v.float().cpu())
        return {k: torch.cat(v).numpy() for k, v in keys.items()}

    def _restore_batch(self, faces, landmarks68, dictionary):
        torch = self.torch
        specific = None
        if dictionary is not None:
            specific = {
                k: torch.as_tensor(v).to(self.runtime.device, self.runtime.dtype) for k, v in dictionary.items()
            }
        out = self.model(self.to_tensor(faces), torch.from_numpy(self.boxes(landmarks68)), specific)
        return self.from_tensor(out)


class ImageRestorer(TorchRestorer):
    """A model that maps the face alone to the restored face (MemGAN, and any such registered method)."""

    def _restore_batch(self, faces, landmarks68, dictionary):
        return self.from_tensor(self.model(self.to_tensor(faces)))


def _onnx_files(method: str, weights: Path | None, half: bool, export: bool) -> Any:
    """The checked ONNX files of the weights ``method`` would load, exported first when ``export``;
    ``None`` when there are none. Finding them never imports torch; exporting does."""
    from facerestore_cli import weights as weights_mod
    from facerestore_cli.weights.onnx import export_onnx, find_onnx

    location = weights_mod.locate_weights(method, weights)
    files = find_onnx(method, location, half)
    if files is None and export:
        files = export_onnx(method, location, half)
    return files


def resolve_backend(
    method: str, backend: str = "auto", *, weights: Path | None = None, device: str = "auto", half: bool | None = None
) -> str:
    """``--backend auto|torch|onnxruntime`` -> ``torch`` or ``onnxruntime`` for this method and device.

    ``auto`` takes onnxruntime where it can run the model as well as torch would: the method has ONNX
    graphs and their files are there (shipped, or exported before: at ``weights import``, or by an
    earlier ``--backend onnxruntime`` run), and the device is the CPU or a GPU that onnxruntime's CUDA
    provider reaches. It never starts an export itself: that takes torch and, for the official size,
    minutes, which a plain restore with ``--weights`` should not spend unasked. It keeps torch for ``--device mps``,
    and on an NVIDIA machine whose onnxruntime has no CUDA provider (torch would use the GPU). ``none``
    loads no model at all, so it never needs torch.
    """
    from facerestore_cli.device import BACKENDS, cuda_provider_usable, nvidia_gpu_present

    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend}: choose {', '.join(BACKENDS)}")
    spec = (device or "auto").strip().lower()
    if backend != "auto":
        return backend
    if spec == "mps":
        return "torch"
    if method == NONE:
        return "onnxruntime"
    registered = _registered().get(method)
    if registered is None or not registered.onnx_graphs:
        return "torch"
    if spec != "cpu" and nvidia_gpu_present() and not cuda_provider_usable():
        return "torch"
    if spec == "auto" and not nvidia_gpu_present():
        import platform

        if platform.system() == "Darwin" and platform.machine() == "arm64":
            return "torch"  # torch runs on the Apple GPU (MPS); onnxruntime here on the CPU only
    from facerestore_cli.weights import WeightsError

    try:
        cuda = spec.startswith("cuda") or (spec == "auto" and cuda_provider_usable())
        found = _onnx_files(method, weights, bool(cuda if half is None else half), export=False)
    except WeightsError:
        return "torch"  # no usable weights: the torch restorer says why, as it always has
    return "onnxruntime" if found is not None else "torch"


def create_restorer(
    method: str, *, weights: Path | None = None, runtime: Runtime | None = None, batch_size: int = 4
) -> Restorer:
    """Build the restorer for ``--method`` on ``runtime``'s backend; raises ``ValueError`` for an unknown
    method. On onnxruntime, weights without ONNX files are exported first (once: they are cached)."""
    if method == NONE:
        return IdentityRestorer()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if runtime is not None and runtime.backend == "onnxruntime":
        from facerestore_cli.restore_onnx import create_onnx_restorer

        if not _registered()[method].onnx_graphs:
            raise ValueError(f"--backend onnxruntime: {method} has no ONNX graphs; use --backend torch")
        files = _onnx_files(method, weights, runtime.half, export=True)
        return create_onnx_restorer(method, files, runtime, batch_size)
    cls = ReferenceRestorer if method_uses_references(method) else ImageRestorer
    return cls(method, weights, runtime, batch_size)
