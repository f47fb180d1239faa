"""How degraded an aligned face is, and how strongly to restore it.

A restorer cannot know whether a face needs it: run on a sharp portrait, the compact models smooth
skin and eyelashes like a beauty filter. So each aligned face is measured first: how much fine detail
its luma still has (blur and resolution loss take the finest bands first), how noisy it is, and how
much JPEG blocking and ringing it shows. A small logistic model, fitted on synthetic degradations of
the training faces whose parameters are known (``tools/calibrate_degradation.py``; the study is in
``docs/studies/degradation-estimate.md``), turns these measures into a *need* in [0, 1]: 0 for a
face as clean as the sharp training faces, 1 for one as damaged as the x4 benchmark input. The need
becomes the restoration strength (the paste's blend), with a dead zone: a face whose need is below
:data:`NO_HARM_NEED` is not restored at all and keeps its pixels exactly.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from facerestore_cli.face.landmarks import ALIGNED_FACE_BOX

__all__ = ["NO_HARM_NEED", "Degradation", "auto_strength", "detail_kept", "estimate_degradation", "strength_for"]

#: Below this need a face is left exactly as it was (strength 0): the measures' spread on clean faces.
NO_HARM_NEED = 0.25
#: At and above this need a face is restored fully (strength 1).
FULL_NEED = 0.6

#: The measures the model reads, in order.
FEATURES = ("fine", "mid", "noise", "blocking", "contrast")
#: The fitted model (``tools/calibrate_degradation.py`` writes it): standardisation, then a 2-layer
#: tanh MLP with a logistic output.
MODEL_FILE = Path(__file__).with_name("degradation_model.json")


@dataclass(frozen=True)
class Degradation:
    """The measures of one aligned face and the need they imply (all in the report)."""

    #: log ratio of the finest band's energy (σ 0.5-1 px) to the coarse band's (σ 2-4 px)
    fine: float
    #: log ratio of the middle band's energy (σ 1-2 px) to the coarse band's
    mid: float
    #: estimated noise σ in 8-bit levels (Immerkær's operator on the flattest half of the face)
    noise: float
    #: JPEG blocking: log ratio of luma steps across 8 px block edges to steps inside blocks
    blocking: float
    #: log energy of the coarse band (how much structure the face has at all)
    contrast: float
    #: 0 (clean) .. 1 (as damaged as the x4 benchmark input)
    need: float

    def to_json(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def _luma(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _band_energies(y: np.ndarray, box: tuple[int, ...]) -> tuple[float, float, float]:
    blur = [y] + [cv2.GaussianBlur(y, (0, 0), s) for s in (1.0, 2.0, 4.0)]
    x0, y0, x1, y1 = box
    fine, mid, coarse = (float(np.mean((a - b)[y0:y1, x0:x1] ** 2)) + 1e-6 for a, b in itertools.pairwise(blur))
    return fine, mid, coarse


def _noise_sigma(y: np.ndarray, box: tuple[int, ...]) -> float:
    """Immerkær (1996): the Laplacian-difference operator cancels smooth image structure; on the
    flattest half of the face (by gradient) its mean absolute response is proportional to σ."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = np.abs(cv2.filter2D(y, -1, kernel))
    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1)
    x0, y0, x1, y1 = box
    grad = np.hypot(gx, gy)[y0:y1, x0:x1].ravel()
    resp = response[y0:y1, x0:x1].ravel()
    flat = grad <= np.median(grad)
    return float(np.sqrt(np.pi / 2) * resp[flat].mean() / 6.0)


def _blocking(y: np.ndarray, box: tuple[int, ...]) -> float:
    """Steps at every 8th column/row against the others, at the grid offset where they are largest.

    The aligned crop is resampled from the photo, so a JPEG's block grid survives only when the face
    was not scaled much; where it did not survive this measure is ~0 and the band measures see the
    loss of detail instead.
    """
    x0, y0, x1, y1 = box
    face = y[y0:y1, x0:x1]
    dx = np.abs(np.diff(face, axis=1)).mean(axis=0)
    dy = np.abs(np.diff(face, axis=0)).mean(axis=1)
    best = 0.0
    for d in (dx, dy):
        n = len(d) // 8 * 8
        grid = d[:n].reshape(-1, 8)
        edge = grid.mean(axis=0)
        best = max(best, float(np.log((edge.max() + 1e-3) / (np.median(edge) + 1e-3))))
    return best


#: Faces are measured at their own resolution in the photo, but never below this many pixels across
#: the crop: a face of 40 px has no fine bands to measure, and such a face needs restoring anyway.
MIN_NATIVE = 160


def native_size(scale: float, size: int = 512) -> int:
    """The crop's side at the face's own resolution in the photo (``scale``: crop px per photo px)."""
    return round(min(size, max(MIN_NATIVE, size / max(scale, 1e-6))))


