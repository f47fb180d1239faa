"""Who a face is: face embeddings that route faces to people and reject wrong reference photos.

Two embedders, one interface (``embed``, ``embed_many``, ``name``, ``dimension`` and their own routing
defaults ``threshold``, ``margin`` and ``outlier_distance``):

* ``dlib`` (:class:`FaceEmbedder`): dlib's 128-d ResNet (``dlib_face_recognition_resnet_model_v1.dat``),
  always available offline. Its routing defaults were measured by ``bench/routing.py`` (``people.py``).
* ``insightface`` (:class:`InsightFaceEmbedder`): the ArcFace recognition network of an insightface
  model pack already on disk (buffalo_l: ``w600k_r50.onnx``, 512-d), run with onnxruntime directly;
  nothing is ever downloaded and the insightface package itself is not needed. Its routing defaults
  are NOT measured here (no pack on this machine): they come from insightface's own guidance, see
  :data:`INSIGHTFACE_SAME_COSINE`, and ``bench/routing.py --embedder insightface`` measures them.

Both embed the *aligned* 512 crops with the 68 landmarks found on them (``landmarks.py``), so the
same points drive DMDNet's component boxes and the embedding. dlib re-aligns each face to its own 150 px
chip from those points; the insightface embedder warps the crop onto ArcFace's 112x112 5-point template.
How we aligned the crop only has to keep the whole face inside it.

Distances are Euclidean for both. dlib's convention: two photos closer than about 0.6 are usually the
same person (dlib reports 99.38% on LFW at that threshold). insightface's embeddings are unit vectors,
so their distance is ``sqrt(2 - 2 cos)``: 0 for the same direction, 1.41 for orthogonal ones.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from facerestore_cli.device import onnx_providers, onnx_session_options
from facerestore_cli.face.align import FACE_SIZE, similarity_transform, warp_to_face
from facerestore_cli.face.detect import DEFAULT_INSIGHTFACE_PACK, five_points_from_68, insightface_pack_dir
from facerestore_cli.face.dlib_models import ModelFileError, dlib_model_path
from facerestore_cli.face.landmarks import ALIGNED_FACE_BOX
from facerestore_cli.imagefile import contiguous_rgb8

#: Size of dlib's embeddings.
EMBEDDING_SIZE = 128
#: dlib routing defaults, measured by ``bench/routing.py`` (how: ``people.py``'s docstring).
DLIB_THRESHOLD = 0.55
DLIB_MARGIN = 0.12
#: A reference further than this (dlib distance) from the others' median embedding is an outlier.
DLIB_OUTLIER_DISTANCE = 0.55
#: dlib's default: the face chip is cut with 25% of context around the landmarks' extent.
CHIP_PADDING = 0.25

_LOAD_LOCK = threading.Lock()
# The dlib network is not documented as thread-safe; one lock per loaded model serialises its use.
_MODEL_LOCKS: dict[str, threading.Lock] = {}


@cache
def _load_model(path: str):
    import dlib

    return dlib.face_recognition_model_v1(path)


def _model_and_lock(path: Path):
    key = str(path)
    with _LOAD_LOCK:  # load each model file once per process, even when threads race for it
        model = _load_model(key)
        lock = _MODEL_LOCKS.setdefault(key, threading.Lock())
    return model, lock


class EmbedderUnavailable(RuntimeError):
    """An embedder cannot run here; the message says what is missing and where it was expected."""


class FaceEmbedder:
    """dlib's 128-d face recognition network (thread-safe; the model is loaded once per process)."""

    name = "dlib"
    dimension = EMBEDDING_SIZE
    #: Routing defaults (``people.py``) and the reference-outlier distance (``dictionary.py``).
    threshold = DLIB_THRESHOLD
    margin = DLIB_MARGIN
    outlier_distance = DLIB_OUTLIER_DISTANCE
    #: dlib's vectors are not unit length: centroids are plain means.
    unit_vectors = False

    def __init__(self, model_path: Path | None = None, *, num_jitters: int = 0) -> None:
        import dlib

        self._dlib = dlib
        self.model_path = Path(model_path or dlib_model_path("dlib_face_recognition_resnet_model_v1.dat"))
        self.num_jitters = int(num_jitters)
        self._model, self._lock = _model_and_lock(self.model_path)

    def embed(self, aligned_rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """(128,) float32 embedding of the face in a crop, located by its 68 landmarks."""
        image = contiguous_rgb8(aligned_rgb)
        shape = self._shape(image, landmarks68)
        with self._lock:
            vec = self._model.compute_face_descriptor(image, shape, self.num_jitters, CHIP_PADDING)
        return np.asarray(vec, dtype=np.float32)

    def embed_many(self, aligned_rgbs: Sequence[np.ndarray], landmarks68: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 128) float32 embeddings, run through dlib's batch API in one call."""
        if len(aligned_rgbs) != len(landmarks68):
            raise ValueError(f"{len(aligned_rgbs)} crops but {len(landmarks68)} landmark sets")
        if len(aligned_rgbs) == 0:
            return np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
        dlib = self._dlib
        images, shapes = [], []
        for crop, points in zip(aligned_rgbs, landmarks68, strict=True):
            image = contiguous_rgb8(crop)
            detections = dlib.full_object_detections()
            detections.append(self._shape(image, points))
            images.append(image)
            shapes.append(detections)
        with self._lock:
            out = self._model.compute_face_descriptor(images, shapes, self.num_jitters, CHIP_PADDING)
        return np.asarray([np.asarray(per_image[0]) for per_image in out], dtype=np.float32)

    def _shape(self, image: np.ndarray, landmarks68: np.ndarray):
        """A dlib ``full_object_detection``: dlib aligns its chip from the points; the box is nominal."""
        dlib = self._dlib
        points = np.asarray(landmarks68, dtype=np.float64)
        if points.shape != (68, 2):
            raise ValueError(f"expected (68, 2) landmarks, got shape {points.shape}")
        if not np.isfinite(points).all():
            raise ValueError("landmarks contain NaN or infinite values")
        h, w = image.shape[:2]
        sx, sy = w / FACE_SIZE, h / FACE_SIZE
        left, top, right, bottom = ALIGNED_FACE_BOX
        rect = dlib.rectangle(round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))
        parts = [dlib.point(round(float(x)), round(float(y))) for x, y in points]
        return dlib.full_object_detection(rect, parts)


