"""The ``facerestore`` command line: thin Typer commands over the library.

``facerestore INPUT...`` is the restore command (``restore`` may be omitted); the other commands are
``build-dict``, ``people``, ``cache``, ``weights``, ``doctor`` and ``train``. Data (the tables of
``people``, ``cache list``, ``weights list``/``verify``, ``doctor``, ``build-dict``, and ``--json``) goes
to stdout, never cut to 80 columns in a pipe; progress and messages go to stderr, and a restore's
summary table only to a terminal. Exit codes: 0
all done, 1 some files failed, 2 usage or set-up error, 128 + the signal when interrupted (130 Ctrl-C,
143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from facerestore_cli import __version__, cli_train
from facerestore_cli.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DETECT_MAX_SIDE,
    DEFAULT_DETECTOR,
    DEFAULT_EMBEDDER,
    DEFAULT_JPEG_QUALITY,
    DEFAULT_MAX_PIXELS,
    DEFAULT_METHOD,
    DEFAULT_MIN_FACE,
)
from facerestore_cli.models import methods as registered_methods

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Restore the faces in photos and whole albums with DMDNet or MemGAN; nothing else in the photo changes.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
weights_app = typer.Typer(help="List, fetch, import and verify model weights.", no_args_is_help=True)
cache_app = typer.Typer(help="List or clear the cache of compiled reference dictionaries.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
app.add_typer(cache_app, name="cache")
app.add_typer(cli_train.app, name="train")

# soft_wrap: messages carry file paths; in a log or a pipe (80 columns) they must stay on one line
err = Console(stderr=True, highlight=False, soft_wrap=True)
#: Data (tables of people, weights, caches, doctor) goes to stdout, so ``> file`` and ``| grep`` see it;
#: a pipe gets wide tables, never cut at 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 1000)

COMMANDS = {"restore", "build-dict", "people", "cache", "weights", "doctor", "train"}
#: --method choices: every registered model (models/registry.py), then ``none``.
METHOD_CHOICES = (*registered_methods(), "none")
Method = enum.Enum("Method", {name: name for name in METHOD_CHOICES}, type=str)
#: The methods that read references (build-dict, people): the first is the default.
REFERENCE_METHODS = tuple(name for name, spec in registered_methods().items() if spec.uses_references)
METHOD_HELP = "; ".join(
    [*(f"{name}: {spec.summary.split(': ', 1)[-1]}" for name, spec in registered_methods().items()),
     "none: detect, align and paste only"]
)  # fmt: skip
EMBEDDER_HELP = (
    "Face embeddings that match faces to --refs/--people: auto (insightface when its model pack is on disk, "
    "else dlib), dlib, or insightface[:pack]."
)


def _fail_setup(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def _engine(options, quiet: bool = False):
    """The :class:`FaceRestorer` for ``options``; any set-up problem is a message and exit 2."""
    from facerestore_cli import FaceRestorer
    from facerestore_cli.device import DeviceError
    from facerestore_cli.face import DetectorUnavailable, EmbedderUnavailable
    from facerestore_cli.references import DictionaryError
    from facerestore_cli.weights import WeightsError

    try:
        return FaceRestorer(options, on_message=(lambda m: None) if quiet else err.print)
    except (ValueError, DeviceError, WeightsError, DictionaryError, DetectorUnavailable, EmbedderUnavailable) as exc:
        _fail_setup(str(exc))
    except KeyboardInterrupt as exc:
        raise typer.Exit(128 + getattr(exc, "signum", signal.SIGINT)) from None


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is: finished photos are complete, nothing partial is left."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


# --------------------------------------------------------------------------------------------------
# restore


@app.command("restore", no_args_is_help=True)
def restore_command(
    inputs: list[str] = typer.Argument(..., help="Photos, folders or glob patterns.", show_default=False),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Folder for the results; mirrors the input tree and keeps names and formats."
    ),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders."),
    method: Method = typer.Option(DEFAULT_METHOD, "--method", "-m", help=METHOD_HELP),
    weights: Path | None = typer.Option(None, help="Weights file (default: the lookup order of `weights list`)."),
    refs: Path | None = typer.Option(None, help="Folder of good photos of the person (DMDNet); compiled once, cached."),
    force_refs: bool = typer.Option(False, help="Use --refs for every face without checking who it is."),
    people: Path | None = typer.Option(None, help="Folder of person folders: each face gets its own person's refs."),
    embedder: str = typer.Option(DEFAULT_EMBEDDER, help=EMBEDDER_HELP),
    people_threshold: float | None = typer.Option(
        None, help="Max face-to-person distance to count as a match \\[default: the embedder's, dlib 0.55]."
    ),
    people_margin: float | None = typer.Option(
        None, help="How much closer the chosen person must be than the next, else generic \\[default: the embedder's]."
    ),
    suffix: str | None = typer.Option(None, help="Text added to output names \\[default: _restored next to inputs]."),
    ext: str | None = typer.Option(None, help="Output format by extension, e.g. png (default: keep the input's)."),
    in_place: bool = typer.Option(False, "--in-place", help="Replace the input files (atomically)."),
    skip_existing: bool = typer.Option(False, help="Skip inputs whose output exists: resumes an interrupted album."),
    quality: int | None = typer.Option(
        None,
        min=1,
        max=100,
        help="Re-encode lossy outputs at this quality. Default: a JPEG keeps its own blocks away from the faces "
        f"(and its own quality where it must be re-encoded); other lossy outputs {DEFAULT_JPEG_QUALITY}.",
    ),
    aligned: bool = typer.Option(False, help="Inputs are already aligned 512x512 face crops."),
    faces: str = typer.Option("all", help="Which faces: all, largest or center."),
    min_face: int = typer.Option(DEFAULT_MIN_FACE, min=0, help="Skip faces smaller than this many pixels."),
    strength: str = typer.Option(
        "auto",
        help="How much of each restored face to use: auto (measure each face and restore only what it needs; "
        "a clean face is left exactly as it was), or 0..1 for every face.",
    ),
    blend: float | None = typer.Option(None, min=0.0, max=1.0, hidden=True, help="Old name of --strength."),
    upscale: int = typer.Option(1, min=1, max=8, help="Enlarge the whole photo (Lanczos); faces at full quality."),
    tone_match: bool = typer.Option(True, help="Match the restored faces' colour and tone to the photo."),
    detector: str = typer.Option(DEFAULT_DETECTOR, help="retinaface (default), hog, cnn or insightface."),
    detect_size: int = typer.Option(
        DEFAULT_DETECT_MAX_SIDE, min=64, help="Detect on a copy at most this many pixels on its long side."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    half: bool | None = typer.Option(None, "--half/--no-half", help="fp16 (default: on for CUDA only)."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads for the models."),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, min=1, help="Faces per model call."),
    save_faces: bool = typer.Option(False, help="Also write each aligned crop and restored face."),
    compare: bool = typer.Option(False, help="Also write a before/after side-by-side."),
    report: Path | None = typer.Option(None, help="Write one JSON line per image to this file."),
    review: Path | None = typer.Option(
        None, help="Write a self-contained HTML page to look at the album: every photo, each face before/after."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary on stdout."),
    max_pixels: int = typer.Option(
        DEFAULT_MAX_PIXELS, min=1, help="Refuse photos larger than this (decompression bombs)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary table."),
) -> None:
    """Restore the faces of photos, folders or globs."""
    from facerestore_cli import RestoreOptions
    from facerestore_cli.album import OutputPlan, check_side_file, discover_inputs
    from facerestore_cli.report import ReportWriter

    options = RestoreOptions.from_flat(
        method=Method(method).value, weights=weights, device=device, half=half, threads=threads, batch_size=batch_size,
        detector=detector, detect_max_side=detect_size, faces=faces, min_face=min_face,
        strength=_strength(strength, blend),
        upscale=upscale, aligned=aligned, refs=refs, force_refs=force_refs, people=people, embedder=embedder,
        people_threshold=people_threshold, people_margin=people_margin,
        tone_match=tone_match, save_faces=save_faces, compare=compare, quality=quality, max_pixels=max_pixels,
        skip_existing=skip_existing,
    )  # fmt: skip
    if in_place and skip_existing:
        _fail_setup("--skip-existing cannot be combined with --in-place (every output exists: it is the input)")
    try:
        options.check()
        plan = OutputPlan(out_dir=output, suffix=suffix, ext=ext, in_place=in_place)
    except ValueError as exc:
        _fail_setup(str(exc))
    found = discover_inputs(inputs, recursive=recursive, exclude=output)
    found.items, earlier = plan.drop_previous_outputs(found.items)
    if earlier and not quiet:
        err.print(f"[dim]left out {len(earlier)} earlier result(s) of this command, e.g. {escape(earlier[0].name)}[/]")
    if not found.items:
        for p in found.problems:
            err.print(f"[red]{escape(p.message)}[/]")
        folders = not recursive and any(Path(spec).is_dir() for spec in inputs)
        hint = " (add -r to look in sub-folders)" if folders else ""
        _fail_setup(f"no photos to restore{hint}")
    writer = None
    for side, option in ((report, "--report"), (review, "--review")):
        if side is not None:
            try:
                check_side_file(side, found.items, option)
            except ValueError as exc:
                _fail_setup(str(exc))
    if report:
        try:
            writer = ReportWriter(report)
        except OSError as exc:
            _fail_setup(f"--report {report}: cannot write it ({exc.strerror or exc})")
    try:
        summary = _restore_album(options, found, plan, writer, quiet, review)
    finally:
        if writer:
            writer.close()
    if not quiet and err.is_terminal:  # a script's log gets the failures (printed as they happen), not a table
        _print_summary(summary)
    elif not quiet and summary.interrupted:
        err.print("interrupted: finished files are complete, nothing partial was written")
    if json_out:
        typer.echo(json.dumps(summary.to_json()))
    raise typer.Exit(summary.exit_code)


def _strength(text: str, blend: float | None) -> float | None:
    """``--strength auto|0..1`` (``--blend X``, its 0.1 name, wins when given): None means auto."""
    if blend is not None:
        return blend
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        _fail_setup(f"--strength {text}: expected auto or a number between 0 and 1")


def _restore_album(options, found, plan, writer, quiet: bool, review: Path | None = None):
    from facerestore_cli import AlbumRunner, ImageReport, Summary
    from facerestore_cli.review import ReviewPage

    page = ReviewPage(review) if review is not None else None
    runner = AlbumRunner(_engine(options, quiet), review=page)
    summary = Summary(restorer=runner.engine.restorer.info.to_json())
    for p in found.problems:  # inputs that could not even be listed are failures of this run too
        r = ImageReport(input=p.spec, status="failed", reason=p.reason, error=p.message)
        summary.add(r)
        runner._review_plain(r)
        if writer:
            writer.write(r)
        if not quiet:
            err.print(f"[red]failed[/] {escape(p.message)}")

    if not quiet and err.is_terminal:
        return _run_with_progress(runner, found.items, plan, writer, summary)
    return runner.run(found.items, plan, report=writer, summary=summary, on_image=None if quiet else _print_failure)


def _print_failure(r) -> None:
    if not r.ok:
        err.print(f"[red]failed[/] {escape(r.error or r.input)}")


def _run_with_progress(runner, items, plan, writer, summary):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[faces]} faces"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task("restoring", total=len(items), faces=0)

        def on_image(r) -> None:
            progress.update(task, advance=1, faces=summary.faces_restored)
            if not r.ok:
                progress.console.print(f"[red]failed[/] {escape(r.error or r.input)}")

        return runner.run(items, plan, report=writer, on_image=on_image, summary=summary)


def _print_summary(summary) -> None:
    table = Table(title="facerestore", show_header=False, box=None)
    table.add_row("photos", str(summary.images))
    table.add_row("restored", str(summary.restored))
    table.add_row("no face (written unchanged)", str(summary.no_faces))
    if summary.unchanged:
        table.add_row("faces needed nothing (written unchanged)", str(summary.unchanged))
    if summary.skipped_existing:
        table.add_row("skipped (output exists)", str(summary.skipped_existing))
    table.add_row("failed", f"[red]{summary.failed}[/]" if summary.failed else "0")
    table.add_row("faces restored / found", f"{summary.faces_restored} / {summary.faces_found}")
    table.add_row("time", f"{summary.seconds:.1f} s")
    err.print(table)
    for f in summary.failures[:20]:
        err.print(f"  [red]✗[/] {escape(str(f['error'] or f['input']))}")
    if len(summary.failures) > 20:
        err.print(f"  ... and {len(summary.failures) - 20} more (see --report)")
    if summary.interrupted:
        err.print("[yellow]interrupted: finished files are complete, nothing partial was written[/]")


# --------------------------------------------------------------------------------------------------
# references


@app.command("build-dict", no_args_is_help=True)
def build_dict_command(
    folders: list[Path] = typer.Argument(..., help="A person's reference folder, or a people folder of them."),
    weights: Path | None = typer.Option(None, help="DMDNet weights the dictionary is for."),
    force: bool = typer.Option(False, help="Rebuild even when the cache is up to date."),
    detector: str = typer.Option(DEFAULT_DETECTOR, help="The detector that finds the faces in the references."),
    embedder: str = typer.Option(DEFAULT_EMBEDDER, help=EMBEDDER_HELP),
    device: str = typer.Option("auto"),
    threads: int | None = typer.Option(None, min=1),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Compile reference photos into cached DMDNet dictionaries (one per person)."""
    from facerestore_cli import RestoreOptions
    from facerestore_cli.face import EmbedderUnavailable
    from facerestore_cli.references import DictionaryCache, DictionaryError, person_folders, reference_files

    engine = _engine(
        RestoreOptions.from_flat(
            method=REFERENCE_METHODS[0],
            weights=weights,
            detector=detector,
            embedder=embedder,
            device=device,
            threads=threads,
        )
    )
    try:
        _ = engine.embedder  # an embedder that cannot run here is a set-up error, not every person's
    except EmbedderUnavailable as exc:
        _fail_setup(str(exc))
    try:
        DictionaryCache().check_writable()
    except DictionaryError as exc:
        _fail_setup(str(exc))
    targets: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            _fail_setup(f"{folder} is not a folder")
        if reference_files(folder):
            targets.append(folder)
            continue
        try:
            targets.extend(person_folders(folder))
        except DictionaryError:
            _fail_setup(
                f"{folder}: no reference photos in it, and no person folders either (a person's folder holds "
                f"their photos; a people folder holds one folder per person, e.g. {folder / 'alice'})"
            )
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


