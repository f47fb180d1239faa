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
Batch = Annotated[int, typer.Option(min=1)]
AdvStart = Annotated[int, typer.Option(help="Step at which the adversarial loss starts.")]
Threads = Annotated[int | None, typer.Option(help="CPU threads for torch.")]
Bf16 = Annotated[bool, typer.Option(help="bf16 autocast on the CPU (AMX/AVX512-BF16).")]
ValEvery = Annotated[int, typer.Option(help="Validate (x4/x8 PSNR/SSIM on held-out faces) every N steps.")]
LrDecay = Annotated[
    float, typer.Option(min=0, max=1, help="Fraction of the run after which the learning rate cools down.")
]
ExportOnly = Annotated[bool, typer.Option(help="Only write OUT from the latest checkpoint in WORK.")]


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
    steps: Annotated[
        str, typer.Option(help="Steps of the 4 dictionary stages: init,forward,backward,buffer.")
    ] = "4000,3000,3000,2000",
    ngf: Annotated[int, typer.Option(help="Base width (the official checkpoint is 64).")] = 16,
    banks: Annotated[int, typer.Option(help="Generic dictionary items (the official checkpoint has 128).")] = 32,
    batch: Batch = 2,
    lr: float = 2e-4,
    adv_start: AdvStart = 2000,
    adv_scale: Annotated[float, typer.Option(help="Scale of the paper's adversarial weights.")] = 0.1,
    low_freq: Annotated[
        float, typer.Option(help="Weight of our tone/colour term (L1 of block averages; not in the paper, 0 = off).")
    ] = 0.0,
    refs_probs: Annotated[
        str, typer.Option(help="How often a batch has 0, 1 or 2 references (0 trains the generic path alone).")
    ] = "0.3,0.3,0.4",
    seed: int = 0,
    threads: Threads = None,
    bf16: Bf16 = True,
    val_every: ValEvery = 500,
    lr_decay_from: LrDecay = 0.6,
    export_only: ExportOnly = False,
) -> None:
    """Train DMDNet with the paper's losses and generic-dictionary stages; resumes from WORK."""
    from facerestore_cli.models.dmdnet import Config
    from facerestore_cli.train.dmdnet import DMDNetTrainer, DMDNetTrainOptions, train_dmdnet

    opts = DMDNetTrainOptions(
        data=data, out=out, work_dir=work, config=Config(ngf=ngf, banks=banks), batch=batch,
        stage_steps=_steps(steps, 4), lr=lr, adv_start=adv_start, adv_scale=adv_scale, seed=seed,
        low_freq=low_freq, refs_choices=(0, 1, 2), refs_probs=_probabilities(refs_probs, 3),
        threads=threads, bf16=bf16, val_every=val_every, lr_decay_from=lr_decay_from,
    )  # fmt: skip
    path = DMDNetTrainer(opts).export_checkpoint() if export_only else train_dmdnet(opts)
    typer.echo(f"wrote {path}")


@app.command("memgan")
def train_memgan_command(
    data: Data,
    out: Out,
    work: Work = None,
    init: Annotated[Path | None, typer.Option(help="Start from a file made by `weights import-stylegan2`.")] = None,
    steps: Annotated[int, typer.Option(min=1)] = 10000,
    width: Annotated[float, typer.Option(help="Channel multiplier (the paper's model is 1.0).")] = 0.25,
    batch: Batch = 2,
    lr: float = 2e-4,
    adv_start: AdvStart = 2000,
    seed: int = 0,
    threads: Threads = None,
    bf16: Bf16 = True,
    val_every: ValEvery = 500,
    lr_decay_from: LrDecay = 0.6,
    export_only: ExportOnly = False,
) -> None:
    """Train MemGAN with the paper's losses (eq. 13) and eq. 14 degradations; resumes from WORK."""
    from facerestore_cli.models.memgan import Config
    from facerestore_cli.train.memgan import MemGANTrainer, MemGANTrainOptions, train_memgan

    opts = MemGANTrainOptions(
        data=data, out=out, work_dir=work, config=Config(width=width), init=init, batch=batch, steps=steps,
        lr=lr, adv_start=adv_start, seed=seed, threads=threads, bf16=bf16, val_every=val_every,
        lr_decay_from=lr_decay_from,
    )  # fmt: skip
    path = MemGANTrainer(opts).export_checkpoint() if export_only else train_memgan(opts)
    typer.echo(f"wrote {path}")
