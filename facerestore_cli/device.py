"""Choosing where models run.

Everything that touches a model asks this module for its ``torch.device`` and dtype, so that the
same code path serves CPU, CUDA and Apple's MPS and the tests on CPU cover the GPU paths too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a model needs it: the onnxruntime helpers here do not
    import torch

__all__ = ["DeviceError", "Runtime", "make_runtime", "onnx_providers", "onnx_session_options", "resolve_device"]


log = logging.getLogger(__name__)


class DeviceError(ValueError):
    """The requested device does not exist on this machine."""


@dataclass(frozen=True)
class Runtime:
    """Where and how models run: the device, the compute dtype and the CPU thread count."""

    device: torch.device
    #: the compute ``torch.dtype`` (``make_runtime`` sets it: float16 on CUDA, else float32)
    dtype: Any = None
    threads: int | None = None

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def onnx_device(self) -> str:
        """The device for the onnxruntime models (detector, embedder): ``cuda:N`` on the same GPU as
        the restorer, so ``--device cuda:1`` runs everything on GPU 1; ``cpu`` otherwise."""
        return f"cuda:{self.device.index or 0}" if self.is_cuda else "cpu"


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda[:N]|mps`` into a device that exists, or raise :class:`DeviceError`."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {spec}: this torch build or machine has no CUDA device")
        index = 0
        if ":" in spec:
            try:
                index = int(spec.split(":", 1)[1])
            except ValueError as exc:
                raise DeviceError(f"--device {spec}: expected cuda or cuda:N") from exc
        if not 0 <= index < torch.cuda.device_count():
            raise DeviceError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device("cuda", index)
    if spec == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError("--device mps: Metal (MPS) is not available on this machine")
        return torch.device("mps")
    raise DeviceError(f"--device {spec}: expected auto, cpu, cuda, cuda:N or mps")


def make_runtime(device: str = "auto", half: bool | None = None, threads: int | None = None) -> Runtime:
    """Build a :class:`Runtime`.

    ``half=None`` means "fp16 where it is safe": on CUDA only, since CPU fp16 convolutions are slow
    and MPS fp16 differs numerically between macOS versions.
    """
    import torch

    dev = resolve_device(device)
    if threads is not None:
        if threads < 1:
            raise DeviceError("--threads must be at least 1")
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if half is None:
        half = dev.type == "cuda"
    if half and dev.type == "cpu":
        raise DeviceError("--half needs a GPU: half precision is not supported for CPU inference here")
    if dev.type == "cuda":
        # Match the reference numbers: TF32 would change results by ~1e-3.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return Runtime(device=dev, dtype=torch.float16 if half else torch.float32, threads=threads)


# --------------------------------------------------------------------------------------------------
# onnxruntime (the detectors and insightface embedder run ONNX models)


def onnx_providers(device: str) -> list:
    """onnxruntime execution providers for ``device``: CUDA first when asked for and available."""
    import onnxruntime as ort

    device = (device or "cpu").lower()
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            index = int(device.split(":", 1)[1]) if ":" in device else 0
            return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        log.warning(
            "device %s requested but this onnxruntime has no CUDA provider "
            "(pip install 'facerestore-cli[gpu]'); face detection runs on the CPU",
            device,
        )
    return ["CPUExecutionProvider"]


def onnx_session_options(threads: int | None):
    """Session options that honour ``--threads`` and keep onnxruntime's logging quiet."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options
