"""Face detectors: RetinaFace (default), dlib HOG/CNN, insightface's optional boundary."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import sys
import types

import cv2
import numpy as np
import pytest
from conftest import shared_path
from skimage import data

from facerestore_cli.face import detect
from facerestore_cli.face.detect import (
    DetectorUnavailable,
    Face,
    available_detectors,
    box_iou,
    create_detector,
    nms,
)

WHOLE = ("data", "eval-dev", "realworld", "whole")


@pytest.fixture(scope="module")
def retinaface():
    return create_detector("retinaface")


@pytest.fixture(scope="module")
def hog():
    return create_detector("hog")


@pytest.fixture(scope="module")
def astronaut_face(retinaface, astronaut_rgb) -> Face:
    faces = retinaface.detect(astronaut_rgb)
    assert len(faces) == 1, faces
    return faces[0]


def _load_rgb(path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _assert_plausible_points(face: Face) -> None:
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = face.landmarks
    x1, y1, x2, y2 = face.box
    assert np.all((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2)), (face.box, face.landmarks)
    assert np.all((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2)), (face.box, face.landmarks)
    assert lex < nx < rex and lmx < rmx, "image-left points must come first"
    assert max(ley, rey) < ny < min(lmy, rmy), "eyes above the nose above the mouth"


# -------------------------------------------------------------------------------------------- Face


def test_face_is_immutable_float32_with_derived_sizes():
    face = Face(box=[10, 20, 110, 160], score=np.float64(0.9), landmarks=np.arange(10).reshape(5, 2))
    assert face.box.dtype == np.float32 and face.box.shape == (4,)
    assert face.landmarks.dtype == np.float32 and face.landmarks.shape == (5, 2)
    assert type(face.score) is float
    assert (face.width, face.height, face.size, face.center) == (100.0, 140.0, 140.0, (60.0, 90.0))
    with pytest.raises(ValueError):
        face.box[0] = 0  # read-only: a frozen dataclass whose arrays could change would not be frozen
    with pytest.raises(AttributeError):
        face.score = 1.0  # type: ignore[misc]
    assert face != Face(face.box, face.score, face.landmarks)  # identity, not ambiguous array compare
    assert len({face, face}) == 1


def test_nms_and_iou():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], float)
    scores = np.array([0.8, 0.9, 0.5, 0.7])
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.4).size == 0
    iou = box_iou(boxes[:1], boxes)
    assert iou[0, 0] == pytest.approx(1.0) and iou[0, 2] == 0.0
    assert iou[0, 1] == pytest.approx(81 / 119)


# -------------------------------------------------------------------------------------- RetinaFace


def test_retinaface_finds_the_astronaut(astronaut_face):
    face = astronaut_face
    assert face.score > 0.9
    assert 80 < face.size < 160
    cx, cy = face.center
    assert 200 < cx < 250 and 90 < cy < 140
    _assert_plausible_points(face)


def test_retinaface_downscales_big_photos_and_maps_back(retinaface, astronaut_rgb, astronaut_face):
    n = 3000
    big = cv2.resize(astronaut_rgb, (n, n), interpolation=cv2.INTER_CUBIC)
    seen = []
    session = retinaface._session

    class Spy:  # record what the network was given
        def run(self, names, feeds):
            seen.append(next(iter(feeds.values())).shape)
            return session.run(names, feeds)

    retinaface._session = Spy()
    try:
        faces = retinaface.detect(big)
    finally:
        retinaface._session = session
    assert seen and max(seen[0][2:]) <= 1600 + 31, seen
    assert len(faces) == 1
    s = n / astronaut_rgb.shape[0]
    box = (faces[0].box + 0.5) / s - 0.5
    points = (faces[0].landmarks + 0.5) / s - 0.5
    # The network sees the face at 3x the size, so it answers slightly differently; the mapping must
    # still land on the same face in the original's coordinates.
    assert np.abs(points - astronaut_face.landmarks).max() < 3.0
    assert np.abs(box - astronaut_face.box).max() < 6.0

    # Exact mapping: the same detection done by hand on the 1600 px copy, then scaled up.
    small = cv2.resize(big, (1600, 1600), interpolation=cv2.INTER_AREA)
    ref = retinaface.detect(small)[0]
    k = n / 1600
    np.testing.assert_allclose(faces[0].landmarks, (ref.landmarks + 0.5) * k - 0.5, atol=0.02)
    np.testing.assert_allclose(faces[0].box, (ref.box + 0.5) * k - 0.5, atol=0.02)


def test_retinaface_points_follow_a_mirrored_photo(retinaface, astronaut_rgb, astronaut_face):
    """Mirroring swaps which eye is image-left; the points must swap with it and land back in place."""
    w = astronaut_rgb.shape[1]
    mirrored = retinaface.detect(np.ascontiguousarray(astronaut_rgb[:, ::-1]))[0]
    back = mirrored.landmarks[[1, 0, 2, 4, 3]].copy()
    back[:, 0] = w - 1 - back[:, 0]
    np.testing.assert_allclose(back, astronaut_face.landmarks, atol=2.0)


def test_no_face_gives_empty_list(retinaface, hog):
    for image in (data.coffee(), np.full((300, 400, 3), 128, np.uint8)):
        assert retinaface.detect(image) == []
        assert hog.detect(image) == []


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((5, 7), np.uint8),
        np.zeros((40, 3, 4), np.uint8),
        np.full((33, 65, 1), 200, np.uint8),
    ],
    ids=["1px", "grey-5x7", "rgba-40x3", "hxwx1"],
)
def test_tiny_and_odd_inputs_do_not_crash(retinaface, hog, image):
    assert retinaface.detect(image) == []
    assert hog.detect(image) == []


def test_cnn_tiny_input_does_not_crash():
    assert create_detector("cnn").detect(np.zeros((8, 8, 3), np.uint8)) == []


def test_grey_and_16bit_photos(retinaface, astronaut_rgb, astronaut_face):
    grey = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)
    faces = retinaface.detect(grey)
    assert len(faces) == 1 and np.abs(faces[0].landmarks - astronaut_face.landmarks).max() < 5
    deep = retinaface.detect(astronaut_rgb.astype(np.uint16) * 257)
    np.testing.assert_allclose(deep[0].landmarks, astronaut_face.landmarks, atol=1e-3)
    with pytest.raises(TypeError):
        retinaface.detect(astronaut_rgb.astype(np.float32))


def test_score_threshold_is_applied(astronaut_rgb):
    strict = create_detector("retinaface", score_threshold=0.9999999)
    assert strict.detect(astronaut_rgb) == []


def test_cuda_request_without_cuda_falls_back_to_cpu(astronaut_rgb, caplog, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING, logger="facerestore_cli.face.detect"):
        det = create_detector("retinaface", device="cuda", threads=1)
    assert "CPU" in caplog.text
    assert len(det.detect(astronaut_rgb)) == 1


# ---------------------------------------------------------------------------------------- dlib


def test_hog_finds_astronaut_with_plausible_points(hog, astronaut_rgb, astronaut_face):
    faces = hog.detect(astronaut_rgb)
    assert faces, "HOG found nothing"
    best = faces[0]
    assert box_iou(best.box, astronaut_face.box)[0, 0] > 0.4
    _assert_plausible_points(best)
    assert np.linalg.norm(best.landmarks[:2] - astronaut_face.landmarks[:2], axis=1).max() < 10
    assert np.linalg.norm(best.landmarks - astronaut_face.landmarks, axis=1).max() < 15


def test_cnn_finds_face_on_small_crop(retinaface, astronaut_rgb):
    crop = np.ascontiguousarray(astronaut_rgb[20:220, 120:320])  # ~200 px: the CNN is slow on a CPU
    ref = retinaface.detect(crop)
    faces = create_detector("cnn").detect(crop)
    assert len(faces) == 1 and len(ref) == 1
    _assert_plausible_points(faces[0])
    assert np.linalg.norm(faces[0].landmarks[:2] - ref[0].landmarks[:2], axis=1).max() < 10


def test_dlib_boxes_map_back_from_the_downscaled_copy(astronaut_rgb):
    hog_small = create_detector("hog", max_side=256)
    big = cv2.resize(astronaut_rgb, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    faces = hog_small.detect(big)
    assert faces
    cx, cy = faces[0].center
    assert 400 < cx < 500 and 180 < cy < 280  # the astronaut's face, in the 1024 px photo's pixels


# -------------------------------------------------------------------------------------- registry


def test_unknown_detector_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"retinaface.*hog.*cnn.*insightface"):
        create_detector("mtcnn")
    with pytest.raises(ValueError):
        create_detector("hog:foo")
    with pytest.raises(ValueError, match="max_side"):
        create_detector("retinaface", max_side=8)


def test_available_detectors_reports_each_one():
    status = available_detectors()
    assert set(status) == {"retinaface", "hog", "cnn", "insightface"}
    assert status["retinaface"] == status["hog"] == status["cnn"] == "ok"
    assert status["insightface"] == "ok" or "insightface" in status["insightface"]


# ---------------------------------------------------------------------------------- insightface

_real_find_spec = importlib.util.find_spec


def _pretend_insightface(monkeypatch, installed: bool) -> None:
    def find_spec(name, *args, **kwargs):
        if name == "insightface":
            return importlib.machinery.ModuleSpec("insightface", None) if installed else None
        return _real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(detect.importlib.util, "find_spec", find_spec)


def test_insightface_without_the_package(monkeypatch):
    _pretend_insightface(monkeypatch, installed=False)
    with pytest.raises(DetectorUnavailable, match=r"pip install 'facerestore-cli\[insightface\]'"):
        create_detector("insightface")
    assert "facerestore-cli[insightface]" in available_detectors()["insightface"]


def test_insightface_without_the_model_pack_names_folder_and_files(monkeypatch, tmp_path):
    _pretend_insightface(monkeypatch, installed=True)
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    with pytest.raises(DetectorUnavailable) as err:
        create_detector("insightface")
    message = str(err.value)
    assert str(tmp_path / "models" / "buffalo_l") in message
    assert "det_10g.onnx" in message and "download" in message
    assert str(tmp_path / "models" / "buffalo_l") in available_detectors()["insightface"]
    (tmp_path / "models" / "buffalo_s").mkdir(parents=True)
    with pytest.raises(DetectorUnavailable, match=r"det_500m\.onnx.*buffalo_s"):
        create_detector("insightface:buffalo_s")


def test_insightface_with_a_pack_uses_its_detector_and_landmarks(monkeypatch, tmp_path):
    """insightface is a boundary we do not own: a stand-in model checks our side of it (paths, BGR,
    coordinate mapping, threshold, order) without the package."""
    pack = tmp_path / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    (pack / "det_10g.onnx").write_bytes(b"stand-in")
    _pretend_insightface(monkeypatch, installed=True)
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    calls = {}

    class FakeSCRFD:
        taskname = "detection"

        def prepare(self, ctx_id, **kwargs):
            calls["prepare"] = (ctx_id, kwargs)

        def detect(self, img, input_size=None, max_num=0, metric="default"):
            calls["pixel"] = img[0, 0].tolist()
            calls["shape"] = img.shape
            dets = np.array([[10, 10, 50, 60, 0.6], [100, 20, 180, 120, 0.95], [0, 0, 5, 5, 0.2]], np.float32)
            kps = np.tile(np.array([[20, 30], [40, 30], [30, 40], [22, 50], [38, 50]], np.float32), (3, 1, 1))
            return dets, kps

    def get_model(path, **kwargs):
        calls["path"] = path
        return FakeSCRFD()

    fake = types.ModuleType("insightface")
    fake.model_zoo = types.SimpleNamespace(get_model=get_model)
    monkeypatch.setitem(sys.modules, "insightface", fake)

    det = create_detector("insightface", max_side=100, score_threshold=0.5)
    image = np.zeros((200, 400, 3), np.uint8)
    image[:, :, 0] = 255  # red in RGB
    faces = det.detect(image)
    assert calls["path"] == str(pack / "det_10g.onnx")
    assert calls["pixel"] == [0, 0, 255], "insightface models take BGR"
    assert calls["shape"][:2] == (50, 100)  # downscaled to max_side first
    assert [round(f.score, 2) for f in faces] == [0.95, 0.6]
    np.testing.assert_allclose(faces[1].box, (np.array([10, 10, 50, 60]) + 0.5) * 4 - 0.5)
    np.testing.assert_allclose(faces[1].landmarks[0], (np.array([20, 30]) + 0.5) * 4 - 0.5)
    assert available_detectors()["insightface"] == "ok"


# ------------------------------------------------------------------------------ shared photos


@pytest.fixture(scope="module")
def whole_photos():
    paths = sorted(p for p in shared_path(*WHOLE).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    assert paths
    return paths


@pytest.mark.shared
def test_couple_photo_has_two_faces(retinaface, whole_photos):
    path = next(p for p in whole_photos if p.name == "serengil_couple.jpg")
    faces = retinaface.detect(_load_rgb(path))
    assert len(faces) == 2
    for face in faces:
        _assert_plausible_points(face)
    assert box_iou(faces[0].box, faces[1].box)[0, 0] == 0


@pytest.mark.shared
def test_group_selfie_retinaface_finds_more_than_hog(retinaface, hog, whole_photos):
    rgb = _load_rgb(next(p for p in whole_photos if p.name == "serengil_selfie-many-people.jpg"))
    rf, hg = retinaface.detect(rgb), hog.detect(rgb)
    # 7 people; the 7th is cut in half by the left edge (RetinaFace scores it 0.14). HOG finds 4.
    assert len(rf) >= 6
    assert len(rf) > len(hg)
    for face in hg:  # every face HOG finds, RetinaFace finds too
        assert box_iou(face.box, np.stack([f.box for f in rf])).max() > 0.3


@pytest.mark.shared
def test_no_duplicate_boxes_on_real_photos(retinaface, whole_photos):
    for path in whole_photos:
        faces = retinaface.detect(_load_rgb(path))
        assert faces, path.name
        assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
        if len(faces) > 1:
            iou = box_iou(np.stack([f.box for f in faces]), np.stack([f.box for f in faces]))
            np.fill_diagonal(iou, 0)
            assert iou.max() <= 0.5, path.name