def measure(rgb: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The feature vector (see :data:`FEATURES`) of an aligned uint8 RGB face crop.

    A face smaller in the photo than the crop was enlarged by the alignment, which removes its finest
    bands: measured as it is, every small sharp face would look blurred. So the crop is first shrunk
    back to the face's own resolution (:func:`native_size`): the question is whether the face is
    degraded on its own pixel grid, which is what the restorer can improve and the paste shows.
    """
    size = rgb.shape[0]
    n = native_size(scale, size)
    if n < size:
        rgb = cv2.resize(rgb, (n, n), interpolation=cv2.INTER_AREA)
    box = tuple(round(v * n / 512) for v in ALIGNED_FACE_BOX)
    y = _luma(rgb)
    fine, mid, coarse = _band_energies(y, box)
    return np.array(
        [np.log(fine / coarse), np.log(mid / coarse), _noise_sigma(y, box), _blocking(y, box), np.log(coarse)]
    )


def model_inputs(features: np.ndarray) -> np.ndarray:
    """The model's inputs: the measures and the log of the noise (noise matters in ratios, not levels)."""
    features = np.atleast_2d(features)
    return np.concatenate([features, np.log(features[:, 2:3] + 0.5)], axis=1)


@cache
def _model() -> dict[str, np.ndarray]:
    data = json.loads(MODEL_FILE.read_text(encoding="utf-8"))
    return {k: np.asarray(v, dtype=np.float64) for k, v in data["model"].items()}


def need_from(features: np.ndarray, model: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Need in [0, 1] for each row of measures."""
    m = model or _model()
    h = (model_inputs(features) - m["mean"]) / m["std"]
    h = np.tanh(h @ m["w1"].T + m["b1"])
    h = np.tanh(h @ m["w2"].T + m["b2"])
    return 1.0 / (1.0 + np.exp(-(h @ m["w3"].T + m["b3"])[:, 0]))


def estimate_degradation(rgb: np.ndarray, scale: float = 1.0) -> Degradation:
    """Measure an aligned 512 face crop (uint8 RGB) and say how much it needs restoring.

    ``scale``: crop pixels per photo pixel (``AlignedFace.scale``), so the face is judged at its own
    resolution (see :func:`measure`).
    """
    f = measure(rgb, scale)
    return Degradation(*(float(v) for v in f), need=float(need_from(f)[0]))


#: The restorer keeps at most this share of a face's fine detail (Laplacian energy of the face's centre,
#: at its own resolution) on a face it would harm: a sharp face comes back smoothed. Measured with the
#: compact DMDNet: sharp portraits keep 0.05-0.34, degraded faces (x4, x8, old prints) 0.74-1.4.
HARM_KEPT = 0.45
#: Between these shares the detail signal alone gives a partial strength (0 at the first, 1 at the
#: second: a restoration that keeps as much detail as the face had is used fully).
PARTIAL_KEPT = 0.6
HELP_KEPT = 1.0
#: Above this noise sigma (8-bit levels) removing fine "detail" is the point (it is noise), so the
#: detail check does not apply.
NOISY = 3.0


def detail_kept(original: np.ndarray, restored: np.ndarray, scale: float = 1.0) -> float:
    """How much of the face's fine detail the restored face keeps (1 = as much, < 1 smoothed, > 1 sharper).

    Both are 512 crops (uint8 and float [0, 1]); compared at the face's own resolution, on the centre
    of the face (eyes, nose, mouth) where a beauty-filter smoothing shows first.
    """
    n = native_size(scale, original.shape[0])
    restored8 = np.clip(np.rint(restored * 255.0), 0, 255).astype(np.uint8)
    a, b = (
        cv2.resize(im, (n, n), interpolation=cv2.INTER_AREA) if n < im.shape[0] else im for im in (original, restored8)
    )
    centre = slice(n // 4, 3 * n // 4)
    energy = [float(cv2.Laplacian(_luma(im), cv2.CV_32F)[centre, centre].var()) for im in (a, b)]
    return energy[1] / max(energy[0], 1e-6)


def auto_strength(degradation: Degradation, kept: float) -> tuple[float, str | None]:
    """The ``--strength auto`` decision for a face, from its measures and what the restorer did to it.

    A face is restored as much as the larger of two signals says: its measured need, and how much of its
    detail the restoration keeps; but never when the restorer would smooth away detail of a face that is
    not noisy. Returns (strength, why it is 0, or None).
    """
    if kept < HARM_KEPT and degradation.noise < NOISY:
        return 0.0, f"restoring would smooth it (keeps {kept:.0%} of its fine detail)"
    by_detail = float(np.clip((kept - PARTIAL_KEPT) / (HELP_KEPT - PARTIAL_KEPT), 0.0, 1.0))
    strength = max(strength_for(degradation.need), by_detail)
    if strength <= 0.0:
        return 0.0, f"no measurable degradation (need {degradation.need:.2f})"
    return strength, None


def strength_for(need: float) -> float:
    """The restoration strength for a need: 0 below :data:`NO_HARM_NEED`, 1 from :data:`FULL_NEED`,
    linear between (a face restored a little is blended with its original by this much)."""
    if need < NO_HARM_NEED:
        return 0.0
    return float(min(1.0, (need - NO_HARM_NEED) / (FULL_NEED - NO_HARM_NEED)))