# --------------------------------------------------------------------------------------------------
# insightface (optional: its model pack must already be on disk; nothing is downloaded)

#: The recognition model of each insightface model pack (insightface's model zoo table). Another pack
#: folder's recognition model is found by elimination: the one ``.onnx`` file whose name is not one of
#: insightface's other tasks (:data:`INSIGHTFACE_OTHER_TASKS`).
INSIGHTFACE_RECOGNITION_FILES = {
    "buffalo_l": "w600k_r50.onnx",
    "buffalo_m": "w600k_r50.onnx",
    "buffalo_s": "w600k_mbf.onnx",
    "buffalo_sc": "w600k_mbf.onnx",
    "antelopev2": "glintr100.onnx",
}
#: File-name prefixes of the packs' detection, landmark and attribute models.
INSIGHTFACE_OTHER_TASKS = ("det_", "scrfd_", "1k3d68", "2d106det", "genderage")
#: ArcFace's 5-point template at 112x112 (image-left eye, image-right eye, nose tip, left and right
#: mouth corner: the order of ``five_points_from_68``), the layout insightface's recognition models
#: were trained on.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_SIZE = 112
#: The packs' recognition models take RGB in [-1, 1]: (pixel - 127.5) / 127.5, as insightface feeds
#: them. (insightface feeds raw pixels only to legacy MXNet conversions that normalise inside their
#: graph, which it recognises with the onnx package; no pack above is one, and they are not supported.)
ARCFACE_MEAN = 127.5
ARCFACE_STD = 127.5

#: insightface's own verdicts on the cosine similarity of two buffalo_l (w600k_r50) embeddings, from
#: its recognition demo (deepinsight/insightface, ``web-demos/src_recognition/main.py``): at least 0.28
#: "are the same person", below 0.20 "NOT the same person", in between "likely". Our routing defaults
#: for insightface are these verdicts as distances: the threshold is "the same person"
#: (sqrt(2 - 2 x 0.28) = 1.2) and the margin asks that a face accepted at the threshold be "NOT the
#: same person" for everybody else (sqrt(2 - 2 x 0.20) - 1.2 = 0.065). The demo compares two clean
#: photos; ours compare a possibly degraded face with a person's centroid, so the defaults are NOT
#: measured for routing (no pack on the machine that chose them). Measure them on your machine with
#: ``python bench/routing.py --embedder insightface`` (the procedure that chose dlib's, people.py).
INSIGHTFACE_SAME_COSINE = 0.28
INSIGHTFACE_DIFFERENT_COSINE = 0.20


