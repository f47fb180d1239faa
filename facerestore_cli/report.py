"""What happened to every photo and every face, for people (a table) and scripts (JSON)."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["OK_STATUSES", "FaceReport", "ImageReport", "ReportWriter", "Summary"]


#: Image statuses that count as success for the exit code.
OK_STATUSES = frozenset({"restored", "unchanged", "no-faces", "exists"})


@dataclass
class FaceReport:
    """One detected face: where, how sure, and what was done with it."""

    index: int
    box: list[float]
    score: float
    size: float
    restored: bool = False
    skipped: str | None = None
    person: str | None = None
    similarity: float | None = None
    distance: float | None = None
    routing: str | None = None
    #: The face embedder that compared the face with the references (``dlib``, ``insightface:<pack>``).
    embedder: str | None = None
    crop: str | None = None
    restored_crop: str | None = None
    #: Why the restorer's output for this face was rejected (its photo then fails, untouched).
    error: str | None = None
    #: How much of the restored face was pasted (0..1) and the measures it was chosen from
    #: (``face.degradation``: ``need`` 0 clean .. 1 badly degraded), under ``--strength auto``.
    strength: float | None = None
    degradation: dict[str, float] | None = None


@dataclass
class ImageReport:
    """One input photo. ``status``: restored, unchanged (faces found, none needed restoring or all were
    skipped), no-faces, exists (skipped by --skip-existing), failed."""

    input: str
    output: str | None = None
    status: str = "failed"
    reason: str | None = None
    error: str | None = None
    faces_found: int = 0
    faces_restored: int = 0
    faces_skipped: int = 0
    faces: list[FaceReport] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    size: list[int] | None = None
    #: How the output was written: "copied unchanged", "blocks: ..." (a JPEG whose blocks away from the
    #: faces are the source's own), "re-encoded at ..." or "encoded".
    written: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 4)
        d["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        return d


@dataclass
class Summary:
    """Totals of a run and the exit code they imply (0 all done, 1 some failed, 128 + the signal when
    interrupted: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""

    images: int = 0
    restored: int = 0
    no_faces: int = 0
    unchanged: int = 0
    skipped_existing: int = 0
    failed: int = 0
    faces_found: int = 0
    faces_restored: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    #: the signal that interrupted the run (SIGINT 2, SIGHUP 1, SIGTERM 15): the exit code is 128 + it
    signal: int = 2
    timings: dict[str, float] = field(default_factory=dict)
    failures: list[dict[str, str | None]] = field(default_factory=list)
    #: Which model and weights file (with its sha256) did the work, so a result can be traced later.
    restorer: dict[str, Any] | None = None

    def add(self, report: ImageReport) -> None:
        self.images += 1
        self.faces_found += report.faces_found
        if report.ok:  # a face restored in memory but never written (the save failed) is not restored
            self.faces_restored += report.faces_restored
        for stage, t in report.timings.items():
            self.timings[stage] = self.timings.get(stage, 0.0) + t
        if report.status == "restored":
            self.restored += 1
        elif report.status == "no-faces":
            self.no_faces += 1
        elif report.status == "unchanged":
            self.unchanged += 1
        elif report.status == "exists":
            self.skipped_existing += 1
        else:
            self.failed += 1
            self.failures.append({"input": report.input, "reason": report.reason, "error": report.error})

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 128 + self.signal
        return 1 if self.failed else 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        d["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        d["exit_code"] = self.exit_code
        return d


class ReportWriter:
    """``--report FILE``: one JSON line per image, flushed as soon as the image is done, so an
    interrupted album still has a complete record of what was finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("w", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, report: ImageReport) -> None:
        line = json.dumps(report.to_json(), ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
