"""Weight files: lookup order, manifest checks, safetensors round trips, safe imports and resumable fetches.

Everything runs on real files in ``tmp_path`` and a real HTTP server on 127.0.0.1; nothing touches the
network. The model used for imports is a tiny fake registered in the model registry for the test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import sys
import threading
import time
import types
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torch import nn

from facerestore_cli import models, weights
from facerestore_cli.weights import (
    CheckpointError,
    DownloadError,
    WeightsError,
    WeightsIntegrityError,
    WeightsNotFound,
)

# ------------------------------------------------------------------------------------ a fake model
# Official layout: body.conv_in.{weight,bias}, body.conv_out.{weight,bias}, body.scale (per channel),
# which the converter folds into conv_out, as the real converters fold e.g. normalisation layers.


@dataclass
class FakeConfig:
    hidden: int = 8
    channels: int = 3


def fake_build(config: FakeConfig) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, config.hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(config.hidden, config.channels, 1)
    )


def fake_convert_official(state: dict) -> tuple[dict, FakeConfig]:
    expected = {"body.conv_in.weight", "body.conv_in.bias", "body.conv_out.weight", "body.conv_out.bias", "body.scale"}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(f"missing keys: {missing}; unexpected keys: {unexpected}")
    config = FakeConfig(hidden=state["body.conv_in.weight"].shape[0], channels=state["body.conv_out.weight"].shape[0])
    scale = state["body.scale"]
    folded = {
        "0.weight": state["body.conv_in.weight"],
        "0.bias": state["body.conv_in.bias"],
        "2.weight": state["body.conv_out.weight"] * scale.view(-1, 1, 1, 1),
        "2.bias": state["body.conv_out.bias"] * scale,
    }
    want = fake_build(config).state_dict()
    for key, tensor in folded.items():
        if tuple(tensor.shape) != tuple(want[key].shape):
            raise CheckpointError(f"{key}: shape {tuple(tensor.shape)}, expected {tuple(want[key].shape)}")
    return folded, config


FAKE_MODULE = "facerestore_test_fake_model"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real user folders, no real shipped weights, a fresh hash cache, and the fake model registered."""
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    for name in ("WEIGHTS", "DMDNET_URL", "MEMGAN_URL", "FAKE_URL"):
        monkeypatch.delenv(f"FACERESTORE_{name}", raising=False)
    # patched where they are looked up: the package only re-exports them
    monkeypatch.setattr(weights.lookup, "project_weights_dirs", lambda: [tmp_path / "project"])
    monkeypatch.setattr(weights.files, "_hash_cache", {})
    module = types.ModuleType(FAKE_MODULE)
    module.Config = FakeConfig
    module.build = fake_build
    module.convert_official = fake_convert_official
    monkeypatch.setitem(sys.modules, FAKE_MODULE, module)
    models.methods()  # the real cards first, then the fake one beside them
    spec = models.MethodSpec(
        name="fake", summary="a fake model for these tests", config=FakeConfig, uses_references=False,
        official=None, network=FAKE_MODULE, tiny_config=FakeConfig,
    )  # fmt: skip
    monkeypatch.setitem(models.registry._METHODS, "fake", spec)


def official_state(hidden: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "body.conv_in.weight": torch.randn(hidden, 3, 3, 3, generator=g),
        "body.conv_in.bias": torch.randn(hidden, generator=g),
        "body.conv_out.weight": torch.randn(3, hidden, 1, 1, generator=g),
        "body.conv_out.bias": torch.randn(3, generator=g),
        "body.scale": torch.rand(3, generator=g) + 0.5,
    }


def write_weights(path: Path, method: str = "fake", *, manifest: bool = True, half: bool = False) -> str:
    tensors = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "n": torch.tensor([1, 2, 3])}
    digest = weights.save_weights(tensors, path, {"method": method, "config": {"hidden": 8}}, half=half)
    if manifest:
        meta = weights.read_safetensors_metadata(path)
        weights.update_manifest(
            path.parent,
            path.name,
            {
                "sha256": digest,
                "size": path.stat().st_size,
                "method": method,
                "config": meta["config"],
                "dtype": meta["dtype"],
            },
        )
    return digest


# ------------------------------------------------------------------------------------------- lookup


