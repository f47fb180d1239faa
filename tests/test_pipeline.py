"""The album run in-process: failures stay per file, nothing partial is ever left, pixels away from faces
are untouched, and what the options promise (grey faces, --aligned, --blend, face selection) holds."""

from __future__ import annotations

import errno
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from facerestore_cli import imagefile
from facerestore_cli.album import InputItem, OutputPlan, discover_inputs
from facerestore_cli.face.align import FACE_SIZE, FFHQ_TEMPLATE_512, align_face, footprint
from facerestore_cli.face.detect import Face
from facerestore_cli.imagefile import load_photo, rgb8
from facerestore_cli.pipeline import Pipeline, RestoreOptions, restore_file
from facerestore_cli.report import ImageReport, Summary
from facerestore_cli.restore import IdentityRestorer


@pytest.fixture(scope="module")
def detector():
    from facerestore_cli.face.detect import create_detector

    return create_detector("retinaface", device="cpu", threads=1)


def make_pipeline(detector, restorer=None, **options) -> Pipeline:
    options = RestoreOptions(method="none", device="cpu", threads=1, **options)
    return Pipeline(options, restorer=restorer, detector=detector)


class StripedRestorer(IdentityRestorer):
    """Paints saturated red and green stripes over every face: colour that tone matching cannot remove."""

    def restore(self, faces, landmarks68, dictionary=None):
        out = super().restore(faces, landmarks68, dictionary)
        out[:, ::4, :, 0] = 1.0
        out[:, 2::4, :, 1] = 1.0
        return out


