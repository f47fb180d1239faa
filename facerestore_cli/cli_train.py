"""``facerestore train``: thin Typer commands over :mod:`facerestore_cli.train`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Train the compact models that ship in weights/ (resumable, seeded).", no_args_is_help=True)


def _steps(text: str, n: int) -> tuple[int, ...]:
    parts = tuple(int(p) for p in text.split(","))
    if len(parts) != n or any(p < 0 for p in parts):
        raise typer.BadParameter(f"expected {n} comma-separated step counts")
    return parts


@app.command("dmdnet")
def train_dmdnet_command(
    data: Path = typer.Option(..., exists=True, file_okay=False, help="Folder of 512x512 aligned sharp faces."),
    out: Path = typer.Option(..., help="Weights file to write (fp16 safetensors)."),
    work: Path | None = typer.Option(None, help="Checkpoints, logs and previews \\[default: OUT stem + .work]."),
    steps: str = typer.Option(
        "4000,3000,3000,2000", help="Steps of the 4 dictionary stages: init,forward,backward,buffer."
    ),
    ngf: int = typer.Option(16, help="Base width (the official checkpoint is 64)."),
    banks: int = typer.Option(32, help="Generic dictionary items (the official checkpoint has 128)."),
    batch: int = typer.Option(2, min=1),
    lr: float = typer.Option(2e-4),
    adv_start: int = typer.Option(2000, help="Step at which the adversarial loss starts."),
    adv_scale: float = typer.Option(0.1, help="Scale of the paper's adversarial weights."),
    seed: int = typer.Option(0),
    threads: int | None = typer.Option(None, help="CPU threads for torch."),
    bf16: bool = typer.Option(True, help="bf16 autocast on the CPU (AMX/AVX512-BF16)."),
    val_every: int = typer.Option(500),
    export_only: bool = typer.Option(False, help="Only write OUT from the latest checkpoint in WORK."),
) -> None:
    """Train DMDNet with the paper's losses and generic-dictionary stages; resumes from WORK."""
    from facerestore_cli.models.dmdnet import Config
    from facerestore_cli.train.dmdnet import DMDNetTrainer, DMDNetTrainOptions, train_dmdnet

    opts = DMDNetTrainOptions(
        data=data, out=out, work_dir=work, config=Config(ngf=ngf, banks=banks), batch=batch,
        stage_steps=_steps(steps, 4), lr=lr, adv_start=adv_start, adv_scale=adv_scale, seed=seed,
        threads=threads, bf16=bf16, val_every=val_every,
    )  # fmt: skip
    path = DMDNetTrainer(opts).export_checkpoint() if export_only else train_dmdnet(opts)
    typer.echo(f"wrote {path}")


@app.command("memgan")
def train_memgan_command(
    data: Path = typer.Option(..., exists=True, file_okay=False, help="Folder of 512x512 aligned sharp faces."),
    out: Path = typer.Option(..., help="Weights file to write (fp16 safetensors)."),
    work: Path | None = typer.Option(None, help="Checkpoints, logs and previews \\[default: OUT stem + .work]."),
    init: Path | None = typer.Option(None, help="Start from a file made by `weights import-stylegan2`."),
    steps: int = typer.Option(10000, min=1),
    width: float = typer.Option(0.25, help="Channel multiplier (the paper's model is 1.0)."),
    batch: int = typer.Option(2, min=1),
    lr: float = typer.Option(2e-4),
    adv_start: int = typer.Option(2000, help="Step at which the adversarial loss starts."),
    seed: int = typer.Option(0),
    threads: int | None = typer.Option(None, help="CPU threads for torch."),
    bf16: bool = typer.Option(True, help="bf16 autocast on the CPU (AMX/AVX512-BF16)."),
    val_every: int = typer.Option(500),
    export_only: bool = typer.Option(False, help="Only write OUT from the latest checkpoint in WORK."),
) -> None:
    """Train MemGAN with the paper's losses (eq. 13) and eq. 14 degradations; resumes from WORK."""
    from facerestore_cli.models.memgan import Config
    from facerestore_cli.train.memgan import MemGANTrainer, MemGANTrainOptions, train_memgan

    opts = MemGANTrainOptions(
        data=data, out=out, work_dir=work, config=Config(width=width), init=init, batch=batch, steps=steps,
        lr=lr, adv_start=adv_start, seed=seed, threads=threads, bf16=bf16, val_every=val_every,
    )  # fmt: skip
    path = MemGANTrainer(opts).export_checkpoint() if export_only else train_memgan(opts)
    typer.echo(f"wrote {path}")