def test_lookup_order_flag_env_user_project(tmp_path, monkeypatch):
    flag = tmp_path / "flag" / "mine.safetensors"
    env = tmp_path / "env" / "fake-env.safetensors"
    user = weights.user_weights_dir() / "fake-official.safetensors"
    project = tmp_path / "project" / "fake.safetensors"
    for path in (flag, env, project):
        write_weights(path)
    write_weights(user, manifest=False)  # found through its safetensors metadata alone
    monkeypatch.setenv("FACERESTORE_WEIGHTS", str(env.parent))

    loc = weights.locate_weights("fake", flag)
    assert (loc.path, loc.origin) == (flag, "flag")
    loc = weights.locate_weights("fake")
    assert (loc.path, loc.origin) == (env, "env")
    assert loc.manifest is not None and loc.manifest["method"] == "fake"

    monkeypatch.delenv("FACERESTORE_WEIGHTS")
    loc = weights.locate_weights("fake")
    assert (loc.path, loc.origin, loc.manifest) == (user, "user", None)

    user.unlink()
    loc = weights.locate_weights("fake")
    assert (loc.path, loc.origin) == (project, "project")

    listed = [(x.path, x.origin) for x in weights.list_weights(flag)]
    assert listed == [(flag, "flag"), (project, "project")]


def test_user_import_wins_over_compact_shipped_and_methods_are_separate(tmp_path, monkeypatch):
    write_weights(tmp_path / "project" / "fake.safetensors", half=True)
    write_weights(tmp_path / "project" / "memgan.safetensors", method="memgan", half=True)
    user = weights.user_weights_dir() / "fake-official.safetensors"
    write_weights(user)
    write_weights(weights.user_weights_dir() / "other.safetensors", method="other")
    assert weights.locate_weights("fake").path == user
    assert weights.locate_weights("memgan").path == tmp_path / "project" / "memgan.safetensors"
    # $FACERESTORE_WEIGHTS naming a file for another method is skipped, not used
    monkeypatch.setenv("FACERESTORE_WEIGHTS", str(tmp_path / "project" / "memgan.safetensors"))
    assert weights.locate_weights("fake").path == user


def test_env_file_and_flag_mistakes(tmp_path, monkeypatch):
    env = tmp_path / "x" / "w.safetensors"
    write_weights(env, manifest=False)
    monkeypatch.setenv("FACERESTORE_WEIGHTS", str(env))
    assert weights.locate_weights("fake").origin == "env"
    with pytest.raises(WeightsError, match="holds fake weights, not memgan"):
        weights.locate_weights("memgan", env)
    with pytest.raises(WeightsNotFound, match="no such file"):
        weights.locate_weights("fake", tmp_path / "nope.safetensors")
    pth = tmp_path / "DMDNet.pth"
    pth.write_bytes(b"x")
    with pytest.raises(WeightsError, match="facerestore weights import"):
        weights.locate_weights("dmdnet", pth)


def test_missing_weights_lists_every_place_and_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERESTORE_WEIGHTS", str(tmp_path / "env"))
    with pytest.raises(WeightsNotFound) as info:
        weights.locate_weights("dmdnet")
    text = str(info.value)
    assert "--weights: not given" in text
    assert f"$FACERESTORE_WEIGHTS={tmp_path / 'env'}" in text
    assert str(weights.user_weights_dir()) in text
    assert str(tmp_path / "project") in text
    assert "facerestore weights fetch dmdnet" in text and "facerestore weights import" in text
    with pytest.raises(WeightsNotFound, match="memgan has no public weights"):
        weights.locate_weights("memgan")


