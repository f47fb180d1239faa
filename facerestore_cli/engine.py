"""The face restorer: one photo in memory → the same photo with its faces restored.

:class:`FaceRestorer` wires the stages for one photo: detect → select → align → route (how much
each face needs, whose references it gets) → restore → paste. It owns the models (built once, at
construction, with the references the options ask for, so they can never be forgotten) and nothing
about files: reading, writing and scheduling an album are :mod:`facerestore_cli.runner`'s. The same
object serves a script, a test, the CLI and a Ray worker.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facerestore_cli.colour import photo_colour
from facerestore_cli.face.align import FACE_SIZE, AlignedFace, align_face
from facerestore_cli.face.degradation import Degradation, auto_strength, detail_kept, estimate_degradation
from facerestore_cli.face.select import select_faces
from facerestore_cli.imagefile import Photo, rgb8
from facerestore_cli.options import RestoreOptions
from facerestore_cli.paste import PasteJob, composite_crop, face_mask, finish_face, paste_aligned, paste_faces
from facerestore_cli.references.dictionary import (
    CompiledDictionary,
    DictionaryCache,
    DictionaryError,
    compile_dictionary,
    dictionary_settings,
)
from facerestore_cli.references.people import PeopleIndex, Person, Route
from facerestore_cli.report import FaceReport
from facerestore_cli.restore import Restorer, output_problem

__all__ = ["STAGES", "FaceRestorer", "FaceWork", "PhotoResult", "PreparedPhoto", "RestoredFaceRejected", "StageTimer"]

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
class FaceWork:
    """A face on its way through the stages."""

    report: FaceReport
    aligned: AlignedFace
    landmarks68: np.ndarray
    route: Route | None = None
    restored: np.ndarray | None = None
    #: how much of the restored face is pasted (0..1), from ``--strength`` or the face's degradation
    strength: float = 1.0
    degradation: Degradation | None = None


@dataclass
class PhotoResult:
    """A restored photo in memory (what :meth:`FaceRestorer.restore` returns)."""

    photo: Photo
    faces: list[FaceReport]
    #: The aligned crops and the restored faces as pasted, in the order of the restored faces
    #: (``restored`` is empty when :meth:`FaceRestorer.finish` was asked for no composites).
    crops: list[np.ndarray] = field(default_factory=list)
    restored: list[np.ndarray] = field(default_factory=list)
    regions: list[Any] = field(default_factory=list)
    #: the photo's colour kind (``colour.photo_colour``): colour, grey or toned
    colour: str = "colour"


@dataclass
class PreparedPhoto:
    """A photo between :meth:`FaceRestorer.prepare` and :meth:`FaceRestorer.finish`: its faces found,
    aligned and routed, then (after :meth:`FaceRestorer.restore_faces`) restored."""

    photo: Photo
    faces: list[FaceReport]
    #: the faces to restore, in order (the others are only in ``faces``, with why they were skipped)
    work: list[FaceWork]
    #: ``--aligned``: the photo is itself the face crop
    aligned_input: bool = False


class StageTimer:
    """Seconds spent per stage (``STAGES``), summed over every call, for reports and benches."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[stage] = self.times.get(stage, 0.0) + time.perf_counter() - start


