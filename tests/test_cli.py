"""The ``facerestore`` command, end to end.

The end-to-end tests run the installed ``facerestore`` command (or ``python -m facerestore_cli``) in a
subprocess on real photos, as a user would, and check the files it writes. One album run with every
kind of file (formats, 16-bit, alpha, grey, EXIF rotation and metadata, no face, broken files, the
shared real-world photos) is shared by several tests; the option-by-option tests run the same Typer
app in-process, which is the same code without paying the start-up of a new interpreter each time.

Exit codes (documented in ``facerestore --help`` and the README): 0 everything done, 1 some photos
failed, 2 usage or set-up error, 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_path
from PIL import Image, ImageCms
from typer.testing import CliRunner

from facerestore_cli import __version__
from facerestore_cli.cli import _with_default_command, app
from facerestore_cli.imagefile import load_photo

FACERESTORE = shutil.which("facerestore")
SHARED_WHOLE = "data/eval-dev/realworld/whole"
#: shared real-world photos in the album run, with the number of faces RetinaFace must find
SHARED_PHOTOS = {
    "serengil_couple.jpg": 2,
    "serengil_selfie-many-people.jpg": 6,
    "tencentarc_10045.png": 4,
    "wzhouxiff_06.png": 2,
}
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:source="facerestore-xmp-marker"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


def clean_env() -> dict[str, str]:
    """The environment of a script in a pipe: nothing that would force colours or a terminal width."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env.pop("COLUMNS", None)
    env["NO_COLOR"] = "1"
    return env