class InterruptingRestorer(IdentityRestorer):
    """Ctrl-C while the ``at``-th photo is being restored."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.calls, self.at = 0, at

    def restore(self, faces, landmarks68, dictionary=None):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().restore(faces, landmarks68, dictionary)


def save(path: Path, pixels: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kw)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def album(folder: Path) -> list[InputItem]:
    return discover_inputs([str(folder)]).items


def test_disk_full_fails_one_file_cleanly_and_the_album_goes_on(tmp_path, detector, astronaut_rgb, monkeypatch):
    for name in ("a.png", "b.png", "c.png"):
        save(tmp_path / "in" / name, astronaut_rgb)
    real = imagefile._write_bytes
    calls: list[Path] = []

    def write_until_full(path: Path, data: bytes) -> None:
        calls.append(Path(path))
        if len(calls) == 2:  # the second photo: half written, then the disk is full
            Path(path).write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(imagefile, "_write_bytes", write_until_full)
    reports: list[ImageReport] = []
    out = tmp_path / "out"
    summary = make_pipeline(detector).run(album(tmp_path / "in"), OutputPlan(out_dir=out), on_image=reports.append)
    assert [(Path(r.input).name, r.status, r.reason) for r in reports] == [
        ("a.png", "restored", None),
        ("b.png", "failed", "disk-full"),
        ("c.png", "restored", None),
    ]
    assert "b.png" in reports[1].error and "no space" in reports[1].error.lower()
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]  # no b.png, no temporary file
    assert leftovers(tmp_path) == []
    assert len(calls) == 3 and calls[1].name.startswith(".b.png.")  # it was a temporary file that got cut
    for name in ("a.png", "c.png"):
        assert load_photo(out / name).pixels.shape == astronaut_rgb.shape
    assert (summary.failed, summary.restored, summary.exit_code) == (1, 2, 1)
    assert summary.faces_restored == 2  # the face of the unwritten photo does not count


def test_photo_without_faces_is_written_through_byte_for_byte(tmp_path, detector):
    from skimage import data

    src = save(tmp_path / "in" / "coffee.jpg", data.coffee(), quality=80)
    report = make_pipeline(detector).process(InputItem(src, Path(src.name)), tmp_path / "out" / "coffee.jpg")
    assert (report.status, report.reason, report.faces_found) == ("no-faces", "no face found", 0)
    assert (tmp_path / "out" / "coffee.jpg").read_bytes() == src.read_bytes()


def test_pixels_outside_the_face_footprints_are_exact(tmp_path, detector, astronaut_rgb):
    noise = np.random.default_rng(0).integers(0, 257, astronaut_rgb.shape)
    deep = (astronaut_rgb.astype(np.uint32) * 257 + noise).clip(0, 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    pipeline = make_pipeline(detector, StripedRestorer())
    for photo in (load_photo(save(tmp_path / "a.png", astronaut_rgb)), load_photo(tmp_path / "deep.png")):
        result = pipeline.restore_photo(photo)
        assert result.photo.pixels.dtype == photo.pixels.dtype
        # footprints from the detector and the alignment alone, independent of how paste trims them
        rgb = rgb8(photo)
        keep = np.ones(rgb.shape[:2], bool)
        for face in detector.detect(rgb):
            keep[footprint(align_face(rgb, face.landmarks).inverse, FACE_SIZE, rgb.shape[:2]).slices()] = False
        for r in result.regions:  # paste's own regions are inside them
            assert not keep[r.slices()].any()
        assert keep.mean() > 0.5
        assert np.array_equal(result.photo.pixels[keep], photo.pixels[keep])
        changed = (result.photo.pixels != photo.pixels).any(axis=2)
        assert changed.sum() > 5000  # and the face really was replaced


def test_colourless_rgb_photo_gets_grey_faces(tmp_path, detector, astronaut_rgb):
    grey = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)
    pipeline = make_pipeline(detector, StripedRestorer())
    colourless = pipeline.restore_photo(load_photo(save(tmp_path / "g.png", np.dstack([grey] * 3))))
    px = colourless.photo.pixels.astype(int)
    assert colourless.faces[0].restored
    assert np.array_equal(px[..., 0], px[..., 1]) and np.array_equal(px[..., 1], px[..., 2])
    assert (px != grey[..., None]).any(axis=2).sum() > 5000  # the stripes were pasted, in grey
    # the control: in a colour photo the same restorer's colour shows
    coloured = pipeline.restore_photo(load_photo(save(tmp_path / "c.png", astronaut_rgb))).photo.pixels.astype(int)
    assert (np.abs(coloured[..., 0] - coloured[..., 1]) > 60).sum() > 2000
    # a true grey (L) photo stays HxW
    single = pipeline.restore_photo(load_photo(save(tmp_path / "l.png", grey)))
    assert single.photo.pixels.shape == grey.shape and single.faces[0].restored


class NoDetector:
    name = "none"

    def detect(self, rgb):
        raise AssertionError("--aligned must not run the detector")


class RecordingRestorer(IdentityRestorer):
    def __init__(self) -> None:
        super().__init__()
        self.landmarks: list[np.ndarray] = []

    def restore(self, faces, landmarks68, dictionary=None):
        assert faces.shape[1:] == (FACE_SIZE, FACE_SIZE, 3)
        self.landmarks.extend(landmarks68)
        return super().restore(faces, landmarks68, dictionary)


def test_aligned_crops_skip_detection_and_still_get_68_landmarks():
    folder = shared_path("data/eval-dev/realworld/cropped")
    restorer = RecordingRestorer()
    pipeline = Pipeline(
        RestoreOptions(method="none", aligned=True, device="cpu", threads=1), restorer=restorer, detector=NoDetector()
    )
    pipeline.prepare()
    for path in sorted(folder.glob("*.png"))[:3]:
        photo = load_photo(path)
        result = pipeline.restore_photo(photo)
        assert result.photo.pixels.shape == photo.pixels.shape
        assert len(result.faces) == 1 and result.faces[0].restored
    assert len(restorer.landmarks) == 3
    for lm in restorer.landmarks:
        assert lm.shape == (68, 2)
        # on an aligned crop the eyes sit on the template's eyes
        eyes = np.array([lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)])
        assert np.abs(eyes - FFHQ_TEMPLATE_512[:2]).max() < 25, eyes


def test_aligned_blend_zero_keeps_the_crop(tmp_path):
    crop = (np.random.default_rng(2).random((FACE_SIZE, FACE_SIZE, 3)) * 255).astype(np.uint8)
    photo = load_photo(save(tmp_path / "crop.png", crop))
    options = {"method": "none", "aligned": True, "device": "cpu", "threads": 1}
    kept = Pipeline(RestoreOptions(blend=0.0, **options), restorer=StripedRestorer(), detector=NoDetector())
    assert np.array_equal(kept.restore_photo(photo).photo.pixels, crop)
    full = Pipeline(
        RestoreOptions(blend=1.0, tone_match=False, **options), restorer=StripedRestorer(), detector=NoDetector()
    )
    # the outer 12 px fade back to the input; inside, the stripes' light is pasted (their invented
    # chroma is bounded by the input's, so the red itself is not)
    inner = full.restore_photo(photo).photo.pixels[12:-12, 12:-12].astype(int)
    gain = inner[::4].sum(-1) - crop[12:-12:4, 12:-12].astype(int).sum(-1)
    assert gain.mean() > 100 and (gain > 0).mean() > 0.85


def test_ctrl_c_keeps_finished_files_and_their_reports(tmp_path, detector, astronaut_rgb):
    for name in "abcde":
        save(tmp_path / "in" / f"{name}.png", astronaut_rgb)
    reports: list[ImageReport] = []
    out = tmp_path / "out"
    pipeline = make_pipeline(detector, InterruptingRestorer(at=3))
    summary = pipeline.run(album(tmp_path / "in"), OutputPlan(out_dir=out), on_image=reports.append)
    assert summary.interrupted and summary.exit_code == 130
    assert [Path(r.input).name for r in reports] == ["a.png", "b.png"]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert leftovers(tmp_path) == []
    for name in ("a.png", "b.png"):
        load_photo(out / name)


def test_a_decoder_crash_fails_that_file_only(tmp_path, detector, astronaut_rgb):
    for name in ("a.png", "b.png", "c.png"):
        save(tmp_path / "in" / name, astronaut_rgb)
    runner = make_pipeline(detector).runner
    real = runner.load

    def load(path):
        if path.name == "b.png":
            raise ValueError("decoder bug")
        return real(path)

    runner.load = load
    reports: list[ImageReport] = []
    summary = runner.run(album(tmp_path / "in"), OutputPlan(out_dir=tmp_path / "out"), on_image=reports.append)
    assert [r.status for r in reports] == ["restored", "failed", "restored"]
    assert reports[1].reason == "ValueError" and "decoder bug" in reports[1].error
    assert summary.exit_code == 1


def face_at(x: float, y: float, size: float, score: float = 0.99) -> Face:
    """A detection whose five points are the template's, scaled into a ``size`` box at (x, y)."""
    s = size / 260.0  # the template's face box is about 260 px wide
    points = (FFHQ_TEMPLATE_512 - 256.0) * s + np.array([x, y])
    return Face(box=[x - size / 2, y - size / 2, x + size / 2, y + size / 2], score=score, landmarks=points)


