"""What the benchmarks share: the London pairs, their fixed degradations, people folders and tables.

The benchmarks are scripts (``python bench/quality.py``), not part of the package: they import the
library exactly as a user's script would, and this module only holds the plumbing they have in common.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
#: Fixed degradation strengths of the evaluation (``fixed_degradation(scale)``).
SCALES = (4, 8)
#: The strengths ``bench/quality.py`` reports: the evaluation's plus x16 (a 32-pixel face, blur σ 2, noise
#: σ 8, JPEG 75 like the others), where references should matter most. A separate name so that the routing
#: bench, whose thresholds were calibrated on x4 and x8, keeps measuring what it always did.
QUALITY_SCALES = (*SCALES, 16)
LONDON_PAIRS = Path("data") / "eval-dev" / "london-pairs"


@dataclass(frozen=True)
class PersonPair:
    """One London-pairs person: ``index`` is the position in the full sorted list (the noise seed)."""

    index: int
    name: str
    neutral: Path
    smiling: Path


def shared_root() -> Path:
    """``$FACERESTORE_SHARED``, else ``<repo>/../shared`` (the CI layout)."""
    shared = os.environ.get("FACERESTORE_SHARED")
    return Path(shared) if shared else REPO.parent / "shared"


#: The real whole photos the speed benches run on.
REALWORLD_WHOLE = Path("data") / "eval-dev" / "realworld" / "whole"


def default_data_dir() -> Path:
    """``$FACERESTORE_SHARED/data/eval-dev/london-pairs``, else ``<repo>/../shared/...`` (the CI layout)."""
    return shared_root() / LONDON_PAIRS


def london_pairs(folder: Path | None = None, limit: int | None = None) -> list[PersonPair]:
    """The people of the London pairs in name order; exits with a clear message when the data is missing."""
    folder = Path(folder) if folder else default_data_dir()
    if not folder.is_dir():
        sys.exit(
            f"error: the London pairs are not at {folder}. Set FACERESTORE_SHARED to the shared data folder "
            "(the one holding data/eval-dev/london-pairs) or pass --data."
        )
    people = []
    for index, sub in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
        neutral, smiling = sub / "neutral.jpg", sub / "smiling.jpg"
        if not (neutral.is_file() and smiling.is_file()):
            sys.exit(f"error: {sub} lacks neutral.jpg or smiling.jpg")
        people.append(PersonPair(index, sub.name, neutral, smiling))
    if not people:
        sys.exit(f"error: no person folders in {folder}")
    return people[:limit] if limit else people


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        sys.exit(f"error: cannot read {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def degraded(rgb: np.ndarray, scale: int, seed: int) -> np.ndarray:
    """The benchmark input: ``fixed_degradation(scale, seed=person index)``, back at the original size.

    Any integer scale works the same way (x16 included): only the down-sampling factor changes.
    """
    from facerestore_cli.train.degrade import degrade, fixed_degradation

    return degrade(rgb, fixed_degradation(scale, seed=seed))


def make_people_folder(root: Path, people: Iterable[PersonPair], photo: str = "neutral") -> Path:
    """``root/<name>/<photo>.jpg`` symlinks (copies where links are not allowed): a ``--people`` folder."""
    root.mkdir(parents=True, exist_ok=True)
    for p in people:
        folder = root / p.name
        folder.mkdir(exist_ok=True)
        src = p.neutral if photo == "neutral" else p.smiling
        dst = folder / src.name
        if dst.exists() or dst.is_symlink():
            continue
        try:
            dst.symlink_to(src.resolve())
        except OSError:
            dst.write_bytes(src.read_bytes())
    return root


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, default=None, help="london-pairs folder (default: from FACERESTORE_SHARED)"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N people")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, ...")
    parser.add_argument(
        "--dmdnet-weights", type=Path, default=None, help="DMDNet weights (default: the normal weights lookup)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")


def set_threads(threads: int) -> None:
    """Pin every thread pool before torch, OpenCV or ONNX Runtime start theirs."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    cv2.setNumThreads(threads)


def mean_std(values: Sequence[float], fmt: str = "{:.3f}") -> str:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return "n/a"
    return f"{fmt.format(a.mean())} ± {fmt.format(a.std(ddof=1) if a.size > 1 else 0.0)}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def percentiles(values: Sequence[float], qs: Sequence[float] = (0, 1, 5, 25, 50, 75, 95, 99, 100)) -> list[float]:
    a = np.asarray(values, dtype=np.float64)
    return [float(np.percentile(a, q)) for q in qs] if a.size else [float("nan")] * len(qs)


def environment() -> dict[str, str]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
        "threads": str(torch.get_num_threads()),
    }


def write_json(path: Path | None, payload: dict) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"\nwrote {path}")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
