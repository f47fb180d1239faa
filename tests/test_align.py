"""Alignment onto the FFHQ template and back: transforms, region-only warps, the large-face path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerestore_cli.face.align import (
    FACE_SIZE,
    FFHQ_TEMPLATE_512,
    Region,
    align_face,
    estimate_transform,
    footprint,
    transform_points,
    warp_from_face,
    warp_to_face,
)


def similarity(angle: float, scale: float, centre: tuple[float, float]) -> np.ndarray:
    """crop -> photo: rotate by ``angle``, scale, and put the crop's centre at ``centre``."""
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    lin = np.array([[c, -s], [s, c]])
    t = np.asarray(centre, dtype=np.float64) - lin @ np.array([FACE_SIZE / 2, FACE_SIZE / 2])
    return np.concatenate([lin, t[:, None]], axis=1)


@pytest.mark.parametrize(
    ("angle", "scale", "centre"),
    [(0.0, 1.0, (256.0, 256.0)), (0.3, 0.25, (230.0, 120.0)), (-1.2, 3.5, (900.0, 400.0)), (2.8, 0.7, (50.0, 60.0))],
)
def test_transform_maps_the_five_points_onto_the_template(angle, scale, centre):
    to_photo = similarity(angle, scale, centre)
    points = transform_points(FFHQ_TEMPLATE_512, to_photo)
    matrix = estimate_transform(points)
    np.testing.assert_allclose(transform_points(points, matrix), FFHQ_TEMPLATE_512, atol=1e-6)
    np.testing.assert_allclose(matrix, cv2.invertAffineTransform(to_photo), atol=1e-9)
    # a similarity: equal singular values, no shear
    sv = np.linalg.svd(matrix[:, :2], compute_uv=False)
    assert sv[0] == pytest.approx(1 / scale) and sv[1] == pytest.approx(1 / scale)


def test_transform_of_a_smaller_crop_is_the_scaled_template():
    points = transform_points(FFHQ_TEMPLATE_512, similarity(0.4, 0.8, (300.0, 200.0)))
    np.testing.assert_allclose(
        transform_points(points, estimate_transform(points, size=256)), FFHQ_TEMPLATE_512 / 2, atol=1e-6
    )


def test_transform_never_reflects_and_fits_noisy_points_in_least_squares():
    rng = np.random.default_rng(3)
    points = transform_points(FFHQ_TEMPLATE_512, similarity(0.2, 0.5, (200.0, 200.0)))
    mirrored = points * np.array([-1.0, 1.0])  # a mirror image cannot be fitted by a similarity...
    assert np.linalg.det(estimate_transform(mirrored)[:, :2]) > 0  # ...and must not become a reflection
    noisy = points + rng.normal(0, 1.0, points.shape)
    matrix = estimate_transform(noisy)
    residual = np.linalg.norm(transform_points(noisy, matrix) - FFHQ_TEMPLATE_512, axis=1)
    assert residual.mean() < 6.0  # 1 photo px of noise at 2 crop px per photo px
    # least squares: nudging the solution does not lower the squared error
    best = (residual**2).sum()
    for delta in (np.array([[0, 0, 0.5], [0, 0, 0]]), np.array([[0.01, 0, 0], [0, 0.01, 0]])):
        worse = np.linalg.norm(transform_points(noisy, matrix + delta) - FFHQ_TEMPLATE_512, axis=1)
        assert (worse**2).sum() > best


def test_align_face_crop_and_matrix(astronaut_rgb):
    to_photo = similarity(0.1, 0.3, (225.0, 115.0))
    points = transform_points(FFHQ_TEMPLATE_512, to_photo)
    aligned = align_face(astronaut_rgb, points)
    assert aligned.image.shape == (FACE_SIZE, FACE_SIZE, 3) and aligned.image.dtype == np.uint8
    assert aligned.scale == pytest.approx(1 / 0.3)
    np.testing.assert_allclose(aligned.inverse, to_photo, atol=1e-9)
    # the crop's centre pixel is the photo pixel the transform says it is
    x, y = transform_points(np.array([[256.0, 256.0]]), to_photo)[0]
    expected = cv2.getRectSubPix(astronaut_rgb, (1, 1), (float(x), float(y)))[0, 0].astype(int)
    assert np.abs(aligned.image[256, 256].astype(int) - expected).max() <= 3


