"""``--engine ray``: an album restored by a pool of Ray actors, with the outputs a local run writes.

The driver (this process) does what must happen once: it discovers and plans the album exactly as
:class:`~facerestore_cli.runner.AlbumRunner` does (it *is* one, with another :meth:`RayAlbumRunner.run`),
compiles the ``--refs``/``--people`` dictionaries once and puts them in Ray's object store, and turns
the workers' records into the same report lines, summary, progress and exit code. The workers are a
Ray Data ``map_batches`` actor pool of :class:`PhotoWorker`: each actor builds its engine (detector,
restorer, embedder) once, takes the shipped dictionaries from the object store, and restores and
writes each photo with the local runner's own :meth:`AlbumRunner.process` (atomic writes) to a
shared file system, returning the photo's report record.

Scheduling unit: **one photo per batch**, with at most :data:`PHOTOS_PER_WORKER` photos in flight on
an actor (two UDF calls at once, so one photo's decode and encode overlap the other's restore, as the
local runner's threads do). A photo is the smallest unit that can be written atomically, and its faces
are batched inside it (``--batch-size``); any bigger batch (N files) would make a crowd photo hold up
the N - 1 photos queued with it, while with single photos nothing waits behind it: the other actors,
and the actor's other slot, keep taking photos. Face counts are not known before detection, so no
face-count estimate is used; what one-photo batches cost against a local run is what
``bench/scale.py`` measures (within 6% on its 2-core machine).

Ray is imported lazily, only here: the local runner and the package's import never load it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape

from facerestore_cli.album import InputItem, OutputPlan
from facerestore_cli.engine import FaceRestorer
from facerestore_cli.imagefile.atomic import TEMPORARY_NAME
from facerestore_cli.options import ClusterOptions, RestoreOptions
from facerestore_cli.report import FaceReport, ImageReport, ReportWriter, Summary
from facerestore_cli.runner import AlbumRunner

__all__ = ["ClusterError", "ClusterImageReport", "ClusterSummary", "PhotoWorker", "RayAlbumRunner"]

#: Photos one actor works on at once (Ray Data UDF calls in flight and running concurrently).
PHOTOS_PER_WORKER = 2
#: Retries of a photo whose actor died (Ray restarts the actor; ``max_task_retries``). A photo that
#: kills its worker every time (a decoder crash) is then reported failed instead of looping forever.
MAX_TASK_RETRIES = 3
#: Ray Data blocks at most: one photo per block for albums up to this size, a few per block beyond.
MAX_BLOCKS = 10_000
#: The signals that stop a run (the CLI turns them into KeyboardInterrupt), where the platform has them.
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class ClusterError(RuntimeError):
    """Ray is missing, the cluster cannot be reached, or no worker could start (a set-up error, exit 2)."""


@dataclass
class ClusterImageReport(ImageReport):
    """A photo's report line as a Ray worker made it: the local line plus the worker that made it."""

    #: ``host:pid`` of the actor process that restored the photo.
    worker: str | None = None


@dataclass
class ClusterSummary(Summary):
    """The run's totals (exactly the local run's), plus how the cluster ran them (``--json``'s ``cluster``)."""

    cluster: dict[str, Any] | None = None


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ClusterError(
            f"--engine ray needs Ray Data ({exc}); install it with: pip install 'facerestore-cli[ray]'"
        ) from None
    return ray


def worker_options(options: RestoreOptions, cluster: ClusterOptions) -> RestoreOptions:
    """The options a worker's engine is built with.

    Reference folders are dropped: a worker gets the driver's compiled dictionaries and never compiles
    (nor even reads) them. ``--skip-existing`` was decided on the driver; a retried photo whose output
    a dead worker already published is written again (identically), so its line says what was done.
    Torch threads default to the worker's CPUs shared by the photos it works on at once: two photos
    of one thread each restored 15-30% more photos per CPU-minute than one photo of two threads
    (``bench/scale.py``'s machine), and the outputs do not depend on the thread count.
    """
    threads = options.runtime.threads or max(1, math.floor(cluster.cpus_per_worker / PHOTOS_PER_WORKER))
    return options.replace(
        references=dataclasses.replace(options.references, refs=None, people=None),
        output=dataclasses.replace(options.output, skip_existing=False),
        runtime=dataclasses.replace(options.runtime, threads=threads),
    )