def test_user_folder_resolution(tmp_path, monkeypatch):
    assert weights.user_weights_dir() == tmp_path / "home" / "weights"
    monkeypatch.delenv("FACERESTORE_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert weights.user_weights_dir() == tmp_path / "xdg" / "facerestore" / "weights"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert weights.user_weights_dir() == tmp_path / "h" / ".local" / "share" / "facerestore" / "weights"


# ------------------------------------------------------------------------------------ save and load


def test_save_load_round_trip_keeps_tensors_and_metadata(tmp_path):
    tensors = {"a.weight": torch.randn(4, 3, 3, 3), "a.bias": torch.randn(4), "steps": torch.tensor([7])}
    meta = {
        "method": "fake",
        "config": FakeConfig(hidden=4),
        "training": {"steps": 1000, "lr": 2e-4},
        "licence": "CC-BY-NC-4.0",
    }
    path = tmp_path / "w.safetensors"
    digest = weights.save_weights(tensors, path, meta)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not [p for p in tmp_path.iterdir() if p != path], "no temporary files left behind"

    loaded = weights.load_weights(path)
    assert loaded.sha256 == digest and loaded.path == path
    assert set(loaded.tensors) == set(tensors)
    for key, tensor in tensors.items():
        assert torch.equal(loaded.tensors[key], tensor) and loaded.tensors[key].dtype == tensor.dtype
    assert loaded.metadata["config"] == {"hidden": 4, "channels": 3}
    assert loaded.metadata["training"] == {"steps": 1000, "lr": 2e-4}
    assert loaded.metadata["licence"] == "CC-BY-NC-4.0"
    assert loaded.metadata["format_version"] == weights.WEIGHTS_FORMAT_VERSION == 1
    assert (loaded.method, loaded.metadata["dtype"]) == ("fake", "float32")


def test_half_stores_fp16_and_halves_the_file(tmp_path):
    tensors = {"w": torch.randn(64, 64, 3, 3), "idx": torch.arange(5)}
    meta = {"method": "fake", "config": {}}
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    weights.save_weights(tensors, full, meta)
    weights.save_weights(tensors, half, meta, half=True)
    loaded = weights.load_weights(half)
    assert loaded.tensors["w"].dtype == torch.float16 and loaded.tensors["idx"].dtype == torch.int64
    assert torch.allclose(loaded.tensors["w"].float(), tensors["w"], atol=1e-2)
    assert loaded.metadata["dtype"] == "float16"
    assert half.stat().st_size < 0.55 * full.stat().st_size


def test_save_requires_method_and_config(tmp_path):
    with pytest.raises(ValueError, match="method"):
        weights.save_weights({"w": torch.zeros(1)}, tmp_path / "w.safetensors", {"config": {}})


def test_tampered_byte_is_caught_with_both_hashes(tmp_path):
    path = weights.user_weights_dir() / "fake.safetensors"
    digest = write_weights(path)
    assert torch.equal(weights.load_weights(path).tensors["n"], torch.tensor([1, 2, 3]))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the tensor data: still a valid safetensors file
    path.write_bytes(bytes(data))
    st = path.stat()  # make sure the hash cache key changes even on a coarse-mtime file system
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(WeightsIntegrityError) as info:
        weights.load_weights(weights.locate_weights("fake"))
    text = str(info.value)
    actual = hashlib.sha256(bytes(data)).hexdigest()
    assert str(path) in text and digest in text and actual in text and "fetch" in text
    # verify=False is the explicit escape hatch
    assert weights.load_weights(path, verify=False).sha256 == actual


def test_manifest_size_mismatch_and_verify_all(tmp_path):
    folder = weights.user_weights_dir()
    good, short, tampered = (folder / f"{n}.safetensors" for n in ("good", "short", "tampered"))
    for path in (good, short, tampered):
        write_weights(path)
    entry = weights.manifest_entry(short)
    weights.update_manifest(folder, short.name, {**entry, "size": entry["size"] + 1})
    with pytest.raises(WeightsIntegrityError, match="bytes but its manifest says"):
        weights.load_weights(short)
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    weights.update_manifest(folder, "gone.safetensors", {"sha256": "0" * 64, "size": 1, "method": "fake"})
    write_weights(tmp_path / "project" / "shipped.safetensors")

    results = {r.path.name: r for r in weights.verify_all()}
    assert {name: r.status for name, r in results.items()} == {
        "good.safetensors": "ok",
        "short.safetensors": "size mismatch",
        "tampered.safetensors": "hash mismatch",
        "gone.safetensors": "missing",
        "shipped.safetensors": "ok",
    }
    assert results["shipped.safetensors"].origin == "project"
    assert results["tampered.safetensors"].actual_sha256 != results["tampered.safetensors"].expected_sha256


def test_hash_is_computed_once_per_unchanged_file(tmp_path, monkeypatch):
    path = weights.user_weights_dir() / "fake.safetensors"
    write_weights(path)
    weights.files._hash_cache.clear()
    calls = []
    real = weights.files._hash_file
    monkeypatch.setattr(weights.files, "_hash_file", lambda p: calls.append(p) or real(p))
    weights.load_weights(path)
    weights.load_weights(weights.locate_weights("fake"))
    assert len(calls) == 1


def test_damaged_safetensors_and_broken_manifest(tmp_path):
    path = tmp_path / "w.safetensors"
    write_weights(path, manifest=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(WeightsIntegrityError, match="not a valid safetensors"):
        weights.load_weights(path)
    (tmp_path / "MANIFEST.json").write_text("{not json")
    with pytest.raises(WeightsError, match=r"MANIFEST\.json is not valid JSON"):
        weights.read_manifest(tmp_path)
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"format": 99, "files": {}}))
    with pytest.raises(WeightsError, match="upgrade facerestore"):
        weights.read_manifest(tmp_path)


