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
import copy
import enum
import json
import os
import signal
import sys
import threading
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from facerestore_cli import __version__, cli_refs, cli_train, cli_weights
from facerestore_cli.cli_common import (
    ALLOW_GROUPS_HELP,
    EMBEDDER_HELP,
    engine_for,
    err,
    fail_setup,
)
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


def _plain_help_types() -> None:
    """No type labels (``<list[str]>``, ``<bool>``) in help: at 80 columns they take the help text's room and
    say less than a metavar (``DIR``, ``N``). Typer has no setting for it, so its display hooks go: those
    of 0.29 (``display_type_rich``) or of 0.28 (``make_metavar`` and the argument's type metavar)."""
    from typer import core

    def plain(label: str) -> str:  # "<int range>" -> INT RANGE, "<str>" -> TEXT; choices stay as they are
        label = label.strip("<>")
        return label if "|" in label else {"str": "TEXT", "directory": "DIR"}.get(label, label).upper()

    if hasattr(core.TyperArgument, "display_type_rich"):  # typer 0.29

        def option_type(self, ctx) -> str | None:  # a flag: nothing; else its metavar, or its type's name
            return None if self.is_flag or self.count else plain(self.metavar or self.display_type(ctx))

        core.TyperOption.display_type_rich = option_type
        core.TyperArgument.display_type_rich = lambda self, ctx: None
        return
    # typer 0.28 labels an option by make_metavar and an argument by its type's metavar, else "<type name>"
    option_metavar, argument_init = core.TyperOption.make_metavar, core.TyperArgument.__init__

    def make_metavar(self, ctx) -> str:
        return self.metavar or plain(option_metavar(self, ctx))

    def untyped_init(self, *args, **kwargs) -> None:  # an empty metavar hides the argument's type
        argument_init(self, *args, **kwargs)
        self.type = copy.copy(self.type)
        self.type.get_metavar = lambda *a, **k: ""

    argument_metavar = core.TyperArgument.make_metavar

    def usage_metavar(self, ctx, *, usage: bool = False) -> str:  # PHOTO... as 0.29 writes it
        var = argument_metavar(self, ctx, usage=usage)
        return var + "..." if usage and self.metavar is not None and self.nargs != 1 else var

    core.TyperOption.make_metavar = make_metavar
    core.TyperArgument.__init__ = untyped_init
    core.TyperArgument.make_metavar = usage_metavar


_plain_help_types()

