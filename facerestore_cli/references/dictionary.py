"""Per-person DMDNet specific dictionaries, compiled once from ordinary photos and cached.

The official code re-encodes every reference for every image it restores. A person's dictionary only
depends on their reference photos and on the weights, so we compile it once: detect, align, find the
68 landmarks, reject photos that would hurt (no face, several faces, face too small, or somebody else,
judged by the face embeddings against the other references), run the reference encoder, and store
the 18 key/value tensors as safetensors, with the centroid of the references' embeddings for routing.
The cache key is the references' *content* (not their names or dates), the weights' sha256, the
preparation settings (detector and embedder: :func:`dictionary_settings`) and :data:`DICTIONARY_FORMAT`;
an unchanged folder is a cache hit and costs one hash of its files. An entry is only trusted while its
tensors match the digest stored with them; anything else is deleted and compiled again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facerestore_cli.album import discover_inputs
from facerestore_cli.defaults import cache_root
from facerestore_cli.face.identity import DLIB_OUTLIER_DISTANCE
from facerestore_cli.imagefile import ImageFileError, load_photo, rgb8
from facerestore_cli.weights.errors import WeightsError
from facerestore_cli.weights.files import read_safetensors_metadata

#: Bump when what a dictionary file contains or how references are prepared changes.
#: 2: a group photo (a second face at least :data:`GROUP_FACE_RATIO` of the largest) is rejected.
DICTIONARY_FORMAT = 2
#: A reference face smaller than this (longest box side, photo pixels) has too little detail to help.
MIN_REFERENCE_FACE = 96
#: A second face at least this fraction of the largest one's size makes a photo ambiguous: even with
#: ``allow_groups`` nobody can tell whose reference it is.
SECOND_FACE_RATIO = 0.6
#: Another face at least this fraction of the largest one's size makes a photo a group photo, rejected
#: unless ``allow_groups``: a 6-face selfie's second face is 0.52 of the selfie-taker's, and a wrong
#: largest face (a detector's miss) would give the person somebody else's features. Smaller faces (far
#: in the background) do not count.
GROUP_FACE_RATIO = 0.25
#: A reference further than this (dlib distance) from the others' median embedding is an outlier
#: (dlib's; the pipeline passes its embedder's own ``outlier_distance``).
OUTLIER_DISTANCE = DLIB_OUTLIER_DISTANCE


class Embedder(Protocol):
    """What references need of a face embedder (``face.identity``'s dlib and insightface embedders)."""

    #: canonical name, recorded with every dictionary (``dlib``, ``insightface:buffalo_l``)
    name: str
    #: a reference further than this from the others' median embedding is somebody else
    outlier_distance: float
    #: embeddings are directions (compared as unit vectors)
    unit_vectors: bool

    def embed(self, aligned_rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray: ...


@dataclass
class ReferenceReport:
    """One reference photo: used or rejected, and why."""

    path: str
    used: bool
    reason: str | None = None
    face_size: float | None = None
    distance: float | None = None
    sha256: str | None = None


@dataclass
class CompiledDictionary:
    """A person's dictionary: tensors for DMDNet plus what it was built from."""

    name: str
    key: str
    path: Path
    tensors: dict[str, Any]
    centroid: np.ndarray | None
    references: list[ReferenceReport] = field(default_factory=list)
    from_cache: bool = False
    seconds: float = 0.0
    #: The embedder whose space ``centroid`` lives in (its canonical name, e.g. ``dlib``).
    embedder: str | None = None

    @property
    def used(self) -> int:
        return sum(r.used for r in self.references)


class DictionaryError(RuntimeError):
    """No usable reference in a folder, or a damaged cache entry."""


class DictionaryCache:
    """The on-disk cache of compiled dictionaries: ``<root>/dictionaries/<key>.safetensors``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or cache_root()) / "dictionaries"

    def path_for(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def load(self, key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The tensors and metadata of an entry, or ``None`` when absent or damaged (then it is deleted).

        An entry is trusted only when it parses, was written by this :data:`DICTIONARY_FORMAT` for this
        key, and its tensors still hash to the digest stored with them: a flipped byte is rebuilt too.
        """
        path = self.path_for(key)
        meta = self.peek(key)
        tensors: dict[str, Any] = {}
        if meta is not None:
            from safetensors import safe_open

            try:
                with safe_open(str(path), framework="np") as f:
                    tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            except Exception:  # a damaged entry is rebuilt, never trusted
                tensors = {}
        if (
            meta is None
            or not any(not k.startswith("_") for k in tensors)
            or meta.get("tensors_sha256") != tensors_digest(tensors)
        ):
            path.unlink(missing_ok=True)
            return None
        return tensors, meta

    def peek(self, key: str) -> dict[str, Any] | None:
        """The metadata of an entry from its header alone, or ``None`` when absent, unreadable or not ours.

        For listings: it reads a few kilobytes where :meth:`load` reads and hashes every tensor, so
        a folder of many people lists quickly. The tensors are still verified when the entry is used.
        """
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:  # the header alone, without torch: `cache list` and `people` stay fast
            meta = read_safetensors_metadata(path)
        except WeightsError:
            return None
        if meta.get("format") != str(DICTIONARY_FORMAT) or meta.get("key") != key:
            return None
        return meta

    def check_writable(self) -> None:
        """Raise ``DictionaryError`` now when entries could not be saved (a read-only cache, or a cache
        path that is a file), rather than after the references were prepared and encoded."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise DictionaryError(
                f"cannot write the dictionary cache {self.root}: {exc.strerror or exc}; "
                "set FACERESTORE_CACHE to a writable folder"
            ) from None

    def save(self, key: str, tensors: dict[str, Any], metadata: dict[str, str]) -> Path:
        """Write an entry atomically, with its key and the digest of its tensors in the metadata."""
        from safetensors.numpy import save_file

        self.check_writable()
        path = self.path_for(key)
        tensors = {k: as_array(v) for k, v in tensors.items()}
        metadata = {**metadata, "key": key, "tensors_sha256": tensors_digest(tensors)}
        # the project's one atomic writer: a crash mid-save leaves the old entry or none, never half of one
        from facerestore_cli.imagefile import atomic_write

        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return path

    def prune(self, keep: str, folder: str, weights_sha256: str, settings: str) -> int:
        """Delete the entries a rebuild of ``folder`` supersedes (same weights and settings, older photos)."""
        removed = 0
        for entry in self.entries():
            if (
                entry["key"] != keep
                and entry["folder"] == folder
                and entry.get("weights_sha256") == weights_sha256
                and entry.get("settings") == settings
            ):
                Path(entry["path"]).unlink(missing_ok=True)
                removed += 1
        return removed

    def entries(self) -> list[dict[str, Any]]:
        """Every cached dictionary with its person, folder, reference count, size and age."""
        out = []
        for path in sorted(self.root.glob("*.safetensors")):
            try:
                meta = read_safetensors_metadata(path)
            except WeightsError:
                meta = {"damaged": "true"}
            out.append(
                {
                    "key": path.stem,
                    "path": str(path),
                    "person": meta.get("person"),
                    "folder": meta.get("folder"),
                    "references": int(meta.get("used", 0)),
                    "bytes": path.stat().st_size,
                    "created": meta.get("created"),
                    "weights_sha256": meta.get("weights_sha256"),
                    "settings": meta.get("settings"),
                    "embedder": meta.get("embedder") or None,
                    "damaged": meta.get("damaged") == "true",
                }
            )
        return out

    def clear(self, folder: Path | None = None) -> int:
        """Delete all entries, or those compiled from ``folder``. Returns how many were removed."""
        removed = 0
        for entry in self.entries():
            if folder is None or entry["folder"] == str(Path(folder).resolve()):
                Path(entry["path"]).unlink(missing_ok=True)
                removed += 1
        if folder is None and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)
        return removed


def reference_files(folder: Path) -> list[Path]:
    inputs = discover_inputs([str(folder)], recursive=False)
    return [item.path for item in inputs.items]


def file_digests(files: list[Path]) -> list[str]:
    """sha256 of each file's bytes: what a reference *is*, whatever its name or date."""
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in files]


def dictionary_settings(detector: str, embedder: str, allow_groups: bool = False) -> str:
    """The preparation settings that change a dictionary (part of its cache key).

    ``embedder`` is the embedder's canonical name (``identity.resolve_embedder``): it decides which
    references are rejected as outliers and the space the stored centroid lives in. ``allow_groups``
    lets group photos in (their largest face), so it keys the dictionary too.
    """
    return f"detector={detector};embedder={embedder}" + (";groups=allowed" if allow_groups else "")


def dictionary_key(files: list[Path], weights_sha256: str, settings: str = "", digests: list[str] | None = None) -> str:
    """Content hash of the references (order-free), the weights, the settings and the format version."""
    digests = sorted(digests if digests is not None else file_digests(files))
    h = hashlib.sha256()
    h.update(f"facerestore-dictionary:{DICTIONARY_FORMAT}:{weights_sha256}:{settings}\n".encode())
    for d in digests:
        h.update(d.encode() + b"\n")
    return h.hexdigest()[:32]


def as_array(value: Any) -> np.ndarray:
    """A dictionary tensor as a contiguous NumPy array (a torch restorer's CPU tensors, or arrays).

    Dictionaries are NumPy from encoding to the cache and back, so that the onnxruntime path, which
    reads and writes them, never needs torch; the torch restorer converts them on its device.
    """
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value)


