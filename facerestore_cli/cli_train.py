"""``facerestore train``: thin Typer commands over :mod:`facerestore_cli.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Train the compact models that ship in weights/ (resumable, seeded).", no_args_is_help=True)

# The options both commands share, declared once.
Data = Annotated[Path, typer.Option(exists=True, file_okay=False, help="Folder of 512x512 aligned sharp faces.")]
Out = Annotated[Path, typer.Option(help="Weights file to write (fp16 safetensors).")]
Work = Annotated[Path | None, typer.Option(help="Checkpoints, logs and previews \\[default: OUT stem + .work].")]
Batch = Annotated[int, typer.Option(min=1, help="Faces per training step.")]
AdvStart = Annotated[int, typer.Option(help="Step at which the adversarial loss starts.")]
DiscLr = Annotated[
    float | None, typer.Option(min=0, help="Discriminator learning rate [default: LR]; applies on resume too.")
]
Threads = Annotated[int | None, typer.Option(help="CPU threads for torch.")]
Bf16 = Annotated[bool, typer.Option(help="bf16 autocast on the CPU (only where AMX makes it faster than fp32).")]
Device = Annotated[str, typer.Option(help="cpu, or a CUDA device (cuda, cuda:1).")]
Lr = Annotated[float, typer.Option(help="Generator learning rate (Adam).")]
Seed = Annotated[int, typer.Option(help="Seed of the data order, degradations and initialisation.")]
Amp = Annotated[bool, typer.Option(help="bf16 autocast on CUDA GPUs that support it (Ampere, Hopper).")]
ValEvery = Annotated[int, typer.Option(help="Validate (x4/x8 PSNR/SSIM/detail on held-out faces) every N steps.")]
ValFaces = Annotated[int, typer.Option(min=0, help="Held-out faces per periodic validation (0 = all).")]
CkptEvery = Annotated[int, typer.Option(min=1, help="Checkpoint every N steps.")]
LrDecay = Annotated[
    float, typer.Option(min=0, max=1, help="Fraction of the run after which the learning rate cools down.")
]
ExportOnly = Annotated[bool, typer.Option(help="Only write OUT from the latest checkpoint in WORK.")]
Init = Annotated[
    Path | None, typer.Option(exists=True, dir_okay=False, help="Start from these weights (ignored when resuming).")
]
Perceptual = Annotated[
    str, typer.Option(help="auto (VGG19 if found, else face), face (dlib face net), vgg, structure (SSIM+Sobel).")
]
FaceNet = Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="dlib face net (.dat or packed .npz).")]
Weight = Annotated[float | None, typer.Option(min=0, help="Overrides the trainer's default (see README).")]
LowFreq = Annotated[
    float, typer.Option(help="Weight of our tone/colour term (L1 of block averages; not in the paper, 0 = off).")
]
CleanFraction = Annotated[
    float, typer.Option(min=0, max=1, help="Share of clean or barely degraded inputs whose target is themselves.")
]
AdvScale = Annotated[float, typer.Option(min=0, help="Adversarial weight at the end of the ramp (1 = the paper's).")]
AdvFrom = Annotated[float | None, typer.Option(min=0, help="Adversarial weight at the start of the ramp.")]
AdvRamp = Annotated[int, typer.Option(min=0, help="Steps of the geometric adversarial ramp (0 = constant).")]
AdvMargin = Annotated[
    float, typer.Option(help="Hold the ramp while x8 validation PSNR is below the input's + this (dB).")
]
AdvMaxDetail = Annotated[float, typer.Option(help="Hold the ramp while the x8 detail ratio is above this.")]
AdvMaxGrid = Annotated[
    float, typer.Option(help="Hold the ramp while the x8 grid energy (a crosshatch; real faces ~0.8) is above this.")
]
MaxMinutes = Annotated[
    float | None, typer.Option(min=0, help="Stop after this many minutes (checkpoint, validate, export).")
]
Ema = Annotated[
    float, typer.Option(min=0, max=0.99999, help="Decay of the weights average validated and exported (0 = off).")
]
ValReal = Annotated[
    Path | None,
    typer.Option(exists=True, file_okay=False, help="Real degraded aligned crops: validation logs their grid energy."),
]
Workers = Annotated[int, typer.Option(min=1, help="Data threads (1 = reproducible order; a GPU needs several).")]


def _numbers(text: str, n: int, cast: type, what: str) -> tuple:
    """``n`` comma-separated non-negative numbers; anything else is a usage error (exit 2), not a traceback."""
    try:
        parts = tuple(cast(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != n or any(p < 0 for p in parts):
        raise typer.BadParameter(f"expected {n} comma-separated {what}")
    return parts


def _steps(text: str, n: int) -> tuple[int, ...]:
    return _numbers(text, n, int, "step counts")


def _probabilities(text: str, n: int) -> tuple[float, ...]:
    parts = _numbers(text, n, float, "probabilities that sum to 1")
    if abs(sum(parts) - 1) > 1e-6:
        raise typer.BadParameter(f"expected {n} comma-separated probabilities that sum to 1")
    return parts


@app.command("dmdnet")
def train_dmdnet_command(
    data: Data,
    out: Out,
    work: Work = None,
    init: Init = None,
    steps: Annotated[
        str, typer.Option(help="Steps of the 4 dictionary stages: init,forward,backward,buffer.")
    ] = "4000,3000,3000,2000",
    ngf: Annotated[int, typer.Option(help="Base width (the official checkpoint is 64).")] = 16,
    banks: Annotated[int, typer.Option(help="Generic dictionary items (the official checkpoint has 128).")] = 32,
    batch: Batch = 2,
    lr: Lr = 2e-4,
    disc_lr: DiscLr = None,
    adv_start: AdvStart = 2000,
    adv_scale: AdvScale = 1.0,
    adv_scale_from: AdvFrom = None,
    adv_ramp: AdvRamp = 4000,
    adv_psnr_margin: AdvMargin = 0.0,
    adv_max_detail: AdvMaxDetail = 1.2,
    adv_max_grid: AdvMaxGrid = 1.0,
    low_freq: LowFreq = 0.0,
    refs_probs: Annotated[
        str, typer.Option(help="How often a batch has 0, 1 or 2 references (0 trains the generic path alone).")
    ] = "0.3,0.3,0.4",
    perceptual: Perceptual = "auto",
    face_net: FaceNet = None,
    perc_weight: Weight = None,
    detail_weight: Weight = None,
    identity_weight: Weight = None,
    chroma_weight: Weight = None,
    spectrum_weight: Weight = None,
    clean_fraction: CleanFraction = 0.12,
    seed: Seed = 0,
    threads: Threads = None,
    device: Device = "cpu",
    amp: Amp = True,
    bf16: Bf16 = False,
    workers: Workers = 1,
    val_every: ValEvery = 500,
    val_faces: ValFaces = 8,
    ckpt_every: CkptEvery = 100,
    lr_decay_from: LrDecay = 0.6,
    max_minutes: MaxMinutes = None,
    ema: Ema = 0.999,
    val_real: ValReal = None,
    export_only: ExportOnly = False,
) -> None:
    """Train DMDNet with the paper's losses and generic-dictionary stages; resumes from WORK.

    Fine-tune exported weights with ``--init FILE --steps 0,0,0,N`` (their dictionary comes along).
    """
    from facerestore_cli.models import get_method
    from facerestore_cli.train import DMDNetTrainer, DMDNetTrainOptions, train_dmdnet

    Config = get_method("dmdnet").config

    opts = DMDNetTrainOptions(
        data=data, out=out, work_dir=work, init=init, config=Config(ngf=ngf, banks=banks), batch=batch,
        stage_steps=_steps(steps, 4), lr=lr, disc_lr=disc_lr, adv_start=adv_start, refs_choices=(0, 1, 2),
        refs_probs=_probabilities(refs_probs, 3),
        adv_scale=adv_scale, adv_scale_from=adv_scale_from, adv_ramp=adv_ramp, adv_psnr_margin=adv_psnr_margin,
        adv_max_detail=adv_max_detail, adv_max_grid=adv_max_grid, low_freq=low_freq, perceptual=perceptual,
        face_net=face_net,
        perc_weight=perc_weight, detail_weight=detail_weight, identity_weight=identity_weight,
        chroma_weight=chroma_weight, spectrum_weight=spectrum_weight, clean_fraction=clean_fraction, seed=seed,
        threads=threads,
        device=device, amp=amp, bf16=bf16, workers=workers, val_every=val_every, val_faces=val_faces,
        ckpt_every=ckpt_every, lr_decay_from=lr_decay_from, max_minutes=max_minutes, ema=ema, val_real=val_real,
    )  # fmt: skip
    _check_perceptual(perceptual)
    path = DMDNetTrainer(opts).export_checkpoint() if export_only else train_dmdnet(opts)
    typer.echo(f"wrote {path}")


@app.command("memgan")
def train_memgan_command(
    data: Data,
    out: Out,
    work: Work = None,
    init: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Start from exported weights or `weights import-stylegan2`'s."),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Training steps in all (resumed runs count on).")] = 10000,
    width: Annotated[float, typer.Option(help="Channel multiplier (the paper's model is 1.0).")] = 0.25,
    noise: Annotated[
        bool, typer.Option(help="The decoder's noise injection; --no-noise zeroes and freezes its strengths.")
    ] = True,
    batch: Batch = 2,
    lr: Lr = 2e-4,
    disc_lr: DiscLr = None,
    adv_start: AdvStart = 2000,
    adv_scale: AdvScale = 1.0,
    adv_scale_from: AdvFrom = None,
    adv_ramp: AdvRamp = 4000,
    adv_psnr_margin: AdvMargin = 0.0,
    adv_max_detail: AdvMaxDetail = 1.2,
    adv_max_grid: AdvMaxGrid = 1.0,
    low_freq: LowFreq = 0.0,
    perceptual: Perceptual = "auto",
    face_net: FaceNet = None,
    perc_weight: Weight = None,
    detail_weight: Weight = None,
    identity_weight: Weight = None,
    chroma_weight: Weight = None,
    spectrum_weight: Weight = None,
    clean_fraction: CleanFraction = 0.12,
    seed: Seed = 0,
    threads: Threads = None,
    device: Device = "cpu",
    amp: Amp = True,
    bf16: Bf16 = False,
    workers: Workers = 1,
    val_every: ValEvery = 500,
    val_faces: ValFaces = 8,
    ckpt_every: CkptEvery = 100,
    lr_decay_from: LrDecay = 0.6,
    max_minutes: MaxMinutes = None,
    ema: Ema = 0.999,
    val_real: ValReal = None,
    export_only: ExportOnly = False,
) -> None:
    """Train MemGAN with the paper's losses (eq. 13) and eq. 14 degradations; resumes from WORK."""
    from facerestore_cli.models import get_method
    from facerestore_cli.train import MemGANTrainer, MemGANTrainOptions, train_memgan

    Config = get_method("memgan").config

    opts = MemGANTrainOptions(
        data=data, out=out, work_dir=work, config=Config(width=width), init=init, batch=batch, steps=steps, noise=noise,
        lr=lr, disc_lr=disc_lr, adv_start=adv_start,
        adv_scale=adv_scale, adv_scale_from=adv_scale_from, adv_ramp=adv_ramp, adv_psnr_margin=adv_psnr_margin,
        adv_max_detail=adv_max_detail, adv_max_grid=adv_max_grid, low_freq=low_freq, perceptual=perceptual,
        face_net=face_net,
        perc_weight=perc_weight, detail_weight=detail_weight, identity_weight=identity_weight,
        chroma_weight=chroma_weight, spectrum_weight=spectrum_weight, clean_fraction=clean_fraction, seed=seed,
        threads=threads,
        device=device, amp=amp, bf16=bf16, workers=workers, val_every=val_every, val_faces=val_faces,
        ckpt_every=ckpt_every, lr_decay_from=lr_decay_from, max_minutes=max_minutes, ema=ema, val_real=val_real,
    )  # fmt: skip
    _check_perceptual(perceptual)
    path = MemGANTrainer(opts).export_checkpoint() if export_only else train_memgan(opts)
    typer.echo(f"wrote {path}")


#: ``train.objectives.PERCEPTUAL_CHOICES`` (the CLI imports only the train facade; a test keeps them equal)
PERCEPTUAL_CHOICES = ("auto", "face", "vgg", "structure")


def _check_perceptual(choice: str) -> None:
    if choice not in PERCEPTUAL_CHOICES:
        raise typer.BadParameter(f"--perceptual must be one of {', '.join(PERCEPTUAL_CHOICES)}")


if __name__ == "__main__":  # ``python -m facerestore_cli.cli_train``: training without the restore CLI's imports
    app()
