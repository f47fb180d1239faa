"""The onnxruntime backend against torch: the same numbers, per-face boxes, the export cache, no torch.

Parity is measured on the golden DMDNet inputs (``$FACERESTORE_SHARED/golden/dmdnet``): the low-quality
face and the three references, each with its own landmarks, so a batch has four different sets of
component boxes (the crops and pastes are computed in the graph from them). The tolerance is the
issue's: 1e-4 max abs on the [0, 1] output. The GPU providers run the same checks where they exist.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_path

from facerestore_cli.device import DeviceError, cuda_provider_usable, make_runtime
from facerestore_cli.models.onnx_export import EXPORTER_VERSION, OPSET
from facerestore_cli.restore import create_restorer, resolve_backend
from facerestore_cli.weights import WeightsIntegrityError, locate_weights, save_weights
from facerestore_cli.weights.onnx import find_onnx

REPO = Path(__file__).resolve().parents[1]
REF_NAMES = ("0.png", "1.png", "10.png")
TOLERANCE = 1e-4
#: TensorRT builds float32 engines with TF32 allowed (onnxruntime has no switch for it), which moves
#: outputs by up to about 1e-3 on Ampere and later GPUs; the CPU and CUDA providers are held to 1e-4.
PROVIDER_TOLERANCE = {"cpu": TOLERANCE, "cuda": TOLERANCE, "tensorrt": 2e-3}


def _providers() -> list:
    import onnxruntime as ort

    have = ort.get_available_providers()
    gpu = cuda_provider_usable()
    out = [pytest.param("cpu", id="cpu")]
    for name, provider in (("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")):
        reason = None if provider in have else f"this onnxruntime has no {provider}"
        reason = reason or (None if gpu else "no NVIDIA GPU on this machine")
        out.append(pytest.param(name, id=name, marks=pytest.mark.skipif(reason is not None, reason=reason or "")))
    return out


PROVIDERS = _providers()


def onnx_runtime(provider: str, monkeypatch: pytest.MonkeyPatch, half: bool = False):
    """The onnxruntime runtime for one provider of the parametrisation (TensorRT only when asked)."""
    monkeypatch.setenv("FACERESTORE_TENSORRT", "1" if provider == "tensorrt" else "0")
    return make_runtime("cpu" if provider == "cpu" else "cuda:0", half, 2, backend="onnxruntime")


def max_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def golden_faces():
    """Four aligned faces with their own landmarks (the golden low-quality face, then the references)."""
    golden = shared_path("golden", "dmdnet")
    faces = [read_rgb(golden / "inputs" / "lq" / "00005_17.png")]
    marks = [np.loadtxt(golden / "lq_landmarks.txt")]
    for name in REF_NAMES:
        faces.append(read_rgb(golden / "inputs" / "refs" / name))
        marks.append(np.loadtxt(golden / "refs_landmarks" / f"{name}.txt"))
    return {"golden": golden, "faces": np.stack(faces), "marks": np.stack(marks)}


@pytest.fixture(scope="module")
def torch_restorers():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    cpu = make_runtime("cpu", threads=2)
    yield {m: create_restorer(m, runtime=cpu, batch_size=4) for m in ("dmdnet", "memgan")}
    torch.set_num_threads(threads)


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """A user weights folder and cache of the test's own: exports never touch a real one."""
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACERESTORE_CACHE", str(tmp_path / "cache"))
    return tmp_path


# ------------------------------------------------------------------------------------------ shipped


def test_the_shipped_graphs_are_listed_current_and_intact():
    manifest = json.loads((REPO / "weights" / "MANIFEST.json").read_text())["files"]
    for stem, graphs in (("dmdnet-compact", ("generic", "specific", "encode")), ("memgan-compact", ("restore",))):
        source = manifest[f"{stem}.safetensors"]
        for graph in graphs:
            entry = manifest[f"{stem}.{graph}.onnx"]
            assert entry["source_sha256"] == source["sha256"], f"{stem}.{graph}.onnx is for other weights"
            assert (entry["opset"], entry["exporter_version"]) == (OPSET, EXPORTER_VERSION), (
                "the exporter changed: re-export with python tools/ship_weights.py METHOD --onnx-only"
            )
            assert entry["size"] == (REPO / "weights" / f"{stem}.{graph}.onnx").stat().st_size
    for method in ("dmdnet", "memgan"):
        files = find_onnx(method, locate_weights(method))
        assert files is not None and files.origin == "shipped", method


