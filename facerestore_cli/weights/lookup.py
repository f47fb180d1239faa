"""Where weights are looked for (see the lookup order in the package docstring) and loading what is found.

:func:`load_weights` lives here rather than in :mod:`.files` because it checks a file against its
manifest entry and accepts a :class:`WeightsLocation`; keeping it above the manifest layer is what lets
imports go one way (errors, files, manifest, lookup).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facerestore_cli.weights.errors import WeightsError, WeightsIntegrityError, WeightsNotFound
from facerestore_cli.weights.files import _SUFFIX, LoadedWeights, _read_weights, file_sha256, read_safetensors_metadata
from facerestore_cli.weights.manifest import manifest_entry, read_manifest

if TYPE_CHECKING:
    from facerestore_cli.models import OfficialCheckpoint

__all__ = [
    "SearchPlace",
    "WeightsLocation",
    "list_weights",
    "load_weights",
    "locate_weights",
    "official_source",
    "project_weights_dirs",
    "search_places",
    "user_weights_dir",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsLocation:
    """A weights file found by the lookup, where it was found and what its manifest says about it."""

    path: Path
    origin: str  # "flag" (--weights), "env" ($FACERESTORE_WEIGHTS), "user" or "project" (shipped)
    manifest: dict[str, Any] | None = field(default=None, compare=False)
    method: str | None = None


@dataclass(frozen=True)
class SearchPlace:
    """One place the lookup looks in, for error messages and ``facerestore doctor``."""

    origin: str
    path: Path | None
    description: str


def official_source(method: str) -> OfficialCheckpoint | None:
    """Where ``method``'s official checkpoint is published (from the model registry), if anywhere."""
    from facerestore_cli.models import get_method

    try:
        return get_method(method).official
    except KeyError:
        return None


# ------------------------------------------------------------------------------------------- places


def user_weights_dir() -> Path:
    """The per-user weights folder (see the package docstring); it need not exist."""
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
    package = Path(__file__).resolve().parent.parent  # facerestore_cli/, above this weights/ package
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


# ------------------------------------------------------------------------------------------- lookup


def _method_of(path: Path, entry: Mapping[str, Any] | None) -> str | None:
    """The method a file is for: its manifest entry says so, else its header (an unreadable one is skipped)."""
    if entry and entry.get("method"):
        return str(entry["method"])
    try:
        return read_safetensors_metadata(path).get("method")
    except WeightsError as exc:
        log.warning("skipping %s: %s", path, exc)
        return None


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
    """Find the weights file for ``method`` following the lookup order of the package docstring."""
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


# -------------------------------------------------------------------------------------------- load


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
    return _read_weights(path, digest)