def test_manifest_update_is_atomic_and_keeps_other_entries(tmp_path):
    weights.update_manifest(tmp_path, "a.safetensors", {"sha256": "aa", "size": 1, "method": "fake"})
    weights.update_manifest(
        tmp_path, "b.safetensors", {"sha256": "bb", "size": 2, "method": "fake", "training": {"steps": 3}}
    )
    manifest = json.loads((tmp_path / "MANIFEST.json").read_text())
    assert manifest["format"] == 1 and set(manifest["files"]) == {"a.safetensors", "b.safetensors"}
    assert manifest["files"]["b.safetensors"]["training"] == {"steps": 3}
    weights.update_manifest(tmp_path, "a.safetensors", None)
    assert set(weights.read_manifest(tmp_path)["files"]) == {"b.safetensors"}
    assert [p.name for p in tmp_path.iterdir()] == ["MANIFEST.json"], "no temporary or lock files left"


# ------------------------------------------------------------------------------------------- import

PWNED = []


def _pwn() -> None:  # what a malicious checkpoint would run on an unsafe torch.load
    PWNED.append(True)


class Evil:
    def __reduce__(self):
        return (_pwn, ())


@pytest.mark.parametrize("layout", ["raw", "params_ema", "state_dict", "nested_model", "dataparallel"])
def test_import_official_checkpoint(tmp_path, layout):
    state = official_state(hidden=6)
    obj = {
        "raw": state,
        "params_ema": {"params_ema": state, "params": official_state(seed=1), "iter": 5000},
        "state_dict": {"state_dict": state, "epoch": 3, "optimizer": {"lr": 0.1}},
        "nested_model": {"model": {"state_dict": state}},
        "dataparallel": {"module." + k: v for k, v in state.items()},
    }[layout]
    src = tmp_path / "Official.pth"
    torch.save(obj, src)

    result = weights.import_checkpoint(src, "fake")
    dest = weights.user_weights_dir() / "fake-official.safetensors"
    assert result.path == dest and dest.is_file()
    assert result.config == FakeConfig(hidden=6, channels=3)
    assert result.source_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert result.tensor_count == 4

    entry = weights.read_manifest(dest.parent)["files"][dest.name]
    assert entry["method"] == "fake" and entry["sha256"] == result.sha256 and entry["size"] == result.size
    assert entry["dtype"] == "float32" and entry["source_file"] == "Official.pth"
    assert entry["config"] == {"hidden": 6, "channels": 3}

    location = weights.locate_weights("fake")
    assert (location.path, location.origin) == (dest, "user")
    loaded = weights.load_weights(location)
    folded, _ = fake_convert_official(state)
    assert set(loaded.tensors) == set(folded)
    for key, tensor in folded.items():
        assert torch.equal(loaded.tensors[key], tensor)
    assert loaded.metadata["config"] == dataclasses.asdict(result.config)
    assert loaded.metadata["source_sha256"] == result.source_sha256
    assert loaded.metadata["format_version"] == 1 and "imported_at" in loaded.metadata
    model = fake_build(FakeConfig(**loaded.metadata["config"]))
    model.load_state_dict(loaded.tensors)


def test_import_into_dest_dir_with_name(tmp_path):
    src = tmp_path / "a.pth"
    torch.save(official_state(), src)
    result = weights.import_checkpoint(src, "fake", tmp_path / "out", name="mine")
    assert result.path == tmp_path / "out" / "mine.safetensors"
    assert "mine.safetensors" in weights.read_manifest(tmp_path / "out")["files"]