def cosine_to_distance(cosine: float) -> float:
    """The Euclidean distance between two unit vectors whose cosine similarity is ``cosine``."""
    return math.sqrt(max(0.0, 2.0 - 2.0 * float(cosine)))


def distance_to_cosine(distance: float) -> float:
    """The cosine similarity of two unit vectors ``distance`` apart."""
    return 1.0 - float(distance) ** 2 / 2.0


INSIGHTFACE_THRESHOLD = round(cosine_to_distance(INSIGHTFACE_SAME_COSINE), 3)  # 1.2
INSIGHTFACE_MARGIN = round(
    cosine_to_distance(INSIGHTFACE_DIFFERENT_COSINE) - cosine_to_distance(INSIGHTFACE_SAME_COSINE), 3
)  # 0.065


def insightface_recognition_file(pack: str = DEFAULT_INSIGHTFACE_PACK) -> Path:
    """The pack's recognition model, or :class:`EmbedderUnavailable` naming the folder and file expected.

    A known pack (:data:`INSIGHTFACE_RECOGNITION_FILES`) must hold its own file. Any other pack folder
    must hold exactly one ``.onnx`` file that is not a detection, landmark or attribute model.
    """
    folder = insightface_pack_dir(pack)
    expected = INSIGHTFACE_RECOGNITION_FILES.get(pack)
    if expected and (folder / expected).is_file():
        return folder / expected
    if not expected and folder.is_dir():
        candidates = sorted(
            p for p in folder.glob("*.onnx") if p.is_file() and not p.name.startswith(INSIGHTFACE_OTHER_TASKS)
        )
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates)
            raise EmbedderUnavailable(
                f"the insightface embedder cannot tell which model of {folder} is the recognition model "
                f"({names}); keep only one, or use a known pack ({', '.join(INSIGHTFACE_RECOGNITION_FILES)})"
            )
    wanted = expected or "its recognition model (an .onnx file other than det_*, scrfd_*, 1k3d68, 2d106det, genderage)"
    state = "is empty or lacks it" if folder.is_dir() else "does not exist"
    raise EmbedderUnavailable(
        f"the insightface embedder needs the '{pack}' model pack on disk: expected {wanted} in {folder} "
        f"(that folder {state}). facerestore never downloads it; unzip {pack}.zip from insightface's model "
        f"releases into that folder, or set INSIGHTFACE_HOME to the folder that contains models/{pack}"
    )


def _check_onnxruntime() -> None:
    if importlib.util.find_spec("onnxruntime") is None:
        raise EmbedderUnavailable("the insightface embedder needs onnxruntime: pip install onnxruntime")


def arcface_template(size: int = ARCFACE_SIZE) -> np.ndarray:
    """ArcFace's template for a ``size`` input, scaled the way insightface's ``norm_crop`` scales it."""
    if size % 112 == 0:
        return ARCFACE_TEMPLATE_112 * (size / 112)
    if size % 128 == 0:  # 128-based inputs: the 112 template scaled, then moved 8 (scaled) pixels right
        ratio = size / 128
        template = ARCFACE_TEMPLATE_112 * ratio
        template[:, 0] += 8 * ratio
        return template
    raise ValueError(f"ArcFace inputs are multiples of 112 or 128 pixels, not {size}")


