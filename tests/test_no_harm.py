"""Do no harm: what does not need restoring comes back as it was, in colour and in bytes.

Real photos through the real command, with MemGAN (the restorer that paints the most colour of its
own) at ``--strength 1`` where a face must be changed for the test to mean anything.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_path
from PIL import Image, ImageCms
from test_cli import XMP, away_from_faces, invoke, read_report

from facerestore_cli.colour import photo_colour, to_ycbcr
from facerestore_cli.face.align import align_face, inside_mask
from facerestore_cli.face.detect import create_detector
from facerestore_cli.imagefile import load_photo
from facerestore_cli.imagefile.jpeg_blocks import footprint, inspect_jpeg

LONDON = "data/eval-dev/london-pairs"
OLD = "data/eval-dev/realworld/old-photos"


def chroma(rgb: np.ndarray) -> np.ndarray:
    return to_ycbcr(np.asarray(rgb, dtype=np.float32)[..., :3])[..., 1:]


def rgb_of(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def jpeg_bytes(rgb: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", **kw)
    return buf.getvalue()


def restore(src: Path, out: Path, *args) -> dict:
    report = out.parent / f"{out.name}.jsonl"
    result = invoke(src, "-o", out, "--threads", "1", "--report", report, *args)
    assert result.exit_code == 0, result.output
    return read_report(report)[src.name]


def sepia(grey: np.ndarray) -> np.ndarray:
    g = grey.astype(np.float32)
    return np.clip(np.stack([g * 0.95 + 20, g * 0.8 + 12, g * 0.6 + 4], axis=-1), 0, 255).astype(np.uint8)


# -- a face that needs nothing ----------------------------------------------------------------------


def test_a_sharp_portrait_comes_back_byte_for_byte(tmp_path):
    src = shared_path(LONDON, "001", "smiling.jpg")
    row = restore(src, tmp_path / "out")
    assert row["status"] == "unchanged" and row["faces_restored"] == 0
    face = row["faces"][0]
    assert face["strength"] == 0.0 and face["degradation"]["detail_kept"] < 0.45
    assert face["skipped"].startswith(("no measurable degradation", "restoring would smooth it"))
    assert (tmp_path / "out" / src.name).read_bytes() == src.read_bytes()


def test_a_degraded_face_is_restored_fully(tmp_path):
    from facerestore_cli.train.degrade import degrade, fixed_degradation

    clean = rgb_of(shared_path(LONDON, "003", "smiling.jpg"))
    src = tmp_path / "x8.png"
    Image.fromarray(degrade(clean, fixed_degradation(8, seed=3))).save(src)
    row = restore(src, tmp_path / "out", "-m", "none")
    face = row["faces"][0]
    assert row["status"] == "restored" and face["strength"] == 1.0 and face["degradation"]["need"] >= 0.6


# -- monochrome and toned prints keep their chroma ------------------------------------------------------


@pytest.mark.parametrize("quality", [75, 85, 95])
@pytest.mark.parametrize("tone", ["grey", "sepia"])
def test_grey_and_sepia_jpegs_keep_their_chroma_exactly(tmp_path, quality, tone):
    photo = rgb_of(shared_path("data/eval-dev/realworld/whole", "serengil_couple.jpg"))
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    pixels = np.dstack([grey] * 3) if tone == "grey" else sepia(grey)
    src = tmp_path / f"{tone}{quality}.jpg"
    src.write_bytes(jpeg_bytes(pixels, quality=quality))
    before = rgb_of(src)
    assert photo_colour(before).kind == ("grey" if tone == "grey" else "toned")
    row = restore(src, tmp_path / "out", "-m", "memgan", "--strength", "1")
    assert row["faces_restored"] == 2 and row["written"].startswith("blocks")
    after = rgb_of(tmp_path / "out" / src.name)
    assert np.abs(after.astype(int) - before.astype(int)).max() > 20, "the faces were restored"
    assert np.abs(chroma(after) - chroma(before))[defined(before, after)].max() <= 1.0


def defined(*images: np.ndarray) -> np.ndarray:
    """Pixels whose chroma the 8-bit values show: a channel at 0 or 255 is clipped, and then the file's
    chroma says more than the pixel can (43 of 3.6 M pixels of a restored sepia JPEG here)."""
    out = np.ones(images[0].shape[:2], bool)
    for im in images:
        out &= ((im > 0) & (im < 255)).all(axis=-1)
    return out


def test_old_prints_keep_their_chroma_exactly(tmp_path):
    folder = shared_path(OLD)
    checked = 0
    for src in sorted(folder.glob("*.png")):
        before = rgb_of(src)
        if not photo_colour(before).monochrome:
            continue
        row = restore(src, tmp_path / src.stem, "-m", "memgan", "--strength", "1")
        assert row["faces_restored"] >= 1
        after = rgb_of(tmp_path / src.stem / src.name)
        assert np.abs(chroma(after) - chroma(before)).max() <= 1.0, src.name
        checked += 1
    assert checked >= 3  # microsoft_a..d are toned prints


def test_colour_photos_get_no_chroma_the_input_does_not_have(tmp_path):
    src = shared_path("data/eval-dev/realworld/whole", "serengil_couple.jpg")
    row = restore(src, tmp_path / "out", "-m", "memgan", "--strength", "1", "--ext", "png")
    before, after = rgb_of(src).astype(np.float32), rgb_of(tmp_path / "out" / (src.stem + ".png")).astype(np.float32)
    cb_in = cv2.GaussianBlur(chroma(before), (0, 0), 1.0)
    kernel = np.ones((7, 7), np.uint8)
    lo, hi = cv2.erode(cb_in, kernel), cv2.dilate(cb_in, kernel)
    c = chroma(after)
    # the bound is applied on the 512 crop; warping it back and rounding moves it by a few levels at most
    outside = np.maximum(lo - c, c - hi).max(axis=-1)
    faces = ~away_from_faces(before.shape[:2], row["faces"], margin=0.0)
    assert np.quantile(outside[faces], 0.999) <= 6.0 + 4.0


# -- faces at the edge ---------------------------------------------------------------------------------


@pytest.mark.parametrize("outside_share", [0.2, 0.3, 0.45])
def test_faces_cut_by_the_edge_get_no_colour_outliers(tmp_path, outside_share):
    full = rgb_of(shared_path(LONDON, "005", "smiling.jpg"))
    face = max(create_detector("retinaface").detect(full), key=lambda f: f.size)
    matrix = align_face(full, face.landmarks).matrix
    for right in range(full.shape[1], 0, -4):  # cut the photo until that share of the crop is outside
        valid = inside_mask(matrix, (full.shape[0], right))
        if valid is not None and 1 - valid.mean() >= outside_share:
            break
    src = tmp_path / "edge.png"
    Image.fromarray(full[:, :right]).save(src)
    row = restore(src, tmp_path / "out", "-m", "memgan", "--strength", "1")
    assert row["faces_restored"] == 1
    before, after = rgb_of(src).astype(np.float32), rgb_of(tmp_path / "out" / "edge.png").astype(np.float32)
    delta = np.abs(chroma(after) - cv2.GaussianBlur(chroma(before), (0, 0), 2.0)).max(axis=-1)
    assert np.quantile(delta, 0.999) < 16.0  # an amber iris or a magenta fringe is 25-60 levels off


# -- --aligned and --save-faces -----------------------------------------------------------------------


def test_aligned_crops_keep_their_tone_and_have_no_frame(tmp_path):
    src = shared_path("data/eval-dev/realworld/cropped", "xpixelgroup_0229.png")
    row = restore(src, tmp_path / "out", "-m", "memgan", "--aligned", "--strength", "1")
    assert row["faces_restored"] == 1
    before, after = rgb_of(src).astype(float), rgb_of(tmp_path / "out" / src.name).astype(float)
    assert np.abs(after.mean(axis=(0, 1)) - before.mean(axis=(0, 1))).max() < 2.0
    border = np.ones(before.shape[:2], bool)
    border[2:-2, 2:-2] = False  # the result fades back to the input over its outer 12 px
    assert np.abs(after - before)[border].max() < 3.0
    assert np.abs(after - before)[40:-40, 40:-40].mean() > 1.0, "the face itself was restored"


def test_saved_face_crops_show_the_face_as_pasted(tmp_path):
    src = shared_path("data/eval-dev/realworld/whole", "serengil_couple.jpg")
    row = restore(src, tmp_path / "out", "-m", "memgan", "--strength", "1", "--save-faces")
    face = row["faces"][0]
    crop, restored = rgb_of(Path(face["crop"])).astype(float), rgb_of(Path(face["restored_crop"])).astype(float)
    assert np.abs(restored.mean(axis=(0, 1)) - crop.mean(axis=(0, 1))).max() < 2.0
    corner = (slice(0, 40), slice(0, 40))  # background, outside the face mask
    assert np.abs(restored[corner] - crop[corner]).max() <= 1.0


# -- JPEG: blocks away from the faces are the source's -----------------------------------------------------


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_blocks_away_from_faces_decode_bit_identical(tmp_path, progressive):
    photo = rgb_of(shared_path("data/eval-dev/realworld/whole", "serengil_couple.jpg"))
    exif = Image.Exif()
    exif[0x010F] = "facerestore-test"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "photo.jpg"
    src.write_bytes(jpeg_bytes(photo, quality=88, progressive=progressive, exif=exif.tobytes(), icc_profile=icc,
                               xmp=XMP))  # fmt: skip
    row = restore(src, tmp_path / "out", "-m", "memgan", "--strength", "1")
    assert row["faces_restored"] == 2 and row["written"].startswith("blocks")
    out = tmp_path / "out" / "photo.jpg"
    before, after = rgb_of(src), rgb_of(out)
    changed = (before != after).any(axis=-1)
    layout = inspect_jpeg(src.read_bytes())
    assert layout.progressive == progressive == inspect_jpeg(out.read_bytes()).progressive
    # every 8x8 block that differs lies in the footprint of the faces' re-encoded MCUs
    faces = ~away_from_faces(before.shape[:2], row["faces"], margin=0.75)
    assert not (changed & ~footprint(layout, faces)).any()
    reencoded, total = (int(v) for v in row["written"].split()[1:4:2])
    assert out.stat().st_size <= 1.05 * src.stat().st_size * (1 + reencoded / total)
    again = load_photo(out)
    assert again.icc_profile == icc and b"facerestore-xmp-marker" in (again.xmp or b"")
    assert Image.open(out).getexif()[0x010F] == "facerestore-test"


def test_rotated_jpegs_are_re_encoded_at_their_own_quality(tmp_path):
    photo = rgb_of(shared_path("data/eval-dev/realworld/whole", "serengil_couple.jpg"))
    exif = Image.Exif()
    exif[0x0112] = 3
    src = tmp_path / "turned.jpg"
    src.write_bytes(jpeg_bytes(np.ascontiguousarray(photo[::-1, ::-1]), quality=70, exif=exif.tobytes()))
    row = restore(src, tmp_path / "out", "-m", "none", "--strength", "1")
    assert row["written"].startswith("re-encoded at the source's quality 70 (EXIF orientation 3")


def test_quality_forces_a_whole_re_encode(tmp_path):
    src = shared_path(LONDON, "007", "smiling.jpg")
    row = restore(src, tmp_path / "out", "-m", "none", "--strength", "1", "--quality", "90")
    assert row["written"] == "encoded at quality 90"
    summary = json.dumps(row)
    assert "blocks" not in summary