app = typer.Typer(
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Restore the faces in photos and whole albums with DMDNet or MemGAN; nothing else in the photo changes."
    "\n\n[bold]facerestore PHOTO... [OPTIONS][/] is [bold]facerestore restore PHOTO... [OPTIONS][/]: "
    "e.g. facerestore photo.jpg, or facerestore ./album/ -r -o ./restored/ (see facerestore restore --help). "
    "An album folder named like a command: facerestore ./cache",
    context_settings={"help_option_names": ["-h", "--help"]},
)
weights_app = typer.Typer(help="List, fetch, import and verify model weights.", no_args_is_help=True)
cache_app = typer.Typer(help="List or clear the cache of compiled reference dictionaries.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
app.add_typer(cache_app, name="cache")
app.add_typer(cli_train.app, name="train")


COMMANDS = {"restore", "build-dict", "people", "cache", "weights", "doctor", "train"}
#: --method choices: every registered model (models/registry.py), then ``none``.
METHOD_CHOICES = (*registered_methods(), "none")
Method = enum.Enum("Method", {name: name for name in METHOD_CHOICES}, type=str)
METHOD_HELP = "; ".join(
    [*(f"{name}: {spec.summary.split(': ', 1)[-1]}" for name, spec in registered_methods().items()),
     "none: detect, align and paste only"]
)  # fmt: skip
QUALITY_HELP = (
    "Re-encode lossy outputs at this quality. Default: a JPEG keeps its own blocks away from the faces (and its own "
    f"quality where it must be re-encoded); other lossy outputs {DEFAULT_JPEG_QUALITY}."
)
STRENGTH_HELP = (
    "How much of each restored face to use: auto (measure each face and restore only what it needs; a clean face "
    "is left exactly as it was), or 0..1 for every face."
)
THRESHOLD_HELP = "Max face-to-person distance to count as a match \\[default: the embedder's, dlib 0.55]."
MARGIN_HELP = "How much closer the chosen person must be than the next, else generic \\[default: the embedder's]."






class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is: finished photos are complete, nothing partial is left."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


# --------------------------------------------------------------------------------------------------
# restore


#: The restore command's help panels (``rich_help_panel``), in the order --help shows them.
INPUT, OUTPUT, FACES, REFERENCES, SPEED = "Input", "Output", "Faces", "References", "Speed"


@app.command("restore")
def restore_command(
    inputs: list[str] | None = typer.Argument(None, metavar="PHOTO", help="Photos, folders or glob patterns."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders.", rich_help_panel=INPUT),
    aligned: bool = typer.Option(False, "--aligned", help="Inputs are 512x512 face crops.", rich_help_panel=INPUT),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, min=1, metavar="N", rich_help_panel=INPUT,
                                   help="Refuse photos (and --upscale results) larger than this (bombs)."),
    output: Path | None = typer.Option(None, "--output", "-o", metavar="DIR", rich_help_panel=OUTPUT,
                                       help="Folder for the results; mirrors the input tree, keeps names and formats."),
    suffix: str | None = typer.Option(None, metavar="TEXT", rich_help_panel=OUTPUT,
                                      help="Text added to output names \\[default: _restored next to inputs]."),
    ext: str | None = typer.Option(None, metavar="EXT", rich_help_panel=OUTPUT,
                                   help="Output format by extension, e.g. png (default: keep the input's)."),
    in_place: bool = typer.Option(False, "--in-place", help="Replace the inputs (atomically).", rich_help_panel=OUTPUT),
    skip_existing: bool = typer.Option(False, "--skip-existing", rich_help_panel=OUTPUT,
                                       help="Skip inputs whose output exists (resume an album; --report keeps lines)."),
    quality: int | None = typer.Option(None, min=1, max=100, metavar="N", rich_help_panel=OUTPUT, help=QUALITY_HELP),
    save_faces: bool = typer.Option(False, "--save-faces", help="Also write face crops.", rich_help_panel=OUTPUT),
    compare: bool = typer.Option(False, "--compare", help="Also write a before/after image.", rich_help_panel=OUTPUT),
    report: Path | None = typer.Option(None, metavar="FILE", help="One JSON line per image.", rich_help_panel=OUTPUT),
    review: Path | None = typer.Option(None, metavar="FILE", rich_help_panel=OUTPUT,
                                       help="Write an HTML page of the album: every photo, each face before/after."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout.", rich_help_panel=OUTPUT),
    method: Method = typer.Option(DEFAULT_METHOD, "--method", "-m", metavar="METHOD", help=METHOD_HELP,
                                  rich_help_panel=FACES),
    weights: Path | None = typer.Option(None, metavar="FILE", rich_help_panel=FACES,
                                        help="Weights file (default: the lookup order of `weights list`)."),
    faces: str = typer.Option("all", metavar="WHICH", help="all, largest or center.", rich_help_panel=FACES),
    min_face: int = typer.Option(DEFAULT_MIN_FACE, min=0, metavar="PX", rich_help_panel=FACES,
                                 help="Skip faces smaller than this many pixels."),
    strength: str = typer.Option("auto", metavar="auto|0..1", help=STRENGTH_HELP, rich_help_panel=FACES),
    blend: float | None = typer.Option(None, min=0.0, max=1.0, hidden=True, help="Old name of --strength."),
    upscale: int = typer.Option(1, min=1, max=8, metavar="N", rich_help_panel=FACES,
                                help="Enlarge the whole photo (Lanczos); faces at full quality."),
    tone_match: bool = typer.Option(True, help="Match the faces' colour and tone to the photo.", rich_help_panel=FACES),
    detector: str = typer.Option(DEFAULT_DETECTOR, metavar="NAME", rich_help_panel=FACES,
                                 help="retinaface (default), hog, cnn or insightface."),
    detect_size: int = typer.Option(DEFAULT_DETECT_MAX_SIDE, min=64, metavar="PX", rich_help_panel=FACES,
                                    help="Detect on a copy at most this many pixels on its long side."),
    refs: Path | None = typer.Option(None, metavar="DIR", rich_help_panel=REFERENCES,
                                     help="Folder of good photos of the person (DMDNet); compiled once, cached."),
    force_refs: bool = typer.Option(False, "--force-refs", rich_help_panel=REFERENCES,
                                    help="Use --refs for every face without checking who it is."),
    people: Path | None = typer.Option(None, metavar="DIR", rich_help_panel=REFERENCES,
                                       help="Folder of person folders: each face gets its own person's refs."),
    embedder: str = typer.Option(DEFAULT_EMBEDDER, metavar="NAME", help=EMBEDDER_HELP, rich_help_panel=REFERENCES),
    people_threshold: float | None = typer.Option(None, metavar="X", help=THRESHOLD_HELP, rich_help_panel=REFERENCES),
    people_margin: float | None = typer.Option(None, metavar="X", help=MARGIN_HELP, rich_help_panel=REFERENCES),
    allow_groups: bool = typer.Option(False, "--allow-groups", help=ALLOW_GROUPS_HELP, rich_help_panel=REFERENCES),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=SPEED),
    half: bool | None = typer.Option(None, "--half/--no-half", help="fp16 (default: on CUDA).", rich_help_panel=SPEED),
    threads: int | None = typer.Option(None, min=1, metavar="N", help="CPU threads.", rich_help_panel=SPEED),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, min=1, metavar="N", help="Faces per model call.",
                                   rich_help_panel=SPEED),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress or summary table.", rich_help_panel=OUTPUT
    ),
    engine: str = typer.Option(
        "local", metavar="local|ray", rich_help_panel="Cluster",
        help="Where the photos are restored: local (this process) or ray (a Ray actor pool; the same outputs).",
    ),
    ray_address: str | None = typer.Option(
        None, metavar="ADDRESS", rich_help_panel="Cluster",
        help="The Ray cluster to join: auto (the running one) or ray://host:port \\[default: start a local one].",
    ),
    workers: int | None = typer.Option(
        None, min=1, metavar="N", rich_help_panel="Cluster",
        help="Ray actors restoring photos, each loading the models once \\[default: as many as the CPUs/GPUs fit].",
    ),
    gpus_per_worker: float = typer.Option(
        0.0, min=0.0, metavar="F", rich_help_panel="Cluster", help="GPUs each Ray worker takes (e.g. 1, or 0.5).",
    ),
    cpus_per_worker: float = typer.Option(
        1.0, min=0.01, metavar="F", rich_help_panel="Cluster",
        help="CPUs each Ray worker takes; its 2 photos at a time share them as torch threads (unless --threads).",
    ),
    backend: str = typer.Option(
        "auto", metavar="auto|torch|onnxruntime", rich_help_panel="Speed",
        help="What runs the restorer: onnxruntime (CPU, CUDA, TensorRT; faster, and no torch at start-up), torch, "
        "or auto (onnxruntime where the model's ONNX files are shipped or can be exported).",
    ),
) -> None:
    """Restore the faces of photos, folders or globs."""
    from facerestore_cli import ClusterOptions, RestoreOptions
    from facerestore_cli.album import OutputPlan, check_output_folder, check_side_file, discover_inputs
    from facerestore_cli.report import ReportWriter

    if not inputs:
        fail_setup("nothing to restore: give photos, folders or glob patterns, e.g. facerestore photo.jpg or "
                    "facerestore ./album/ -r -o ./restored/ (facerestore restore --help lists the options)")
    options = RestoreOptions.from_flat(
        method=Method(method).value, weights=weights, device=device, half=half, threads=threads, batch_size=batch_size,
        backend=backend, detector=detector, detect_max_side=detect_size, faces=faces, min_face=min_face,
        strength=_strength(strength, blend),
        upscale=upscale, aligned=aligned, refs=refs, force_refs=force_refs, people=people, embedder=embedder,
        people_threshold=people_threshold, people_margin=people_margin, allow_groups=allow_groups,
        tone_match=tone_match, save_faces=save_faces, compare=compare, quality=quality, max_pixels=max_pixels,
        skip_existing=skip_existing,
    )  # fmt: skip
    if in_place and skip_existing:
        fail_setup("--skip-existing cannot be combined with --in-place (every output exists: it is the input)")
    try:
        options.check()
        plan = OutputPlan(out_dir=output, suffix=suffix, ext=ext, in_place=in_place)
        if output is not None:
            check_output_folder(output)  # before any work, not after the first photo was restored
        cluster = ClusterOptions(engine=engine, address=ray_address, workers=workers,
                                 gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker)  # fmt: skip
        cluster.check()
        if cluster.engine == "ray" and review is not None:
            raise ValueError("--review is not available with --engine ray (the page needs every photo on the driver)")
    except ValueError as exc:
        fail_setup(str(exc))
    found = discover_inputs(inputs, recursive=recursive, exclude=output)
    found.items, earlier = plan.drop_previous_outputs(found.items)
    if earlier and not quiet:
        err.print(f"[dim]left out {len(earlier)} earlier result(s) of this command, e.g. {escape(earlier[0].name)}[/]")
    if not found.items:
        for p in found.problems:
            err.print(f"[red]{escape(p.message)}[/]")
        folders = not recursive and any(Path(spec).is_dir() for spec in inputs)
        hint = " (add -r to look in sub-folders)" if folders else ""
        fail_setup(f"no photos to restore{hint}")
    writer = None
    for side, option in ((report, "--report"), (review, "--review")):
        if side is not None:
            try:
                check_side_file(side, found.items, option)
            except ValueError as exc:
                fail_setup(str(exc))
    if report:
        try:
            # --skip-existing: a resumed album keeps the lines of the photos done before
            say = None if quiet else lambda m: err.print(f"[red]failed[/] {escape(m)}")
            writer = ReportWriter(report, keep_earlier=skip_existing, on_error=say)
        except OSError as exc:
            fail_setup(f"--report {report}: cannot write it ({exc.strerror or exc})")
    try:
        summary = _restore_album(options, found, plan, writer, quiet, review, cluster)
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
        fail_setup(f"--strength {text}: expected auto or a number between 0 and 1")


