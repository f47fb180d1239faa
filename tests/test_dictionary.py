"""Per-person dictionaries: compiled once, cached by content, rejected references explained.

The DMDNet used here is a tiny random-weights model written by the test (a dictionary's contents do not
matter for caching and routing, only that the real encoder produced them). Faces come from
scikit-image's astronaut; the identity-outlier test needs the London pairs (``FACERESTORE_SHARED``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_path
from skimage import data

from facerestore_cli.pipeline import Pipeline, RestoreOptions
from facerestore_cli.references.dictionary import (
    DICTIONARY_FORMAT,
    DictionaryCache,
    DictionaryError,
    cache_root,
    dictionary_key,
    dictionary_settings,
    reference_files,
)

TINY = {"ngf": 8, "banks": 4}


def make_tiny_dmdnet(path: Path, seed: int = 0) -> Path:
    from facerestore_cli.models import create_model
    from facerestore_cli.weights import save_weights

    torch.manual_seed(seed)
    model = create_model("dmdnet", TINY)
    save_weights(model.state_dict(), path, {"method": "dmdnet", "config": TINY})
    return path


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return make_tiny_dmdnet(tmp_path_factory.mktemp("weights") / "tiny-dmdnet.safetensors")


@pytest.fixture(scope="module")
def pipeline(tiny_weights) -> Pipeline:
    # dlib explicitly: these tests check dlib's distances, whatever insightface pack the machine has
    options = RestoreOptions(
        method="dmdnet", weights=tiny_weights, device="cpu", threads=1, batch_size=2, embedder="dlib"
    )
    return Pipeline(options)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FACERESTORE_CACHE", str(root))
    return root


def write_rgb(path: Path, rgb: np.ndarray, quality: int = 95) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix == ".jpg" else []
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]), params)
    return path


@pytest.fixture
def eileen(tmp_path) -> Path:
    """A person folder: the astronaut and a mirrored, slightly shifted copy (two different files)."""
    a = data.astronaut()
    folder = tmp_path / "eileen"
    write_rgb(folder / "a.png", a)
    write_rgb(folder / "b.jpg", np.roll(a[:, ::-1], 6, axis=1))
    return folder


def test_cache_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FACERESTORE_CACHE", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x"
    monkeypatch.delenv("FACERESTORE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "facerestore"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert cache_root() == Path.home() / ".cache" / "facerestore"


def test_peek_reads_the_header_of_our_own_entries_only(tmp_path):
    cache = DictionaryCache(tmp_path)
    assert cache.peek("abc") is None
    cache.save("abc", {"x": torch.ones(3)}, {"format": str(DICTIONARY_FORMAT), "used": "2", "person": "eileen"})
    meta = cache.peek("abc")
    assert meta is not None and meta["used"] == "2" and meta["person"] == "eileen"
    assert cache.path_for("abc").is_file()  # peeking never deletes
    shutil.copy(cache.path_for("abc"), cache.path_for("other"))  # an entry filed under the wrong key
    assert cache.peek("other") is None
    cache.path_for("abc").write_bytes(b"not a safetensors file")
    assert cache.peek("abc") is None


def test_compiles_once_then_hits(pipeline, eileen, cache_dir):
    first = pipeline.compile_person(eileen)
    assert not first.from_cache
    assert first.name == "eileen"
    assert first.used == 2
    assert first.path.parent == cache_dir / "dictionaries" and first.path.is_file()
    assert first.centroid is not None and first.centroid.shape == (128,)
    assert first.tensors and all(isinstance(v, np.ndarray) for v in first.tensors.values())
    assert "_centroid" not in first.tensors
    second = pipeline.compile_person(eileen)
    assert second.from_cache
    assert second.key == first.key
    assert set(second.tensors) == set(first.tensors)
    for k, v in first.tensors.items():
        np.testing.assert_array_equal(second.tensors[k], v)
    np.testing.assert_array_equal(second.centroid, first.centroid)
    assert [r.used for r in second.references] == [r.used for r in first.references]
    assert len(DictionaryCache().entries()) == 1
    forced = pipeline.compile_person(eileen, force=True)
    assert not forced.from_cache and forced.key == first.key


def test_rename_is_still_a_hit_and_reports_the_new_name(pipeline, eileen):
    first = pipeline.compile_person(eileen)
    (eileen / "b.jpg").rename(eileen / "renamed.jpg")
    second = pipeline.compile_person(eileen)
    assert second.from_cache and second.key == first.key
    assert sorted(Path(r.path).name for r in second.references) == ["a.png", "renamed.jpg"]


@pytest.mark.parametrize("change", ["added", "removed", "modified"])
def test_changed_folder_rebuilds(pipeline, eileen, change):
    first = pipeline.compile_person(eileen)
    if change == "added":
        write_rgb(eileen / "c.png", np.roll(data.astronaut(), -8, axis=0))
    elif change == "removed":
        (eileen / "b.jpg").unlink()
    else:  # same name, different pixels
        write_rgb(eileen / "b.jpg", np.roll(data.astronaut()[:, ::-1], 6, axis=1), quality=80)
    second = pipeline.compile_person(eileen)
    assert not second.from_cache
    assert second.key != first.key
    assert second.used == {"added": 3, "removed": 1, "modified": 2}[change]
    # the superseded entry of the same folder and weights is gone, not left to pile up
    assert [e["key"] for e in DictionaryCache().entries()] == [second.key]


def test_different_weights_give_a_different_key(tiny_weights, tmp_path, eileen):
    files = reference_files(eileen)
    other = make_tiny_dmdnet(tmp_path / "other.safetensors", seed=1)
    from facerestore_cli.weights import file_sha256

    sha_a, sha_b = file_sha256(tiny_weights), file_sha256(other)
    assert sha_a != sha_b
    assert dictionary_key(files, sha_a) != dictionary_key(files, sha_b)
    assert dictionary_key(files, sha_a) == dictionary_key(list(reversed(files)), sha_a)  # order-free
    retinaface, hog = dictionary_settings("retinaface", "dlib"), dictionary_settings("hog", "dlib")
    assert dictionary_key(files, sha_a, retinaface) != dictionary_key(files, sha_a, hog)
    pipe = Pipeline(RestoreOptions(method="dmdnet", weights=other, device="cpu", threads=1, embedder="dlib"))
    compiled = pipe.compile_person(eileen)
    assert compiled.key == dictionary_key(files, sha_b, retinaface)
    assert compiled.embedder == "dlib"
    (entry,) = DictionaryCache().entries()
    assert entry["embedder"] == "dlib" and entry["settings"] == "detector=retinaface;embedder=dlib"


def test_rejection_reasons(pipeline, tmp_path):
    a = data.astronaut()
    folder = tmp_path / "refs"
    write_rgb(folder / "1-good.png", a)
    write_rgb(folder / "2-coffee.png", data.coffee())
    write_rgb(folder / "3-two-astronauts.png", np.concatenate([a, a], axis=1))
    write_rgb(folder / "4-small.png", cv2.resize(a, (160, 160), interpolation=cv2.INTER_AREA))
    (folder / "5-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (folder / "notes.txt").write_text("not a photo, not a reference")
    compiled = pipeline.compile_person(folder)
    reasons = {Path(r.path).name: r for r in compiled.references}
    assert sorted(reasons) == ["1-good.png", "2-coffee.png", "3-two-astronauts.png", "4-small.png", "5-broken.jpg"]
    assert reasons["1-good.png"].used and reasons["1-good.png"].reason is None
    assert reasons["2-coffee.png"].reason == "no face found"
    assert reasons["3-two-astronauts.png"].reason.startswith("2 faces")
    assert reasons["4-small.png"].reason.startswith("face too small")
    assert reasons["4-small.png"].face_size < 96
    assert reasons["5-broken.jpg"].reason.startswith("unreadable")
    assert compiled.used == 1
    # the reasons survive the cache
    again = pipeline.compile_person(folder)
    assert again.from_cache
    assert {Path(r.path).name: r.reason for r in again.references} == {k: r.reason for k, r in reasons.items()}


def test_no_usable_reference_is_an_error(pipeline, tmp_path):
    folder = tmp_path / "nobody"
    write_rgb(folder / "coffee.png", data.coffee())
    with pytest.raises(DictionaryError, match=r"no usable reference photo.*coffee\.png: no face found"):
        pipeline.compile_person(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DictionaryError, match="no reference photos"):
        pipeline.compile_person(empty)
    assert DictionaryCache().entries() == []


@pytest.mark.shared
def test_identity_outlier_is_rejected(pipeline, tmp_path):
    pairs = shared_path("data", "eval-dev", "london-pairs")
    folder = tmp_path / "p001"
    folder.mkdir()
    for name in ("neutral.jpg", "smiling.jpg"):
        shutil.copy(pairs / "001" / name, folder / name)
    neutral = cv2.imread(str(pairs / "001" / "neutral.jpg"))[:, :, ::-1]
    write_rgb(folder / "mirrored.png", neutral[:, ::-1])
    shutil.copy(pairs / "009" / "neutral.jpg", folder / "somebody-else.jpg")
    compiled = pipeline.compile_person(folder)
    reports = {Path(r.path).name: r for r in compiled.references}
    assert reports["somebody-else.jpg"].reason.startswith("identity outlier")
    assert reports["somebody-else.jpg"].distance > 0.55
    for name in ("neutral.jpg", "smiling.jpg", "mirrored.png"):
        assert reports[name].used, reports[name]
        assert reports[name].distance < 0.55
    assert compiled.used == 3


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped-byte"])
def test_damaged_cache_entry_is_rebuilt(pipeline, eileen, damage):
    first = pipeline.compile_person(eileen)
    raw = bytearray(first.path.read_bytes())
    if damage == "garbage":
        raw = bytearray(b"not a safetensors file at all")
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:  # a valid header, one tensor byte changed: only the stored digest can tell
        raw[-3] ^= 0xFF
    first.path.write_bytes(bytes(raw))
    second = pipeline.compile_person(eileen)
    assert not second.from_cache
    assert second.key == first.key
    for k, v in first.tensors.items():
        np.testing.assert_array_equal(second.tensors[k], v)
    assert pipeline.compile_person(eileen).from_cache


# -- the command line ------------------------------------------------------------------------------


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from facerestore_cli.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code or 0, out, " ".join(err.split())


def test_build_dict_cli_cache_list_and_clear(capsys, tiny_weights, eileen, cache_dir):
    code, out, err = run_cli(
        capsys, "build-dict", eileen, "--weights", tiny_weights, "--threads", "1", "--embedder", "dlib"
    )
    assert code == 0, err
    entries = DictionaryCache().entries()
    assert len(entries) == 1
    assert "eileen: compiled, 2 of 2 photos used" in out  # data on stdout, for > file and | grep
    assert entries[0]["path"] in out.replace(" ", "")  # where it was cached
    assert "✓ a.png" in out and "✓ b.jpg" in out

    code, out, err = run_cli(
        capsys, "build-dict", eileen, "--weights", tiny_weights, "--threads", "1", "--json", "--embedder", "dlib"
    )
    assert code == 0
    (result,) = json.loads(out)
    assert result["person"] == "eileen" and result["from_cache"] and result["used"] == 2
    assert result["cache"] == entries[0]["path"]

    code, out, _ = run_cli(capsys, "cache", "list", "--json")
    (listed,) = json.loads(out)
    assert listed["person"] == "eileen" and listed["references"] == 2
    assert listed["folder"] == str(eileen.resolve())
    code, out, _ = run_cli(capsys, "cache", "list")
    assert "eileen" in out and str(cache_dir) in out.replace(" ", "")

    code, _, err = run_cli(capsys, "cache", "clear")
    assert code == 0 and "removed 1 cached dictionary" in err
    code, out, _ = run_cli(capsys, "cache", "list", "--json")
    assert json.loads(out) == []


def test_build_dict_cli_on_a_people_folder_reports_failures(capsys, tiny_weights, eileen, tmp_path):
    people = eileen.parent
    write_rgb(people / "zz-coffee" / "coffee.png", data.coffee())
    code, out, err = run_cli(
        capsys, "build-dict", people, "--weights", tiny_weights, "--threads", "1", "--json", "--embedder", "dlib"
    )
    assert code == 1  # one person could not be compiled
    results = {Path(r["folder"]).name: r for r in json.loads(out)}
    assert results["eileen"]["used"] == 2
    assert "no face found" in results["zz-coffee"]["error"]
    # one person's cache entry can be cleared alone
    code, _, err = run_cli(capsys, "cache", "clear", str(eileen.resolve()))
    assert "removed 1" in err


def test_restore_with_refs_uses_the_cached_dictionary(capsys, tiny_weights, eileen, tmp_path):
    photo = write_rgb(tmp_path / "in" / "photo.png", data.astronaut())
    out_dir = tmp_path / "out"
    report = tmp_path / "report.jsonl"
    args = [photo, "--refs", eileen, "--weights", tiny_weights, "-o", out_dir, "--report", report, "--threads", "1"]
    args += ["--embedder", "dlib", "--strength", "1"]  # a tiny random model: restore whatever auto would say
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    (line,) = report.read_text().splitlines()
    (face,) = json.loads(line)["faces"]
    assert face["restored"] and face["person"] == "eileen", face
    assert face["routing"].startswith("matched eileen")
    assert face["embedder"] == "dlib"
    (entry,) = DictionaryCache().entries()  # built on the way, before the first photo
    mtime = Path(entry["path"]).stat().st_mtime_ns
    # a second run loads it instead of compiling again
    pipe = Pipeline(
        RestoreOptions(method="dmdnet", weights=tiny_weights, device="cpu", threads=1, refs=eileen, embedder="dlib")
    )
    pipe.prepare()
    assert pipe.single is not None and pipe.single.dictionary.from_cache
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert Path(entry["path"]).stat().st_mtime_ns == mtime
    assert len(DictionaryCache().entries()) == 1