class FixedDetector:
    name = "fixed"

    def __init__(self, faces: list[Face]) -> None:
        self.faces = faces

    def detect(self, rgb):
        return list(self.faces)


@pytest.mark.parametrize(
    ("which", "min_face", "restored"),
    [("all", 16, [0, 1, 2]), ("largest", 16, [1]), ("center", 16, [2]), ("all", 100, [1]), ("center", 100, [1])],
)
def test_face_selection_and_reasons(astronaut_rgb, which, min_face, restored):
    faces = [face_at(60, 60, 90), face_at(380, 380, 160), face_at(256, 240, 80)]
    pipeline = Pipeline(
        RestoreOptions(method="none", faces=which, min_face=min_face, device="cpu", threads=1),
        detector=FixedDetector(faces),
    )
    photo = imagefile.Photo(astronaut_rgb.copy(), "PNG")
    result = pipeline.restore_photo(photo)
    assert [f.index for f in result.faces if f.restored] == restored
    for f in result.faces:
        if f.restored:
            assert f.skipped is None
        elif f.size < min_face:
            assert "--min-face" in f.skipped
        else:
            assert f"--faces {which}" in f.skipped


def test_restore_file_is_the_one_call_api(tmp_path, astronaut_rgb):
    src = save(tmp_path / "a.jpg", astronaut_rgb, quality=90)
    report = restore_file(src, tmp_path / "out.jpg", RestoreOptions(method="none", device="cpu", threads=1))
    assert (report.status, report.faces_restored) == ("restored", 1)
    assert Image.open(tmp_path / "out.jpg").format == "JPEG"


def test_summary_counts_faces_only_of_written_photos():
    summary = Summary()
    summary.add(ImageReport(input="a", status="restored", faces_found=2, faces_restored=2))
    summary.add(ImageReport(input="b", status="failed", reason="disk-full", faces_found=3, faces_restored=3))
    summary.add(ImageReport(input="c", status="exists"))
    assert (summary.images, summary.faces_found, summary.faces_restored) == (3, 5, 2)
    assert (summary.restored, summary.failed, summary.skipped_existing, summary.exit_code) == (1, 1, 1, 1)
    assert summary.to_json()["failures"] == [{"input": "b", "reason": "disk-full", "error": None}]


def test_the_first_photos_jpeg_blocks_are_read_while_its_faces_are_found(tmp_path, detector, astronaut_rgb, monkeypatch):  # noqa: E501
    import threading

    from facerestore_cli.imagefile import jpeg_blocks

    reads, real = [], jpeg_blocks._read_blocks

    def spy(data, parsed, layout):
        reads.append(threading.current_thread().name)
        return real(data, parsed, layout)

    monkeypatch.setattr(jpeg_blocks, "_read_blocks", spy)
    for k in range(2):
        save(tmp_path / "in" / f"{k}.jpg", astronaut_rgb, quality=90)
    pipeline = make_pipeline(detector, StripedRestorer())
    reports: list[ImageReport] = []
    pipeline.run(album(tmp_path / "in"), OutputPlan(out_dir=tmp_path / "out"), on_image=reports.append)
    assert [r.status for r in reports] == ["restored", "restored"]
    assert all(r.written.startswith("blocks:") for r in reports)
    # once per photo, in the thread that writes: the first photo's ahead of time, and that read was used
    assert len(reads) == 2 and all(name.startswith("facerestore-finish") for name in reads)
    for k in range(2):  # the same file as a write that reads its blocks itself
        src = tmp_path / "in" / f"{k}.jpg"
        pipeline.process(InputItem(src, Path(src.name)), tmp_path / "alone" / src.name)
        assert (tmp_path / "alone" / src.name).read_bytes() == (tmp_path / "out" / src.name).read_bytes()
