"""What both training loops share: tensors from images, checkpoints, validation, logging."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from facerestore_cli.train.losses import ssim


def to_tensor(images: list[np.ndarray] | np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """uint8 RGB HxWx3 images -> (N, 3, H, W) float32 in [-1, 1] (the official preprocessing)."""
    x = torch.from_numpy(np.ascontiguousarray(np.stack(list(images)))).permute(0, 3, 1, 2)
    x = (x.to(torch.float64) / 255.0).to(torch.float32)
    return ((x - 0.5) / 0.5).to(device).contiguous(memory_format=torch.channels_last)


def to_uint8(x: Tensor) -> np.ndarray:
    y = (x.detach().float().cpu() * 0.5 + 0.5).clamp(0, 1)
    return (y.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per-image PSNR of two [-1, 1] batches, in dB on the [0, 1] scale."""
    mse = ((a.float() - b.float()) * 0.5).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def ssim01(a: Tensor, b: Tensor) -> Tensor:
    return ssim((a.float() + 1) * 0.5, (b.float() + 1) * 0.5)


def autocast(enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPUs that have it (AMX/AVX512-BF16 make convolutions ~3x faster)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic ``torch.save`` of plain tensors/containers (loadable with ``weights_only=True``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state(rng: np.random.Generator) -> dict:
    return {"numpy": json.dumps(rng.bit_generator.state), "torch": torch.get_rng_state()}


def restore_rng(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = json.loads(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_grid(path: Path, rows: list[list[np.ndarray]], scale: float = 0.5) -> None:
    """Write rows of uint8 RGB images side by side (validation previews)."""
    lines = [np.concatenate(row, axis=1) for row in rows]
    grid = np.concatenate(lines, axis=0)
    if scale != 1:
        grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


@dataclass
class Log:
    """Progress lines to stdout and a JSON-lines log beside the checkpoints."""

    path: Path
    started: float = field(default_factory=time.time)
    elapsed_before: float = 0.0

    def write(self, record: dict, echo: bool = True) -> None:
        record = {"time": round(self.elapsed, 1), **record}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if echo:
            print(" ".join(f"{k}={_fmt(v)}" for k, v in record.items()), flush=True)

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    states = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, s in zip(modules, states, strict=True):
            m.train(s)
