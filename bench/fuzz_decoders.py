"""Fuzz the photo decoders: any file must load or fail with an ImageFileError, quickly and in bounded memory.

    python bench/fuzz_decoders.py [--cases 10000] [--seed 0] [--workers 2] [--timeout 10] [--memory-gb 2]
                                  [--max-pixels 16777216] [--data DIR | --synthetic] [--out DIR]
    python bench/fuzz_decoders.py --replay FILE [FILE ...]

An album is thousands of files from anywhere, and one malformed file must cost one line in the report,
never the run. ``load_photo`` promises exactly that: for any bytes, a Photo or an ImageFileError with a
reason. This script tests the promise the way a bad SD card or a hostile file would: it makes real seed
files in every variant the module reads (from a few photos of the shared eval set, resized small so a
decode takes milliseconds; synthetic pictures when that data is absent), mutates them (bit flips,
overwritten runs, truncation, duplicated or deleted chunks, and edits of the header fields decoders
trust: sizes, depths, counts, offsets, with PNG checksums fixed so the damage reaches the decoder), and
loads each case in a worker process limited to ``--memory-gb`` of address space, killing and replacing
any worker that takes longer than ``--timeout`` seconds.

Outcomes, per seed format: loaded; error (an ImageFileError, counted per reason; "guarded" counts those
that only load_photo's last-line guard turned into a reason, i.e. a decoder failed in an unplanned way);
crash (any other exception); hang; blow-up (MemoryError, an out-of-memory error turned into a reason, or
the worker killed). Crashes, hangs and blow-ups are saved under ``--out`` with a JSON note; ``--replay``
loads such a file in-process and prints the traceback. Exit status 1 if any occurred.

Case i of a run is drawn from a generator seeded with (``--seed``, i), so any case can be regenerated.
The memory bound is only meaningful with a pixel cap well under the library default: at 178 Mpx a
*valid* 16-bit RGBA photo alone takes 1.4 GB, hence ``--max-pixels`` 16 Mpx here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import select
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_cases import FORMATS, SUFFIX, Case, Seed, make_case, make_seeds, shared_pictures, synthetic_pictures

REPO = Path(__file__).resolve().parent.parent
OUTCOMES = ("loaded", "error", "crash", "hang", "blow-up")
FAILURES = ("crash", "hang", "blow-up")
DEFAULT_MAX_PIXELS = 1 << 24
#: Decoder messages that mean an allocation failed, whatever exception carried them.
_OUT_OF_MEMORY = re.compile(r"out of memory|insufficient memory|cannot allocate|failed to allocate|bad_alloc", re.I)
_WORKER_START_S = 120.0


@dataclass
class Report:
    """What a run found; ``failures`` holds the crash/hang/blow-up notes (also saved under the out folder)."""

    counts: Counter = field(default_factory=Counter)  # (format, outcome)
    reasons: Counter = field(default_factory=Counter)  # (format, reason)
    guarded: Counter = field(default_factory=Counter)  # (format, "Type: message @ where")
    failures: list[dict] = field(default_factory=list)
    slowest: list[tuple[float, int, str]] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    wall_s: float = 0.0

    @property
    def cases(self) -> int:
        return sum(self.counts.values())

    def total(self, outcome: str) -> int:
        return sum(n for (_, o), n in self.counts.items() if o == outcome)

    @property
    def failed(self) -> int:
        return sum(n for (_, outcome), n in self.counts.items() if outcome in FAILURES)


# --------------------------------------------------------------------------------------------------
# one load, classified (runs in the worker, and in-process for --replay)


def _where(tb: traceback.StackSummary) -> str:
    frame = tb[-1] if tb else None
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}" if frame else "?"


def classify(path: Path, max_pixels: int | None) -> dict:
    """Load one file and say what happened, as the JSON the worker sends back."""
    from facerestore_cli.imagefile import ImageFileError, load_photo

    start = time.perf_counter()
    try:
        photo = load_photo(path, max_pixels=max_pixels)
        result = {"outcome": "loaded", "detail": f"{photo.width}x{photo.height}x{photo.channels} {photo.bit_depth}-bit"}
    except ImageFileError as exc:
        result = {"outcome": "error", "reason": exc.reason, "detail": exc.detail}
        raised_in = traceback.extract_tb(exc.__traceback__)
        cause = exc.__cause__
        if cause is not None and raised_in and raised_in[-1].name == "load_photo":
            # load_photo's last-line guard: a decoder failed in a way no specific check foresaw
            where = _where(traceback.extract_tb(cause.__traceback__))
            result["guarded"] = f"{type(cause).__name__}: {str(cause)[:80]} @ {where}"
        context, memory = exc.__context__, False
        while context is not None and not memory:
            memory, context = isinstance(context, MemoryError), context.__context__
        if memory or _OUT_OF_MEMORY.search(exc.detail):
            result["outcome"] = "blow-up"
    except MemoryError as exc:
        result = {"outcome": "blow-up", "detail": f"MemoryError: {exc}"}
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        result = {"outcome": "crash", "detail": f"{last} @ {_where(tb)}", "traceback": traceback.format_exc()}
    result["seconds"] = round(time.perf_counter() - start, 4)
    result["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def worker_main(max_pixels: int | None, memory_bytes: int) -> None:
    """Serve paths from stdin, one JSON line each on the original stdout, under an address-space limit."""
    import logging
    import warnings

    warnings.simplefilter("ignore")  # Pillow and tifffile warn on every damaged file
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    import cv2  # noqa: F401  imported before the limit, as a long-lived process would have it
    import tifffile  # noqa: F401

    import facerestore_cli.imagefile  # noqa: F401

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to the log, not into the protocol
    out.write("ready\n")
    for line in sys.stdin:
        out.write(json.dumps(classify(Path(line.rstrip("\n")), max_pixels)) + "\n")


# --------------------------------------------------------------------------------------------------
# the pool: a worker that hangs is killed and replaced; one that dies is a finding


class _Worker:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OPENCV_FOR_THREADS_NUM="1")
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)
        self.fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        self.buf = b""
        self.ready = False
        self.case: Case | None = None
        self.path: Path | None = None
        self.since = time.monotonic()

    def send(self, case: Case, path: Path) -> bool:
        self.case, self.path, self.since = case, path, time.monotonic()
        try:
            self.proc.stdin.write(f"{path}\n".encode())  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            return False
        return True

    def read_lines(self) -> tuple[list[str], bool]:
        chunk = os.read(self.fd, 1 << 16)
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        return [line.decode() for line in lines], not chunk

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        return code

    def log_tail(self) -> str:
        try:
            return self.log.read_bytes()[-2000:].decode("utf-8", "replace")
        except OSError:
            return ""


def _death(code: int, log: str) -> dict:
    """A worker that died mid-case: killed (the kernel's OOM killer), out of memory, or a native crash."""
    import signal

    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    memory = code == -signal.SIGKILL or bool(_OUT_OF_MEMORY.search(log))
    return {"outcome": "blow-up" if memory else "crash", "detail": f"the worker died ({how})", "log": log}


def run_cases(
    cases: Iterable[Case],
    *,
    workers: int = 2,
    timeout: float = 10.0,
    memory_bytes: int = 2 << 30,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    out_dir: Path,
    progress: bool = False,
) -> Report:
    """Load every case in ``workers`` processes and tally the outcomes; failures are saved in ``out_dir``."""
    report = Report()
    started = time.monotonic()
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--memory", str(memory_bytes)]
    argv += ["--max-pixels", str(max_pixels or 0)]
    with tempfile.TemporaryDirectory(prefix="fuzz-cases-") as tmp:
        logs = Path(tmp)
        spawned = 0

        def spawn() -> _Worker:
            nonlocal spawned
            spawned += 1
            return _Worker(argv, logs / f"worker-{spawned}.log")

        pool = [spawn() for _ in range(workers)]
        pending: Iterator[Case] = iter(cases)
        exhausted = False
        try:
            while True:
                for i, w in enumerate(pool):
                    if w.ready and w.case is None and not exhausted:
                        case = next(pending, None)
                        if case is None:
                            exhausted = True
                            break
                        path = logs / f"case-{case.index}{SUFFIX[case.seed.format]}"
                        path.write_bytes(case.data)
                        if not w.send(case, path):
                            _record(report, case, _death(w.stop(), w.log_tail()), out_dir)
                            pool[i] = spawn()
                if exhausted and all(w.case is None for w in pool):
                    break
                waiting = [w for w in pool if w.case is not None or not w.ready]
                deadlines = [w.since + (timeout if w.ready else _WORKER_START_S) for w in waiting]
                wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                ready, _, _ = select.select([w.fd for w in pool], [], [], wait)
                for i, w in enumerate(pool):
                    result, dead = None, False
                    if w.fd in ready:
                        lines, dead = w.read_lines()
                        for line in lines:
                            if line == "ready":
                                w.ready, w.since = True, time.monotonic()
                            elif w.case is not None:
                                result = json.loads(line)
                        if dead and not w.ready:
                            raise RuntimeError(f"a fuzz worker failed to start:\n{w.log_tail()}")
                        if dead and result is None and w.case is not None:
                            result = _death(w.stop(), w.log_tail())
                    elif w.case is not None and time.monotonic() - w.since > timeout:
                        w.stop()
                        result = {"outcome": "hang", "detail": f"no answer within {timeout:g} s", "seconds": timeout}
                    elif not w.ready and time.monotonic() - w.since > _WORKER_START_S:
                        raise RuntimeError(f"a fuzz worker did not start in {_WORKER_START_S:g} s:\n{w.log_tail()}")
                    if result is None:
                        if dead:
                            w.stop()
                            pool[i] = spawn()
                        continue
                    if result is None:
                        continue
                    case, path = w.case, w.path
                    w.case = None
                    _record(report, case, result, out_dir)  # type: ignore[arg-type]
                    path.unlink(missing_ok=True)  # type: ignore[union-attr]
                    if dead or result["outcome"] in FAILURES:  # a worker that ran out of memory or died is replaced
                        w.stop()
                        pool[i] = spawn()
                    if progress and report.cases % 1000 == 0:
                        print(f"  {report.cases} cases, {time.monotonic() - started:.0f} s", file=sys.stderr)
        finally:
            for w in pool:
                w.stop()
    report.wall_s = time.monotonic() - started
    return report


def _record(report: Report, case: Case, result: dict, out_dir: Path) -> None:
    fmt, outcome = case.seed.format, result["outcome"]
    report.counts[fmt, outcome] += 1
    if outcome == "error":
        report.reasons[fmt, result["reason"]] += 1
        if "guarded" in result:
            report.guarded[fmt, re.sub(r"\d+", "N", result["guarded"])] += 1
    report.peak_rss_mb = max(report.peak_rss_mb, result.get("rss_mb", 0.0))
    report.slowest = sorted([*report.slowest, (result.get("seconds", 0.0), case.index, case.seed.name)])[-5:]
    if outcome in FAILURES:
        note = {"case": case.index, "seed": case.seed.name, "mutations": case.mutations, **result}
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = out_dir / f"{outcome}-{case.index:06d}-{case.seed.name}"
        stem.with_suffix(SUFFIX[fmt]).write_bytes(case.data)
        stem.with_suffix(".json").write_text(json.dumps(note, indent=2) + "\n")
        note["file"] = str(stem.with_suffix(SUFFIX[fmt]))
        report.failures.append(note)


# --------------------------------------------------------------------------------------------------
# the run


def fuzz(seeds: list[Seed], *, cases: int, seed: int = 0, first: int = 0, out_dir: Path, **options: object) -> Report:
    """Check that every seed loads, then run ``cases`` mutated cases (``first`` .. ``first + cases - 1``)."""
    from facerestore_cli.imagefile import load_photo

    with tempfile.TemporaryDirectory(prefix="fuzz-seeds-") as tmp:
        for s in seeds:
            path = Path(tmp) / f"{s.name}{SUFFIX[s.format]}"
            path.write_bytes(s.data)
            load_photo(path)  # a seed that does not load is a bug in the seeds or the library: stop here
    by_format: dict[str, list[Seed]] = {fmt: [s for s in seeds if s.format == fmt] for fmt in FORMATS}
    generated = (make_case(by_format, seed, i) for i in range(first, first + cases))
    return run_cases(generated, out_dir=out_dir, **options)  # type: ignore[arg-type]


def print_report(report: Report, title: str = "") -> None:
    """The counts per seed format and outcome, then per reason, then what the last-line guard caught."""
    if title:
        print(title)
    cols = ("cases", *OUTCOMES)
    print(f"{'format':<7}" + "".join(f"{c:>9}" for c in cols))
    for fmt in (*FORMATS, "total"):
        row = [sum(n for (f, _), n in report.counts.items() if fmt in (f, "total"))]
        row += [sum(n for (f, o), n in report.counts.items() if o == c and fmt in (f, "total")) for c in OUTCOMES]
        print(f"{fmt:<7}" + "".join(f"{v:>9}" for v in row))
    reasons = sorted({r for _, r in report.reasons})
    print("\nImageFileError reasons\n" + f"{'format':<7}" + "".join(f"{r:>14}" for r in (*reasons, "guarded")))
    for fmt in (*FORMATS, "total"):
        row = [
            sum(n for (f, r), n in report.reasons.items() if r == reason and fmt in (f, "total")) for reason in reasons
        ]
        row.append(sum(n for (f, _), n in report.guarded.items() if fmt in (f, "total")))
        print(f"{fmt:<7}" + "".join(f"{v:>14}" for v in row))
    if report.guarded:
        print("\nmost frequent errors that only load_photo's last-line guard caught:")
        for (fmt, what), n in report.guarded.most_common(12):
            print(f"  {n:>5}  {fmt:<5} {what}")
    for note in report.failures[:20]:
        print(f"\n{note['outcome'].upper()} case {note['case']} ({note['seed']}; {'; '.join(note['mutations'])})")
        print(f"  {note['detail']}\n  saved as {note['file']}")
    slow = ", ".join(f"{s:.2f} s (case {i}, {name})" for s, i, name in reversed(report.slowest[-3:]))
    print(f"\nslowest: {slow}\npeak worker memory (RSS): {report.peak_rss_mb:.0f} MB")
    print(
        f"wall time: {report.wall_s:.1f} s for {report.cases} cases ({report.cases / max(report.wall_s, 1e-9):.0f}/s)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0, help="run seed: case i is always the same file for a seed")
    p.add_argument("--first", type=int, default=0, help="index of the first case (to rerun a slice)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a case may take before it is a hang")
    p.add_argument("--memory-gb", type=float, default=2.0, help="address-space limit of each worker")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="load_photo's pixel cap (0: none)")
    p.add_argument("--data", type=Path, default=None, help="the shared folder (default $FACERESTORE_SHARED)")
    p.add_argument("--synthetic", action="store_true", help="synthetic seed pictures even if shared data exists")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "fuzz_decoders")
    p.add_argument("--replay", type=Path, nargs="+", help="load these files in-process and print what happened")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memory", type=int, default=2 << 30, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    max_pixels = args.max_pixels or None
    if args.worker:
        worker_main(max_pixels, args.memory)
        return 0
    if args.replay:
        for path in args.replay:
            result = classify(path, max_pixels)
            print(f"{path}: {result['outcome']} {result.get('reason', '')} {result.get('detail', '')}")
            extra = result.get("traceback") or result.get("guarded")
            if extra:
                print(extra.rstrip())
        return 0
    root = args.data or Path(os.environ.get("FACERESTORE_SHARED", REPO.parent / "shared"))
    pictures = [] if args.synthetic else shared_pictures(root)
    source = f"{len(pictures)} photos of {root / 'data' / 'eval-dev'}" if pictures else "synthetic pictures"
    if not pictures:
        if not args.synthetic:
            print(f"note: no shared photos under {root}/data/eval-dev; using synthetic pictures", file=sys.stderr)
        pictures = synthetic_pictures()
    seeds = make_seeds(pictures)
    print(f"{len(seeds)} seed files from {source}; {args.cases} cases, seed {args.seed}, {args.workers} workers")
    report = fuzz(
        seeds,
        cases=args.cases,
        seed=args.seed,
        first=args.first,
        out_dir=args.out,
        workers=args.workers,
        timeout=args.timeout,
        memory_bytes=int(args.memory_gb * (1 << 30)),
        max_pixels=max_pixels,
        progress=True,
    )
    print_report(report)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
