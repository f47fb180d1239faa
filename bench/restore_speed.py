"""Seconds per face of each restorer on this CPU, side by side.

    python bench/restore_speed.py [--threads N] [--repeats K] [--batch B]
        [--dmdnet-weights FILE] [--memgan-weights FILE]

Every restorer runs on the same aligned 512x512 faces (scikit-image's astronaut, aligned by our own
pipeline, repeated to make a batch) in one process; the variants are interleaved and the median of
``--repeats`` runs is reported, with ratios against DMDNet's generic restore (the baseline measured
in the same run). The shipped compact weights are used unless other files are given. The goal of
the training issue is at most 3 s per 512 face on this 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from facerestore_cli.device import make_runtime
from facerestore_cli.face.align import align_face
from facerestore_cli.face.detect import create_detector
from facerestore_cli.face.landmarks import default_predictor
from facerestore_cli.restore import create_restorer

BUDGET_S = 3.0


def astronaut_face() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    rgb = data.astronaut()
    face = create_detector("retinaface").detect(rgb)[0]
    crop = align_face(rgb, face.landmarks).image
    return crop, default_predictor().predict(crop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1, help="faces per model call")
    parser.add_argument("--dmdnet-weights", type=Path, default=None)
    parser.add_argument("--memgan-weights", type=Path, default=None)
    args = parser.parse_args()

    runtime = make_runtime("cpu", threads=args.threads)
    crop, marks = astronaut_face()
    faces = np.stack([crop] * args.batch)
    lms = np.stack([marks] * args.batch)
    dmd = create_restorer("dmdnet", weights=args.dmdnet_weights, runtime=runtime, batch_size=args.batch)
    mem = create_restorer("memgan", weights=args.memgan_weights, runtime=runtime, batch_size=args.batch)
    refs = dmd.encode_references(np.stack([crop[:, ::-1].copy(), crop]), np.stack([marks, marks]))
    # (the mirrored astronaut is not a sensible reference, but the cost does not depend on who it is)

    variants = {
        "dmdnet generic": lambda: dmd.restore(faces, lms),
        "dmdnet + cached refs (2)": lambda: dmd.restore(faces, lms, refs),
        "memgan": lambda: mem.restore(faces, lms),
    }
    for fn in variants.values():  # warm-up: allocator, oneDNN primitive caches
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / args.batch)

    base = statistics.median(times["dmdnet generic"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"load average {os.getloadavg()[0]:.2f}, median of {args.repeats}")  # fmt: skip
    print(f"dmdnet weights: {dmd.info.weights} ({dmd.info.config})")
    print(f"memgan weights: {mem.info.weights} ({mem.info.config})")
    print()
    print("| restorer | s / face | vs dmdnet generic | within 3 s |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {med / base:.2f}x | {'yes' if med <= BUDGET_S else 'NO'} |")


if __name__ == "__main__":
    main()
