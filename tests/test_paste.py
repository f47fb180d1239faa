"""Pasting faces back: the mask, tone matching, and compositing that is exact outside the masks."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from facerestore_cli.face.align import FACE_SIZE, align_face, footprint, warp_from_face
from facerestore_cli.paste import (
    FEATHER,
    LUMA,
    PasteJob,
    _support_region,
    face_mask,
    face_outline,
    match_tone,
    paste_faces,
)


@pytest.fixture(scope="module")
def face(astronaut_rgb):
    """The astronaut's face: aligned crop, 68 landmarks, mask, and the crop -> photo transform."""
    from facerestore_cli.face.detect import create_detector
    from facerestore_cli.face.landmarks import default_predictor

    found = create_detector("retinaface", device="cpu", threads=1).detect(astronaut_rgb)
    assert len(found) == 1
    aligned = align_face(astronaut_rgb, found[0].landmarks)
    landmarks = default_predictor().predict(aligned.image)
    return {
        "aligned": aligned,
        "landmarks": landmarks,
        "mask": face_mask(landmarks),
        "crop": aligned.image.astype(np.float32) / 255.0,
    }


def outside(shape: tuple[int, int], regions) -> np.ndarray:
    keep = np.ones(shape, bool)
    for r in regions:
        keep[r.slices()] = False
    return keep


def test_mask_is_zero_outside_the_outline_and_one_in_the_middle(face):
    mask = face["mask"]
    assert mask.shape == (FACE_SIZE, FACE_SIZE) and mask.dtype == np.float32
    assert mask.min() == 0.0 and mask.max() == 1.0
    hull = cv2.convexHull(face_outline(face["landmarks"]).astype(np.float32)).reshape(-1, 2)
    polygon = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(polygon, np.round(hull).astype(np.int32), 1)
    near = cv2.dilate(polygon, np.ones((3, 3), np.uint8)).astype(bool)  # the outline's own pixels, +-1 px
    assert (mask[~near] == 0).all(), "the mask leaks past the face outline"
    # feathered inwards: a band inside the outline is still 0 or small, the core is exactly 1
    depth = cv2.distanceTransform(polygon, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    sigma = FEATHER * FACE_SIZE
    core = depth > 2 * sigma + 4 * sigma
    assert core.sum() > 20_000
    assert (mask[core] == 1.0).all()
    assert mask[(depth > 0) & (depth < 3)].max() < 0.05
    # and it rises monotonically with the depth into the face (averaged over rings)
    rings = [mask[(depth >= d) & (depth < d + 4)].mean() for d in range(0, 100, 4)]
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(rings))


def test_mask_without_landmarks_is_the_template_ellipse():
    mask = face_mask(None)
    assert mask[290, 256] == 1.0
    assert mask[0, 0] == 0 and mask[511, 511] == 0 and mask[290, 100] == 0
    np.testing.assert_allclose(mask[:, 256 - 40], mask[:, 256 + 40], atol=0.02)  # symmetric
    small = face_mask(None, size=128)
    assert small.shape == (128, 128) and small[72, 64] == 1.0


def test_tone_matching_removes_an_added_colour_cast_and_keeps_detail(face):
    original = face["crop"]
    mask = face["mask"]
    xx = np.mgrid[0:FACE_SIZE, 0:FACE_SIZE][1].astype(np.float32) / FACE_SIZE
    cast = np.array([0.08, -0.05, 0.04], np.float32) + 0.06 * xx[..., None]  # a tint and a gradient
    detail = np.random.default_rng(0).normal(0, 0.03, original.shape).astype(np.float32)
    restored = np.clip(original + cast + detail, 0, 1)
    inside = mask > 0.5
    before = (restored - original)[inside].mean(axis=0)
    assert np.abs(before).max() > 0.05
    matched = match_tone(restored, original, mask)
    after = (matched - original)[inside].mean(axis=0)
    assert np.abs(after).max() < 1.5 / 255, after
    # the correction is low-frequency: the added detail survives
    kept = (matched - cv2.GaussianBlur(matched, (0, 0), 2))[inside]
    had = (restored - cv2.GaussianBlur(restored, (0, 0), 2))[inside]
    assert np.corrcoef(kept.ravel(), had.ravel())[0, 1] > 0.98
    # a face identical to the original needs no correction at all
    assert np.array_equal(match_tone(original, original, mask), original)


