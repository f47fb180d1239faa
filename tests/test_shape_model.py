"""The numpy copy of dlib's 68-point shape predictor gives dlib's points, exactly, and loads fast."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from facerestore_cli.face.dlib_models import DlibShapePredictor, dlib_model_path
from facerestore_cli.face.landmarks import ALIGNED_FACE_BOX
from facerestore_cli.face.shape_model import (
    MODEL_NAME,
    ShapeModel,
    ShapeModelError,
    cached_shape_model,
    parse_dlib_model,
)


@pytest.fixture(scope="module")
def model() -> ShapeModel:
    found = cached_shape_model()
    assert found is not None, "the numpy shape model could not be built or loaded"
    return found


@pytest.fixture(scope="module")
def dlib_predictor() -> DlibShapePredictor:
    return DlibShapePredictor()


def _photos(limit: int) -> list[Path]:
    shared = os.environ.get("FACERESTORE_SHARED")
    if not shared:
        pytest.skip("FACERESTORE_SHARED is not set: the real faces of the shared data are needed")
    root = Path(shared) / "data"
    assert root.is_dir(), f"FACERESTORE_SHARED={shared} has no data/ folder"
    files = sorted(
        f for f in glob.glob(str(root / "**" / "*"), recursive=True) if f.lower().endswith((".png", ".jpg", ".jpeg"))
    )
    rng = np.random.default_rng(7)
    rng.shuffle(files)
    return [Path(f) for f in files[:limit]]


def test_same_points_as_dlib_on_real_photos(model: ShapeModel, dlib_predictor: DlibShapePredictor) -> None:
    """Aligned crops with the engine's box, and random boxes anywhere (past the edges too)."""
    rng = np.random.default_rng(3)
    compared = 0
    for path in _photos(60):
        bgr = cv2.imread(str(path))
        if bgr is None:
            continue
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        h, w = rgb.shape[:2]
        boxes = [ALIGNED_FACE_BOX] if (h, w) == (512, 512) else []
        for _ in range(3):
            side = int(rng.integers(20, max(21, min(h, w))))
            left, top = int(rng.integers(-side // 3, w - side // 2)), int(rng.integers(-side // 3, h - side // 2))
            boxes.append((left, top, left + side, top + side))
        for box in boxes:
            np.testing.assert_array_equal(model(rgb, box), dlib_predictor(rgb, box), err_msg=f"{path.name} {box}")
            compared += 1
    assert compared >= 150


def test_grey_images_too(model: ShapeModel, dlib_predictor: DlibShapePredictor) -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (300, 300), dtype=np.uint8)
    rgb = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(model(grey, (40, 40, 260, 260)), dlib_predictor(rgb, (40, 40, 260, 260)))


def test_a_second_process_finds_the_copy(model: ShapeModel) -> None:
    """A second process memory-maps the copy instead of parsing 100 MB again (build=False: no parsing)."""
    import subprocess
    import sys

    code = (
        "from facerestore_cli.face.shape_model import cached_shape_model\n"
        "print(cached_shape_model(build=False) is not None)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


def test_truncated_or_foreign_files_are_refused(tmp_path: Path) -> None:
    source = dlib_model_path(MODEL_NAME).read_bytes()
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(source[:2_000_000])
    with pytest.raises(ShapeModelError):
        parse_dlib_model(truncated)
    foreign = tmp_path / "foreign.dat"
    foreign.write_bytes(b"\x00" * 64 + source[:1000])
    with pytest.raises(ShapeModelError):
        parse_dlib_model(foreign)


def test_no_copy_of_a_bad_file_and_no_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file never seen before that is no model, with a cache that is a file: None (dlib is the fallback)."""
    from facerestore_cli.face import shape_model

    copy = tmp_path / "copy" / MODEL_NAME
    copy.parent.mkdir()
    copy.write_bytes(b"\x00" * 16)  # a different file: its copy is not in any cache
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("x")
    monkeypatch.setenv("FACERESTORE_CACHE", str(blocker))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert shape_model.cached_shape_model(copy) is None
