"""The face-quality measures of ``bench/quality.py`` (``bench/quality_metrics.py``) on synthetic cases.

The bench is a script folder, not a package, so the module is loaded from its file. The face is
scikit-image's astronaut crop resized to 512 (a real face with real texture), which needs no shared data.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_path

_PATH = Path(__file__).resolve().parent.parent / "bench" / "quality_metrics.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_quality_metrics", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


qm = _load()


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A 512 face crop: the astronaut's head (rows 0–220, columns 150–370 of the 512 photo)."""
    from skimage import data

    crop = data.astronaut()[0:220, 150:370]
    return cv2.resize(crop, (512, 512), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    from facerestore_cli.paste import face_mask

    return face_mask(None) > 0.5  # the template ellipse: what the bench uses when landmarks fail


def test_detail_ratio_is_one_for_identical(face):
    assert qm.detail_ratio(face, face.copy()) == pytest.approx(1.0)


def test_detail_ratio_below_one_when_blurred(face):
    blurred = cv2.GaussianBlur(face, (0, 0), 2.0)
    assert qm.detail_ratio(blurred, face) < 0.5


def test_detail_ratio_above_one_when_sharpened(face):
    soft = cv2.GaussianBlur(face.astype(np.float32), (0, 0), 1.5)
    sharpened = np.clip(face + 1.5 * (face - soft), 0, 255).astype(np.uint8)  # unsharp mask
    assert qm.detail_ratio(sharpened, face) > 1.5


def test_detail_ratio_looks_at_the_centre_only(face):
    """Background texture outside the central 256x256 must not count."""
    noisy_border = face.copy()
    rng = np.random.default_rng(0)
    noisy_border[:100] = rng.integers(0, 256, noisy_border[:100].shape, dtype=np.uint8)
    assert qm.detail_ratio(noisy_border, face) == pytest.approx(1.0)
    assert qm.centre(face).shape == (256, 256, 3)


def test_colour_error_zero_for_identical(face, mask):
    assert qm.colour_error_share(face, face.copy(), mask) == 0.0


def test_colour_error_zero_for_a_global_tone_shift(face, mask):
    """A warmer, darker copy (white balance and exposure off) is forgiven: only local errors count."""
    shifted = face.astype(np.float64) * np.array([0.95, 0.88, 0.8]) + np.array([12.0, 6.0, 0.0])
    shifted = np.clip(np.rint(shifted), 0, 255).astype(np.uint8)
    assert qm.colour_error_share(shifted, face, mask) == 0.0
    # not a vacuous pass: compared directly, a fifth of the face differs by ΔE > 10
    from skimage.color import deltaE_ciede2000, rgb2lab

    raw = deltaE_ciede2000(rgb2lab(face)[mask], rgb2lab(shifted)[mask])
    assert np.mean(raw > qm.COLOUR_ERROR_THRESHOLD) > 0.1


def test_colour_error_counts_speckles_of_wrong_colour(face, mask):
    speckled = face.copy()
    rng = np.random.default_rng(1)
    ys, xs = np.nonzero(mask)
    pick = rng.choice(len(ys), size=400, replace=False)
    for y, x in zip(ys[pick], xs[pick], strict=True):
        speckled[y : y + 3, x : x + 3] = (40, 200, 60)  # green 3x3 spots on skin
    share = qm.colour_error_share(speckled, face, mask)
    assert 0.005 < share < 0.2
    soft_mask = mask.astype(np.float32) * 0.9  # a soft mask is thresholded at 0.5
    assert qm.colour_error_share(speckled, face, soft_mask) == pytest.approx(share)


def test_colour_error_rejects_empty_mask(face):
    with pytest.raises(ValueError, match="empty"):
        qm.colour_error_share(face, face, np.zeros(face.shape[:2], bool))


def test_rank_is_one_when_query_is_in_gallery():
    rng = np.random.default_rng(2)
    gallery = rng.standard_normal((50, 128))
    truth = np.array([0, 17, 49])
    cos, ranks = qm.identity_ranks(gallery[truth], gallery, truth)
    assert ranks.tolist() == [1, 1, 1]
    assert cos == pytest.approx(1.0)


def test_rank_counts_more_similar_impostors():
    gallery = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    query = np.array([[0.6, 0.8]])  # closest to item 1, then 2, then 0
    cos, ranks = qm.identity_ranks(query, gallery, np.array([0]))
    assert ranks.tolist() == [3]
    assert cos[0] == pytest.approx(0.6)
    assert qm.identity_ranks(query, gallery, np.array([1]))[1].tolist() == [1]


def test_cosine_matrix_handles_zero_vectors():
    sims = qm.cosine_matrix(np.zeros((1, 4)), np.eye(4))
    assert np.all(sims == 0)


def test_detail_ratio_on_a_london_photo():
    """On a real aligned crop (shared data), a x8 bicubic round trip keeps a small fraction of the detail."""
    pairs = shared_path("data", "eval-dev", "london-pairs")
    photo = sorted(p for p in pairs.iterdir() if p.is_dir())[0] / "smiling.jpg"
    rgb = cv2.imread(str(photo))[:, :, ::-1]
    small = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA)
    back = cv2.resize(small, (512, 512), interpolation=cv2.INTER_CUBIC)
    assert qm.detail_ratio(back, rgb) < 0.3
