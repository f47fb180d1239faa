"""``tools/readme_figures.py``: the training-curve SVG from a training log, and the face tiles."""

from __future__ import annotations

import importlib.util
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

_PATH = Path(__file__).resolve().parents[1] / "tools" / "readme_figures.py"
_spec = importlib.util.spec_from_file_location("readme_figures", _PATH)
figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(figures)  # type: ignore[union-attr]

SVG = "{http://www.w3.org/2000/svg}"


def _log(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_curves_plot_each_validation_once_and_say_what_was_not_logged(tmp_path):
    records = [
        {"event": "validation", "step": 0, "x8_memgan_detail": 0.1, "x8_input_detail": 0.02, "x8_memgan_psnr": 27.0,
         "x8_input_psnr": 26.9},
        {"step": 10, "loss": 1.0},  # a training line: not a point
        {"event": "validation", "step": 500, "x8_memgan_detail": 0.3, "x8_input_detail": 0.02, "x8_memgan_psnr": 26.8,
         "x8_input_psnr": 26.9},
        # a resumed run validated step 500 again: the later figures stand
        {"event": "validation", "step": 500, "x8_memgan_detail": 0.35, "x8_input_detail": 0.02,
         "x8_memgan_psnr": 26.85, "x8_input_psnr": 26.9, "x8_memgan_grid": 1.1, "x8_input_grid": 1.2},
    ]  # fmt: skip
    out = tmp_path / "curves.svg"
    figures.curves(_log(tmp_path / "log.jsonl", records), out, "memgan")
    root = ET.parse(out).getroot()
    paths = root.findall(f"{SVG}path")
    points = root.findall(f"{SVG}circle")
    texts = [t.text for t in root.findall(f"{SVG}text")]
    # detail and PSNR have both steps, grid only the second, identity none
    assert len(paths) == 3 and len(points) == 2 + 2 + 1
    assert texts.count("not logged") == 1
    assert "goal" in texts and texts.count("input") == 3
    # the detail panel's curve rises from the first point to the second (SVG y grows downwards)
    first = paths[0].get("d").split()
    (x0, y0), (x1, y1) = (tuple(map(float, p[1:].split(","))) for p in first)
    assert x1 > x0 and y1 < y0


def test_face_tiles_are_square_and_white_where_the_photo_ends():
    photo = np.full((300, 400, 3), 90, np.uint8)
    tile = figures._face_tile(photo, (330.0, 100.0, 400.0, 200.0))  # a face cut by the right edge
    assert tile.shape == (figures.TILE, figures.TILE, 3)
    assert (tile[:, -5:] == 255).all() and (tile[:, :5] == 90).all()
    aligned = figures._face_tile(np.zeros((512, 512, 3), np.uint8), None)
    assert aligned.shape == (figures.TILE, figures.TILE, 3) and not aligned.any()
