"""``facerestore build-dict``, ``people`` and ``cache``: thin commands over :mod:`facerestore_cli.references`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from facerestore_cli.cli_common import (
    ALLOW_GROUPS_HELP,
    EMBEDDER_HELP,
    REFERENCE_METHODS,
    engine_for,
    err,
    fail_setup,
    out,
)
from facerestore_cli.defaults import DEFAULT_DETECTOR, DEFAULT_EMBEDDER


def build_dict_command(
    folders: list[Path] = typer.Argument(..., metavar="FOLDER", help="A person's photos, or a people folder."),
    weights: Path | None = typer.Option(None, help="DMDNet weights the dictionary is for."),
    force: bool = typer.Option(False, help="Rebuild even when the cache is up to date."),
    detector: str = typer.Option(DEFAULT_DETECTOR, help="The detector that finds the faces in the references."),
    embedder: str = typer.Option(DEFAULT_EMBEDDER, help=EMBEDDER_HELP),
    allow_groups: bool = typer.Option(False, "--allow-groups", help=ALLOW_GROUPS_HELP),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps."),
    threads: int | None = typer.Option(None, min=1, metavar="N", help="CPU threads for the models."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
    backend: str = typer.Option(
        "auto", metavar="auto|torch|onnxruntime",
        help="What encodes the references: onnxruntime, torch, or auto (onnxruntime where the ONNX files are).",
    ),
) -> None:
    """Compile reference photos into cached DMDNet dictionaries (one per person)."""
    from facerestore_cli import RestoreOptions
    from facerestore_cli.face import EmbedderUnavailable
    from facerestore_cli.references import DictionaryCache, DictionaryError, folders_to_compile

    engine = engine_for(
        RestoreOptions.from_flat(
            method=REFERENCE_METHODS[0],
            weights=weights,
            detector=detector,
            embedder=embedder,
            device=device,
            threads=threads,
            allow_groups=allow_groups,
            backend=backend,
        )
    )
    try:
        _ = engine.embedder  # an embedder that cannot run here is a set-up error, not every person's
    except EmbedderUnavailable as exc:
        fail_setup(str(exc))
    try:
        DictionaryCache().check_writable()
    except DictionaryError as exc:
        fail_setup(str(exc))
    targets: list[Path] = []
    for folder in folders:
        try:
            targets.extend(folders_to_compile(folder, on_warning=lambda m: err.print(f"[yellow]{escape(m)}[/]")))
        except DictionaryError as exc:
            fail_setup(str(exc))
    results, failed = [], 0
    for folder in targets:
        try:
            compiled = engine.compile_person(folder, force=force)
        except DictionaryError as exc:
            failed += 1
            err.print(f"[red]✗ {escape(folder.name)}[/]: {escape(str(exc))}")
            results.append({"folder": str(folder), "error": str(exc)})
            continue
        results.append(
            {
                "person": compiled.name, "folder": str(folder), "cache": str(compiled.path),
                "embedder": compiled.embedder, "from_cache": compiled.from_cache, "used": compiled.used,
                "seconds": round(compiled.seconds, 3),
                "references": [r.__dict__ for r in compiled.references],
            }
        )  # fmt: skip
        if not json_out:
            _print_compiled(compiled)
    if json_out:
        typer.echo(json.dumps(results))
    raise typer.Exit(1 if failed else 0)


def _print_compiled(compiled) -> None:
    state = "[green]cached, unchanged[/]" if compiled.from_cache else "[green]compiled[/]"
    out.print(
        f"[bold]{escape(compiled.name)}[/]: {state}, {compiled.used} of {len(compiled.references)} photos used, "
        f"embedder {escape(str(compiled.embedder))}, {compiled.seconds:.2f} s → {escape(str(compiled.path))}"
    )
    for r in compiled.references:
        mark = "[green]✓[/]" if r.used else "[red]✗[/]"
        why = "" if r.used else f"  [dim]{escape(r.reason or '')}[/]"
        out.print(f"  {mark} {escape(Path(r.path).name)}{why}")


def people_command(
    folder: Path = typer.Argument(..., metavar="FOLDER", help="Folder of person folders."),
    weights: Path | None = typer.Option(None, metavar="FILE", help="The DMDNet weights the dictionaries are for."),
    detector: str = typer.Option(DEFAULT_DETECTOR, help="The detector the dictionaries were compiled with."),
    embedder: str = typer.Option("auto", help="The face embedder the dictionaries were compiled with (see restore)."),
    allow_groups: bool = typer.Option(False, "--allow-groups", help="They were compiled with --allow-groups."),
    json_out: bool = typer.Option(False, "--json", help="Print the people as JSON on stdout."),
) -> None:
    """List the people of a people folder, their reference counts and whether they are compiled."""
    from facerestore_cli.face import resolve_embedder
    from facerestore_cli.references import (
        DictionaryCache,
        DictionaryError,
        dictionary_key,
        dictionary_settings,
        person_folders,
        reference_files,
    )
    from facerestore_cli.weights import WeightsError, file_sha256, locate_weights

    try:
        embedder_name = resolve_embedder(embedder)  # a name only: nothing is loaded
        sha = file_sha256(locate_weights(REFERENCE_METHODS[0], weights).path)
        folders = person_folders(folder, on_warning=lambda m: err.print(f"[yellow]{escape(m)}[/]"))
    except (WeightsError, DictionaryError, ValueError) as exc:
        fail_setup(str(exc))
    cache = DictionaryCache()
    rows = []
    for person in folders:
        files = reference_files(person)
        settings = dictionary_settings(detector, embedder_name, allow_groups)
        key = dictionary_key(files, sha, settings) if files else None
        meta = cache.peek(key) if key else None
        used = int(meta.get("used", 0)) if meta else None
        rows.append({"person": person.name, "photos": len(files), "cached": meta is not None, "used": used})
    if json_out:
        typer.echo(json.dumps(rows))
        return
    table = Table("person", "photos", "dictionary", title=f"embedder: {escape(embedder_name)}")
    for r in rows:
        state = f"[green]cached[/] ({r['used']} used)" if r["cached"] else "[yellow]not compiled[/] (build-dict)"
        table.add_row(escape(r["person"]), str(r["photos"]), state)
    out.print(table)


def cache_list(json_out: bool = typer.Option(False, "--json", help="Print the entries as JSON on stdout.")) -> None:
    """Show the compiled dictionaries in the cache."""
    from facerestore_cli.references import DictionaryCache

    cache = DictionaryCache()
    entries = cache.entries()
    if json_out:
        typer.echo(json.dumps(entries))
        return
    table = Table("person", "refs", "size", "created", "folder", title=f"cache: {cache.root}")
    for e in entries:
        table.add_row(
            escape(str(e["person"])), str(e["references"]), f"{e['bytes'] / 1e6:.1f} MB", str(e["created"]),
            escape(str(e["folder"])),
        )  # fmt: skip
    out.print(table)


def cache_clear(
    folder: Path | None = typer.Argument(None, metavar="FOLDER", help="Only the dictionaries made from this folder."),
) -> None:
    """Delete cached dictionaries (all, or one person's)."""
    from facerestore_cli.references import DictionaryCache

    n = DictionaryCache().clear(folder)
    err.print(f"removed {n} cached dictionar{'y' if n == 1 else 'ies'}")
