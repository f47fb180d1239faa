"""``--engine ray`` on a real local Ray instance (2 CPUs, started here): the same album as a local run.

No part of Ray is mocked: the module starts ``ray.init(num_cpus=2)``, and the ``facerestore`` command
runs in-process (Typer's runner) as the driver, which joins that instance; its actors are real worker
processes. ``--method none`` keeps the album cheap (detect, align, paste and the faithful writers run;
no network), and the people test uses the tiny DMDNet of ``test_dictionary``. Ray is part of the
``dev`` extra: missing Ray is a failure where the shared data is set (CI), a skip elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_path
from typer.testing import CliRunner

from facerestore_cli.cli import _with_default_command, app

WHOLE = ("data", "eval-dev", "realworld", "whole")
#: Report fields that may differ between engines: timings and the worker that did the photo.
VOLATILE = ("seconds", "timings", "worker")


def _need_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        if not os.environ.get("FACERESTORE_SHARED"):
            pytest.skip("ray is not installed and FACERESTORE_SHARED is unset (install the dev extra)")
        pytest.fail("ray is not installed: the dev extra must install it (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def ray_cluster() -> str:
    """A local Ray instance for the module; its address, for drivers in other processes."""
    _need_ray()
    import ray

    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


def facerestore(*args) -> object:
    return CliRunner().invoke(app, _with_default_command([str(a) for a in args]), prog_name="facerestore")


@pytest.fixture(scope="module")
def album(tmp_path_factory) -> Path:
    """The 15 shared real-world photos plus three bad files (text, a cut JPEG, an empty PNG)."""
    folder = tmp_path_factory.mktemp("ray") / "album"
    shutil.copytree(shared_path(*WHOLE), folder)
    (folder / "notes.jpg").write_text("not a photo")
    (folder / "cut.jpg").write_bytes((folder / "xpixelgroup_01.jpg").read_bytes()[:3000])
    (folder / "empty.png").write_bytes(b"")
    return folder


def run_album(album: Path, out: Path, *extra) -> tuple[object, dict, dict[str, dict]]:
    report = out.parent / f"{out.name}.jsonl"
    result = facerestore(album, "-o", out, "--method", "none", "--threads", "1", "--report", report, "--json", *extra)
    summary = last_json(result.stdout)
    rows = {}
    for line in report.read_text().splitlines():
        row = json.loads(line)
        assert row["input"] not in rows, f"two lines for {row['input']}"
        rows[row["input"]] = row
    return result, summary, rows


def last_json(stdout: str) -> dict:
    """The --json summary: the command's last line (Ray may print its own lines while the driver runs)."""
    return json.loads(stdout.strip().splitlines()[-1])


def comparable(row: dict, out: Path) -> dict:
    """A report line without what may differ, its output path relative to its run's folder."""
    row = {k: v for k, v in row.items() if k not in VOLATILE}
    if row.get("output"):
        row["output"] = str(Path(row["output"]).relative_to(out))
    return row


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def local_run(album):
    out = album.parent / "local"
    return out, *run_album(album, out)


@pytest.mark.shared
@pytest.mark.slow
def test_ray_gives_the_local_runs_outputs_report_and_exit_code(ray_cluster, album, local_run):
    local_out, local, local_summary, local_rows = local_run
    out = album.parent / "ray"
    result, summary, rows = run_album(album, out, "--engine", "ray", "--workers", "2")
    assert local.exit_code == 1, local.stderr  # the bad files failed
    assert result.exit_code == local.exit_code, result.stderr
    assert len(local_rows) == 18
    assert tree(out) == tree(local_out)  # byte for byte, every output
    assert {k: comparable(r, out) for k, r in rows.items()} == {
        k: comparable(r, local_out) for k, r in local_rows.items()
    }
    assert {r["status"] for r in rows.values()} == {"restored", "failed"}
    for key in ("images", "restored", "no_faces", "unchanged", "failed", "faces_found", "faces_restored", "restorer"):
        assert summary[key] == local_summary[key], key
    assert sorted(f["input"] for f in summary["failures"]) == sorted(f["input"] for f in local_summary["failures"])
    cluster = summary["cluster"]
    assert cluster["engine"] == "ray" and cluster["workers"] == 2
    assert len(cluster["worker_processes"]) == 2  # both actors restored photos
    assert {r["worker"] for r in rows.values()} == set(cluster["worker_processes"])
    for r in rows.values():  # a failed photo is a report line from its worker, as locally
        assert r["worker"] in cluster["worker_processes"]


