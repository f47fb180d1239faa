"""The networks' input convention, in one place: uint8 RGB faces -> float32 NCHW in [-1, 1].

The official DMDNet test code divides by 255 in float64 before the float32 cast; restoring and
training both go through :func:`faces_to_tensor`, so a restored face and a training face are
normalised by the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["faces_to_tensor"]


def faces_to_tensor(faces: np.ndarray) -> Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 in [-1, 1] on the CPU."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2)
    x = (x.to(torch.float64) / 255.0).to(torch.float32)
    return (x - 0.5) / 0.5
