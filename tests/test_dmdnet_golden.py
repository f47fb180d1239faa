"""DMDNet against the official code's golden outputs (``$FACERESTORE_SHARED/golden/dmdnet``).

The synthetic official-format checkpoint is rebuilt from ``RECIPE.md`` (``tests/dmdnet_recipe.py``),
checked against ``state_dict_fingerprint.tsv``, saved as a ``.pth`` and imported exactly as a user's
real checkpoint is: ``weights.import_checkpoint`` (key checks, spectral-norm folding, safetensors,
manifest), then ``create_restorer("dmdnet", weights=...)``, the restorer the CLI uses, whose own pre-processing
and component boxes feed the network. Tolerances are the ones the golden README suggests. Restores
run in ``eval()`` under ``torch.inference_mode()`` as the restorer runs them (the fused CPU path);
the plain modules, which training and its validation use, are checked on the generic output too.
"""

from __future__ import annotations

import gc
import json
import math
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_path
from dmdnet_recipe import build_state_dict, read_manifest
from safetensors.numpy import load_file

from facerestore_cli.models.dmdnet import network as D

REF_NAMES = ("0.png", "1.png", "10.png")  # the golden batch order (Python sorted())
LQ_NAME = "00005_17.png"


@pytest.fixture(scope="module")
def golden():
    return shared_path("golden", "dmdnet")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def read_official(path) -> torch.Tensor:
    """The notes' pre-processing: IMREAD_UNCHANGED, BGR2RGB, /255 in float64 -> float32, (x - 0.5) / 0.5."""
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    x = torch.from_numpy((cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) / 255.0).astype(np.float32)).permute(2, 0, 1)
    return ((x - 0.5) / 0.5)[None]


def read_rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)


def max_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def fingerprint_problems(state: dict[str, torch.Tensor], path) -> list[str]:
    """Compare the rebuilt tensors with ``state_dict_fingerprint.tsv``: numel exact, float64 sums and sums
    of squares to 1e-12 (relative to the sum of magnitudes: summation order moves the last bits), and
    the first 4 float32 values exactly."""
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["key", "numel", "sum_f64", "sum_sq_f64", "first4_float32"]
    problems = []
    rows = [line.split("\t") for line in lines[1:] if line.strip()]
    if [r[0] for r in rows] != list(state):
        problems.append("fingerprint keys differ from the rebuilt state dict (or their order does)")
    for key, numel, total, total_sq, first4 in rows:
        if key not in state:
            continue
        x = state[key].numpy().reshape(-1).astype(np.float64)
        if x.size != int(numel):
            problems.append(f"{key}: numel {x.size} != {numel}")
            continue
        scale = float(np.abs(x).sum())
        if not math.isclose(x.sum(), float(total), rel_tol=1e-12, abs_tol=1e-12 * scale):
            problems.append(f"{key}: sum {x.sum()!r} != {total}")
        if not math.isclose((x * x).sum(), float(total_sq), rel_tol=1e-12):
            problems.append(f"{key}: sum of squares {(x * x).sum()!r} != {total_sq}")
        expected = np.array([float(v) for v in first4.split(",")], dtype=np.float32)
        if not np.array_equal(state[key].numpy().reshape(-1)[:4], expected):
            problems.append(f"{key}: first values {state[key].reshape(-1)[:4].tolist()} != {expected.tolist()}")
    return problems


@pytest.fixture(scope="module")
def imported(golden, tmp_path_factory):
    """Rebuild the checkpoint, save it as an official .pth and import it with the real import path."""
    from facerestore_cli.weights import import_checkpoint

    tmp = tmp_path_factory.mktemp("dmdnet_golden")
    manifest = golden / "state_dict_manifest.tsv"
    state = build_state_dict(manifest)
    order_ok = list(state) == [key for key, _ in read_manifest(manifest)]
    problems = fingerprint_problems(state, golden / "state_dict_fingerprint.tsv")
    pth = tmp / "DMDNet.pth"
    torch.save(state, pth)
    del state
    gc.collect()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACERESTORE_HOME", str(tmp / "home"))  # never touch a real user weights folder
        result = import_checkpoint(pth, "dmdnet", tmp / "weights")
    pth.unlink()
    yield {"result": result, "order_ok": order_ok, "fingerprint_problems": problems}
    shutil.rmtree(tmp, ignore_errors=True)  # 600 MB of safetensors: do not leave it in pytest's tmp


@pytest.fixture(scope="module")
def restorer(imported):
    from facerestore_cli.restore import create_restorer

    r = create_restorer("dmdnet", weights=imported["result"].path)
    yield r
    del r.model
    gc.collect()


