"""Start-up: the wall time of one ``facerestore PHOTO`` call, as a shell script that calls us per photo sees it.

    python bench/startup.py [--photo FILE] [--runs 5] [--method none --method dmdnet ...] [--importtime]

Each run is a fresh process (``python -m facerestore_cli PHOTO -o TMP -q``) timed from spawn to exit;
the table gives the median and the spread of ``--runs`` runs per method, alternating methods so that a
change of load on a shared machine hits all of them alike. One warm-up call per method first fills the
page cache and the one-time caches (the numpy copy of dlib's landmark model, ONNX exports, the
optimised onnxruntime graphs), which a user pays once, not per photo. The package's bytecode is
compiled first, as an install does. ``--importtime`` also prints the slowest imports of one ``--method none``
run (``python -X importtime``) and whether torch was imported at all.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REALWORLD_WHOLE, shared_root

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTO = shared_root() / REALWORLD_WHOLE / "tencentarc_00.jpg"
#: The issue's goals, seconds: the median of one photo, per method.
GOALS = {"none": 1.0, "dmdnet": 1.5}


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--method", action="append", help="methods to time (default: none and dmdnet)")
    p.add_argument("--extra", default="", help="extra CLI options for every run, e.g. '--backend torch'")
    p.add_argument("--importtime", action="store_true")
    return p.parse_args()


def _command(photo: Path, method: str, out: Path, extra: str) -> list[str]:
    return [sys.executable, "-m", "facerestore_cli", str(photo), "--method", method, "-o", str(out), "-q",
            *extra.split()]  # fmt: skip


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return took


def _importtime(photo: Path, out: Path, extra: str) -> None:
    cmd = _command(photo, "none", out, extra)
    done = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if cumulative.strip().isdigit():
            rows.append((int(cumulative), name.rstrip()))
    top = [(us, name) for us, name in rows if not name.startswith("  ")]
    print("\nslowest top-level imports (--method none):")
    for us, name in sorted(top, reverse=True)[:12]:
        print(f"  {us / 1e6:6.3f} s  {name.strip()}")
    print("  torch imported:", any(name.strip() == "torch" for _, name in rows))


def main() -> None:
    args = _parse()
    methods = args.method or ["none", "dmdnet"]
    if not args.photo.is_file():
        sys.exit(f"error: {args.photo} not found (set FACERESTORE_SHARED or pass --photo)")
    times: dict[str, list[float]] = {m: [] for m in methods}
    # An installed package has its bytecode compiled (pip does it); an editable checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module at every start (about 0.15 s).
    compileall.compile_dir(REPO / "facerestore_cli", quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:  # warm-up: page cache and one-time caches
            _timed(_command(args.photo, m, Path(tmp) / f"warm-{m}", args.extra))
        for run in range(args.runs):
            for m in methods:
                times[m].append(_timed(_command(args.photo, m, Path(tmp) / f"{m}-{run}", args.extra)))
        if args.importtime:
            _importtime(args.photo, Path(tmp) / "imports", args.extra)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\none photo ({args.photo.name}), {args.runs} runs each, load average {load:.1f}, {os.cpu_count()} CPUs")
    print(f"{'method':<10} {'median s':>9} {'min s':>7} {'max s':>7} {'goal s':>7}  met")
    for m in methods:
        med = statistics.median(times[m])
        goal = GOALS.get(m)
        met = "" if goal is None else ("yes" if med <= goal else "no")
        goal_s = f"{goal:.1f}" if goal else "-"
        print(f"{m:<10} {med:9.2f} {min(times[m]):7.2f} {max(times[m]):7.2f} {goal_s:>7}  {met}")


if __name__ == "__main__":
    main()
