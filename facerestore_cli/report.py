"""What happened to every photo and every face, for people (a table) and scripts (JSON).

File names are bytes on POSIX, and not every name is UTF-8: Python decodes the others with
``surrogateescape``. A report line keeps such a name losslessly: the lone surrogates are written as
JSON ``\\udcXX`` escapes (the rest of the line stays readable UTF-8), so
``os.fsencode(json.loads(line)["input"])`` gives back the name's exact bytes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["OK_STATUSES", "FaceReport", "ImageReport", "ReportWriter", "Summary", "json_line"]


#: Image statuses that count as success for the exit code.
OK_STATUSES = frozenset({"restored", "unchanged", "no-faces", "exists"})

_SURROGATE = re.compile("[\ud800-\udfff]")


def json_line(data: Any) -> str:
    """One JSON line that is valid UTF-8 whatever the file names in it (see the module's docstring)."""
    text = json.dumps(data, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


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
    #: photos left out on purpose but not done (a HEIC photo without pillow-heif): the exit code is 1
    skipped: int = 0
    #: report lines that could not be written (a full disk, ``/dev/full``): the exit code is 1
    report_errors: int = 0
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
        elif report.status == "skipped":
            self.skipped += 1
            self.failures.append({"input": report.input, "reason": report.reason, "error": report.error})
        else:
            self.failed += 1
            self.failures.append({"input": report.input, "reason": report.reason, "error": report.error})

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 128 + self.signal
        return 1 if self.failed or self.skipped or self.report_errors else 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        d["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        d["exit_code"] = self.exit_code
        return d


class ReportWriter:
    """``--report FILE``: one JSON line per image, written as soon as the image is done, so an
    interrupted album still has a complete record of what was finished.

    A line that cannot be written (a full disk, ``/dev/full``) never stops the album: the file is cut
    back to its last whole line, the failure is counted in :attr:`errors` and told to ``on_error``,
    and the run's exit code says something failed. With ``keep_earlier`` (``--skip-existing``) the
    file's earlier lines are read first, and a photo skipped because its output exists gets its earlier
    line again (marked ``"from_earlier_run": true``) instead of a bare ``exists``: a resumed album's
    report still has one line per photo, saying how each output was made.
    """

    def __init__(
        self, path: Path, *, keep_earlier: bool = False, on_error: Callable[[str], None] | None = None
    ) -> None:
        self.path = path
        self.on_error = on_error
        #: why each line that could not be written was lost
        self.errors: list[str] = []
        self._earlier = _earlier_lines(path) if keep_earlier else {}
        path.parent.mkdir(parents=True, exist_ok=True)
        # unbuffered bytes: a failed write is known at once, and nothing of it lingers in a buffer
        self._file: IO[bytes] = path.open("wb", buffering=0)
        self._good = 0  # bytes of whole lines written so far
        self._lock = threading.Lock()

    def write(self, report: ImageReport) -> bool:
        """Write the line of ``report``; False (and :attr:`errors` grows) when it could not be written."""
        row = report.to_json()
        earlier = self._earlier.get(report.output or "") if report.status == "exists" else None
        if earlier is not None and earlier.get("input") == report.input:
            row = {**earlier, "from_earlier_run": True}
        try:
            data = (json_line(row) + "\n").encode("utf-8")
        except (TypeError, ValueError, UnicodeError) as exc:  # never expected: say so in the file itself
            row = {"input": report.input, "status": "failed", "reason": "report-error", "error": str(exc)}
            data = (json_line(row) + "\n").encode("utf-8")
        with self._lock:
            try:
                view = memoryview(data)
                while view:
                    n = self._file.write(view)
                    if not n:
                        raise OSError(errno.ENOSPC, "nothing could be written")
                    view = view[n:]
            except OSError as exc:
                with contextlib.suppress(OSError):  # keep whole lines only (a device cannot be cut)
                    os.ftruncate(self._file.fileno(), self._good)
                    self._file.seek(self._good)
                message = f"--report {self.path}: could not write the line of {report.input} ({exc.strerror or exc})"
                self.errors.append(message)
                if self.on_error is not None:
                    self.on_error(message)
                return False
            self._good += len(data)
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _earlier_lines(path: Path) -> dict[str, dict[str, Any]]:
    """The earlier run's lines of photos that were done, by output path (what ``exists`` is about)."""
    try:
        if not path.is_file():
            return {}
        lines = path.read_bytes().splitlines()
    except OSError:
        return {}
    rows: dict[str, dict[str, Any]] = {}
    for line in lines:
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(row, dict) and row.get("output") and row.get("status") in OK_STATUSES:
            rows[str(row["output"])] = row
    return rows
