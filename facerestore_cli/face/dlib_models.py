"""dlib's model files and its 68-point shape predictor: the leaf that every face stage using dlib shares.

``face_recognition_models`` ships the files; its ``__init__`` imports ``pkg_resources`` (gone from
recent setuptools), so they are found through the import system without importing it.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np


class ModelFileError(RuntimeError):
    """A model file that ships with a dependency could not be found."""


@cache
def dlib_model_path(name: str) -> Path:
    """Path of one of the dlib models shipped by ``face_recognition_models``."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.origin:
        raise ModelFileError(
            "face_recognition_models is not installed; it ships dlib's landmark and embedding models "
            "(pip install face_recognition_models)"
        )
    path = Path(spec.origin).parent / "models" / name
    if not path.is_file():
        raise ModelFileError(f"{path} is missing from the face_recognition_models package")
    return path


class DlibShapePredictor:
    """dlib's 68-point predictor on any box of an RGB uint8 image (thread-safe; dlib's is not)."""

    def __init__(self, model_path: Path | None = None) -> None:
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(
            str(model_path or dlib_model_path("shape_predictor_68_face_landmarks.dat"))
        )
        self._lock = threading.Lock()

    def __call__(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """(68, 2) float64 ``x y`` points of the face in the dlib rectangle ``box`` (left, top, right, bottom)."""
        rect = self._dlib.rectangle(*box)
        with self._lock:
            shape = self._predictor(rgb, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


@cache
def shape_predictor_68() -> Callable[[np.ndarray, tuple[int, int, int, int]], np.ndarray]:
    """One shared 68-point predictor per process.

    The numpy copy of ``face.shape_model`` gives dlib's points exactly and loads in milliseconds instead
    of dlib's 1-1.5 s; dlib itself is the fallback when no copy can be made (e.g. no writable cache).
    """
    from facerestore_cli.face.shape_model import cached_shape_model

    model = cached_shape_model()
    return model if model is not None else DlibShapePredictor()