@app.command("people", no_args_is_help=True)
def people_command(
    folder: Path = typer.Argument(..., help="Folder of person folders."),
    weights: Path | None = typer.Option(None),
    detector: str = typer.Option(DEFAULT_DETECTOR, help="The detector the dictionaries were compiled with."),
    embedder: str = typer.Option("auto", help="The face embedder the dictionaries were compiled with (see restore)."),
    json_out: bool = typer.Option(False, "--json"),
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
        folders = person_folders(folder)
    except (WeightsError, DictionaryError, ValueError) as exc:
        _fail_setup(str(exc))
    cache = DictionaryCache()
    rows = []
    for person in folders:
        files = reference_files(person)
        key = dictionary_key(files, sha, dictionary_settings(detector, embedder_name)) if files else None
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


@cache_app.command("list")
def cache_list(json_out: bool = typer.Option(False, "--json")) -> None:
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


@cache_app.command("clear")
def cache_clear(
    folder: Path | None = typer.Argument(None, help="Only the dictionaries compiled from this folder."),
) -> None:
    """Delete cached dictionaries (all, or one person's)."""
    from facerestore_cli.references import DictionaryCache

    n = DictionaryCache().clear(folder)
    err.print(f"removed {n} cached dictionar{'y' if n == 1 else 'ies'}")


# --------------------------------------------------------------------------------------------------
# weights


@weights_app.command("list")
def weights_list(json_out: bool = typer.Option(False, "--json")) -> None:
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


@weights_app.command("fetch")
def weights_fetch(
    method: str = typer.Argument(DEFAULT_METHOD, help="The method whose official checkpoint to fetch."),
    url: str | None = typer.Option(None, help="Download from a mirror instead of the official release."),
    timeout: float = typer.Option(30.0),
    retries: int = typer.Option(5),
) -> None:
    """Download an official checkpoint (resumable, verified) and import it."""
    from facerestore_cli.weights import WeightsError, fetch

    try:
        result = fetch(method, url=url, timeout=timeout, retries=retries, progress=err.is_terminal)
    except WeightsError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    err.print(f"[green]imported[/] {escape(str(result.path))} (sha256 {result.sha256[:12]}…)")


@weights_app.command("import")
def weights_import(
    checkpoint: Path = typer.Argument(..., exists=True, dir_okay=False),
    method: str = typer.Option(DEFAULT_METHOD, help="The method the checkpoint is for."),
    dest: Path | None = typer.Option(None, help="Folder to write into (default: the user weights folder)."),
) -> None:
    """Import an official checkpoint (.pth, loaded with weights_only=True) as safetensors."""
    from facerestore_cli.weights import WeightsError, import_checkpoint

    try:
        result = import_checkpoint(checkpoint, method, dest)
    except WeightsError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    err.print(
        f"[green]imported[/] {escape(str(result.path))} ({result.tensor_count} tensors, sha256 {result.sha256[:12]}…)"
    )


@weights_app.command("import-stylegan2")
def weights_import_stylegan2(
    checkpoint: Path = typer.Argument(..., exists=True, dir_okay=False),
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


@weights_app.command("verify")
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


# --------------------------------------------------------------------------------------------------
# doctor


@app.command("doctor")
def doctor_command(json_out: bool = typer.Option(False, "--json")) -> None:
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


# --------------------------------------------------------------------------------------------------


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        typer.echo(f"facerestore {__version__}")
        raise typer.Exit()


def _with_default_command(argv: list[str]) -> list[str]:
    """``facerestore photo.jpg ...`` means ``facerestore restore photo.jpg ...``."""
    if not argv:
        return argv
    first = argv[0]
    if first in COMMANDS or first in ("--help", "-h", "--version"):
        return argv
    return ["restore", *argv]


def main(argv: list[str] | None = None) -> None:
    # Let PyTorch's CPU allocator use transparent huge pages: a 512 face allocates hundreds of MB of
    # activations, and with 4 kB pages each forward page-faults ~100k times (measured: ~5k with THP).
    # It must be set before torch is imported, which the commands do lazily.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    # a service manager's stop (SIGTERM) or a closed terminal (SIGHUP) must not leave less than Ctrl-C does
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread, or no such signal here
            signal.signal(sig, _interrupt)
    args = _with_default_command(list(sys.argv[1:] if argv is None else argv))
    app(args=args, prog_name="facerestore")
