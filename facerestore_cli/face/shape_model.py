"""dlib's 68-point shape predictor, run in numpy from an array copy of its model file.

dlib needs 1-1.5 s to deserialise its 100 MB model at every start, which is most of what a script that
calls ``facerestore`` once per photo waits for. The model is a cascade of regression trees (Kazemi and
Sullivan, 2014): 15 levels of 500 depth-4 trees over 400 pixel intensities. We parse dlib's file once
into plain arrays, cache them (memory-mapped ``.npy``, loaded in milliseconds) and evaluate the cascade
with the same arithmetic as dlib: float32 shape updates summed in tree order, the similarity transform
of Umeyama in float64 cast to float32, pixel positions rounded half up, and intensities ``(r+g+b)//3``.

Every converted copy is checked against dlib itself before it is used (:func:`convert`), and
``tests/test_shape_model.py`` compares the two on real faces; a copy that disagrees is never cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerestore_cli.defaults import cache_root, default_cache_root
from facerestore_cli.face.dlib_models import dlib_model_path
from facerestore_cli.imagefile import ImageFileError, atomic_write

log = logging.getLogger(__name__)

__all__ = ["ShapeModel", "ShapeModelError", "cached_shape_model", "convert", "parse_dlib_model"]

#: Bumped whenever the cached layout or the evaluation changes, so an old copy is rebuilt.
FORMAT_VERSION = 1
MODEL_NAME = "shape_predictor_68_face_landmarks.dat"

# One serialised dlib integer: a control byte (bit 7 = negative, low 4 bits = byte count 1..8) and
# that many little-endian bytes. Every number in a shape predictor file is one of these, and a float
# is two (mantissa, exponent), so one regular expression splits the file into its numbers in C.
_TOKEN = re.compile(
    b"|".join(bytes([c]) + b"(?s:" + b"." * (c & 15) + b")" for c in [*range(1, 9), *range(0x81, 0x89)])
)


class ShapeModelError(RuntimeError):
    """A dlib shape predictor file that this parser does not understand."""


def _tokens(data: bytes) -> np.ndarray:
    """All serialised integers of ``data`` as int64, in order."""
    lengths = np.fromiter(map(len, _TOKEN.findall(data)), dtype=np.int64)
    if int(lengths.sum()) != len(data):
        raise ShapeModelError("not a dlib serialisation stream (bytes left between numbers)")
    starts = np.concatenate([[0], np.cumsum(lengths[:-1])])
    buf = np.frombuffer(data, dtype=np.uint8)
    control = buf[starts].astype(np.int64)
    count = control & 15
    values = np.zeros(len(starts), dtype=np.uint64)
    last = len(buf) - 1
    for j in range(8):
        present = count > j
        byte = buf[np.minimum(starts + 1 + j, last)].astype(np.uint64)
        values |= np.where(present, byte, 0).astype(np.uint64) << np.uint64(8 * j)
    signed = values.astype(np.int64)
    return np.where(control & 0x80, -signed, signed)


def _floats(tokens: np.ndarray) -> np.ndarray:
    """dlib ``float_details`` pairs (mantissa, exponent) back to float32; special values refused."""
    mantissa, exponent = tokens[0::2], tokens[1::2]
    if exponent.size and int(exponent.max()) >= 32000:
        raise ShapeModelError("the model holds infinite or NaN values")
    return np.ldexp(mantissa.astype(np.float64), exponent.astype(np.int32)).astype(np.float32)


def parse_dlib_model(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a dlib ``shape_predictor`` file (version 1, full binary trees).

    Returns ``initial_shape`` (P*2,), ``split_idx`` (C, T, S, 2), ``split_thresh`` (C, T, S),
    ``leaves`` (C, T, L, P*2), ``anchor`` (C, F) and ``deltas`` (C, F, 2).
    """
    t = _tokens(Path(path).read_bytes())
    pos = 0

    def take(n: int) -> np.ndarray:
        nonlocal pos
        if pos + n > len(t):
            raise ShapeModelError("the file ends early")
        out = t[pos : pos + n]
        pos += n
        return out

    def one() -> int:
        return int(take(1)[0])

    if one() != 1:
        raise ShapeModelError("unknown shape predictor version")
    rows, cols = -one(), -one()
    if cols != 1 or rows <= 0 or rows % 2:
        raise ShapeModelError("unexpected initial shape")
    initial = _floats(take(2 * rows))
    cascades = one()
    split_idx, split_thresh, leaves = [], [], []
    for _ in range(cascades):
        trees = one()
        level_idx, level_thresh, level_leaves = [], [], []
        for _ in range(trees):
            splits = one()
            block = take(4 * splits).reshape(splits, 4)
            n_leaves = one()
            if n_leaves != splits + 1:
                raise ShapeModelError("a tree that is not a full binary tree")
            leaf = take(n_leaves * (2 + 2 * rows)).reshape(n_leaves, 2 + 2 * rows)
            if np.any(leaf[:, 0] != -rows) or np.any(leaf[:, 1] != -1):
                raise ShapeModelError("a leaf of the wrong size")
            level_idx.append(block[:, :2])
            level_thresh.append(_floats(block[:, 2:].reshape(-1)))
            level_leaves.append(_floats(leaf[:, 2:].reshape(-1)).reshape(n_leaves, rows))
        split_idx.append(np.stack(level_idx))
        split_thresh.append(np.stack(level_thresh))
        leaves.append(np.stack(level_leaves))
    if one() != cascades:
        raise ShapeModelError("anchor list of the wrong length")
    anchors = []
    for _ in range(cascades):
        anchors.append(take(one()).copy())
    if one() != cascades:
        raise ShapeModelError("delta list of the wrong length")
    deltas = []
    for _ in range(cascades):
        n = one()
        deltas.append(_floats(take(4 * n)).reshape(n, 2))
    if pos != len(t):
        raise ShapeModelError("data after the model")
    return {
        "initial_shape": initial,
        "split_idx": np.stack(split_idx).astype(np.int32),
        "split_thresh": np.stack(split_thresh),
        "leaves": np.stack(leaves),
        "anchor": np.stack(anchors).astype(np.int32),
        "deltas": np.stack(deltas),
    }


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x2 part of Umeyama's least-squares similarity from ``src`` to ``dst`` (dlib's formulas)."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    ms, md = src.mean(0), dst.mean(0)
    sigma = ((src - ms) ** 2).sum(1).mean()
    cov = (dst - md).T @ (src - ms) / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.ones(2)
    if np.linalg.det(cov) < 0 or (np.linalg.det(cov) == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        s[1 if d[1] < d[0] else 0] = -1
    r = u @ np.diag(s) @ vt
    c = (d * s).sum() / sigma if sigma != 0 else 1.0
    return (c * r).astype(np.float32)


@dataclass
class ShapeModel:
    """The arrays of :func:`parse_dlib_model`, evaluated like ``dlib.shape_predictor`` (thread-safe)."""

    initial_shape: np.ndarray
    split_idx: np.ndarray
    split_thresh: np.ndarray
    leaves: np.ndarray
    anchor: np.ndarray
    deltas: np.ndarray

    def __post_init__(self) -> None:
        # plain views of memory-mapped arrays: indexing a np.memmap makes a memmap each time, which
        # cost a tenth of the predictor's time
        for name in ("initial_shape", "split_idx", "split_thresh", "leaves", "anchor", "deltas"):
            setattr(self, name, np.asarray(getattr(self, name)))
        self._initial_points = self.initial_shape.reshape(-1, 2)
        self._depth = int(np.log2(self.split_idx.shape[2] + 1))

    def __call__(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """(68, 2) float64 ``x y`` points in the dlib rectangle ``box`` (left, top, right, bottom)."""
        h, w = rgb.shape[:2]
        left, top, right, bottom = (float(v) for v in box)
        # unnormalizing_tform: (0,0)->(left,top), (1,0)->(right,top), (1,1)->(right,bottom)
        scale = np.array([right - left, bottom - top])
        offset = np.array([left, top])
        shape = self.initial_shape.copy()
        trees = np.arange(self.split_idx.shape[1])
        for level in range(self.split_idx.shape[0]):
            points = shape.reshape(-1, 2)
            tform = _similarity(self._initial_points, points)
            # float32 as dlib: tform * delta + anchor point, then to the image in float64
            d = self.deltas[level]
            rel = np.stack([tform[0, 0] * d[:, 0] + tform[0, 1] * d[:, 1],
                            tform[1, 0] * d[:, 0] + tform[1, 1] * d[:, 1]], axis=1)  # fmt: skip
            rel = rel + points[self.anchor[level]]
            img = rel.astype(np.float64) * scale + offset
            px = np.floor(img + 0.5).astype(np.int64)
            inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
            values = np.zeros(len(px), dtype=np.float32)
            # dlib's grey level of an RGB pixel is the integer mean of its channels; only the sampled
            # pixels are converted
            sampled = rgb[px[inside, 1], px[inside, 0]]
            values[inside] = sampled.astype(np.uint16).sum(axis=1) // 3 if rgb.ndim == 3 else sampled
            node = np.zeros(len(trees), dtype=np.int64)
            idx, thresh = self.split_idx[level], self.split_thresh[level]
            for _ in range(self._depth):
                a = values[idx[trees, node, 0]]
                b = values[idx[trees, node, 1]]
                node = np.where(a - b > thresh[trees, node], 2 * node + 1, 2 * node + 2)
            leaf = self.leaves[level][trees, node - idx.shape[1]]
            shape = np.cumsum(np.concatenate([shape[None], leaf]), axis=0, dtype=np.float32)[-1]
        out = shape.reshape(-1, 2).astype(np.float64) * scale + offset
        return np.floor(out + 0.5)


def _fingerprint(path: Path) -> str:
    st = path.stat()
    key = f"{FORMAT_VERSION}:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _cache_dirs(path: Path) -> list[Path]:
    """Where a copy may be: the cache in use, then the default one (read only), so that a run with its
    own ``$FACERESTORE_CACHE`` (tests, one-off scripts) still finds the copy made by earlier runs."""
    name = f"landmarks/{path.stem}-{_fingerprint(path)}"
    folders = [cache_root() / name]
    default = default_cache_root() / name
    return folders if default == folders[0] else [*folders, default]


def _agrees_with_dlib(model: ShapeModel, path: Path) -> bool:
    """Both predictors on a few synthetic faces-sized images give the same points."""
    import dlib

    reference = dlib.shape_predictor(str(path))
    rng = np.random.default_rng(0)
    for k in range(4):
        img = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
        img = np.ascontiguousarray(np.clip(img.astype(np.int16) // (k + 1) + 40 * k, 0, 255).astype(np.uint8))
        box = (95 - 10 * k, 150, 405 + 5 * k, 460)
        shape = reference(img, dlib.rectangle(*box))
        want = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        if not np.array_equal(model(img, box), want):
            return False
    return True


def convert(path: Path, dest: Path) -> ShapeModel:
    """Parse ``path``, check the copy against dlib, and write it to ``dest`` (one ``.npy`` per array)."""
    arrays = parse_dlib_model(path)
    model = ShapeModel(**arrays)
    if not _agrees_with_dlib(model, path):
        raise ShapeModelError("the numpy copy of the shape predictor disagrees with dlib")
    dest.mkdir(parents=True, exist_ok=True)

    for name, value in arrays.items():
        with atomic_write(dest / f"{name}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, value)
    with atomic_write(dest / "model.json") as tmp:
        tmp.write_text(json.dumps({"format": FORMAT_VERSION, "source": str(path)}))
    return model


_lock = threading.Lock()
_loaded: dict[Path, ShapeModel] = {}


def cached_shape_model(path: Path | None = None, *, build: bool = True) -> ShapeModel | None:
    """The numpy shape model of dlib's file ``path``: from the cache, else converted once (~10 s).

    Returns None when there is no usable copy and ``build`` is False, or when the cache folder cannot
    be written (the caller then falls back to dlib, which is slower to load but gives the same points).
    """
    path = Path(path or dlib_model_path(MODEL_NAME))
    with _lock:
        if path in _loaded:
            return _loaded[path]
        fields = [f.name for f in dataclasses.fields(ShapeModel)]
        model = None
        folders = _cache_dirs(path)
        for folder in folders:
            if (folder / "model.json").is_file():
                try:
                    model = ShapeModel(**{f: np.load(folder / f"{f}.npy", mmap_mode="r") for f in fields})
                    break
                except (OSError, ValueError):
                    model = None
        if model is None and build:
            log.warning("preparing dlib's landmark model for fast starts (once, about 15 s)")
            try:
                model = convert(path, folders[0])
            except (OSError, ShapeModelError, ImageFileError) as exc:
                log.warning("landmarks: using dlib's own loader (%s)", exc)
                model = None
        if model is not None:
            _loaded[path] = model
        return model
