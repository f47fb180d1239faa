"""Nothing is lost to a typo, a signal or a bad file (the fault-injection cases, one test each).

Each test reproduces a case that lost data or crashed before it was fixed: a forgotten ``--report``
file name, damaged weights, set-up mistakes. They run the real command in-process on real files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
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
