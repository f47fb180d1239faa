"""``facerestore weights verify``: recompute every hash a manifest promises, and check the files in use.

A restore only checks the one file it loads; this is the command that finds a damaged or swapped file
anywhere in the lookup before it is needed, so it bypasses the per-process hash cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facerestore_cli.weights.errors import WeightsError
from facerestore_cli.weights.files import file_sha256
from facerestore_cli.weights.lookup import load_weights, locate_weights, search_places
from facerestore_cli.weights.manifest import read_manifest

__all__ = ["VerifyResult", "verify_all"]


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
