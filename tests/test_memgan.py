"""MemGAN: the memory equations, the fusions, the clean StyleGAN2 layout, saving and batching."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path
from safetensors.torch import load_file, save_file

from facerestore_cli.models import ConversionError as CheckpointError
from facerestore_cli.models import create_model
from facerestore_cli.models.memgan import (
    Config,
    MemGAN,
    MemoryBank,
    MemoryFusion,
    build,
    convert_stylegan2,
)
from facerestore_cli.models.stylegan2 import StyleConv, ToRGB, decoder_layout, resolutions

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = Config(width=1 / 32, size=32, memory_scales=(4, 8, 16, 32))


def tiny_model(seed: int = 0, **overrides) -> MemGAN:
    torch.manual_seed(seed)
    return build(dataclasses.replace(TINY, **overrides))


def image(n: int, size: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def memories(model: MemGAN) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith(".memory")}


# ---------------------------------------------------------------------------------------------- memory


def test_memory_retrieval_is_eqs_1_to_3() -> None:
    torch.manual_seed(3)
    bank = MemoryBank(num_slots=5, channels=3).eval()
    bank.memory.copy_(torch.randn(5, 3) * 2)
    feats = torch.randn(2, 3, 2, 2)
    out = bank(feats)
    assert out.shape == feats.shape

    mem = bank.memory.double().numpy()
    f = feats.double().numpy()
    for b in range(2):
        for y in range(2):
            for x in range(2):
                v = f[b, :, y, x]
                sims = [v @ mem[k] / (np.linalg.norm(v) * np.linalg.norm(mem[k])) for k in range(5)]
                alpha = np.exp(sims) / np.sum(np.exp(sims))
                expected = sum(alpha[k] * mem[k] for k in range(5))
                np.testing.assert_allclose(out[b, :, y, x].double().numpy(), expected, rtol=0, atol=1e-6)

    # chunking over positions changes nothing
    bank.chunk_elements = 5  # one position per chunk
    torch.testing.assert_close(bank(feats), out, rtol=0, atol=1e-6)
    # the temperature knob divides the cosines (1.0 is the paper)
    bank.temperature = 0.5
    v = f[0, :, 0, 0]
    sims = np.array([v @ mem[k] / (np.linalg.norm(v) * np.linalg.norm(mem[k])) for k in range(5)]) / 0.5
    alpha = np.exp(sims) / np.exp(sims).sum()
    np.testing.assert_allclose(bank(feats)[0, :, 0, 0].double().numpy(), alpha @ mem, atol=1e-6)


def test_memory_update_is_eq_5_on_voted_slots_only() -> None:
    lam = 0.9
    bank = MemoryBank(num_slots=4, channels=2, momentum=lam).train()
    slots = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [0.0, -0.5]])
    bank.memory.copy_(slots)
    # (N=2, C=2, H=1, W=2): votes known by construction, across both samples of the batch
    feats = torch.tensor(
        [
            [[[2.0, 0.1]], [[0.1, 3.0]]],  # sample 0: (2, .1) -> slot 0, (.1, 3) -> slot 1
            [[[1.5, 0.3]], [[-0.2, 0.9]]],  # sample 1: (1.5, -.2) -> slot 0, (.3, .9) -> slot 1
        ]
    )
    vectors = feats.permute(0, 2, 3, 1).reshape(-1, 2)
    assert vectors[:, 0].tolist() == pytest.approx([2.0, 0.1, 1.5, 0.3])

    reference = MemoryBank(num_slots=4, channels=2).eval()
    reference.memory.copy_(slots)
    out = bank(feats)
    # the read used the memory as it was before the update
    torch.testing.assert_close(out, reference(feats), rtol=0, atol=0)

    voters0, voters1 = vectors[[0, 2]], vectors[[1, 3]]
    torch.testing.assert_close(voters0, torch.tensor([[2.0, 0.1], [1.5, -0.2]]))
    torch.testing.assert_close(voters1, torch.tensor([[0.1, 3.0], [0.3, 0.9]]))
    sims = F.normalize(vectors, dim=1) @ F.normalize(slots, dim=1).t()
    assert sims.argmax(1).tolist() == [0, 1, 0, 1]
    mean0 = (voters0[0].double() + voters0[1].double()) / 2
    mean1 = (voters1[0].double() + voters1[1].double()) / 2

    new = bank.memory
    torch.testing.assert_close(new[0].double(), lam * slots[0].double() + (1 - lam) * mean0, rtol=0, atol=1e-6)
    torch.testing.assert_close(new[1].double(), lam * slots[1].double() + (1 - lam) * mean1, rtol=0, atol=1e-6)
    assert not torch.equal(new[0], slots[0]) and not torch.equal(new[1], slots[1])
    assert torch.equal(new[2], slots[2]) and torch.equal(new[3], slots[3])  # no voters: bit-identical


def test_memory_is_a_buffer_gradients_never_reach() -> None:
    model = tiny_model().train()
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.endswith(".memory") for n in names)
    assert set(memories(model)) == {f"memories.{r}.memory" for r in (4, 8, 16, 32)}
    before = memories(model)

    out = model(image(2, 32))
    after_forward = memories(model)
    assert any(not torch.equal(before[k], after_forward[k]) for k in before)  # training mode updates
    for k, bank in model.memories.items():
        assert not bank.memory.requires_grad, k

    out.square().mean().backward()
    for k, bank in model.memories.items():
        assert bank.memory.grad is None, k
        assert torch.equal(bank.memory, after_forward[f"memories.{k}.memory"]), k
    # the read is differentiable w.r.t. the features, so the encoder learns through the memory
    assert model.encoder.conv_first.weight.grad is not None
    assert model.encoder.conv_first.weight.grad.abs().sum() > 0


def test_eval_never_changes_memory() -> None:
    model = tiny_model().eval()
    before = memories(model)
    with torch.no_grad():
        model(image(2, 32))
    model(image(1, 32, seed=5)).mean().backward()  # eval with grad enabled too
    after = memories(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_config_lambda_and_slots_follow_the_paper() -> None:
    cfg = Config()
    assert cfg.lambda_ema == 0.999 and cfg.num_mlp == 8 and cfg.style_dim == 512
    assert cfg.channels() == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32}
    with torch.device("meta"):
        model = build(Config.compact())
    for name, bank in model.memories.items():
        assert bank.momentum == 0.999
        assert bank.memory.shape == (int(name), Config.compact().channels()[int(name)])  # K = h = w


def test_config_from_registry_dict_and_validation() -> None:
    model = create_model("memgan", {"width": 1 / 32, "size": 32, "memory_scales": [8, 4]})
    assert model.config.memory_scales == (4, 8)
    assert sorted(model.memories) == ["4", "8"]
    with pytest.raises(ValueError, match="memory_scales"):
        Config(size=32, memory_scales=(64,))
    with pytest.raises(ValueError, match="unknown memgan config fields"):
        create_model("memgan", {"widht": 0.5})


def test_memory_at_512_is_allowed() -> None:
    model = tiny_model(size=16, memory_scales=(4, 8, 16)).train()
    model(image(1, 16))  # reads and updates at the full resolution too
    assert model.memories["16"].memory.shape[0] == 16


# ---------------------------------------------------------------------------------------------- fusion


def test_affine_and_blend_are_eqs_7_and_8() -> None:
    fusion = MemoryFusion(mem_channels=2, channels=3, kernel_size=1)
    with torch.no_grad():
        # s_c = sum_j A[c, j] m_j + 1,  b_c = sum_j B[c, j] m_j - c
        a = torch.tensor([[1.0, 0.5], [-2.0, 0.0], [0.0, 3.0]])
        bb = torch.tensor([[0.0, 1.0], [2.0, 2.0], [-1.0, 0.5]])
        fusion.affine.weight.copy_(torch.cat([a, bb]).view(6, 2, 1, 1))
        fusion.affine.bias.copy_(torch.tensor([1.0, 1.0, 1.0, 0.0, -1.0, -2.0]))
        blend = torch.arange(15, dtype=torch.float32).view(3, 5) / 10 - 0.7
        fusion.blend.weight.copy_(blend.view(3, 5, 1, 1))
        fusion.blend.bias.copy_(torch.tensor([0.5, 0.0, -0.5]))
    g = torch.Generator().manual_seed(0)
    f_mem = torch.randn(2, 2, 3, 3, generator=g)
    f_gan = torch.randn(2, 3, 3, 3, generator=g)

    m = f_mem.permute(0, 2, 3, 1).numpy()  # (n, y, x, 2)
    s = m @ a.numpy().T + 1.0
    b = m @ bb.numpy().T + np.array([0.0, -1.0, -2.0])
    expected = s * f_gan.permute(0, 2, 3, 1).numpy() + b
    got = fusion.affine_transform(f_mem, f_gan).permute(0, 2, 3, 1).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)

    cat = np.concatenate([m, f_gan.permute(0, 2, 3, 1).numpy()], axis=-1)  # F^M first, then F^GAN2
    expected = cat @ blend.numpy().T + np.array([0.5, 0.0, -0.5])
    got = fusion.blend_fusion(f_mem, f_gan).permute(0, 2, 3, 1).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_fusion_starts_as_identity_on_the_gan_path() -> None:
    fusion = MemoryFusion(mem_channels=4, channels=4, kernel_size=3)
    with torch.no_grad():
        f_gan = torch.randn(1, 4, 6, 6)
        zero_mem = torch.zeros(1, 4, 6, 6)
        torch.testing.assert_close(fusion.affine_transform(zero_mem, f_gan), f_gan)
        torch.testing.assert_close(fusion.blend_fusion(zero_mem, f_gan), f_gan)


def test_decoder_block_wiring_follows_fig_1b() -> None:
    """Hooks capture each StyleGAN2 conv's input/output and check the fusions sit between them."""
    model = tiny_model().eval()
    seen: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_module, args, output):
            seen[name + ".in"] = args[0].detach()
            seen[name + ".out"] = output.detach()

        return hook

    dec = model.decoder
    for i in range(len(dec.style_convs)):
        dec.style_convs[i].register_forward_hook(keep(f"conv{i}"))
    for i in range(len(dec.to_rgbs)):
        dec.to_rgbs[i].register_forward_hook(keep(f"rgb{i}"))
    with torch.no_grad():
        _, extra = model(image(1, 32), return_features=True)
        mem = extra["memory"]
        for i, res in enumerate(resolutions(32)[1:]):
            fusion = model.fusions[str(res)]
            gan1 = seen[f"conv{2 * i}.out"]
            assert gan1.shape[-1] == res
            torch.testing.assert_close(seen[f"conv{2 * i + 1}.in"], fusion.affine_transform(mem[res], gan1))
            blended = fusion.blend_fusion(mem[res], seen[f"conv{2 * i + 1}.out"])
            torch.testing.assert_close(seen[f"rgb{i}.in"], blended)
            if i + 1 < len(dec.to_rgbs):
                torch.testing.assert_close(seen[f"conv{2 * i + 2}.in"], blended)
        # F^M is F^E enhanced by its memory read where a bank exists (memory_residual, the default)
        enc16 = extra["encoder"][16]
        torch.testing.assert_close(mem[16], enc16 + model.memories["16"](enc16))