def _job(face, image=None, alpha=None, dx=0.0, dy=0.0):
    inverse = face["aligned"].inverse.copy()
    inverse[:, 2] += (dx, dy)
    return PasteJob(
        face=face["crop"] if image is None else image,
        alpha=face["mask"] if alpha is None else alpha,
        inverse=inverse,
    )


def test_pixels_outside_the_regions_are_exact_and_match_the_reference_blend(face, astronaut_rgb):
    restored = np.clip(1.0 - face["crop"], 0, 1)  # very different, so every masked pixel changes
    job = _job(face, restored)
    out, regions = paste_faces(astronaut_rgb, [job])
    assert out.dtype == np.uint8 and out.shape == astronaut_rgb.shape
    assert len(regions) == 1
    keep = outside(astronaut_rgb.shape[:2], regions)
    assert np.array_equal(out[keep], astronaut_rgb[keep])
    assert not np.shares_memory(out, astronaut_rgb)
    # inside: the plain formula over the whole crop footprint (no support trimming), to one level
    inverse = job.inverse
    full = footprint(inverse, FACE_SIZE, astronaut_rgb.shape[:2])
    alpha = np.clip(warp_from_face(job.alpha, inverse, full), 0, 1)[..., None]
    warped = np.clip(warp_from_face(restored, inverse, full), 0, 1) * 255
    original = astronaut_rgb[full.slices()].astype(np.float32)
    expected = np.clip(np.rint(original + alpha * (warped - original)), 0, 255)
    assert np.abs(out[full.slices()].astype(int) - expected.astype(int)).max() <= 1
    # and the trimmed region really holds every changed pixel
    changed = (out != astronaut_rgb).any(axis=2)
    assert changed.sum() > 3000 and not (changed & keep).any()


def test_support_region_never_misses_a_masked_pixel(face):
    """The region paste_faces warps must contain every pixel the full-footprint warp would touch."""
    rng = np.random.default_rng(7)
    alpha = face["mask"]
    h, w = 700, 900
    cases = [(float(np.exp(rng.uniform(np.log(0.06), np.log(5)))), rng.uniform(-np.pi, np.pi)) for _ in range(40)]
    cases += [(s, a) for s in (0.1, 0.45, 1.0, 3.0, 6.0) for a in (0.0, np.pi / 2, np.pi, 0.01)]  # axis-aligned: tight
    for scale, angle in cases:
        c, s = np.cos(angle) * scale, np.sin(angle) * scale
        inverse = np.array([[c, -s, rng.uniform(-300, w)], [s, c, rng.uniform(-300, h)]])
        full = footprint(inverse, FACE_SIZE, (h, w))
        if full.empty:
            continue
        canvas = np.zeros((h, w), np.float32)
        canvas[full.slices()] = np.clip(warp_from_face(alpha, inverse, full), 0, 1)
        region = _support_region(alpha, inverse, (h, w))
        if region is not None:
            canvas[region.slices()] = 0
        assert canvas.max() == 0, (scale, angle)


def test_overlapping_faces_composite_in_any_order(face, astronaut_rgb):
    red = face["crop"].copy()
    red[..., 0] = 1.0
    blue = face["crop"].copy()
    blue[..., 2] = 1.0
    jobs = [_job(face), _job(face, red, dx=40, dy=10), _job(face, blue, dx=-25, dy=30)]
    out, regions = paste_faces(astronaut_rgb, jobs)
    assert regions[0].intersects(regions[1]) and regions[0].intersects(regions[2])
    for order in ([1, 0, 2], [2, 1, 0], [0, 2, 1]):
        again, _ = paste_faces(astronaut_rgb, [jobs[i] for i in order])
        assert np.array_equal(again, out), order
    # the overlap really mixes the faces: it differs from any single one pasted alone
    alone = paste_faces(astronaut_rgb, jobs[1:2])[0]
    assert (alone != out).any(axis=2).sum() > 1000
    keep = outside(astronaut_rgb.shape[:2], regions)
    assert np.array_equal(out[keep], astronaut_rgb[keep])