@pytest.mark.shared
@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_album_completes(ray_cluster, album, local_run):
    local_out, local, local_summary, local_rows = local_run
    out = album.parent / "killed"
    report = out.parent / "killed.jsonl"
    # what a write killed by SIGKILL leaves: a fresh temporary file (too young for the runner's own
    # stale-file sweep, which spares files a concurrent run may still be writing)
    out.mkdir()
    leftover = out / ".serengil_couple.jpg.0badf00d.tmp"
    leftover.write_bytes(b"half a photo")
    killed: list[int] = []

    def kill_first_worker() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            lines = report.read_text().splitlines() if report.exists() else []
            if lines:
                pid = int(json.loads(lines[0])["worker"].rsplit(":", 1)[1])
                os.kill(pid, signal.SIGKILL)  # mid-album: it holds its next photos
                killed.append(pid)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    result = facerestore(album, "-o", out, "--method", "none", "--threads", "1", "--report", report, "--json",
                         "--engine", "ray", "--workers", "2")  # fmt: skip
    killer.join(5)
    assert killed, "no worker was killed"
    assert result.exit_code == local.exit_code, result.stderr
    summary = last_json(result.stdout)
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(r["input"] for r in rows) == sorted(local_rows)  # one line per photo: none lost, none twice
    expected = {k: comparable(r, local_out) for k, r in local_rows.items()}
    assert {r["input"]: comparable(r, out) for r in rows} == expected
    for key in ("images", "restored", "failed", "faces_found", "faces_restored"):
        assert summary[key] == local_summary[key], key
    assert tree(out) == tree(local_out)  # nothing missing, nothing partial, no temporary file left
    assert not list(out.rglob("*.tmp"))
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # it really died


