"""Restorers on onnxruntime: the registered models' exported graphs, run without torch.

The same contract as :mod:`facerestore_cli.restore` (aligned uint8 faces and their 68 landmarks in,
float32 RGB in [0, 1] out, the same output check), on the ONNX files of
:mod:`facerestore_cli.weights.onnx`. Nothing here imports torch: the inputs are made with NumPy exactly
as ``models/tensors.py`` makes them for torch, DMDNet's boxes come from its torch-free
``models/dmdnet/boxes.py``, and a restore on shipped (or already exported) weights loads only NumPy
and onnxruntime; dictionaries are NumPy arrays from encoding to the cache and back, so compiling and
using references needs no torch either.

Providers follow the runtime: the CPU (``--threads`` sets onnxruntime's intra-op threads), CUDA on
the ``--device cuda:N`` id with float16 graphs unless ``--no-half``, and TensorRT first where
onnxruntime has it, with its engine cache in the user cache folder.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from facerestore_cli.device import Runtime, onnx_session_options, restorer_providers
from facerestore_cli.restore import OUT_OF_RANGE, WILD_FRACTION, Restorer, RestorerInfo

__all__ = ["OnnxImageRestorer", "OnnxReferenceRestorer", "cpu_session", "create_onnx_restorer", "faces_to_array"]


def faces_to_array(faces: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 in [-1, 1]: ``models.tensors.faces_to_tensor``'s
    numbers (divide by 255 in float64, then float32), in NumPy."""
    x = (np.ascontiguousarray(faces).transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    return np.ascontiguousarray((x - np.float32(0.5)) / np.float32(0.5))


def array_to_faces(out: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) float32 in [0, 1], a far-out-of-range face as NaN
    (``TorchRestorer.from_tensor``'s rule, so :func:`~facerestore_cli.restore.output_problem` rejects it)."""
    y = out.astype(np.float32) * np.float32(0.5) + np.float32(0.5)
    wild = ((y < -OUT_OF_RANGE) | (y > 1.0 + OUT_OF_RANGE)).reshape(len(y), -1).mean(axis=1) > WILD_FRACTION
    y = np.clip(y, 0.0, 1.0)
    y[wild] = np.nan
    return np.ascontiguousarray(y.transpose(0, 2, 3, 1))


def tensorrt_cache_dir() -> Path:
    """Where TensorRT keeps its engines and timing cache (built once per graph, GPU and shape)."""
    from facerestore_cli.defaults import cache_root

    return cache_root() / "tensorrt"


def optimized_graph_cache_dir() -> Path:
    """Where onnxruntime's optimised CPU graphs are kept (one per graph, onnxruntime version and CPU)."""
    from facerestore_cli.defaults import cache_root

    return cache_root() / "onnxruntime"


@functools.cache
def _cpu_signature() -> str:
    """What an optimised CPU graph depends on besides the graph: the machine and its instruction sets
    (onnxruntime's NCHWc layouts follow the vector width)."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    key = f"{platform.machine()}|{platform.processor()}|{' '.join(sorted(flags.split(':')[-1].split()))}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def cpu_session(path: Path, threads: int | None) -> Any:
    """An onnxruntime CPU session of ``path``, from its optimised copy in the user cache when there is one.

    Optimising a restorer's graph (fusions, NCHWc layouts) is most of a session's start: 0.6-0.7 s of
    DMDNet's, against 0.15 s to load the optimised copy (``docs/studies/startup.md``). The copy is made
    on first use, keyed by the source graph's sha256, the onnxruntime version and the CPU, and checked
    against its own sha256 at every load, so a damaged copy is made again instead of run; making one
    removes the same graph's copies for other onnxruntime versions. A cache that cannot be written
    only costs the time.
    """
    import onnxruntime as ort

    from facerestore_cli.weights.files import file_sha256

    options = onnx_session_options(threads)
    providers = ["CPUExecutionProvider"]
    try:
        name = f"{file_sha256(path)[:24]}-ort{ort.__version__}-{_cpu_signature()}"
        folder = optimized_graph_cache_dir()
        target, check = folder / f"{name}.onnx", folder / f"{name}.sha256"
        if target.is_file() and check.is_file():
            session = _checked_session(target, check.read_text().strip(), onnx_session_options(threads), providers)
            if session is not None:
                return session
    except OSError:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    try:
        from facerestore_cli.imagefile.atomic import atomic_write

        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(target) as tmp:
            options.optimized_model_filepath = str(tmp)
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
            digest = file_sha256(tmp, use_cache=False)
        with atomic_write(check) as tmp:
            tmp.write_text(digest + "\n")
        source = name.split("-ort", 1)[0]
        for old in folder.glob(f"{source}-ort*"):  # this graph's copies for other onnxruntime versions
            if not old.name.startswith(f"{source}-ort{ort.__version__}-"):
                old.unlink(missing_ok=True)
        return session
    except Exception:  # a read-only or full cache: the session from the source graph, optimised in memory
        return ort.InferenceSession(str(path), sess_options=onnx_session_options(threads), providers=providers)


def _checked_session(path: Path, sha256: str, options: Any, providers: list[str]) -> Any:
    """The session of an optimised copy, or None when the copy does not match ``sha256``. The check runs
    in a thread while onnxruntime reads the graph (both release the GIL): 0.04-0.06 s of every start,
    and a damaged copy is still never run. An unreadable copy raises ``OSError``."""
    import onnxruntime as ort

    from facerestore_cli.weights.files import file_sha256

    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="facerestore-check-graph") as pool:
        digest = pool.submit(file_sha256, path, use_cache=False)
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception:  # a copy onnxruntime cannot read is made again, like a damaged one
            session = None
        matches = digest.result() == sha256
    return session if matches else None


class OnnxRestorer(Restorer):
    """Shared plumbing: sessions (made on first use of each graph), providers, batching, precision."""

    def __init__(self, files: Any, runtime: Runtime, batch_size: int) -> None:
        self.files = files
        self.runtime = runtime
        self.batch_size = max(1, batch_size)
        self.dtype = np.float16 if runtime.half else np.float32
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()
        first = self.session(next(iter(files.paths)))
        self.providers = first.get_providers()
        self.info = RestorerInfo(
            method=files.method,
            weights=Path(files.weights),
            sha256=files.sha256,
            config=dict(files.config),
            device=str(runtime.device),
            dtype="float16" if runtime.half else "float32",
            backend="onnxruntime",
            providers=list(self.providers),
        )

    def session(self, graph: str) -> Any:
        """The onnxruntime session of one graph, created once (thread-safe)."""
        with self._lock:
            sess = self._sessions.get(graph)
            if sess is None:
                import onnxruntime as ort

                path = self.files.check(graph)
                if self.runtime.is_cuda:
                    sess = ort.InferenceSession(
                        str(path),
                        sess_options=onnx_session_options(self.runtime.threads),
                        providers=restorer_providers(self.runtime, tensorrt_cache=tensorrt_cache_dir()),
                    )
                else:
                    sess = cpu_session(path, self.runtime.threads)
                self._sessions[graph] = sess
            return sess

    def _run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self.session(graph).run(None, dict(feeds))

    def restore(self, faces, landmarks68, dictionary=None):
        results = [
            self._restore_batch(faces[i : i + self.batch_size], landmarks68[i : i + self.batch_size], dictionary)
            for i in range(0, len(faces), self.batch_size)
        ]
        if not results:
            return np.zeros((0, *faces.shape[1:]), np.float32)
        return np.concatenate(results)

    def _restore_batch(self, faces: np.ndarray, landmarks68: np.ndarray, dictionary) -> np.ndarray:
        raise NotImplementedError


class OnnxImageRestorer(OnnxRestorer):
    """A model of the face alone (MemGAN): its ``restore`` graph."""

    def _restore_batch(self, faces, landmarks68, dictionary):
        (out,) = self._run("restore", {"lq": faces_to_array(faces).astype(self.dtype, copy=False)})
        return array_to_faces(out)


def _numpy(value: Any) -> np.ndarray:
    """A dictionary tensor as an array: torch tensors (the cache's) and arrays alike."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


class OnnxReferenceRestorer(OnnxRestorer):
    """DMDNet: ``generic`` and ``specific`` graphs with per-face boxes, and ``encode`` for references."""

    uses_references = True

    def boxes(self, landmarks68: np.ndarray) -> np.ndarray:
        """(N, 4, 4) int64 component boxes; ``ValueError`` for a face the network cannot take."""
        from facerestore_cli.models.dmdnet.boxes import box_problem, component_boxes

        boxes = np.stack([component_boxes(lm) for lm in landmarks68]).astype(np.int64)
        for b in boxes:
            problem = box_problem(b)
            if problem:
                raise ValueError(problem)
        return boxes

    def _restore_batch(self, faces, landmarks68, dictionary):
        feeds = {"lq": faces_to_array(faces).astype(self.dtype, copy=False), "boxes": self.boxes(landmarks68)}
        graph = "generic"
        if dictionary is not None:
            graph = "specific"
            for name in self.session(graph).get_inputs()[2:]:
                feeds[name.name] = _numpy(dictionary[name.name]).astype(self.dtype, copy=False)
        (out,) = self._run(graph, feeds)
        return array_to_faces(out)

    def encode_references(self, faces: np.ndarray, landmarks68: np.ndarray) -> dict[str, Any]:
        """Specific dictionary of reference crops as float32 arrays (what the dictionary cache stores and
        ``restore`` reads back), computed by the ``encode`` graph."""
        names = [o.name for o in self.session("encode").get_outputs()]
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for i in range(0, len(faces), self.batch_size):
            sl = slice(i, i + self.batch_size)
            refs = faces_to_array(faces[sl]).astype(self.dtype, copy=False)
            feeds = {"refs": refs, "boxes": self.boxes(landmarks68[sl])}
            for name, value in zip(names, self._run("encode", feeds), strict=True):
                parts[name].append(value.astype(np.float32))
        return {n: np.concatenate(v) for n, v in parts.items()}


def create_onnx_restorer(method: str, files: Any, runtime: Runtime, batch_size: int = 4) -> Restorer:
    """The onnxruntime restorer of ``method`` on its checked ONNX files (``weights.onnx.OnnxFiles``)."""
    from facerestore_cli.models import get_method

    cls = OnnxReferenceRestorer if get_method(method).uses_references else OnnxImageRestorer
    return cls(files, runtime, batch_size)