class FaceRestorer:
    """Restores the faces of photos in memory. Build once (models and references load here), then call
    :meth:`restore` for each photo; thread-safe.

    ``restorer`` and ``detector`` replace the ones the options would build (a test's, or a Ray
    worker's already loaded one). Set-up problems raise here, before any photo: ``ValueError`` for
    options, ``WeightsError``, ``DeviceError``, ``DetectorUnavailable``, ``EmbedderUnavailable`` and
    ``DictionaryError`` for references that cannot be compiled.
    """

    def __init__(
        self,
        options: RestoreOptions | None = None,
        *,
        restorer: Restorer | None = None,
        detector: Any = None,
        on_message: Callable[[str], None] | None = None,
        prepare: bool = True,
    ) -> None:
        from facerestore_cli.device import make_runtime
        from facerestore_cli.restore import create_restorer, resolve_backend

        self.options = options or RestoreOptions()
        self.options.check()
        self.say = on_message or (lambda _msg: None)
        rt = self.options.runtime
        given = getattr(restorer, "runtime", None)  # a given restorer keeps its own backend
        backend = given.backend if given is not None else resolve_backend(
            self.options.method, rt.backend, weights=self.options.weights, device=rt.device, half=rt.half
        )
        self.runtime = make_runtime(rt.device, rt.half, rt.threads, backend=backend)
        self.restorer = restorer or create_restorer(
            self.options.method, weights=self.options.weights, runtime=self.runtime, batch_size=rt.batch_size
        )
        self._detector = detector
        self._predictor: Any = None
        self._embedder = None
        self.single: Person | None = None
        self.people: PeopleIndex | None = None
        self._lock = threading.Lock()
        if prepare:
            self._prepare()

    # -- the models ----------------------------------------------------------------------------------

    @property
    def detector(self) -> Any:
        if self._detector is None:
            from facerestore_cli.face.detect import create_detector

            det = self.options.detect
            self._detector = create_detector(
                det.detector, device=self.runtime.onnx_device, threads=self.options.runtime.threads,
                max_side=det.max_side,
            )  # fmt: skip
        return self._detector

    @property
    def predictor(self) -> Any:
        """The 68-point landmark predictor, loaded on first use (``--method none`` never needs it)."""
        if self._predictor is None:
            from facerestore_cli.face.landmarks import default_predictor

            self._predictor = default_predictor()
        return self._predictor

    @property
    def embedder(self) -> Any:
        """The face embedder of ``--embedder`` (``face.identity.create_embedder``), built on first use.

        Raises ``face.identity.EmbedderUnavailable`` when it cannot run here (e.g. no insightface pack).
        """
        if self._embedder is None:
            from facerestore_cli.face.identity import create_embedder

            self._embedder = create_embedder(
                self.options.references.embedder, device=self.runtime.onnx_device, threads=self.options.runtime.threads
            )
        return self._embedder

    @property
    def routing_defaults(self) -> tuple[float, float]:
        """(threshold, margin): ``--people-threshold``/``--people-margin``, else the embedder's own."""
        refs = self.options.references
        threshold = refs.threshold if refs.threshold is not None else self.embedder.threshold
        margin = refs.margin if refs.margin is not None else self.embedder.margin
        return float(threshold), float(margin)

    def align(self, rgb: np.ndarray, face: Any) -> tuple[np.ndarray, np.ndarray]:
        """The aligned 512 crop of a detected face and its 68 landmarks (as references need them)."""
        aligned = align_face(rgb, face.landmarks)
        return aligned.image, self.predictor.predict(aligned.image)

    # -- references ----------------------------------------------------------------------------------

    def compile_person(self, folder: Path, *, force: bool = False) -> CompiledDictionary:
        """Compile (or load from the cache) the dictionary of the person in ``folder``."""
        restorer = self.restorer
        if not restorer.uses_references:
            raise DictionaryError(
                f"reference dictionaries need a method that reads references, not {restorer.info.method}"
            )
        embedder = self.embedder
        groups = self.options.references.allow_groups
        return compile_dictionary(
            folder,
            weights_sha256=restorer.info.sha256 or "",
            encode=restorer.encode_references,
            detect=self.detector.detect,
            align=self.align,
            embedder=embedder,
            cache=DictionaryCache(self.options.references.cache_dir),
            settings=dictionary_settings(self.options.detect.detector, embedder.name, groups),
            force=force,
            allow_groups=groups,
        )

    def _prepare(self) -> None:
        """Build the detector and compile the references the options ask for, once, before any photo.

        A detector that cannot run here (unknown name, missing package) raises now, as a set-up error,
        instead of failing every photo of the album one by one.
        """
        opts = self.options
        refs = opts.references
        if not opts.input.aligned:
            _ = self.detector
        if refs.refs:
            compiled = self.compile_person(refs.refs)
            self.single = Person(compiled.name, refs.refs, compiled)
        elif refs.people:
            threshold, margin = self.routing_defaults
            self.people = PeopleIndex.build(
                refs.people, self.compile_person, threshold=threshold, margin=margin, embedder=self.embedder.name,
                on_error=lambda folder, exc: self.say(f"[yellow]skipping person {folder.name}: {exc}[/]"),
                on_warning=lambda message: self.say(f"[yellow]{message}[/]"),
            )  # fmt: skip

    def route(self, work: list[FaceWork]) -> None:
        """Give each face its person's dictionary, or none (generic restoration), and say why."""
        if self.single is None and self.people is None:
            return
        if self.single is not None and self.options.references.force_refs:
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

    def assess(self, work: list[FaceWork]) -> list[FaceWork]:
        """Measure each face's degradation (:mod:`face.degradation`, in the report) and, with a fixed
        ``--strength``, set it; returns the faces to restore (``--strength 0`` restores none)."""
        fixed = self.options.paste.strength
        for w in work:
            w.degradation = estimate_degradation(w.aligned.image, w.aligned.scale)
            w.report.degradation = w.degradation.to_json()
            if fixed is not None:
                w.strength = float(fixed)
                w.report.strength = round(w.strength, 4)
                if w.strength <= 0.0:
                    w.report.skipped = "--strength 0"
        return [w for w in work if w.report.skipped is None]

    def decide(self, work: list[FaceWork]) -> list[FaceWork]:
        """``--strength auto``: each restored face's strength from its need and from how much of its
        detail the restoration kept; a face the restorer would harm keeps its pixels. Returns the faces
        to paste."""
        if self.options.paste.strength is not None:
            return work
        keep = []
        for w in work:
            kept = detail_kept(w.aligned.image, w.restored, w.aligned.scale)
            w.strength, why = auto_strength(w.degradation, kept)
            w.report.degradation = {**(w.report.degradation or {}), "detail_kept": round(kept, 4)}
            w.report.strength = round(w.strength, 4)
            if why is None:
                keep.append(w)
            else:
                w.report.skipped, w.report.restored, w.restored = why, False, None
        return keep

    def _restore_faces(self, work: list[FaceWork], timer: StageTimer) -> None:
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

    def restore(self, photo: Photo, timer: StageTimer | None = None) -> PhotoResult:
        """Restore every selected face of an in-memory photo; the photo's metadata is kept as is.

        The same as :meth:`prepare`, :meth:`restore_faces` and :meth:`finish` in turn; an album runs
        the three in different threads, so that the model never waits for the stages around it.
        Raises :class:`RestoredFaceRejected` when the restorer's output for a face is unusable.
        """
        timer = timer or StageTimer()
        prepared = self.prepare(photo, timer)
        self.restore_faces(prepared, timer)
        return self.finish(prepared, timer)

    def prepare(self, photo: Photo, timer: StageTimer | None = None) -> PreparedPhoto:
        """Everything before the model: detect, select, align, measure and route the faces."""
        timer = timer or StageTimer()
        if self.options.input.aligned:
            return self._prepare_aligned(photo, timer)
        rgb = rgb8(photo)
        det = self.options.detect
        with timer("detect"):
            faces = self.detector.detect(rgb)
        keep, reports = select_faces(faces, rgb.shape[:2], which=det.faces, min_face=det.min_face)
        work: list[FaceWork] = []
        with timer("align"):
            for face, report in keep:
                aligned = align_face(rgb, face.landmarks)
                work.append(FaceWork(report, aligned, self.predictor.predict(aligned.image)))
        with timer("route"):
            work = self.assess(work)
            self.route(work)
        return PreparedPhoto(photo=photo, faces=reports, work=work)

    def restore_faces(self, prepared: PreparedPhoto, timer: StageTimer | None = None) -> None:
        """The model, on the prepared faces (in place). Raises :class:`RestoredFaceRejected`."""
        if not prepared.work:
            return
        try:
            self._restore_faces(prepared.work, timer or StageTimer())
        except RestoredFaceRejected as exc:
            exc.faces = prepared.faces
            raise

    def finish(
        self, prepared: PreparedPhoto, timer: StageTimer | None = None, *, composites: bool = True
    ) -> PhotoResult:
        """Everything after the model: how much of each face to keep (``--strength auto``), and the paste.

        ``composites=False`` leaves :attr:`PhotoResult.restored` empty: each face as pasted over its crop
        costs about 10 ms to make, and only ``--save-faces`` and ``--review`` show them.
        """
        timer = timer or StageTimer()
        photo, work = prepared.photo, prepared.work
        if work:
            with timer("route"):
                work = self.decide(work)
        if prepared.aligned_input:
            return self._finish_aligned(prepared, work, timer)
        paste = self.options.paste
        with timer("paste"):
            pixels = photo.pixels
            if paste.upscale > 1:
                pixels = cv2.resize(pixels, None, fx=paste.upscale, fy=paste.upscale, interpolation=cv2.INTER_LANCZOS4)
            # only photos with faces to paste pay for the colour check (a pass over a sample of the pixels)
            colour = photo_colour(photo.pixels).kind if work else "colour"
            jobs, alphas = [], []
            for w in work:
                mask = face_mask(w.landmarks68)
                w.restored = finish_face(
                    w.restored, w.aligned.image, mask, tone_match=paste.tone_match, colour=colour, valid=w.aligned.valid
                )
                alpha = mask * np.float32(w.strength)
                alphas.append(alpha)
                jobs.append(PasteJob(face=w.restored, alpha=alpha, inverse=w.aligned.inverse))
            new_pixels, regions = paste_faces(pixels, jobs, upscale=paste.upscale, keep=colour != "colour")
        return PhotoResult(
            photo=dataclasses.replace(photo, pixels=new_pixels), faces=prepared.faces,
            crops=[w.aligned.image for w in work],
            restored=[
                composite_crop(w.restored, w.aligned.image, a, keep=colour != "colour")
                for w, a in zip(work, alphas, strict=True)
            ] if composites else [],
            regions=regions, colour=colour,
        )  # fmt: skip

    def _prepare_aligned(self, photo: Photo, timer: StageTimer) -> PreparedPhoto:
        """``--aligned``: the photo *is* an aligned face crop; restore it whole, keep its size."""
        rgb = rgb8(photo)
        h, w = rgb.shape[:2]
        with timer("align"):
            crop = rgb
            if (h, w) != (FACE_SIZE, FACE_SIZE):
                shrink = cv2.INTER_AREA if h > FACE_SIZE else cv2.INTER_CUBIC
                crop = cv2.resize(rgb, (FACE_SIZE, FACE_SIZE), interpolation=shrink)
            marks = self.predictor.predict(crop)
        report = FaceReport(index=0, box=[0.0, 0.0, float(w), float(h)], score=1.0, size=float(max(h, w)))
        scale = FACE_SIZE / max(h, w)  # a small crop was enlarged: judge its degradation at its own size
        aligned = AlignedFace(image=crop, matrix=np.array([[scale, 0, 0], [0, scale, 0]]), landmarks5=np.zeros((5, 2)))
        work = [FaceWork(report, aligned, marks)]
        with timer("route"):
            work = self.assess(work)
            self.route(work)
        return PreparedPhoto(photo=photo, faces=[report], work=work, aligned_input=True)

    def _finish_aligned(self, prepared: PreparedPhoto, work: list[FaceWork], timer: StageTimer) -> PhotoResult:
        photo = prepared.photo
        if not work:
            return PhotoResult(photo=photo, faces=prepared.faces)
        with timer("paste"):
            colour = photo_colour(photo.pixels).kind
            crop = work[0].aligned.image
            pixels, face = paste_aligned(
                work[0].restored, crop, photo.pixels, strength=work[0].strength,
                tone_match=self.options.paste.tone_match, colour=colour,
            )  # fmt: skip
        result = dataclasses.replace(photo, pixels=pixels)
        return PhotoResult(photo=result, faces=prepared.faces, crops=[crop], restored=[face], colour=colour)
