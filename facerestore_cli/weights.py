"""Weight files: where they are found, how they are checked, imported from official checkpoints and fetched.

Only the *file* side of weights lives here; turning an official checkpoint's tensors into our layout is
each model module's ``convert_official(state_dict) -> (folded_state_dict, Config)``.

Lookup order
------------
For a method (``dmdnet``, ``memgan``) the first place that has a matching file wins:

1. ``--weights PATH`` (``explicit``): a file is used as given; a folder is searched.
2. ``$FACERESTORE_WEIGHTS``: a file (used only if it is for the method asked for), or a folder to search.
3. The user weights folder: ``$FACERESTORE_HOME/weights`` if ``FACERESTORE_HOME`` is set, else
   ``$XDG_DATA_HOME/facerestore/weights``, else ``~/.local/share/facerestore/weights``.
   ``facerestore weights import`` and ``facerestore weights fetch`` write here.
4. The weights shipped with facerestore: ``facerestore_cli/_bundled_weights/`` in an installed wheel,
   ``<repo>/weights/`` in a source checkout or editable install.

In a folder, a ``*.safetensors`` file belongs to a method when its ``MANIFEST.json`` entry (or, for a file
the manifest does not list, its safetensors metadata) says ``method == <name>``; several matches in one
folder are taken in file-name order. Because the user folder comes before the shipped one, an official
checkpoint imported by the user (``dmdnet-official.safetensors``) wins over the compact shipped file.

Integrity
---------
Every weights folder may hold a ``MANIFEST.json`` (``{"format": 1, "files": {name: entry}}``, entries carry
``sha256``, ``size``, ``method``, ``config``, ``dtype`` and free-form provenance). A file with an entry is
checked (size, then sha256) before it is used, so a truncated or swapped file fails loudly instead of
producing subtly wrong faces. Hashes are cached per process by ``(path, size, mtime_ns)``.

Official ``.pth`` checkpoints are read with ``torch.load(weights_only=True)`` only: a checkpoint that needs
arbitrary pickled Python objects is refused, never executed. Everything else is safetensors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import http.client
import json
import logging
import os
import re
import struct
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported lazily: `weights list` and `doctor` should not pay for it
    import torch

    from facerestore_cli.models import OfficialCheckpoint

__all__ = [
    "CHECKPOINT_WRAPPER_KEYS",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "WEIGHTS_FORMAT_VERSION",
    "CheckpointError",
    "DownloadError",
    "ImportResult",
    "LoadedWeights",
    "SearchPlace",
    "VerifyResult",
    "WeightsError",
    "WeightsIntegrityError",
    "WeightsLocation",
    "WeightsNotFound",
    "download",
    "fetch",
    "file_sha256",
    "import_checkpoint",
    "initialise_from_stylegan2",
    "list_weights",
    "load_weights",
    "locate_weights",
    "manifest_entry",
    "official_source",
    "project_weights_dirs",
    "read_manifest",
    "read_safetensors_metadata",
    "save_weights",
    "search_places",
    "update_manifest",
    "user_weights_dir",
    "verify_all",
    "write_manifest",
]

log = logging.getLogger(__name__)

#: version of the metadata layout save_weights writes; a file with a larger one needs a newer facerestore
WEIGHTS_FORMAT_VERSION = 1
#: version of the MANIFEST.json layout
MANIFEST_FORMAT = 1
MANIFEST_NAME = "MANIFEST.json"
#: keys under which wrapped checkpoints keep their state dict, in order of preference (EMA weights first)
CHECKPOINT_WRAPPER_KEYS: tuple[str, ...] = ("params_ema", "params", "state_dict", "model")

ORIGINS = ("flag", "env", "user", "project")
_SUFFIX = ".safetensors"
_CHUNK = 1 << 20
_MAX_HEADER = 100 << 20  # the safetensors library's own limit on the JSON header


# --------------------------------------------------------------------------------------------- errors


class WeightsError(Exception):
    """Base class of every weights problem; the message is meant for the user as is."""


class WeightsNotFound(WeightsError, FileNotFoundError):
    """No weights file for a method in any place searched (the message lists them)."""


class WeightsIntegrityError(WeightsError):
    """A weights file does not match its manifest or download checksum, or is not valid safetensors."""


class CheckpointError(WeightsError, ValueError):
    """A checkpoint cannot be imported: damaged, not a checkpoint, unsafe pickle, or wrong keys/shapes.

    Model converters raise ``ValueError`` (``models.ConversionError``); importing wraps them in this
    class, so the CLI reports both alike.
    """


class DownloadError(WeightsError):
    """A download failed for good (HTTP error, too many retries, server serving the wrong size)."""


# ------------------------------------------------------------------------------------------ dataclasses


@dataclass(frozen=True)
class WeightsLocation:
    """A weights file found by the lookup, where it was found and what its manifest says about it."""

    path: Path
    origin: str  # one of ORIGINS
    manifest: dict[str, Any] | None = field(default=None, compare=False)
    method: str | None = None


@dataclass(frozen=True)
class SearchPlace:
    """One place the lookup looks in, for error messages and ``facerestore doctor``."""

    origin: str
    path: Path | None
    description: str


@dataclass
class LoadedWeights:
    """Tensors and metadata of a safetensors weights file."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    path: Path
    sha256: str

    @property
    def method(self) -> str | None:
        return self.metadata.get("method")

    @property
    def config(self) -> dict[str, Any] | None:
        return self.metadata.get("config")


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_checkpoint` (and :func:`fetch`) wrote."""

    path: Path
    method: str
    config: Any
    sha256: str
    size: int
    source: Path
    source_sha256: str
    manifest_path: Path
    tensor_count: int


@dataclass(frozen=True)
class VerifyResult:
    """The check of one manifest entry."""

    path: Path
    origin: str
    #: "ok" | "missing" | "hash mismatch" | "size mismatch" | "unlisted" (in no manifest; its tensors were
    #: read and are finite) | "damaged" (unreadable, or holding NaN/inf)
    status: str
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    expected_size: int | None = None
    actual_size: int | None = None
    #: The method this file is the one a restore would use for (by the lookup order), if any.
    in_use_for: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "unlisted")


def official_source(method: str) -> OfficialCheckpoint | None:
    """Where ``method``'s official checkpoint is published (from the model registry), if anywhere."""
    from facerestore_cli.models import get_method

    try:
        return get_method(method).official
    except KeyError:
        return None


# ------------------------------------------------------------------------------------------- places


def user_weights_dir() -> Path:
    """The per-user weights folder (see the module docstring); it need not exist."""
    home = os.environ.get("FACERESTORE_HOME")
    if home:
        return Path(home).expanduser() / "weights"
    xdg = os.environ.get("XDG_DATA_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "facerestore" / "weights"
    return Path.home() / ".local" / "share" / "facerestore" / "weights"


def project_weights_dirs() -> list[Path]:
    """The folders holding the weights shipped with facerestore that exist here.

    A wheel carries them as ``facerestore_cli/_bundled_weights``; a source checkout has ``<repo>/weights``.
    The checkout folder is only trusted next to a ``pyproject.toml``, so that an installed package never
    picks up some unrelated ``site-packages/weights`` folder.
    """
    package = Path(__file__).resolve().parent
    dirs = []
    bundled = package / "_bundled_weights"
    if bundled.is_dir():
        dirs.append(bundled)
    repo = package.parent
    if (repo / "pyproject.toml").is_file() and (repo / "weights").is_dir():
        dirs.append(repo / "weights")
    return dirs


def search_places(explicit: Path | str | None = None) -> list[SearchPlace]:
    """Every place the lookup searches, in order, described for people."""
    places = []
    if explicit is not None:
        places.append(SearchPlace("flag", Path(explicit), f"--weights {explicit}"))
    else:
        places.append(SearchPlace("flag", None, "--weights: not given"))
    env = os.environ.get("FACERESTORE_WEIGHTS")
    if env:
        places.append(SearchPlace("env", Path(env).expanduser(), f"$FACERESTORE_WEIGHTS={env}"))
    else:
        places.append(SearchPlace("env", None, "$FACERESTORE_WEIGHTS: not set"))
    user = user_weights_dir()
    places.append(SearchPlace("user", user, f"user weights folder {user}"))
    project = project_weights_dirs()
    if project:
        places.extend(SearchPlace("project", p, f"weights shipped with facerestore {p}") for p in project)
    else:
        places.append(SearchPlace("project", None, "weights shipped with facerestore: none in this install"))
    return places


# ----------------------------------------------------------------------------------------- manifest


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
    _atomic_write_bytes(path, text.encode("utf-8"))
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


# ------------------------------------------------------------------------------------------ hashing

_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path | str, *, use_cache: bool = True) -> str:
    """SHA-256 of a file, computed once per process for an unchanged file (same size and mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if use_cache:
        with _hash_lock:
            cached = _hash_cache.get(key)
        if cached is not None:
            return cached
    digest = _hash_file(path)
    st2 = path.stat()
    if (st2.st_size, st2.st_mtime_ns) == key[1:]:  # do not cache a hash of a file that changed meanwhile
        with _hash_lock:
            _hash_cache[key] = digest
    return digest


def _remember_hash(path: Path, digest: str) -> None:
    st = path.stat()
    with _hash_lock:
        _hash_cache[(str(path.resolve()), st.st_size, st.st_mtime_ns)] = digest


# ------------------------------------------------------------------------------- atomic file writes


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; weights and manifests are not secrets
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; not possible (nor needed) on Windows."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------- safetensors metadata


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _encode_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """safetensors metadata is str -> str: JSON-encode every non-string value and remember which."""
    encoded: dict[str, str] = {}
    json_keys = []
    for key, value in metadata.items():
        if key == "json_keys":
            continue
        if isinstance(value, str) and key != "config":
            encoded[key] = value
        else:
            if key == "config" and isinstance(value, str):
                value = json.loads(value)  # already JSON: validate, store canonically
            encoded[key] = json.dumps(_jsonable(value), sort_keys=True, ensure_ascii=False)
            json_keys.append(key)
    encoded["json_keys"] = json.dumps(sorted(json_keys))
    return encoded


def _decode_metadata(raw: Mapping[str, str] | None, path: Path) -> dict[str, Any]:
    raw = dict(raw or {})
    try:
        json_keys = set(json.loads(raw.pop("json_keys", "[]")))
    except (json.JSONDecodeError, TypeError):
        json_keys = set()
    json_keys |= {"config", "format_version"}  # also for files written by other tools
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        if key in json_keys:
            try:
                meta[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                if key == "config":
                    raise WeightsIntegrityError(f"{path}: metadata 'config' is not JSON ({exc})") from exc
                meta[key] = value
        else:
            meta[key] = value
    version = meta.get("format_version")
    if isinstance(version, int) and version > WEIGHTS_FORMAT_VERSION:
        raise WeightsError(
            f"{path} has weights format {version}; this facerestore reads up to {WEIGHTS_FORMAT_VERSION}: "
            "upgrade facerestore"
        )
    return meta


def read_safetensors_metadata(path: Path | str) -> dict[str, Any]:
    """Decoded ``__metadata__`` of a safetensors file, reading only its header (cheap for lookups)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise WeightsIntegrityError(f"{path} is not a safetensors file (too short)")
            (length,) = struct.unpack("<Q", head)
            if length > _MAX_HEADER:
                raise WeightsIntegrityError(f"{path} is not a safetensors file (header size {length})")
            header_bytes = f.read(length)
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc}") from exc
    try:
        if len(header_bytes) != length:
            raise ValueError("header cut short")
        header = json.loads(header_bytes)
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightsIntegrityError(f"{path} is not a valid safetensors file ({exc})") from exc
    return _decode_metadata(header.get("__metadata__"), path)


def _method_of(path: Path, entry: Mapping[str, Any] | None) -> str | None:
    if entry and entry.get("method"):
        return str(entry["method"])
    try:
        return read_safetensors_metadata(path).get("method")
    except WeightsError as exc:
        log.warning("skipping %s: %s", path, exc)
        return None


# ------------------------------------------------------------------------------------------- lookup


def _folder_files(folder: Path, origin: str) -> list[WeightsLocation]:
    """Every present safetensors file of a folder, manifest-listed or not, in file-name order."""
    if not folder.is_dir():
        return []
    entries = read_manifest(folder)["files"]
    found = []
    for path in sorted(folder.glob("*" + _SUFFIX)):
        if path.name.startswith(".") or not path.is_file():
            continue
        entry = entries.get(path.name)
        method = _method_of(path, entry)
        found.append(WeightsLocation(path=path, origin=origin, manifest=entry, method=method))
    return found


def _file_location(path: Path, origin: str) -> WeightsLocation:
    entry = manifest_entry(path) if path.suffix == _SUFFIX else None
    method = _method_of(path, entry) if path.suffix == _SUFFIX else None
    return WeightsLocation(path=path, origin=origin, manifest=entry, method=method)


def _not_safetensors(path: Path, what: str, method: str) -> WeightsError:
    return WeightsError(
        f"{what} {path} is not a .safetensors weights file. Official checkpoints (.pth) must be imported "
        f"once: facerestore weights import {path} --method {method}"
    )


def locate_weights(method: str, explicit: Path | str | None = None) -> WeightsLocation:
    """Find the weights file for ``method`` following the lookup order of the module docstring."""
    notes: list[str] = []
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_file():
            if path.suffix != _SUFFIX:
                raise _not_safetensors(path, "--weights", method)
            loc = _file_location(path, "flag")
            if loc.method is not None and loc.method != method:
                raise WeightsError(f"--weights {path} holds {loc.method} weights, not {method}")
            return loc
        if path.is_dir():
            match = [loc for loc in _folder_files(path, "flag") if loc.method == method]
            if match:
                return match[0]
            raise WeightsNotFound(f"--weights {path}: no {method} weights in this folder")
        raise WeightsNotFound(f"--weights {path}: no such file or folder")

    for place in search_places(None):
        if place.path is None:
            notes.append(place.description)
            continue
        if place.origin == "env" and place.path.is_file():
            if place.path.suffix != _SUFFIX:
                raise _not_safetensors(place.path, "$FACERESTORE_WEIGHTS", method)
            loc = _file_location(place.path, "env")
            if loc.method in (method, None):
                return loc
            notes.append(f"{place.description}: holds {loc.method} weights, not {method}")
            continue
        if not place.path.is_dir():
            notes.append(f"{place.description}: does not exist")
            continue
        match = [loc for loc in _folder_files(place.path, place.origin) if loc.method == method]
        if match:
            return match[0]
        notes.append(f"{place.description}: no {method} weights")
    raise WeightsNotFound(_not_found_message(method, notes))


def _not_found_message(method: str, notes: list[str]) -> str:
    lines = [f"no {method} weights found. Searched, in order:"]
    lines += [f"  - {note}" for note in notes]
    if official_source(method) is not None:
        lines.append(
            f"Download the official checkpoint with `facerestore weights fetch {method}`, or import one you "
            f"have with `facerestore weights import PATH --method {method}`."
        )
    else:
        lines.append(
            f"{method} has no public weights: facerestore ships its own in weights/ (reinstall facerestore "
            f"if they are missing), or import yours with `facerestore weights import PATH --method {method}`."
        )
    return "\n".join(lines)


def list_weights(explicit: Path | str | None = None) -> list[WeightsLocation]:
    """Every weights file in every place of the lookup, in lookup order (for `weights list`, `doctor`)."""
    found: list[WeightsLocation] = []
    seen: set[Path] = set()
    for place in search_places(explicit):
        if place.path is None:
            continue
        path = place.path.expanduser()
        locs = [_file_location(path, place.origin)] if path.is_file() else _folder_files(path, place.origin)
        for loc in locs:
            key = loc.path.resolve()
            if key not in seen:
                seen.add(key)
                found.append(loc)
    return found


# ------------------------------------------------------------------------------------ load and save


def _check_entry(path: Path, entry: Mapping[str, Any]) -> str:
    """Check size then sha256 against a manifest entry; return the sha256."""
    size = path.stat().st_size
    expected_size = entry.get("size")
    if expected_size is not None and int(expected_size) != size:
        raise WeightsIntegrityError(
            f"{path} is {size} bytes but its manifest says {expected_size}: the file is truncated or was "
            f"replaced. {_refetch_hint(entry)}"
        )
    digest = file_sha256(path)
    expected = entry.get("sha256")
    if expected and str(expected).lower() != digest:
        raise WeightsIntegrityError(
            f"{path} has sha256 {digest} but its manifest expects {expected}: the file is damaged or was "
            f"replaced. {_refetch_hint(entry)}"
        )
    return digest


def _refetch_hint(entry: Mapping[str, Any]) -> str:
    method = entry.get("method") or "METHOD"
    if official_source(method) is not None:
        return f"Re-fetch it with `facerestore weights fetch {method}` (or re-import it)."
    return "Re-fetch or re-install it (reinstall facerestore for the shipped weights, or re-import yours)."


def load_weights(location_or_path: WeightsLocation | Path | str, *, verify: bool = True) -> LoadedWeights:
    """Load a safetensors weights file on the CPU, checking it against its manifest entry first.

    ``verify=False`` skips only the manifest comparison (``sha256`` is still filled in, from the cache
    when the file was hashed before); files no manifest lists are never compared against anything.
    """
    from safetensors import safe_open

    if isinstance(location_or_path, WeightsLocation):
        path = location_or_path.path
        entry = location_or_path.manifest
        if entry is None:
            entry = manifest_entry(path)
    else:
        path = Path(location_or_path).expanduser()
        entry = manifest_entry(path) if path.is_file() else None
    if not path.is_file():
        raise WeightsNotFound(f"weights file {path} does not exist")
    if path.suffix != _SUFFIX:
        raise _not_safetensors(path, "weights file", (entry or {}).get("method") or "METHOD")
    digest = _check_entry(path, entry) if verify and entry else file_sha256(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw_meta = f.metadata()
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own SafetensorError, or OSError/ValueError
        raise WeightsIntegrityError(
            f"{path} is not a valid safetensors file ({exc}); it is damaged or truncated: re-fetch it"
        ) from exc
    _check_finite(tensors, path)
    return LoadedWeights(tensors=tensors, metadata=_decode_metadata(raw_meta, path), path=path, sha256=digest)


def _check_finite(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuse weights holding NaN or infinity: files no manifest lists are otherwise loaded unchecked,
    and flipped bytes in one would compute black faces that an album reports as restored."""
    import torch

    bad: dict[str, int] = {}
    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                bad[name] = int(finite.numel() - int(finite.sum()))
    if bad:
        worst = ", ".join(f"{name} ({n})" for name, n in sorted(bad.items(), key=lambda kv: -kv[1])[:3])
        raise WeightsIntegrityError(
            f"{path} holds {sum(bad.values())} non-finite values in {len(bad)} tensors (e.g. {worst}): the file "
            "is damaged. Re-fetch or re-import it."
        )


def save_weights(
    tensors: Mapping[str, torch.Tensor],
    path: Path | str,
    metadata: Mapping[str, Any],
    *,
    half: bool = False,
) -> str:
    """Write a safetensors weights file atomically and return its sha256.

    ``metadata`` must give ``method`` and ``config`` (a dataclass or dict); non-string values are stored
    as JSON. ``format_version`` and ``dtype`` are recorded. ``half`` stores floating tensors as fp16,
    which halves the file and is how the compact shipped weights are made.
    """
    import torch
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != _SUFFIX:
        raise ValueError(f"weights files are {_SUFFIX} files, got {path}")
    missing = [key for key in ("method", "config") if metadata.get(key) in (None, "")]
    if missing:
        raise ValueError(f"save_weights needs metadata {missing}")
    out: dict[str, torch.Tensor] = {}
    float_dtypes = set()
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name!r} is a {type(tensor).__name__}, not a tensor")
        t = tensor.detach().to("cpu")
        if t.is_floating_point():
            if half:
                t = t.to(torch.float16)
            float_dtypes.add(str(t.dtype).removeprefix("torch."))
        # clone: safetensors refuses tensors that share storage, which folded state dicts may do
        out[name] = t.contiguous().clone()
    meta = dict(metadata)
    meta["format_version"] = WEIGHTS_FORMAT_VERSION
    if len(float_dtypes) == 1:
        meta["dtype"] = float_dtypes.pop()
    elif float_dtypes:
        meta["dtype"] = "mixed"
    data = save(out, metadata=_encode_metadata(meta))
    digest = hashlib.sha256(data).hexdigest()
    _atomic_write_bytes(path, data)
    _remember_hash(path, digest)
    return digest


# ------------------------------------------------------------------------------------------- import


def _load_checkpoint(src: Path) -> Any:
    """``torch.load`` with ``weights_only=True``, turning every failure into a :class:`CheckpointError`."""
    import pickle

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. pickle-protocol notices; errors still raise
            return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            raise CheckpointError(
                f"{src} contains pickled Python objects other than tensors (it needs {found.group(1)}). "
                "facerestore only loads checkpoints with torch.load(weights_only=True), because loading "
                "anything else can run arbitrary code; it refused this file. Re-save just the state dict "
                "(torch.save(model.state_dict(), ...)) from a trusted environment."
            ) from exc
        detail = _weights_only_detail(text)
        if _looks_like_pickle(src):
            raise CheckpointError(
                f"{src} is a pickle that torch.load(weights_only=True) cannot read safely ({detail}); it was "
                "refused. Re-save just the state dict with torch.save(model.state_dict(), ...), or the file "
                "is damaged: download it again."
            ) from exc
        raise CheckpointError(
            f"{src} is damaged, truncated or not a PyTorch checkpoint ({detail}); download it again"
        ) from exc
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{src} is damaged, truncated or not a PyTorch checkpoint ({detail}); download it again"
        ) from exc


def _weights_only_detail(text: str) -> str:
    """The useful line of torch's long weights_only error (which also suggests unsafe loading)."""
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return found.group(1).strip().splitlines()[0][:200] if found else "unreadable pickle"


def _looks_like_pickle(path: Path) -> bool:
    """A raw pickle (protocol 2+) starts with PROTO; a torch zip checkpoint with PK."""
    with contextlib.suppress(OSError), open(path, "rb") as f:
        head = f.read(2)
        return head[:1] == b"\x80" or head == b"PK"
    return False


def _unwrap_state_dict(obj: Any, src: Path) -> tuple[dict[str, Any], list[str]]:
    """Find the state dict in a raw or wrapped checkpoint; return it and the wrapper keys walked."""
    import torch

    walked: list[str] = []
    for _ in range(4):
        if not isinstance(obj, Mapping):
            where = f" under {'/'.join(walked)}" if walked else ""
            raise CheckpointError(f"{src}: expected a dict of tensors{where}, found a {type(obj).__name__}")
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj), walked
        key = next((k for k in CHECKPOINT_WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            if not obj:
                raise CheckpointError(f"{src}: the checkpoint holds no tensors")
            junk = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
            raise CheckpointError(
                f"{src} is not a state dict: {len(junk)} of {len(obj)} entries are not tensors "
                f"({', '.join(junk[:5])}{', ...' if len(junk) > 5 else ''}); a wrapped checkpoint must keep "
                f"its weights under one of {', '.join(repr(k) for k in CHECKPOINT_WRAPPER_KEYS)}"
            )
        walked.append(key)
        obj = obj[key]
    raise CheckpointError(f"{src}: state dict nested too deep ({'/'.join(walked)})")


def _strip_module_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints saved from ``nn.DataParallel`` prefix every key with ``module.``."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def read_checkpoint(src: Path | str) -> dict[str, Any]:
    """The state dict of a foreign ``.pth`` checkpoint, loaded safely (``weights_only=True``).

    Unwraps the usual wrapper keys and a ``module.`` prefix; raises :class:`CheckpointError` with a
    message naming the file and what is wrong with it.
    """
    src = Path(src)
    if not src.is_file():
        raise CheckpointError(f"{src}: no such checkpoint file")
    state, _ = _unwrap_state_dict(_load_checkpoint(src), src)
    return _strip_module_prefix(state)


def import_checkpoint(
    src: Path | str,
    method: str,
    dest_dir: Path | str | None = None,
    *,
    name: str | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> ImportResult:
    """Check an official checkpoint key by key, fold it into our layout and store it as safetensors.

    Accepts a ``.pth``/``.pt``/``.ckpt`` loadable with ``torch.load(weights_only=True)`` holding a raw
    state dict or one wrapped under ``params_ema``, ``params``, ``state_dict`` or ``model`` (searched in
    that order, nested up to a few levels; a ``module.`` prefix is dropped), or a ``.safetensors`` file.
    Writes ``<method>-official.safetensors`` (fp32, or ``name``) into ``dest_dir`` (default: the user
    weights folder) and records it in that folder's manifest. ``extra_metadata`` adds provenance
    (``fetch`` records the source URL).
    """
    import torch

    from facerestore_cli.models import get_method

    src = Path(src).expanduser()
    if not src.is_file():
        raise CheckpointError(f"{src}: no such file")
    try:
        spec = get_method(method)
    except KeyError as exc:
        raise CheckpointError(str(exc.args[0])) from None
    convert = getattr(spec.module, "convert_official", None)
    if convert is None:
        raise CheckpointError(f"{method} has no converter for official checkpoints; nothing to import")

    source_sha256 = file_sha256(src)
    if src.suffix == _SUFFIX:
        try:
            raw: Any = load_weights(src, verify=False).tensors
        except WeightsError as exc:
            raise CheckpointError(str(exc)) from exc
    else:
        raw = _load_checkpoint(src)
    state, walked = _unwrap_state_dict(raw, src)
    state = _strip_module_prefix(state)
    if walked:
        log.info("%s: using the state dict under %s", src, "/".join(walked))

    try:
        folded, config = convert(state)
    except (
        KeyError,
        ValueError,
        RuntimeError,
    ) as exc:  # converters raise ValueError (ConversionError)  # e.g. a shape check by load_state_dict
        raise CheckpointError(f"{src} is not a valid {method} checkpoint: {exc}") from exc

    dest_dir = Path(dest_dir).expanduser() if dest_dir is not None else user_weights_dir()
    file_name = name or f"{method}-official"
    if not file_name.endswith(_SUFFIX):
        file_name += _SUFFIX
    if Path(file_name).name != file_name or file_name.startswith("."):
        raise ValueError(f"name must be a plain file name, got {name!r}")
    dest = dest_dir / file_name
    dest_dir.mkdir(parents=True, exist_ok=True)

    config_dict = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    fp32 = {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in folded.items()}
    provenance = {
        "source_file": src.name,
        "source_sha256": source_sha256,
        "imported_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        **(dict(extra_metadata) if extra_metadata else {}),
    }
    metadata = {"method": method, "config": config_dict, **provenance}
    digest = save_weights(fp32, dest, metadata)
    entry = _entry_for_file(
        dest,
        digest,
        {**metadata, "dtype": "float32", "format_version": WEIGHTS_FORMAT_VERSION},
        **provenance,
    )
    update_manifest(dest_dir, dest.name, entry)
    return ImportResult(
        path=dest,
        method=method,
        config=config,
        sha256=digest,
        size=entry["size"],
        source=src,
        source_sha256=source_sha256,
        manifest_path=dest_dir / MANIFEST_NAME,
        tensor_count=len(fp32),
    )


def initialise_from_stylegan2(checkpoint: Path | str, out: Path | str, *, width: float = 1.0) -> Path:
    """Write a MemGAN weights file whose decoder comes from a clean StyleGAN2-512 generator.

    This is the paper's starting point (its decoder blocks are a pretrained StyleGAN2); the encoder,
    memories and fusions keep their fresh initialisation. Train from it with
    ``facerestore train memgan --init OUT``.
    """
    from facerestore_cli.models.memgan import Config
    from facerestore_cli.models.memgan.network import MemGAN

    source = Path(checkpoint)
    config = Config(width=width)
    model = MemGAN(config)
    try:
        model.load_stylegan2(read_checkpoint(source))
    except ValueError as exc:  # the converter's ConversionError
        raise CheckpointError(f"{source} is not a clean StyleGAN2 generator: {exc}") from exc
    out = Path(out)
    meta = {
        "method": "memgan",
        "config": dataclasses.asdict(config),
        "initialised_from": source.name,
        "source_sha256": file_sha256(source),
        "note": "decoder from a clean StyleGAN2-512 generator; not trained for restoration yet",
    }
    save_weights({k: v.detach().contiguous() for k, v in model.state_dict().items()}, out, meta)
    return out


# ----------------------------------------------------------------------------------------- download


class _Retry(Exception):
    """A transient failure: try again (resuming when possible)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _user_agent() -> str:
    try:
        from importlib.metadata import version

        return f"facerestore/{version('facerestore-cli')}"
    except Exception:
        return "facerestore"


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


class _Progress:
    """A rich progress bar on a terminal, nothing otherwise (logs and pipes stay clean)."""

    def __init__(self, enabled: bool, label: str) -> None:
        self._bar: Any = None
        self._task: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._bar.add_task(label, total=None)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def reset(self, completed: int, total: int | None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, total=total)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)


def _check_url(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http:// and https:// URLs can be fetched")


def download(
    url: str,
    dest: Path | str,
    *,
    sha256: str | None = None,
    expected_size: int | None = None,
    timeout: float = 30.0,
    retries: int = 5,
    progress: bool = True,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest + ".part"``, resuming and retrying, then rename.

    An existing ``.part`` (from this or an earlier, interrupted run) is resumed with a ``Range`` request;
    a server that answers 200 instead of 206 ignored the range and the download restarts from zero.
    Connection errors, timeouts, short bodies and HTTP 408/429/5xx are retried ``retries`` times in a row
    with exponential backoff (``backoff`` seconds, doubling, at most 60 s); an attempt that brings new
    bytes does not use up a retry. Other HTTP errors (404, 403, ...) fail at once. Sizes announced by the
    server (Content-Length, Content-Range) must agree with ``expected_size``; the finished file must match
    ``sha256``, else it is deleted and :class:`WeightsIntegrityError` is raised.
    """
    _check_url(url)
    dest = Path(dest).expanduser()
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    want_sha = sha256.lower() if sha256 else None

    if want_sha and dest.is_file() and file_sha256(dest) == want_sha:
        log.info("%s is already downloaded and verified", dest)
        return dest

    state: dict[str, Any] = {"validator": None, "total": expected_size}
    failures = 0
    best = part.stat().st_size if part.exists() else 0
    with _Progress(progress, dest.name) as bar:
        while True:
            try:
                _download_once(url, part, state, expected_size, timeout, bar)
                break
            except _Retry as exc:
                size = part.stat().st_size if part.exists() else 0
                failures = 0 if size > best else failures + 1  # new bytes: not a wasted retry
                best = max(best, size)
                if failures > retries:
                    kept = f" Run it again to resume from the {size} bytes kept in {part}." if size else ""
                    raise DownloadError(
                        f"downloading {url}: gave up after {failures} failed attempts in a row (last: {exc}).{kept}"
                    ) from exc
                delay = min(backoff * 2 ** max(failures - 1, 0), 60.0)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, 60.0))
                log.warning("%s: %s; retrying in %.1f s", url, exc, delay)
                time.sleep(delay)

    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink(missing_ok=True)
        raise WeightsIntegrityError(
            f"{url}: downloaded {size} bytes, expected {expected_size}; the partial file was deleted"
        )
    if want_sha:
        digest = _hash_file(part)
        if digest != want_sha:
            part.unlink(missing_ok=True)
            raise WeightsIntegrityError(
                f"{url}: the downloaded file has sha256 {digest}, expected {want_sha}; it was deleted. "
                "Try again; if it keeps happening the source or mirror serves a different file."
            )
    os.replace(part, dest)
    _fsync_dir(dest.parent)
    return dest


def _download_once(
    url: str,
    part: Path,
    state: dict[str, Any],
    expected_size: int | None,
    timeout: float,
    bar: _Progress,
) -> None:
    """One HTTP request: append to (or restart) ``part``; return when it is complete, else raise."""
    offset = part.stat().st_size if part.exists() else 0
    total = state["total"]
    if total is not None and offset > total:
        part.unlink()
        offset = 0
    if total is not None and offset == total and offset > 0:
        return  # a complete .part from an earlier run
    headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if state["validator"]:
            headers["If-Range"] = state["validator"]
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            if exc.code == 416 and offset:
                match = _CONTENT_RANGE.search(exc.headers.get("Content-Range", "") or "")
                if match and match.group(3) != "*" and int(match.group(3)) == offset:
                    state["total"] = offset
                    return  # the .part already holds the whole file
                part.unlink(missing_ok=True)
                raise _Retry("server cannot resume this partial file; restarting") from None
            if exc.code in _RETRY_STATUS:
                raise _Retry(f"HTTP {exc.code} {exc.reason}", _retry_after(exc.headers)) from None
            hint = " (check the URL)" if exc.code in (404, 410) else ""
            raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, str) and "unknown url type" in reason:
            raise DownloadError(f"{url}: {reason}") from None
        raise _Retry(f"request failed: {reason}") from None

    with response:
        status = response.status
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.strip().isdigit() else None
        if status == 206:
            match = _CONTENT_RANGE.search(response.headers.get("Content-Range", "") or "")
            if not match or match.group(1) is None:
                part.unlink(missing_ok=True)
                raise _Retry("server sent a partial response without a usable Content-Range; restarting")
            start, end = int(match.group(1)), int(match.group(2))
            total = int(match.group(3)) if match.group(3) != "*" else None
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"server resumed at byte {start} instead of {offset}; restarting")
            if length is not None and length != end - start + 1:
                raise _Retry(f"Content-Length {length} disagrees with Content-Range {start}-{end}")
            mode = "ab"
        elif status == 200:
            if offset:
                log.info("%s ignored the range request; restarting from the beginning", url)
            offset = 0
            total = length
            mode = "wb"
        else:
            raise DownloadError(f"downloading {url} failed: unexpected HTTP {status}")
        if total is not None and expected_size is not None and total != expected_size:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url} is {total} bytes, expected {expected_size}: the source serves a different file")
        if status == 200 or state["validator"] is None:
            etag = response.headers.get("ETag")
            last_modified = response.headers.get("Last-Modified")
            # If-Range takes a strong ETag or else a date; weak ETags must not be used.
            state["validator"] = etag if etag and not etag.startswith("W/") else last_modified
        state["total"] = total
        bar.reset(offset, total)

        written = offset
        with open(part, mode) as f:
            while True:
                try:
                    # read1: return what has arrived, so a stall after some bytes keeps those bytes
                    chunk = response.read1(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, IncompleteRead
                    f.flush()
                    os.fsync(f.fileno())
                    why = str(exc) or type(exc).__name__
                    raise _Retry(f"connection lost after {written} bytes ({why})") from None
                if not chunk:
                    break
                f.write(chunk)
                written += len(chunk)
                bar.advance(len(chunk))
                if total is not None and written > total:
                    break
            f.flush()
            os.fsync(f.fileno())
    if total is not None and written != total:
        if written > total:
            part.unlink(missing_ok=True)
            raise _Retry(f"server sent {written} bytes of a {total}-byte file; restarting")
        raise _Retry(f"connection closed after {written} of {total} bytes")


# -------------------------------------------------------------------------------------------- fetch


def _url_file_name(url: str, method: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return name if name and not name.startswith(".") else f"{method}.pth"


def fetch(
    method: str,
    *,
    url: str | None = None,
    dest_dir: Path | str | None = None,
    timeout: float = 30.0,
    retries: int = 5,
    progress: bool = True,
    backoff: float = 1.0,
) -> ImportResult:
    """Download a method's official checkpoint and import it (see :func:`import_checkpoint`).

    The source is ``url`` if given, else ``$FACERESTORE_<METHOD>_URL`` (e.g. ``FACERESTORE_DMDNET_URL``,
    for mirrors), else the official release its model card declares. The download is kept in
    ``<dest_dir>/downloads/`` while incomplete, so running fetch again resumes it; it is deleted once
    imported.
    """
    from facerestore_cli.models import get_method

    try:
        official = get_method(method).official
    except KeyError as exc:
        raise WeightsError(str(exc.args[0])) from None
    env_name = f"FACERESTORE_{method.upper()}_URL"
    source_url = url or os.environ.get(env_name)
    if not source_url:
        if official is None:
            raise WeightsError(
                f"{method} has no public weights to fetch: the {method} weights facerestore uses were "
                "trained by this project and ship with it in weights/ (reinstall facerestore if they are "
                f"missing). To use your own checkpoint: facerestore weights import PATH --method {method}"
            )
        source_url = official.url
    is_official = official is not None and source_url == official.url
    dest_dir = Path(dest_dir).expanduser() if dest_dir is not None else user_weights_dir()
    downloaded = dest_dir / "downloads" / _url_file_name(source_url, method)
    download(
        source_url,
        downloaded,
        sha256=official.sha256 if is_official else None,
        expected_size=official.size if is_official else None,
        timeout=timeout,
        retries=retries,
        progress=progress,
        backoff=backoff,
    )
    try:
        result = import_checkpoint(downloaded, method, dest_dir, extra_metadata={"source_url": source_url})
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}\n(the downloaded file is kept at {downloaded} for inspection)") from exc
    downloaded.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        downloaded.parent.rmdir()  # only if empty
    return result


# ------------------------------------------------------------------------------------------- verify


def verify_all(explicit: Path | str | None = None, methods: tuple[str, ...] = ()) -> list[VerifyResult]:
    """Check every file listed in every manifest of the lookup places (``facerestore weights verify``),
    and the file each of ``methods`` would actually load (``explicit`` is ``--weights``), listed or not.

    Hashes are recomputed (not taken from the per-process cache): this is the command for catching
    damaged files. A file in use that no manifest lists has nothing to be compared with, so its
    tensors are read and checked for NaN and infinity instead.
    """
    results = _verify_manifests()
    by_path = {r.path.resolve(): i for i, r in enumerate(results)}
    for method in methods:
        try:  # --weights is for the one method it holds; the others follow the lookup order
            loc = locate_weights(method, explicit)
        except WeightsError:
            try:
                loc = locate_weights(method)
            except WeightsError:
                continue
        key = loc.path.resolve()
        if key in by_path:
            results[by_path[key]] = dataclasses.replace(results[by_path[key]], in_use_for=method)
            continue
        try:
            loaded = load_weights(loc)
            result = VerifyResult(loc.path, loc.origin, "unlisted", actual_sha256=loaded.sha256, in_use_for=method)
        except WeightsError as exc:
            result = VerifyResult(loc.path, loc.origin, "damaged", in_use_for=method, detail=str(exc))
        by_path[key] = len(results)
        results.append(result)
    return results


def _verify_manifests() -> list[VerifyResult]:
    results: list[VerifyResult] = []
    seen: set[Path] = set()
    for place in search_places(None):
        if place.path is None:
            continue
        folder = place.path.expanduser()
        if folder.is_file():
            folder = folder.parent
        if not folder.is_dir() or folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        for name, entry in read_manifest(folder)["files"].items():
            results.append(_verify_entry(folder / name, place.origin, entry))
    return results


def _verify_entry(path: Path, origin: str, entry: Mapping[str, Any]) -> VerifyResult:
    expected_sha = str(entry["sha256"]).lower() if entry.get("sha256") else None
    expected_size = int(entry["size"]) if entry.get("size") is not None else None
    common = {"path": path, "origin": origin, "expected_sha256": expected_sha, "expected_size": expected_size}
    if not path.is_file():
        return VerifyResult(status="missing", **common)
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return VerifyResult(status="size mismatch", actual_size=size, **common)
    digest = file_sha256(path, use_cache=False)
    status = "ok" if expected_sha in (None, digest) else "hash mismatch"
    return VerifyResult(status=status, actual_sha256=digest, actual_size=size, **common)