def driver_options(options: RestoreOptions, cluster: ClusterOptions) -> RestoreOptions:
    """The options of the driver's engine: the workers' options, on the CPU when the GPUs are theirs.

    The driver compiles the dictionaries (on the CPU, in float32, as the cache stores them anyway);
    a head node without a GPU must still be able to plan a GPU cluster's album.
    """
    if cluster.gpus_per_worker > 0:
        return options.replace(runtime=dataclasses.replace(options.runtime, device="cpu", half=None))
    return options


def _temporaries_of(output: Path, save_faces: bool) -> list[Path]:
    """``atomic_write``'s temporary files of one photo's output and extras (what a killed write leaves)."""
    found: list[Path] = []
    names = {output.name, output.stem + "_compare.jpg"}
    folders = [(output.parent, names)]
    if save_faces:
        folders.append((output.with_name(output.stem + "_faces"), None))
    for folder, wanted in folders:
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    m = TEMPORARY_NAME.match(entry.name)
                    if m and (wanted is None or m.group("name") in wanted) and entry.is_file(follow_symlinks=False):
                        found.append(Path(entry.path))
        except OSError:
            continue
    return found


def _remove_temporaries(output: Path, save_faces: bool) -> int:
    """Remove one photo's leftover temporary files; safe because a photo has one writer at a time."""
    removed = 0
    for tmp in _temporaries_of(output, save_faces):
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            continue
    return removed


def _report_from_json(row: dict[str, Any], worker: str | None) -> ClusterImageReport:
    """The worker's report record (a report line) back as the object the summary and writer take."""
    known = {f.name for f in dataclasses.fields(ImageReport)}
    face_fields = {f.name for f in dataclasses.fields(FaceReport)}
    values = {k: v for k, v in row.items() if k in known}
    values["faces"] = [FaceReport(**{k: v for k, v in f.items() if k in face_fields}) for f in row.get("faces", [])]
    return ClusterImageReport(**values, worker=worker)


@dataclass
class _Shipped:
    """What the driver compiled once and every worker takes from the object store."""

    single: Any
    people: Any


class PhotoWorker:
    """A Ray Data actor: the engine, built once per actor, restoring and writing one photo per call.

    Built by Ray Data with ``fn_constructor_kwargs``; ``shipped`` is an object reference to the
    driver's compiled dictionaries (taken once per actor, never recompiled).
    """

    def __init__(
        self,
        options: RestoreOptions,
        shipped: Any,
        cwd: str,
        weights_sha256: str | None,
    ) -> None:
        import ray

        # relative input paths mean what they meant on the driver (same shared folder on every node)
        self.same_cwd = os.path.isdir(cwd)
        if self.same_cwd:
            os.chdir(cwd)
        references = ray.get(shipped) if isinstance(shipped, ray.ObjectRef) else shipped
        self.engine = FaceRestorer(options)
        self.engine.single, self.engine.people = references.single, references.people
        sha = self.engine.restorer.info.sha256
        if weights_sha256 and sha != weights_sha256:
            raise ClusterError(
                f"{socket.gethostname()}: this node's {options.method} weights (sha256 {str(sha)[:12]}…) are not the "
                f"driver's ({weights_sha256[:12]}…); install the same weights on every node or pass --weights"
            )
        if references.single is not None or references.people is not None:
            _ = self.engine.embedder  # built once, here, not on the first face
        self.runner = AlbumRunner(self.engine)
        self.save_faces = options.output.save_faces
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.restorer = json.dumps(self.engine.restorer.info.to_json())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        indexes, reports = [], []
        for k in range(len(batch["index"])):
            given, absolute = str(batch["path"][k]), str(batch["abspath"][k])
            out_given, out_absolute = str(batch["output"][k]), str(batch["absoutput"][k])
            item = InputItem(Path(given if self.same_cwd else absolute), Path(str(batch["relative"][k])))
            output = Path(out_given if self.same_cwd else out_absolute)
            _remove_temporaries(output, self.save_faces)  # an earlier attempt's, killed mid-write
            report = self.runner.process(item, output)
            indexes.append(int(batch["index"][k]))
            reports.append(json.dumps(report.to_json()))
        n = len(indexes)
        cpu = time.process_time()  # this actor's CPU so far (all its threads): how many cores it got
        return {
            "cpu": np.asarray([cpu] * n, dtype=np.float64),
            "index": np.asarray(indexes, dtype=np.int64),
            "report": np.asarray(reports, dtype=object),
            "worker": np.asarray([self.worker] * n, dtype=object),
            "restorer": np.asarray([self.restorer] * n, dtype=object),
        }


