"""The album run: load → detect → align → restore → paste → save, for every photo.

This is the only module that wires the stages together; the CLI, scripts and tests all come through
:class:`Pipeline`. Decoding the next photo and encoding the previous one run in background threads
while the current one is restored, so the CPU never waits for the disk. One bad photo never stops an
album: its failure is recorded with a reason and the run goes on.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facerestore_cli.album import InputItem, OutputError, OutputPlan
from facerestore_cli.align import FACE_SIZE, AlignedFace, align_face
from facerestore_cli.dictionary import (
    CompiledDictionary,
    DictionaryCache,
    DictionaryError,
    compile_dictionary,
    dictionary_settings,
)
from facerestore_cli.identity import resolve_embedder
from facerestore_cli.imagefile import (
    DEFAULT_MAX_PIXELS,
    ImageFileError,
    Photo,
    atomic_write,
    format_for_suffix,
    is_colourless,
    load_photo,
    rgb8,
    save_photo,
)
from facerestore_cli.paste import LUMA, PasteJob, face_mask, match_tone, paste_faces
from facerestore_cli.people import PeopleIndex, Person, Route
from facerestore_cli.report import FaceReport, ImageReport, ReportWriter, Summary
from facerestore_cli.restore import output_problem

STAGES = ("decode", "detect", "align", "route", "restore", "paste", "encode")


class RestoredFaceRejected(Exception):
    """A restored face failed :func:`restore.output_problem`: its photo fails and is not written.

    Failing the whole photo (rather than pasting the other faces) keeps the rule that a photo counts
    as done only when all of it is: a ``--skip-existing`` rerun retries it, ``--in-place`` never
    replaces the original, and the exit code says something went wrong.
    """

    def __init__(self, message: str, faces: list[FaceReport]) -> None:
        super().__init__(message)
        self.faces = faces


@dataclass
class RestoreOptions:
    """Everything a restore run can be asked to do (the CLI options, as a library object)."""

    method: str = "dmdnet"
    weights: Path | None = None
    device: str = "auto"
    half: bool | None = None
    threads: int | None = None
    batch_size: int = 4
    detector: str = "retinaface"
    detect_max_side: int = 1600
    faces: str = "all"  # all | largest | center
    min_face: int = 16
    blend: float = 1.0
    upscale: int = 1
    aligned: bool = False
    refs: Path | None = None
    force_refs: bool = False
    people: Path | None = None
    #: Face embeddings for --refs/--people: auto (insightface when its pack is on disk, else dlib),
    #: dlib or insightface[:pack].
    embedder: str = "auto"
    #: None: the embedder's own default (``identity.py``: dlib 0.55 / 0.12, insightface 1.2 / 0.065).
    people_threshold: float | None = None
    people_margin: float | None = None
    tone_match: bool = True
    save_faces: bool = False
    compare: bool = False
    quality: int = 95
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    skip_existing: bool = False
    cache_dir: Path | None = None

    def check(self) -> None:
        """Raise ``ValueError`` for combinations that cannot work (the CLI turns it into exit 2)."""
        if self.faces not in ("all", "largest", "center"):
            raise ValueError("--faces must be all, largest or center")
        if not 0.0 <= self.blend <= 1.0:
            raise ValueError("--blend must be between 0 and 1")
        if self.upscale < 1 or self.upscale > 8:
            raise ValueError("--upscale must be between 1 and 8")
        if (self.refs or self.people) and self.method != "dmdnet":
            raise ValueError("--refs and --people need --method dmdnet (only DMDNet reads references)")
        if self.refs and self.people:
            raise ValueError("use either --refs (one person) or --people (a folder of people), not both")
        if self.aligned and self.upscale != 1:
            raise ValueError("--upscale does not apply to --aligned crops")
        if not 1 <= self.quality <= 100:
            raise ValueError("--quality must be between 1 and 100")
        if self.people_threshold is not None and not self.people_threshold > 0:
            raise ValueError("--people-threshold must be above 0")
        if self.people_margin is not None and not self.people_margin >= 0:
            raise ValueError("--people-margin must be 0 or more")
        try:
            resolve_embedder(self.embedder)
        except ValueError as exc:
            raise ValueError(f"--embedder: {exc}") from None


@dataclass
class FaceWork:
    """A face on its way through the stages."""

    report: FaceReport
    aligned: AlignedFace
    landmarks68: np.ndarray
    route: Route | None = None
    restored: np.ndarray | None = None


@dataclass
class PhotoResult:
    """A restored photo in memory (what :meth:`Pipeline.restore_photo` returns)."""

    photo: Photo
    faces: list[FaceReport]
    crops: list[np.ndarray] = field(default_factory=list)
    restored: list[np.ndarray] = field(default_factory=list)
    regions: list[Any] = field(default_factory=list)


class StageTimer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[stage] = self.times.get(stage, 0.0) + time.perf_counter() - start


class Pipeline:
    """A configured restore run. Build once, then call :meth:`run` (albums) or :meth:`restore_photo`."""

    def __init__(
        self,
        options: RestoreOptions | None = None,
        *,
        restorer: Any = None,
        detector: Any = None,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        from facerestore_cli.device import make_runtime
        from facerestore_cli.landmarks import default_predictor
        from facerestore_cli.restore import create_restorer

        self.options = options or RestoreOptions()
        self.options.check()
        self.say = on_message or (lambda _msg: None)
        self.runtime = make_runtime(self.options.device, self.options.half, self.options.threads)
        self.restorer = restorer or create_restorer(
            self.options.method, weights=self.options.weights, runtime=self.runtime, batch_size=self.options.batch_size
        )
        self._detector = detector
        self.predictor = default_predictor()
        self._embedder = None
        self.single: Person | None = None
        self.people: PeopleIndex | None = None
        self._lock = threading.Lock()

    # -- shared stages --------------------------------------------------------------------------------

    @property
    def detector(self):
        if self._detector is None:
            from facerestore_cli.detect import create_detector

            dev = "cuda" if self.runtime.is_cuda else "cpu"
            self._detector = create_detector(
                self.options.detector, device=dev, threads=self.options.threads, max_side=self.options.detect_max_side
            )
        return self._detector

    @property
    def embedder(self):
        """The face embedder of ``--embedder`` (``identity.create_embedder``), built on first use.

        Raises ``identity.EmbedderUnavailable`` when it cannot run here (e.g. no insightface pack).
        """
        if self._embedder is None:
            from facerestore_cli.identity import create_embedder

            dev = "cuda" if self.runtime.is_cuda else "cpu"
            self._embedder = create_embedder(self.options.embedder, device=dev, threads=self.options.threads)
        return self._embedder

    @property
    def routing_defaults(self) -> tuple[float, float]:
        """(threshold, margin): ``--people-threshold``/``--people-margin``, else the embedder's own."""
        opts = self.options
        threshold = opts.people_threshold if opts.people_threshold is not None else self.embedder.threshold
        margin = opts.people_margin if opts.people_margin is not None else self.embedder.margin
        return float(threshold), float(margin)

    def align(self, rgb: np.ndarray, face: Any) -> tuple[np.ndarray, np.ndarray]:
        aligned = align_face(rgb, face.landmarks)
        return aligned.image, self.predictor.predict(aligned.image)

    # -- references ----------------------------------------------------------------------------------

    def compile_person(self, folder: Path, *, force: bool = False) -> CompiledDictionary:
        """Compile (or load from the cache) the dictionary of the person in ``folder``."""
        restorer = self.restorer
        if not getattr(restorer, "uses_references", False):
            raise DictionaryError("reference dictionaries need --method dmdnet")
        embedder = self.embedder
        settings = dictionary_settings(self.options.detector, embedder.name)
        return compile_dictionary(
            folder,
            weights_sha256=restorer.info.sha256 or "",
            encode=restorer.encode_references,
            detect=self.detector.detect,
            align=self.align,
            embed=embedder.embed,
            cache=DictionaryCache(self.options.cache_dir),
            settings=settings,
            force=force,
            embedder=embedder.name,
            outlier_distance=embedder.outlier_distance,
            unit_vectors=embedder.unit_vectors,
        )

    def prepare(self) -> None:
        """Build the detector and compile the references the options ask for (once, before the first photo).

        A detector that cannot run here (unknown name, missing package) raises now, as a set-up error,
        instead of failing every photo of the album one by one.
        """
        opts = self.options
        if not opts.aligned:
            _ = self.detector
        if opts.refs:
            compiled = self.compile_person(opts.refs)
            self.single = Person(compiled.name, opts.refs, compiled)
        elif opts.people:
            threshold, margin = self.routing_defaults
            self.people = PeopleIndex.build(
                opts.people, self.compile_person, threshold=threshold, margin=margin, embedder=self.embedder.name,
                on_error=lambda folder, exc: self.say(f"[yellow]skipping person {folder.name}: {exc}[/]"),
            )  # fmt: skip

    def _route(self, work: list[FaceWork]) -> None:
        if self.single is None and self.people is None:
            return
        if self.single is not None and self.options.force_refs:
            for w in work:
                w.route = Route(self.single.name, None, None, "--force-refs", self.single.dictionary)
        else:
            embedder = self.embedder
            embeddings = embedder.embed_many([w.aligned.image for w in work], [w.landmarks68 for w in work])
            if self.people is not None:
                index = self.people
            else:
                threshold, margin = self.routing_defaults
                index = PeopleIndex([self.single], threshold=threshold, margin=margin, embedder=embedder.name)
            for w, emb in zip(work, embeddings, strict=True):
                w.route = index.route(emb)
                w.report.embedder = embedder.name
        for w in work:
            w.report.person = w.route.person
            w.report.routing = w.route.reason
            w.report.similarity = None if w.route.similarity is None else round(w.route.similarity, 4)
            w.report.distance = None if w.route.distance is None else round(w.route.distance, 4)

    # -- one photo -----------------------------------------------------------------------------------

    def _select(self, faces: list, shape: tuple[int, int]) -> tuple[list, list[FaceReport]]:
        opts = self.options
        reports = [
            FaceReport(
                index=i,
                box=[round(float(v), 1) for v in f.box],
                score=round(float(f.score), 4),
                size=round(float(f.size), 1),
            )
            for i, f in enumerate(faces)
        ]
        keep = []
        for f, r in zip(faces, reports, strict=True):
            if f.size < opts.min_face:
                r.skipped = f"smaller than --min-face ({f.size:.0f} px < {opts.min_face} px)"
            else:
                keep.append((f, r))
        if opts.faces != "all" and len(keep) > 1:
            if opts.faces == "largest":
                chosen = max(keep, key=lambda fr: fr[0].size)
            else:
                cy, cx = shape[0] / 2, shape[1] / 2
                chosen = min(keep, key=lambda fr: (fr[0].center[0] - cx) ** 2 + (fr[0].center[1] - cy) ** 2)
            for f, r in keep:
                if f is not chosen[0]:
                    r.skipped = f"not the {opts.faces} face (--faces {opts.faces})"
            keep = [chosen]
        return keep, reports

    def _restore(self, work: list[FaceWork], timer: StageTimer) -> None:
        """Restore faces in batches, one batch per dictionary (generic, or each person's)."""
        groups: dict[str | None, list[FaceWork]] = {}
        for w in work:
            key = w.route.dictionary.key if (w.route and w.route.dictionary) else None
            groups.setdefault(key, []).append(w)
        with timer("restore"):
            for group in groups.values():
                dictionary = group[0].route.dictionary.tensors if group[0].route and group[0].route.dictionary else None
                crops = np.stack([w.aligned.image for w in group])
                marks = np.stack([w.landmarks68 for w in group])
                with self._lock:  # one model, many threads: keep its batches whole
                    out = self.restorer.restore(crops, marks, dictionary)
                for w, face in zip(group, out, strict=True):
                    problem = output_problem(w.aligned.image, face)
                    if problem is None:
                        w.restored = face
                        w.report.restored = True
                    else:
                        w.report.error = problem
        rejected = [w.report for w in work if w.report.error]
        if rejected:
            raise RestoredFaceRejected(rejected[0].error or "", [w.report for w in work])

    def restore_photo(self, photo: Photo, timer: StageTimer | None = None) -> PhotoResult:
        """Restore every selected face of an in-memory photo; the photo's metadata is kept as is."""
        timer = timer or StageTimer()
        if self.options.aligned:
            return self._restore_aligned(photo, timer)
        rgb = rgb8(photo)
        with timer("detect"):
            faces = self.detector.detect(rgb)
        keep, reports = self._select(faces, rgb.shape[:2])
        work: list[FaceWork] = []
        with timer("align"):
            for face, report in keep:
                aligned = align_face(rgb, face.landmarks)
                work.append(FaceWork(report, aligned, self.predictor.predict(aligned.image)))
        with timer("route"):
            self._route(work)
        if work:
            try:
                self._restore(work, timer)
            except RestoredFaceRejected as exc:
                exc.faces = reports
                raise
        with timer("paste"):
            pixels = photo.pixels
            if self.options.upscale > 1:
                pixels = cv2.resize(
                    pixels, None, fx=self.options.upscale, fy=self.options.upscale, interpolation=cv2.INTER_LANCZOS4
                )
            # only photos with faces to paste pay for the colour check (a full pass over the pixels)
            grey = bool(work) and (photo.is_grey or is_colourless(photo))
            jobs = []
            for w in work:
                face = w.restored
                mask = face_mask(w.landmarks68)
                if self.options.tone_match:
                    face = match_tone(face, w.aligned.image.astype(np.float32) * np.float32(1 / 255), mask)
                if grey:
                    face = np.repeat((face @ LUMA)[..., None], 3, axis=2)
                w.restored = face
                jobs.append(PasteJob(face=face, alpha=mask * np.float32(self.options.blend), inverse=w.aligned.inverse))
            new_pixels, regions = paste_faces(pixels, jobs, upscale=self.options.upscale)
        result = dataclasses.replace(photo, pixels=new_pixels)
        return PhotoResult(
            photo=result, faces=reports, crops=[w.aligned.image for w in work],
            restored=[w.restored for w in work], regions=regions,
        )  # fmt: skip

    def _restore_aligned(self, photo: Photo, timer: StageTimer) -> PhotoResult:
        """``--aligned``: the photo *is* an aligned face crop; restore it whole, keep its size."""
        rgb = rgb8(photo)
        h, w = rgb.shape[:2]
        with timer("align"):
            crop = (
                rgb
                if (h, w) == (FACE_SIZE, FACE_SIZE)
                else cv2.resize(
                    rgb, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA if h > FACE_SIZE else cv2.INTER_CUBIC
                )
            )
            marks = self.predictor.predict(crop)
        report = FaceReport(index=0, box=[0.0, 0.0, float(w), float(h)], score=1.0, size=float(max(h, w)))
        aligned = AlignedFace(image=crop, matrix=np.array([[1.0, 0, 0], [0, 1.0, 0]]), landmarks5=np.zeros((5, 2)))
        work = [FaceWork(report, aligned, marks)]
        with timer("route"):
            self._route(work)
        self._restore(work, timer)
        with timer("paste"):
            face = work[0].restored
            if self.options.blend < 1.0:
                blend = np.float32(self.options.blend)
                face = crop.astype(np.float32) * np.float32((1.0 - blend) / 255.0) + face * blend
            if photo.is_grey or is_colourless(photo):
                face = np.repeat((face @ LUMA)[..., None], 3, axis=2)
            if (h, w) != (FACE_SIZE, FACE_SIZE):
                face = cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA if h < FACE_SIZE else cv2.INTER_CUBIC)
            pixels = _from_float(face, photo.pixels)
        return PhotoResult(
            photo=dataclasses.replace(photo, pixels=pixels), faces=[report], crops=[crop], restored=[face]
        )

    # -- files ---------------------------------------------------------------------------------------

    def _write_extras(self, result: PhotoResult, original: Photo, output: Path) -> None:
        if self.options.save_faces and result.crops:
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
                _write_png(crop_path, next(crops))
                _write_png(out_path, _to_uint8(next(restored_faces)))
                face.crop, face.restored_crop = str(crop_path), str(out_path)
        if self.options.compare:
            before = rgb8(original)
            if self.options.upscale > 1:
                before = cv2.resize(
                    before, None, fx=self.options.upscale, fy=self.options.upscale, interpolation=cv2.INTER_LANCZOS4
                )
            side = np.concatenate([before, rgb8(result.photo)], axis=1)
            _write_jpeg(output.with_name(output.stem + "_compare.jpg"), side)

    def process(self, item: InputItem, output: Path, photo: Photo | Exception | None = None) -> ImageReport:
        """Restore one file end to end and say what happened (never raises for a bad photo)."""
        report, work = self.compute(item, output, photo)
        if work is not None:
            self.write(report, work)
        return report

    def compute(
        self, item: InputItem, output: Path, photo: Photo | Exception | None = None
    ) -> tuple[ImageReport, tuple | None]:
        """Everything but the encode: returns the report and what :meth:`write` needs (or None)."""
        timer = StageTimer()
        report = ImageReport(input=str(item.path), output=str(output))
        started = time.perf_counter()
        work = None
        try:
            if photo is None:
                with timer("decode"):
                    photo = self.load(item.path)
            if isinstance(photo, Exception):
                raise photo
            report.size = [photo.width, photo.height]
            result = self.restore_photo(photo, timer)
            report.faces = result.faces
            report.faces_found = len(result.faces)
            report.faces_restored = sum(f.restored for f in result.faces)
            report.faces_skipped = report.faces_found - report.faces_restored
            work = (item.path, photo, result, output)
        except Exception as exc:
            if isinstance(exc, RestoredFaceRejected):
                report.faces = exc.faces
                report.faces_found = len(exc.faces)
            _fail(report, item.path, exc)
        report.timings = timer.times
        report.seconds = time.perf_counter() - started
        return report, work

    def write(self, report: ImageReport, work: tuple) -> ImageReport:
        """Encode and write a computed photo; completes ``report`` (status, encode time)."""
        source, photo, result, output = work
        started = time.perf_counter()
        try:
            self.save(source, photo, result, output)
            report.status = "restored" if report.faces_restored else "no-faces"
            if not report.faces_restored:
                report.reason = "no face found" if not report.faces_found else "every face was skipped"
        except Exception as exc:
            _fail(report, source, exc)
        spent = time.perf_counter() - started
        report.timings["encode"] = report.timings.get("encode", 0.0) + spent
        report.seconds += spent
        return report

    def load(self, path: Path) -> Photo:
        return load_photo(path, max_pixels=self.options.max_pixels)

    def save(self, source: Path, original: Photo, result: PhotoResult, output: Path) -> None:
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
        untouched = not any(f.restored for f in result.faces) and self.options.upscale == 1
        in_place = source.resolve() == output.resolve()
        if untouched and in_place:
            pass  # --in-place with nothing to change: leave the file exactly as it is
        elif untouched and same_format:
            # Nothing to change: write the input through byte for byte (metadata and all).
            with atomic_write(output) as tmp:
                shutil.copyfile(source, tmp)
        else:
            save_photo(result.photo, output, quality=self.options.quality)
        self._write_extras(result, original, output)

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

        Decoding runs up to two photos ahead in one thread and encoding one behind in another, so
        restoring (which uses all torch threads) rarely waits for the disk. Ctrl-C stops after the
        files already being written are complete; nothing partial is ever left (writes are atomic).
        """
        summary = summary or Summary()
        started = time.perf_counter()
        plan.register_inputs(items)

        def finish(r: ImageReport) -> None:
            summary.add(r)
            if report is not None:
                report.write(r)
            if on_image is not None:
                on_image(r)

        loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facerestore-decode")
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facerestore-encode")
        queue: deque[tuple[int, InputItem, Path]] = deque()
        early: list[ImageReport] = []
        for item in items:
            try:
                out = plan.output_for(item)
            except OutputError as exc:
                early.append(ImageReport(input=str(item.path), status="failed", reason=exc.reason, error=str(exc)))
                continue
            if self.options.skip_existing and out.exists():
                early.append(
                    ImageReport(
                        input=str(item.path), output=str(out), status="exists", reason="output exists (--skip-existing)"
                    )
                )
                continue
            queue.append((len(queue), item, out))
        for r in early:
            finish(r)

        def timed_load(path: Path) -> tuple[Photo | Exception, float]:
            t = time.perf_counter()
            try:
                return self.load(path), time.perf_counter() - t
            except Exception as exc:  # any decoder failure is this file's failure, never the album's
                return exc, time.perf_counter() - t

        todo = list(queue)
        loads: dict[int, Future] = {}
        inflight: deque[Future] = deque()

        def schedule(k: int) -> None:
            if k < len(todo) and k not in loads:
                loads[k] = loader.submit(timed_load, todo[k][1].path)

        def drain(block: bool) -> None:
            # result() before popleft(): a Ctrl-C while waiting must not lose the report of a file
            # that the writer thread still completes
            while inflight and (block or inflight[0].done()):
                r = inflight[0].result()
                inflight.popleft()
                finish(r)

        try:
            schedule(0)
            schedule(1)
            for k, item, out in todo:
                photo, decode_time = loads.pop(k).result()
                schedule(k + 2)
                r, work = self.compute(item, out, photo)
                r.timings = {"decode": decode_time, **r.timings}
                r.seconds += decode_time
                if work is None:
                    inflight.append(_done(r))
                else:
                    inflight.append(writer.submit(self.write, r, work))
                drain(block=False)
                while len(inflight) > 2:  # bound the memory held by photos waiting to be written
                    r = inflight[0].result()
                    inflight.popleft()
                    finish(r)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            for f in loads.values():
                f.cancel()
            loader.shutdown(wait=True, cancel_futures=True)
            while True:  # files already being written are finished (atomically) and reported
                try:
                    drain(block=True)
                    break
                except KeyboardInterrupt:  # at most two writes are pending: wait for them, once more
                    summary.interrupted = True
            writer.shutdown(wait=True)
        summary.seconds = time.perf_counter() - started
        return summary


def _done(value: Any) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


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
    elif isinstance(exc, MemoryError):
        report.reason, report.error = "out-of-memory", f"{path}: not enough memory to restore this photo"
    else:
        report.reason, report.error = type(exc).__name__, f"{path}: {exc}"


def _to_uint8(face: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(face * 255.0), 0, 255).astype(np.uint8)


def _from_float(face: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A float RGB [0, 1] face in the layout and depth of ``like`` (alpha copied from ``like``)."""
    maxval = float(np.iinfo(like.dtype).max)
    grey = like.ndim == 2 or like.shape[2] in (1, 2)
    colour = (face @ LUMA)[..., None] if grey else face
    values = np.clip(np.rint(colour * maxval), 0, maxval).astype(like.dtype)
    if like.ndim == 2:
        return values[..., 0]
    out = like.copy()
    out[..., : values.shape[2]] = values
    return out


def _write_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_write(path) as tmp:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ImageFileError("unwritable", "OpenCV could not encode the face crop", path)
        tmp.write_bytes(buf.tobytes())


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    with atomic_write(path) as tmp:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise ImageFileError("unwritable", "OpenCV could not encode the comparison image", path)
        tmp.write_bytes(buf.tobytes())


def restore_file(input_path: Path, output_path: Path, options: RestoreOptions | None = None) -> ImageReport:
    """Restore one photo file into another: the simplest way to use the library from a script."""
    pipeline = Pipeline(options)
    pipeline.prepare()
    item = InputItem(Path(input_path), Path(Path(input_path).name))
    return pipeline.process(item, Path(output_path))
