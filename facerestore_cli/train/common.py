"""What both training loops share: tensors from images, checkpoints, validation, logging."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from facerestore_cli.train.losses import ssim


@dataclass
class TrainOptions:
    """Options both trainers share (each adds its model's own)."""

    data: Path
    out: Path
    work_dir: Path | None = None
    batch: int = 2
    lr: float = 2e-4
    adv_start: int = 2000
    seed: int = 0
    threads: int | None = None
    bf16: bool = True
    val_every: int = 500
    ckpt_every: int = 100
    vgg: str = "auto"
    #: From this fraction of the run on, the learning rates follow a cosine down to 1% of their value.
    #: A short run gains more fidelity from a cooled-down end than from more steps at full rate.
    lr_decay_from: float = 0.6

    def resolved_work_dir(self) -> Path:
        return self.work_dir or self.out.with_name(self.out.stem + ".work")


def to_tensor(images: list[np.ndarray] | np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """uint8 RGB HxWx3 images -> (N, 3, H, W) float32 in [-1, 1] (the official preprocessing)."""
    x = torch.from_numpy(np.ascontiguousarray(np.stack(list(images)))).permute(0, 3, 1, 2)
    x = (x.to(torch.float64) / 255.0).to(torch.float32)
    return ((x - 0.5) / 0.5).to(device).contiguous(memory_format=torch.channels_last)


def to_uint8(x: Tensor) -> np.ndarray:
    y = (x.detach().float().cpu() * 0.5 + 0.5).clamp(0, 1)
    return (y.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per-image PSNR of two [-1, 1] batches, in dB on the [0, 1] scale."""
    mse = ((a.float() - b.float()) * 0.5).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def ssim01(a: Tensor, b: Tensor) -> Tensor:
    return ssim((a.float() + 1) * 0.5, (b.float() + 1) * 0.5)


def autocast(enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPUs that have it (AMX/AVX512-BF16 make convolutions ~3x faster)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic ``torch.save`` of plain tensors/containers (loadable with ``weights_only=True``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state(rng: np.random.Generator) -> dict:
    return {"numpy": json.dumps(rng.bit_generator.state), "torch": torch.get_rng_state()}


def restore_rng(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = json.loads(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_grid(path: Path, rows: list[list[np.ndarray]], scale: float = 0.5) -> None:
    """Write rows of uint8 RGB images side by side (validation previews)."""
    lines = [np.concatenate(row, axis=1) for row in rows]
    grid = np.concatenate(lines, axis=0)
    if scale != 1:
        grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


@dataclass
class Log:
    """Progress lines to stdout and a JSON-lines log beside the checkpoints."""

    path: Path
    started: float = field(default_factory=time.time)
    elapsed_before: float = 0.0

    def write(self, record: dict, echo: bool = True) -> None:
        record = {"time": round(self.elapsed, 1), **record}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if echo:
            print(" ".join(f"{k}={_fmt(v)}" for k, v in record.items()), flush=True)

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    states = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, s in zip(modules, states, strict=True):
            m.train(s)


def lr_factor(step: int, total: int, decay_from: float, floor: float = 0.01) -> float:
    """Multiplier of the base learning rate at ``step``: 1, then a cosine from ``decay_from·total`` to ``floor``."""
    start = decay_from * total
    if decay_from >= 1 or step <= start:
        return 1.0
    t = min(1.0, (step - start) / max(1.0, total - start))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


class TrainerBase:
    """The loop both trainers share: resumable checkpoints, prefetched batches, logs, validation.

    Subclasses provide ``opts`` (with ``total_steps``, ``seed``, ``val_every``, ``ckpt_every``),
    ``state()``/``load_state()`` for their models and optimisers, ``make_batch(rng)`` (runs in the
    prefetch thread), ``train_step(batch) -> dict``, ``validate(limit) -> dict`` and ``export(validation)``.
    """

    opts: object
    work: Path
    rng: np.random.Generator
    log: Log
    step: int = 0
    method: str = ""

    def setup(self, opts: object, spec: str) -> None:
        """Threads, seeds, work folder, log, and the train/validation split with cached landmarks."""
        from facerestore_cli.face.landmarks import LandmarkPredictor
        from facerestore_cli.train.data import FaceData, landmark_cache, list_images, split_validation

        self.opts = opts
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self.work = opts.resolved_work_dir()
        self.work.mkdir(parents=True, exist_ok=True)
        self.rng = np.random.default_rng(opts.seed)
        torch.manual_seed(opts.seed)
        self.step = 0
        self.log = Log(self.work / "log.jsonl")
        files = list_images(opts.data)
        self.predictor = LandmarkPredictor()
        marks = landmark_cache(files, self.work / "landmarks.npz", self.predictor)
        index = {f: i for i, f in enumerate(files)}
        train_files, self.val_files = split_validation(files)
        self.val_marks = marks[[index[f] for f in self.val_files]]
        self.train_data = FaceData(train_files, marks[[index[f] for f in train_files]], spec, self.predictor)

    def options_dict(self) -> dict:
        d = dataclasses.asdict(self.opts)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}

    def export_state(self, state: dict, validation: dict | None) -> str:
        """Write fp16 safetensors with the config, training record and validation figures."""
        from facerestore_cli.weights import save_weights

        meta = {
            "method": self.method,
            "config": dataclasses.asdict(self.opts.config),
            "training": {"steps": self.step, "options": self.options_dict(), "wall_time_s": round(self.log.elapsed)},
            "validation": validation or {},
            "perceptual": self.perceptual.describe(),
        }
        tensors = {k: v.detach().contiguous() for k, v in state.items()}
        return save_weights(tensors, self.opts.out, meta, half=True)

    def apply_lr(self, factor: float) -> None:
        """Scale every optimiser's learning rates by ``factor`` of the rate each group started with."""
        for value in vars(self).values():
            if isinstance(value, torch.optim.Optimizer):
                for group in value.param_groups:
                    group.setdefault("initial_lr", group["lr"])
                    group["lr"] = group["initial_lr"] * factor

    def checkpoint_path(self) -> Path:
        return self.work / "checkpoint.pt"

    #: Fraction of the adversarial weight in use; halved every time training diverges.
    adv_factor: float = 1.0
    #: Keep a copy of the checkpoint every this many steps (the last few), for inspection or rollback.
    snapshot_every: int = 1000
    snapshots_kept: int = 3

    def save(self) -> None:
        state = {
            "step": self.step,
            "rng": rng_state(self.rng),
            "elapsed": self.log.elapsed,
            "adv_factor": self.adv_factor,
            **self.state(),
        }
        path = self.checkpoint_path()
        save_checkpoint(path, state)
        if self.step and self.step % self.snapshot_every == 0:
            snap = path.with_name(f"checkpoint-{self.step:06d}.pt")
            snap.unlink(missing_ok=True)
            os.link(path, snap)
            for old in sorted(path.parent.glob("checkpoint-*.pt"))[: -self.snapshots_kept]:
                old.unlink()

    def resume(self) -> bool:
        path = self.checkpoint_path()
        if not path.exists():
            return False
        state = load_checkpoint(path)
        self.load_state(state)
        restore_rng(self.rng, state["rng"])
        self.step = int(state["step"])
        self.adv_factor = float(state.get("adv_factor", 1.0))
        self.log.elapsed_before = float(state["elapsed"])
        self.log.started = time.time()
        return True

    def export_checkpoint(self, limit: int | None = 8) -> Path:
        """Write weights from the latest checkpoint without training (a snapshot of a running job)."""
        if not self.resume():
            raise FileNotFoundError(f"no checkpoint in {self.work}")
        self.export(self.validate(limit=limit))
        return self.opts.out

    def run(self, log_every: int = 10) -> Path:
        from facerestore_cli.train.data import prefetch

        opts = self.opts
        if self.resume():
            self.log.write({"event": "resumed", "step": self.step})
        self.log.write({"event": "start", "perceptual": self.perceptual.describe(), "total_steps": opts.total_steps})
        # The data stream is seeded by (seed, step) so a resumed run does not replay old batches.
        data_rng = np.random.default_rng([opts.seed, self.step])
        batches = prefetch(lambda: self.make_batch(data_rng))
        last_stage = None
        guard = DivergenceGuard()
        while self.step < opts.total_steps:
            self.apply_lr(lr_factor(self.step, opts.total_steps, opts.lr_decay_from))
            stats = self.train_step(next(batches))
            guard.add(stats["psnr"])
            stage = stats.get("stage")
            # every log_every steps, and at the first step of every stage (so short runs show them all)
            if self.step % log_every == 0 or stage != last_stage or self.step == opts.total_steps:
                self.log.write(stats)
            last_stage = stage
            if self.step % opts.ckpt_every == 0:
                if guard.diverged():
                    # Never checkpoint a collapsed model: go back to the last good state, with half
                    # the adversarial weight (adversarial terms are what blow GANs up).
                    bad_step = self.step
                    self.resume()
                    self.adv_factor *= 0.5
                    guard.reset()
                    self.log.write({"event": "diverged", "step": bad_step, "back_to": self.step,
                                    "adv_factor": self.adv_factor})  # fmt: skip
                    continue
                guard.commit()
                self.save()
            if self.step % opts.val_every == 0 and self.step < opts.total_steps:
                self.log.write({"event": "validation", "step": self.step, **self.validate()})
        self.save()
        validation = self.validate(limit=None)
        self.log.write({"event": "final-validation", **validation})
        self.export(validation)
        return opts.out


class DivergenceGuard:
    """Notices a training collapse from the per-step PSNR of the training batches.

    The PSNR of random batches is noisy (±2 dB), so it compares means: the last 50 steps, and the
    last 10, against the best 50-step mean seen at a checkpoint. A drop of 3 dB (or 6 dB over the last
    10 steps, for a collapse that starts just before a checkpoint) is a divergence, not noise.
    """

    def __init__(self) -> None:
        self.values: list[float] = []
        self.best: float | None = None

    def add(self, psnr: float) -> None:
        self.values.append(psnr if np.isfinite(psnr) else 0.0)
        del self.values[:-50]

    def diverged(self) -> bool:
        if self.best is None or len(self.values) < 10:
            return False
        return float(np.mean(self.values)) < self.best - 3.0 or float(np.mean(self.values[-10:])) < self.best - 6.0

    def commit(self) -> None:
        if len(self.values) >= 50:
            mean = float(np.mean(self.values))
            self.best = mean if self.best is None else max(self.best, mean)

    def reset(self) -> None:
        self.values.clear()


def validate_restorers(
    files: list[Path],
    restorers: dict,
    grid_path: Path,
    limit: int | None = None,
) -> dict[str, float]:
    """Mean PSNR/SSIM of each restorer on held-out faces at the fixed x4 and x8 degradations.

    ``restorers`` maps a name to ``fn(lq_tensor, index, hq_uint8) -> tensor``; the degraded input is
    scored too (``input``). A preview grid of the first four faces is written to ``grid_path``.
    ``tone_psnr`` is the PSNR of 16 px block averages (32×32 thumbnails of a 512 face): tone and colour
    only, where a restorer should never do worse than its input.
    """
    from facerestore_cli.train.data import read_rgb
    from facerestore_cli.train.degrade import degrade, fixed_degradation

    results: dict[str, list[float]] = {}
    rows = []
    with torch.no_grad():
        for i, path in enumerate(files[:limit]):
            hq_img = read_rgb(path)
            hq = to_tensor([hq_img])
            row = [hq_img]
            for scale in (4, 8):
                lq_img = degrade(hq_img, fixed_degradation(scale, seed=i))
                lq = to_tensor([lq_img])
                outputs = {"input": lq, **{name: fn(lq, i, hq_img).float() for name, fn in restorers.items()}}
                for name, y in outputs.items():
                    results.setdefault(f"x{scale}_{name}_psnr", []).append(float(psnr(y, hq)))
                    results.setdefault(f"x{scale}_{name}_ssim", []).append(float(ssim01(y, hq)))
                    tone = psnr(F.avg_pool2d(y, 16), F.avg_pool2d(hq, 16))
                    results.setdefault(f"x{scale}_{name}_tone_psnr", []).append(float(tone))
                row += [to_uint8(y)[0] for y in outputs.values()]
            rows.append(row)
    save_grid(grid_path, rows[:4], scale=0.25)
    return {k: float(np.mean(v)) for k, v in results.items()}
