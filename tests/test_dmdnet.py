"""DMDNet unit tests that need no shared data: box arithmetic, checkpoint conversion, memory reads,
batching, reference order, the fused inference path and fp16.

The networks here are tiny (``Config(ngf=8, banks=4)``) with random weights; the official-size numbers
are checked against the official code in ``test_dmdnet_golden.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facerestore_cli.models import ConversionError, create_model
from facerestore_cli.models.dmdnet import network as D
from facerestore_cli.weights import CheckpointError, import_checkpoint, load_weights

TINY = D.Config(ngf=8, banks=4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------ landmarks


def face_landmarks(dx: float = 0.0, dy: float = 0.0, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    """A plausible 68-point face on the 512 crop (dlib order), shifted and jittered."""
    pts = np.zeros((68, 2))
    pts[0:17] = [(120 + 17 * i, 260 + 120 * math.sin(math.pi * i / 16)) for i in range(17)]
    pts[17:22] = [(150 + 20 * i, 190 - 5 * math.sin(math.pi * i / 4)) for i in range(5)]
    pts[22:27] = [(282 + 20 * i, 190 - 5 * math.sin(math.pi * i / 4)) for i in range(5)]
    pts[27:31] = [(256, 215 + 22 * i) for i in range(4)]
    pts[31:36] = [(228 + 14 * i, 300 + 6 * math.sin(math.pi * i / 4)) for i in range(5)]
    for start, cx in ((36, 190), (42, 322)):
        pts[start : start + 6] = [
            (cx + 25 * math.cos(a), 230 + 9 * math.sin(a)) for a in np.linspace(math.pi, -math.pi, 6, endpoint=False)
        ]
    pts[48:60] = [(256 + 55 * math.cos(a), 372 + 22 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 12, False)]
    pts[60:68] = [(256 + 35 * math.cos(a), 372 + 8 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 8, False)]
    rng = np.random.default_rng(seed)
    return pts + np.array([dx, dy]) + rng.normal(0, jitter, pts.shape)


def official_boxes(landmarks: np.ndarray) -> list[list[int]]:
    """The notes' get_component_location, written out step by step (items 7-11)."""
    lm = np.array(landmarks, dtype=np.float64)
    lm[lm < 8] = 8  # clamped in place, x and y alike
    lm[lm > 504] = 504
    boxes = []
    for eye, brow in ((range(36, 42), range(17, 22)), (range(42, 48), range(22, 27))):
        m = np.mean(lm[list(eye)], axis=0)
        top = np.min(lm[list(brow) + list(eye)][:, 1])
        l1 = (m[1] - top) * 1.3
        l2 = l1 / 1.9
        s = l1 + l2
        boxes.append([m[0] - s / 2 + 1, m[1] - l1 + 1, m[0] + s / 2, m[1] + l2])
    m = np.mean(lm[29:36], axis=0)
    n1 = max(m[0] - lm[31, 0], lm[35, 0] - m[0]) * 1.25
    n2 = (lm[33, 1] - m[1]) * 1.1
    boxes.append([m[0] - n1 + 1, m[1] - (2 * n1 - n2) + 1, m[0] + n1, m[1] + n2])
    mouth = lm[48:68]
    m = np.mean(mouth, axis=0)
    half = max(max(np.ptp(mouth[:, 0]), np.ptp(mouth[:, 1])) / 2, 16) * 1.1
    boxes.append([m[0] - half + 1, m[1] - half + 1, min(m[0] + half, 510), min(m[1] + half, 510)])
    return [[int(v) for v in box] for box in boxes]  # int() truncates toward zero, as astype(int) does


@pytest.mark.parametrize("seed", range(40))
def test_component_boxes_follow_the_official_arithmetic(seed):
    rng = np.random.default_rng(seed)
    lm = face_landmarks(*rng.uniform(-120, 120, 2), jitter=rng.uniform(0, 6), seed=seed)  # some points leave [8, 504]
    boxes = D.component_boxes(lm)
    assert boxes.shape == (4, 4) and boxes.dtype.kind == "i"
    assert boxes.tolist() == official_boxes(lm)


