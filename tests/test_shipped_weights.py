"""The compact weights in ``weights/``: what the manifest promises, and that a damaged copy is refused.

These files are what makes ``facerestore photo.jpg`` work on a fresh machine without network, so their
absence is a failure, never a skip.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from facerestore_cli import weights
from facerestore_cli.models import create_model
from facerestore_cli.restore import create_restorer

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = {"dmdnet": "dmdnet-compact.safetensors", "memgan": "memgan-compact.safetensors"}
MAX_BYTES = 40 * 1024 * 1024


@pytest.fixture(scope="module")
def aligned_astronaut(astronaut_rgb) -> np.ndarray:
    """The astronaut's face aligned as the pipeline aligns it (RetinaFace 5 points, FFHQ template)."""
    from facerestore_cli.face.align import align_face
    from facerestore_cli.face.detect import create_detector

    (face,) = create_detector("retinaface", device="cpu", threads=1).detect(astronaut_rgb)
    return align_face(astronaut_rgb, face.landmarks).image


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((WEIGHTS_DIR / "MANIFEST.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("method", sorted(SHIPPED))
def test_manifest_records_provenance_and_matches_the_file(manifest, method):
    name = SHIPPED[method]
    path = WEIGHTS_DIR / name
    entry = manifest["files"][name]
    assert path.is_file(), f"{path} is missing: the tool cannot restore out of the box"
    assert entry["method"] == method
    assert entry["size"] == path.stat().st_size <= MAX_BYTES
    assert entry["sha256"] == weights.file_sha256(path, use_cache=False)
    assert entry["dtype"] == "float16"
    with safe_open(str(path), framework="pt") as f:
        assert all(f.get_slice(k).get_dtype() in ("F16", "I64", "BOOL") for k in f.keys())  # noqa: SIM118
    # how it was made: the exact commands, the data, the steps, the time and what it achieved
    training = entry["training"]
    assert training["commands"] and all(c.startswith("facerestore train " + method) for c in training["commands"])
    assert "train-faces" in training["data"] and training["steps"] > 0 and training["wall_time_s"] > 0
    val = entry["validation"]
    assert {"x4_input_psnr", "x8_input_psnr"} <= set(val)
    assert entry["licence"]
    # the config in the manifest builds the model the file holds, key for key
    model = create_model(method, entry["config"])
    loaded = weights.load_weights(path)
    assert loaded.config == entry["config"]
    assert set(model.state_dict()) == set(loaded.tensors)


def test_default_lookup_finds_the_shipped_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))  # an empty user folder
    monkeypatch.delenv("FACERESTORE_WEIGHTS", raising=False)
    for method, name in SHIPPED.items():
        loc = weights.locate_weights(method)
        assert loc.path.resolve() == (WEIGHTS_DIR / name).resolve() and loc.origin == "project"


@pytest.mark.parametrize("method", sorted(SHIPPED))
def test_a_damaged_copy_is_refused_before_it_restores_anything(tmp_path, monkeypatch, method):
    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    target = copy / SHIPPED[method]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the middle of a tensor
    target.write_bytes(bytes(data))
    with pytest.raises(weights.WeightsIntegrityError, match="sha256"):
        create_restorer(method, weights=copy)
    # and `weights verify` names it, and only it
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACERESTORE_WEIGHTS", str(copy))
    results = [r for r in weights.verify_all() if r.origin == "env"]
    names = sorted(Path(r.path).name for r in results)
    assert [n for n in names if n.endswith(".safetensors")] == sorted(SHIPPED.values())
    assert {n for n in names if n.endswith(".onnx")}, "the shipped ONNX graphs are verified too"
    assert [Path(r.path).name for r in results if not r.ok] == [SHIPPED[method]]


@pytest.mark.parametrize("method", sorted(SHIPPED))
def test_shipped_weights_restore_a_face_on_the_cpu(method, aligned_astronaut):
    """Loading in fp16 and running in fp32 gives finite faces close to the input's layout."""
    from facerestore_cli.face.landmarks import default_predictor

    torch.manual_seed(0)
    restorer = create_restorer(method, weights=WEIGHTS_DIR / SHIPPED[method])
    marks = default_predictor().predict(aligned_astronaut)
    out = restorer.restore(aligned_astronaut[None], marks[None])
    assert out.shape == (1, 512, 512, 3) and np.isfinite(out).all()
    diff = np.abs(out[0] * 255 - aligned_astronaut.astype(np.float32))
    assert 1.0 < diff.mean() < 25.0  # it changed the face, and it is still that face