def facerestore(*args: str | Path, timeout: float = 240, home: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed command; ``home`` gives it its own (empty) user folder for weights and caches."""
    assert FACERESTORE, "the facerestore console script is not installed in this environment"
    env = clean_env()
    if home is not None:
        env["FACERESTORE_HOME"] = str(home)
        env.pop("FACERESTORE_WEIGHTS", None)
    return subprocess.run(
        [FACERESTORE, *map(str, args)], capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


def invoke(*args: str | Path):
    """Run the CLI in-process, exactly as ``facerestore ARGS`` parses them."""
    return CliRunner().invoke(app, _with_default_command([str(a) for a in args]), prog_name="facerestore")


def read_report(path: Path) -> dict[str, dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert len({r["input"] for r in rows}) == len(rows), "one line per image"
    return {Path(r["input"]).name: r for r in rows}


def save(path: Path, pixels: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kw)
    return path


def deep_astronaut(rgb: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(0).integers(0, 257, rgb.shape)
    return (rgb.astype(np.uint32) * 257 + noise).clip(0, 65535).astype(np.uint16)


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.name.endswith(".tmp")]


def away_from_faces(shape: tuple[int, int], faces: list[dict], margin: float = 0.75, scale: float = 1.0) -> np.ndarray:
    """Pixels farther than ``margin`` box sizes from every reported face box (independent of the code
    that pastes: a face's crop reaches about 0.6 box sizes past its box)."""
    keep = np.ones(shape, bool)
    h, w = shape
    for f in faces:
        x0, y0, x1, y1 = (v * scale for v in f["box"])
        m = margin * max(x1 - x0, y1 - y0)
        keep[max(0, int(y0 - m)) : min(h, int(np.ceil(y1 + m))), max(0, int(x0 - m)) : min(w, int(np.ceil(x1 + m)))] = (
            False
        )
    return keep


# --------------------------------------------------------------------------------------------------
# one album, every kind of file, through the installed command


@pytest.fixture(scope="module")
def album_run(tmp_path_factory, astronaut_rgb):
    root = tmp_path_factory.mktemp("album")
    src, extra, out = root / "album", root / "extra", root / "out"
    a = astronaut_rgb
    save(src / "astro.jpg", a, quality=90)
    save(src / "formats" / "astro.png", a)
    save(src / "formats" / "astro.webp", a, quality=90)
    save(src / "formats" / "astro.bmp", a)
    save(src / "formats" / "astro.tif", a)
    deep = deep_astronaut(a)
    (src / "deep").mkdir()
    cv2.imwrite(str(src / "deep" / "astro16.png"), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    import tifffile

    tifffile.imwrite(src / "deep" / "astro16.tif", deep, photometric="rgb")
    alpha = np.tile(np.linspace(0, 255, a.shape[1]).astype(np.uint8), (a.shape[0], 1))
    save(src / "alpha" / "astro_rgba.png", np.dstack([a, alpha]))
    save(src / "grey" / "astro_l.png", cv2.cvtColor(a, cv2.COLOR_RGB2GRAY))
    # EXIF orientation 6: the file holds the upright photo turned a quarter to the left
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "facerestore-test"
    exif.get_ifd(0x8769)[0x9003] = "2001:02:03 04:05:06"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    upright = a[:400]
    save(src / "exif" / "rotated.jpg", np.ascontiguousarray(np.rot90(upright)), quality=95, exif=exif.tobytes(),
         icc_profile=icc, xmp=XMP)  # fmt: skip
    from skimage import data

    save(src / "noface" / "coffee.png", data.coffee())
    good = (src / "astro.jpg").read_bytes()
    (src / "bad").mkdir()
    (src / "bad" / "zero.jpg").write_bytes(b"")
    (src / "bad" / "text.jpg").write_text("this is a shopping list, not a photo\n")
    (src / "bad" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    broken = bytearray(good)
    broken[300:6000] = np.random.default_rng(1).integers(0, 256, 5700, dtype=np.uint8).tobytes()
    (src / "bad" / "corrupt.jpg").write_bytes(bytes(broken))
    save(extra / "anim.gif", a)
    save(extra / "loose" / "loose.jpg", a[:, ::-1].copy(), quality=90)
    shared = os.environ.get("FACERESTORE_SHARED")
    if shared:
        for name in SHARED_PHOTOS:
            if (Path(shared) / SHARED_WHOLE / name).exists():
                (src / "shared").mkdir(exist_ok=True)
                shutil.copy(Path(shared) / SHARED_WHOLE / name, src / "shared" / name)
    report = root / "report.jsonl"
    started = time.perf_counter()
    proc = facerestore(
        src, "-r", extra / "anim.gif", str(extra / "loose" / "*.jpg"), "-m", "none", "-o", out,
        "--threads", "1", "--report", report, "--json", "--strength", "1",
    )  # fmt: skip
    return {
        "root": root, "src": src, "out": out, "proc": proc, "report": report, "icc": icc, "upright": upright,
        "deep": deep, "seconds": time.perf_counter() - started,
    }  # fmt: skip


BAD = {
    "corrupt.jpg": "corrupt",
    "truncated.jpg": "truncated",
    "zero.jpg": "empty",
    "text.jpg": "not-an-image",
    "anim.gif": "unsupported",
}
OUTPUTS = {
    "astro.jpg": "JPEG",
    "formats/astro.png": "PNG",
    "formats/astro.webp": "WEBP",
    "formats/astro.bmp": "BMP",
    "formats/astro.tif": "TIFF",
    "deep/astro16.png": "PNG",
    "deep/astro16.tif": "TIFF",
    "alpha/astro_rgba.png": "PNG",
    "grey/astro_l.png": "PNG",
    "exif/rotated.jpg": "JPEG",
    "noface/coffee.png": "PNG",
    "loose.jpg": "JPEG",
}


def test_album_exit_code_and_clean_streams(album_run):
    proc = album_run["proc"]
    assert proc.returncode == 1, proc.stderr.decode()  # some photos are broken
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1, "stdout carries the --json summary and nothing else"
    summary = json.loads(lines[0])
    assert summary["exit_code"] == 1 and summary["failed"] == len(BAD)
    assert summary["images"] == len(read_report(album_run["report"]))
    assert summary["restored"] + summary["no_faces"] + summary["failed"] == summary["images"]
    assert summary["no_faces"] == 1 and summary["interrupted"] is False
    assert set(summary["timings"]) >= {"decode", "detect", "align", "paste", "encode"}
    err = proc.stderr.decode()
    for name in BAD:
        assert name in err  # each failure is named on stderr...
    assert "faces restored / found" not in err  # ...and the summary table is for terminals only
    for stream in (proc.stdout, proc.stderr):  # no progress bar, cursor moves or colours in a pipe
        assert b"\r" not in stream and b"\x1b[" not in stream


def test_album_outputs_mirror_the_tree_and_keep_formats(album_run):
    out = album_run["out"]
    for rel, fmt in OUTPUTS.items():
        with Image.open(out / rel) as im:
            assert im.format == fmt, rel
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    shared = {f"shared/{n}" for n in SHARED_PHOTOS if (album_run["src"] / "shared" / n).exists()}
    assert written == set(OUTPUTS) | shared  # nothing for the broken files, no temporary files
    assert no_temporaries(album_run["root"])
    # inputs are never modified
    assert (album_run["src"] / "bad" / "zero.jpg").stat().st_size == 0


def test_album_report_has_one_line_per_image_with_faces_and_reasons(album_run):
    rows = read_report(album_run["report"])
    assert set(rows) == {Path(p).name for p in OUTPUTS} | set(BAD) | {
        n for n in SHARED_PHOTOS if (album_run["src"] / "shared" / n).exists()
    }
    for name, row in rows.items():
        fields = {"status", "reason", "error", "output", "seconds", "faces_found", "faces_restored", "faces_skipped"}
        assert fields <= set(row)
        assert row["seconds"] >= 0
        if name not in BAD:
            assert row["status"] in ("restored", "no-faces") and row["error"] is None
            assert Path(row["output"]).exists()
    for name in ("astro.jpg", "astro.png", "astro16.tif", "astro_rgba.png", "astro_l.png", "rotated.jpg", "loose.jpg"):
        row = rows[name]
        assert (row["status"], row["faces_found"], row["faces_restored"]) == ("restored", 1, 1), name
        face = row["faces"][0]
        assert face["restored"] and face["skipped"] is None and face["score"] > 0.9
        assert 80 < face["size"] < 160  # the astronaut's face is about 120 px
    coffee = rows["coffee.png"]
    assert (coffee["status"], coffee["reason"], coffee["faces_found"]) == ("no-faces", "no face found", 0)
    assert Path(coffee["output"]).read_bytes() == (album_run["src"] / "noface" / "coffee.png").read_bytes()


@pytest.mark.parametrize(("name", "reason"), list(BAD.items()))
def test_a_bad_file_fails_with_a_clear_reason_and_the_album_goes_on(album_run, name, reason):
    row = read_report(album_run["report"])[name]
    assert (row["status"], row["reason"], row["faces_found"]) == ("failed", reason, 0)
    assert name in row["error"] and len(row["error"]) > len(name) + 10  # says which file, and what is wrong
    assert f"failed {row['error']}" in album_run["proc"].stderr.decode()  # on one line, even in a pipe
    assert not list(album_run["out"].rglob(name))
    assert album_run["proc"].returncode == 1


@pytest.mark.parametrize(("name", "faces"), list(SHARED_PHOTOS.items()))
def test_shared_realworld_photos_give_the_expected_face_counts(album_run, name, faces):
    shared_path(SHARED_WHOLE, name)
    row = read_report(album_run["report"])[name]
    assert (row["status"], row["faces_found"], row["faces_restored"]) == ("restored", faces, faces)


LOSSLESS = ["formats/astro.png", "formats/astro.bmp", "formats/astro.tif", "deep/astro16.png", "deep/astro16.tif",
            "alpha/astro_rgba.png", "grey/astro_l.png"]  # fmt: skip


@pytest.mark.parametrize("rel", LOSSLESS + [f"shared/{n}" for n in SHARED_PHOTOS if n.endswith(".png")])
def test_lossless_outputs_are_bit_identical_away_from_faces(album_run, rel):
    if rel.startswith("shared/"):
        shared_path(SHARED_WHOLE, Path(rel).name)
    before = load_photo(album_run["src"] / rel).pixels
    after = load_photo(album_run["out"] / rel).pixels
    assert after.dtype == before.dtype and after.shape == before.shape
    faces = read_report(album_run["report"])[Path(rel).name]["faces"]
    keep = away_from_faces(before.shape[:2], faces)
    assert keep.mean() > 0.15  # a close-up leaves less, but still a lot, to compare
    assert np.array_equal(after[keep], before[keep])
    if before.ndim == 3 and before.shape[2] in (2, 4):
        assert np.array_equal(after[..., -1], before[..., -1])  # alpha, everywhere
    # --method none: the faces change only by resampling (warped to the crop and back)
    diff = np.abs(after.astype(np.float64) - before.astype(np.float64)) / (257.0 if before.dtype == np.uint16 else 1)
    assert 0 < diff[~keep].mean() < 3.0


def test_faithful_files_through_the_command(album_run, astronaut_rgb):
    out = album_run["out"]
    with Image.open(out / "exif" / "rotated.jpg") as im:
        exif = im.getexif()
        assert im.size == (512, 400)  # upright: the orientation was applied to the pixels...
        assert exif.get(0x0112) in (None, 1)  # ...and reset in the tag
        assert exif.get(0x010F) == "facerestore-test"
        assert exif.get_ifd(0x8769).get(0x9003) == "2001:02:03 04:05:06"
        assert im.info.get("icc_profile") == album_run["icc"]
        assert b"facerestore-xmp-marker" in im.info.get("xmp", b"")
        assert np.abs(np.asarray(im).astype(int) - album_run["upright"]).mean() < 4
    deep = cv2.imread(str(out / "deep" / "astro16.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (512, 512, 3)
    assert load_photo(out / "deep" / "astro16.tif").pixels.dtype == np.uint16
    with Image.open(out / "grey" / "astro_l.png") as im:
        assert im.mode == "L"
    with Image.open(out / "alpha" / "astro_rgba.png") as im:
        assert im.mode == "RGBA"


# --------------------------------------------------------------------------------------------------
# other ways in: python -m, --version, --help


def test_python_dash_m_with_the_command_word_restores_a_single_photo(tmp_path, astronaut_rgb):
    src = save(tmp_path / "photo.jpg", astronaut_rgb, quality=90)
    proc = subprocess.run(
        [sys.executable, "-m", "facerestore_cli", "restore", str(src), "-m", "none", "-o", str(tmp_path / "out"),
         "--threads", "1"],
        capture_output=True, timeout=240, env=clean_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b""
    photo = load_photo(tmp_path / "out" / "photo.jpg")
    assert photo.pixels.shape == astronaut_rgb.shape and photo.format == "JPEG"
    assert proc.stderr == b""  # in a pipe: no table, and nothing failed


def test_version_and_help_of_the_installed_command():
    version = facerestore("--version")
    assert version.returncode == 0 and version.stdout.decode().strip() == f"facerestore {__version__}"
    dash_m = subprocess.run([sys.executable, "-m", "facerestore_cli", "--version"], capture_output=True, timeout=60)
    assert dash_m.stdout == version.stdout
    helped = facerestore("--help")
    assert helped.returncode == 0
    for command in ("restore", "build-dict", "people", "doctor", "weights", "cache", "train"):
        assert command in helped.stdout.decode()


def _command_paths(command, prefix=()):
    yield prefix
    for name, sub in getattr(command, "commands", {}).items():
        yield from _command_paths(sub, (*prefix, name))


def test_every_command_has_help():
    import typer

    paths = list(_command_paths(typer.main.get_command(app)))
    assert len(paths) >= 12
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], prog_name="facerestore")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output and " ".join(("facerestore", *path)) in result.output


# --------------------------------------------------------------------------------------------------
# exit codes


@pytest.fixture
def photo(tmp_path, astronaut_rgb) -> Path:
    return save(tmp_path / "in" / "astro.jpg", astronaut_rgb, quality=90)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "No such option"),
        (["--blend", "2"], "--blend"),
        (["--faces", "biggest"], "--faces"),
        (["-m", "memgan", "--refs", "{tmp}"], "--refs"),
        (["-m", "gan"], "--method"),
        (["-m", "dmdnet", "--weights", "{tmp}/missing.safetensors"], "missing.safetensors"),
        (["--in-place", "-o", "{tmp}/o"], "--in-place"),
        (["--in-place", "--skip-existing"], "--skip-existing"),
        (["--ext", "gif"], "--ext"),
        (["--detector", "bogus"], "bogus"),
        (["--report", "{photo}/report.jsonl"], "--report"),
    ],
)
def test_usage_errors_exit_2(tmp_path, photo, args, message):
    args = [a.format(tmp=tmp_path, photo=photo) for a in args]
    result = invoke(photo, "-m", "none", *args) if "-m" not in args else invoke(photo, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (tmp_path / "o").exists()


def test_no_photos_found_exits_2(tmp_path):
    missing = invoke(tmp_path / "nothing-here", "-m", "none")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr and "no photos" in missing.stderr
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    save(tmp_path / "empty" / "sub" / "a.png", np.zeros((8, 8, 3), np.uint8))
    empty = invoke(tmp_path / "empty", "-m", "none")
    assert empty.exit_code == 2 and "no photos to restore" in empty.stderr and "-r" in empty.stderr
    assert not list((tmp_path / "empty").glob("*_restored*"))


def test_the_command_exits_quickly_with_its_exit_code_and_all_its_output(tmp_path, astronaut_rgb):
    # the console script ends with os._exit once its output is flushed: codes and streams must survive it
    missing = facerestore(tmp_path / "nothing-here", "-m", "none")
    assert missing.returncode == 2 and b"does not exist" in missing.stderr
    save(tmp_path / "in" / "astro.png", astronaut_rgb)
    report = tmp_path / "r.jsonl"
    done = facerestore(tmp_path / "in", "-m", "none", "-o", tmp_path / "out", "--json", "--report", report)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout.decode())["restored"] == 1
    assert len(read_report(report)) == 1 and (tmp_path / "out" / "astro.png").is_file()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_ctrl_c_exits_130_and_leaves_nothing_partial(tmp_path, astronaut_rgb, sig, code):
    """Ctrl-C, a service manager's stop and a closed terminal: 128 + the signal, nothing partial."""
    big = cv2.resize(astronaut_rgb, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    for i in range(10):
        save(tmp_path / "in" / f"p{i}.jpg", big, quality=90)
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    proc = subprocess.Popen(
        [FACERESTORE, str(tmp_path / "in"), "-m", "none", "-o", str(out), "--threads", "1", "--report", str(report),
         "--strength", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(),
        # as from a terminal: a test run started in the background inherits SIGINT ignored, and Python
        # (rightly) keeps an inherited SIG_IGN, so the Ctrl-C case would test nothing
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the album finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err.decode()
    assert "interrupted" in err.decode()
    assert no_temporaries(tmp_path)
    written = sorted(p.name for p in out.iterdir())
    assert 1 <= len(written) < 10
    for name in written:  # every output is complete
        assert load_photo(out / name).pixels.shape == big.shape
    rows = read_report(report)
    assert {n for n, r in rows.items() if r["status"] == "restored"} == set(written)


# --------------------------------------------------------------------------------------------------
# outputs: where they go, never over an input, resuming


def test_output_folder_equal_to_the_input_folder_fails_that_file_and_keeps_the_input(tmp_path, photo):
    before = photo.read_bytes()
    mtime = photo.stat().st_mtime_ns
    result = invoke(photo.parent, "-m", "none", "-o", photo.parent, "--report", tmp_path / "r.jsonl")
    assert result.exit_code == 1
    row = read_report(tmp_path / "r.jsonl")["astro.jpg"]
    assert (row["status"], row["reason"]) == ("failed", "would-overwrite-input")
    assert "--in-place" in row["error"] and "--in-place" in result.stderr
    assert photo.read_bytes() == before and photo.stat().st_mtime_ns == mtime
    # with a suffix the same folder is fine, and the result sits next to the input
    ok = invoke(photo.parent, "-m", "none", "-o", photo.parent, "--suffix", "_r")
    assert ok.exit_code == 0 and (photo.parent / "astro_r.jpg").exists()
    assert photo.read_bytes() == before


def test_in_place_replaces_atomically(tmp_path, photo):
    from skimage import data

    coffee = save(photo.parent / "coffee.jpg", data.coffee(), quality=85)
    os.chmod(photo, 0o640)
    before = {p: (p.read_bytes(), p.stat()) for p in (photo, coffee)}
    result = invoke(photo.parent, "-m", "none", "--in-place", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["restored"] == 1
    after = photo.stat()
    assert after.st_ino != before[photo][1].st_ino  # a new file renamed over the old one
    assert stat.S_IMODE(after.st_mode) == 0o640  # with the old one's permissions
    assert photo.read_bytes() != before[photo][0]
    assert load_photo(photo).pixels.shape == (512, 512, 3)
    # a photo without a face is left exactly as it was: same bytes, same file
    assert coffee.read_bytes() == before[coffee][0] and coffee.stat().st_ino == before[coffee][1].st_ino
    assert sorted(p.name for p in photo.parent.iterdir()) == ["astro.jpg", "coffee.jpg"]


def test_output_folder_inside_the_album_is_not_restored_again(tmp_path, photo):
    save(photo.parent / "2020" / "b.png", np.asarray(Image.open(photo)))
    out = photo.parent / "restored"
    for _ in range(2):
        result = invoke(photo.parent, "-r", "-m", "none", "-o", out, "--report", tmp_path / "r.jsonl")
        assert result.exit_code == 0, result.output
        assert set(read_report(tmp_path / "r.jsonl")) == {"astro.jpg", "b.png"}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*")) == ["2020/b.png", "astro.jpg"]


def test_skip_existing_resumes_an_album(tmp_path, astronaut_rgb):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        save(tmp_path / "in" / name, astronaut_rgb, quality=90)
    out = tmp_path / "out"
    assert invoke(tmp_path / "in", "-m", "none", "-o", out).exit_code == 0
    (out / "b.jpg").unlink()  # as if the first run had been interrupted there
    old = time.time() - 3600
    for name in ("a.jpg", "c.jpg"):
        os.utime(out / name, (old, old))
    stamps = {n: (out / n).stat().st_mtime_ns for n in ("a.jpg", "c.jpg")}
    result = invoke(
        tmp_path / "in", "-m", "none", "-o", out, "--skip-existing", "--report", tmp_path / "r.jsonl", "--json"
    )
    assert result.exit_code == 0
    rows = read_report(tmp_path / "r.jsonl")
    assert {n: r["status"] for n, r in rows.items()} == {"a.jpg": "exists", "b.jpg": "restored", "c.jpg": "exists"}
    assert all((out / n).stat().st_mtime_ns == t for n, t in stamps.items())  # not recomputed or rewritten
    assert (out / "b.jpg").exists()
    assert json.loads(result.stdout.strip().splitlines()[-1])["skipped_existing"] == 2


def test_suffix_ext_and_default_names(tmp_path, photo):
    assert invoke(photo, "-m", "none", "--suffix", "_fixed", "--ext", "png", "-o", tmp_path / "o").exit_code == 0
    with Image.open(tmp_path / "o" / "astro_fixed.png") as im:
        assert im.format == "PNG" and im.size == (512, 512)
    assert invoke(photo, "-m", "none").exit_code == 0  # no -o: next to the input, with _restored
    with Image.open(photo.parent / "astro_restored.jpg") as im:
        assert im.format == "JPEG"


def test_globs_select_photos_and_mirror_below_the_pattern_root(tmp_path, astronaut_rgb):
    for rel in ("2019/a.jpg", "2019/b.png", "2020/c.jpg", "notes.jpg.txt"):
        save(tmp_path / "in" / rel, astronaut_rgb, quality=90) if not rel.endswith(".txt") else None
    result = invoke(str(tmp_path / "in" / "*" / "*.jpg"), "-m", "none", "-o", tmp_path / "o", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["images"] == 2
    assert sorted(p.relative_to(tmp_path / "o").as_posix() for p in (tmp_path / "o").rglob("*.*")) == [
        "2019/a.jpg",
        "2020/c.jpg",
    ]


# --------------------------------------------------------------------------------------------------
# bad input and unwritable output: the album goes on, exit 1, the report says why


def test_oversized_photo_is_refused_and_the_album_goes_on(tmp_path, photo, astronaut_rgb):
    save(photo.parent / "small.png", cv2.resize(astronaut_rgb, (200, 200)))
    report = tmp_path / "r"
    result = invoke(photo.parent, "-m", "none", "-o", tmp_path / "o", "--max-pixels", "100000", "--report", report)
    assert result.exit_code == 1
    rows = read_report(tmp_path / "r")
    assert (rows["astro.jpg"]["status"], rows["astro.jpg"]["reason"]) == ("failed", "too-large")
    assert "262,144" in rows["astro.jpg"]["error"]
    assert rows["small.png"]["status"] == "restored" and (tmp_path / "o" / "small.png").exists()


def test_unreadable_folder_is_reported_and_the_album_goes_on(tmp_path, photo, monkeypatch):
    blocked = photo.parent / "private"
    save(blocked / "secret.jpg", np.asarray(Image.open(photo)))
    save(photo.parent / "open" / "b.jpg", np.asarray(Image.open(photo)))
    real = os.scandir

    def scandir(path="."):
        if isinstance(path, (str, os.PathLike)) and Path(path) == blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = invoke(photo.parent, "-r", "-m", "none", "-o", tmp_path / "o", "--report", tmp_path / "r.jsonl")
    assert result.exit_code == 1
    rows = read_report(tmp_path / "r.jsonl")
    assert (rows["private"]["status"], rows["private"]["reason"]) == ("failed", "unreadable")
    assert "Permission denied" in rows["private"]["error"] and str(blocked) in result.stderr
    assert rows["astro.jpg"]["status"] == rows["b.jpg"]["status"] == "restored"


def test_unwritable_output_is_refused_before_any_work(tmp_path, photo):
    # (it used to fail each file, after restoring it; tests/test_trust.py has the /proc case)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("I am a file")
    for out in (not_a_folder, not_a_folder / "sub"):
        result = invoke(photo.parent, "-m", "none", "-o", out, "--report", tmp_path / "r.jsonl", "--json")
        assert result.exit_code == 2 and str(not_a_folder) in result.output
        assert not (tmp_path / "r.jsonl").exists()
    assert not_a_folder.read_text() == "I am a file"
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            result = invoke(photo, "-m", "none", "-o", locked, "--report", tmp_path / "r2.jsonl")
            assert result.exit_code == 2 and "cannot write into it" in result.output
        finally:
            locked.chmod(0o700)


def test_photo_without_faces_is_copied_through_and_exits_0(tmp_path):
    from skimage import data

    src = save(tmp_path / "coffee.jpg", data.coffee(), quality=85)
    result = invoke(src, "-m", "none", "-o", tmp_path / "o", "--report", tmp_path / "r.jsonl")
    assert result.exit_code == 0
    row = read_report(tmp_path / "r.jsonl")["coffee.jpg"]
    assert (row["status"], row["faces_found"]) == ("no-faces", 0)
    assert (tmp_path / "o" / "coffee.jpg").read_bytes() == src.read_bytes()


# --------------------------------------------------------------------------------------------------
# faces


def test_faces_largest_center_and_min_face_on_a_group_photo(tmp_path):
    group = shared_path(SHARED_WHOLE, "serengil_selfie-many-people.jpg")
    runs = {}
    for label, args in {
        "largest": ["--faces", "largest"],
        "center": ["--faces", "center"],
        "min": ["--min-face", "150"],
    }.items():
        report = tmp_path / f"{label}.jsonl"
        result = invoke(group, "-m", "none", "-o", tmp_path / label, "--report", report, *args)
        assert result.exit_code == 0
        runs[label] = read_report(report)[group.name]["faces"]
    largest = runs["largest"]
    assert len(largest) == 6 and [f["restored"] for f in largest].count(True) == 1
    chosen = next(f for f in largest if f["restored"])
    assert chosen["size"] == max(f["size"] for f in largest)
    assert all("--faces largest" in f["skipped"] for f in largest if not f["restored"])
    center = runs["center"]
    chosen = next(f for f in center if f["restored"])

    def off_centre(f):
        x0, y0, x1, y1 = f["box"]
        return ((x0 + x1) / 2 - 300) ** 2 + ((y0 + y1) / 2 - 302) ** 2

    assert off_centre(chosen) == min(off_centre(f) for f in center)
    assert [f["restored"] for f in center].count(True) == 1
    small = [f for f in runs["min"] if f["size"] < 150]
    assert small and all(not f["restored"] and "--min-face" in f["skipped"] for f in small)
    assert all(f["restored"] for f in runs["min"] if f["size"] >= 150)


def test_aligned_crops_keep_their_size(tmp_path):
    crops = shared_path("data/eval-dev/realworld/cropped")
    inputs = [crops / "tencentarc_Adele_crop.png", crops / "xpixelgroup_hermione.jpg"]
    result = invoke(*inputs, "--aligned", "-m", "none", "-o", tmp_path / "o", "--report", tmp_path / "r.jsonl")
    assert result.exit_code == 0, result.output
    rows = read_report(tmp_path / "r.jsonl")
    for src in inputs:
        with Image.open(src) as a, Image.open(tmp_path / "o" / src.name) as b:
            assert a.size == b.size
        assert (rows[src.name]["faces_found"], rows[src.name]["faces_restored"]) == (1, 1)


def test_save_faces_and_compare(tmp_path, photo):
    result = invoke(photo, "-m", "none", "-o", tmp_path / "o", "--save-faces", "--compare", "--report", tmp_path / "r")
    assert result.exit_code == 0
    face = read_report(tmp_path / "r")["astro.jpg"]["faces"][0]
    crop, restored = Path(face["crop"]), Path(face["restored_crop"])
    assert crop == tmp_path / "o" / "astro_faces" / "face00_input.png"
    a, b = np.asarray(Image.open(crop)), np.asarray(Image.open(restored))
    assert a.shape == b.shape == (512, 512, 3)
    assert np.array_equal(a, b)  # --method none restores nothing
    with Image.open(tmp_path / "o" / "astro_compare.jpg") as im:
        assert im.size[1] == 512 and 1024 < im.size[0] <= 1040  # before | a divider | after
        side = np.asarray(im).astype(int)
    assert np.abs(side[:, :512] - np.asarray(Image.open(photo)).astype(int)).mean() < 4  # the input on the left


def test_upscale_2_doubles_the_photo_with_the_faces_pasted(tmp_path, astronaut_rgb):
    src = save(tmp_path / "a.png", astronaut_rgb)
    result = invoke(src, "-m", "none", "--upscale", "2", "-o", tmp_path / "o", "--report", tmp_path / "r")
    assert result.exit_code == 0
    out = load_photo(tmp_path / "o" / "a.png").pixels
    assert out.shape == (1024, 1024, 3)
    plain = cv2.resize(astronaut_rgb, None, fx=2, fy=2, interpolation=cv2.INTER_LANCZOS4)
    keep = away_from_faces((1024, 1024), read_report(tmp_path / "r")["a.png"]["faces"], scale=2)
    assert np.array_equal(out[keep], plain[keep])
    # the face was pasted from the 512 crop, so it is not the Lanczos enlargement, but it is close to it
    face = np.abs(out[~keep].astype(int) - plain[~keep].astype(int))
    assert (face > 0).any(axis=1).sum() > 10_000 and face.mean() < 4


# --------------------------------------------------------------------------------------------------
# a real model


def photo_mask(rgb: np.ndarray) -> np.ndarray:
    """Where the faces' paste masks are above one half, in photo pixels (library code, in-process)."""
    from facerestore_cli.face.align import FACE_SIZE, align_face, footprint, warp_from_face
    from facerestore_cli.face.detect import create_detector
    from facerestore_cli.face.landmarks import default_predictor
    from facerestore_cli.paste import face_mask

    total = np.zeros(rgb.shape[:2], np.float32)
    for f in create_detector("retinaface", device="cpu", threads=1).detect(rgb):
        aligned = align_face(rgb, f.landmarks)
        region = footprint(aligned.inverse, FACE_SIZE, rgb.shape[:2])
        mask = face_mask(default_predictor().predict(aligned.image))
        total[region.slices()] = np.maximum(total[region.slices()], warp_from_face(mask, aligned.inverse, region))
    return total > 0.5


@pytest.mark.parametrize("method", ["dmdnet", "memgan"])
def test_shipped_weights_restore_faces_and_nothing_else(tmp_path, astronaut_rgb, method):
    """A fresh install, no network, no --weights: the shipped compact weights restore the faces."""
    colour = save(tmp_path / "in" / "astro.png", astronaut_rgb)
    grey = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)
    save(tmp_path / "in" / "astro_bw.png", np.dstack([grey] * 3))
    report = tmp_path / "r.jsonl"
    proc = facerestore(
        tmp_path / "in", "-m", method, "-o", tmp_path / method, "--threads", "1", "--report", report, "--json",
        "--strength", "1", home=tmp_path / "home",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    used = json.loads(proc.stdout)["restorer"]
    shipped = Path(__file__).resolve().parents[1] / "weights" / f"{method}-compact.safetensors"
    assert used["method"] == method and Path(used["weights"]).name == shipped.name
    assert used["sha256"] == json.loads((shipped.parent / "MANIFEST.json").read_text())["files"][shipped.name]["sha256"]
    identity = invoke(colour, "-m", "none", "-o", tmp_path / "none", "--strength", "1")
    assert identity.exit_code == 0
    rows = read_report(report)
    assert rows["astro.png"]["faces_restored"] == rows["astro_bw.png"]["faces_restored"] == 1
    before = astronaut_rgb.astype(int)
    after = load_photo(tmp_path / method / "astro.png").pixels.astype(int)
    resampled = load_photo(tmp_path / "none" / "astro.png").pixels.astype(int)
    keep = away_from_faces(before.shape[:2], rows["astro.png"]["faces"])
    assert np.array_equal(after[keep], before[keep])
    inside = photo_mask(astronaut_rgb)
    assert inside.sum() > 4000
    # --method none went through the same detect/align/paste: what differs from it is the model's work
    by_model = np.abs(after - resampled)[inside]
    assert (by_model.max(axis=1) > 0).mean() > 0.5 and by_model.mean() > 1.5, by_model.mean()
    assert np.abs(resampled - before)[inside].mean() < 3.5  # resampling alone changes little
    # a black-and-white photo saved as RGB gets a grey face, not a coloured one
    bw = load_photo(tmp_path / method / "astro_bw.png").pixels.astype(int)
    assert np.array_equal(bw[..., 0], bw[..., 1]) and np.array_equal(bw[..., 1], bw[..., 2])
    assert np.abs(bw[..., 0] - grey)[inside].mean() > 2