def tensors_digest(tensors: dict[str, Any]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a dictionary's tensors (order-free)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = as_array(tensors[name])
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.tobytes())
    return h.hexdigest()


@dataclass
class PreparedFace:
    """A reference face ready for encoding: aligned crop, landmarks, embedding."""

    crop: np.ndarray
    landmarks68: np.ndarray
    embedding: np.ndarray | None


def prepare_references(
    files: list[Path],
    detect: Callable[[np.ndarray], list],
    align: Callable[[np.ndarray, Any], tuple[np.ndarray, np.ndarray]],
    embed: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    *,
    min_face: int = MIN_REFERENCE_FACE,
    outlier_distance: float = OUTLIER_DISTANCE,
    unit_vectors: bool = False,
    digests: list[str] | None = None,
    allow_groups: bool = False,
) -> tuple[list[PreparedFace], list[ReferenceReport]]:
    """Choose the usable references in ``files`` and say why the others were rejected.

    ``detect(rgb) -> faces``, ``align(rgb, face) -> (crop, landmarks68)`` and ``embed(crop, lm)`` are
    the pipeline's own stages, so references are prepared exactly like the faces they will help.
    ``unit_vectors``: the embeddings are directions (insightface), so the others' median is rescaled to
    unit length before the distance is taken. A group photo is rejected (the README promises references
    that show only the person) unless ``allow_groups``, which takes its largest face when that face is
    clearly the largest (:data:`SECOND_FACE_RATIO`).
    """
    reports: list[ReferenceReport] = []
    prepared: list[tuple[int, PreparedFace]] = []
    for n, path in enumerate(files):
        report = ReferenceReport(path=str(path), used=False, sha256=digests[n] if digests else None)
        reports.append(report)
        try:
            photo = load_photo(path)
        except ImageFileError as exc:
            report.reason = f"unreadable: {exc}"
            continue
        rgb = rgb8(photo)
        faces = sorted(detect(rgb), key=lambda f: -f.size)
        if not faces:
            report.reason = "no face found"
            continue
        others = [f for f in faces[1:] if f.size >= GROUP_FACE_RATIO * faces[0].size]
        if others and (not allow_groups or others[0].size >= SECOND_FACE_RATIO * faces[0].size):
            n = len(others) + 1
            report.reason = (
                f"{n} faces of similar size: nobody can tell whose reference it is"
                if allow_groups
                else f"{n} faces: a reference photo must show only the person (--allow-groups takes the "
                "largest face of a group photo)"
            )
            continue
        face = faces[0]
        report.face_size = round(float(face.size), 1)
        if face.size < min_face:
            report.reason = f"face too small ({face.size:.0f} px < {min_face} px)"
            continue
        crop, marks = align(rgb, face)
        emb = embed(crop, marks) if embed is not None else None
        prepared.append((len(reports) - 1, PreparedFace(crop, marks, emb)))

    if embed is not None and len(prepared) >= 3:
        embs = np.stack([p.embedding for _, p in prepared])
        for j, (i, _) in enumerate(prepared):
            others = np.delete(embs, j, axis=0)
            median = np.median(others, axis=0)
            if unit_vectors:
                median = _unit(median)
            d = float(np.linalg.norm(embs[j] - median))
            reports[i].distance = round(d, 4)
            if d > outlier_distance:
                reports[i].reason = f"identity outlier: distance {d:.2f} to the other references (> {outlier_distance})"
        prepared = [(i, p) for i, p in prepared if reports[i].reason is None]
    for i, _ in prepared:
        reports[i].used = True
    return [p for _, p in prepared], reports