# ------------------------------------------------------------------------------------------- stylegan2


def _reference_modulated_conv(x, style, lin, weight, demodulate, upsample):
    """The clean generator's formulation: one modulated, demodulated weight per sample, grouped conv."""
    b, c = x.shape[:2]
    s = F.linear(style, lin.weight, lin.bias).view(b, 1, c, 1, 1)
    wgt = weight * s
    if demodulate:
        wgt = wgt * torch.rsqrt(wgt.pow(2).sum([2, 3, 4]) + 1e-8).view(b, -1, 1, 1, 1)
    out_c, k = wgt.shape[1], wgt.shape[-1]
    if upsample:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    h, w = x.shape[-2:]
    out = F.conv2d(x.reshape(1, b * c, h, w), wgt.reshape(b * out_c, c, k, k), padding=k // 2, groups=b)
    return out.view(b, out_c, h, w)


@pytest.mark.parametrize("upsample", [False, True])
def test_style_conv_means_what_a_clean_checkpoint_means(upsample: bool) -> None:
    torch.manual_seed(0)
    conv = StyleConv(6, 5, style_dim=8, upsample=upsample)
    with torch.no_grad():
        conv.weight.fill_(0.3)
        conv.bias.normal_()
        conv.modulated_conv.modulation.bias.normal_()
    x, style = torch.randn(2, 6, 4, 4), torch.randn(2, 8)
    noise = torch.randn(1, 1, *(8, 8) if upsample else (4, 4))
    mc = conv.modulated_conv
    ref = _reference_modulated_conv(x, style, mc.modulation, mc.weight, True, upsample) * math.sqrt(2)
    ref = F.leaky_relu(ref + 0.3 * noise + conv.bias, 0.2)
    torch.testing.assert_close(conv(x, style, noise), ref, rtol=1e-5, atol=1e-5)

    rgb = ToRGB(6, style_dim=8)
    skip = torch.randn(2, 3, 2, 2)
    ref = _reference_modulated_conv(x, style, rgb.modulated_conv.modulation, rgb.modulated_conv.weight, False, False)
    ref = ref + rgb.bias + F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(rgb(x, style, skip), ref, rtol=1e-5, atol=1e-5)


def _manifest() -> dict[str, tuple[int, ...]]:
    path = shared_path("golden", "stylegan2_clean_512_manifest.tsv")
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, dtype, shape = line.split("\t")
            assert dtype == "float32"
            rows[name] = tuple(int(n) for n in shape.split(","))
    return rows


@pytest.fixture(scope="module")
def clean_state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(42)
    return {name: torch.randn(shape, generator=g) for name, shape in _manifest().items()}


@pytest.mark.shared
def test_decoder_layout_is_the_clean_manifest() -> None:
    manifest = _manifest()
    layout = decoder_layout(512)
    assert list(layout) == list(manifest)  # same names, same order
    assert layout == manifest


@pytest.mark.shared
def test_convert_stylegan2_fills_every_decoder_tensor(clean_state_dict) -> None:
    model = build(Config(width=1.0))
    converted = convert_stylegan2(clean_state_dict, model.config)
    assert set(converted) == {f"decoder.{k}" for k in clean_state_dict}
    result = model.load_state_dict(converted, strict=False)
    assert not result.unexpected_keys
    assert not [k for k in result.missing_keys if k.startswith("decoder.")]
    state = model.state_dict()
    for key in (
        "style_mlp.1.weight",
        "style_mlp.15.bias",
        "constant_input.weight",
        "style_conv1.weight",
        "to_rgb1.modulated_conv.modulation.weight",
        "style_convs.6.modulated_conv.weight",
        "style_convs.13.bias",
        "to_rgbs.6.modulated_conv.weight",
        "noises.noise14",
    ):
        assert torch.equal(state[f"decoder.{key}"], clean_state_dict[key]), key
    for key, src in clean_state_dict.items():
        assert torch.equal(state[f"decoder.{key}"], src), key
    # the decoder's own parts are exactly these tensors and the named modules see them
    assert torch.equal(
        model.decoder.style_convs[6].modulated_conv.weight,
        clean_state_dict["style_convs.6.modulated_conv.weight"],
    )
    assert torch.equal(model.decoder.style_mlp[3].weight, clean_state_dict["style_mlp.3.weight"])


@pytest.mark.shared
def test_convert_stylegan2_slices_for_narrow_models(clean_state_dict) -> None:
    cfg = Config.compact()
    model = build(cfg)
    model.load_stylegan2(clean_state_dict)
    state = model.state_dict()
    src = clean_state_dict["style_convs.8.modulated_conv.weight"]  # (1, 128, 256, 3, 3) -> (1, 32, 64, 3, 3)
    torch.testing.assert_close(state["decoder.style_convs.8.modulated_conv.weight"], src[:, :32, :64] * 2.0)
    src = clean_state_dict["style_mlp.5.weight"]
    torch.testing.assert_close(state["decoder.style_mlp.5.weight"], src[:128, :128] * 2.0)
    assert torch.equal(state["decoder.style_mlp.5.bias"], clean_state_dict["style_mlp.5.bias"][:128])
    assert torch.equal(state["decoder.constant_input.weight"], clean_state_dict["constant_input.weight"][:, :128])
    assert torch.equal(state["decoder.noises.noise13"], clean_state_dict["noises.noise13"])
    with pytest.raises(CheckpointError, match="width"):
        convert_stylegan2(clean_state_dict, Config(width=2.0))


@pytest.mark.shared
@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (
            lambda sd: sd.pop("style_convs.9.modulated_conv.modulation.bias"),
            "style_convs.9.modulated_conv.modulation.bias",
        ),
        (
            lambda sd: sd.__setitem__("to_rgbs.3.modulated_conv.weight", torch.zeros(1, 3, 128, 1, 1)),
            "to_rgbs.3.modulated_conv.weight",
        ),
        (lambda sd: sd.__setitem__("style_mlp.17.weight", torch.zeros(512, 512)), "style_mlp.17.weight"),
        (
            lambda sd: sd.__setitem__("noises.noise2", torch.zeros(1, 1, 8, 8, dtype=torch.int64)),
            "noises.noise2",
        ),
        (
            lambda sd: sd.__setitem__("style_convs.0.bias", torch.full((1, 512, 1, 1), math.nan)),
            "style_convs.0.bias",
        ),
    ],
)
def test_convert_stylegan2_rejects_bad_files_by_name(clean_state_dict, mutate, named) -> None:
    sd = dict(clean_state_dict)
    mutate(sd)
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")) as info:
        convert_stylegan2(sd, Config.compact())
    assert isinstance(info.value, ValueError)  # models raise ValueError; `weights` wraps it for the CLI


