"""Rebuild the synthetic official-format DMDNet checkpoint described in
``../shared/golden/dmdnet/RECIPE.md`` (per-key crc32-seeded numpy streams)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch


def read_manifest(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    entries = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        key, dtype, shape = line.split("\t")
        assert dtype == "float32", (key, dtype)
        entries.append((key, tuple(int(s) for s in shape.split(","))))
    return entries


def _draw(key: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(key.encode("utf-8"))).standard_normal(shape, dtype=np.float64)


def _nrm(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-12)


def build_state_dict(manifest: Path) -> dict[str, torch.Tensor]:
    entries = read_manifest(manifest)
    shapes = dict(entries)
    out: dict[str, torch.Tensor] = {}
    weights64: dict[str, np.ndarray] = {}
    for key, shape in entries:
        if key.endswith(".weight_orig"):
            fan_in = int(np.prod(shape[1:]))
            w = _draw(key, shape) * np.sqrt(1.0 / fan_in)
            weights64[key[: -len(".weight_orig")]] = w
            out[key] = torch.from_numpy(w.astype(np.float32))
        elif key.endswith(".bias"):
            out[key] = torch.from_numpy((_draw(key, shape) * 0.01).astype(np.float32))
        elif key.endswith(("_mem_key", "_mem_value")):
            out[key] = torch.from_numpy(_draw(key, shape).astype(np.float32))
    for prefix, w in weights64.items():
        wm = w.reshape(w.shape[0], -1)
        v = _nrm(_draw(prefix + ".weight_v", (wm.shape[1],)))
        for _ in range(20):
            u = _nrm(wm @ v)
            v = _nrm(wm.T @ u)
        out[prefix + ".weight_u"] = torch.from_numpy(u.astype(np.float32))
        out[prefix + ".weight_v"] = torch.from_numpy(v.astype(np.float32))
    assert set(out) == set(shapes), set(shapes) ^ set(out)
    return {key: out[key] for key, _ in entries}