def test_component_boxes_clamp_and_truncate_toward_zero():
    # Everything in the top-left corner: all points clamp to (8, 8). The mouth half-size is then
    # 16 * 1.1 = 17.6, so x1 = y1 = 8 - 17.6 + 1 = -8.6, which truncates to -8 (floor would give -9).
    corner = np.full((68, 2), -40.0)
    assert D.component_boxes(corner).tolist() == [[9, 9, 8, 8], [9, 9, 8, 8], [9, 9, 8, 8], [-8, -8, 25, 25]]
    # Bottom-right: points clamp to 504; only the mouth's x2 / y2 are clamped, to 510 (504 + 17.6).
    far = np.full((68, 2), 900.0)
    assert D.component_boxes(far).tolist() == [[505, 505, 504, 504]] * 3 + [[487, 487, 510, 510]]
    # Mixed: x clamps high, y clamps low.
    mixed = np.tile([1000.0, -50.0], (68, 1))
    assert D.component_boxes(mixed)[3].tolist() == [487, -8, 510, 25]
    # The input is not modified (the official code clamps its own array in place).
    lm = face_landmarks(dx=300)
    before = lm.copy()
    D.component_boxes(lm)
    assert np.array_equal(lm, before)


@pytest.mark.parametrize(("stride", "expected"), [(2, (-3, 3, 6, 255)), (4, (-2, 1, 3, 127)), (8, (-1, 0, 1, 63))])
def test_regions_use_floor_division_at_each_scale(stride, expected):
    assert D._region(torch.tensor([-5, 7, 13, 511]), stride) == expected


def test_a_component_outside_the_face_is_a_clear_error():
    feat = torch.zeros(1, 4, 64, 64)
    with pytest.raises(ValueError, match="empty component crop"):
        D._crop(feat, torch.tensor([-8, -8, 25, 25]), 8, 13)  # x1 // 8 = -1: the slice wraps to nothing


# ------------------------------------------------------------------------- official checkpoints


def hooked_model(config: D.Config = TINY, seed: int = 0) -> D.DMDNet:
    """The official layout: every conv wrapped in hook-style spectral norm, u and v from power
    iterations, a random generic dictionary; in eval mode."""
    torch.manual_seed(seed)
    model = D.DMDNet(config)
    for module in list(model.modules()):
        if isinstance(module, nn.Conv2d):
            nn.utils.spectral_norm(module)
            w = module.weight_orig.detach().reshape(module.weight_orig.shape[0], -1)
            u = F.normalize(torch.randn(w.shape[0]), dim=0)
            for _ in range(8):
                v = F.normalize(w.t() @ u, dim=0)
                u = F.normalize(w @ v, dim=0)
            module.weight_u.copy_(u)
            module.weight_v.copy_(v)
    for name, buf in model.named_buffers():
        if "_mem_" in name:
            buf.normal_()
    return model.eval()


def official_state(config: D.Config = TINY, seed: int = 0) -> tuple[dict[str, torch.Tensor], D.DMDNet]:
    """An official-format state dict (with E_hq's unused query networks) and the hooked model it is."""
    model = hooked_model(config, seed)
    state = dict(model.state_dict())
    gen = torch.Generator().manual_seed(seed + 1)
    for key, shape in D._official_keys(config).items():
        if key not in state:
            assert key.startswith("E_hq.") and "_Q.Query." in key, key
            state[key] = torch.randn(shape, generator=gen)
    return state, model


def our_model(state: dict[str, torch.Tensor]) -> D.DMDNet:
    folded, config = D.convert_official(state)
    model = D.DMDNet(config)
    model.load_state_dict(folded, strict=True)
    return model.eval()


def random_faces(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 512, 512, generator=gen) * 2 - 1


