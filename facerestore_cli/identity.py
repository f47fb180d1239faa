"""Who a face is: dlib's 128-d face embeddings (ResNet, ``dlib_face_recognition_resnet_model_v1.dat``).

We embed the *aligned* 512 crops with the 68 landmarks found on them (``landmarks.py``), so the same
points drive DMDNet's component boxes and the embedding. dlib re-aligns each face to its own 150 px
chip from those points; how we aligned the crop only has to keep the whole face inside it.

Distances follow dlib's convention: Euclidean, and two photos whose embeddings are closer than about
0.6 are usually the same person (dlib reports 99.38% on LFW at that threshold).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from .landmarks import ALIGNED_FACE_BOX, ALIGNED_SIZE, dlib_model_path

EMBEDDING_SIZE = 128
#: dlib's same-person threshold on the Euclidean distance between two embeddings.
SAME_PERSON_DISTANCE = 0.6
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


class FaceEmbedder:
    """dlib's 128-d face recognition network (thread-safe; the model is loaded once per process)."""

    def __init__(self, model_path: Path | None = None, *, num_jitters: int = 0) -> None:
        import dlib

        self._dlib = dlib
        self.model_path = Path(model_path or dlib_model_path("dlib_face_recognition_resnet_model_v1.dat"))
        self.num_jitters = int(num_jitters)
        self._model, self._lock = _model_and_lock(self.model_path)

    def embed(self, aligned_rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """(128,) float32 embedding of the face in a crop, located by its 68 landmarks."""
        image = _as_uint8_rgb(aligned_rgb)
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
            image = _as_uint8_rgb(crop)
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
        sx, sy = w / ALIGNED_SIZE, h / ALIGNED_SIZE
        left, top, right, bottom = ALIGNED_FACE_BOX
        rect = dlib.rectangle(round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))
        parts = [dlib.point(round(float(x)), round(float(y))) for x, y in points]
        return dlib.full_object_detection(rect, parts)


def _as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 RGB crop, got {image.dtype}")
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB crop, got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


@lru_cache(maxsize=1)
def default_embedder() -> FaceEmbedder:
    """One shared embedder per process."""
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
    "EMBEDDING_SIZE",
    "SAME_PERSON_DISTANCE",
    "FaceEmbedder",
    "cosine_similarity",
    "default_embedder",
    "embedding_distance",
]