def test_import_official_safetensors(tmp_path):
    from safetensors.torch import save_file

    src = tmp_path / "official.safetensors"
    save_file(official_state(hidden=5), src)
    result = weights.import_checkpoint(src, "fake", tmp_path / "out")
    assert result.config.hidden == 5 and result.path.is_file()


def test_import_refuses_arbitrary_pickled_objects(tmp_path):
    src = tmp_path / "evil.pth"
    torch.save({**official_state(), "payload": Evil()}, src)
    with pytest.raises(CheckpointError) as info:
        weights.import_checkpoint(src, "fake")
    text = str(info.value)
    assert str(src) in text and "weights_only=True" in text and "_pwn" in text
    assert not PWNED, "the payload must never run"
    assert not weights.user_weights_dir().exists() or not list(weights.user_weights_dir().iterdir())

    plain = tmp_path / "plain_pickle.pth"
    with open(plain, "wb") as f:
        pickle.dump({"w": 1, "f": _pwn}, f)
    with pytest.raises(CheckpointError, match=r"weights_only=True\) cannot read safely .*refused"):
        weights.import_checkpoint(plain, "fake")
    assert not PWNED


def test_import_damaged_or_not_a_checkpoint(tmp_path):
    src = tmp_path / "DMDNet.pth"
    torch.save(official_state(), src)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"DMDNet\.pth is damaged, truncated or not a PyTorch"):
        weights.import_checkpoint(src, "fake")
    src.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        weights.import_checkpoint(src, "fake")
    with pytest.raises(CheckpointError, match="no such file"):
        weights.import_checkpoint(tmp_path / "missing.pth", "fake")


def test_import_rejects_non_tensor_junk(tmp_path):
    src = tmp_path / "junk.pth"
    torch.save({**official_state(), "note": "hello", "epoch": 3}, src)
    with pytest.raises(CheckpointError) as info:
        weights.import_checkpoint(src, "fake")
    text = str(info.value)
    assert "not a state dict" in text and "'note' (str)" in text and "'epoch' (int)" in text
    assert "params_ema" in text  # says which wrappers are accepted
    torch.save([torch.zeros(1)], src)
    with pytest.raises(CheckpointError, match="found a list"):
        weights.import_checkpoint(src, "fake")


def test_import_wrong_keys_and_shapes_give_the_converters_message(tmp_path):
    state = official_state()
    del state["body.scale"]
    state["body.extra"] = torch.zeros(1)
    src = tmp_path / "wrong.pth"
    torch.save(state, src)
    with pytest.raises(CheckpointError) as info:
        weights.import_checkpoint(src, "fake")
    text = str(info.value)
    assert str(src) in text and "not a valid fake checkpoint" in text
    assert "missing keys: ['body.scale']" in text and "unexpected keys: ['body.extra']" in text

    state = official_state()
    state["body.conv_in.bias"] = torch.zeros(5)
    torch.save(state, src)
    with pytest.raises(CheckpointError, match=r"0\.bias: shape \(5,\), expected \(8,\)"):
        weights.import_checkpoint(src, "fake")
    assert not (weights.user_weights_dir() / "fake-official.safetensors").exists()


# ----------------------------------------------------------------------------------- an HTTP server


