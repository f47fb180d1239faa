"""``facerestore weights`` and ``doctor``: thin commands over :mod:`facerestore_cli.weights` and the doctor."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from facerestore_cli.cli_common import err, out
from facerestore_cli.defaults import DEFAULT_METHOD


def weights_list(json_out: bool = typer.Option(False, "--json", help="Print the files as JSON on stdout.")) -> None:
    """Every weights file found, in lookup order."""
    from facerestore_cli.weights import list_weights, search_places

    found = list_weights()
    if json_out:
        typer.echo(json.dumps([{"path": str(w.path), "origin": w.origin, "method": w.method} for w in found]))
        return
    table = Table("method", "origin", "file", title="weights (first match per method wins)")
    for w in found:
        table.add_row(str(w.method), w.origin, escape(str(w.path)))
    out.print(table)
    out.print("searched: " + "; ".join(escape(p.description) for p in search_places()))


def weights_fetch(
    method: str = typer.Argument(DEFAULT_METHOD, metavar="METHOD", help="The method whose checkpoint to fetch."),
    url: str | None = typer.Option(None, help="Download from a mirror instead of the official release."),
    timeout: float = typer.Option(30.0, metavar="SECONDS", help="Give up on a connection silent this long."),
    retries: int = typer.Option(5, metavar="N", help="Failed attempts in a row before giving up (DNS: 2)."),
) -> None:
    """Download an official checkpoint (resumable, verified) and import it."""
    from facerestore_cli.weights import WeightsError, fetch

    try:
        result = fetch(method, url=url, timeout=timeout, retries=retries, progress=err.is_terminal)
    except WeightsError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    err.print(f"[green]imported[/] {escape(str(result.path))} (sha256 {result.sha256[:12]}…)")


def weights_import(
    checkpoint: Path = typer.Argument(..., exists=True, dir_okay=False, metavar="FILE", help="The official .pth file."),
    method: str = typer.Option(DEFAULT_METHOD, help="The method the checkpoint is for."),
    dest: Path | None = typer.Option(None, help="Folder to write into (default: the user weights folder)."),
    onnx: bool = typer.Option(
        True, "--onnx/--no-onnx", help="Also export the ONNX graphs now (cached; else on first onnxruntime use)."
    ),
) -> None:
    """Import an official checkpoint (.pth, loaded with weights_only=True) as safetensors."""
    from facerestore_cli.weights import WeightsError, export_onnx, import_checkpoint, locate_weights

    try:
        result = import_checkpoint(checkpoint, method, dest)
    except WeightsError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    err.print(
        f"[green]imported[/] {escape(str(result.path))} ({result.tensor_count} tensors, sha256 {result.sha256[:12]}…)"
    )
    if onnx:
        try:
            files = export_onnx(method, locate_weights(method, result.path))
        except (WeightsError, ValueError, ImportError) as exc:  # the safetensors file is usable all the same
            err.print(f"[yellow]ONNX export skipped[/]: {escape(str(exc))} (the torch backend works)")
        else:
            err.print(f"[green]exported[/] its ONNX graphs to {escape(str(next(iter(files.paths.values())).parent))}")


def weights_import_stylegan2(
    checkpoint: Path = typer.Argument(..., exists=True, dir_okay=False, metavar="FILE", help="A StyleGAN2-512 .pth."),
    out: Path = typer.Option(..., help="MemGAN initialisation file to write (safetensors)."),
    width: float = typer.Option(1.0, help="MemGAN width (channels of a narrower model are sliced)."),
) -> None:
    """Initialise MemGAN's decoder from a clean StyleGAN2-512 generator (as the paper does)."""
    from facerestore_cli.weights import WeightsError, initialise_from_stylegan2

    try:
        path = initialise_from_stylegan2(checkpoint, out, width=width)
    except WeightsError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    err.print(f"[green]wrote[/] {escape(str(path))}")


def weights_verify(
    weights: Path | None = typer.Option(None, help="Also check this weights file or folder (as restore's --weights)."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Re-hash every weights file listed in a manifest, and check the files a restore would use."""
    from facerestore_cli import METHODS
    from facerestore_cli.weights import verify_all

    results = verify_all(weights, methods=tuple(m for m in METHODS if m != "none"))
    if json_out:
        rows = [{**r.__dict__, "path": str(r.path), "ok": r.ok} for r in results]
        typer.echo(json.dumps(rows))
    else:
        table = Table("status", "in use for", "origin", "file")
        for r in results:
            status = "[green]ok[/]" if r.status == "ok" else ("[yellow]unlisted[/]" if r.ok else f"[red]{r.status}[/]")
            table.add_row(status, r.in_use_for or "", r.origin, escape(str(r.path)))
        out.print(table)
        for r in results:
            if r.detail:
                err.print(f"[red]✗[/] {escape(r.detail)}")
    raise typer.Exit(0 if all(r.ok for r in results) else 1)


def doctor_command(json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout.")) -> None:
    """Versions, devices, detectors, embedders and weights: what facerestore can use here, and where it lives."""
    from facerestore_cli.doctor import collect

    info = collect()
    if json_out:
        typer.echo(json.dumps(info, default=str))
        return
    for section, rows in info.items():
        table = Table(title=section, show_header=False, box=None, title_justify="left")
        for key, value in rows.items():
            table.add_row(escape(str(key)), escape(str(value)))
        out.print(table)
