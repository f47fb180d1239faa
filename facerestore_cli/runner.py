"""The album runner: input files → restored files, for every photo of an album.

:class:`AlbumRunner` reads each photo, hands it to a :class:`~facerestore_cli.engine.FaceRestorer` and
writes the result (and ``--save-faces``/``--compare`` extras) through :mod:`facerestore_cli.imagefile`
only. Each photo goes through three stages (prepare: decode, detect, align, route; restore: the
model; finish: paste, encode), which an album runs in three threads, so that the model never waits
for the disk or for the stages around it. One bad photo never stops an album: its
failure is recorded with a reason and the run goes on.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.markup import escape

from facerestore_cli.album import InputItem, OutputError, OutputPlan
from facerestore_cli.defaults import DEFAULT_JPEG_QUALITY
from facerestore_cli.engine import FaceRestorer, PhotoResult, PreparedPhoto, RestoredFaceRejected, StageTimer
from facerestore_cli.imagefile import (
    ImageFileError,
    Photo,
    atomic_write,
    format_for_suffix,
    load_photo,
    rgb8,
    save_like_source,
    save_photo,
)
from facerestore_cli.imagefile.atomic import remove_stale_temporaries
from facerestore_cli.options import RestoreOptions
from facerestore_cli.references.dictionary import DictionaryError
from facerestore_cli.report import ImageReport, ReportWriter, Summary
from facerestore_cli.review import ReviewFace, ReviewPage, side_by_side

__all__ = ["AlbumRunner", "Computed", "restore_file"]

#: JPEG quality of the ``--compare`` side-by-side (a preview, not a photo to keep).
COMPARE_QUALITY = 92
#: ``--review``: the page is rewritten every this many photos, and at the end.
REVIEW_EVERY = 25
#: The size of an official checkpoint whose card records none, for the notice of :meth:`AlbumRunner.run`:
#: DMDNet's official network holds 149.8 M float32 values (39.6 M parameters and 110.2 M dictionary
#: entries, counted from ``Config.official()``), so its ``.pth`` is about 600 MB.
OFFICIAL_SIZE_ESTIMATES = {"dmdnet": 600_000_000}


class PhotoRefused(Exception):
    """A photo the options cannot be applied to (``--upscale`` past ``--max-pixels``): it fails alone."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Computed:
    """A photo restored in memory, waiting to be written (what :meth:`AlbumRunner.write` takes)."""

    source: Path
    original: Photo
    result: PhotoResult
    output: Path
    #: the source JPEG's blocks being read ahead (a Future of ``jpeg_blocks.SourceBlocks``), or None
    blocks: Future | None = None


@dataclass
class _Staged:
    """One photo between the stages of an album: its report so far and what the next stage needs."""

    item: InputItem
    output: Path
    report: ImageReport
    timer: StageTimer
    prepared: PreparedPhoto | None = None
    blocks: Future | None = None

    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, RestoredFaceRejected):
            self.report.faces = exc.faces
            self.report.faces_found = len(exc.faces)
        _fail(self.report, self.item.path, exc)
        self.prepared = None