@pytest.mark.parametrize("provider", PROVIDERS)
def test_memgan_matches_torch(provider, golden_faces, torch_restorers, monkeypatch):
    faces, marks = golden_faces["faces"], golden_faces["marks"]
    expected = torch_restorers["memgan"].restore(faces, marks)
    onnx = create_restorer("memgan", runtime=onnx_runtime(provider, monkeypatch), batch_size=3)
    assert onnx.info.backend == "onnxruntime" and onnx.info.sha256 == torch_restorers["memgan"].info.sha256
    got = onnx.restore(faces, marks)  # batches of 3 and 1: the batch axis is dynamic
    assert got.shape == expected.shape and got.dtype == np.float32
    assert max_abs(got, expected) <= PROVIDER_TOLERANCE[provider]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dmdnet_generic_specific_and_encoding_match_torch(provider, golden_faces, torch_restorers, monkeypatch):
    faces, marks = golden_faces["faces"], golden_faces["marks"]
    ref = torch_restorers["dmdnet"]
    onnx = create_restorer("dmdnet", runtime=onnx_runtime(provider, monkeypatch), batch_size=4)
    boxes = onnx.boxes(marks)
    assert len({b.tobytes() for b in boxes}) == 4, "the four faces should have four different sets of boxes"
    tolerance = PROVIDER_TOLERANCE[provider]
    assert max_abs(onnx.restore(faces, marks), ref.restore(faces, marks)) <= tolerance

    dictionary = ref.encode_references(faces[1:], marks[1:])
    encoded = onnx.encode_references(faces[1:], marks[1:])
    assert set(encoded) == set(dictionary)
    for name, value in dictionary.items():
        assert encoded[name].shape == value.shape
        assert max_abs(encoded[name], value) <= tolerance / 10 * max(1.0, float(np.abs(value).max())), name
    expected = ref.restore(faces[:2], marks[:2], dictionary)
    assert max_abs(onnx.restore(faces[:2], marks[:2], dictionary), expected) <= tolerance
    assert max_abs(onnx.restore(faces[:2], marks[:2], encoded), expected) <= tolerance
    # the references change the output: the specific graph really reads its inputs
    assert max_abs(expected, ref.restore(faces[:2], marks[:2])) > 1e-3


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p.id != "cpu"])
def test_half_precision_on_the_gpu_stays_close(provider, golden_faces, torch_restorers, monkeypatch, isolated_home):
    faces, marks = golden_faces["faces"][:2], golden_faces["marks"][:2]
    for method in ("dmdnet", "memgan"):
        onnx = create_restorer(method, runtime=onnx_runtime(provider, monkeypatch, half=True))
        assert onnx.info.dtype == "float16"
        assert max_abs(onnx.restore(faces, marks), torch_restorers[method].restore(faces, marks)) <= 2e-2


def test_faces_the_network_refuses_are_refused_alike(torch_restorers, golden_faces, monkeypatch):
    corner = np.full((68, 2), 8.0)  # every part at the corner: empty crops (tests/test_dmdnet.py)
    face = golden_faces["faces"][:1]
    with pytest.raises(ValueError, match="empty component crop"):
        torch_restorers["dmdnet"].restore(face, corner[None])
    onnx = create_restorer("dmdnet", runtime=onnx_runtime("cpu", monkeypatch))
    with pytest.raises(ValueError, match="empty component crop"):
        onnx.restore(face, corner[None])


# ----------------------------------------------------------------------------------- whole photos


@pytest.mark.parametrize("method", ["dmdnet", "memgan"])
def test_whole_photos_agree_between_backends(method):
    from facerestore_cli import FaceRestorer, RestoreOptions
    from facerestore_cli.imagefile import load_photo

    photo = load_photo(shared_path("data", "eval-dev", "realworld", "whole", "tencentarc_Blake_Lively.jpg"))
    outs = {}
    for backend in ("torch", "onnxruntime"):
        options = RestoreOptions.from_flat(method=method, backend=backend, device="cpu", threads=2, strength=1.0)
        engine = FaceRestorer(options)
        assert engine.restorer.info.backend == backend
        result = engine.restore(photo)
        assert sum(f.restored for f in result.faces) >= 1
        outs[backend] = result.photo.pixels
    assert not np.array_equal(outs["torch"], photo.pixels)
    assert psnr(outs["torch"], outs["onnxruntime"]) >= 50.0


