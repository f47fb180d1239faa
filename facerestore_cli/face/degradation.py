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

__all__ = ["NO_HARM_NEED", "Degradation", "estimate_degradation", "strength_for"]

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


def _band_energies(y: np.ndarray, box: tuple[int, int, int, int]) -> tuple[float, float, float]:
    blur = [y] + [cv2.GaussianBlur(y, (0, 0), s) for s in (1.0, 2.0, 4.0)]
    x0, y0, x1, y1 = box
    fine, mid, coarse = (
        float(np.mean((a - b)[y0:y1, x0:x1] ** 2)) + 1e-6 for a, b in itertools.pairwise(blur)
    )
    return fine, mid, coarse


def _noise_sigma(y: np.ndarray, box: tuple[int, int, int, int]) -> float:
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


def _blocking(y: np.ndarray, box: tuple[int, int, int, int]) -> float:
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


def measure(rgb: np.ndarray, box: tuple[int, int, int, int] = ALIGNED_FACE_BOX) -> np.ndarray:
    """The feature vector (see :data:`FEATURES`) of an aligned uint8 RGB face crop."""
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


def estimate_degradation(rgb: np.ndarray) -> Degradation:
    """Measure an aligned 512 face crop (uint8 RGB) and say how much it needs restoring."""
    f = measure(rgb)
    return Degradation(*(float(v) for v in f), need=float(need_from(f)[0]))


def strength_for(need: float) -> float:
    """The restoration strength for a need: 0 below :data:`NO_HARM_NEED`, 1 from :data:`FULL_NEED`,
    linear between (a face restored a little is blended with its original by this much)."""
    if need < NO_HARM_NEED:
        return 0.0
    return float(min(1.0, (need - NO_HARM_NEED) / (FULL_NEED - NO_HARM_NEED)))