def _restore_album(options, found, plan, writer, quiet: bool, review: Path | None = None, cluster=None):
    from facerestore_cli import AlbumRunner, ClusterError, ClusterSummary, RayAlbumRunner, Summary
    from facerestore_cli.review import ReviewPage

    if cluster is not None and cluster.engine == "ray":  # the driver plans, compiles references, reports
        engine = engine_for(RayAlbumRunner.driver_options(options, cluster), quiet)
        runner = RayAlbumRunner(engine, cluster)
        summary = ClusterSummary(restorer=engine.restorer.info.to_json())
        try:
            return _run_album(runner, found, plan, writer, quiet, summary)
        except ClusterError as exc:
            fail_setup(str(exc))
    page = ReviewPage(review) if review is not None else None
    runner = AlbumRunner(engine_for(options, quiet), review=page)
    summary = Summary(restorer=runner.engine.restorer.info.to_json())
    return _run_album(runner, found, plan, writer, quiet, summary)


def _run_album(runner, found, plan, writer, quiet: bool, summary):
    from facerestore_cli import ImageReport

    for p in found.problems:  # inputs that could not even be listed (or were left out) are not done either
        r = ImageReport(input=p.spec, status=p.status, reason=p.reason, error=p.message)
        summary.add(r)
        runner._review_plain(r)
        if writer:
            writer.write(r)
        if not quiet:
            label = "[yellow]skipped[/]" if p.status == "skipped" else "[red]failed[/]"
            err.print(f"{label} {escape(p.message)}")

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
    if summary.skipped:
        table.add_row("skipped (see the reasons below)", f"[yellow]{summary.skipped}[/]")
    table.add_row("failed", f"[red]{summary.failed}[/]" if summary.failed else "0")
    if summary.report_errors:
        table.add_row("report lines not written", f"[red]{summary.report_errors}[/]")
    table.add_row("faces restored / found", f"{summary.faces_restored} / {summary.faces_found}")
    table.add_row("time", f"{summary.seconds:.1f} s")
    err.print(table)
    for f in summary.failures[:20]:
        err.print(f"  [red]✗[/] {escape(str(f['error'] or f['input']))}")
    if len(summary.failures) > 20:
        err.print(f"  ... and {len(summary.failures) - 20} more (see --report)")
    if summary.interrupted:
        err.print("[yellow]interrupted: finished files are complete, nothing partial was written[/]")