def test_an_onnxruntime_restore_never_imports_torch():
    photo = shared_path("data", "eval-dev", "realworld", "whole", "tencentarc_Blake_Lively.jpg")
    code = f"""
import sys
from facerestore_cli import FaceRestorer, RestoreOptions
from facerestore_cli.imagefile import load_photo
for method in ("dmdnet", "memgan"):
    engine = FaceRestorer(RestoreOptions.from_flat(method=method, backend="auto", device="cpu", strength=1.0))
    assert engine.restorer.info.backend == "onnxruntime", engine.restorer.info
    result = engine.restore(load_photo({str(photo)!r}))
    assert sum(f.restored for f in result.faces) >= 1
print(sorted(m for m in ("torch", "torchvision") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------------------------- backend choice


def test_the_backend_choice(monkeypatch):
    assert resolve_backend("dmdnet") == resolve_backend("memgan") == "onnxruntime"  # shipped ONNX files
    assert resolve_backend("dmdnet", "torch") == "torch"
    assert resolve_backend("dmdnet", device="mps") == "torch"
    assert resolve_backend("none") == "onnxruntime"
    with pytest.raises(ValueError, match="--backend"):
        resolve_backend("dmdnet", "tensorflow")
    with pytest.raises(DeviceError, match="mps"):
        make_runtime("mps", backend="onnxruntime")
    with pytest.raises(DeviceError, match="--half"):
        make_runtime("cpu", True, backend="onnxruntime")
    rt = make_runtime("cpu", None, 3, backend="onnxruntime")
    assert (str(rt.device), rt.dtype, rt.threads, rt.backend) == ("cpu", "float32", 3, "onnxruntime")
    assert rt.onnx_device == "cpu" and not rt.half


def test_the_cli_offers_the_backend_on_restore_and_build_dict():
    from typer.testing import CliRunner

    from facerestore_cli import RestoreOptions
    from facerestore_cli.cli import app

    for command in ("restore", "build-dict"):
        text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        assert "--backend" in text and "onnxruntime" in text, command
    assert RestoreOptions.from_flat(backend="onnxruntime").runtime.backend == "onnxruntime"
    with pytest.raises(ValueError, match="--backend"):
        RestoreOptions.from_flat(backend="tensorflow").check()


def test_gpu_providers_get_the_device_id_precision_and_engine_cache(monkeypatch, tmp_path):
    """What a GPU session is asked for, checked without a GPU: ``--device cuda:N`` is the providers'
    device id, TensorRT comes first with its engine cache, ``--no-half`` turns fp16 and TF32 off."""
    import onnxruntime as ort

    from facerestore_cli.device import DeviceName, Runtime, restorer_providers

    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    monkeypatch.setenv("FACERESTORE_TENSORRT", "1")
    half = Runtime(DeviceName("cuda", 1), "float16", None, "onnxruntime")
    (trt, trt_opts), (cuda, cuda_opts), cpu = restorer_providers(half, tensorrt_cache=tmp_path / "trt")
    assert (trt, cuda, cpu) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert trt_opts["device_id"] == cuda_opts["device_id"] == 1 and trt_opts["trt_fp16_enable"] is True
    assert trt_opts["trt_engine_cache_enable"] and trt_opts["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert (tmp_path / "trt").is_dir() and "use_tf32" not in cuda_opts
    full = Runtime(DeviceName("cuda", 0), "float32", None, "onnxruntime")
    monkeypatch.setenv("FACERESTORE_TENSORRT", "0")
    ((name, opts), _) = restorer_providers(full)
    assert name == "CUDAExecutionProvider" and opts["device_id"] == 0
    if tuple(int(p) for p in ort.__version__.split(".")[:2]) >= (1, 18):
        assert opts["use_tf32"] == 0
    assert restorer_providers(make_runtime("cpu", backend="onnxruntime")) == ["CPUExecutionProvider"]
    monkeypatch.setattr("facerestore_cli.device.nvidia_gpu_present", lambda: True)
    rt = make_runtime("cuda:1", None, backend="onnxruntime")
    assert (str(rt.device), rt.half, rt.onnx_device) == ("cuda:1", True, "cuda:1")
    assert not make_runtime("cuda:1", False, backend="onnxruntime").half


def test_threads_reach_onnxruntime(monkeypatch):
    import onnxruntime as ort

    seen = []
    real = ort.InferenceSession

    def spy(path, sess_options=None, providers=None):
        seen.append((sess_options.intra_op_num_threads, providers))
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    create_restorer("memgan", runtime=make_runtime("cpu", None, 1, backend="onnxruntime"))
    assert seen == [(1, ["CPUExecutionProvider"])]


def test_cpu_sessions_load_an_optimised_copy_made_once_and_checked_at_every_load(isolated_home, golden_faces):
    from facerestore_cli.restore_onnx import cpu_session, faces_to_array, optimized_graph_cache_dir
    from facerestore_cli.weights.files import file_sha256

    graph = REPO / "weights" / "memgan-compact.restore.onnx"
    feeds = {"lq": faces_to_array(golden_faces["faces"][:1])}
    first = cpu_session(graph, 2)  # optimises the source graph and keeps the result
    (copy,) = optimized_graph_cache_dir().glob("*.onnx")
    assert copy.with_suffix(".sha256").read_text().strip() == file_sha256(copy, use_cache=False)
    assert first._model_path == str(graph)
    second = cpu_session(graph, 2)
    assert second._model_path == str(copy)
    want = first.run(None, feeds)[0]
    assert np.array_equal(second.run(None, feeds)[0], want)

    damaged = bytearray(copy.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # a flipped bit in the middle of the weights
    copy.write_bytes(bytes(damaged))
    third = cpu_session(graph, 2)
    assert third._model_path == str(graph)  # not run: made again from the source
    assert copy.with_suffix(".sha256").read_text().strip() == file_sha256(copy, use_cache=False)
    assert np.array_equal(third.run(None, feeds)[0], want)

    copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 3])  # cut short: onnxruntime cannot read it
    fourth = cpu_session(graph, 2)
    assert fourth._model_path == str(graph)
    assert copy.with_suffix(".sha256").read_text().strip() == file_sha256(copy, use_cache=False)
    assert np.array_equal(fourth.run(None, feeds)[0], want)


def test_a_cache_that_cannot_be_written_costs_only_time(isolated_home, monkeypatch, golden_faces):
    from facerestore_cli.restore_onnx import cpu_session, faces_to_array

    blocked = isolated_home / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("FACERESTORE_CACHE", str(blocked))
    graph = REPO / "weights" / "memgan-compact.restore.onnx"
    session = cpu_session(graph, 1)
    out = session.run(None, {"lq": faces_to_array(golden_faces["faces"][:1])})[0]
    assert out.shape == (1, 3, 512, 512) and np.isfinite(out).all()
    assert blocked.read_text() == "a file where the cache folder would be"


# ------------------------------------------------------------------------------------- export cache


def _tiny_dmdnet(path: Path) -> Path:
    from facerestore_cli.models import create_model, get_method

    torch.manual_seed(0)
    config = get_method("dmdnet").tiny_config()
    model = create_model("dmdnet", config)
    with torch.no_grad():
        for buf in model.buffers():
            buf.copy_(torch.randn_like(buf))  # a generic dictionary that is not all zeros
    import dataclasses

    save_weights(model.state_dict(), path, {"method": "dmdnet", "config": dataclasses.asdict(config)})
    return path


def test_other_weights_are_exported_once_cached_and_found_without_torch(isolated_home, golden_faces):
    weights = _tiny_dmdnet(isolated_home / "mine.safetensors")
    rt = make_runtime("cpu", None, 2, backend="onnxruntime")
    assert resolve_backend("dmdnet", weights=weights) == "torch"  # auto never exports unasked
    onnx = create_restorer("dmdnet", weights=weights, runtime=rt)  # --backend onnxruntime: exported now
    assert resolve_backend("dmdnet", weights=weights) == "onnxruntime"
    files = onnx.files
    assert files.origin == "cache" and set(files.paths) == {"generic", "specific", "encode"}
    folder = files.paths["generic"].parent
    assert folder.parent == isolated_home / "home" / "weights" / "onnx"
    assert folder.name == f"{files.sha256[:32]}-opset{OPSET}-e{EXPORTER_VERSION}-fp32"
    faces, marks = golden_faces["faces"], golden_faces["marks"]
    torch_restorer = create_restorer("dmdnet", weights=weights, runtime=make_runtime("cpu"))
    assert max_abs(onnx.restore(faces, marks), torch_restorer.restore(faces, marks)) <= TOLERANCE

    code = f"""
