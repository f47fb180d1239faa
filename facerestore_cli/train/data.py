"""Training data: aligned sharp faces, their degraded copies, landmarks and reference views.

The training set holds one photo per person, while DMDNet's specific branch learns from *other photos
of the same person*. We build references that are other views of the target without copying its
pixels in place: every reference is independently mirrored (p = 0.5, which puts the other eye in each
eye box), rotated/scaled/shifted, bent by a smooth random elastic field (so no pixel lines up with the
target), and re-coloured (brightness, contrast, saturation, hue, gamma). Its landmarks are then found
by the same dlib predictor the restore pipeline uses, exactly as for a real reference photo.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Full, Queue

import cv2
import numpy as np

from facerestore_cli.face.landmarks import LandmarkPredictor
from facerestore_cli.imagefile import atomic_write
from facerestore_cli.train.degrade import (
    SPECS,
    DegradationParams,
    augment,
    degrade,
    flip_landmarks68,
    sample_params,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SIZE = 512


def list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no training images (*.jpg, *.png, *.webp) in {folder}")
    return files


def split_validation(files: list[Path], every: int = 50) -> tuple[list[Path], list[Path]]:
    """Deterministic hold-out: every ``every``-th file (sorted) is validation, never trained on."""
    val = files[::every]
    held = set(val)
    return [f for f in files if f not in held], val


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read training image {path}")
    if image.shape[:2] != (SIZE, SIZE):
        image = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def landmark_cache(
    files: list[Path], cache_file: Path, predictor: LandmarkPredictor | LazyPredictor | None = None
) -> np.ndarray:
    """68 landmarks of every file, computed once and cached (keyed by the file list and sizes)."""
    digest = hashlib.sha256("\n".join(f"{f.name}:{f.stat().st_size}" for f in files).encode()).hexdigest()
    if cache_file.exists():
        with np.load(cache_file) as data:
            if str(data["digest"]) == digest:
                return data["landmarks"]
    predictor = predictor or LandmarkPredictor()
    marks = np.stack([predictor.predict(read_rgb(f)) for f in files]).astype(np.float32)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(cache_file) as tmp, open(tmp, "wb") as f:  # the project's one atomic writer
        np.savez(f, digest=digest, landmarks=marks)
    return marks


@dataclass
class Sample:
    hq: np.ndarray  # (512, 512, 3) uint8, augmented target
    lq: np.ndarray  # (512, 512, 3) uint8, degraded input
    landmarks: np.ndarray  # (68, 2) of the target
    refs: list[np.ndarray]  # reference views, uint8
    ref_landmarks: list[np.ndarray]
    params: DegradationParams
    #: the input is the target itself or barely degraded (see ``FaceData.clean_fraction``)
    light: bool = False


def _elastic_field(rng: np.random.Generator, amplitude: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    coarse = rng.standard_normal((2, 8, 8)).astype(np.float32)
    dx = cv2.resize(coarse[0], (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(coarse[1], (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    dx = cv2.GaussianBlur(dx, (0, 0), sigma)
    dy = cv2.GaussianBlur(dy, (0, 0), sigma)
    scale = amplitude / max(float(np.abs(np.stack([dx, dy])).max()), 1e-6)
    return dx * scale, dy * scale


def reference_view(
    hq: np.ndarray, rng: np.random.Generator, predictor: LandmarkPredictor
) -> tuple[np.ndarray, np.ndarray]:
    """Another "photo" of the person in ``hq`` (see the module docstring) and its 68 landmarks."""
    image = hq[:, ::-1] if rng.random() < 0.5 else hq
    angle = rng.uniform(-10, 10)
    scale = rng.uniform(0.92, 1.08)
    shift = rng.uniform(-10, 10, size=2)
    m = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), angle, scale)
    m[:, 2] += shift
    dx, dy = _elastic_field(rng, amplitude=rng.uniform(2.0, 6.0), sigma=24.0)
    # Build one remap: output pixel -> elastic offset -> inverse affine -> source pixel.
    grid_x, grid_y = np.meshgrid(np.arange(SIZE, dtype=np.float32), np.arange(SIZE, dtype=np.float32))
    ex, ey = grid_x + dx, grid_y + dy
    inv = cv2.invertAffineTransform(m)
    map_x = (inv[0, 0] * ex + inv[0, 1] * ey + inv[0, 2]).astype(np.float32)
    map_y = (inv[1, 0] * ex + inv[1, 1] * ey + inv[1, 2]).astype(np.float32)
    warped = cv2.remap(np.ascontiguousarray(image), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    x = warped.astype(np.float32) / 255.0
    x = np.clip(x ** rng.uniform(0.8, 1.25), 0, 1)
    params = DegradationParams(
        blur_sigma=0, scale=1, noise_sigma=0, jpeg_quality=None,
        brightness=rng.uniform(0.8, 1.2), contrast=rng.uniform(0.8, 1.2),
        saturation=rng.uniform(0.7, 1.3), hue=rng.uniform(-0.03, 0.03),
    )  # fmt: skip
    ref = augment((x * 255).round().astype(np.uint8), params)
    return ref, predictor.predict(ref)


class LazyPredictor:
    """A :class:`LandmarkPredictor` loaded on first use.

    With cached landmarks, MemGAN never predicts any, and a machine without dlib (a GPU box) can train
    from a pack that carries ``landmarks.npz``.
    """

    def __init__(self) -> None:
        self._predictor: LandmarkPredictor | None = None
        self._lock = threading.Lock()

    def predict(self, image: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._predictor is None:
                self._predictor = LandmarkPredictor()
        return self._predictor.predict(image)


class FaceData:
    """Samples for training: augmented target, eq. 19/14 degraded input, landmarks, reference views.

    ``clean_fraction`` of the samples get no or a barely visible degradation
    (:func:`~facerestore_cli.train.objectives.light_degradation`) with the same target: without them
    the network only ever sees degraded inputs and learns to smooth whatever it gets, sharp faces too.
    """

    def __init__(
        self,
        files: list[Path],
        landmarks: np.ndarray,
        spec: str,
        predictor: LandmarkPredictor | LazyPredictor,
        clean_fraction: float = 0.0,
    ) -> None:
        self.files = files
        self.landmarks = landmarks
        self.spec = SPECS[spec]
        self.predictor = predictor
        self.clean_fraction = clean_fraction

    def sample(self, rng: np.random.Generator, n_refs: int = 0, index: int | None = None) -> Sample:
        from facerestore_cli.train.objectives import light_degradation

        i = int(rng.integers(len(self.files))) if index is None else index
        params = sample_params(self.spec, rng)
        light = self.clean_fraction > 0 and bool(rng.random() < self.clean_fraction)
        if light:
            params = light_degradation(params, rng)
        hq = augment(read_rgb(self.files[i]), params)
        marks = self.landmarks[i].astype(np.float64)
        if params.flip:
            marks = flip_landmarks68(marks, SIZE)
        lq = degrade(hq, params)
        refs, ref_marks = [], []
        for _ in range(n_refs):
            r, lm = reference_view(hq, rng, self.predictor)
            refs.append(r)
            ref_marks.append(lm)
        return Sample(hq=hq, lq=lq, landmarks=marks, refs=refs, ref_landmarks=ref_marks, params=params, light=light)


def prefetch(make: Callable | Sequence[Callable], depth: int = 4) -> Iterator:
    """Run ``make()`` in background threads, ``depth`` items ahead (OpenCV releases the GIL).

    One callable is one thread and a reproducible order; a list runs one thread per callable (each
    with its own generator), which a GPU needs to be fed and which gives up the fixed order.
    """
    makers = [make] if callable(make) else list(make)
    queue: Queue = Queue(maxsize=max(depth, len(makers)))
    stop = threading.Event()

    def worker(fn: Callable) -> None:
        while not stop.is_set():
            try:
                item = fn()
            except BaseException as exc:  # surface data errors in the training loop
                queue.put(exc)
                return
            while not stop.is_set():
                try:
                    queue.put(item, timeout=0.5)
                    break
                except Full:
                    continue

    for fn in makers:
        threading.Thread(target=worker, args=(fn,), daemon=True).start()
    try:
        while True:
            item = queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
