"""Degradations, losses and discriminators used for training (facerestore_cli.train)."""

from __future__ import annotations

import dataclasses
import logging
import math

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from facerestore_cli.train import degrade as dg
from facerestore_cli.train import losses as L
from facerestore_cli.train.discriminators import (
    MultiScaleSNDiscriminator,
    StyleGAN2Discriminator,
    minibatch_stddev,
)

# dlib's HOG box of the astronaut's face in skimage.data.astronaut()
ASTRONAUT_FACE_BOX = (175, 76, 265, 166)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These tensors are tiny: on a shared 2-core machine two threads mostly wait for each other
    (the losses test takes 2 s with 2 threads, 0.15 s with one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def astronaut_face(astronaut_rgb) -> np.ndarray:
    return cv2.resize(astronaut_rgb[10:210, 125:325], (512, 512), interpolation=cv2.INTER_CUBIC)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(cv2.PSNR(a, b))


def grid(lo: float, hi: float, step: float) -> set[float]:
    return {round(v, 6) for v in np.arange(lo, hi + step / 2, step)}


# --------------------------------------------------------------------------------------------------
# degradations


def test_sample_params_is_reproducible():
    for spec in (dg.DMDNET_EQ19, dg.MEMGAN_EQ14):
        a = [dg.sample_params(spec, np.random.default_rng(7)) for _ in range(3)]
        r1, r2 = np.random.default_rng(123), np.random.default_rng(123)
        s1 = [dg.sample_params(spec, r1) for _ in range(20)]
        s2 = [dg.sample_params(spec, r2) for _ in range(20)]
        assert s1 == s2
        assert a[0] == a[1] == a[2]
        assert len({(p.blur_sigma, p.scale, p.noise_seed) for p in s1}) == 20


def test_dmdnet_params_lie_on_eq19_grids():
    rng = np.random.default_rng(0)
    ps = [dg.sample_params(dg.DMDNET_EQ19, rng) for _ in range(3000)]
    blur = {round(p.blur_sigma, 6) for p in ps}
    scale = {round(p.scale, 6) for p in ps}
    noise = {round(p.noise_sigma, 6) for p in ps}
    quality = {p.jpeg_quality for p in ps}
    # the paper's grids, written out independently of the spec
    assert blur == grid(1, 3, 0.1)
    assert scale == grid(1, 10, 0.1)
    assert noise == grid(0, 15, 1)
    assert quality == set(range(50, 101))
    assert all(isinstance(p.jpeg_quality, int) for p in ps)
    assert {p.down_interp for p in ps} == {p.up_interp for p in ps} == {"bicubic"}
    assert 0.45 < np.mean([p.flip for p in ps]) < 0.55
    assert all(dg.DMDNET_EQ19.contains(p) for p in ps)


def test_memgan_params_cover_eq14_ranges():
    rng = np.random.default_rng(1)
    ps = [dg.sample_params(dg.MEMGAN_EQ14, rng) for _ in range(3000)]
    b = np.array([p.blur_sigma for p in ps])
    s = np.array([p.scale for p in ps])
    n = np.array([p.noise_sigma for p in ps])
    q = np.array([p.jpeg_quality for p in ps])
    assert 0.2 <= b.min() < 0.3 and 9.9 < b.max() <= 10
    assert 1 <= s.min() < 1.1 and 7.9 < s.max() <= 8
    assert 0 <= n.min() < 0.1 and 14.9 < n.max() <= 15
    assert set(q.tolist()) == set(range(60, 101))
    assert len(set(b.tolist())) > 2900  # continuous, not a grid
    assert {p.down_interp for p in ps} == {p.up_interp for p in ps} == {"bilinear"}
    assert all(dg.MEMGAN_EQ14.contains(p) for p in ps)
    assert not dg.DMDNET_EQ19.contains(ps[0])


def test_degrade_shape_dtype_and_determinism(astronaut_face):
    rng = np.random.default_rng(3)
    odd = astronaut_face[:301, :257]
    for spec in (dg.DMDNET_EQ19, dg.MEMGAN_EQ14):
        p = dg.sample_params(spec, rng)
        for img in (astronaut_face, odd):
            out = dg.degrade(img, p)
            assert out.shape == img.shape and out.dtype == np.uint8
            assert np.array_equal(out, dg.degrade(img, p))
        from_float = dg.degrade(astronaut_face.astype(np.float32) / 255.0, p)
        assert np.abs(from_float.astype(int) - dg.degrade(astronaut_face, p).astype(int)).max() <= 2
    with pytest.raises(ValueError):
        dg.degrade(astronaut_face.astype(np.float32), p)  # 0-255 floats are a caller bug


def test_identity_degradation_and_each_factor(astronaut_face):
    none = dg.DegradationParams(blur_sigma=0, scale=1, noise_sigma=0, jpeg_quality=None)
    assert np.array_equal(dg.degrade(astronaut_face, none), astronaut_face)
    for change in ({"blur_sigma": 2.0}, {"scale": 4.0}, {"noise_sigma": 10.0}, {"jpeg_quality": 30}):
        out = dg.degrade(astronaut_face, dataclasses.replace(none, **change))
        assert 20 < psnr(astronaut_face, out) < 45, change
    assert dg.gaussian_kernel_size(1.0) == 7 and dg.gaussian_kernel_size(2.5) == 17


def test_stronger_degradation_lowers_psnr_more(astronaut_face):
    weak = dg.DegradationParams(blur_sigma=1.0, scale=2.0, noise_sigma=2, jpeg_quality=95, noise_seed=1)
    strong = dg.DegradationParams(blur_sigma=3.0, scale=8.0, noise_sigma=15, jpeg_quality=50, noise_seed=1)
    p_weak = psnr(astronaut_face, dg.degrade(astronaut_face, weak))
    p_strong = psnr(astronaut_face, dg.degrade(astronaut_face, strong))
    assert p_weak > p_strong + 4


def test_fixed_x8_is_worse_than_x4(astronaut_face):
    x4, x8 = dg.fixed_degradation(4), dg.fixed_degradation(8)
    assert (x4.blur_sigma, x4.noise_sigma, x4.jpeg_quality) == (2.0, 8.0, 75)
    assert dataclasses.replace(x8, scale=4.0) == x4
    lq4, lq8 = dg.degrade(astronaut_face, x4), dg.degrade(astronaut_face, x8)
    assert psnr(astronaut_face, lq8) < psnr(astronaut_face, lq4) - 1
    hq = astronaut_face / 255.0
    assert L.ssim(hq, lq8 / 255.0) < L.ssim(hq, lq4 / 255.0) - 0.02
    assert np.array_equal(lq4, dg.degrade(astronaut_face, dg.fixed_degradation(4)))
    assert not np.array_equal(lq4, dg.degrade(astronaut_face, dg.fixed_degradation(4, seed=1)))


def test_make_pair_applies_flip_and_jitter_to_both(astronaut_face):
    clean = dg.DegradationParams(blur_sigma=0, scale=1, noise_sigma=0, jpeg_quality=None)
    flipped = dataclasses.replace(clean, flip=True)
    target, lq = dg.make_pair(astronaut_face, flipped)
    assert np.array_equal(target, astronaut_face[:, ::-1]) and np.array_equal(lq, target)
    jitter = dataclasses.replace(clean, brightness=1.1, contrast=0.9, saturation=1.1, hue=0.02)
    target, lq = dg.make_pair(astronaut_face, jitter)
    assert np.array_equal(lq, target) and not np.array_equal(target, astronaut_face)
    assert 3 < np.abs(target.astype(float) - astronaut_face).mean() < 25
    brighter = dg.augment(astronaut_face, dataclasses.replace(clean, brightness=1.1))
    assert 1.05 < brighter.mean() / astronaut_face.mean() < 1.1
    # with a real degradation the input is the degraded *augmented* target
    p = dataclasses.replace(dg.fixed_degradation(4), flip=True, brightness=0.9)
    target, lq = dg.make_pair(astronaut_face, p)
    assert np.array_equal(lq, dg.degrade(target, p))
    assert psnr(target, lq) > psnr(astronaut_face, lq) + 3


# --------------------------------------------------------------------------------------------------
# landmark flips


def test_flip_permutations_are_involutions():
    for perm in (dg.FLIP_PERMUTATION_68, dg.FLIP_PERMUTATION_5):
        assert sorted(perm) == list(range(len(perm)))
        assert all(perm[perm[i]] == i for i in range(len(perm)))
    pts = np.random.default_rng(0).uniform(0, 512, (2, 68, 2))
    assert np.allclose(dg.flip_landmarks68(dg.flip_landmarks68(pts, 512), 512), pts)
    five = np.array([[190.0, 240], [320, 240], [256, 310], [200, 370], [312, 370]])
    f5 = dg.flip_landmarks5(five, 512)
    assert f5[0, 0] < f5[1, 0] and f5[3, 0] < f5[4, 0]
    assert np.allclose(dg.flip_landmarks5(f5, 512), five)


def _check_flip_on_real_face(image: np.ndarray, box: tuple[int, int, int, int]) -> None:
    pytest.importorskip("dlib")
    from facerestore_cli.face.landmarks import default_predictor

    predictor = default_predictor()
    w = image.shape[1]
    lm = predictor.predict(image, box)
    mirrored_box = (w - 1 - box[2], box[1], w - 1 - box[0], box[3])
    lm_of_flipped = predictor.predict(np.ascontiguousarray(image[:, ::-1]), mirrored_box)
    ours = dg.flip_landmarks68(lm, w)
    assert np.abs(ours - lm_of_flipped).mean() < 2.0
    # only mirroring x without swapping indices would be far off
    naive = lm.copy()
    naive[:, 0] = w - 1 - naive[:, 0]
    assert np.abs(naive - lm_of_flipped).mean() > 5 * np.abs(ours - lm_of_flipped).mean()
    # image-left eye (36-41) of the flipped face is the mirrored image-right eye (42-47)
    assert abs(ours[36:42, 0].mean() - lm_of_flipped[36:42, 0].mean()) < 2.0
    assert abs(ours[36:42, 0].mean() - (w - 1 - lm[42:48, 0].mean())) < 1e-9
    assert ours[36:42, 0].mean() < ours[42:48, 0].mean()


def test_flip_landmarks68_on_the_astronaut(astronaut_rgb):
    _check_flip_on_real_face(astronaut_rgb, ASTRONAUT_FACE_BOX)


@pytest.mark.shared
def test_flip_landmarks68_on_an_aligned_training_face(shared):
    path = sorted((shared / "data" / "train-faces").glob("stylegan_*.jpg"))[0]
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    from facerestore_cli.face.landmarks import ALIGNED_FACE_BOX

    _check_flip_on_real_face(image, ALIGNED_FACE_BOX)


# --------------------------------------------------------------------------------------------------
# SSIM and reconstruction / feature losses


def _random_ish(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    smooth = cv2.resize(rng.uniform(0, 1, (h // 8, w // 8, c)).astype(np.float32), (w, h))
    return np.clip(smooth.reshape(h, w, c) + rng.normal(0, 0.1, (h, w, c)), 0, 1)


def test_ssim_matches_skimage():
    rng = np.random.default_rng(5)
    for shape in ((64, 80, 3), (48, 48, 1), (33, 40, 3)):
        a = _random_ish(rng, *shape)
        b = np.clip(a + rng.normal(0, 0.05 + 0.1 * rng.random(), shape), 0, 1)
        b[: shape[0] // 3] = cv2.GaussianBlur(a, (5, 5), 2).reshape(shape)[: shape[0] // 3]
        ref = structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=2
        )
        assert abs(L.ssim(a, b) - ref) < 1e-3
        assert abs(float(L.ssim(torch.from_numpy(a).permute(2, 0, 1).float(),
                                torch.from_numpy(b).permute(2, 0, 1).float())) - ref) < 1e-3  # fmt: skip
    grey_a, grey_b = _random_ish(rng, 40, 40, 1)[..., 0], _random_ish(rng, 40, 40, 1)[..., 0]
    ref = structural_similarity(grey_a, grey_b, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1)  # fmt: skip
    assert abs(L.ssim(grey_a, grey_b) - ref) < 1e-3 and ref < 0.5
    batch = torch.rand(3, 3, 32, 32)
    per_image = L.ssim(batch, batch.flip(0))
    assert per_image.shape == (3,) and abs(float(per_image[1]) - 1) < 1e-6


@pytest.fixture
def no_vgg(monkeypatch, tmp_path):
    monkeypatch.setenv("FACERESTORE_VGG19", str(tmp_path / "missing" / "vgg19.pth"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def _check_loss(loss_fn, target: torch.Tensor, pred: torch.Tensor) -> None:
    assert float(loss_fn(target.clone(), target)) == pytest.approx(0.0, abs=1e-6)
    p = pred.clone().requires_grad_(True)
    value = loss_fn(p, target)
    assert value.dim() == 0 and value.item() > 1e-5
    value.backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_fallback_losses_are_reported_zero_on_equal_and_differentiable(astronaut_face, no_vgg, caplog):
    hq = to_tensor(cv2.resize(astronaut_face, (64, 64), interpolation=cv2.INTER_AREA))
    lq = to_tensor(cv2.resize(dg.degrade(astronaut_face, dg.fixed_degradation(4)), (64, 64),
                              interpolation=cv2.INTER_AREA))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="facerestore_cli.train.losses"):
        perc_d, style = L.feature_losses("dmdnet")
        perc_m, none = L.feature_losses("memgan")
    assert none is None
    for loss in (perc_d, perc_m):
        assert loss.backend == "ssim+sobel" and not loss.pretrained
        assert "VGG19 weights not found at" in loss.describe() and "missing" in loss.describe()
        assert "SSIM" in loss.describe() and "instead" in loss.describe()
    assert style.backend == "laplacian-gram" and "Laplacian" in style.describe()
    assert "VGG19 weights not found" in style.describe()
    assert sum("VGG19 weights not found" in r.getMessage() for r in caplog.records) >= 3
    for fn in (L.mse_loss, L.l1_loss, perc_d, perc_m, style):
        _check_loss(fn, hq, lq)
    # the stand-ins rank degradations the right way round
    lq8 = to_tensor(cv2.resize(dg.degrade(astronaut_face, dg.fixed_degradation(8)), (64, 64),
                               interpolation=cv2.INTER_AREA))  # fmt: skip
    assert float(perc_d(lq8, hq)) > float(perc_d(lq, hq))
    assert float(style(lq8, hq)) > float(style(lq, hq))


def test_low_frequency_loss_sees_tone_and_not_detail(astronaut_face):
    hq = to_tensor(cv2.resize(astronaut_face, (128, 128), interpolation=cv2.INTER_AREA))
    _check_loss(L.low_frequency_loss, hq, hq + 0.05)
    # a uniform shift counts in full at every block size
    assert float(L.low_frequency_loss(hq + 0.05, hq)) == pytest.approx(0.05, rel=1e-4)
    # zero-mean detail finer than the smallest block does not count at all, though MSE sees it
    checker = (torch.arange(128)[:, None] + torch.arange(128)[None, :]) % 2 * 0.2 - 0.1
    detailed = hq + checker
    assert float(L.low_frequency_loss(detailed, hq)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.mse_loss(detailed, hq)) > 1e-3
    # a slow tone drift (dark to light across the face) does count
    ramp = torch.linspace(-0.1, 0.1, 128)[None, None, None, :]
    assert float(L.low_frequency_loss(hq + ramp, hq)) > 0.04


def test_explicit_missing_vgg_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        L.PerceptualLoss(vgg=tmp_path / "nope.pth")


def test_vgg19_backend_loads_torchvision_layout(tmp_path, monkeypatch):
    torch.manual_seed(0)
    conv_indices = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    model = L.VGG19Features()
    keys = set(model.state_dict())
    assert keys == {f"features.{i}.{k}" for i in conv_indices for k in ("weight", "bias")}
    assert model.state_dict()["features.34.weight"].shape == (512, 512, 3, 3)
    assert L.VGG19_LAYERS["relu4_4"] == 26 and L.VGG19_LAYERS["conv5_4"] == 34
    state = {  # He-initialised so that activations keep their scale through 16 layers
        k: torch.randn_like(v) * math.sqrt(2 / v[0].numel()) if k.endswith("weight") else torch.zeros_like(v)
        for k, v in model.state_dict().items()
    }
    state["classifier.6.weight"] = torch.zeros(10, 4)  # a full torchvision file carries these too
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    assert "features.0.weight" in torch.load(path, weights_only=True)
    monkeypatch.setenv("FACERESTORE_VGG19", str(path))

    perc, style = L.feature_losses("dmdnet")
    assert perc.backend == style.backend == "vgg19" and perc.pretrained
    assert perc.vgg is style.vgg  # one shared instance
    assert str(path) in perc.describe() and "not found" not in perc.describe()
    assert torch.equal(perc.vgg.features[34].weight, state["features.34.weight"])

    x = torch.rand(1, 3, 32, 32) * 2 - 1
    feats = perc.vgg(x, L.DMDNET_VGG_LAYERS + L.MEMGAN_VGG_LAYERS)
    expected = {"relu1_2": (64, 32), "relu2_2": (128, 16), "relu3_4": (256, 8), "relu4_4": (512, 4),
                "conv1_2": (64, 32), "conv2_2": (128, 16), "conv3_4": (256, 8), "conv4_4": (512, 4),
                "conv5_4": (512, 2)}  # fmt: skip
    for name, (c, s) in expected.items():
        assert feats[name].shape == (1, c, s, s), name
    assert (feats["conv5_4"] < 0).any() and (feats["relu4_4"] >= 0).all()

    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    perc_m, _ = L.feature_losses("memgan")
    for fn in (perc, style, perc_m):
        _check_loss(fn, x, y)
    # eq. 12 is a sum over layers of per-layer MSE
    fy = perc.vgg(y, L.DMDNET_VGG_LAYERS)
    manual = sum(torch.mean((fy[n] - feats[n]) ** 2) for n in L.DMDNET_VGG_LAYERS)
    assert float(perc(y, x)) == pytest.approx(float(manual), rel=1e-5)
    assert not any(p.requires_grad for p in perc.vgg.parameters())


def test_gram_normalisation():
    f = torch.ones(1, 2, 3, 4)
    assert torch.allclose(L.gram(f), torch.full((1, 2, 2), 12 / 24))


# --------------------------------------------------------------------------------------------------
# adversarial losses


def test_hinge_losses_match_eq15_16():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    assert float(L.hinge_d_loss(real, fake)) == pytest.approx((0 + 0.5 + 2) / 3 + (0 + 1 + 2) / 3)
    assert float(L.hinge_d_loss([real, real], [fake, fake])) == pytest.approx(2 * (2.5 / 3 + 1))
    fakes = [torch.tensor([1.0, 3.0]), torch.tensor([[2.0]]), torch.tensor([-4.0])]
    assert float(L.hinge_g_loss(fakes)) == pytest.approx(-(4 * 2 + 1 * 2 + 0.5 * -4))
    assert float(L.hinge_g_loss(torch.tensor([1.0, 2.0]))) == pytest.approx(-1.5)
    with pytest.raises(ValueError):
        L.hinge_g_loss(fakes[:2])


def test_logistic_losses_match_stylegan2():
    real = torch.tensor([0.0, 1.0])
    fake = torch.tensor([0.0, -1.0])
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    d = (sp(0) + sp(-1)) / 2 + (sp(-0.0) + sp(-1.0)) / 2
    assert float(L.logistic_d_loss(real, fake)) == pytest.approx(d)
    assert float(L.logistic_g_loss(fake)) == pytest.approx((sp(0) + sp(1)) / 2)


def test_r1_penalty():
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    const = torch.nn.Parameter(torch.tensor(0.7))
    assert float(L.r1_penalty(const.expand(4, 1), x)) == 0.0
    assert float(L.r1_penalty(const + 0 * x.sum((1, 2, 3)), x)) == 0.0
    w = torch.randn(3, 8, 8, requires_grad=True)
    logits = (x * w).sum((1, 2, 3))
    assert L.r1_penalty(logits, x).detach().item() == pytest.approx(float((w.detach() ** 2).sum()), rel=1e-5)
    lazy = L.lazy_r1_loss((x * w).sum((1, 2, 3)), x, gamma=10, interval=16)
    assert lazy.detach().item() == pytest.approx(5 * 16 * float((w.detach() ** 2).sum()), rel=1e-5)
    lazy.backward()  # create_graph=True: the penalty trains D's parameters
    assert torch.allclose(w.grad, 5 * 16 * 2 * w.detach(), rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# discriminators


def test_multiscale_sn_discriminator():
    torch.manual_seed(0)
    d = MultiScaleSNDiscriminator(width=8)
    assert all(hasattr(m, "parametrizations") for m in d.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    logits, feats = d(x, return_features=True)
    assert [tuple(t.shape) for t in logits] == [(2, 1, 4, 4), (2, 1, 2, 2), (2, 1, 1, 1)]
    assert len(feats) == 3 and feats[0][0].shape == (2, 8, 32, 32) and feats[2][-1].shape == (2, 64, 1, 1)
    L.hinge_g_loss(logits).backward()
    assert x.grad.abs().sum() > 0
    assert len(d(x)) == 3


def test_stylegan2_discriminator():
    torch.manual_seed(0)
    d = StyleGAN2Discriminator(size=32, width=8, max_channels=32)
    assert d.channels == {32: 8, 16: 16, 8: 32, 4: 32}
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    logits, feats = d(x, return_features=True)
    assert logits.shape == (3, 1) and [f.shape[-1] for f in feats] == [32, 16, 8, 4]
    (L.logistic_g_loss(logits) + L.lazy_r1_loss(logits, x)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in d.parameters())
    with pytest.raises(ValueError):
        d(torch.rand(1, 3, 64, 64))
    same = torch.ones(4, 8, 2, 2)
    assert minibatch_stddev(same)[:, 8].abs().max() < 1e-3
    assert minibatch_stddev(torch.randn(4, 8, 2, 2))[:, 8].min() > 0.3


# --------------------------------------------------------------------------------------------------
# the sharper fine-tuning's pieces (facerestore_cli.train.objectives)


def test_adversarial_ramp_is_geometric_and_held_by_validation():
    from facerestore_cli.train.objectives import AdversarialRamp

    ramp = AdversarialRamp(start=0.02, target=1.0, steps=100)
    assert ramp.value() == pytest.approx(0.02)
    ramp.advance(50)
    assert ramp.value() == pytest.approx(math.sqrt(0.02))  # half way in steps is half way in log
    ramp.advance(500)
    assert ramp.progress == 100 and ramp.value() == pytest.approx(1.0)
    # a validation below the input's PSNR holds the ramp and steps it back by a tenth
    why = ramp.review(psnr=26.5, input_psnr=27.0, detail=0.4)
    assert ramp.held and "PSNR" in why and ramp.progress == 90
    ramp.advance(5)
    assert ramp.progress == 90
    # too much high-frequency energy (noise, not detail) holds it too
    assert "detail" in ramp.review(psnr=28.0, input_psnr=27.0, detail=1.5) and ramp.progress == 80
    assert ramp.review(psnr=28.0, input_psnr=27.0, detail=0.6) == "running" and not ramp.held
    ramp.advance(3)
    assert ramp.progress == 83
    # and so does a texture on a grid (a crosshatch): its "detail" is not the face's
    assert "grid 1.30" in ramp.review(psnr=28.0, input_psnr=27.0, detail=0.6, grid=1.3) and ramp.progress == 73
    assert ramp.review(psnr=28.0, input_psnr=27.0, detail=0.6, grid=0.9) == "running"
    ramp.advance(10)
    # state survives a checkpoint; a constant weight and a ramp from zero work too
    again = AdversarialRamp(start=0.02, target=1.0, steps=100)
    again.load(ramp.state())
    assert again.value() == pytest.approx(ramp.value())
    assert AdversarialRamp(start=0.1, target=0.1, steps=0).value() == 0.1
    zero = AdversarialRamp(start=0.0, target=0.5, steps=10)
    zero.advance(5)
    assert zero.value() == pytest.approx(0.25)


def test_chroma_loss_is_zero_on_equal_blind_to_grey_and_large_on_specks(astronaut_face):
    from facerestore_cli.train.objectives import chroma, chroma_loss

    hq = to_tensor(cv2.resize(astronaut_face, (128, 128), interpolation=cv2.INTER_AREA))
    assert float(chroma_loss(hq, hq.clone())) == 0.0
    # a grey (luma-only) change has no chroma
    assert float(chroma_loss((hq + 0.1).clamp(-1, 1), hq)) < 0.002
    assert chroma(torch.zeros(1, 3, 4, 4)).abs().max() < 1e-6
    # green specks on 1 % of the pixels
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(rng.random((128, 128)) < 0.01)
    speckled = hq.clone()
    speckled[0, 1][mask] = 1.0
    speckled[0, 0][mask] = -1.0
    speckled[0, 2][mask] = -1.0
    # a smooth tint with the same mean absolute RGB error as the specks
    tint = hq.clone()
    tint[0, 1] += float((speckled - hq).abs().mean() * 3)
    tinted = tint.clamp(-1, 1)
    spk, tnt = float(chroma_loss(speckled, hq)), float(chroma_loss(tinted, hq))
    assert spk > 0.005 and spk > tnt  # the hinge weighs concentrated errors more
    assert float(chroma_loss(speckled, hq, outlier_weight=0)) < spk
    _check_loss(chroma_loss, hq, speckled)


def test_detail_ratio_of_blurred_and_sharp_faces(astronaut_face):
    from facerestore_cli.train.objectives import centre, detail_ratio, laplacian_variance

    face = astronaut_face
    assert detail_ratio(face, face) == pytest.approx(1.0)
    blurred = cv2.GaussianBlur(face, (0, 0), 2.0)
    x8 = dg.degrade(face, dg.fixed_degradation(8))
    x4 = dg.degrade(face, dg.fixed_degradation(4))
    assert detail_ratio(blurred, face) < 0.3
    assert detail_ratio(x8, face) < detail_ratio(x4, face) < 1
    # the same definition as bench/quality_metrics: BT.601 luma, 3x3 Laplacian, the central half
    luma = face.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    lap = cv2.Laplacian(luma[128:384, 128:384], cv2.CV_64F, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    assert laplacian_variance(centre(face)) == pytest.approx(lap.var())
    assert centre(face).shape == (256, 256, 3)
    with pytest.raises(ValueError):
        detail_ratio(face[:256], face)


def test_grid_energy_sees_a_crosshatch_not_real_detail(astronaut_face):
    from facerestore_cli.train.objectives import grid_energy

    face = astronaut_face
    natural = grid_energy(face)
    assert natural < 1.0  # a 200 px photo enlarged to 512: smoother than a sharp face
    # a faint woven texture with a 4.4 px period, rotated a little, as the failed weights laid on skin
    yy, xx = np.mgrid[:512, :512].astype(np.float64)
    weave = sum(np.sin(2 * np.pi * (np.cos(a) * xx + np.sin(a) * yy) / 4.4) for a in (0.15, 0.15 + np.pi / 2))
    hatched = np.clip(face + 4.0 * weave[..., None], 0, 255).astype(np.uint8)
    assert grid_energy(hatched) > 2 * natural
    # noise is not a grid: it spreads its power evenly, the band gets no more than its neighbours
    noisy = np.clip(face + np.random.default_rng(0).normal(0, 6, face.shape), 0, 255).astype(np.uint8)
    assert grid_energy(noisy) < 1.0
    # smooth faces have little power at 4 px; the size of the input does not matter
    assert grid_energy(cv2.GaussianBlur(face, (0, 0), 1.5)) < natural
    assert grid_energy(cv2.resize(face, (1024, 1024), interpolation=cv2.INTER_CUBIC)) == pytest.approx(natural, rel=0.1)


def test_spectrum_loss_asks_for_the_targets_fine_detail_and_no_grid(astronaut_face):
    from facerestore_cli.train.objectives import fine_spectrum, laplacian_variance, spectrum_loss

    rng = np.random.default_rng(0)
    # a target with fine detail at every frequency (the astronaut is a 200 px photo enlarged)
    sharp = np.clip(astronaut_face + rng.normal(0, 5, astronaut_face.shape), 0, 255).astype(np.uint8)
    hq = to_tensor(sharp)
    assert fine_spectrum(hq).shape == (1, 256, 256)
    # the same detail moved by 3 px has the same spectrum; a blurred or a hatched copy does not
    moved = float(spectrum_loss(torch.roll(hq, (3, 3), dims=(-2, -1)), hq))
    blurred_img = cv2.GaussianBlur(sharp, (0, 0), 1.2)
    blurred = float(spectrum_loss(to_tensor(blurred_img), hq))
    yy, xx = np.mgrid[:512, :512].astype(np.float64)
    weave = sum(np.sin(2 * np.pi * (np.cos(a) * xx + np.sin(a) * yy) / 4.4) for a in (0.15, 0.15 + np.pi / 2))
    hatched = float(spectrum_loss(to_tensor(np.clip(sharp + 6.0 * weave[..., None], 0, 255).astype(np.uint8)), hq))
    assert blurred > 20 * moved and hatched > 1.3 * moved, (moved, blurred, hatched)
    # its gradient puts fine detail back into the blurred face
    _check_loss(spectrum_loss, hq, to_tensor(blurred_img))
    p = to_tensor(blurred_img).requires_grad_(True)
    spectrum_loss(p, hq).backward()
    stepped = (p - 0.05 * p.grad / p.grad.abs().max()).detach()
    after = ((stepped[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).numpy()
    assert float(spectrum_loss(stepped, hq)) < blurred
    assert laplacian_variance(after[128:384, 128:384]) > laplacian_variance(blurred_img[128:384, 128:384].astype(float))


def test_light_degradation_keeps_the_face(astronaut_face):
    from facerestore_cli.train.objectives import light_degradation

    rng = np.random.default_rng(0)
    exact = light = 0
    for _ in range(40):
        params = light_degradation(dg.sample_params(dg.DMDNET_EQ19, rng), rng)
        hq, lq = dg.make_pair(astronaut_face, params)
        if np.array_equal(hq, lq):
            exact += 1
        else:
            light += 1
            assert psnr(lq, hq) > 33, params  # barely degraded: JPEG >= 90, blur <= 0.6, at most 1.25x
        assert params.jpeg_quality is None or params.jpeg_quality >= 90
    assert exact > 10 and light > 10


def test_face_data_serves_the_clean_fraction(tmp_path, astronaut_face):
    from facerestore_cli.train.data import FaceData

    path = tmp_path / "face.png"
    cv2.imwrite(str(path), cv2.cvtColor(astronaut_face, cv2.COLOR_RGB2BGR))
    marks = np.zeros((1, 68, 2), np.float32)
    data = FaceData([path], marks, "memgan", predictor=None, clean_fraction=0.12)
    rng = np.random.default_rng(1)
    samples = [data.sample(rng) for _ in range(300)]
    share = np.mean([s.light for s in samples])
    assert 0.07 < share < 0.17
    assert any(np.array_equal(s.hq, s.lq) for s in samples if s.light)
    assert all(not np.array_equal(s.hq, s.lq) for s in samples if not s.light)
    none = FaceData([path], marks, "memgan", predictor=None)
    assert not any(none.sample(rng).light for _ in range(30))


def test_face_losses_are_zero_on_equal_and_see_lost_detail(astronaut_face):
    from facerestore_cli.train.objectives import FaceLosses

    losses = FaceLosses()
    hq = to_tensor(astronaut_face)
    equal = losses(hq, hq.clone())
    assert set(equal) == {"perceptual", "detail", "identity"}
    assert all(float(v) == pytest.approx(0.0, abs=1e-5) for v in equal.values())
    x4 = losses(to_tensor(dg.degrade(astronaut_face, dg.fixed_degradation(4))), hq)
    x8 = losses(to_tensor(dg.degrade(astronaut_face, dg.fixed_degradation(8))), hq)
    for name in ("perceptual", "detail"):
        assert float(x8[name]) > float(x4[name]) > 0.01, name
    p = to_tensor(dg.degrade(astronaut_face, dg.fixed_degradation(8))).requires_grad_(True)
    terms = losses(p, hq)
    (terms["detail"] + terms["identity"]).backward()
    # the full-resolution term reaches the centre only; all of it is finite
    assert torch.isfinite(p.grad).all() and p.grad[..., 128:384, 128:384].abs().sum() > 0


def test_face_net_pack_round_trip(tmp_path):
    from facerestore_cli.train.face_features import load_dlib_face_net
    from facerestore_cli.train.objectives import load_face_net, pack_face_net

    packed = pack_face_net(None, tmp_path / "face-net.npz")
    assert packed.stat().st_size < 12_500_000  # half the .dat
    net, original = load_face_net(packed), load_dlib_face_net()
    x = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(net(x), original(x))
    assert (cos > 0.999).all()
    assert not any(p.requires_grad for p in net.parameters())


def test_shared_terms_choose_their_perceptual(no_vgg, astronaut_face):
    from facerestore_cli.train.objectives import FaceLossWeights, SharedTerms

    auto = SharedTerms("memgan")
    assert auto.choice == "face" and not auto.pretrained and auto.style is None
    assert "dlib face recognition" in auto.describe()
    structure = SharedTerms("dmdnet", "structure", weights=FaceLossWeights(identity=0.0))
    assert structure.pixel_loss.backend == "ssim+sobel" and structure.face is None
    assert structure.style.backend == "laplacian-gram"
    with pytest.raises(FileNotFoundError):
        SharedTerms("dmdnet", "vgg")
    with pytest.raises(ValueError):
        SharedTerms("dmdnet", "lpips")
    hq = to_tensor(astronaut_face)
    total, raw = auto(hq, hq.clone())
    assert float(total) == pytest.approx(0.0, abs=1e-4)
    assert set(raw) == {"perc", "detail", "id", "style", "chroma", "spectrum"}


def test_weights_average_follows_its_decay_and_copies_buffers():
    from facerestore_cli.train.common import WeightsAverage

    model = torch.nn.BatchNorm1d(3)
    ema = WeightsAverage(model, decay=0.75)
    assert not any(p.requires_grad for p in ema.model.parameters())
    before = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(4.0)
        model.running_mean.add_(2.0)
    ema.update(model)
    torch.testing.assert_close(ema.model.weight, before + 1.0)  # a quarter of the way
    torch.testing.assert_close(ema.model.running_mean, model.running_mean)  # buffers as they are
    assert model.weight.requires_grad  # the trained model is untouched
    follow = WeightsAverage(model, decay=0.0)
    with torch.no_grad():
        model.weight.mul_(3.0)
    follow.update(model)
    torch.testing.assert_close(follow.model.weight, model.weight)
    with pytest.raises(ValueError):
        WeightsAverage(model, decay=1.0)


def test_full_resolution_window_moves_between_calls(astronaut_face):
    from facerestore_cli.train.objectives import DETAIL_JITTER, FaceLosses

    losses = FaceLosses()
    hq = to_tensor(astronaut_face)
    lq = to_tensor(dg.degrade(astronaut_face, dg.fixed_degradation(8)))
    torch.manual_seed(0)
    rows = set()
    for _ in range(4):
        p = lq.clone().requires_grad_(True)
        losses(p, hq)["detail"].backward()
        touched = p.grad.abs().sum(dim=(0, 1, 3)).nonzero().ravel()
        rows.add((int(touched[0]), int(touched[-1])))
    # a 256-row window each time, somewhere within DETAIL_JITTER // 2 of the centre, not always the same
    assert len(rows) > 1
    for first, last in rows:
        assert abs(first - 128) <= DETAIL_JITTER // 2 and 248 <= last - first <= 255  # a strided edge may get none