class AlbumRunner:
    """Runs a :class:`FaceRestorer` over files: read, restore, write, report."""

    def __init__(
        self,
        engine: FaceRestorer,
        *,
        review: ReviewPage | None = None,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        """``on_message`` gets the run's notices (rich markup; default: the engine's ``on_message``)."""
        self.engine = engine
        self.options = engine.options
        #: ``--review``: every photo's thumbnail and faces go on this page as they are written
        self.review = review
        self.say = on_message or engine.say
        self._noticed = False

    # -- one file ------------------------------------------------------------------------------------

    def load(self, path: Path) -> Photo:
        return load_photo(path, max_pixels=self.options.input.max_pixels)

    def process(self, item: InputItem, output: Path, photo: Photo | Exception | None = None) -> ImageReport:
        """Restore one file end to end and say what happened (never raises for a bad photo)."""
        report, computed = self.compute(item, output, photo)
        if computed is not None:
            self.write(report, computed)
        return report

    def compute(
        self, item: InputItem, output: Path, photo: Photo | Exception | None = None
    ) -> tuple[ImageReport, Computed | None]:
        """Everything but the encode: the report so far and what :meth:`write` needs (None on failure)."""
        staged = self._prepare(item, output, photo)
        self._restore(staged)
        return self._finish(staged)

    # The three stages of one photo; :meth:`run` puts each in its own thread. None of them raises for a
    # bad photo: a failure is recorded in the report and the later stages pass the photo through.

    def _prepare(self, item: InputItem, output: Path, photo: Photo | Exception | None = None) -> _Staged:
        """Decode (unless given) and everything before the model."""
        staged = _Staged(item, output, ImageReport(input=str(item.path), output=str(output)), StageTimer())
        try:
            if photo is None:
                with staged.timer("decode"):
                    photo = self.load(item.path)
            if isinstance(photo, Exception):
                raise photo
            staged.report.size = [photo.width, photo.height]
            self._check_upscale(photo)
            staged.prepared = self.engine.prepare(photo, staged.timer)
        except Exception as exc:
            staged.fail(exc)
        return staged

    def _restore(self, staged: _Staged) -> None:
        """The model (the only stage that holds the engine's model lock)."""
        if staged.prepared is None:
            return
        try:
            self.engine.restore_faces(staged.prepared, staged.timer)
        except Exception as exc:
            staged.fail(exc)

    def _finish(self, staged: _Staged) -> tuple[ImageReport, Computed | None]:
        """Paste the restored faces: the report so far and what :meth:`write` needs (None on failure)."""
        report, computed = staged.report, None
        if staged.prepared is not None:
            try:
                composites = self.options.output.save_faces or self.review is not None
                result = self.engine.finish(staged.prepared, staged.timer, composites=composites)
                report.faces = result.faces
                report.faces_found = len(result.faces)
                report.faces_restored = sum(f.restored for f in result.faces)
                report.faces_skipped = report.faces_found - report.faces_restored
                computed = Computed(staged.item.path, staged.prepared.photo, result, staged.output, staged.blocks)
            except Exception as exc:
                staged.fail(exc)
        report.timings = dict(staged.timer.times)
        report.seconds = sum(report.timings.values())
        return report, computed

    def _patches(self, item: InputItem, output: Path) -> bool:
        """Whether this photo's output will be written by patching its source JPEG's blocks."""
        try:
            jpeg = format_for_suffix(item.path.suffix) == format_for_suffix(output.suffix) == "JPEG"
        except ImageFileError:
            return False
        return jpeg and self.options.output.quality is None and self.options.paste.upscale == 1

    @staticmethod
    def _read_blocks(item: InputItem, output: Path) -> Any:
        from facerestore_cli.imagefile.jpeg_blocks import read_source_blocks

        return read_source_blocks(item.path.read_bytes())

    def _finish_and_write(self, staged: _Staged) -> ImageReport:
        report, computed = self._finish(staged)
        if computed is None:
            self._review_plain(report)
            return report
        return self.write(report, computed)

    def _check_upscale(self, photo: Photo) -> None:
        """``--max-pixels`` bounds what is made as well as what is read: an enlarged photo is refused."""
        up, limit = self.options.paste.upscale, self.options.input.max_pixels
        if up > 1 and limit is not None and photo.width * up * photo.height * up > limit:
            w, h = photo.width * up, photo.height * up
            raise PhotoRefused(
                "upscale-too-large",
                f"--upscale {up} would make it {w}x{h} = {w * h:,} pixels, more than --max-pixels {limit:,}; "
                "the photo was left as it was",
            )

    def write(self, report: ImageReport, computed: Computed) -> ImageReport:
        """Encode and write a computed photo; completes ``report`` (status, encode time)."""
        started = time.perf_counter()
        try:
            report.written = self.save(computed)
            if report.faces_restored:
                report.status = "restored"
            elif not report.faces_found:
                report.status, report.reason = "no-faces", "no face found"
            else:
                report.status = "unchanged"
                report.reason = (
                    "; ".join(sorted({f.skipped for f in report.faces if f.skipped})) or "nothing to restore"
                )
        except Exception as exc:
            _fail(report, computed.source, exc)
        if self.review is not None:
            self.review.add(report.to_json(), rgb8(computed.result.photo), _review_faces(computed))
        spent = time.perf_counter() - started
        report.timings["encode"] = report.timings.get("encode", 0.0) + spent
        report.seconds += spent
        return report

    def save(self, computed: Computed) -> str:
        """Write the extras, then the output; returns how the photo was written (for the report).

        The output is published last: a photo counts as done only when all its files are, so when an
        extra cannot be written (a full disk) the output is not there either, and a ``--skip-existing``
        rerun does the photo again instead of skipping it with its crops missing.
        """
        source, original, result, output = computed.source, computed.original, computed.result, computed.output
        if output.parent.exists() and not output.parent.is_dir():
            raise ImageFileError("unwritable", f"the output folder {output.parent} is a file, not a folder", output)
        if not output.parent.exists():
            try:
                output.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ImageFileError(
                    "unwritable", f"cannot create the output folder: {exc.strerror or exc}", output
                ) from exc
        same_format = format_for_suffix(output.suffix) == original.format
        untouched = not any(f.restored for f in result.faces) and self.options.paste.upscale == 1
        in_place = source.resolve() == output.resolve()
        quality = self.options.output.quality
        self._write_extras(result, original, output)
        if untouched and in_place:
            written = "left as it was"  # --in-place with nothing to change: the file is not touched
        elif untouched and same_format:
            # Nothing to change: write the input through byte for byte (metadata and all).
            with atomic_write(output) as tmp:
                shutil.copyfile(source, tmp)
            written = "copied unchanged"
        elif same_format and original.format == "JPEG" and quality is None:
            written = save_like_source(
                result.photo, output, source=source.read_bytes(), original=original.pixels,
                luma_only=result.colour != "colour", blocks=_result_or_none(computed.blocks),
                changed_within=[r.slices() for r in result.regions] if result.regions else None,
            )  # fmt: skip
        else:
            save_photo(result.photo, output, quality=quality or DEFAULT_JPEG_QUALITY)
            written = "encoded" if quality is None else f"encoded at quality {quality}"
        return written

    def _write_extras(self, result: PhotoResult, original: Photo, output: Path) -> None:
        out = self.options.output
        if out.save_faces and result.crops:
            folder = output.with_name(output.stem + "_faces")
            folder.mkdir(parents=True, exist_ok=True)
            restored_faces = iter(result.restored)
            crops = iter(result.crops)
            for face in result.faces:
                if not face.restored:
                    continue
                tag = f"_{face.person}" if face.person else ""
                crop_path = folder / f"face{face.index:02d}_input.png"
                out_path = folder / f"face{face.index:02d}_restored{tag}.png"
                save_photo(Photo(next(crops), "PNG"), crop_path)
                save_photo(Photo(_to_uint8(next(restored_faces)), "PNG"), out_path)
                face.crop, face.restored_crop = str(crop_path), str(out_path)
        if out.compare:
            before = rgb8(original)
            upscale = self.options.paste.upscale
            if upscale > 1:
                before = cv2.resize(before, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LANCZOS4)
            side = side_by_side(before, rgb8(result.photo))
            save_photo(Photo(side, "JPEG"), output.with_name(output.stem + "_compare.jpg"), quality=COMPARE_QUALITY)

    def _review_plain(self, report: ImageReport) -> None:
        """A photo with nothing to show (failed before it was restored, or skipped) on the review page."""
        if self.review is not None:
            self.review.add(report.to_json(), None, [])

    # -- an album ------------------------------------------------------------------------------------

    def plan_outputs(
        self, items: list[InputItem], plan: OutputPlan
    ) -> tuple[list[tuple[InputItem, Path]], list[ImageReport]]:
        """Each photo's output, and the reports of the photos that need no work (refused, ``exists``).

        Public so that every engine (this runner, ``cluster.RayAlbumRunner``) plans an album the same
        way: the same mirrored tree, suffix, ``--skip-existing`` and refusals, in input order.
        """
        plan.register_inputs(items)
        todo: list[tuple[InputItem, Path]] = []
        early: list[ImageReport] = []
        for item in items:
            try:
                out = plan.output_for(item)
            except OutputError as exc:
                early.append(ImageReport(input=str(item.path), status="failed", reason=exc.reason, error=str(exc)))
                continue
            if self.options.output.skip_existing and out.exists():
                early.append(
                    ImageReport(
                        input=str(item.path), output=str(out), status="exists", reason="output exists (--skip-existing)"
                    )
                )
                continue
            todo.append((item, out))
        return todo, early

    def run(
        self,
        items: list[InputItem],
        plan: OutputPlan,
        *,
        report: ReportWriter | None = None,
        on_image: Callable[[ImageReport], None] | None = None,
        summary: Summary | None = None,
    ) -> Summary:
        """Restore an album, in input order.

        Three stages overlap: one thread decodes, detects, aligns and routes up to two photos ahead,
        the calling thread runs the model, and another pastes and encodes up to two photos behind, so
        the model rarely waits for the rest (``bench/album.py`` measures the share of time outside it).
        Ctrl-C stops after the files already being written are complete; nothing partial is ever left
        (writes are atomic).
        """
        summary = summary or Summary()
        started = time.perf_counter()
        finish = self._reporter(summary, report, on_image)
        todo = self._begin(items, plan, finish)
        loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facerestore-prepare")
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facerestore-finish")
        loads: dict[int, Future] = {}
        inflight: deque[Future] = deque()

        def schedule(k: int) -> None:
            if k < len(todo) and k not in loads:
                loads[k] = loader.submit(self._prepare, *todo[k])

        gate = _SignalGate()

        def report_first() -> None:
            # result() before popleft(): a Ctrl-C while waiting must not lose the report of a file
            # that the writer thread still completes; and none may land between the two
            r = inflight[0].result()
            with gate:
                inflight.popleft()
                finish(r)

        def drain(block: bool) -> None:
            while inflight and (block or inflight[0].done()):
                report_first()

        try:
            schedule(0)
            schedule(1)
            # The first photo's source JPEG is read in the idle writer thread while its faces are found:
            # a script that calls us once per photo waits for nothing else. Later photos' are read
            # when they are written, which the overlap hides already (and costs nothing when a photo
            # comes back unchanged).
            first_blocks = None
            if todo and self._patches(*todo[0]):
                first_blocks = writer.submit(self._read_blocks, *todo[0])
            for k in range(len(todo)):
                staged = loads.pop(k).result()
                if k == 0:
                    staged.blocks = first_blocks
                schedule(k + 2)
                self._restore(staged)
                with gate:  # a photo handed to the writer is always waited for and reported
                    inflight.append(writer.submit(self._finish_and_write, staged))
                drain(block=False)
                while len(inflight) > 2:  # bound the memory held by photos waiting to be written
                    report_first()
        except KeyboardInterrupt as exc:
            summary.interrupted = True
            summary.signal = getattr(exc, "signum", signal.SIGINT)
        finally:
            for f in loads.values():
                f.cancel()
            loader.shutdown(wait=True, cancel_futures=True)
            while True:  # files already being written are finished (atomically) and reported
                try:
                    drain(block=True)
                    break
                except KeyboardInterrupt as exc:  # at most two writes are pending: wait for them, once more
                    summary.interrupted = True
                    summary.signal = getattr(exc, "signum", summary.signal)
            writer.shutdown(wait=True)
            gate.close()
        summary.seconds = time.perf_counter() - started
        if report is not None:
            summary.report_errors = len(report.errors)
        if self.review is not None:
            self.review.write()
        return summary

    # -- what every engine does around an album (this runner and ``cluster.RayAlbumRunner``) ---------

    def _reporter(
        self, summary: Summary, report: ReportWriter | None, on_image: Callable[[ImageReport], None] | None
    ) -> Callable[[ImageReport], None]:
        """What happens to each finished photo's report: counted, written, passed on."""

        def finish(r: ImageReport) -> None:
            summary.add(r)
            if self.review is not None and summary.images % REVIEW_EVERY == 0:
                self.review.write()  # an interrupted album still has its page
            if report is not None:
                report.write(r)
            if on_image is not None:
                on_image(r)

        return finish

    def _begin(
        self, items: list[InputItem], plan: OutputPlan, finish: Callable[[ImageReport], None]
    ) -> list[tuple[InputItem, Path]]:
        """Before the first photo: the official-weights notice, the plan, what killed earlier runs left
        in the output folders removed, and the reports of the photos that need no work. Returns the
        (input, output) pairs to restore, in input order."""
        started = time.time()  # temporaries older than this run are an earlier run's
        self._official_weights_notice()
        todo, early = self.plan_outputs(items, plan)
        self._remove_stale_temporaries([out for _, out in todo] + [Path(r.output) for r in early if r.output], started)
        for r in early:
            self._review_plain(r)
            finish(r)
        return todo

    def _remove_stale_temporaries(self, outputs: list[Path], started: float) -> None:
        """Remove what a killed earlier run left in this run's output folders (``atomic_write``'s
        ``.<name>.<hex>.tmp`` files from before this run), and say so."""
        folders = {out.parent for out in outputs}
        if self.options.output.save_faces:
            folders |= {out.with_name(out.stem + "_faces") for out in outputs}
        for folder in sorted(folders):
            removed = remove_stale_temporaries(folder, started)
            if removed:
                self.say(
                    f"[yellow]removed {len(removed)} temporary file(s) left in {escape(str(folder))} by an "
                    f"interrupted earlier run, e.g. {escape(removed[0].name)}[/]"
                )

    def _official_weights_notice(self) -> None:
        """Once per run: a method running on the compact weights has an official checkpoint, and on
        what terms (licence, size) and with which command it can be had."""
        if self._noticed:
            return
        self._noticed = True
        info = self.engine.restorer.info
        notice = official_weights_notice(info.method, info.config)
        if notice:
            self.say(f"[dim]{escape(notice)}[/]")


def official_weights_notice(method: str, config: dict[str, Any]) -> str | None:
    """The notice for ``method`` running with ``config``: None when it runs on its official checkpoint
    (or has none, or the run's config is unknown)."""
    from dataclasses import asdict, is_dataclass

    from facerestore_cli.models import get_method

    try:
        spec = get_method(method)
    except KeyError:
        return None
    official = spec.official
    make_official = getattr(spec.config, "official", None)
    if official is None or make_official is None or not config:
        return None
    wanted = make_official()
    wanted = asdict(wanted) if is_dataclass(wanted) else dict(wanted)
    if all(config.get(k) == v for k, v in wanted.items() if k in config):
        return None
    size = official.size or OFFICIAL_SIZE_ESTIMATES.get(method)
    size_text = f", {'' if official.size else 'about '}{size / 1e6:,.0f} MB" if size else ""
    shape = ", ".join(f"{k} {v}" for k, v in sorted(config.items()) if k in wanted)
    return (
        f"{method} is running on compact weights ({shape}), not on its official checkpoint, which exists: "
        f"{official.homepage}, licence {official.licence}{size_text}; to use it: facerestore weights fetch {method}"
    )


def _review_faces(computed: Computed) -> list[ReviewFace]:
    """The page's before/after of every face: restored ones as pasted, the others cut from the photo."""
    result = computed.result
    restored = iter(zip(result.crops, result.restored, strict=True))
    rgb = rgb8(computed.original)
    faces = []
    for f in result.faces:
        if f.restored:
            before, after = next(restored)
            after = np.clip(np.rint(after * 255.0), 0, 255).astype(np.uint8)
        else:
            x0, y0, x1, y1 = (round(v) for v in f.box)
            before, after = rgb[max(0, y0) : max(y0 + 1, y1), max(0, x0) : max(x0 + 1, x1)], None
            if before.size == 0:
                continue
        faces.append(
            ReviewFace(before=before, after=after, index=f.index, person=f.person, strength=f.strength,
                       degradation=f.degradation, skipped=f.skipped or f.error)
        )  # fmt: skip
    return faces


def restore_file(input_path: Path | str, output_path: Path | str, options: RestoreOptions | None = None) -> ImageReport:
    """Restore one photo file into another: the simplest way to use the library from a script.

    Never raises for a bad photo (the report says why it failed); set-up problems raise as
    :class:`FaceRestorer` says.
    """
    runner = AlbumRunner(FaceRestorer(options))
    item = InputItem(Path(input_path), Path(Path(input_path).name))
    return runner.process(item, Path(output_path))


class _SignalGate:
    """Holds back Ctrl-C, SIGTERM and SIGHUP for the few statements that must not be cut in two.

    An interrupt arrives as an exception wherever the main thread is. Between handing a photo to the
    writer and remembering that it did, or between taking a finished photo off the queue and writing
    its report line, it would lose the report of a file that is written all the same. Inside ``with
    gate:`` a signal is noted and its handler runs on leaving, so the interrupt lands just after.
    Only the main thread can install handlers; elsewhere (a library user's thread) the gate does nothing.
    """

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))

    def __init__(self) -> None:
        self._held = False
        self._pending: tuple[int, Any] | None = None
        self._handlers: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            handler = signal.getsignal(sig)
            if callable(handler):  # SIG_IGN and SIG_DFL stay as they are
                self._handlers[sig] = handler
                signal.signal(sig, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        if self._held:
            self._pending = (signum, frame)
        else:
            self._handlers[signum](signum, frame)

    def __enter__(self) -> None:
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False
        if self._pending is not None:
            (signum, frame), self._pending = self._pending, None
            self._handlers[signum](signum, frame)

    def close(self) -> None:
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        self._handlers.clear()


def _result_or_none(future: Future | None) -> Any:
    """What a read-ahead gave, or None when there was none or it failed (the write then reads itself)."""
    if future is None:
        return None
    try:
        return future.result()
    except Exception:
        return None


def _fail(report: ImageReport, path: Path, exc: BaseException) -> None:
    """Record why a photo failed, in words a user can act on."""
    report.status = "failed"
    if isinstance(exc, ImageFileError):
        report.reason, report.error = exc.reason, str(exc)
    elif isinstance(exc, RestoredFaceRejected):
        report.reason = "restorer-output"
        report.error = f"{path}: {exc}; the photo was left as it was"
    elif isinstance(exc, DictionaryError):
        report.reason, report.error = "references", str(exc)
    elif isinstance(exc, PhotoRefused):
        report.reason, report.error = exc.reason, f"{path}: {exc}"
    elif isinstance(exc, MemoryError):
        report.reason, report.error = "out-of-memory", f"{path}: not enough memory to restore this photo"
    else:
        report.reason, report.error = type(exc).__name__, f"{path}: {exc}"


def _to_uint8(face: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(face * 255.0), 0, 255).astype(np.uint8)
