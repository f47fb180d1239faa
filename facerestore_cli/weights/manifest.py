"""``MANIFEST.json``: the per-folder record of what each weights file must hash to, and how it is kept consistent.

A manifest is read on every lookup, so reading is strict (a broken one is an error, not an empty one
that would silently skip the checks) and writing is atomic and serialised between threads and processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from facerestore_cli.weights.errors import WeightsError
from facerestore_cli.weights.files import WEIGHTS_FORMAT_VERSION, _jsonable, _write_atomically

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "manifest_entry", "read_manifest", "update_manifest", "write_manifest"]

#: version of the MANIFEST.json layout
MANIFEST_FORMAT = 1
MANIFEST_NAME = "MANIFEST.json"


def _empty_manifest() -> dict[str, Any]:
    return {"format": MANIFEST_FORMAT, "files": {}}


def read_manifest(folder: Path | str) -> dict[str, Any]:
    """Read ``folder/MANIFEST.json``; an absent manifest is an empty one, a broken one an error."""
    path = Path(folder) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _empty_manifest()
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc}") from exc
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path} is not valid JSON ({exc}); fix or delete it") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise WeightsError(f'{path} is not a facerestore weights manifest (no "files" object)')
    fmt = manifest.get("format")
    if not isinstance(fmt, int) or fmt < 1:
        raise WeightsError(f'{path}: "format" must be a positive integer, got {fmt!r}')
    if fmt > MANIFEST_FORMAT:
        raise WeightsError(
            f"{path} has manifest format {fmt}, this facerestore reads up to {MANIFEST_FORMAT}: upgrade facerestore"
        )
    for name, entry in manifest["files"].items():
        if not isinstance(entry, dict):
            raise WeightsError(f"{path}: the entry for {name!r} is not an object")
    return manifest


def write_manifest(folder: Path | str, manifest: Mapping[str, Any]) -> Path:
    """Write ``folder/MANIFEST.json`` atomically (a reader sees the old or the new one, never half)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = dict(manifest)
    data.setdefault("format", MANIFEST_FORMAT)
    data.setdefault("files", {})
    data["files"] = dict(sorted(data["files"].items()))
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    path = folder / MANIFEST_NAME
    _write_atomically(path, text.encode("utf-8"))
    return path


_manifest_lock = threading.Lock()


@contextlib.contextmanager
def _locked_manifest(folder: Path) -> Iterator[None]:
    """Serialise read-modify-write of a manifest between threads and, where flock exists, processes.

    The lock is taken on the folder itself, so no lock file is left next to the weights.
    """
    with _manifest_lock:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl

            fd = os.open(folder, os.O_RDONLY)
        except (ImportError, OSError):  # Windows: threads are still serialised, processes race
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def update_manifest(folder: Path | str, name: str, entry: Mapping[str, Any] | None) -> dict[str, Any]:
    """Set (or with ``entry=None`` remove) one file's entry in ``folder``'s manifest; returns the manifest."""
    folder = Path(folder)
    if Path(name).name != name:
        raise ValueError(f"manifest entries are plain file names, got {name!r}")
    with _locked_manifest(folder):
        manifest = read_manifest(folder)
        if entry is None:
            manifest["files"].pop(name, None)
        else:
            manifest["files"][name] = _jsonable(dict(entry))
        write_manifest(folder, manifest)
    return manifest


def manifest_entry(path: Path | str) -> dict[str, Any] | None:
    """The entry for ``path`` in the manifest of its own folder, or ``None``."""
    path = Path(path)
    return read_manifest(path.parent)["files"].get(path.name)


def _entry_for_file(path: Path, sha256: str, metadata: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The manifest entry for a file just written, from its metadata plus provenance ``extra``."""
    entry: dict[str, Any] = {
        "sha256": sha256,
        "size": path.stat().st_size,
        "method": metadata.get("method"),
        "config": metadata.get("config"),
        "dtype": metadata.get("dtype"),
        "format_version": metadata.get("format_version", WEIGHTS_FORMAT_VERSION),
    }
    entry.update(extra)
    return entry
