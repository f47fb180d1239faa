"""The safetensors file itself: hashing, metadata encoding, writing, and reading tensors back.

Nothing here knows about manifests or where files are looked for; that is what lets the manifest and
lookup layers build on it without a cycle. torch and safetensors are imported inside the functions that
need them, so that listing weights (``weights list``, ``doctor``) reads headers without paying for torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facerestore_cli.weights.errors import WeightsError, WeightsIntegrityError

if TYPE_CHECKING:
    import torch

__all__ = ["WEIGHTS_FORMAT_VERSION", "LoadedWeights", "file_sha256", "read_safetensors_metadata", "save_weights"]

#: version of the metadata layout save_weights writes; a file with a larger one needs a newer facerestore
WEIGHTS_FORMAT_VERSION = 1

_SUFFIX = ".safetensors"
_CHUNK = 1 << 20
_MAX_HEADER = 100 << 20  # the safetensors library's own limit on the JSON header


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


# ------------------------------------------------------------------------------------ atomic writes


def _write_atomically(path: Path, data: bytes) -> None:
    """Publish ``data`` as ``path`` through the project's one atomic writer (fsync of file and folder).

    A reader must see the old file or the new one, never half of either. The writer reports failures as
    photo-flavoured ``ImageFileError``; they become :class:`WeightsError` here, with the writer's message,
    so that the CLI prints a full disk or a read-only folder instead of a traceback. It is imported here
    rather than at the top because ``facerestore_cli.imagefile`` brings numpy and Pillow with it.
    """
    from facerestore_cli.imagefile import ImageFileError, atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(path) as tmp:
            tmp.write_bytes(data)
    except ImageFileError as exc:
        raise WeightsError(f"cannot write {path}: {exc.detail}") from exc


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


# ------------------------------------------------------------------------------------ read and save


def _read_weights(path: Path, sha256: str) -> LoadedWeights:
    """The tensors of an already-checked file, refusing damage the manifest check cannot see.

    ``sha256`` is the caller's (from the manifest check or the hash cache), so the file is not hashed twice.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw_meta = f.metadata()
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own SafetensorError, or OSError/ValueError
        raise WeightsIntegrityError(
            f"{path} is not a valid safetensors file ({exc}); it is damaged or truncated: re-fetch it"
        ) from exc
    _check_finite(tensors, path)
    return LoadedWeights(tensors=tensors, metadata=_decode_metadata(raw_meta, path), path=path, sha256=sha256)


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
    _write_atomically(path, data)
    _remember_hash(path, digest)
    return digest