# ----------------------------------------------------------------------------------- the compact model


@pytest.fixture(scope="module")
def compact_run():
    torch.manual_seed(7)
    model = build(Config.compact()).eval()
    with torch.no_grad():
        for bank in model.memories.values():  # memory that is not the fresh random init
            bank.memory.copy_(torch.randn_like(bank.memory) * 0.5)
    x = image(2, 512, seed=11)
    with torch.no_grad():
        both = model(x)
        singles = [model(x[i : i + 1]) for i in range(2)]
    return model, x, both, singles


def test_compact_forward_shape_dtype_and_size(compact_run) -> None:
    model, _, both, singles = compact_run
    assert singles[0].shape == (1, 3, 512, 512) and singles[0].dtype == torch.float32
    assert both.shape == (2, 3, 512, 512)
    assert torch.isfinite(both).all()
    n_params = sum(p.numel() for p in model.parameters())
    n_buffers = sum(b.numel() for b in model.buffers())
    assert n_params <= 15_000_000
    assert (n_params + n_buffers) * 2 <= 40 * 1024 * 1024  # fp16 file incl. memory and noise


def test_compact_batch_matches_singles(compact_run) -> None:
    """Samples never mix: a batch of two equals two single runs.

    The bound is 1e-5 of the output scale (|y| reaches about 3.5 at random init): oneDNN and MKL
    pick different kernels for N=1 and N=2, so even a plain conv on identical inputs differs by
    about 2e-6 between the two, and that float32 rounding accumulates over ~40 layers. Any real
    mixing (batch statistics, a shared memory update, per-batch noise) is orders of magnitude larger.
    """
    _, _, both, singles = compact_run
    single = torch.cat(singles)
    scale = max(1.0, single.abs().max().item())
    assert (both - single).abs().max().item() <= 1e-5 * scale