def arcface_matrix(landmarks68: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """2x3 similarity from crop pixels onto ArcFace's template: eye centres, nose tip 30, mouth 48/54."""
    points = np.asarray(landmarks68, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("landmarks contain NaN or infinite values")
    return similarity_transform(five_points_from_68(points).astype(np.float64), arcface_template(size))


def align_arcface(aligned_rgb: np.ndarray, landmarks68: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` ArcFace crop of a face in our 512 crop (uint8 RGB).

    The 512 crop's face is about 3.5 times larger than ArcFace's, so ``warp_to_face`` area-shrinks it
    before the bilinear warp (a plain bilinear warp at that scale would alias fine texture into the network).
    """
    image = contiguous_rgb8(aligned_rgb)
    return warp_to_face(image, arcface_matrix(landmarks68, size), size)


_SESSION_LOCK = threading.Lock()
_SESSIONS: dict[tuple[str, str, int | None], object] = {}


def _session(path: Path, device: str, threads: int | None):
    """One onnxruntime session per model file, device and thread count in the process."""
    key = (str(path), device, threads)
    with _SESSION_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            import onnxruntime as ort

            session = ort.InferenceSession(
                str(path), sess_options=onnx_session_options(threads), providers=onnx_providers(device)
            )
            _SESSIONS[key] = session
    return session


class InsightFaceEmbedder:
    """ArcFace embeddings from an insightface model pack on disk, through onnxruntime (thread-safe).

    Each face: the 5 points from its 68 landmarks, a similarity warp onto ArcFace's template at the
    model's input size (112), RGB scaled to [-1, 1] (:data:`ARCFACE_MEAN`, :data:`ARCFACE_STD`), NCHW;
    the output is L2-normalised. The routing defaults below are insightface's published guidance, NOT
    measured here (see :data:`INSIGHTFACE_SAME_COSINE`).
    """

    dimension = 512
    threshold = INSIGHTFACE_THRESHOLD
    margin = INSIGHTFACE_MARGIN
    #: A reference is an outlier when it is not "the same person" (insightface's verdict) as the
    #: direction of the other references' median: the same unmeasured guidance as the threshold.
    outlier_distance = INSIGHTFACE_THRESHOLD
    #: Unit vectors compare as directions: centroids (and the outlier median) are rescaled to length 1.
    unit_vectors = True
    input_mean = ARCFACE_MEAN
    input_std = ARCFACE_STD

    def __init__(
        self,
        pack: str = DEFAULT_INSIGHTFACE_PACK,
        *,
        model_path: Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        _check_onnxruntime()
        self.pack = pack
        self.name = f"insightface:{pack}"
        self.model_path = Path(model_path) if model_path else insightface_recognition_file(pack)
        self._session = _session(self.model_path, device, threads)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shape = list(inputs[0].shape)
        out_shape = list(outputs[0].shape) if len(outputs) == 1 else []
        # a recognition model: one square RGB input of a size ArcFace alignment knows, one N x D output
        square = len(shape) == 4 and shape[1] == 3 and isinstance(shape[2], int) and shape[2] == shape[3]
        if not square or (shape[2] % 112 and shape[2] % 128) or len(out_shape) != 2:
            raise EmbedderUnavailable(
                f"{self.model_path} is not a face recognition model: input {shape}, {len(outputs)} output(s) "
                f"{out_shape or ''} (expected one [N, 3, 112, 112] input and one [N, D] output)"
            )
        self.input_size = int(shape[2])
        self._input_name = inputs[0].name
        self._output_name = outputs[0].name
        # A graph exported with a fixed batch takes exactly that many faces per call.
        self._batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        if isinstance(out_shape[1], int):
            self.dimension = out_shape[1]

    def embed(self, aligned_rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """(512,) float32 unit-length embedding of the face in a crop, located by its 68 landmarks."""
        return self.embed_many([aligned_rgb], [landmarks68])[0]

    def embed_many(self, aligned_rgbs: Sequence[np.ndarray], landmarks68: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 512) float32 unit-length embeddings, one onnxruntime call per batch."""
        if len(aligned_rgbs) != len(landmarks68):
            raise ValueError(f"{len(aligned_rgbs)} crops but {len(landmarks68)} landmark sets")
        if len(aligned_rgbs) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        pairs = zip(aligned_rgbs, landmarks68, strict=True)
        faces = np.stack([align_arcface(crop, points, self.input_size) for crop, points in pairs])
        blob = self.preprocess(faces)
        step = self._batch or len(blob)
        out = []
        for start in range(0, len(blob), step):
            chunk = blob[start : start + step]
            if len(chunk) < step:  # a fixed-batch graph: pad the last call, drop the padding after
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            result = self._session.run([self._output_name], {self._input_name: chunk})[0]
            out.append(np.asarray(result, dtype=np.float32).reshape(len(chunk), -1))
        vectors = np.concatenate(out)[: len(blob)]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    def preprocess(self, faces: np.ndarray) -> np.ndarray:
        """NxSxSx3 uint8 RGB ArcFace crops -> the model's Nx3xSxS float32 input."""
        blob = (faces.astype(np.float32) - np.float32(self.input_mean)) / np.float32(self.input_std)
        return np.ascontiguousarray(blob.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------------------------------
# registry

EMBEDDERS = ("auto", "dlib", "insightface")


def _split_name(name: str) -> tuple[str, str | None]:
    base, _, option = (name or "auto").strip().lower().partition(":")
    if base not in EMBEDDERS or (option and base != "insightface"):
        raise ValueError(
            f"unknown face embedder {name!r}; known: {', '.join(EMBEDDERS)} (insightface also takes a model pack, "
            "e.g. insightface:buffalo_s)"
        )
    return base, option or None


def _check_dlib() -> None:
    if importlib.util.find_spec("dlib") is None:
        raise EmbedderUnavailable("the dlib embedder needs dlib: pip install dlib-bin")
    try:
        dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")
    except ModelFileError as exc:
        raise EmbedderUnavailable(f"the dlib embedder needs dlib's model files: {exc}") from exc


def _check_insightface(pack: str) -> Path:
    _check_onnxruntime()
    return insightface_recognition_file(pack)


def resolve_embedder(name: str = "auto") -> str:
    """The canonical name ``name`` stands for (``dlib`` or ``insightface:<pack>``), without loading a model.

    ``auto`` is insightface's default pack (buffalo_l) when its recognition model and onnxruntime are
    here, else dlib. The canonical name is what dictionaries are cached under.
    """
    base, pack = _split_name(name)
    if base == "auto":
        try:
            _check_insightface(DEFAULT_INSIGHTFACE_PACK)
        except EmbedderUnavailable:
            return "dlib"
        return f"insightface:{DEFAULT_INSIGHTFACE_PACK}"
    if base == "insightface":
        return f"insightface:{pack or DEFAULT_INSIGHTFACE_PACK}"
    return "dlib"


def create_embedder(name: str = "auto", *, device: str = "cpu", threads: int | None = None):
    """``dlib``, ``insightface[:pack]`` (:class:`EmbedderUnavailable` when its pack is missing) or ``auto``."""
    canonical = resolve_embedder(name)
    if canonical == "dlib":
        _check_dlib()
        return default_embedder()
    pack = canonical.partition(":")[2]
    _check_insightface(pack)
    return InsightFaceEmbedder(pack, device=device, threads=threads)


def available_embedders() -> dict[str, str]:
    """Each embedder mapped to ``"ok (...)"`` or why it cannot run, and what ``auto`` picks (for ``doctor``).

    Only checks that packages and files are present; nothing is loaded or downloaded.
    """
    status = {}
    try:
        _check_dlib()
        status["dlib"] = f"ok (threshold {DLIB_THRESHOLD}, margin {DLIB_MARGIN}; measured)"
    except EmbedderUnavailable as exc:
        status["dlib"] = str(exc)
    try:
        path = _check_insightface(DEFAULT_INSIGHTFACE_PACK)
        status["insightface"] = (
            f"ok, {path} (threshold {INSIGHTFACE_THRESHOLD}, margin {INSIGHTFACE_MARGIN}; insightface's guidance, "
            "not measured: bench/routing.py --embedder insightface)"
        )
    except EmbedderUnavailable as exc:
        status["insightface"] = str(exc)
    status["auto"] = resolve_embedder("auto")
    return status


@lru_cache(maxsize=1)
def default_embedder() -> FaceEmbedder:
    """One shared dlib embedder per process."""
    return FaceEmbedder()


def embedding_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance, dlib's convention: under ~0.6 means probably the same person."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in size: {a.shape} vs {b.shape}")
    return float(np.linalg.norm(a - b))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two embeddings (1 = same direction); 0 when either is all zeros."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in size: {a.shape} vs {b.shape}")
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else 0.0


__all__ = [
    "ARCFACE_TEMPLATE_112",
    "EMBEDDERS",
    "EMBEDDING_SIZE",
    "EmbedderUnavailable",
    "FaceEmbedder",
    "InsightFaceEmbedder",
    "align_arcface",
    "arcface_matrix",
    "available_embedders",
    "cosine_similarity",
    "cosine_to_distance",
    "create_embedder",
    "default_embedder",
    "distance_to_cosine",
    "embedding_distance",
    "insightface_recognition_file",
    "resolve_embedder",
]