def compile_dictionary(
    folder: Path,
    *,
    weights_sha256: str,
    encode: Callable[[np.ndarray, np.ndarray], dict[str, Any]],
    detect: Callable[[np.ndarray], list],
    align: Callable[[np.ndarray, Any], tuple[np.ndarray, np.ndarray]],
    embedder: Embedder | None,
    cache: DictionaryCache | None = None,
    settings: str = "",
    force: bool = False,
    name: str | None = None,
    allow_groups: bool = False,
) -> CompiledDictionary:
    """Compile (or load from the cache) the dictionary of the person photographed in ``folder``.

    A rebuild replaces the entries it supersedes (same folder, weights and settings), so editing a
    person's photos does not leave stale dictionaries behind. The embedder's name (put it in
    ``settings`` too) is recorded with the entry, and an entry recorded with another embedder is never
    returned. Without an embedder no reference is checked against the others and no centroid is stored.
    ``allow_groups`` lets group photos in (see :func:`prepare_references`); give the same to
    :func:`dictionary_settings` for ``settings``, so such a dictionary has its own cache entry.
    """
    embed = embedder.embed if embedder is not None else None
    outlier_distance = embedder.outlier_distance if embedder is not None else OUTLIER_DISTANCE
    unit_vectors = bool(embedder.unit_vectors) if embedder is not None else False
    embedder_name = embedder.name if embedder is not None else None
    started = time.perf_counter()
    folder = Path(folder)
    cache = cache or DictionaryCache()
    files = reference_files(folder)
    if not files:
        raise DictionaryError(f"{folder}: no reference photos (JPEG, PNG, WebP, BMP, TIFF) found")
    digests = file_digests(files)
    key = dictionary_key(files, weights_sha256, settings, digests)
    name = name or folder.resolve().name
    if not force:
        hit = cache.load(key)
        if hit is not None and embedder_name is not None and (hit[1].get("embedder") or None) != embedder_name:
            hit = None  # the centroid is another embedder's: compile again (the save below replaces it)
        if hit is not None:
            tensors, meta = hit
            centroid = tensors.pop("_centroid", None)
            refs = _current_names(json.loads(meta.get("references", "[]")), files, digests)
            return CompiledDictionary(
                name=name, key=key, path=cache.path_for(key), tensors=tensors,
                centroid=centroid, references=refs, from_cache=True,
                seconds=time.perf_counter() - started, embedder=meta.get("embedder") or None,
            )  # fmt: skip
    prepared, reports = prepare_references(
        files, detect, align, embed, outlier_distance=outlier_distance, unit_vectors=unit_vectors, digests=digests,
        allow_groups=allow_groups,
    )  # fmt: skip
    if not prepared:
        reasons = "; ".join(f"{Path(r.path).name}: {r.reason}" for r in reports)
        raise DictionaryError(f"{folder}: no usable reference photo ({reasons})")
    crops = np.stack([p.crop for p in prepared])
    marks = np.stack([p.landmarks68 for p in prepared])
    tensors = {k: as_array(v) for k, v in encode(crops, marks).items()}
    centroid = None
    store = dict(tensors)
    if embed is not None:
        centroid = np.mean([p.embedding for p in prepared], axis=0)
        centroid = (_unit(centroid) if unit_vectors else centroid).astype(np.float32)
        store["_centroid"] = centroid
    meta = {
        "format": str(DICTIONARY_FORMAT),
        "person": name,
        "folder": str(folder.resolve()),
        "weights_sha256": weights_sha256,
        "settings": settings,
        "embedder": embedder_name or "",
        "used": str(len(prepared)),
        "references": json.dumps([asdict(r) for r in reports]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path = cache.save(key, store, meta)
    cache.prune(key, meta["folder"], weights_sha256, settings)
    return CompiledDictionary(
        name=name, key=key, path=path, tensors=tensors, centroid=centroid, references=reports,
        from_cache=False, seconds=time.perf_counter() - started, embedder=embedder_name,
    )  # fmt: skip


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _current_names(stored: list[dict[str, Any]], files: list[Path], digests: list[str]) -> list[ReferenceReport]:
    """The cached reports under the files' current names: a renamed photo is the same reference."""
    by_digest: dict[str, list[Path]] = {}
    for path, digest in zip(files, digests, strict=True):
        by_digest.setdefault(digest, []).append(path)
    known = {f.name for f in ReferenceReport.__dataclass_fields__.values()}
    reports = []
    for row in stored:
        report = ReferenceReport(**{k: v for k, v in row.items() if k in known})
        paths = by_digest.get(report.sha256 or "")
        if paths:
            report.path = str(paths.pop(0))
        reports.append(report)
    return reports
