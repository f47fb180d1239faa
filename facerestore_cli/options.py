"""What a restore run can be asked to do, as a library object: the CLI's flags, grouped by the stage
that reads them, with one :meth:`RestoreOptions.check` for every combination that cannot work.

Groups keep a stage's settings together (a detector needs only :class:`DetectOptions`), and
:meth:`RestoreOptions.from_flat` accepts the flags by their command-line names for scripts that
think in flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facerestore_cli.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DETECT_MAX_SIDE,
    DEFAULT_DETECTOR,
    DEFAULT_EMBEDDER,
    DEFAULT_MAX_PIXELS,
    DEFAULT_METHOD,
    DEFAULT_MIN_FACE,
)

__all__ = [
    "ClusterOptions",
    "DetectOptions",
    "InputOptions",
    "OutputOptions",
    "PasteOptions",
    "ReferenceOptions",
    "RestoreOptions",
    "RuntimeOptions",
]


@dataclass
class RuntimeOptions:
    """Where and how the models run."""

    device: str = "auto"
    #: None: fp16 on CUDA only.
    half: bool | None = None
    threads: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    #: auto (onnxruntime where the model's ONNX files are available), torch or onnxruntime.
    backend: str = "auto"


@dataclass
class InputOptions:
    """How photos are read."""

    #: Refuse photos with more pixels than this before decoding them (decompression bombs).
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    #: The photos are already aligned 512x512 face crops: no detection, the whole photo is the face.
    aligned: bool = False


@dataclass
class DetectOptions:
    """How faces are found and which of them are restored."""

    detector: str = DEFAULT_DETECTOR
    max_side: int = DEFAULT_DETECT_MAX_SIDE
    #: all | largest | center
    faces: str = "all"
    min_face: int = DEFAULT_MIN_FACE


@dataclass
class ReferenceOptions:
    """Good photos of the people in the album (DMDNet's specific dictionaries) and how faces find them."""

    refs: Path | None = None
    force_refs: bool = False
    people: Path | None = None
    #: auto (insightface when its pack is on disk, else dlib), dlib or insightface[:pack].
    embedder: str = DEFAULT_EMBEDDER
    #: None: the embedder's own default (``face/identity.py``: dlib 0.55 / 0.12, insightface 1.2 / 0.065).
    threshold: float | None = None
    margin: float | None = None
    cache_dir: Path | None = None
    #: Accept group photos as references (their largest face, when it is clearly the largest).
    allow_groups: bool = False


@dataclass
class PasteOptions:
    """How a restored face goes back into its photo."""

    #: How much of the restored face replaces the original: None (``--strength auto``) measures each
    #: face's degradation and restores only what it needs (a clean face is left exactly as it was);
    #: 0 keeps every original face, 1 replaces it fully.
    strength: float | None = None
    upscale: int = 1
    tone_match: bool = True


@dataclass
class OutputOptions:
    """What is written besides the restored photo, and how."""

    #: JPEG/WebP/HEIF quality. None: a JPEG written from a JPEG keeps the source's own blocks away
    #: from the faces (and its quality where it must be re-encoded); other lossy outputs use
    #: ``DEFAULT_JPEG_QUALITY``. A number forces a whole re-encode at it.
    quality: int | None = None
    skip_existing: bool = False
    save_faces: bool = False
    compare: bool = False


#: Command-line flag name (as a keyword) -> (group, field), for :meth:`RestoreOptions.from_flat`.
_FLAT: dict[str, tuple[str, str]] = {
    "device": ("runtime", "device"),
    "half": ("runtime", "half"),
    "threads": ("runtime", "threads"),
    "batch_size": ("runtime", "batch_size"),
    "backend": ("runtime", "backend"),
    "max_pixels": ("input", "max_pixels"),
    "aligned": ("input", "aligned"),
    "detector": ("detect", "detector"),
    "detect_max_side": ("detect", "max_side"),
    "faces": ("detect", "faces"),
    "min_face": ("detect", "min_face"),
    "refs": ("references", "refs"),
    "force_refs": ("references", "force_refs"),
    "people": ("references", "people"),
    "embedder": ("references", "embedder"),
    "people_threshold": ("references", "threshold"),
    "people_margin": ("references", "margin"),
    "cache_dir": ("references", "cache_dir"),
    "allow_groups": ("references", "allow_groups"),
    "strength": ("paste", "strength"),
    "blend": ("paste", "strength"),  # the 0.1 name of --strength
    "upscale": ("paste", "upscale"),
    "tone_match": ("paste", "tone_match"),
    "quality": ("output", "quality"),
    "skip_existing": ("output", "skip_existing"),
    "save_faces": ("output", "save_faces"),
    "compare": ("output", "compare"),
}


@dataclass
class RestoreOptions:
    """Everything a restore run can be asked to do."""

    #: A registered restorer (``facerestore_cli.restore.METHODS``) or ``none``.
    method: str = DEFAULT_METHOD
    weights: Path | None = None
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    input: InputOptions = field(default_factory=InputOptions)
    detect: DetectOptions = field(default_factory=DetectOptions)
    references: ReferenceOptions = field(default_factory=ReferenceOptions)
    paste: PasteOptions = field(default_factory=PasteOptions)
    output: OutputOptions = field(default_factory=OutputOptions)

    @classmethod
    def from_flat(cls, method: str = DEFAULT_METHOD, weights: Path | None = None, **flags: Any) -> RestoreOptions:
        """Options from the command line's flag names (``detect_max_side``, ``people_threshold``, ...)."""
        unknown = sorted(set(flags) - set(_FLAT))
        if unknown:
            raise TypeError(f"unknown restore options: {', '.join(unknown)}")
        options = cls(method=method, weights=None if weights is None else Path(weights))
        for name, value in flags.items():
            group, attr = _FLAT[name]
            setattr(getattr(options, group), attr, value)
        return options

    def replace(self, **changes: Any) -> RestoreOptions:
        """A copy with top-level fields or groups replaced (the groups are copied, never shared)."""
        copied = {f.name: dataclasses.replace(v) for f in dataclasses.fields(self) if dataclasses.is_dataclass(
            v := getattr(self, f.name))}  # fmt: skip
        return dataclasses.replace(self, **{**copied, **changes})

    @property
    def uses_references(self) -> bool:
        return bool(self.references.refs or self.references.people)

    def check(self) -> None:
        """Raise ``ValueError`` for combinations that cannot work (the CLI turns it into exit 2)."""
        from facerestore_cli.face.identity import resolve_embedder
        from facerestore_cli.restore import METHODS, method_uses_references

        if self.method not in METHODS:
            raise ValueError(f"--method {self.method}: choose {', '.join(METHODS)}")
        rt, inp, det, refs, paste, out = self.runtime, self.input, self.detect, self.references, self.paste, self.output
        if rt.batch_size < 1:
            raise ValueError("--batch-size must be 1 or more")
        if rt.threads is not None and rt.threads < 1:
            raise ValueError("--threads must be 1 or more")
        if rt.backend not in ("auto", "torch", "onnxruntime"):
            raise ValueError("--backend must be auto, torch or onnxruntime")
        if inp.max_pixels is not None and inp.max_pixels < 1:
            raise ValueError("--max-pixels must be a positive number of pixels")
        if det.faces not in ("all", "largest", "center"):
            raise ValueError("--faces must be all, largest or center")
        if det.min_face < 0:
            raise ValueError("--min-face must be 0 or more")
        if det.max_side < 64:
            raise ValueError("--detect-size must be at least 64")
        if paste.strength is not None and not 0.0 <= paste.strength <= 1.0:
            raise ValueError("--strength must be auto or between 0 and 1")
        if paste.upscale < 1 or paste.upscale > 8:
            raise ValueError("--upscale must be between 1 and 8")
        if self.uses_references and not method_uses_references(self.method):
            raise ValueError(f"--refs and --people need a method that reads references, not {self.method}")
        if refs.refs and refs.people:
            raise ValueError("use either --refs (one person) or --people (a folder of people), not both")
        if inp.aligned and paste.upscale != 1:
            raise ValueError("--upscale does not apply to --aligned crops")
        if out.quality is not None and not 1 <= out.quality <= 100:
            raise ValueError("--quality must be between 1 and 100")
        if refs.threshold is not None and not refs.threshold > 0:
            raise ValueError("--people-threshold must be above 0")
        if refs.margin is not None and not refs.margin >= 0:
            raise ValueError("--people-margin must be 0 or more")
        try:
            resolve_embedder(refs.embedder)
        except ValueError as exc:
            raise ValueError(f"--embedder: {exc}") from None


@dataclass
class ClusterOptions:
    """Where an album runs: ``local`` (this process, :class:`~facerestore_cli.runner.AlbumRunner`) or
    ``ray`` (an actor pool on a Ray cluster, :mod:`facerestore_cli.cluster`).

    Kept apart from :class:`RestoreOptions` because none of it changes a photo: the same restore
    options give byte-identical outputs on either engine.
    """

    engine: str = "local"
    #: ``auto`` (the running cluster), ``ray://host:port`` or ``host:port``; None starts a local instance.
    address: str | None = None
    #: The actor pool's size; None: as many as the cluster's CPUs (or GPUs) hold.
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    def check(self) -> None:
        """Raise ``ValueError`` for settings that cannot work (the CLI turns it into exit 2)."""
        if self.engine not in ("local", "ray"):
            raise ValueError(f"--engine {self.engine}: choose local or ray")
        if self.engine == "local":
            given = [flag for flag, value, default in (
                ("--ray-address", self.address, None), ("--workers", self.workers, None),
                ("--gpus-per-worker", self.gpus_per_worker, 0.0), ("--cpus-per-worker", self.cpus_per_worker, 1.0),
            ) if value != default]  # fmt: skip
            if given:
                raise ValueError(f"{', '.join(given)} need(s) --engine ray")
        if self.workers is not None and self.workers < 1:
            raise ValueError("--workers must be 1 or more")
        if self.gpus_per_worker < 0:
            raise ValueError("--gpus-per-worker must be 0 or more")
        if self.cpus_per_worker <= 0:
            raise ValueError("--cpus-per-worker must be above 0")
