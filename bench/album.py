"""Album throughput and where the time goes, stage by stage.

    python bench/album.py [--folder DIR] [--threads N] [--method none] [--runs 2] [--detect-size 1600]
                          [--backend torch --backend onnxruntime]

Runs the album pipeline in-process (the same ``Pipeline.run`` the CLI uses) over every photo of a
folder. The first pass warms up (model loading, ONNX session, allocator, page cache) and is reported as
the baseline; the next passes are the measured ones. Outputs go to a temporary folder that is removed
afterwards. Prints images/minute, faces/second and the time split by stage (totals and per-image
means), with the thread count and the load average, since on a shared machine the load changes what
the numbers mean. With several ``--backend`` values the backends run one after the other in this
process, and a last table compares them: images/minute, the share of the measured wall time spent
outside the model (everything but the ``restore`` stage: decoding, detection, alignment, routing,
pasting, encoding, and the waits between them, i.e. how long the model waited), and the share of all
stage time that is not the model's (work that the three-stage overlap hides but does not remove).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from common import REALWORLD_WHOLE, shared_root

DEFAULT_FOLDER = shared_root() / REALWORLD_WHOLE


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the models")
    p.add_argument("--method", default="none", help="none, dmdnet or memgan")
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--runs", type=int, default=2, help="passes over the album; the first is the warm-up")
    p.add_argument("--detect-size", type=int, default=1600)
    p.add_argument("--upscale", type=int, default=1)
    p.add_argument("--recursive", "-r", action="store_true")
    p.add_argument("--per-image", action="store_true", help="also print one line per image")
    p.add_argument("--backend", action="append", help="torch, onnxruntime or auto (repeat to compare)")
    return p.parse_args()


def _run_once(pipeline, items, out_dir: Path):
    from facerestore_cli.album import OutputPlan
    from facerestore_cli.report import Summary

    reports = []
    summary = pipeline.run(items, OutputPlan(out_dir=out_dir), summary=Summary(), on_image=reports.append)
    return summary, reports


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    head = line(header)
    return "\n".join([head, "-" * len(head), *(line(r) for r in rows)])


def main() -> int:
    args = _parse()
    from facerestore_cli.album import discover_inputs

    found = discover_inputs([str(args.folder)], recursive=args.recursive)
    if not found.items:
        print(f"no photos in {args.folder}", file=sys.stderr)
        return 2
    results = []
    for backend in args.backend or ["auto"]:
        results.append(_bench(args, found, backend))
    if len(results) > 1:
        print("\nbackends, measured passes:")
        rows = [[b, f"{ipm:.1f}", f"{100 * outside:.1f}%", f"{100 * work:.1f}%"] for b, ipm, outside, work in results]
        print(_table(rows, ["backend", "images/min", "wall time outside the model", "stage time outside the model"]))
    return 0


def _bench(args: argparse.Namespace, found, backend: str) -> tuple[str, float, float, float]:
    """One backend's passes and tables; returns (backend, images/min, share of the wall time and share of
    the stage time outside the model)."""
    from facerestore_cli.pipeline import STAGES, Pipeline, RestoreOptions

    options = RestoreOptions(
        method=args.method, weights=args.weights, device="cpu", threads=args.threads,
        detect_max_side=args.detect_size, upscale=args.upscale, backend=backend,
    )  # fmt: skip
    t = time.perf_counter()
    pipeline = Pipeline(options)
    pipeline.prepare()
    setup = time.perf_counter() - t

    passes = []
    with tempfile.TemporaryDirectory(prefix="facerestore-bench-") as tmp:
        for k in range(max(1, args.runs)):
            load_before = os.getloadavg()[0]
            summary, reports = _run_once(pipeline, found.items, Path(tmp) / f"run{k}")
            passes.append((summary, reports, load_before, os.getloadavg()[0]))

    n = len(found.items)
    print(
        f"album {args.folder} ({n} photos), method {args.method}, backend {pipeline.runtime.backend}, "
        f"threads {args.threads}, "
        f"torch threads {_torch_threads()}, cpus {os.cpu_count()}, setup {setup:.2f} s"
    )
    header = ["pass", "wall s", "images/min", "faces/s", "faces", "failed", "load avg"]
    rows = []
    for k, (s, _reports, l0, l1) in enumerate(passes):
        label = "warm-up (baseline)" if k == 0 and len(passes) > 1 else f"measured {k}"
        rows.append(
            [
                label, f"{s.seconds:.2f}", f"{60 * s.images / s.seconds:.1f}",
                f"{s.faces_restored / s.seconds:.2f}", f"{s.faces_restored}/{s.faces_found}", str(s.failed),
                f"{l0:.2f}->{l1:.2f}",
            ]
        )  # fmt: skip
    print(_table(rows, header))
    print()

    measured = passes[1:] or passes
    stages = [*STAGES]
    header = ["stage", "total s", "mean s/img", "max s/img", "share"]
    totals = {st: 0.0 for st in stages}
    maxima = {st: 0.0 for st in stages}
    count = 0
    for _s, reports, _l0, _l1 in measured:
        for r in reports:
            count += 1
            for st in stages:
                v = r.timings.get(st, 0.0)
                totals[st] += v
                maxima[st] = max(maxima[st], v)
    grand = sum(totals.values()) or 1.0
    rows = [
        [st, f"{totals[st]:.3f}", f"{totals[st] / max(count, 1):.4f}", f"{maxima[st]:.4f}",
         f"{100 * totals[st] / grand:.1f}%"]
        for st in stages
    ]  # fmt: skip
    rows.append(["all stages", f"{grand:.3f}", f"{grand / max(count, 1):.4f}", "", "100%"])
    print(f"time by stage over {len(measured)} measured pass(es), {count} images (stage sums; decode to route")
    print("and paste to encode run in two threads beside the model's)")
    print(_table(rows, header))

    if args.per_image:
        print()
        header = ["image", "size", "faces", *stages, "seconds"]
        rows = []
        for r in measured[-1][1]:
            size = "x".join(map(str, r.size)) if r.size else "-"
            rows.append(
                [Path(r.input).name, size, f"{r.faces_restored}/{r.faces_found}"]
                + [f"{r.timings.get(st, 0.0):.3f}" for st in stages]
                + [f"{r.seconds:.3f}"]
            )
        print(_table(rows, header))
    wall = sum(s.seconds for s, *_ in measured)
    images = sum(s.images for s, *_ in measured)
    # the wall-time share says how long the model waited for the rest; the stage-time share how much of
    # the work (CPU time, roughly) is not the model's, which the overlap hides but does not remove
    outside_work = 1 - totals["restore"] / grand
    return pipeline.runtime.backend, 60 * images / wall, max(0.0, 1 - totals["restore"] / wall), outside_work


def _torch_threads() -> str:
    """torch's thread count, without importing torch for it (the onnxruntime path never loads it)."""
    torch = sys.modules.get("torch")
    return str(torch.get_num_threads()) if torch is not None else "-"


if __name__ == "__main__":
    sys.exit(main())