def test_safetensors_round_trip_keeps_memory(compact_run, tmp_path) -> None:
    model, x, _, singles = compact_run
    path = tmp_path / "memgan.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = load_file(str(path))
    assert "memories.256.memory" in loaded and "decoder.noises.noise0" in loaded
    torch.manual_seed(123)  # a different random init, memory included
    fresh = build(Config.compact()).eval()
    assert not torch.equal(fresh.memories["64"].memory, model.memories["64"].memory)
    fresh.load_state_dict(loaded, strict=True)
    assert torch.equal(fresh.memories["64"].memory, model.memories["64"].memory)
    with torch.no_grad():
        assert torch.equal(fresh(x[:1]), singles[0])
    half = tmp_path / "memgan-fp16.safetensors"
    save_file({k: v.half() for k, v in model.state_dict().items()}, str(half))
    assert half.stat().st_size <= 40 * 1024 * 1024


def test_other_dtypes_run_without_float32_leaks() -> None:
    model = tiny_model().to(torch.float64).train()
    out = model(image(2, 32).double())
    assert out.dtype == torch.float64
    assert model.memories["8"].memory.dtype == torch.float64
    model = tiny_model().to(torch.bfloat16).eval()
    out = model(image(1, 32).bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_noise_is_fixed_in_eval_and_fresh_in_training() -> None:
    model = tiny_model()
    with torch.no_grad():
        for conv in [model.decoder.style_conv1, *model.decoder.style_convs]:
            conv.weight.fill_(1.0)
        model.eval()
        x = image(1, 32)
        assert torch.equal(model(x), model(x))
        assert not torch.equal(model(x, randomize_noise=True), model(x, randomize_noise=True))
