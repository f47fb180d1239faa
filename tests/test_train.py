"""The training loops: they run, checkpoint, resume, export loadable weights, and are seeded.

Real (tiny) models on real aligned faces made from scikit-image's astronaut; a few steps only, so
this checks the machinery, not the quality (bench/quality.py measures that on the shipped weights).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facerestore_cli.face.align import align_face
from facerestore_cli.face.detect import create_detector
from facerestore_cli.models.dmdnet import Config as DMDConfig
from facerestore_cli.models.memgan import Config as MemConfig
from facerestore_cli.train.data import reference_view, split_validation
from facerestore_cli.train.dmdnet import DMDNetTrainer, DMDNetTrainOptions
from facerestore_cli.train.memgan import MemGANTrainer, MemGANTrainOptions
from facerestore_cli.weights import load_weights


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory, astronaut_rgb) -> Path:
    """Eight aligned 512 faces: the astronaut under small shifts of her landmarks, some mirrored."""
    folder = tmp_path_factory.mktemp("faces")
    face = create_detector("retinaface").detect(astronaut_rgb)[0]
    rng = np.random.default_rng(0)
    for i in range(8):
        marks = face.landmarks + rng.normal(0, 2.0, size=(5, 2)).astype(np.float32)
        crop = align_face(astronaut_rgb, marks).image
        if i % 2:
            crop = crop[:, ::-1]
        cv2.imwrite(str(folder / f"face{i}.png"), cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR))
    return folder


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def dmd_options(faces_dir: Path, tmp_path: Path, **kw) -> DMDNetTrainOptions:
    base = dict(
        data=faces_dir, out=tmp_path / "dmd.safetensors", config=DMDConfig(ngf=4, banks=3), batch=1,
        stage_steps=(1, 1, 1, 1), refresh_items=1, refs_choices=(1,), refs_probs=(1.0,), adv_start=1,
        bf16=False, val_every=1000, ckpt_every=1000, seed=3,
    )  # fmt: skip
    base.update(kw)
    return DMDNetTrainOptions(**base)


def test_split_keeps_validation_out_of_training(tmp_path: Path) -> None:
    files = [tmp_path / f"{i:03d}.jpg" for i in range(120)]
    train, val = split_validation(files)
    assert val and not set(val) & set(train)
    assert len(train) + len(val) == len(files)


def test_reference_views_are_other_views_not_copies(faces_dir: Path) -> None:
    from facerestore_cli.face.landmarks import default_predictor
    from facerestore_cli.train.data import read_rgb

    hq = read_rgb(sorted(faces_dir.iterdir())[0])
    rng = np.random.default_rng(1)
    for _ in range(3):
        ref, marks = reference_view(hq, rng, default_predictor())
        assert ref.shape == hq.shape and marks.shape == (68, 2)
        # not the target's pixels in place: the view differs from the target and from its mirror
        assert np.abs(ref.astype(int) - hq).mean() > 5
        assert np.abs(ref.astype(int) - hq[:, ::-1]).mean() > 5


def test_dmdnet_runs_every_stage_resumes_and_exports(faces_dir: Path, tmp_path: Path) -> None:
    opts = dmd_options(faces_dir, tmp_path)
    out = DMDNetTrainer(opts).run()
    log = (opts.resolved_work_dir() / "log.jsonl").read_text()
    for stage in ("init", "forward", "backward", "buffer"):
        assert f'"stage": "{stage}"' in log
    loaded = load_weights(out)
    assert loaded.metadata["method"] == "dmdnet"
    assert loaded.config == {"ngf": 4, "banks": 3}
    assert loaded.metadata["training"]["steps"] == 4
    assert all(t.dtype == torch.float16 for t in loaded.tensors.values())
    val = loaded.metadata["validation"]
    for scale, name in itertools.product((4, 8), ("input", "generic", "refs")):
        # tone (16 px block averages) survives degradation better than the full image does
        assert val[f"x{scale}_{name}_tone_psnr"] > val[f"x{scale}_{name}_psnr"]
    # the exported file restores through the same restorer the CLI uses
    from facerestore_cli.face.landmarks import default_predictor
    from facerestore_cli.restore import create_restorer
    from facerestore_cli.train.data import read_rgb

    face = read_rgb(sorted(faces_dir.iterdir())[0])
    restored = create_restorer("dmdnet", weights=out).restore(face[None], default_predictor().predict(face)[None])
    assert restored.shape == (1, 512, 512, 3) and np.isfinite(restored).all()

    # resuming a finished run trains nothing more; a longer schedule continues from the checkpoint
    longer = dmd_options(faces_dir, tmp_path, stage_steps=(1, 1, 1, 2))
    trainer = DMDNetTrainer(longer)
    assert trainer.resume() and trainer.step == 4
    trainer.run()
    assert load_weights(out).metadata["training"]["steps"] == 5


def test_train_command_passes_its_options(faces_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facerestore_cli.cli_train import app

    out = tmp_path / "dmd.safetensors"
    common = ["dmdnet", "--data", str(faces_dir), "--out", str(out), "--ngf", "4", "--banks", "3", "--batch", "1"]
    bad = CliRunner().invoke(app, [*common, "--refs-probs", "0.5,0.6,0"])
    assert bad.exit_code == 2 and "sum to 1" in bad.output and not out.exists()
    bad_steps = CliRunner().invoke(app, [*common, "--steps", "1,x,0,1"])
    assert bad_steps.exit_code == 2 and "step counts" in bad_steps.output and not out.exists()

    tiny = ["--steps", "1,0,0,1", "--threads", "1", "--no-bf16", "--adv-start", "100", "--refs-probs", "0,0,1"]
    result = CliRunner().invoke(app, [*common, *tiny, "--low-freq", "5"])
    assert result.exit_code == 0, result.output
    options = load_weights(out).metadata["training"]["options"]
    assert options["refs_probs"] == [0.0, 0.0, 1.0] and options["low_freq"] == 5.0
    lines = (tmp_path / "dmd.work" / "log.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines if '"stage"' in line]
    assert steps and all(s["refs"] == 2 for s in steps)
    assert all(s["low"] > 0 for s in steps)  # the tone term was computed and is part of the loss


def test_dmdnet_training_is_seeded(faces_dir: Path, tmp_path: Path) -> None:
    def first_loss(folder: Path) -> float:
        opts = dmd_options(faces_dir, folder, stage_steps=(1, 0, 0, 0))
        trainer = DMDNetTrainer(opts)
        batch = trainer.make_batch(np.random.default_rng([opts.seed, 0]))
        return trainer.train_step(batch)["loss"]

    assert first_loss(tmp_path / "a") == first_loss(tmp_path / "b")


def test_memgan_trains_resumes_and_exports(faces_dir: Path, tmp_path: Path) -> None:
    config = MemConfig(width=0.0625)
    opts = MemGANTrainOptions(
        data=faces_dir, out=tmp_path / "mem.safetensors", config=config, batch=1, steps=2, adv_start=1,
        r1_interval=1, bf16=False, val_every=1000, ckpt_every=1,
    )  # fmt: skip
    trainer = MemGANTrainer(opts)
    memory_before = {k: v.clone() for k, v in trainer.model.state_dict().items() if k.endswith(".memory")}
    out = trainer.run()
    memory_after = {k: v for k, v in trainer.model.state_dict().items() if k.endswith(".memory")}
    # the memory trained itself online (eq. 5), although no gradient reaches it
    assert any(not torch.equal(memory_before[k], memory_after[k]) for k in memory_before)
    loaded = load_weights(out)
    assert loaded.metadata["method"] == "memgan" and loaded.metadata["training"]["steps"] == 2
    resumed = MemGANTrainer(opts)
    assert resumed.resume() and resumed.step == 2
    for k, v in resumed.model.state_dict().items():
        torch.testing.assert_close(v, trainer.model.state_dict()[k])
    # the exported weights are the moving average's, which resumes with the checkpoint
    ema = trainer.ema.state_dict()
    for k, v in loaded.tensors.items():
        torch.testing.assert_close(v.float(), ema[k].half().float())
    assert any(not torch.equal(ema[k], v) for k, v in trainer.model.state_dict().items() if v.is_floating_point())
    for k, v in resumed.ema.state_dict().items():
        torch.testing.assert_close(v, ema[k])


def test_memgan_without_average_exports_the_raw_weights(faces_dir: Path, tmp_path: Path) -> None:
    opts = MemGANTrainOptions(
        data=faces_dir, out=tmp_path / "mem.safetensors", config=MemConfig(width=0.0625), batch=1, steps=1,
        adv_start=10, bf16=False, val_every=1000, ckpt_every=1, ema=0,
    )  # fmt: skip
    trainer = MemGANTrainer(opts)
    assert trainer.ema is None and trainer.restorer is trainer.model
    loaded = load_weights(trainer.run())
    for k, v in loaded.tensors.items():
        torch.testing.assert_close(v.float(), trainer.model.state_dict()[k].half().float())


def test_memgan_without_noise_keeps_its_strengths_at_zero_through_training_and_resume(
    faces_dir: Path, tmp_path: Path
) -> None:
    from facerestore_cli.models.stylegan2 import StyleConv

    opts = MemGANTrainOptions(
        data=faces_dir, out=tmp_path / "mem.safetensors", config=MemConfig(width=0.0625), batch=1, steps=2,
        adv_start=0, bf16=False, val_every=1000, ckpt_every=1, noise=False, spectrum_weight=0.01,
    )  # fmt: skip

    def strengths(model: torch.nn.Module) -> list[torch.Tensor]:
        return [m.weight for m in model.modules() if isinstance(m, StyleConv)]

    # a checkpoint whose noise strengths are not zero, as the first sharper run's were
    noisy = MemGANTrainer(dataclasses.replace(opts, noise=True))
    for w in strengths(noisy.model):
        w.data.fill_(0.05)
    noisy.average_weights()
    noisy.save()
    trainer = MemGANTrainer(opts)
    assert trainer.resume() and trainer.step == 0
    for model in (trainer.model, trainer.ema.model):
        assert all(float(w) == 0.0 and not w.requires_grad for w in strengths(model))
    out = trainer.run()
    assert all(float(w) == 0.0 for w in strengths(trainer.model)) and trainer.step == 2
    exported = load_weights(out).tensors
    assert all(float(v) == 0.0 for k, v in exported.items() if k.endswith(".weight") and v.numel() == 1)
    # the other weights did train
    pairs = zip(noisy.model.parameters(), trainer.model.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)


def test_divergence_guard_tells_a_collapse_from_noise() -> None:
    from facerestore_cli.train.common import DivergenceGuard

    rng = np.random.default_rng(0)
    guard = DivergenceGuard()
    for _ in range(3):  # a noisy but healthy run: ±2 dB around 28 dB
        for v in rng.normal(28, 2, 100):
            guard.add(float(v))
        assert not guard.diverged()
        guard.commit()
    for v in rng.normal(27, 2, 40):  # a slightly worse stretch is still noise
        guard.add(float(v))
    assert not guard.diverged()
    for _ in range(10):  # the collapse seen once in a real run: PSNR 4 dB within a few steps
        guard.add(4.0)
    assert guard.diverged()
    guard.reset()
    guard.add(float("nan"))
    assert not guard.diverged()  # too few values after a reset to judge


def test_learning_rate_cools_down_at_the_end(faces_dir: Path, tmp_path: Path) -> None:
    from facerestore_cli.train.common import lr_factor

    assert lr_factor(0, 100, 0.6) == lr_factor(60, 100, 0.6) == 1.0
    values = [lr_factor(s, 100, 0.6) for s in range(60, 101)]
    assert all(a > b for a, b in itertools.pairwise(values))
    assert values[-1] == pytest.approx(0.01) and lr_factor(80, 100, 0.6) == pytest.approx(0.505)
    assert lr_factor(99, 100, 1.0) == 1.0  # decay switched off

    trainer = DMDNetTrainer(dmd_options(faces_dir, tmp_path))
    base = [g["lr"] for g in trainer.opt_g.param_groups]
    trainer.apply_lr(0.25)
    assert [g["lr"] for g in trainer.opt_g.param_groups] == pytest.approx([b * 0.25 for b in base])
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(trainer.opts.lr * 0.25)
    trainer.apply_lr(1.0)  # a factor of the starting rate, not of the current one
    assert [g["lr"] for g in trainer.opt_g.param_groups] == pytest.approx(base)


# --------------------------------------------------------------------------------------------------
# the sharper fine-tuning: face losses, chroma, clean fraction, adversarial ramp, detail ratio, fp32


def test_cpu_training_runs_in_fp32_by_default(faces_dir: Path, tmp_path: Path) -> None:
    from facerestore_cli.train.common import TrainOptions, use_amp

    assert TrainOptions(data=faces_dir, out=tmp_path / "x").bf16 is False
    opts = dmd_options(faces_dir, tmp_path, stage_steps=(0, 0, 0, 1))
    del opts.__dict__["bf16"]  # the dataclass default, not the helper's explicit False
    assert opts.bf16 is False and not use_amp(opts)
    trainer = DMDNetTrainer(opts)
    seen = []

    def hook(module, inputs, output) -> None:
        seen.append((output.dtype, torch.is_autocast_enabled("cpu")))

    trainer.model.register_forward_hook(hook)
    trainer.train_step(trainer.make_batch(np.random.default_rng(0)))
    assert seen == [(torch.float32, False)]
    # bf16 on the CPU only when asked for
    assert use_amp(dmd_options(faces_dir, tmp_path, bf16=True))


def test_new_losses_train_and_lower_the_loss(faces_dir: Path, tmp_path: Path) -> None:
    """A few steps on one batch with every new term on (face perceptual, detail, identity, chroma,
    tone, adversarial at a ramped weight): each term is logged and the total goes down."""
    torch.manual_seed(0)
    opts = dmd_options(faces_dir, tmp_path, stage_steps=(0, 0, 0, 8), lr=1e-3, adv_start=0, adv_scale=0.1,
                       adv_scale_from=0.01, adv_ramp=4, low_freq=5.0, refs_probs=(1.0,), refs_choices=(0,))  # fmt: skip
    trainer = DMDNetTrainer(opts)
    batch = trainer.make_batch(np.random.default_rng(5))
    stats = []
    for _ in range(8):
        stats.append(trainer.train_step(batch))
        trainer.ramp.advance()
    first, last = stats[0], stats[-1]
    for key in ("perc", "detail", "id", "style", "chroma", "low", "g_adv"):
        assert np.isfinite(first[key]) and first[key] != 0, key
    assert first["adv_scale"] == pytest.approx(0.01) and stats[4]["adv_scale"] == pytest.approx(0.1)
    # (the adversarial part moves as D trains, so compare the rest)
    rest = [s["loss"] - s["adv_scale"] * s["g_adv"] for s in stats]
    assert rest[-1] < rest[0] and last["psnr"] > first["psnr"]


def test_memgan_fine_tunes_from_init_with_the_new_losses(faces_dir: Path, tmp_path: Path) -> None:
    config = MemConfig(width=0.0625)
    base = dict(data=faces_dir, config=config, batch=1, adv_start=0, r1_interval=1, val_every=1, val_faces=1,
                ckpt_every=1, clean_fraction=0.5, adv_ramp=10, adv_psnr_margin=-100.0)  # fmt: skip
    first = MemGANTrainOptions(out=tmp_path / "a.safetensors", steps=1, **base)
    a = MemGANTrainer(first).run()
    real = tmp_path / "real"  # real degraded crops stand-in: two of the faces, JPEG-blocked
    real.mkdir()
    for i in (0, 1):
        face = cv2.imread(str(faces_dir / f"face{i}.png"))
        cv2.imwrite(str(real / f"r{i}.jpg"), face, [cv2.IMWRITE_JPEG_QUALITY, 20])
    tuned = MemGANTrainOptions(out=tmp_path / "b.safetensors", steps=2, init=a, val_real=real, adv_max_grid=100.0,
                               **base)  # fmt: skip
    trainer = MemGANTrainer(tuned)
    init = load_weights(a).tensors
    for k, v in trainer.model.state_dict().items():  # starts from the file (fp16-rounded)
        torch.testing.assert_close(v, init[k].float(), rtol=0, atol=0)
    trainer.run()
    records = [json.loads(line) for line in (tmp_path / "b.work" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "l1" in r]
    assert steps and all(r["alpha3"] > 0 and r["chroma"] > 0 and r["id"] > 0 for r in steps)
    # the ramp starts at the first shipped weights' α3 = 0.1 (one step in at step 2: a tenth of
    # the way to 1 in log) and its clock is checkpointed
    assert steps[-1]["step"] == 2 and steps[-1]["adv_scale"] == pytest.approx(0.1 * 10**0.1)
    ckpt = torch.load(tmp_path / "b.work" / "checkpoint.pt", weights_only=True)
    assert ckpt["adv_ramp"]["progress"] == 2
    validation = [r for r in records if r.get("event") == "validation"]
    assert validation and "x8_memgan_detail" in validation[0] and "ramp" in validation[0]
    v = validation[0]
    assert v["x8_memgan_grid"] > 0 and v["x8_input_grid"] > 0
    # the real crops' grid energy (of the crops as they are, and through the restorer)
    assert v["real_input_grid"] > 0 and v["real_memgan_grid"] > 0
    # the same-photo identity from the face net: the input keeps more of it at x4 than at x8
    assert 0 < v["x8_input_identity"] < v["x4_input_identity"] <= 1 and -1 <= v["x8_memgan_identity"] <= 1
    assert (tmp_path / "b.work" / "log.txt").read_text().count("event=validation") == len(validation)
    # a resumed run takes the command's discriminator rate, not the checkpoint's
    import dataclasses

    faster = MemGANTrainer(dataclasses.replace(tuned, disc_lr=7e-4))
    assert faster.resume() and faster.step == 2
    assert [g["lr"] for g in faster.opt_d.param_groups] == [7e-4]
    # a config that does not match the init file is refused
    with pytest.raises(ValueError, match="another config"):
        MemGANTrainer(MemGANTrainOptions(out=tmp_path / "c.safetensors", steps=1, init=a,
                                         **{**base, "config": MemConfig(width=0.125)}))  # fmt: skip


def test_the_ramp_holds_on_the_worse_of_the_synthetic_and_the_real_grid() -> None:
    from types import SimpleNamespace

    from facerestore_cli.train.common import TrainerBase
    from facerestore_cli.train.objectives import AdversarialRamp

    trainer = SimpleNamespace(main_restorer="memgan", ramp=AdversarialRamp(start=0.1, target=1.0, steps=100))
    figures = {"x8_memgan_psnr": 28.0, "x8_input_psnr": 27.0, "x8_memgan_detail": 0.4, "x8_memgan_grid": 0.9}
    assert TrainerBase.review_ramp(trainer, figures) == "running"
    why = TrainerBase.review_ramp(trainer, {**figures, "real_memgan_grid": 1.4})
    assert trainer.ramp.held and "grid 1.40" in why
    assert TrainerBase.review_ramp(trainer, {**figures, "real_memgan_grid": 0.95}) == "running"


def test_dmdnet_init_validation_reports_detail_and_time_limit(faces_dir: Path, tmp_path: Path) -> None:
    opts = dmd_options(faces_dir, tmp_path, stage_steps=(1, 0, 0, 1), val_real=faces_dir)
    first = DMDNetTrainer(opts).run()
    val = load_weights(first).metadata["validation"]
    # landmarks found on each real crop (a 2-step model's output is flat: grid 0)
    assert val["real_generic_grid"] >= 0 and val["real_input_grid"] > 0
    for scale, name in itertools.product((4, 8), ("input", "generic", "refs")):
        assert 0 <= val[f"x{scale}_{name}_detail"] < 3  # (a 2-step model's output is nearly flat: ~0)
    assert val["x8_input_detail"] < val["x4_input_detail"] < 1  # stronger degradation, less detail
    # fine-tuning from the exported file: the dictionary comes along in the buffers
    tuned = dmd_options(faces_dir, tmp_path / "t", stage_steps=(0, 0, 0, 50), init=first, max_minutes=0)
    trainer = DMDNetTrainer(tuned)
    loaded = load_weights(first).tensors
    from facerestore_cli.models.dmdnet import mem_buffer_name

    key = mem_buffer_name("LE", 256, "Key")
    torch.testing.assert_close(trainer.model.state_dict()[key], loaded[key].float())
    out = trainer.run()  # max_minutes=0: stops before the first step, still exports
    assert load_weights(out).metadata["training"]["steps"] == 0
    log = (tuned.resolved_work_dir() / "log.jsonl").read_text()
    assert '"event": "time-limit"' in log


def test_train_commands_pass_the_new_options(faces_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facerestore_cli import cli_train
    from facerestore_cli.train.objectives import PERCEPTUAL_CHOICES

    assert cli_train.PERCEPTUAL_CHOICES == PERCEPTUAL_CHOICES
    out = tmp_path / "mem.safetensors"
    common = ["memgan", "--data", str(faces_dir), "--out", str(out), "--width", "0.0625", "--batch", "1"]
    bad = CliRunner().invoke(cli_train.app, [*common, "--perceptual", "lpips"])
    assert bad.exit_code == 2 and "--perceptual" in bad.output and not out.exists()
    flags = ["--steps", "1", "--threads", "1", "--adv-start", "0", "--adv-scale", "0.5", "--adv-scale-from", "0.05",
             "--adv-ramp", "7", "--chroma-weight", "3", "--identity-weight", "0.2", "--clean-fraction", "0.3",
             "--low-freq", "2", "--val-every", "1000", "--ckpt-every", "1", "--max-minutes", "30",
             "--spectrum-weight", "0.02", "--no-noise"]  # fmt: skip
    result = CliRunner().invoke(cli_train.app, [*common, *flags])
    assert result.exit_code == 0, result.output
    options = load_weights(out).metadata["training"]["options"]
    expected = {"adv_scale": 0.5, "adv_scale_from": 0.05, "adv_ramp": 7, "chroma_weight": 3.0,
                "identity_weight": 0.2, "clean_fraction": 0.3, "low_freq": 2.0, "bf16": False, "device": "cpu",
                "perceptual": "auto", "spectrum_weight": 0.02, "noise": False}  # fmt: skip
    assert {k: options[k] for k in expected} == expected
    assert "identity 0.2, chroma 3, spectrum 0.02" in load_weights(out).metadata["perceptual"]
    tensors = load_weights(out).tensors
    strengths = [v for k, v in tensors.items() if k.startswith("decoder.style_conv") and k.endswith(".weight")]
    strengths = [v for v in strengths if v.numel() == 1]
    assert strengths and all(float(v) == 0.0 for v in strengths)


@pytest.mark.slow
def test_pack_and_gpu_script_run_on_the_cpu(faces_dir: Path, tmp_path: Path) -> None:
    """tools/pack_training_subset.py packs a subset under its budget, and tools/gpu_train.sh trains the
    shipped MemGAN from it with --cpu-smoke, with no landmark predictor needed, into <= 16 MiB."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    pack = tmp_path / "pack"
    subprocess.run([sys.executable, str(root / "tools" / "pack_training_subset.py"), "--data", str(faces_dir),
                    "--out", str(pack), "--max-mib", "14"], check=True, cwd=root)  # fmt: skip
    size = sum(p.stat().st_size for p in pack.rglob("*") if p.is_file())
    assert size <= 14 * 1024 * 1024
    manifest = json.loads((pack / "PACK.json").read_text())
    assert manifest["faces"] == 8 and manifest["validation_faces"] == ["00000_face0.jpg"]
    env = {**os.environ, "PYTHON": sys.executable, "STEPS": "1"}
    script = [str(root / "tools" / "gpu_train.sh"), str(pack), str(tmp_path / "out"), "--cpu-smoke"]
    run = subprocess.run(["bash", *script], cwd=root, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    weights = tmp_path / "out" / "memgan-gpu.safetensors"
    assert weights.stat().st_size <= 16 * 1024 * 1024
    meta = load_weights(weights).metadata
    assert meta["training"]["steps"] == 1 and "face-net.npz" in meta["perceptual"]