# the other commands live in their own modules; registered here so that --help lists them in this order
app.command("build-dict", no_args_is_help=True)(cli_refs.build_dict_command)
app.command("people", no_args_is_help=True)(cli_refs.people_command)
cache_app.command("list")(cli_refs.cache_list)
cache_app.command("clear")(cli_refs.cache_clear)
weights_app.command("list")(cli_weights.weights_list)
weights_app.command("fetch")(cli_weights.weights_fetch)
weights_app.command("import")(cli_weights.weights_import)
weights_app.command("import-stylegan2")(cli_weights.weights_import_stylegan2)
weights_app.command("verify")(cli_weights.weights_verify)
app.command("doctor")(cli_weights.doctor_command)


# --------------------------------------------------------------------------------------------------


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        typer.echo(f"facerestore {__version__}")
        raise typer.Exit()


#: Commands whose name is also a likely album folder name.
FOLDER_LIKE_COMMANDS = ("cache", "people", "train")


def _album_named_like_a_command(argv: list[str]) -> bool:
    """Whether ``facerestore cache ...`` means the album folder ``./cache`` (``album.names_an_album``)."""
    from facerestore_cli.album import names_an_album

    command = typer.main.get_command(app).commands[argv[0]]
    own = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
    verdict = names_an_album(argv[0], argv[1:], own, getattr(command, "commands", None))
    if verdict is None:
        err.print(f"[yellow]note:[/] {argv[0]} is a command; to restore a folder named {argv[0]}, write ./{argv[0]}")
    return bool(verdict)


def _with_default_command(argv: list[str]) -> list[str]:
    """``facerestore photo.jpg ...`` means ``facerestore restore photo.jpg ...``."""
    if not argv:
        return argv
    first = argv[0]
    if first in FOLDER_LIKE_COMMANDS and _album_named_like_a_command(argv):
        return ["restore", *argv]
    if first in COMMANDS or first in ("--help", "-h", "--version", "--install-completion", "--show-completion"):
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


def console() -> None:
    """The ``facerestore`` command (and ``python -m facerestore_cli``): :func:`main`, then a quick exit.

    Once every file is written and closed, tearing the interpreter down (freeing the models' sessions
    and arrays, module by module) is a tenth of a second of a one-photo call, which scripts that call us
    per photo pay every time. So the process ends with ``os._exit`` after flushing its output, unless
    something that needs a clean exit is running: another Python thread, Ray, or torch.
    """
    try:
        main()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str) or threading.active_count() > 1 or not {"ray", "torch"}.isdisjoint(sys.modules):
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken pipe: let the interpreter report it as it would
        sys.exit(code)
    if "logging" in sys.modules:
        import logging

        logging.shutdown()
    os._exit(code or 0)