import sys
from facerestore_cli.device import make_runtime
from facerestore_cli.restore import create_restorer
r = create_restorer("dmdnet", weights={str(weights)!r}, runtime=make_runtime("cpu", backend="onnxruntime"))
print(r.files.origin, sorted(m for m in ("torch", "onnx") if m in sys.modules))
"""
    env = {**os.environ, "FACERESTORE_HOME": str(isolated_home / "home")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "cache []"

    # The CUDA provider's float16 graphs, checked where no GPU is: exported in float16 (DMDNet's memory
    # reads stay float32 inside), cached apart from the float32 ones, run here on the CPU provider.
    import onnxruntime as ort

    from facerestore_cli.restore_onnx import faces_to_array
    from facerestore_cli.weights import export_onnx

    location = locate_weights("dmdnet", weights)
    half = export_onnx("dmdnet", location, half=True)
    assert half.half and half.paths["generic"].parent.name.endswith("-fp16")
    assert find_onnx("dmdnet", location, half=True) == half and find_onnx("dmdnet", location) == files
    feeds = {"lq": faces_to_array(faces[:2]), "boxes": onnx.boxes(marks[:2])}
    outs = {}
    for name, found, dtype in (("half", half, np.float16), ("full", files, np.float32)):
        sess = ort.InferenceSession(str(found.paths["generic"]), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].type == ("tensor(float16)" if name == "half" else "tensor(float)")
        outs[name] = sess.run(None, {**feeds, "lq": feeds["lq"].astype(dtype)})[0].astype(np.float32)
    assert np.isfinite(outs["half"]).all() and max_abs(outs["half"], outs["full"]) / 2 <= 2e-2

    damaged = files.paths["specific"]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    # the graph every run uses is hashed at the start; the others when first used, and never run damaged
    restorer = create_restorer("dmdnet", weights=weights, runtime=rt)
    assert np.isfinite(restorer.restore(faces[:1], marks[:1])).all()
    with pytest.raises(WeightsIntegrityError, match="damaged"):
        restorer.session("specific")
    generic = files.paths["generic"]
    generic.write_bytes(generic.read_bytes()[:-1] + bytes([generic.read_bytes()[-1] ^ 0xFF]))
    with pytest.raises(WeightsIntegrityError, match="damaged"):
        create_restorer("dmdnet", weights=weights, runtime=rt)


# ------------------------------------------------------------------------ the official-size network


@pytest.fixture(scope="module")
def official(golden_faces, tmp_path_factory):
    """The synthetic official-size checkpoint (RECIPE.md), imported as a user's is, and both backends
    on it: its export is the slow part (a minute or two on two cores), done once for the module."""
    from dmdnet_recipe import build_state_dict

    from facerestore_cli.weights import import_checkpoint

    tmp = tmp_path_factory.mktemp("onnx_official")
    state = build_state_dict(golden_faces["golden"] / "state_dict_manifest.tsv")
    pth = tmp / "DMDNet.pth"
    torch.save(state, pth)
    del state
    gc.collect()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACERESTORE_HOME", str(tmp / "home"))
        mp.setenv("FACERESTORE_CACHE", str(tmp / "cache"))
        result = import_checkpoint(pth, "dmdnet", tmp / "weights")
        pth.unlink()
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        ref = create_restorer("dmdnet", weights=result.path, runtime=make_runtime("cpu", threads=2), batch_size=1)
        onnx = create_restorer(
            "dmdnet", weights=result.path, runtime=make_runtime("cpu", None, 2, backend="onnxruntime"), batch_size=1
        )
        yield {"torch": ref, "onnx": onnx}
        torch.set_num_threads(threads)
    del ref, onnx
    gc.collect()
    shutil.rmtree(tmp, ignore_errors=True)  # about 2 GB of safetensors and ONNX


@pytest.mark.slow
def test_official_size_generic_and_specific_match_torch_and_the_golden_outputs(official, golden_faces):
    golden = golden_faces["golden"]
    faces, marks = golden_faces["faces"], golden_faces["marks"]
    ref, onnx = official["torch"], official["onnx"]
    generic = onnx.restore(faces[:1], marks[:1])
    assert max_abs(generic, ref.restore(faces[:1], marks[:1])) <= TOLERANCE
    official_generic = np.load(golden / "generic_out.npy")[0].transpose(1, 2, 0) * 0.5 + 0.5
    assert max_abs(generic[0], official_generic) <= TOLERANCE

    dictionary = onnx.encode_references(faces[1:], marks[1:])
    expected_dict = ref.encode_references(faces[1:], marks[1:])
    for name, value in expected_dict.items():
        assert max_abs(dictionary[name], value) <= 1e-5 * max(1.0, float(np.abs(value).max())), name
    specific = onnx.restore(faces[:1], marks[:1], dictionary)
    assert max_abs(specific, ref.restore(faces[:1], marks[:1], expected_dict)) <= TOLERANCE
    official_specific = np.load(golden / "specific_out.npy")[0].transpose(1, 2, 0) * 0.5 + 0.5
    assert max_abs(specific[0], official_specific) <= TOLERANCE