class Behaviour:
    """What the test server does; it records every request's headers."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        self.drop_after: int | None = None  # bytes sent before dropping the connection ...
        self.drops = 0  # ... on this many first requests
        self.ignore_range = False
        self.stall: str | None = None  # "headers" or "body": the first request hangs there
        self.errors: list[int] = []  # statuses answered before serving the file
        self.requests: list[dict[str, str]] = []
        self.release = threading.Event()
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        b: Behaviour = self.server.behaviour
        with b.lock:
            b.requests.append(dict(self.headers))
            n = len(b.requests)
            status = b.errors.pop(0) if b.errors else None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._serve(b, n, status)

    def _serve(self, b: Behaviour, n: int, status: int | None) -> None:
        if not self.path.startswith("/files/"):
            status = 404
        if status is not None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            return
        if b.stall == "headers" and n == 1:
            b.release.wait(5)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not b.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(b.data) - 1}/{len(b.data)}")
        else:
            self.send_response(200)
        body = b.data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", b.etag)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if b.drop_after is not None and n <= b.drops:
            self.wfile.write(body[: b.drop_after])
            self.wfile.flush()
            return  # the server closes the socket: the client sees a short body
        if b.stall == "body" and n == 1:
            self.wfile.write(body[:1000])
            self.wfile.flush()
            b.release.wait(5)
            return
        self.wfile.write(body)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


@pytest.fixture
def server():
    data = os.urandom(300_000)
    srv = QuietServer(("127.0.0.1", 0), Handler)
    srv.behaviour = Behaviour(data)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/files/"
    yield srv
    srv.behaviour.release.set()
    srv.shutdown()
    srv.server_close()


def fast(**kwargs):
    return {"timeout": 5.0, "retries": 3, "progress": False, "backoff": 0.01, **kwargs}


# ----------------------------------------------------------------------------------------- download


def test_download_full_and_verified(server, tmp_path):
    b = server.behaviour
    dest = tmp_path / "dl" / "file.bin"
    out = weights.download(
        server.url + "file.bin", dest, sha256=hashlib.sha256(b.data).hexdigest(), expected_size=len(b.data), **fast()
    )
    assert out == dest and dest.read_bytes() == b.data
    assert not dest.with_suffix(".bin.part").exists()
    assert len(b.requests) == 1 and "Range" not in b.requests[0]


def test_download_resumes_with_range_after_dropped_connection(server, tmp_path):
    b = server.behaviour
    b.drop_after, b.drops = 100_000, 2
    dest = tmp_path / "file.bin"
    weights.download(server.url + "file.bin", dest, sha256=hashlib.sha256(b.data).hexdigest(), **fast())
    assert dest.read_bytes() == b.data
    assert [r.get("Range") for r in b.requests] == [None, "bytes=100000-", "bytes=200000-"]
    assert b.requests[1].get("If-Range") == b.etag  # resuming only if the file did not change


def test_download_resumes_a_part_left_by_an_earlier_run(server, tmp_path):
    b = server.behaviour
    dest = tmp_path / "file.bin"
    dest.with_suffix(".bin.part").write_bytes(b.data[:12345])
    weights.download(server.url + "file.bin", dest, expected_size=len(b.data), **fast())
    assert dest.read_bytes() == b.data
    assert [r.get("Range") for r in b.requests] == ["bytes=12345-"]


def test_download_restarts_when_server_ignores_range(server, tmp_path):
    b = server.behaviour
    b.drop_after, b.drops, b.ignore_range = 100_000, 1, True
    dest = tmp_path / "file.bin"
    weights.download(server.url + "file.bin", dest, sha256=hashlib.sha256(b.data).hexdigest(), **fast())
    assert dest.read_bytes() == b.data
    assert b.requests[1].get("Range") == "bytes=100000-"  # asked to resume, got a 200: restarted cleanly


def test_download_gives_up_when_server_keeps_dropping_without_range_support(server, tmp_path):
    b = server.behaviour
    b.drop_after, b.drops, b.ignore_range = 1000, 100, True
    with pytest.raises(DownloadError, match="gave up after 3 failed attempts in a row"):
        weights.download(server.url + "f", tmp_path / "f", **fast(retries=2))
    assert len(b.requests) == 4  # the first attempt made progress; then 3 attempts without new bytes


def test_download_with_progress_bar_on_a_terminal(server, tmp_path, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    dest = tmp_path / "file.bin"
    weights.download(server.url + "file.bin", dest, **fast(progress=True))
    assert dest.read_bytes() == server.behaviour.data


def test_download_sha256_mismatch_leaves_no_file(server, tmp_path):
    dest = tmp_path / "file.bin"
    with pytest.raises(WeightsIntegrityError, match="sha256") as info:
        weights.download(server.url + "file.bin", dest, sha256="0" * 64, **fast())
    assert hashlib.sha256(server.behaviour.data).hexdigest() in str(info.value)
    assert not dest.exists() and not dest.with_suffix(".bin.part").exists()


def test_download_wrong_size_is_not_retried(server, tmp_path):
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match="different file"):
        weights.download(server.url + "file.bin", dest, expected_size=123, **fast())
    assert len(server.behaviour.requests) == 1 and not dest.exists()


@pytest.mark.parametrize("where", ["headers", "body"])
def test_download_stall_times_out_then_retry_succeeds(server, tmp_path, where):
    b = server.behaviour
    b.stall = where
    dest = tmp_path / "file.bin"
    start = time.monotonic()
    weights.download(server.url + "file.bin", dest, **fast(timeout=0.5))
    assert time.monotonic() - start < 4
    assert dest.read_bytes() == b.data
    assert len(b.requests) == 2
    if where == "body":
        assert b.requests[1].get("Range") == "bytes=1000-"


def test_download_retries_server_errors(server, tmp_path):
    b = server.behaviour
    b.errors = [503, 500]
    dest = tmp_path / "file.bin"
    weights.download(server.url + "file.bin", dest, **fast())
    assert dest.read_bytes() == b.data and len(b.requests) == 3
    b.errors = [503] * 10
    with pytest.raises(DownloadError, match="HTTP 503"):
        weights.download(server.url + "file.bin", tmp_path / "again.bin", **fast(retries=2))


def test_download_404_fails_at_once(server, tmp_path):
    start = time.monotonic()
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        weights.download(
            server.url.replace("/files/", "/nope/") + "DMDNet.pth",
            tmp_path / "x.pth",
            retries=5,
            backoff=30.0,
            progress=False,
            timeout=5.0,
        )
    assert time.monotonic() - start < 2 and len(server.behaviour.requests) == 1
    assert "/nope/DMDNet.pth" in str(info.value)


def test_download_connection_refused_is_retried_then_reported(tmp_path):
    srv = QuietServer(("127.0.0.1", 0), Handler)
    port = srv.server_address[1]
    srv.server_close()  # nothing listens on this port now
    with pytest.raises(DownloadError, match="request failed"):
        weights.download(f"http://127.0.0.1:{port}/x", tmp_path / "x", **fast(retries=1))
    with pytest.raises(DownloadError, match="only http"):
        weights.download("file:///etc/passwd", tmp_path / "x", **fast())


# -------------------------------------------------------------------------------------------- fetch


def serve_checkpoint(server, tmp_path) -> str:
    src = tmp_path / "src.pth"
    torch.save({"params_ema": official_state()}, src)
    server.behaviour.data = src.read_bytes()
    return hashlib.sha256(server.behaviour.data).hexdigest()


def test_fetch_from_url_imports_into_dest_dir(server, tmp_path):
    source_sha = serve_checkpoint(server, tmp_path)
    server.behaviour.drop_after, server.behaviour.drops = 500, 1
    dest_dir = tmp_path / "store"
    result = weights.fetch("fake", url=server.url + "Fake%20Net.pth", dest_dir=dest_dir, **fast())
    assert result.path == dest_dir / "fake-official.safetensors" and result.path.is_file()
    assert result.source_sha256 == source_sha and result.source.name == "Fake Net.pth"
    entry = weights.read_manifest(dest_dir)["files"]["fake-official.safetensors"]
    assert entry["method"] == "fake" and entry["source_url"] == server.url + "Fake%20Net.pth"
    assert entry["sha256"] == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert not (dest_dir / "downloads").exists(), "the downloaded .pth is removed once imported"
    assert weights.load_weights(result.path).metadata["source_url"] == entry["source_url"]


def test_fetch_uses_env_url_and_user_folder(server, tmp_path, monkeypatch):
    serve_checkpoint(server, tmp_path)
    monkeypatch.setenv("FACERESTORE_FAKE_URL", server.url + "fake.pth")
    result = weights.fetch("fake", **fast())
    assert result.path.parent == weights.user_weights_dir()
    assert weights.locate_weights("fake").path == result.path


def test_fetch_bad_download_keeps_file_and_says_so(server, tmp_path):
    server.behaviour.data = b"<html>rate limited</html>"
    with pytest.raises(CheckpointError, match="kept at") as info:
        weights.fetch("fake", url=server.url + "fake.pth", dest_dir=tmp_path / "s", **fast())
    assert "not a PyTorch checkpoint" in str(info.value)


def test_fetch_knows_official_sources():
    assert weights.official_source("dmdnet").url == (
        "https://github.com/csxmli2016/DMDNet/releases/download/v1/DMDNet.pth"
    )
    with pytest.raises(WeightsError, match="memgan has no public weights"):
        weights.fetch("memgan")
    with pytest.raises(WeightsError, match="unknown method"):
        weights.fetch("nosuch")