def test_grey_photos_get_a_grey_face(face, astronaut_rgb):
    grey = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)
    colourful = face["crop"].copy()
    colourful[::2, :, 0] = 1.0
    out, regions = paste_faces(grey, [_job(face, colourful)])
    assert out.ndim == 2 and out.dtype == np.uint8
    keep = outside(grey.shape, regions)
    assert np.array_equal(out[keep], grey[keep])
    # where the mask is 1 the value is the luma of the (warped) face
    job = _job(face, colourful)
    region = regions[0]
    alpha = np.clip(warp_from_face(job.alpha, job.inverse, region), 0, 1)
    luma = np.clip(warp_from_face(colourful, job.inverse, region) @ LUMA, 0, 1) * 255
    full = alpha >= 1.0
    assert full.sum() > 1000
    assert np.abs(out[region.slices()][full].astype(int) - np.rint(luma[full]).astype(int)).max() <= 1
    # grey with alpha: the alpha channel is never touched
    grey_alpha = np.dstack([grey, np.full_like(grey, 77)])
    out2, _ = paste_faces(grey_alpha, [_job(face, colourful)])
    assert out2.shape == grey_alpha.shape
    assert np.array_equal(out2[..., 1], grey_alpha[..., 1])
    assert np.array_equal(out2[..., 0], out)


def test_sixteen_bit_photos_stay_sixteen_bit(face, astronaut_rgb):
    noise = np.random.default_rng(1).integers(0, 257, astronaut_rgb.shape)
    deep = (astronaut_rgb.astype(np.uint32) * 257 + noise).clip(0, 65535).astype(np.uint16)
    restored = np.clip(face["crop"] * 0.8 + 0.1, 0, 1)
    out16, regions = paste_faces(deep, [_job(face, restored)])
    assert out16.dtype == np.uint16
    keep = outside(deep.shape[:2], regions)
    assert np.array_equal(out16[keep], deep[keep])
    out8, _ = paste_faces(astronaut_rgb, [_job(face, restored)])
    inside = ~keep
    # same composite at 16 bits (the 16-bit photo's extra precision only moves it by < 1.5 8-bit levels)
    assert np.abs(out16[inside] / 257.0 - out8[inside]).max() < 1.5
    # RGBA at 16 bits: alpha untouched
    rgba = np.dstack([deep, np.full(deep.shape[:2], 40000, np.uint16)])
    out_rgba, _ = paste_faces(rgba, [_job(face, restored)])
    assert np.array_equal(out_rgba[..., 3], rgba[..., 3])
    assert np.array_equal(out_rgba[..., :3], out16)


def test_upscaled_paste_lands_on_the_scaled_face(face, astronaut_rgb):
    big = cv2.resize(astronaut_rgb, None, fx=2, fy=2, interpolation=cv2.INTER_LANCZOS4)
    _, (small_region,) = paste_faces(astronaut_rgb, [_job(face)])
    out, (big_region,) = paste_faces(big, [_job(face)], upscale=2)
    for a, b in ((small_region.x0, big_region.x0), (small_region.y0, big_region.y0)):
        assert abs(2 * a - b) <= 3
    assert abs(big_region.width - 2 * small_region.width) <= 4
    keep = outside(big.shape[:2], [big_region])
    assert np.array_equal(out[keep], big[keep])
    # the face pasted is the photo's own face: on the right pixel grid it matches the enlarged photo
    # (half a pixel off, the mean error doubles)
    diff = np.abs(out[big_region.slices()].astype(float) - big[big_region.slices()].astype(float))
    assert diff.mean() < 1.5


def test_nothing_to_paste():
    photo = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
    out, regions = paste_faces(photo, [])
    assert regions == [] and np.array_equal(out, photo) and not np.shares_memory(out, photo)
    zero = PasteJob(np.zeros((FACE_SIZE, FACE_SIZE, 3), np.float32), np.zeros((FACE_SIZE, FACE_SIZE), np.float32),
                    np.array([[0.2, 0, 1.0], [0, 0.2, 1.0]]))  # fmt: skip
    out, regions = paste_faces(photo, [zero])
    assert regions == [] and np.array_equal(out, photo)
