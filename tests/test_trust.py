"""Nothing is lost to a typo, a signal or a bad file (the fault-injection cases, one test each).

Each test reproduces a case that lost data or crashed before it was fixed: a forgotten ``--report``
file name, damaged weights, set-up mistakes. They run the real command in-process on real files.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from test_cli import invoke, read_report, save

from facerestore_cli.weights import WeightsIntegrityError, load_weights

SHIPPED = Path(__file__).resolve().parents[1] / "weights"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def album(tmp_path, astronaut_rgb) -> Path:
    folder = tmp_path / "album"
    save(folder / "a.jpg", astronaut_rgb, quality=90)
    save(folder / "b.jpg", astronaut_rgb[:, ::-1].copy(), quality=90)
    return folder


def damaged_copy(tmp_path: Path, name: str, change) -> Path:
    """A copy of the shipped MemGAN weights, away from any manifest, with its tensors changed."""
    with safe_open(str(SHIPPED / "memgan-compact.safetensors"), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    out = tmp_path / "mine" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    changed = {k: change(k, v) for k, v in tensors.items()}
    save_file({k: v for k, v in changed.items() if v is not None}, str(out), metadata=meta)
    return out


# -- 1. a report path can never destroy a photo ----------------------------------------------------


def test_a_forgotten_report_name_never_overwrites_a_photo(tmp_path, album):
    # `facerestore --report *.jpg -o out/`: the shell gives a.jpg to --report and b.jpg as the input
    before = {p.name: sha(p) for p in album.iterdir()}
    result = invoke("--report", album / "a.jpg", album / "b.jpg", "-m", "none", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "refusing to overwrite an image file" in result.output
    assert {p.name: sha(p) for p in album.iterdir()} == before
    assert not (tmp_path / "out").exists(), "refused before any work"


def test_a_report_path_that_is_an_input_or_a_folder_is_refused(tmp_path, album):
    odd = album / "c.data"  # an input whatever its extension, named explicitly
    shutil.copyfile(album / "a.jpg", odd)
    for report, words in ((odd, "one of the photos"), (album, "is a folder")):
        result = invoke(odd, album / "b.jpg", "-m", "none", "-o", tmp_path / "out", "--report", report)
        assert result.exit_code == 2, result.output
        assert words in result.output
    assert sha(odd) == sha(album / "a.jpg")


def test_an_existing_report_that_is_not_an_image_is_still_written(tmp_path, album):
    report = tmp_path / "r.jsonl"
    report.write_text("old\n")
    result = invoke(album, "-m", "none", "-o", tmp_path / "out", "--report", report)
    assert result.exit_code == 0, result.output
    assert set(read_report(report)) == {"a.jpg", "b.jpg"}


# -- 2. damaged weights never reach a photo ----------------------------------------------------------


def test_weights_with_non_finite_values_are_refused_before_any_photo(tmp_path, album):
    flat = {"n": 0}

    def poison(name, t):
        if t.is_floating_point() and t.numel() > 1000 and flat["n"] < 1500:
            t = t.clone().reshape(-1)
            t[:500] = float("nan")
            flat["n"] += 500
            return t.reshape(-1)
        return t

    bad = damaged_copy(tmp_path, "flipped.safetensors", poison)
    with pytest.raises(WeightsIntegrityError, match="1500 non-finite values"):
        load_weights(bad)
    before = sha(album / "a.jpg")
    result = invoke(album / "a.jpg", "-m", "memgan", "--weights", bad, "--in-place", "--threads", "1")
    assert result.exit_code == 2
    assert "non-finite" in result.output
    assert sha(album / "a.jpg") == before


@pytest.mark.parametrize(
    ("label", "change"),
    [
        # finite weights whose forward overflows to NaN (every tensor x8)
        ("overflow", lambda k, t: t * 8 if t.is_floating_point() else t),
        # finite weights whose output is far out of range (the to-RGB layers x30): clamping alone
        # would paste flat saturated patches
        ("out-of-range", lambda k, t: t * 30 if t.is_floating_point() and "to_rgbs" in k else t),
    ],
)
def test_garbage_output_fails_the_photo_and_keeps_the_original(tmp_path, album, label, change):
    bad = damaged_copy(tmp_path, f"{label}.safetensors", change)
    before = sha(album / "a.jpg")
    report = tmp_path / "r.jsonl"
    result = invoke(
        album / "a.jpg", "-m", "memgan", "--weights", bad, "--in-place", "--threads", "1", "--report", report, "--json"
    )
    assert result.exit_code == 1, result.output
    assert sha(album / "a.jpg") == before, "--in-place must not replace the original"
    row = read_report(report)["a.jpg"]
    assert row["status"] == "failed" and row["reason"] == "restorer-output"
    assert row["faces"] and all(f["error"] and not f["restored"] for f in row["faces"])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["faces_restored"] == 0 and summary["failed"] == 1


def test_weights_that_do_not_fit_the_network_are_a_setup_error(tmp_path, album):
    def drop_one(name, t):  # one tensor missing, one the wrong shape
        if name == "decoder.to_rgbs.6.bias":
            return None
        return t.reshape(-1)[:-1].clone() if name == "decoder.to_rgbs.6.modulated_conv.weight" else t

    bad = damaged_copy(tmp_path, "misshapen.safetensors", drop_one)
    result = invoke(album / "a.jpg", "-m", "memgan", "--weights", bad, "-o", tmp_path / "out", "--threads", "1")
    assert result.exit_code == 2
    assert "does not fit the memgan network" in result.output
    assert "Traceback" not in result.output


def test_good_shipped_weights_pass_the_output_check(tmp_path, album):
    result = invoke(album / "a.jpg", "-m", "memgan", "-o", tmp_path / "out", "--threads", "1")
    assert result.exit_code == 0, result.output
    restored = np.asarray(Image.open(tmp_path / "out" / "a.jpg"))
    assert restored.std() > 10
    assert torch.isfinite(torch.from_numpy(restored.astype(np.float32))).all()


def test_weights_verify_checks_the_files_in_use_listed_or_not(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACERESTORE_WEIGHTS", raising=False)
    good = damaged_copy(tmp_path, "good.safetensors", lambda k, t: t)
    result = invoke("weights", "verify", "--weights", good, "--json")
    assert result.exit_code == 0, result.output
    rows = {r["in_use_for"]: r for r in json.loads(result.stdout) if r["in_use_for"]}
    assert rows["memgan"]["path"] == str(good) and rows["memgan"]["status"] == "unlisted"
    assert rows["dmdnet"]["status"] == "ok"  # the shipped file, re-hashed against its manifest

    bad = damaged_copy(tmp_path, "bad.safetensors", lambda k, t: t * float("inf") if "to_rgbs" in k else t)
    monkeypatch.setenv("FACERESTORE_WEIGHTS", str(bad))
    result = invoke("weights", "verify", "--json")
    assert result.exit_code == 1
    row = next(r for r in json.loads(result.stdout) if r["in_use_for"] == "memgan")
    assert row["status"] == "damaged" and "non-finite" in row["detail"]


# -- 13. the album review page -----------------------------------------------------------------------


def test_review_page_of_an_album_run_shows_photos_faces_and_failures(tmp_path, album):
    (album / "broken.jpg").write_text("not a photo")
    page = tmp_path / "review.html"
    result = invoke(album, "-m", "none", "--strength", "1", "-o", tmp_path / "out", "--review", page, "--compare")
    assert result.exit_code == 1  # the broken photo failed; the others are restored
    text = page.read_text(encoding="utf-8")
    assert text.count('class="card') >= 3 and "broken.jpg" in text and "not-an-image" in text
    assert "http://" not in text and "https://" not in text
    assert text.count("data:image/jpeg;base64,") >= 2 + 2 * 2  # two thumbnails, a before/after per face
    compare = np.asarray(Image.open(tmp_path / "out" / "a_compare.jpg"))
    assert compare.shape[1] > 2 * 512  # before | divider | after
    refused = invoke(album, "-m", "none", "-o", tmp_path / "o2", "--review", album / "a.jpg")
    assert refused.exit_code == 2 and "one of the photos to restore" in refused.output


# -- 10. data on stdout, messages on stderr ----------------------------------------------------------------


def test_tables_go_to_stdout_uncut_and_the_summary_only_to_a_terminal(tmp_path, album):
    from test_cli import facerestore

    home = tmp_path / ("a-rather-long-folder-name-" * 4) / "home"
    doctor = facerestore("doctor", home=home)
    assert doctor.returncode == 0
    text = doctor.stdout.decode()
    assert "versions" in text and "facerestore" in text and not doctor.stderr.strip()
    assert max(len(line) for line in text.splitlines()) > 80, "a pipe gets the whole table, not 80 columns"
    listed = facerestore("weights", "list", home=home)
    assert "dmdnet-compact.safetensors" in listed.stdout.decode()
    run = facerestore(album, "-m", "none", "-o", tmp_path / "out", "--threads", "1", home=home)
    assert run.returncode == 0 and run.stdout == b""
    assert b"faces restored / found" not in run.stderr  # no table in a script's log


# -- 6. set-up mistakes are messages, not tracebacks ------------------------------------------------------


def test_build_dict_of_an_empty_folder_or_with_an_unwritable_cache_is_a_setup_message(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("build-dict", empty, "--embedder", "dlib")
    assert result.exit_code == 2 and "no reference photos in it" in result.output
    assert "--people" not in result.output and "Traceback" not in result.output
    a_file = tmp_path / "cache-is-a-file"
    a_file.write_text("x")
    monkeypatch.setenv("FACERESTORE_CACHE", str(a_file))
    refs = tmp_path / "refs"
    save(refs / "a.jpg", np.zeros((64, 64, 3), np.uint8))
    result = invoke("build-dict", refs, "--embedder", "dlib")
    assert result.exit_code == 2 and "cannot write the dictionary cache" in result.output
    assert "FACERESTORE_CACHE" in result.output


# -- 3. what a killed run left behind ------------------------------------------------------------------


def test_the_next_run_removes_the_temporary_files_a_killed_run_left(tmp_path, album):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".a.jpg.0123abcd.tmp"  # atomic_write's naming, from a run killed an hour ago
    stale.write_bytes(b"half a photo")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    busy = out / ".b.jpg.89abcdef.tmp"  # another run's write, still under way
    busy.write_bytes(b"being written")
    theirs = out / ".notes.txt.tmp"  # not our naming
    theirs.write_bytes(b"x")
    os.utime(theirs, (an_hour_ago, an_hour_ago))
    result = invoke(album, "-m", "none", "-o", out, "--threads", "1")
    assert result.exit_code == 0, result.output
    assert not stale.exists() and busy.exists() and theirs.exists()
    assert "removed 1 temporary file" in result.output and ".a.jpg.0123abcd.tmp" in result.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.jpg", "b.jpg"]


# -- 4. a report that cannot be written never stops the album --------------------------------------------


def test_a_file_name_that_is_not_utf8_is_kept_exactly_in_the_report(tmp_path, album):
    odd = os.fsdecode(b"caf\xe9-\xff.jpg")  # Latin-1 bytes: not UTF-8, decoded with surrogateescape
    shutil.copyfile(album / "a.jpg", album / odd)
    report = tmp_path / "r.jsonl"
    result = invoke(album, "-m", "none", "-o", tmp_path / "out", "--report", report, "--threads", "1")
    assert result.exit_code == 0, result.output
    raw = report.read_bytes()
    raw.decode("utf-8")  # the report itself is valid UTF-8
    rows = [json.loads(line) for line in raw.splitlines()]
    names = {os.fsencode(Path(r["input"]).name) for r in rows}
    assert names == {b"a.jpg", b"b.jpg", b"caf\xe9-\xff.jpg"}, "the name's bytes come back exactly"
    odd_row = next(r for r in rows if os.fsencode(r["input"]).endswith(b"\xff.jpg"))
    assert odd_row["status"] in ("restored", "unchanged") and Path(odd_row["output"]).exists()


def test_a_report_on_a_full_device_fails_its_lines_and_the_album_goes_on(tmp_path, album):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    out = tmp_path / "out"
    result = invoke(album, "-m", "none", "-o", out, "--report", "/dev/full", "--json", "--threads", "1")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "could not write the line of" in result.output and "No space left" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.jpg"], "every photo was still restored"
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["report_errors"] == 2 and summary["failed"] == 0 and summary["exit_code"] == 1


def test_a_report_line_cut_by_a_full_disk_leaves_only_whole_lines(tmp_path):
    from facerestore_cli.report import ImageReport, ReportWriter

    path = tmp_path / "r.jsonl"
    writer = ReportWriter(path)
    assert writer.write(ImageReport(input="a.jpg", status="restored"))
    real = writer._file

    class FillsUp:  # the OS boundary: the disk takes 10 more bytes, then refuses
        def write(self, data):
            os.write(real.fileno(), bytes(data[:10]))
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(real, name)

    writer._file = FillsUp()
    assert not writer.write(ImageReport(input="b.jpg", status="restored"))
    writer._file = real
    assert writer.write(ImageReport(input="c.jpg", status="restored"))
    writer.close()
    assert [json.loads(line)["input"] for line in path.read_text().splitlines()] == ["a.jpg", "c.jpg"]
    assert len(writer.errors) == 1 and "b.jpg" in writer.errors[0]


# -- 5. a photo is done only when all its outputs are -----------------------------------------------------


def test_save_faces_on_a_full_disk_leaves_the_photo_to_do_again(tmp_path, album, monkeypatch):
    from facerestore_cli import imagefile

    real = imagefile._write_bytes

    def full_for_faces(path, data):  # the disk fills up when the face crops are written
        if Path(path).parent.name.endswith("_faces"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    args = (album / "a.jpg", "-m", "none", "--strength", "1", "--save-faces", "-o", out, "--threads", "1")
    monkeypatch.setattr(imagefile, "_write_bytes", full_for_faces)
    result = invoke(*args, "--report", report)
    assert result.exit_code == 1, result.output
    row = read_report(report)["a.jpg"]
    assert row["status"] == "failed" and row["reason"] == "disk-full"
    assert not (out / "a.jpg").exists(), "the photo is not published while its crops are missing"
    monkeypatch.setattr(imagefile, "_write_bytes", real)
    result = invoke(*args, "--skip-existing", "--report", report)
    assert result.exit_code == 0, result.output
    assert read_report(report)["a.jpg"]["status"] == "restored", "the rerun did it, not skipped it"
    crops = sorted(p.name for p in (out / "a_faces").iterdir() if not p.name.startswith("."))
    assert crops == ["face00_input.png", "face00_restored.png"] and (out / "a.jpg").exists()


# -- 6. the rest of the set-up mistakes ---------------------------------------------------------------------


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, album):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for out, words in (
        (a_file, "is a file, not a folder"),
        (a_file / "sub", "is a file, so the folder cannot be created"),
        (Path("/proc/facerestore-test/out"), "cannot create it"),  # /proc takes no new files, even from root
    ):
        started = time.perf_counter()
        result = invoke(album, "-m", "memgan", "-o", out, "--threads", "1")
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output
        assert time.perf_counter() - started < 5, "refused before the models load"
    assert not (tmp_path / "a-file").is_dir()


def test_upscale_past_max_pixels_fails_that_photo_and_the_album_goes_on(tmp_path, album, astronaut_rgb):
    save(album / "small.png", astronaut_rgb[::2, ::2].copy())  # 256x256: x2 is 262,144 pixels
    report = tmp_path / "r.jsonl"
    result = invoke(
        album, "-m", "none", "--upscale", "2", "--max-pixels", "600000", "-o", tmp_path / "out", "--report", report
    )
    assert result.exit_code == 1, result.output
    rows = read_report(report)
    for name in ("a.jpg", "b.jpg"):  # 512x512: x2 is 1,048,576 pixels
        assert rows[name]["status"] == "failed" and rows[name]["reason"] == "upscale-too-large"
        assert "more than --max-pixels 600,000" in rows[name]["error"]
    assert rows["small.png"]["status"] in ("restored", "unchanged")
    assert np.asarray(Image.open(tmp_path / "out" / "small.png")).shape[:2] == (512, 512)
    assert not (tmp_path / "out" / "a.jpg").exists()


# -- 8. HEIC photos are never silently left out --------------------------------------------------------------


def test_heic_photos_without_pillow_heif_are_listed_as_skipped_with_the_install_hint(tmp_path, album):
    if importlib.util.find_spec("pillow_heif") is not None:
        pytest.skip("pillow-heif is installed: HEIC photos are read")
    (album / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    (album / "other.HEIF").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    report = tmp_path / "r.jsonl"
    result = invoke(album, "-m", "none", "-o", tmp_path / "out", "--report", report, "--json")
    assert result.exit_code == 1, result.output
    rows = read_report(report)
    for name in ("phone.heic", "other.HEIF"):
        assert rows[name]["status"] == "skipped" and rows[name]["reason"] == "needs-pillow-heif"
        assert 'pip install "facerestore-cli[heif]"' in rows[name]["error"]
    assert 'pip install "facerestore-cli[heif]"' in result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["skipped"], summary["restored"] + summary["unchanged"], summary["failed"]) == (2, 2, 0)


# -- 10. a resumed album keeps its report --------------------------------------------------------------------


def test_skip_existing_keeps_the_report_lines_of_the_photos_done_before(tmp_path, album):
    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    first = invoke(album, "-m", "none", "-o", out, "--report", report, "--threads", "1")
    assert first.exit_code == 0, first.output
    before = read_report(report)
    (out / "b.jpg").unlink()  # as if the first run had been interrupted before b.jpg
    again = invoke(album, "-m", "none", "-o", out, "--report", report, "--skip-existing", "--json", "--threads", "1")
    assert again.exit_code == 0, again.output
    rows = read_report(report)
    assert set(rows) == {"a.jpg", "b.jpg"}, "one line per photo of the album"
    kept = rows["a.jpg"]
    assert kept.pop("from_earlier_run") is True and kept == before["a.jpg"], "a.jpg's line as first written"
    assert rows["b.jpg"]["status"] == before["b.jpg"]["status"] and "from_earlier_run" not in rows["b.jpg"]
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["skipped_existing"] == 1


# -- 7. references: group photos, stray photos, symlinks ------------------------------------------------------

SELFIE = ("data", "eval-dev", "realworld", "whole", "serengil_selfie-many-people.jpg")


def test_a_group_photo_is_no_reference_unless_allowed(tmp_path, monkeypatch, album):
    from conftest import shared_path

    monkeypatch.setenv("FACERESTORE_CACHE", str(tmp_path / "cache"))
    refs = tmp_path / "refs"
    refs.mkdir()
    shutil.copyfile(shared_path(*SELFIE), refs / "selfie.jpg")  # 6 faces; the largest is twice the next
    refused = invoke("build-dict", refs, "--embedder", "dlib", "--json")
    assert refused.exit_code == 1, refused.output
    assert "6 faces: a reference photo must show only the person" in refused.output
    assert "--allow-groups" in refused.output
    allowed = invoke("build-dict", refs, "--embedder", "dlib", "--allow-groups", "--json")
    assert allowed.exit_code == 0, allowed.output
    (row,) = json.loads(allowed.stdout)
    assert row["used"] == 1 and row["references"][0]["face_size"] > 300  # the selfie-taker's face
    setup = invoke(album / "a.jpg", "--refs", refs, "--embedder", "dlib", "-o", tmp_path / "out", "--threads", "1")
    assert setup.exit_code == 2 and "6 faces" in setup.output and "Traceback" not in setup.output
    ok = invoke(
        album / "a.jpg", "--refs", refs, "--embedder", "dlib", "--allow-groups", "-o", tmp_path / "out",
        "--threads", "1",
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output


def test_a_people_folder_with_a_stray_photo_and_symlinks_still_compiles_its_people(tmp_path, monkeypatch, album):
    monkeypatch.setenv("FACERESTORE_CACHE", str(tmp_path / "cache"))
    people = tmp_path / "people"
    for name, photo in (("alice", "a.jpg"), ("bob", "b.jpg")):
        (people / name).mkdir(parents=True)
        shutil.copyfile(album / photo, people / name / "1.jpg")
    shutil.copyfile(album / "a.jpg", people / "stray.jpg")  # dropped at the top by mistake
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copyfile(album / "b.jpg", elsewhere / "x.jpg")
    (people / "everyone").symlink_to(".")
    (people / "outsider").symlink_to(elsewhere)
    built = invoke("build-dict", people, "--embedder", "dlib", "--json")
    assert built.exit_code == 0, built.output
    assert sorted(r["person"] for r in json.loads(built.stdout)) == ["alice", "bob"]
    assert "1 photo(s) at the top level belong to no person" in built.output and "stray.jpg" in built.output
    listed = invoke("people", people, "--embedder", "dlib", "--json")
    assert listed.exit_code == 0, listed.output
    assert [r["person"] for r in json.loads(listed.stdout)] == ["alice", "bob"]
    assert "skipping" in listed.output and "outside the people folder" in listed.output
    assert all(r["cached"] for r in json.loads(listed.stdout))


def test_a_person_folder_with_a_sub_folder_stays_one_person(tmp_path, monkeypatch, album):
    monkeypatch.setenv("FACERESTORE_CACHE", str(tmp_path / "cache"))
    alice = tmp_path / "alice"
    for n in range(3):
        save(alice / f"{n}.jpg", np.asarray(Image.open(album / "a.jpg")))
    (alice / "old").mkdir()
    shutil.copyfile(album / "b.jpg", alice / "old" / "x.jpg")
    built = invoke("build-dict", alice, "--embedder", "dlib", "--json")
    assert built.exit_code == 0, built.output
    assert [r["person"] for r in json.loads(built.stdout)] == ["alice"]
    assert "sub-folders old are not used" in built.output


# -- 11. help that reads well at 80 columns -------------------------------------------------------------------


def _commands(command, path=("facerestore",)):
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


def test_every_option_of_every_command_has_help_and_restore_groups_them():
    import typer

    from facerestore_cli.cli import app

    missing = [
        f"{' '.join(path)} {p.name}"
        for path, command in _commands(typer.main.get_command(app))
        for p in command.params
        if not getattr(p, "hidden", False) and not (getattr(p, "help", None) or "").strip()
    ]
    assert missing == []
    restore = typer.main.get_command(app).commands["restore"]
    panels = {p.name: getattr(p, "rich_help_panel", None) for p in restore.params if not p.hidden}
    panels.pop("inputs")
    assert set(panels.values()) <= {"Input", "Output", "Faces", "References", "Speed", "Cluster"}, panels
    for name, panel in (("recursive", "Input"), ("output", "Output"), ("strength", "Faces"),
                        ("people", "References"), ("allow_groups", "References"), ("threads", "Speed")):  # fmt: skip
        assert panels[name] == panel


def test_help_at_80_columns_has_no_type_labels_and_shows_the_short_form():
    from typer.testing import CliRunner

    from facerestore_cli.cli import app

    runner = CliRunner()
    for args in (["--help"], ["restore", "--help"], ["build-dict", "--help"], ["weights", "fetch", "--help"]):
        text = runner.invoke(app, args, env={"COLUMNS": "80", "NO_COLOR": "1"}, prog_name="facerestore").output
        assert "Usage" in text
        for label in ("<list[str]>", "<bool>", "<path>", "<str>", "<int>"):
            assert label not in text, f"{args}: {label}"
        assert max(len(line) for line in text.splitlines()) <= 80
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "80"}, prog_name="facerestore").output
    assert "facerestore PHOTO" in top and "--install-completion" in top
    restore = runner.invoke(app, ["restore", "--help"], env={"COLUMNS": "80"}, prog_name="facerestore").output
    for panel in ("Input", "Output", "Faces", "References", "Speed"):
        assert f"─ {panel} ─" in restore
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "--install-completion" in readme


def test_bare_restore_says_what_is_missing():
    for args in (("restore",), ("-o", "somewhere")):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert "nothing to restore: give photos, folders or glob patterns" in result.output


def test_an_album_folder_named_like_a_command_is_restored(tmp_path, monkeypatch, astronaut_rgb, capsys):
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "cache" / "a.jpg", astronaut_rgb, quality=90)
    save(tmp_path / "people" / "b.jpg", astronaut_rgb, quality=90)
    result = invoke("cache", "-o", "out", "-m", "none", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "a.jpg").exists()
    result = invoke("people", "-m", "none", "-o", "out2", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out2" / "b.jpg").exists()
    listed = invoke("cache", "list", "--json")  # the command is still the command
    assert listed.exit_code == 0 and isinstance(json.loads(listed.stdout), list)
    shutil.rmtree(tmp_path / "cache")
    capsys.readouterr()
    missing = invoke("cache", "-o", "out", "-m", "none")  # the note is printed before the command runs
    assert missing.exit_code == 2 and "write ./cache" in capsys.readouterr().err


# -- 12. the official weights ------------------------------------------------------------------------------


def test_dmdnet_on_the_compact_weights_names_the_official_checkpoint_once(tmp_path, monkeypatch, album):
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))  # no imported official weights
    monkeypatch.delenv("FACERESTORE_WEIGHTS", raising=False)
    result = invoke(album, "-m", "dmdnet", "-o", tmp_path / "out", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert result.output.count("not on its official checkpoint, which exists") == 1, "once per run, not per photo"
    for words in ("CC BY-NC-SA 4.0", "about 600 MB", "facerestore weights fetch dmdnet", "ngf 16"):
        assert words in result.output
    quiet = invoke(album, "-m", "dmdnet", "-o", tmp_path / "out2", "--threads", "1", "--quiet")
    assert quiet.exit_code == 0 and "official checkpoint" not in quiet.output
    memgan = invoke(album / "a.jpg", "-m", "memgan", "-o", tmp_path / "out3", "--threads", "1")
    assert "official checkpoint" not in memgan.output  # MemGAN has none to offer


def test_fetch_offline_gives_up_within_seconds_and_suggests_import(tmp_path, monkeypatch):
    from facerestore_cli.weights import DownloadError, fetch

    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    started = time.monotonic()
    with pytest.raises(DownloadError) as caught:
        fetch("dmdnet", url="http://nonexistent.invalid/DMDNet.pth", dest_dir=tmp_path / "w", progress=False)
    assert time.monotonic() - started < 10, "the default retries must not back off for half a minute"
    message = str(caught.value)
    assert "does not resolve" in message and "facerestore weights import DMDNet.pth --method dmdnet" in message
    result = invoke("weights", "fetch", "dmdnet", "--url", "http://nonexistent.invalid/DMDNet.pth")
    assert result.exit_code == 1 and "weights import" in result.output and "Traceback" not in result.output


def test_fetch_from_a_server_that_refuses_suggests_import(tmp_path):
    import http.server
    import threading

    from facerestore_cli.weights import DownloadError, fetch

    class Gone(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gone)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/DMDNet.pth"
        with pytest.raises(DownloadError, match="HTTP 404") as caught:
            fetch("dmdnet", url=url, dest_dir=tmp_path / "w", progress=False)
        assert "facerestore weights import DMDNet.pth --method dmdnet" in str(caught.value)
    finally:
        server.shutdown()