@pytest.mark.shared
@pytest.mark.slow
def test_a_stopped_driver_stops_like_a_local_run(ray_cluster, album):
    """SIGTERM to a driver joined to a running cluster (``--ray-address``): exit 143, finished photos
    reported and whole, nothing partial; a ``--skip-existing`` rerun completes the album."""
    out, report = album.parent / "stopped", album.parent / "stopped.jsonl"
    exe = Path(sys.executable).parent / "facerestore"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "facerestore_cli"]
    args = [*cmd, str(album), "-o", str(out), "--method", "none", "--threads", "1", "--report", str(report),
            "--engine", "ray", "--workers", "2", "--ray-address", ray_cluster]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if report.exists() and len(report.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr.decode()[-3000:]
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert 3 <= len(rows) < 18
    for r in rows:
        if r["status"] == "restored":
            assert Path(r["output"]).is_file()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    rerun = facerestore(album, "-o", out, "--method", "none", "--threads", "1", "--skip-existing",
                        "--engine", "ray", "--workers", "2")  # fmt: skip
    assert rerun.exit_code == 1, rerun.stderr  # the bad files, again
    assert {p.name for p in out.iterdir()} == {p.name for p in shared_path(*WHOLE).iterdir()}


@pytest.mark.shared
@pytest.mark.slow
def test_people_are_compiled_once_on_the_driver(ray_cluster, tmp_path, monkeypatch):
    from test_dictionary import make_tiny_dmdnet

    from facerestore_cli.references import DictionaryCache

    pairs = shared_path("data", "eval-dev", "london-pairs")
    people, photos = tmp_path / "people", tmp_path / "album"
    photos.mkdir()
    for who, name in (("001", "ann"), ("003", "ben")):
        (people / name).mkdir(parents=True)
        shutil.copy(pairs / who / "neutral.jpg", people / name / f"{name}.jpg")
        shutil.copy(pairs / who / "smiling.jpg", photos / f"{name}-smiling.jpg")
    shutil.copy(pairs / "009" / "smiling.jpg", photos / "stranger.jpg")
    weights = make_tiny_dmdnet(tmp_path / "tiny-dmdnet.safetensors")
    cache = tmp_path / "cache"
    monkeypatch.setenv("FACERESTORE_CACHE", str(cache))
    common = ("--people", people, "--weights", weights, "--embedder", "dlib", "--threads", "1", "--strength", "1",
              "--json")  # fmt: skip

    ray_run = facerestore(photos, "-o", tmp_path / "ray", "--report", tmp_path / "ray.jsonl", *common,
                          "--engine", "ray", "--workers", "2")  # fmt: skip
    assert ray_run.exit_code == 0, ray_run.stderr
    summary = last_json(ray_run.stdout)
    compiled = summary["cluster"]["dictionaries"]
    assert sorted(d["person"] for d in compiled) == ["ann", "ben"]  # one compile per person, on the driver
    assert not any(d["from_cache"] for d in compiled)
    for name in ("ann", "ben"):
        assert ray_run.stderr.count(f"references: {name} compiled once, on the driver") == 1, ray_run.stderr
    assert len(DictionaryCache(cache).entries()) == 2
    assert len(summary["cluster"]["worker_processes"]) >= 1

    local_run = facerestore(photos, "-o", tmp_path / "local", "--report", tmp_path / "local.jsonl", *common)
    assert local_run.exit_code == 0, local_run.stderr
    assert tree(tmp_path / "ray") == tree(tmp_path / "local")

    def rows(name: str) -> dict[str, dict]:
        lines = (tmp_path / f"{name}.jsonl").read_text().splitlines()
        return {r["input"]: comparable(r, tmp_path / name) for r in map(json.loads, lines)}

    routed = rows("ray")
    assert routed == rows("local")
    persons = {Path(k).name: [f["person"] for f in r["faces"]] for k, r in routed.items()}
    assert persons == {"ann-smiling.jpg": ["ann"], "ben-smiling.jpg": ["ben"], "stranger.jpg": [None]}


# -- without a cluster -----------------------------------------------------------------------------


def test_cluster_options_need_the_ray_engine(tmp_path):
    photo = tmp_path / "a.jpg"
    cv2.imwrite(str(photo), np.zeros((8, 8, 3), np.uint8))
    for extra, message in (
        (("--workers", "2"), "--workers need(s) --engine ray"),
        (("--engine", "spark"), "--engine spark: choose local or ray"),
        (("--engine", "ray", "--review", tmp_path / "r.html"), "--review is not available with --engine ray"),
    ):
        result = facerestore(photo, "-o", tmp_path / "out", *extra)
        assert result.exit_code == 2, result.stderr
        assert message in result.stderr


def test_workers_get_no_reference_folders_and_never_skip(tmp_path):
    from facerestore_cli import ClusterOptions, RestoreOptions
    from facerestore_cli.cluster import driver_options, worker_options

    options = RestoreOptions.from_flat(method="dmdnet", people=tmp_path, skip_existing=True, device="cuda")
    cluster = ClusterOptions(engine="ray", cpus_per_worker=4, gpus_per_worker=1)
    worker = worker_options(options, cluster)
    # a worker cannot compile a dictionary: it has no folder to compile from, only the driver's tensors
    assert worker.references.people is None and worker.references.refs is None
    assert worker.output.skip_existing is False  # decided on the driver; a retried photo is written again
    assert worker.runtime.threads == 2 and worker.runtime.device == "cuda"  # 4 CPUs for 2 photos at once
    assert worker_options(options.replace(), ClusterOptions(engine="ray")).runtime.threads == 1
    assert options.references.people == tmp_path  # the driver's options are untouched
    assert driver_options(options, cluster).runtime.device == "cpu"  # the GPUs are the workers'


def test_the_local_runner_never_imports_ray():
    code = "import sys, facerestore_cli.runner, facerestore_cli.cli; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
