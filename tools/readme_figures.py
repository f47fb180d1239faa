"""The README's pictures: before/after crops of real photos, and the training curves.

    python tools/readme_figures.py before-after [--out docs/images/before-after.jpg] [--memgan FILE]
    python tools/readme_figures.py curves WORK/log.jsonl [--out docs/images/memgan-training.svg]
    python tools/readme_figures.py compare LABEL=WEIGHTS... [--out docs/images/memgan-candidates.jpg]

``before-after`` runs the library (the default command's ``--strength auto``, then ``--strength 1``, and
MemGAN at 1) on real degraded crops and old photos from ``../shared/data/eval-dev/realworld`` and lays
the faces side by side, enlarged to the same size; nothing is sharpened or retouched afterwards. The
photos are the demo inputs of TencentARC/GFPGAN, wzhouxiff/RestoreFormerPlusPlus, XPixelGroup/DiffBIR
(Apache-2.0) and microsoft/Bringing-Old-Photos-Back-to-Life (MIT).

``compare`` shows real degraded crops as they are, through the shipped MemGAN and through each
candidate MemGAN weights file (strength 1), to look at what training made before shipping it.

``curves`` draws a training log's validations (x8 detail ratio, PSNR, same-photo identity and grid
energy, each against the degraded input's) as a plain SVG, so the figure needs no plotting library.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACERESTORE_SHARED", REPO.parent / "shared"))
REALWORLD = SHARED / "data" / "eval-dev" / "realworld"
#: (file under realworld/, aligned crop?) in the order of the figure's rows
CASES = (
    ("cropped/tencentarc_Adele_crop.png", True),
    ("cropped/wzhouxiff_151_00079_02_org.png", True),
    ("cropped/xpixelgroup_0229.png", True),
    ("whole/xpixelgroup_Queen.jpeg", False),
    ("old-photos/microsoft_a.png", False),
    ("whole/serengil_selfie-many-people.jpg", False),
)
TILE = 224


def _face_tile(image: np.ndarray, box: tuple[float, float, float, float] | None) -> np.ndarray:
    """A square around the face (its box and 30% more on each side; white where the photo ends), or the
    centre of an aligned crop, at ``TILE`` pixels."""
    import cv2

    h, w = image.shape[:2]
    if box is None:  # an aligned 512 crop: its centre, where the face is
        x0, y0, x1, y1 = w / 8, h / 8, w - w / 8, h - h / 8
    else:
        x0, y0, x1, y1 = box
        m = 0.3 * max(x1 - x0, y1 - y0)
        x0, y0, x1, y1 = x0 - m, y0 - m, x1 + m, y1 + m
    half = max(x1 - x0, y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    a, b, c, d = (round(float(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    square = np.full((d - b, c - a, 3), 255, np.uint8)
    sa, sb, sc, sd = max(0, a), max(0, b), min(w, c), min(h, d)
    square[sb - b : sd - b, sa - a : sc - a] = image[sb:sd, sa:sc]
    side = square.shape[0]
    return cv2.resize(square, (TILE, TILE), interpolation=cv2.INTER_CUBIC if side < TILE else cv2.INTER_AREA)


def before_after(out: Path, memgan: Path | None) -> None:
    columns = [
        ("input", None),
        ("DMDNet, default (auto)", dict(method="dmdnet")),
        ("DMDNet, strength 1", dict(method="dmdnet", strength=1.0)),
        ("MemGAN, strength 1", dict(method="memgan", strength=1.0, weights=memgan)),
    ]
    _figure(out, columns, CASES)


def compare(out: Path, candidates: list[str]) -> None:
    columns = [("input", None), ("MemGAN, shipped", dict(method="memgan", strength=1.0))]
    for item in candidates:
        label, _, path = item.rpartition("=")
        columns.append((label or Path(path).stem, dict(method="memgan", strength=1.0, weights=Path(path))))
    _figure(out, columns, [case for case in CASES if case[1]])


def _figure(out: Path, columns: list[tuple[str, dict | None]], cases) -> None:
    import cv2

    from facerestore_cli import FaceRestorer, RestoreOptions, load_photo
    from facerestore_cli.imagefile import rgb8

    engines: dict[tuple[str, bool], FaceRestorer] = {}
    rows = []
    for rel, aligned in cases:
        photo = load_photo(REALWORLD / rel)
        before = rgb8(photo)
        tiles, box = [], None
        for label, flags in columns:
            if flags is None:
                continue
            key = (label, aligned)
            if key not in engines:
                engines[key] = FaceRestorer(RestoreOptions.from_flat(**flags, aligned=aligned, threads=1))
            result = engines[key].restore(photo)
            if box is None and result.faces:
                box = None if aligned else max(result.faces, key=lambda f: f.size).box
            tiles.append(_face_tile(rgb8(result.photo), box))
        rows.append([_face_tile(before, box), *tiles])
    gap = 4
    header = np.full((28, len(columns) * (TILE + gap) - gap, 3), 255, np.uint8)
    for i, (label, _) in enumerate(columns):
        at = (i * (TILE + gap) + 6, 19)
        cv2.putText(header, label, at, cv2.FONT_HERSHEY_SIMPLEX, 0.48, (0, 0, 0), 1, cv2.LINE_AA)
    lines = [header]
    for row in rows:
        line = np.full((TILE, header.shape[1], 3), 255, np.uint8)
        for i, tile in enumerate(row):
            line[:, i * (TILE + gap) : i * (TILE + gap) + TILE] = tile
        lines += [line, np.full((gap, header.shape[1], 3), 255, np.uint8)]
    figure = np.concatenate(lines[:-1], axis=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


# --------------------------------------------------------------------------------------------------
# training curves as SVG

PANELS = (
    ("x8_{}_detail", "x8 detail ratio (goal 0.5)", 0.5),
    ("x8_{}_psnr", "x8 PSNR, dB", None),
    ("x8_{}_identity", "x8 identity (same photo, cosine)", None),
    ("x8_{}_grid", "x8 grid energy (real faces ~0.8)", None),
)


def _panel(records: list[dict], key: str, title: str, goal: float | None, name: str, x0: int, y0: int) -> list[str]:
    w, h, pad = 300, 170, 34
    points = [(r["step"], r[key.format(name)]) for r in records if key.format(name) in r]
    base = [r[key.format("input")] for r in records if key.format("input") in r]
    svg = [f'<text x="{x0 + w / 2}" y="{y0 - 8}" text-anchor="middle" font-size="13">{title}</text>']
    svg.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
    if not points:
        return [*svg, f'<text x="{x0 + 10}" y="{y0 + 20}" font-size="11">not logged</text>']
    values = [v for _, v in points] + base + ([goal] if goal is not None else [])
    lo, hi = min(values), max(values)
    lo, hi = lo - 0.08 * (hi - lo or 1), hi + 0.08 * (hi - lo or 1)
    s0, s1 = min(s for s, _ in points), max(s for s, _ in points) or 1

    def xy(step: float, v: float) -> tuple[float, float]:
        return x0 + pad / 2 + (w - pad) * (step - s0) / max(1, s1 - s0), y0 + h - (h * (v - lo) / (hi - lo))

    for value, colour, label in [(np.mean(base) if base else None, "#888", "input"), (goal, "#2a2", "goal")]:
        if value is not None:
            _, y = xy(s0, value)
            dash = f'stroke="{colour}" stroke-dasharray="4 3"'
            svg.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{y:.1f}" y2="{y:.1f}" {dash}/>')
            at = f'x="{x0 + w - 4}" y="{y - 3:.1f}" text-anchor="end"'
            svg.append(f'<text {at} font-size="10" fill="{colour}">{label}</text>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(xy(s, v) for s, v in points))
    svg.append(f'<path d="{path}" fill="none" stroke="#c33" stroke-width="2"/>')
    for s, v in points:
        x, y = xy(s, v)
        svg.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#c33"/>')
    for v in (lo + 0.08 / 1.16 * (hi - lo), hi - 0.08 / 1.16 * (hi - lo)):
        _, y = xy(s0, v)
        svg.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{v:.3g}</text>')
    for s in (s0, s1):
        x, _ = xy(s, lo)
        svg.append(f'<text x="{x:.1f}" y="{y0 + h + 13}" text-anchor="middle" font-size="10">{s}</text>')
    return svg


def curves(log: Path, out: Path, name: str) -> None:
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    latest: dict[int, dict] = {}
    for r in records:
        if r.get("event") in ("validation", "final-validation"):
            latest[int(r["step"])] = r  # a step validated twice (a resumed run) keeps its last figures
    vals = [latest[s] for s in sorted(latest)]
    svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="700" height="500" font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>']  # fmt: skip
    for i, (key, title, goal) in enumerate(PANELS):
        svg += _panel(vals, key, title, goal, name, 40 + (i % 2) * 340, 30 + (i // 2) * 230)
    label = f"training step ({name}, held-out faces)"
    svg.append(f'<text x="350" y="492" text-anchor="middle" font-size="11">{label}</text>')
    svg.append("</svg>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(svg) + "\n")
    print(f"wrote {out} ({len(vals)} validations)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    b = sub.add_parser("before-after")
    b.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "before-after.jpg")
    b.add_argument("--memgan", type=Path, default=None, help="MemGAN weights (default: the shipped ones)")
    m = sub.add_parser("compare")
    m.add_argument("candidates", nargs="+", help="LABEL=WEIGHTS (a MemGAN weights file)")
    m.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "memgan-candidates.jpg")
    c = sub.add_parser("curves")
    c.add_argument("log", type=Path)
    c.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "memgan-training.svg")
    c.add_argument("--restorer", default="memgan", help="the validation's restorer name (memgan, generic, refs)")
    args = p.parse_args()
    if args.what in ("before-after", "compare") and not REALWORLD.is_dir():
        sys.exit(f"error: {REALWORLD} not found (set FACERESTORE_SHARED)")
    if args.what == "before-after":
        before_after(args.out, args.memgan)
    elif args.what == "compare":
        compare(args.out, args.candidates)
    else:
        curves(args.log, args.out, args.restorer)


if __name__ == "__main__":
    main()
