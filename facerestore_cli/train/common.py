"""What both training loops share: tensors from images, checkpoints, validation, logging."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from facerestore_cli.models.tensors import faces_to_tensor
from facerestore_cli.train.losses import ssim


@dataclass
class TrainOptions:
    """Options both trainers share (each adds its model's own)."""

    data: Path
    out: Path
    work_dir: Path | None = None
    #: start from these weights (a file this trainer exported, or ``weights import-stylegan2``'s);
    #: ignored when a checkpoint exists, so re-running the same command resumes
    init: Path | None = None
    batch: int = 2
    lr: float = 2e-4
    #: the discriminator's learning rate (None: ``lr``). A fine-tuning run starts a fresh
    #: discriminator beside a trained generator: it needs to learn faster than the generator moves.
    disc_lr: float | None = None
    adv_start: int = 2000
    seed: int = 0
    threads: int | None = None
    #: "cpu" or a torch device such as "cuda" / "cuda:1"
    device: str = "cpu"
    #: bf16 autocast on the CPU. Off by default: on the CPUs we train on (no AMX) bf16 convolutions
    #: were measured 50–100x slower than fp32.
    bf16: bool = False
    #: bf16 autocast on CUDA GPUs that support it (Ampere, Hopper); fp32 elsewhere
    amp: bool = True
    val_every: int = 500
    #: held-out faces per periodic validation (0 = all of them; the final validation uses all)
    val_faces: int = 8
    ckpt_every: int = 100
    vgg: str = "auto"
    #: "auto" (VGG19 if found, else the face net), "face", "vgg" or "structure" (the SSIM + Sobel stand-in)
    perceptual: str = "auto"
    #: dlib's face recognition model (.dat, or a .npz from tools/pack_training_subset.py)
    face_net: Path | None = None
    #: face-net and chroma weights; None takes the trainer's default (see FaceLossWeights)
    perc_weight: float | None = None
    detail_weight: float | None = None
    identity_weight: float | None = None
    chroma_weight: float | None = None
    spectrum_weight: float | None = None
    #: our tone term (L1 of block averages; 0 = off)
    low_freq: float = 0.0
    #: share of samples whose input is clean or barely degraded, with the same target
    clean_fraction: float = 0.12
    #: the adversarial weight, as a multiple of the paper's (relative to its pixel term): the ramp's
    #: end; ``adv_scale_from`` its start (None: the trainer's default), over ``adv_ramp`` steps
    adv_scale: float = 1.0
    adv_scale_from: float | None = None
    adv_ramp: int = 4000
    #: validation holds the ramp when x8 PSNR falls below the input's + this (dB) ...
    adv_psnr_margin: float = 0.0
    #: ... or when the x8 detail ratio rises above this
    adv_max_detail: float = 1.2
    #: ... or when the x8 grid energy (``objectives.grid_energy``, real faces about 0.8) rises above this
    adv_max_grid: float = 1.0
    #: aligned crops of real degraded faces (no originals needed): validation also logs the grid energy
    #: of each restorer's output on them, and the ramp's grid hold takes the larger of the two. Real
    #: JPEG and sensor noise showed a crosshatch that the synthetic degradations did not.
    val_real: Path | None = None
    #: stop (checkpoint, validate, export) after this many minutes of this process's wall time
    max_minutes: float | None = None
    #: data threads (1 keeps the batch order reproducible; a GPU needs several)
    workers: int = 1
    #: From this fraction of the run on, the learning rates follow a cosine down to 1% of their value.
    #: A short run gains more fidelity from a cooled-down end than from more steps at full rate.
    lr_decay_from: float = 0.6
    #: Decay of the generator's exponential moving average, which validation and the exported weights
    #: use (0 = off: the raw weights). GAN weights wander from step to step; their average keeps the
    #: detail and drops the step's own textures (StyleGAN2 and GFPGAN ship theirs, at 0.999).
    ema: float = 0.999

    def resolved_work_dir(self) -> Path:
        return self.work_dir or self.out.with_name(self.out.stem + ".work")


def to_tensor(images: list[np.ndarray] | np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """uint8 RGB HxWx3 images -> (N, 3, H, W) float32 in [-1, 1] (as restoring does), channels-last."""
    return faces_to_tensor(np.stack(list(images))).to(device).contiguous(memory_format=torch.channels_last)


def to_uint8(x: Tensor) -> np.ndarray:
    y = (x.detach().float().cpu() * 0.5 + 0.5).clamp(0, 1)
    return (y.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per-image PSNR of two [-1, 1] batches, in dB on the [0, 1] scale."""
    mse = ((a.float() - b.float()) * 0.5).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def ssim01(a: Tensor, b: Tensor) -> Tensor:
    return ssim((a.float() + 1) * 0.5, (b.float() + 1) * 0.5)


def autocast(enabled: bool, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled`` (see :func:`use_amp` for when it is)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def use_amp(opts: TrainOptions) -> bool:
    """Whether training autocasts to bf16: on CUDA where the GPU supports bf16 (``opts.amp``), on the
    CPU only when asked (``opts.bf16``: without AMX it is far slower than fp32)."""
    device = torch.device(opts.device)
    if device.type == "cuda":
        return opts.amp and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and opts.bf16


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic ``torch.save`` of plain tensors/containers (loadable with ``weights_only=True``).

    Through the project's one atomic writer, which also fsyncs: a power cut during a long run must leave
    the previous checkpoint to resume from, not an empty file published by a bare rename.
    """
    from facerestore_cli.imagefile import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


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
        """Append to ``log.jsonl`` (for plots) and ``log.txt`` (the same line, for people)."""
        record = {"time": round(self.elapsed, 1), **record}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        line = " ".join(f"{k}={_fmt(v)}" for k, v in record.items())
        with self.path.with_suffix(".txt").open("a") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")
        if echo:
            print(line, flush=True)

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


class WeightsAverage:
    """An exponential moving average of a model's parameters, in a copy of the model.

    Buffers (batch statistics, MemGAN's memory banks, which train themselves by their own EMA) are
    copied as they are. ``decay`` 0 makes the copy follow the model exactly.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        import copy

        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), not {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        mine = dict(self.model.named_parameters())
        for name, p in model.named_parameters():
            mine[name].lerp_(p.detach(), 1 - self.decay)
        for (_, b_mine), (_, b) in zip(self.model.named_buffers(), model.named_buffers(), strict=True):
            b_mine.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


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
    #: the restorer whose x8 validation figures steer the adversarial ramp
    main_restorer: str = ""
    #: where the adversarial ramp starts when ``opts.adv_scale_from`` is None
    default_adv_from: float = 1.0

    def setup(self, opts: object, spec: str) -> None:
        """Threads, device, seeds, work folder, log, and the train/validation split with cached landmarks."""
        from facerestore_cli.train.data import FaceData, LazyPredictor, landmark_cache, list_images, split_validation
        from facerestore_cli.train.objectives import AdversarialRamp

        self.opts = opts
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self.device = torch.device(opts.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self.amp = use_amp(opts)
        self.work = opts.resolved_work_dir()
        self.work.mkdir(parents=True, exist_ok=True)
        self.rng = np.random.default_rng(opts.seed)
        torch.manual_seed(opts.seed)
        self.step = 0
        self.log = Log(self.work / "log.jsonl")
        files = list_images(opts.data)
        self.predictor = LazyPredictor()
        marks = landmark_cache(files, self.work / "landmarks.npz", self.predictor)
        index = {f: i for i, f in enumerate(files)}
        train_files, self.val_files = split_validation(files)
        self.val_marks = marks[[index[f] for f in self.val_files]]
        self.train_data = FaceData(
            train_files, marks[[index[f] for f in train_files]], spec, self.predictor, opts.clean_fraction
        )
        self.val_real = list_images(opts.val_real) if opts.val_real else []
        start = self.default_adv_from if opts.adv_scale_from is None else opts.adv_scale_from
        self.ramp = AdversarialRamp(
            start=start if opts.adv_ramp > 0 else opts.adv_scale, target=opts.adv_scale, steps=opts.adv_ramp,
            psnr_margin=opts.adv_psnr_margin, max_detail=opts.adv_max_detail, max_grid=opts.adv_max_grid,
        )  # fmt: skip

    #: the moving average of ``model``'s weights (``average_weights``), or None
    ema: WeightsAverage | None = None

    def average_weights(self) -> None:
        """Start the moving average of ``self.model`` (once it is on its device), unless ``opts.ema`` is 0."""
        self.ema = WeightsAverage(self.model, self.opts.ema) if self.opts.ema > 0 else None

    def load_average(self, state: dict) -> None:
        """The average from a checkpoint; one from before the average existed starts it at its weights."""
        if self.ema is not None:
            self.ema.load_state_dict(state.get("model_ema", state["model"]))

    def identity_measure(self) -> Callable[[Tensor, Tensor], float] | None:
        """Validation's same-photo identity: the cosine of the face net's descriptors (None without the net)."""
        face = getattr(self.perceptual, "face", None)
        if face is None:
            return None
        from facerestore_cli.train.face_features import chip_from_aligned

        net = face.face.net

        def cosine(y: Tensor, hq: Tensor) -> float:
            with torch.no_grad():
                a, b = (net.features(chip_from_aligned((t.to(self.device) + 1) / 2))[-1] for t in (y, hq))
                return float(F.cosine_similarity(a, b, dim=1).mean())

        return cosine

    @property
    def restorer(self) -> torch.nn.Module:
        """The weights that are validated and exported: the moving average where there is one."""
        return self.ema.model if self.ema is not None else self.model

    def shared_terms(self, kind: str, defaults: object) -> object:
        """The perceptual/identity/style/chroma terms with ``defaults`` (FaceLossWeights) overridden by opts."""
        from facerestore_cli.train.objectives import SharedTerms

        o = self.opts
        overrides = {"perceptual": o.perc_weight, "detail": o.detail_weight, "identity": o.identity_weight,
                     "chroma": o.chroma_weight, "spectrum": o.spectrum_weight}  # fmt: skip
        weights = dataclasses.replace(defaults, **{k: v for k, v in overrides.items() if v is not None})
        return SharedTerms(kind, o.perceptual, vgg=o.vgg, face_net=o.face_net, weights=weights).to(self.device)

    def load_init(self, model: torch.nn.Module) -> None:
        """Load ``opts.init`` into ``model`` (strict: every tensor must match the configured size)."""
        from facerestore_cli.weights import load_weights

        loaded = load_weights(self.opts.init)
        config = loaded.metadata.get("config")
        if config and hasattr(self.opts, "config"):
            mine = dataclasses.asdict(self.opts.config)
            differ = {k: (v, mine[k]) for k, v in config.items() if k in mine and _plain(mine[k]) != _plain(v)}
            if differ:
                raise ValueError(f"{self.opts.init} was trained with another config (file, ours): {differ}")
        model.load_state_dict({k: v.float() for k, v in loaded.tensors.items()})

    def adv_weight(self) -> float:
        """The adversarial scale of this step: the ramp's value times the divergence guard's factor."""
        return self.ramp.value() * self.adv_factor

    def to_device(self, batch: dict) -> dict:
        if self.device.type == "cpu":
            return batch
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) and k not in ("boxes", "ref_boxes")
                else v for k, v in batch.items()}  # fmt: skip

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
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
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
            "adv_ramp": self.ramp.state(),
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
        self.ramp.load(state.get("adv_ramp"))
        if self.opts.disc_lr is not None:  # the command's rate wins over the checkpoint's (resumable with a new one)
            for group in self.opt_d.param_groups:
                group["lr"] = group["initial_lr"] = self.opts.disc_lr
        self.log.elapsed_before = float(state["elapsed"])
        self.log.started = time.time()
        return True

    def export_checkpoint(self, limit: int | None = 8) -> Path:
        """Write weights from the latest checkpoint without training (a snapshot of a running job)."""
        if not self.resume():
            raise FileNotFoundError(f"no checkpoint in {self.work}")
        self.export(self.validate(limit=limit))
        return self.opts.out

    def review_ramp(self, validation: dict) -> str:
        """Hold or release the adversarial ramp from a validation's x8 PSNR, detail ratio and grid energy."""
        name = self.main_restorer
        grids = [g for g in (validation.get(f"x8_{name}_grid"), validation.get(f"real_{name}_grid")) if g is not None]
        return self.ramp.review(
            validation.get(f"x8_{name}_psnr"), validation.get("x8_input_psnr"), validation.get(f"x8_{name}_detail"),
            max(grids) if grids else None,
        )  # fmt: skip

    def batches(self) -> Iterator[dict]:
        from facerestore_cli.train.data import prefetch

        # The data stream is seeded by (seed, step) so a resumed run does not replay old batches.
        workers = max(1, self.opts.workers)
        rngs = [np.random.default_rng([self.opts.seed, self.step] + ([w] if w else [])) for w in range(workers)]
        makers = [functools.partial(self.make_batch, r) for r in rngs]
        return prefetch(makers[0] if workers == 1 else makers, depth=max(4, 2 * workers))

    def run(self, log_every: int = 10) -> Path:
        opts = self.opts
        if self.resume():
            self.log.write({"event": "resumed", "step": self.step})
        self.log.write({"event": "start", "perceptual": self.perceptual.describe(), "total_steps": opts.total_steps,
                        "device": str(self.device), "amp_bf16": self.amp})  # fmt: skip
        if self.step == 0 and opts.init and opts.val_every:
            # where a fine-tuning run starts from: the first point of its curves
            validation = self.validate(limit=opts.val_faces or None)
            self.log.write({"event": "validation", "step": 0, **validation, "adv_scale": self.adv_weight(),
                            "ramp": "start"})  # fmt: skip
        started = time.time()
        deadline = started + opts.max_minutes * 60 if opts.max_minutes is not None else None
        batches = self.batches()
        last_stage = None
        guard = DivergenceGuard()
        while self.step < opts.total_steps:
            if deadline is not None and time.time() >= deadline:
                self.log.write({"event": "time-limit", "step": self.step, "minutes": opts.max_minutes})
                break
            self.apply_lr(lr_factor(self.step, opts.total_steps, opts.lr_decay_from))
            stats = self.train_step(self.to_device(next(batches)))
            if self.step > opts.adv_start:
                self.ramp.advance()
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
                validation = self.validate(limit=opts.val_faces or None)
                ramp = self.review_ramp(validation)
                self.log.write({"event": "validation", "step": self.step, **validation, "adv_scale": self.adv_weight(),
                                "ramp": ramp})  # fmt: skip
                if self.step % opts.ckpt_every == 0:
                    self.save()  # keep the ramp's new state with the checkpoint just written
        self.save()
        validation = self.validate(limit=None)
        self.log.write({"event": "final-validation", "step": self.step, **validation})
        self.export(validation)
        return opts.out


def _plain(v: object) -> object:
    return list(v) if isinstance(v, tuple) else v


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
    device: torch.device | str = "cpu",
    identity: Callable[[Tensor, Tensor], float] | None = None,
    real: Sequence[tuple[Path, Callable[[Tensor, np.ndarray], dict[str, Tensor]]]] = (),
) -> dict[str, float]:
    """PSNR/SSIM/tone PSNR (means) and detail ratio (median) of each restorer on held-out faces at the
    fixed x4 and x8 degradations.

    ``restorers`` maps a name to ``fn(lq_tensor, index, hq_uint8) -> tensor``; the degraded input is
    scored too (``input``). A preview grid of the first four faces is written to ``grid_path``.
    ``tone_psnr`` is the PSNR of 16 px block averages (32×32 thumbnails of a 512 face): tone and colour
    only, where a restorer should never do worse than its input. ``detail`` is
    :func:`~facerestore_cli.train.objectives.detail_ratio` of the 8-bit output: the centre's Laplacian
    energy against the original's (1 = as detailed as the real face), the median over faces because
    one ratio can be far off on a face whose original centre is unusually flat. ``grid`` is
    :func:`~facerestore_cli.train.objectives.grid_energy` (median): a texture laid on a 4-5 px grid,
    which raises the detail ratio and looks worse (sharp real faces: about 0.8). ``identity(y, hq)``,
    where given, is the cosine of the face net's descriptors of the output and the original (mean):
    the same photo, so the identity loss sees it (``bench/quality.py`` measures the cross-photo one).
    ``real`` pairs real degraded crops with ``fn(tensor, rgb) -> {name: output}``; their grid energy
    (median) is ``real_<name>_grid``, and the crops as they are ``real_input_grid``.
    """
    from facerestore_cli.train.data import read_rgb
    from facerestore_cli.train.degrade import degrade, fixed_degradation
    from facerestore_cli.train.objectives import detail_ratio, grid_energy

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
                outputs = {"input": lq}
                for name, fn in restorers.items():
                    outputs[name] = fn(lq.to(device), i, hq_img).float().cpu()
                for name, y in outputs.items():
                    results.setdefault(f"x{scale}_{name}_psnr", []).append(float(psnr(y, hq)))
                    results.setdefault(f"x{scale}_{name}_ssim", []).append(float(ssim01(y, hq)))
                    tone = psnr(F.avg_pool2d(y, 16), F.avg_pool2d(hq, 16))
                    results.setdefault(f"x{scale}_{name}_tone_psnr", []).append(float(tone))
                    image = to_uint8(y)[0]
                    results.setdefault(f"x{scale}_{name}_detail", []).append(detail_ratio(image, hq_img))
                    results.setdefault(f"x{scale}_{name}_grid", []).append(grid_energy(image))
                    if identity is not None:
                        results.setdefault(f"x{scale}_{name}_identity", []).append(identity(y, hq))
                    row.append(image)
            rows.append(row)
        for path, fn in real:
            rgb = read_rgb(path)
            results.setdefault("real_input_grid", []).append(grid_energy(rgb))
            for name, y in fn(to_tensor([rgb]).to(device), rgb).items():
                results.setdefault(f"real_{name}_grid", []).append(grid_energy(to_uint8(y.float().cpu())[0]))
    save_grid(grid_path, rows[:4], scale=0.25)
    medians = ("_detail", "_grid")
    return {k: float(np.nanmedian(v) if k.endswith(medians) else np.mean(v)) for k, v in results.items()}