def boxes_for(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(
        np.stack(
            [D.component_boxes(face_landmarks(*rng.uniform(-25, 25, 2), jitter=2, seed=seed + i)) for i in range(n)]
        )
    )


def test_convert_official_folds_exactly_what_the_hook_computes():
    state, hooked = official_state()
    folded, config = D.convert_official(state)
    assert config == TINY
    assert not any(k.endswith(("weight_orig", "weight_u", "weight_v")) for k in folded)
    assert not any(k.startswith("E_hq.") and "_Q." in k for k in folded)
    convs = {name: m for name, m in hooked.named_modules() if isinstance(m, nn.Conv2d)}
    assert len(convs) > 100
    for name, module in convs.items():
        for hook in module._forward_pre_hooks.values():
            hook(module, None)  # eval mode: weight = weight_orig / (u . W v), no power iteration
        assert torch.equal(folded[f"{name}.weight"], module.weight), name
        assert torch.equal(folded[f"{name}.bias"], module.bias), name
    ours = D.DMDNet(config)
    ours.load_state_dict(folded, strict=True)
    ours.eval()
    x, boxes = random_faces(1), boxes_for(1)
    with torch.no_grad():
        expected = hooked(x, boxes)
        assert torch.allclose(ours(x, boxes), expected, rtol=0, atol=1e-6)
    with torch.inference_mode():  # the fused path must not bypass the hook of a hooked conv
        assert torch.allclose(hooked(x, boxes), expected, rtol=0, atol=1e-6)
        assert torch.allclose(ours(x, boxes), expected, rtol=0, atol=1e-6)


def convert_error(state: dict[str, torch.Tensor]) -> str:
    with pytest.raises(ConversionError) as info:
        D.convert_official(state)
    return str(info.value)


def test_convert_official_names_missing_unexpected_and_misshaped_keys():
    state, _ = official_state()
    good = dict(state)
    del state["up4.4.bias"], state["E_hq.LE_256_Q.Query.0.weight_u"]
    state["up5.0.weight"] = torch.zeros(3)
    state["MSDilate.convi.weight_orig"] = torch.zeros(32, 31, 3, 3)
    text = convert_error(state)
    assert "not an official DMDNet (ngf=8) checkpoint" in text
    assert "2 missing key(s)" in text and "up4.4.bias" in text and "E_hq.LE_256_Q.Query.0.weight_u" in text
    assert "1 unexpected key(s)" in text and "up5.0.weight" in text
    assert "MSDilate.convi.weight_orig: (32, 31, 3, 3) (expected (32, 128, 3, 3))" in text

    text = convert_error({k: v for k, v in good.items() if k != "le_256_mem_key"})
    assert "not a DMDNet checkpoint" in text and "le_256_mem_key" in text


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_convert_official_rejects_non_finite_tensors(bad):
    state, _ = official_state()
    state["up2.ShiftModel1.0.weight_orig"] = state["up2.ShiftModel1.0.weight_orig"].clone()
    state["up2.ShiftModel1.0.weight_orig"][0, 0, 1, 1] = bad
    text = convert_error(state)
    assert "up2.ShiftModel1.0.weight_orig" in text and "not finite" in text and "damaged" in text


def test_convert_official_rejects_integer_tensors():
    state, _ = official_state()
    state["re_64_mem_value"] = state["re_64_mem_value"].to(torch.int32)
    assert "re_64_mem_value is not finite floating point data" in convert_error(state)


def test_import_of_an_official_pth_round_trips_through_the_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    state, hooked = official_state(seed=3)
    src = tmp_path / "DMDNet.pth"
    torch.save(state, src)
    result = import_checkpoint(src, "dmdnet", tmp_path / "weights")
    loaded = load_weights(result.path)
    assert loaded.method == "dmdnet" and loaded.config == {"ngf": 8, "banks": 4}
    model = create_model("dmdnet", loaded.config)
    model.load_state_dict(loaded.tensors, strict=True)
    model.eval()
    x, boxes = random_faces(1, seed=3), boxes_for(1, seed=3)
    with torch.no_grad():
        assert torch.allclose(model(x, boxes), hooked(x, boxes), rtol=0, atol=1e-6)


def test_weights_import_of_a_truncated_pth_is_a_clear_error(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from facerestore_cli.cli import app

    monkeypatch.setenv("FACERESTORE_HOME", str(tmp_path / "home"))
    state, _ = official_state()
    src = tmp_path / "DMDNet.pth"
    torch.save(state, src)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match=r"DMDNet\.pth is damaged, truncated or not a PyTorch checkpoint"):
        import_checkpoint(src, "dmdnet", tmp_path / "weights")
    result = CliRunner().invoke(app, ["weights", "import", str(src), "--dest", str(tmp_path / "weights")])
    assert result.exit_code == 1
    text = " ".join(result.output.split())  # rich may wrap long lines
    assert "error:" in text and "damaged, truncated or not a PyTorch checkpoint" in text
    assert "Traceback" not in text
    assert not (tmp_path / "weights" / "dmdnet-official.safetensors").exists()


# ---------------------------------------------------------------------------------- memory reads


def official_read(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """readMem as the notes describe it (items 17-19), in float64, one query at a time."""
    outs = []
    m = keys.shape[0]
    for q in query.double():
        sim = F.conv2d(q[None], keys.double())  # 1 x M x 1 x 1
        score = torch.softmax(sim.reshape(1, m) / math.sqrt(m), dim=1)
        outs.append((score @ values.double().reshape(m, -1)).reshape(values.shape[1:]))
    return torch.stack(outs)


def test_read_memory_shared_and_per_face_dictionaries_agree():
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(3, 4, 5, 5, generator=gen) * 0.3
    keys = torch.randn(6, 4, 5, 5, generator=gen) * 0.3
    values = torch.randn(6, 8, 5, 5, generator=gen)
    shared = D.read_memory(query, keys, values)
    assert shared.shape == (3, 8, 5, 5)
    assert torch.allclose(shared.double(), official_read(query, keys, values), rtol=0, atol=1e-6)
    per_face = D.read_memory(query, keys.expand(3, *keys.shape), values.expand(3, *values.shape))
    assert torch.allclose(per_face, shared, rtol=0, atol=1e-6)
    # distinct dictionaries per face: each face reads its own
    keys5 = torch.randn(3, 6, 4, 5, 5, generator=gen) * 0.3
    values5 = torch.randn(3, 6, 8, 5, 5, generator=gen)
    mixed = D.read_memory(query, keys5, values5)
    for i in range(3):
        assert torch.allclose(mixed[i : i + 1], D.read_memory(query[i : i + 1], keys5[i], values5[i]), atol=1e-6)


def test_read_memory_in_half_precision_reads_in_float32():
    # A whole-patch dot product of 16 x 16 x 16 values of 4 is 65536: past float16's largest value.
    query = torch.full((1, 16, 16, 16), 4.0)
    keys = torch.stack([torch.full((16, 16, 16), 4.0), torch.full((16, 16, 16), 3.9)])
    values = torch.randn(2, 8, 16, 16)
    expected = D.read_memory(query, keys, values)
    out = D.read_memory(query.half(), keys.half(), values.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert torch.allclose(out.float(), expected, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------- restores and paths


@pytest.fixture(scope="module")
def tiny():
    state, _ = official_state(seed=7)
    return our_model(state)


def stack_specific(flat: dict[str, torch.Tensor], batch: int, refs: int) -> dict[str, torch.Tensor]:
    return {k: v.reshape(batch, refs, *v.shape[1:]) for k, v in flat.items()}


@pytest.mark.parametrize("mode", ["fused", "plain"])
def test_reference_order_does_not_matter(tiny, mode):
    refs, ref_boxes = random_faces(4, seed=11), boxes_for(4, seed=11)
    x, boxes = random_faces(1, seed=12), boxes_for(1, seed=12)
    perm = [2, 0, 3, 1]
    ctx = torch.inference_mode() if mode == "fused" else torch.no_grad()
    with ctx:
        d1 = tiny.encode_references(refs, ref_boxes)
        d2 = tiny.encode_references(refs[perm], ref_boxes[perm])
        for key in d1:
            assert torch.allclose(d1[key][perm], d2[key], rtol=0, atol=1e-6), key
        out1, reads1 = tiny(x, boxes, d1, return_reads=True)
        out2, reads2 = tiny(x, boxes, d2, return_reads=True)
        generic = tiny(x, boxes)
    assert (out1 - out2).abs().max() <= 1e-6
    for key in reads1:
        assert torch.allclose(reads1[key], reads2[key], rtol=0, atol=1e-6), key
    # and the references are used at all: the specific reads differ from the generic ones
    assert (reads1["LE256Norm"] - reads1["LE256GenericNorm"]).abs().max() > 1e-3
    assert (out1 - generic).abs().max() > 0


@pytest.mark.parametrize("mode", ["fused", "plain"])
def test_a_batch_equals_single_restores(tiny, mode):
    x, boxes = random_faces(2, seed=21), boxes_for(2, seed=21)
    assert not torch.equal(boxes[0], boxes[1])
    refs, ref_boxes = random_faces(6, seed=22), boxes_for(6, seed=22)
    ctx = torch.inference_mode() if mode == "fused" else torch.no_grad()
    with ctx:
        assert tiny.uses_fused_path(x) == (mode == "fused" and D.fused_convolutions_available())
        batch = tiny(x, boxes)
        flat = tiny.encode_references(refs, ref_boxes)
        per_face = stack_specific(flat, 2, 3)  # face 0 gets refs 0-2, face 1 refs 3-5
        batch_specific = tiny(x, boxes, per_face)
        for i in range(2):
            single = tiny(x[i : i + 1], boxes[i : i + 1])
            assert (batch[i : i + 1] - single).abs().max() <= 1e-5
            own = {k: v[i] for k, v in per_face.items()}
            single_specific = tiny(x[i : i + 1], boxes[i : i + 1], own)
            assert (batch_specific[i : i + 1] - single_specific).abs().max() <= 1e-5


def test_fused_path_matches_the_plain_modules(tiny):
    x, boxes = random_faces(2, seed=31), boxes_for(2, seed=31)
    refs, ref_boxes = random_faces(3, seed=32), boxes_for(3, seed=32)
    with torch.no_grad():
        assert not tiny.uses_fused_path(x)
        d_plain = tiny.encode_references(refs, ref_boxes)
        g_plain = tiny(x, boxes)
        s_plain, r_plain = tiny(x, boxes, d_plain, return_reads=True)
    with torch.inference_mode():
        d_fused = tiny.encode_references(refs, ref_boxes)
        g_fused = tiny(x, boxes)
        s_fused, r_fused = tiny(x, boxes, d_fused, return_reads=True)
        # an input made from an HWC array with [None] has odd strides; same numbers
        hwc = x[0].permute(1, 2, 0).contiguous()
        odd = hwc.permute(2, 0, 1)[None]
        assert torch.allclose(tiny(odd, boxes[:1]), g_fused[:1], rtol=0, atol=1e-6)
    for key in d_plain:
        assert d_fused[key].is_contiguous(), key
        assert torch.allclose(d_fused[key], d_plain[key], rtol=1e-5, atol=1e-6), key
    assert g_fused.is_contiguous() and s_fused.is_contiguous()
    assert torch.allclose(g_fused, g_plain, rtol=0, atol=1e-6)
    assert torch.allclose(s_fused, s_plain, rtol=0, atol=1e-6)
    for key in r_plain:
        assert torch.allclose(r_fused[key], r_plain[key], rtol=1e-5, atol=1e-5), key


def test_fused_path_only_in_eval_inference_mode_on_cpu_float32(tiny):
    if not D.fused_convolutions_available():
        pytest.skip("this PyTorch build has no oneDNN fused convolution: only the plain path exists")
    x = random_faces(1)
    with torch.inference_mode():
        assert tiny.uses_fused_path(x)
        assert not tiny.uses_fused_path(x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not tiny.uses_fused_path(x)
        tiny.fused_inference = False
        try:
            assert not tiny.uses_fused_path(x)
        finally:
            tiny.fused_inference = True
        tiny.train()
        try:
            assert not tiny.uses_fused_path(x)
        finally:
            tiny.eval()
    with torch.no_grad():
        assert not tiny.uses_fused_path(x)


def test_training_still_back_propagates_through_the_plain_modules():
    state, _ = official_state(seed=5)
    model = our_model(state).train()
    x, boxes = random_faces(2, seed=41), boxes_for(2, seed=41)
    flat = model.encode_references(random_faces(4, seed=42), boxes_for(4, seed=42))
    generic = {k: v.unsqueeze(0).repeat(2, *([1] * v.ndim)) for k, v in model.generic_dictionary().items()}
    out = model(x, boxes, stack_specific(flat, 2, 2), generic=generic)
    out.square().mean().backward()
    without_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not without_grad, without_grad[:5]


def cpu_half_convolutions() -> bool:
    try:
        F.conv2d(torch.ones(1, 2, 4, 4, dtype=torch.float16), torch.ones(2, 2, 3, 3, dtype=torch.float16))
    except RuntimeError:
        return False
    return True


def test_half_precision_model_on_cpu(tiny):
    if not cpu_half_convolutions():
        pytest.skip("this CPU build of PyTorch has no float16 convolutions")
    half = our_model(official_state(seed=7)[0]).half()
    x, boxes = random_faces(1, seed=51), boxes_for(1, seed=51)
    refs, ref_boxes = random_faces(2, seed=52), boxes_for(2, seed=52)
    with torch.inference_mode():
        assert not half.uses_fused_path(x.half())
        ref_dict = tiny.encode_references(refs, ref_boxes)
        expected = tiny(x, boxes, ref_dict)
        half_dict = half.encode_references(refs.half(), ref_boxes)
        out = half(x.half(), boxes, half_dict)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    scale = float(expected.abs().max())
    assert float((out.float() - expected).abs().max()) <= 2e-2 * scale + 1e-3
