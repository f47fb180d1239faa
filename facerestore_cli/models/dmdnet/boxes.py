"""DMDNet's component boxes from 68 landmarks, in NumPy only.

The boxes are computed outside the network (they are the official ``get_component_location``) and fed
to it, in torch as in ONNX, so this module must not import torch: the onnxruntime restorer computes
boxes with it, and :func:`box_problem` says, before a graph runs, which faces the network would refuse
(a crop or paste region that is empty or leaves the feature map) with the torch network's own message.
"""

from __future__ import annotations

import numpy as np

#: Components the network uses, in the official paste order (later ones overwrite earlier ones).
PARTS = ("LE", "RE", "MO")
#: Feature scales by their spatial size and the stride from the 512 input.
SCALES = ((256, 2), (128, 4), (64, 8))
#: Official part sizes at 512 for LE, RE, NO, MO; crops are size // stride (the nose is never used).
PART_SIZES = {"LE": 80, "RE": 80, "NO": 50, "MO": 110}
#: The official code computes the nose box but never reads it; boxes keep it for exact parity.
BOX_ORDER = ("LE", "RE", "NO", "MO")


def part_size(part: str, stride: int) -> int:
    return PART_SIZES[part] // stride


def component_boxes(landmarks: np.ndarray) -> np.ndarray:
    """Official ``get_component_location``: (4, 4) int boxes ``[x1, y1, x2, y2]`` for LE, RE, NO, MO.

    Reproduces the official arithmetic exactly: clamp the 68 points to [8, 504], float64 geometry,
    only the mouth's x2/y2 clamped (to 510), then truncation toward zero.
    """
    lm = np.array(landmarks, dtype=np.float64).reshape(68, 2)
    lm = np.clip(lm, 8, 504)

    def eye(eye_idx: slice, brow_idx: slice) -> list[float]:
        pts = lm[eye_idx]
        m = pts.mean(axis=0)
        top = np.concatenate([lm[brow_idx], pts])[:, 1].min()
        l1 = (m[1] - top) * 1.3
        l2 = l1 / 1.9
        s = l1 + l2
        return [m[0] - s / 2 + 1, m[1] - l1 + 1, m[0] + s / 2, m[1] + l2]

    le = eye(slice(36, 42), slice(17, 22))
    re = eye(slice(42, 48), slice(22, 27))
    nose = lm[29:36]
    nm = nose.mean(axis=0)
    n1 = max(nm[0] - lm[31, 0], lm[35, 0] - nm[0]) * 1.25
    n2 = (lm[33, 1] - nm[1]) * 1.1
    no = [nm[0] - n1 + 1, nm[1] - (2 * n1 - n2) + 1, nm[0] + n1, nm[1] + n2]
    mouth = lm[48:68]
    mm = mouth.mean(axis=0)
    ptp = mouth.max(axis=0) - mouth.min(axis=0)
    half = max(max(ptp[0], ptp[1]) / 2, 16) * 1.1
    mo = [mm[0] - half + 1, mm[1] - half + 1, min(mm[0] + half, 510), min(mm[1] + half, 510)]
    return np.array([le, re, no, mo], dtype=np.float64).astype(int)


def regions(box: np.ndarray, stride: int) -> tuple[int, int, int, int]:
    """Integer region of one 512 box at a feature scale: numpy-style floor division (as the network)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return x1 // stride, y1 // stride, x2 // stride, y2 // stride


def box_problem(boxes: np.ndarray) -> str | None:
    """Why the network cannot restore a face with these (4, 4) boxes, or ``None``.

    The torch network slices each used part's region at every scale and pastes the restored part back
    into exactly that region; a region that is empty or reaches past the feature map fails there.
    The ONNX graphs compute crops and pastes with interpolation matrices instead, which would quietly
    produce something for such a box, so the onnxruntime restorer refuses the same faces with this.
    """
    boxes = np.asarray(boxes).reshape(4, 4)
    for part in PARTS:
        box = boxes[BOX_ORDER.index(part)]
        for size, stride in SCALES:
            x1, y1, x2, y2 = regions(box, stride)
            if not (0 <= x1 < x2 <= size and 0 <= y1 < y2 <= size):
                return "empty component crop: the landmarks put a facial part outside the face"
    return None
