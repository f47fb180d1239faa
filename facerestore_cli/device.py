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

__all__ = [
    "BACKENDS",
    "DeviceError",
    "DeviceName",
    "Runtime",
    "cuda_provider_usable",
    "make_runtime",
    "nvidia_gpu_present",
    "onnx_providers",
    "onnx_session_options",
    "resolve_device",
    "restorer_providers",
]

#: ``--backend``: ``auto`` takes onnxruntime where the model's ONNX file is available (restore.py decides).
BACKENDS = ("auto", "torch", "onnxruntime")


log = logging.getLogger(__name__)


class DeviceError(ValueError):
    """The requested device does not exist on this machine."""


@dataclass(frozen=True)
class DeviceName:
    """A device as onnxruntime sees it (``cpu`` or ``cuda:N``), shaped like ``torch.device`` so that a
    :class:`Runtime` of the onnxruntime backend is built, and read, without importing torch."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


@dataclass(frozen=True)
class Runtime:
    """Where and how models run: the device, the compute dtype, the CPU thread count and the backend."""

    #: a ``torch.device`` (torch backend) or a :class:`DeviceName` (onnxruntime backend)
    device: torch.device | DeviceName
    #: the compute dtype: a ``torch.dtype`` for torch, ``"float16"``/``"float32"`` for onnxruntime
    #: (``make_runtime`` sets it: float16 on CUDA, else float32)
    dtype: Any = None
    threads: int | None = None
    #: ``torch`` or ``onnxruntime``
    backend: str = "torch"

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def half(self) -> bool:
        return str(self.dtype).endswith("float16")

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


def make_runtime(
    device: str = "auto", half: bool | None = None, threads: int | None = None, backend: str = "torch"
) -> Runtime:
    """Build a :class:`Runtime`.

    ``half=None`` means "fp16 where it is safe": on CUDA only, since CPU fp16 convolutions are slow
    and MPS fp16 differs numerically between macOS versions. ``backend="onnxruntime"`` resolves the
    device from onnxruntime's providers and never imports torch (``auto`` is resolved before this,
    by ``restore.resolve_backend``).
    """
    if backend == "onnxruntime":
        return _onnx_runtime(device, half, threads)
    if backend != "torch":
        raise DeviceError(f"--backend {backend}: make_runtime takes torch or onnxruntime")
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


def _onnx_runtime(device: str, half: bool | None, threads: int | None) -> Runtime:
    """The onnxruntime backend's :class:`Runtime`: ``auto`` is CUDA when this onnxruntime has the CUDA
    provider and the machine an NVIDIA GPU, else the CPU."""
    spec = (device or "auto").strip().lower()
    if threads is not None and threads < 1:
        raise DeviceError("--threads must be at least 1")
    cuda = cuda_provider_usable()
    if spec == "auto":
        dev = DeviceName("cuda", 0) if cuda else DeviceName("cpu")
    elif spec == "cpu":
        dev = DeviceName("cpu")
    elif spec.startswith("cuda"):
        if not cuda:
            raise DeviceError(
                f"--device {spec} --backend onnxruntime: this onnxruntime has no CUDA provider or this machine "
                "no NVIDIA GPU (pip install 'facerestore-cli[gpu]', or --backend torch)"
            )
        try:
            index = int(spec.split(":", 1)[1]) if ":" in spec else 0
        except ValueError as exc:
            raise DeviceError(f"--device {spec}: expected cuda or cuda:N") from exc
        if index < 0:
            raise DeviceError(f"--device {spec}: expected cuda or cuda:N")
        dev = DeviceName("cuda", index)
    elif spec == "mps":
        raise DeviceError("--device mps runs with --backend torch: onnxruntime here runs on cpu or cuda")
    else:
        raise DeviceError(f"--device {spec}: expected auto, cpu, cuda, cuda:N or mps")
    if half is None:
        half = dev.type == "cuda"
    if half and dev.type == "cpu":
        raise DeviceError("--half needs a GPU: half precision is not supported for CPU inference here")
    return Runtime(device=dev, dtype="float16" if half else "float32", threads=threads, backend="onnxruntime")


def nvidia_gpu_present() -> bool:
    """Whether the NVIDIA driver reports a GPU (a file check: no CUDA library is loaded)."""
    gpus = "/proc/driver/nvidia/gpus"
    return (os.path.isdir(gpus) and bool(os.listdir(gpus))) or os.path.exists("/dev/nvidia0")


def cuda_provider_usable() -> bool:
    """Whether onnxruntime can run on a GPU here: its CUDA provider, and a GPU for it."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and nvidia_gpu_present()


# --------------------------------------------------------------------------------------------------
# onnxruntime (the detectors and insightface embedder run ONNX models; so do the restorers' graphs)


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
    # Idle threads sleep instead of spinning: an album runs the model beside the threads that prepare
    # and finish other photos, and spinning threads took their cores (bench/album.py: about 10% more
    # images per minute without it)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def restorer_providers(runtime: Runtime, *, tensorrt_cache: str | os.PathLike | None = None) -> list:
    """Execution providers for a restorer's graph on ``runtime``'s device, fastest first.

    On a GPU: TensorRT when this onnxruntime has it (fp16 following ``--half``; its engines and timing
    cache go to ``tensorrt_cache``, so they are built once, not at every start; ``FACERESTORE_TENSORRT=0``
    leaves it out), then CUDA on the same device id, then the CPU for anything they do not take.
    """
    import onnxruntime as ort

    if not runtime.is_cuda:
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    index = runtime.device.index or 0
    providers: list = []
    if "TensorrtExecutionProvider" in available and os.environ.get("FACERESTORE_TENSORRT", "1") != "0":
        options: dict[str, Any] = {"device_id": index, "trt_fp16_enable": runtime.half}
        if tensorrt_cache is not None:
            os.makedirs(tensorrt_cache, exist_ok=True)
            options.update(
                trt_engine_cache_enable=True, trt_engine_cache_path=str(tensorrt_cache),
                trt_timing_cache_enable=True, trt_timing_cache_path=str(tensorrt_cache),
            )  # fmt: skip
        providers.append(("TensorrtExecutionProvider", options))
    if "CUDAExecutionProvider" in available:
        cuda: dict[str, Any] = {"device_id": index}
        if not runtime.half and tuple(int(p) for p in ort.__version__.split(".")[:2]) >= (1, 18):
            cuda["use_tf32"] = 0  # as make_runtime does for torch: TF32 would move results by ~1e-3
        providers.append(("CUDAExecutionProvider", cuda))
    return [*providers, "CPUExecutionProvider"]
