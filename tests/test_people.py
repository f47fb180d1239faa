"""Routing faces to people: the rule on crafted embeddings, then a whole album photo end to end.

The end-to-end test needs the London pairs (``FACERESTORE_SHARED``): a photo with two known people and
one stranger goes through the installed ``facerestore`` command with ``--people``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_path
from test_dictionary import make_tiny_dmdnet

from facerestore_cli.references.dictionary import CompiledDictionary, DictionaryError
from facerestore_cli.references.people import DEFAULT_MARGIN, DEFAULT_THRESHOLD, PeopleIndex, Person, person_folders

#: dlib's documented same-person threshold on the Euclidean distance of two embeddings.
SAME_PERSON_DISTANCE = 0.6


def person(name: str, centroid) -> Person:
    c = np.asarray(centroid, dtype=np.float32)
    compiled = CompiledDictionary(name=name, key=f"key-{name}", path=Path(f"/nowhere/{name}"), tensors={}, centroid=c)
    return Person(name, Path(f"/people/{name}"), compiled)


def unit(i: int, n: int = 128) -> np.ndarray:
    v = np.zeros(n, np.float32)
    v[i] = 1.0
    return v


@pytest.fixture
def index() -> PeopleIndex:
    # alice and bob 1.0 apart, carol far from both
    return PeopleIndex(
        [person("alice", unit(0)), person("bob", unit(0) + unit(1)), person("carol", 3 * unit(2))],
        threshold=0.5,
        margin=0.1,
    )


def test_defaults_are_sane():
    assert 0 < DEFAULT_THRESHOLD < SAME_PERSON_DISTANCE  # degraded faces: stricter than dlib's clean-photo 0.6
    assert 0 < DEFAULT_MARGIN < DEFAULT_THRESHOLD


def test_nearest_person_within_threshold_and_margin(index):
    route = index.route(unit(0) + 0.2 * unit(3))
    assert route.person == "alice"
    assert route.distance == pytest.approx(0.2, abs=1e-6)
    assert route.reason.startswith("matched alice")
    assert route.dictionary is index.people[0].dictionary
    assert route.similarity == pytest.approx(1 / np.sqrt(1.04), abs=1e-6)


def test_threshold_is_inclusive_and_beyond_it_is_nobody(index):
    assert index.route(unit(0) + 0.5 * unit(3)).person == "alice"
    far = index.route(unit(0) + 0.51 * unit(3))
    assert far.person is None and far.dictionary is None
    assert far.reason.startswith("nobody: nearest is alice")
    nobody = index.route(-5 * unit(4))
    assert nobody.person is None and nobody.reason.startswith("nobody")


def test_ambiguous_faces_fall_back_to_generic(index):
    # halfway between alice and bob: close enough to both, so to neither
    between = unit(0) + 0.5 * unit(1)
    route = index.route(between)
    assert route.person is None
    assert route.reason.startswith("ambiguous: alice at 0.500 and bob at 0.500")
    # just clear of the margin
    clear = unit(0) + 0.44 * unit(1)  # 0.44 from alice, 0.56 from bob: 0.12 apart > margin 0.1
    assert index.route(clear).person == "alice"
    close = unit(0) + 0.47 * unit(1)  # 0.47 and 0.53: only 0.06 apart
    assert index.route(close).person is None


def test_single_person_ignores_the_margin():
    only = PeopleIndex([person("alice", unit(0))], threshold=0.5, margin=0.4)
    assert only.route(unit(0) + 0.45 * unit(1)).person == "alice"
    assert only.route(unit(0) + 0.55 * unit(1)).person is None


def test_empty_index_and_people_folders(tmp_path):
    with pytest.raises(DictionaryError):
        PeopleIndex([])
    with pytest.raises(DictionaryError, match="not a folder"):
        person_folders(tmp_path / "missing")
    (tmp_path / "people").mkdir()
    with pytest.raises(DictionaryError, match="no person folders"):
        person_folders(tmp_path / "people")
    for name in ("zoe", "adam", ".hidden"):
        (tmp_path / "people" / name).mkdir()
    (tmp_path / "people" / "stray.jpg").write_bytes(b"")
    assert [p.name for p in person_folders(tmp_path / "people")] == ["adam", "zoe"]


def test_build_skips_people_that_fail_when_asked(tmp_path):
    for name in ("adam", "broken", "zoe"):
        (tmp_path / name).mkdir()

    def compile_person(folder: Path) -> CompiledDictionary:
        if folder.name == "broken":
            raise DictionaryError("no usable reference photo")
        return person(folder.name, unit(len(folder.name))).dictionary

    with pytest.raises(DictionaryError):
        PeopleIndex.build(tmp_path, compile_person)
    skipped = []
    index = PeopleIndex.build(tmp_path, compile_person, on_error=lambda f, e: skipped.append(f.name), margin=0.2)
    assert [p.name for p in index.people] == ["adam", "zoe"]
    assert skipped == ["broken"]
    assert index.margin == 0.2 and index.threshold == DEFAULT_THRESHOLD


# -- end to end ------------------------------------------------------------------------------------

#: Two known people and a stranger, far from both for dlib (bench/routing.py distances ≥ 0.70).
KNOWN = ("001", "003")
STRANGER = "009"
TILE = 220


def facerestore(*args, env: dict[str, str]) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "facerestore"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "facerestore_cli"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.mark.shared
@pytest.mark.slow
def test_album_photo_with_two_known_people_and_a_stranger(tmp_path):
    pairs = shared_path("data", "eval-dev", "london-pairs")
    # the photo: three smiling faces side by side, stranger in the middle
    order = (KNOWN[0], STRANGER, KNOWN[1])
    canvas = np.full((TILE + 80, 3 * TILE + 120, 3), 190, np.uint8)
    for k, who in enumerate(order):
        face = cv2.imread(str(pairs / who / "smiling.jpg"), cv2.IMREAD_COLOR)
        x = 30 + k * (TILE + 30)
        canvas[40 : 40 + TILE, x : x + TILE] = cv2.resize(face, (TILE, TILE), interpolation=cv2.INTER_AREA)
    photo = tmp_path / "album" / "group.jpg"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), canvas, [cv2.IMWRITE_JPEG_QUALITY, 95])
    # the people folder: each known person's neutral photo
    people = tmp_path / "people"
    names = {KNOWN[0]: "ann", KNOWN[1]: "ben"}
    for who, name in names.items():
        (people / name).mkdir(parents=True)
        shutil.copy(pairs / who / "neutral.jpg", people / name / f"{name}-studio.jpg")
    weights = make_tiny_dmdnet(tmp_path / "tiny-dmdnet.safetensors")
    env = {**os.environ, "FACERESTORE_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    report = tmp_path / "r.jsonl"
    out = tmp_path / "out"

    done = facerestore(
        photo, "--people", people, "--report", report, "-o", out, "--threads", "1", "--weights", weights,
        "--save-faces", "--embedder", "dlib", "--strength", "1", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (line,) = report.read_text().splitlines()
    image = json.loads(line)
    assert image["status"] == "restored"
    faces = sorted(image["faces"], key=lambda f: f["box"][0])  # left to right
    assert len(faces) == 3, faces
    assert all(f["restored"] for f in faces)
    left, middle, right = faces
    assert left["person"] == "ann" and left["routing"].startswith("matched ann"), left
    assert all(f["embedder"] == "dlib" for f in faces), faces
    assert right["person"] == "ben" and right["routing"].startswith("matched ben"), right
    assert middle["person"] is None, middle
    assert middle["routing"].startswith(("nobody", "ambiguous")), middle
    # --save-faces names say who each face was restored as
    saved = sorted(p.name for p in (out / "group_faces").iterdir())
    for f in faces:
        tag = f"_{f['person']}" if f["person"] else ""
        assert f"face{f['index']:02d}_restored{tag}.png" in saved, saved
        assert Path(f["restored_crop"]).name == f"face{f['index']:02d}_restored{tag}.png"
    assert sum("_restored_" in name for name in saved) == 2
    assert (out / "group.jpg").is_file()

    # `facerestore people` lists both, with their photos and the dictionaries the run compiled
    listed = facerestore("people", people, "--weights", weights, "--json", "--embedder", "dlib", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["person"]: r for r in json.loads(listed.stdout)}
    assert rows == {
        "ann": {"person": "ann", "photos": 1, "cached": True, "used": 1},
        "ben": {"person": "ben", "photos": 1, "cached": True, "used": 1},
    }
    table = facerestore("people", people, "--weights", weights, "--embedder", "dlib", env=env)
    assert table.returncode == 0
    assert "ann" in table.stdout and "ben" in table.stdout and "cached (1 used)" in table.stdout
    # a new person is shown as not compiled yet
    (people / "cat").mkdir()
    shutil.copy(pairs / STRANGER / "neutral.jpg", people / "cat" / "cat.jpg")
    listed = facerestore("people", people, "--weights", weights, "--json", "--embedder", "dlib", env=env)
    rows = {r["person"]: r for r in json.loads(listed.stdout)}
    assert rows["cat"] == {"person": "cat", "photos": 1, "cached": False, "used": None}