def _round_trip_error(photo: np.ndarray, to_photo: np.ndarray, shift: float = 0.0) -> float:
    matrix = cv2.invertAffineTransform(to_photo)
    crop = warp_to_face(photo, matrix)
    inverse = to_photo.copy()
    inverse[0, 2] += shift
    region = footprint(inverse, FACE_SIZE, photo.shape[:2])
    back = warp_from_face(crop.astype(np.float32), inverse, region)
    ys, xs = np.mgrid[region.y0 : region.y1, region.x0 : region.x1]
    in_crop = np.stack([xs, ys], -1).reshape(-1, 2) @ matrix[:, :2].T + matrix[:, 2]
    interior = ((in_crop > 16) & (in_crop < FACE_SIZE - 16)).all(axis=1).reshape(xs.shape)
    assert interior.sum() > 1000
    return float(np.abs(back - photo[region.slices()].astype(np.float32))[interior].mean())


@pytest.mark.parametrize("scale", [0.25, 0.6, 1.0])
def test_warp_to_face_then_back_recovers_the_photo(astronaut_rgb, scale):
    to_photo = similarity(0.2, scale, (230.0, 150.0))
    error = _round_trip_error(astronaut_rgb, to_photo)
    assert error < 3.5
    # and it is the geometry that is right: one pixel off is clearly worse
    assert _round_trip_error(astronaut_rgb, to_photo, shift=1.0) > error * 1.5


def test_large_face_is_area_shrunk_not_aliased():
    """A face 3x the crop: sampling 1-px stripes with bilinear taps aliases, area-shrinking does not."""
    stripes = np.zeros((2000, 2000, 3), np.uint8)
    stripes[:, ::2] = 255
    matrix = cv2.invertAffineTransform(similarity(0.1, 3.0, (1000.0, 1000.0)))
    crop = warp_to_face(stripes, matrix)
    inner = crop[64:448, 64:448].astype(np.float64)
    assert inner.mean() == pytest.approx(127.5, abs=3)
    assert inner.std() < 25
    naive = cv2.warpAffine(stripes, matrix, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR)
    assert naive[64:448, 64:448].std() > 50  # what the area path avoids


def test_large_face_crop_matches_the_small_face_crop(astronaut_rgb):
    """The same face 4x larger in the photo gives (nearly) the same crop."""
    big = cv2.resize(astronaut_rgb, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    to_small = similarity(0.15, 0.5, (230.0, 130.0))
    to_big = to_small * 4
    to_big[:, 2] += 1.5  # pixel centres: x' = 4 (x + 0.5) - 0.5
    small_crop = warp_to_face(astronaut_rgb, cv2.invertAffineTransform(to_small)).astype(np.float64)
    big_crop = warp_to_face(big, cv2.invertAffineTransform(to_big)).astype(np.float64)
    assert np.abs(small_crop - big_crop)[32:480, 32:480].mean() < 4.0


def test_footprint_covers_the_crop_and_is_clipped():
    to_photo = similarity(0.7, 0.4, (100.0, 80.0))
    region = footprint(to_photo, FACE_SIZE, (300, 400))
    corners = transform_points(np.array([[0, 0], [511, 0], [0, 511], [511, 511]], float), to_photo)
    inside = corners[(corners[:, 0] >= 0) & (corners[:, 1] >= 0) & (corners[:, 0] < 400) & (corners[:, 1] < 300)]
    assert len(inside) >= 1
    assert (inside[:, 0] >= region.x0).all() and (inside[:, 0] < region.x1).all()
    assert (inside[:, 1] >= region.y0).all() and (inside[:, 1] < region.y1).all()
    assert region.x0 >= 0 and region.y0 >= 0 and region.x1 <= 400 and region.y1 <= 300
    # off the photo entirely: an empty region
    assert footprint(similarity(0, 0.2, (-500.0, -500.0)), FACE_SIZE, (300, 400)).empty


def test_region_geometry():
    a, b, c = Region(0, 0, 10, 10), Region(5, 5, 20, 12), Region(10, 0, 15, 5)
    assert a.intersects(b) and b.intersects(a)
    assert not a.intersects(c)  # touching edges do not overlap
    assert a.union(b) == Region(0, 0, 20, 12)
    assert (a.width, a.height, a.empty) == (10, 10, False)
    assert Region(3, 3, 3, 9).empty
    photo = np.zeros((30, 30))
    photo[b.slices()] = 1
    assert photo.sum() == b.width * b.height