@pytest.fixture(scope="module")
def run(golden, restorer):
    """Everything the assertions look at, computed once with three forwards: the CLI's generic restore
    (``Restorer.restore``), one specific forward with its reads, and the plain modules' generic one."""
    lq_rgb = read_rgb(golden / "inputs" / "lq" / LQ_NAME)
    lq_marks = np.loadtxt(golden / "lq_landmarks.txt")
    ref_rgb = np.stack([read_rgb(golden / "inputs" / "refs" / n) for n in REF_NAMES])
    ref_marks = np.stack([np.loadtxt(golden / "refs_landmarks" / f"{n}.txt") for n in REF_NAMES])
    model = restorer.model
    x = restorer.to_tensor(lq_rgb[None])
    boxes = torch.from_numpy(restorer.boxes(lq_marks[None]))
    dictionary = {k: torch.from_numpy(v) for k, v in restorer.encode_references(ref_rgb, ref_marks).items()}
    generic01 = restorer.restore(lq_rgb[None], lq_marks[None])  # (1, 512, 512, 3) in [0, 1]
    with torch.inference_mode():
        fused = model.uses_fused_path(x)
        specific, reads = model(x, boxes, dictionary, return_reads=True)
    with torch.no_grad():  # the plain modules: training and its validation run these
        plain_generic = model(x, boxes)
    names = [D.dict_key(part, size, "") for size, _ in D.SCALES for part in D.PARTS]
    return {
        "lq_marks": lq_marks,
        "ref_marks": ref_marks,
        "x": x,
        "dictionary": dictionary,
        "fused": fused,
        "generic01": generic01,
        "specific": specific.numpy(),
        "plain_generic": plain_generic.numpy(),
        # the AdaIN-normalised reads: the final mix, and the generic read a generic-only forward uses
        "reads": {
            "specific": {n + "Norm": reads[n + "Norm"] for n in names},
            "generic": {n + "Norm": reads[n + "GenericNorm"] for n in names},
        },
    }


def test_recipe_rebuilds_the_fingerprinted_checkpoint(imported):
    assert imported["order_ok"], "state dict order differs from state_dict_manifest.tsv"
    problems = imported["fingerprint_problems"]
    assert not problems, f"{len(problems)} fingerprint mismatches, e.g. {problems[:5]}"


def test_import_records_the_official_config(imported):
    result = imported["result"]
    assert result.config == D.Config(ngf=64, banks=128)
    assert result.path.is_file() and result.path.suffix == ".safetensors"


def test_restorer_preprocessing_is_the_official_one(golden, run):
    assert torch.equal(run["x"], read_official(golden / "inputs" / "lq" / LQ_NAME))


def test_component_boxes_exact(golden, run):
    expected = json.loads((golden / "boxes.json").read_text())
    assert expected["order"] == list(D.BOX_ORDER)
    assert D.component_boxes(run["lq_marks"]).tolist() == expected["lq"]
    assert expected["refs_order"] == list(REF_NAMES)
    for name, marks in zip(REF_NAMES, run["ref_marks"], strict=True):
        assert D.component_boxes(marks).tolist() == expected["refs"][name], name


def test_specific_dictionary(golden, run):
    expected = load_file(golden / "specific_dictionary.safetensors")
    ours = run["dictionary"]
    assert set(ours) == set(expected)
    for key, ref in expected.items():
        assert tuple(ours[key].shape) == ref.shape, key
        assert max_abs(ours[key], ref) <= 1e-6, key


def test_generic_and_specific_outputs(golden, run):
    if D.fused_convolutions_available():
        assert run["fused"], "the restorer should run the fused inference path here"
    generic, specific = np.load(golden / "generic_out.npy"), np.load(golden / "specific_out.npy")
    assert run["specific"].shape == generic.shape == specific.shape == (1, 3, 512, 512)
    assert max_abs(run["specific"], specific) <= 1e-6
    assert max_abs(run["plain_generic"], generic) <= 1e-6
    # Restorer.restore returns out * 0.5 + 0.5 in float32: 1e-6 on the output is 5e-7 there, plus the
    # rounding of the + 0.5 (half an ulp at 1.0).
    expected01 = np.transpose(generic[0], (1, 2, 0)) * 0.5 + 0.5
    assert run["generic01"].shape == (1, 512, 512, 3) and run["generic01"].dtype == np.float32
    assert max_abs(run["generic01"][0], expected01) <= 0.5e-6 + 6e-8


def test_enhancer_outputs_and_references_matter(golden, run):
    expected = load_file(golden / "enhancer_outputs.safetensors")
    names = [D.dict_key(part, size, "Norm") for size, _ in D.SCALES for part in D.PARTS]
    assert set(expected) == {f"{kind}.{n}" for kind in ("generic", "specific") for n in names}
    for key, ref in expected.items():
        kind, name = key.split(".")
        ours = run["reads"][kind][name]
        assert tuple(ours.shape) == ref.shape, key
        assert max_abs(ours, ref) <= 1e-5, key
    for name in names:
        # With this recipe the references move the final image by only ~2.6e-6, so check here that they
        # matter: the golden reads differ by 2e-4 .. 4e-3, far above the 1e-5 tolerance.
        gap = max_abs(run["reads"]["specific"][name], run["reads"]["generic"][name])
        assert gap >= 1e-4, (name, gap)
        assert max_abs(expected[f"specific.{name}"], expected[f"generic.{name}"]) >= 1e-4


def to_uint8_like_main_test(y01: np.ndarray) -> np.ndarray:
    """main_test's post-processing from ``out * 0.5 + 0.5`` (HWC, RGB): BGR, float32, clip(0, 1), *255,
    then cv2.imwrite's float -> uint8 conversion (round half to even)."""
    return np.rint(np.clip(y01[:, :, ::-1].astype(np.float32), 0, 1) * 255.0).astype(np.uint8)


def test_composite_png_within_one_grey_level(golden, run):
    def hwc01(t: np.ndarray) -> np.ndarray:
        return np.transpose(t[0], (1, 2, 0)) * 0.5 + 0.5

    png = cv2.imread(str(golden / "00005_17_GS.png"), cv2.IMREAD_UNCHANGED)
    parts = [hwc01(run["x"].numpy()), run["generic01"][0], hwc01(run["specific"])]
    ours = np.hstack([to_uint8_like_main_test(p) for p in parts])
    assert png.shape == ours.shape == (512, 1536, 3)
    assert int(np.abs(png.astype(np.int16) - ours).max()) <= 1
