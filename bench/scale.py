"""Images per minute on ``--engine local`` and ``--engine ray`` (1 and 2 workers), in one run.

    python bench/scale.py [--folder DIR] [--repeat 2] [--method dmdnet] [--json FILE]

Restores the same album (the shared real-world photos, each copied ``--repeat`` times) with the
library's own runners, as the CLI does: the local :class:`AlbumRunner` with 2 and with 1 torch threads,
and on one local Ray instance (``ray.init(num_cpus=2)``, up for the whole run so that every
configuration shares the machine with its daemons) 1 worker of 2 CPUs, 1 worker of 1 CPU and 2 workers
of 1 CPU. The configurations are interleaved over ``--rounds`` rounds and the best round of each is
compared, which keeps a burst of other load on a shared machine from deciding the comparison. For every
run it prints:

* ``wall``: images per minute over the whole run. Local runs have their models loaded before (as the
  CLI does before its first photo); Ray runs include starting the actors and loading the models in
  them, which a large album amortises.
* ``steady``: images per minute between the first and the last photo finished (start-up left out).
* the driver's CPU time per photo (everything the driver process does: planning, Ray Data's
  streaming executor, decoding the records, the report and the summary), over the whole run and once
  the pool runs (between the first and the last photo): the serial part of a run, which bounds how
  far more nodes can help.
* the cores the run got (its CPU seconds, this process's and the Ray actors', over its wall time) and
  images per CPU-minute: on a shared machine the first says how much of it a run had, the second
  whether the engine itself wastes work.
* whether the outputs are byte-identical to the local run with the same cores (Ray workers use their
  default torch threads, ``--cpus-per-worker`` shared by the two photos they work on at once; the
  outputs do not depend on the thread count).

The goals (issue 19): Ray with 1 worker at most 15% slower than local with the same cores, and 2
workers at least 1.6x one worker where the cores allow. The load average is printed before and after:
on a shared machine it says how many cores the runs really had.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import REALWORLD_WHOLE, shared_root

DEFAULT_FOLDER = shared_root() / REALWORLD_WHOLE


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    p.add_argument("--repeat", type=int, default=2, help="copy every photo this many times")
    p.add_argument("--method", default="dmdnet", help="dmdnet (the shipped compact weights), memgan or none")
    p.add_argument("--rounds", type=int, default=2, help="run every configuration this many times, interleaved")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    return p.parse_args()


def _album(folder: Path, repeat: int, root: Path) -> Path:
    album = root / "album"
    album.mkdir()
    photos = sorted(p for p in folder.iterdir() if p.is_file())
    if not photos:
        sys.exit(f"error: no photos in {folder} (set FACERESTORE_SHARED or pass --folder)")
    for r in range(repeat):
        for p in photos:
            shutil.copyfile(p, album / f"{p.stem}_{r}{p.suffix}")  # copies: links would be listed once
    return album


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(name: str, runner, items, out: Path) -> dict:
    from facerestore_cli import ClusterSummary
    from facerestore_cli.album import OutputPlan

    done: list[float] = []
    cpu: list[float] = []

    def on_image(_report) -> None:
        done.append(time.perf_counter())
        cpu.append(time.process_time())

    started, cpu_started = time.perf_counter(), time.process_time()
    summary = runner.run(items, OutputPlan(out_dir=out), summary=ClusterSummary(), on_image=on_image)
    wall = time.perf_counter() - started
    own_cpu = time.process_time() - cpu_started
    n = len(done)
    steady = (n - 1) / (done[-1] - done[0]) * 60 if n > 1 and done[-1] > done[0] else float("nan")
    cluster = summary.cluster or {}
    row = {
        "run": name, "photos": n, "failed": summary.failed, "seconds": round(wall, 2),
        "wall_per_min": round(n / wall * 60, 2), "steady_per_min": round(steady, 2),
        "driver_cpu_per_photo_ms": round(1000 * cluster["driver_cpu_seconds_per_photo"], 1) if cluster else None,
        # the driver's CPU per photo once the pool runs (start-up left out): what grows with the album
        "driver_marginal_ms": round(1000 * (cpu[-1] - cpu[0]) / (n - 1), 1) if cluster and n > 1 else None,
        "workers": cluster.get("workers"),
        # CPU seconds the run got (this process, and the Ray actors'): cores used = cpu / wall
        "cpu_seconds": round(own_cpu + cluster.get("worker_cpu_seconds", 0.0), 1),
    }  # fmt: skip
    row["cores_used"] = round(row["cpu_seconds"] / wall, 2)
    row["per_cpu_minute"] = round(n / row["cpu_seconds"] * 60, 2)
    print(
        f"{name:<28} {n:>4} photos  {wall:7.1f} s  wall {row['wall_per_min']:6.1f}/min  "
        f"steady {row['steady_per_min']:6.1f}/min  {row['cores_used']:.2f} cores, "
        f"{row['per_cpu_minute']:.1f}/CPU-min"
        + (f"  driver {row['driver_cpu_per_photo_ms']:.1f} ms CPU/photo ({row['driver_marginal_ms']:.1f} ms once "
           "running)" if cluster else ""),
        flush=True,
    )
    return row


def _driver_fit(ray_rows: list[dict]) -> None:
    """Split the driver's CPU into a part per second and a part per photo (least squares over the runs).

    Once the pool runs, the driver's CPU per second is ``a + b * photos per second``: ``a`` is Ray Data's
    scheduling loop and Ray's own threads (paid per second, whatever the rate), ``b`` the serial work per
    photo (a block in, a record out, a report line, the summary). ``b`` bounds a cluster: one driver
    core can take at most 1 / b photos per second.
    """
    import numpy as np

    rates = np.array([r["steady_per_min"] / 60 for r in ray_rows])
    per_s = np.array([r["driver_marginal_ms"] * r["steady_per_min"] / 60 for r in ray_rows])  # ms CPU per second
    if len(set(np.round(rates, 3))) < 2:
        return
    b, a = np.polyfit(rates, per_s, 1)
    lo, hi = rates.min() * 60, rates.max() * 60
    print(f"driver CPU once running: {a:.1f} ms per second + {b:.1f} ms per photo "
          f"(fit over {len(ray_rows)} Ray runs at {lo:.0f}-{hi:.0f} photos/min)")  # fmt: skip


#: (name, engine, workers, CPUs per worker = torch threads), run in this order in every round
CONFIGS = (
    ("local, 2 threads", "local", 1, 2),
    ("ray, 1 worker x 2 CPUs", "ray", 1, 2),
    ("local, 1 thread", "local", 1, 1),
    ("ray, 1 worker x 1 CPU", "ray", 1, 1),
    ("ray, 2 workers x 1 CPU", "ray", 2, 1),
)


def _runner(engine_kind: str, method: str, workers: int, cpus: int):
    from facerestore_cli import AlbumRunner, ClusterOptions, FaceRestorer, RayAlbumRunner, RestoreOptions

    if engine_kind == "local":
        return AlbumRunner(FaceRestorer(RestoreOptions.from_flat(method=method, threads=cpus)))
    options = RestoreOptions.from_flat(method=method)  # the workers' own default threads, as the CLI's
    cluster = ClusterOptions(engine="ray", workers=workers, cpus_per_worker=float(cpus))
    return RayAlbumRunner(FaceRestorer(RayAlbumRunner.driver_options(options, cluster)), cluster)


def main() -> None:
    args = _parse()
    import ray

    from facerestore_cli.album import discover_inputs

    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}", flush=True)
    rows: list[dict] = []
    identical: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="facerestore-scale-") as tmp:
        root = Path(tmp)
        items = discover_inputs([str(_album(args.folder, args.repeat, root))]).items
        print(f"{len(items)} photos ({args.repeat} x {args.folder}), method {args.method}, "
              f"{args.rounds} round(s), configurations interleaved", flush=True)  # fmt: skip
        # one Ray instance for the whole run, so every configuration shares the machine with its daemons
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            reference: dict[int, dict[str, bytes]] = {}
            for rnd in range(args.rounds):
                for name, kind, workers, cpus in CONFIGS:
                    out = root / f"r{rnd}-{kind}-{workers}x{cpus}"
                    row = _run(name, _runner(kind, args.method, workers, cpus), items, out)
                    row["round"], row["load_1min"] = rnd, round(os.getloadavg()[0], 2)
                    rows.append(row)
                    tree = _tree(out)
                    if kind == "local":
                        reference.setdefault(cpus, tree)
                    else:
                        identical[name] = identical.get(name, True) and tree == reference[cpus]
                    shutil.rmtree(out)
        finally:
            ray.shutdown()
    best = {}
    for name, *_ in CONFIGS:
        mine = [r for r in rows if r["run"] == name]
        best[name] = {k: max(r[k] for r in mine) for k in ("wall_per_min", "steady_per_min", "per_cpu_minute")}
        best[name]["cores_used"] = max(r["cores_used"] for r in mine)
        if mine[0]["driver_marginal_ms"] is not None:
            best[name]["driver_marginal_ms"] = min(r["driver_marginal_ms"] for r in mine)
            best[name]["driver_cpu_per_photo_ms"] = min(r["driver_cpu_per_photo_ms"] for r in mine)
    print(f"\nbest of {args.rounds} round(s), images per minute:")
    for name, b in best.items():
        print(f"  {name:<26} wall {b['wall_per_min']:6.1f}  steady {b['steady_per_min']:6.1f}  "
              f"per CPU-minute {b['per_cpu_minute']:5.1f}  cores used up to {b['cores_used']:.2f}"
              + (f"  driver {b['driver_cpu_per_photo_ms']:.1f} ms CPU/photo, {b['driver_marginal_ms']:.1f} ms once "
                 "running" if "driver_marginal_ms" in b else ""))  # fmt: skip
    for kind in ("wall", "steady"):
        k = f"{kind}_per_min"
        slower2 = 1 - best["ray, 1 worker x 2 CPUs"][k] / best["local, 2 threads"][k]
        slower1 = 1 - best["ray, 1 worker x 1 CPU"][k] / best["local, 1 thread"][k]
        scale = best["ray, 2 workers x 1 CPU"][k] / best["ray, 1 worker x 1 CPU"][k]
        print(f"{kind}: ray 1 worker is {100 * slower2:+.1f}% slower than local with 2 cores, {100 * slower1:+.1f}% "
              f"with 1 core; 2 workers give {scale:.2f}x one worker (1 CPU each)")  # fmt: skip
    _driver_fit([r for r in rows if r["driver_marginal_ms"] is not None])
    print(f"outputs byte-identical to the local run's: {identical}")
    print(f"load average after: {os.getloadavg()}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "best": best, "identical": identical}, indent=1))


if __name__ == "__main__":
    main()