class RayAlbumRunner(AlbumRunner):
    """An :class:`AlbumRunner` whose photos are restored by a Ray actor pool (``--engine ray``).

    ``engine`` is the driver's: it has compiled the references (once) and is never used on a photo.
    The run plans, reports and counts exactly as the local runner does; report lines arrive in the
    order photos finish and carry the worker that made them.
    """

    def __init__(
        self, engine: FaceRestorer, cluster: ClusterOptions, *, on_message: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(engine, on_message=on_message)
        cluster.check()
        self.cluster = cluster
        self.dictionaries: list[dict[str, Any]] = []
        people = [engine.single] if engine.single is not None else list(engine.people.people if engine.people else [])
        for person in people:
            d = person.dictionary
            self.dictionaries.append(
                {"person": person.name, "from_cache": d.from_cache, "used": d.used, "seconds": round(d.seconds, 3)}
            )
            state = "loaded from the cache" if d.from_cache else "compiled"
            self.say(
                f"[dim]references: {escape(person.name)} {state} once, on the driver ({d.used} photos, "
                f"{d.seconds:.1f} s); the workers get it from Ray's object store[/]"
            )

    driver_options = staticmethod(driver_options)

    def run(
        self,
        items: list[InputItem],
        plan: OutputPlan,
        *,
        report: ReportWriter | None = None,
        on_image: Callable[[ImageReport], None] | None = None,
        summary: Summary | None = None,
    ) -> Summary:
        """Restore an album on the cluster; the same summary (and exit code) as :meth:`AlbumRunner.run`.

        Ctrl-C stops the pool: finished photos are reported, the ones under way are dropped (a
        ``--skip-existing`` rerun resumes), and no temporary file of this run's outputs is left.
        """
        summary = summary if summary is not None else ClusterSummary()
        started, cpu_start = time.perf_counter(), time.process_time()
        finish = self._reporter(summary, report, on_image)
        todo = self._begin(items, plan, finish)
        info: dict[str, Any] = {
            "engine": "ray", "address": self.cluster.address, "cpus_per_worker": self.cluster.cpus_per_worker,
            "gpus_per_worker": self.cluster.gpus_per_worker, "photos_per_worker": PHOTOS_PER_WORKER,
            "dictionaries": self.dictionaries,
        }  # fmt: skip
        if isinstance(summary, ClusterSummary):
            summary.cluster = info
        plan_seconds = time.process_time() - cpu_start
        if todo:
            try:
                # Ray's driver prints its raylet's messages ("a worker died ...") on stdout, which is the
                # command's data (--json): they go to stderr, with the other messages
                with contextlib.redirect_stdout(sys.stderr):
                    self._run_remote(todo, finish, summary, info)
            except KeyboardInterrupt as exc:
                summary.interrupted = True
                summary.signal = getattr(exc, "signum", signal.SIGINT)
        summary.seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_start
        info["driver_cpu_seconds"] = round(cpu, 3)
        info["driver_cpu_seconds_per_photo"] = round(cpu / max(1, len(items)), 5)
        info["driver_plan_cpu_seconds"] = round(plan_seconds, 3)
        if report is not None and hasattr(summary, "report_errors"):
            summary.report_errors = len(getattr(report, "errors", []))
        return summary

    def _connect(self, ray: Any) -> bool:
        """Join ``--ray-address`` or start a local instance; True when this run must shut it down."""
        if ray.is_initialized():
            return False  # a script's (or a test's) own Ray: use it, leave it running
        # Ray's core worker installs its own crash handlers for SIGTERM (a stack dump, then death), which
        # would replace the CLI's: a stopped driver must stop like a local run (finished photos
        # reported, nothing partial, exit 143), so the Python handlers are put back after ray.init
        handlers = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
        try:
            if self.cluster.address:
                ray.init(address=self.cluster.address, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:  # ConnectionError, ValueError, RuntimeError, ... all mean "no cluster"
            where = self.cluster.address or "a local instance"
            raise ClusterError(f"--engine ray: cannot start or reach Ray ({where}): {exc}") from None
        finally:
            for sig, handler in handlers.items():
                if callable(handler) or handler in (signal.SIG_DFL, signal.SIG_IGN):
                    with contextlib.suppress(ValueError, OSError):  # not the main thread
                        signal.signal(sig, handler)
        return True

    def _pool_size(self, ray: Any, photos: int) -> int:
        if self.cluster.workers:
            return min(self.cluster.workers, photos)
        resources = ray.cluster_resources()
        if self.cluster.gpus_per_worker > 0:
            fit = int(resources.get("GPU", 0) // self.cluster.gpus_per_worker)
        else:
            fit = int(resources.get("CPU", 1) // self.cluster.cpus_per_worker)
        return max(1, min(fit, photos))

    def _run_remote(
        self,
        todo: list[tuple[InputItem, Path]],
        finish: Callable[[ImageReport], None],
        summary: Summary,
        info: dict[str, Any],
    ) -> None:
        ray = _import_ray()
        owned = self._connect(ray)
        done: set[int] = set()
        worker_cpu: dict[str, float] = {}
        try:
            logging.getLogger("ray.data").setLevel(logging.ERROR)
            ctx = ray.data.DataContext.get_current()
            ctx.max_errored_blocks = -1  # a photo whose retries ran out is a report line, not the run's end
            ctx.enable_progress_bars = False  # the CLI's own progress shows photos
            ctx.execution_options.preserve_order = False
            pool = self._pool_size(ray, len(todo))
            info["workers"] = pool
            shipped = ray.put(_Shipped(self.engine.single, self.engine.people))
            rows = [
                {"index": k, "path": str(item.path), "abspath": os.path.abspath(item.path),
                 "relative": str(item.relative), "output": str(out), "absoutput": os.path.abspath(out)}
                for k, (item, out) in enumerate(todo)
            ]  # fmt: skip
            options = worker_options(self.options, self.cluster)
            ds = _photo_pool(
                ray, ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS)), pool, self.cluster,
                {"options": options, "shipped": shipped, "cwd": os.getcwd(),
                 "weights_sha256": self.engine.restorer.info.sha256},
            )  # fmt: skip
            problem = None
            try:
                for row in ds.iter_rows():
                    k = int(row["index"])
                    if k in done:  # a retried photo delivered twice: its first line stands
                        continue
                    done.add(k)
                    who = str(row["worker"])
                    worker_cpu[who] = max(worker_cpu.get(who, 0.0), float(row["cpu"]))
                    if summary.restorer is None or len(done) == 1:
                        summary.restorer = json.loads(row["restorer"])  # what the workers ran
                    finish(_report_from_json(json.loads(row["report"]), str(row["worker"])))
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                if not done:
                    raise ClusterError(f"--engine ray: the workers could not restore a photo: {_short(exc)}") from None
                problem = _short(exc)
            for k, (item, out) in enumerate(todo):
                if k not in done:
                    why = problem or f"its Ray worker died {MAX_TASK_RETRIES + 1} times while restoring it"
                    finish(
                        ClusterImageReport(
                            input=str(item.path), output=str(out), status="failed", reason="worker-lost",
                            error=f"{item.path}: {why}; a --skip-existing rerun retries it",
                        )
                    )  # fmt: skip
        finally:
            info["worker_processes"] = sorted(worker_cpu)
            info["worker_cpu_seconds"] = round(sum(worker_cpu.values()), 3)
            if owned:
                ray.shutdown()
            # a worker killed mid-write leaves its temporary file; the retry wrote the photo whole
            save_faces = self.options.output.save_faces
            info["temporaries_removed"] = sum(_remove_temporaries(out, save_faces) for _, out in todo)


def _photo_pool(ray: Any, ds: Any, pool: int, cluster: ClusterOptions, constructor: dict[str, Any]) -> Any:
    """``ds.map_batches`` over the actor pool: one photo per batch, :data:`PHOTOS_PER_WORKER` at once."""
    import warnings

    try:
        compute = ray.data.ActorPoolStrategy(
            size=pool, max_tasks_in_flight_per_actor=PHOTOS_PER_WORKER,
            max_concurrent_calls_per_actor=PHOTOS_PER_WORKER, enable_true_multi_threading=True,
        )  # fmt: skip
    except TypeError:  # an older Ray: one call at a time per actor (no decode/encode overlap across photos)
        compute = ray.data.ActorPoolStrategy(size=pool, max_tasks_in_flight_per_actor=1)
    kwargs: dict[str, Any] = {
        "batch_size": 1,
        "batch_format": "numpy",
        "compute": compute,
        "num_cpus": cluster.cpus_per_worker,
        "num_gpus": cluster.gpus_per_worker or None,
        "fn_constructor_kwargs": constructor,
    }  # fmt: skip
    # Ray Data restarts dead actors and retries their photos by itself, but without end; a bounded
    # number of retries still has to go through the deprecated ``**ray_remote_args`` (Ray 2.60), and
    # where those are gone the defaults (retry forever) stand.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return ds.map_batches(PhotoWorker, **kwargs, max_restarts=-1, max_task_retries=MAX_TASK_RETRIES)
        except TypeError:
            return ds.map_batches(PhotoWorker, **kwargs)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] + ("…" if len(text) > 500 else "")
