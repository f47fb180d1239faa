"""Do no harm: a face that needs nothing comes back untouched, and one that needs restoring still gets it.

The 50 clean London smiling photos go through the default restore (``restore_file`` with the
default options: DMDNet, ``--strength auto``) as whole photos. Against the input, the face region
(the detected face box, expanded by half its size) must keep >= 40 dB PSNR and a median dlib
identity distance <= 0.05. Then the same photos degraded at x4, x8 and x16 (``bench/common.degraded``,
as ``bench/quality.py`` degrades them, saved losslessly) are restored with ``--strength auto`` and with
``--strength 1``: the PSNR gain over the degraded input, against the clean photo, must stay within
0.1 dB of strength 1's (the gate must not switch off restoration that is needed).

    python bench/no_harm.py --threads 2 [--limit N] [--out results.json]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from common import add_common_args, degraded, london_pairs, markdown_table, read_rgb, set_threads, write_json

SCALES = (4, 8, 16)
PSNR_GOAL, IDENTITY_GOAL, GAIN_TOLERANCE = 40.0, 0.05, 0.1


def face_psnr(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    d = a[y0:y1, x0:x1].astype(np.float64) - b[y0:y1, x0:x1].astype(np.float64)
    mse = float(np.mean(d**2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def region(report, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest detected face's box, expanded by half its size (the paste reaches about that far)."""
    h, w = shape
    if not report.faces:
        return 0, 0, w, h
    face = max(report.faces, key=lambda f: f.size)
    x0, y0, x1, y1 = face.box
    m = 0.5 * max(x1 - x0, y1 - y0)
    return max(0, int(x0 - m)), max(0, int(y0 - m)), min(w, int(x1 + m)), min(h, int(y1 + m))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    args = p.parse_args()
    set_threads(args.threads)

    from facerestore_cli import AlbumRunner, FaceRestorer, RestoreOptions
    from facerestore_cli.album import InputItem
    from facerestore_cli.face.align import align_face
    from facerestore_cli.face.identity import FaceEmbedder, embedding_distance

    people = london_pairs(args.data, args.limit)
    auto = FaceRestorer(RestoreOptions.from_flat(method="dmdnet", weights=args.dmdnet_weights, threads=args.threads))
    full = FaceRestorer(
        RestoreOptions.from_flat(method="dmdnet", weights=args.dmdnet_weights, threads=args.threads, strength=1.0),
        restorer=auto.restorer, detector=auto.detector,
    )  # fmt: skip
    runners = {"auto": AlbumRunner(auto), "1": AlbumRunner(full)}
    embedder = FaceEmbedder()
    detector, predictor = auto.detector, auto.predictor

    def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
        face = max(detector.detect(a), key=lambda f: f.size)
        crop_a, crop_b = align_face(a, face.landmarks).image, align_face(b, face.landmarks).image
        marks = predictor.predict(crop_a)
        return embedding_distance(embedder.embed(crop_a, marks), embedder.embed(crop_b, marks))

    clean_rows, gains = [], {s: {"auto": [], "1": []} for s in SCALES}
    strengths: dict[int, list[float]] = {s: [] for s in SCALES}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for n, person in enumerate(people):
            original = read_rgb(person.smiling)
            report = runners["auto"].process(InputItem(person.smiling, Path("clean.jpg")), out / f"{n}_clean.jpg")
            restored = read_rgb(out / f"{n}_clean.jpg")
            box = region(report, original.shape[:2])
            touched = [f.strength for f in report.faces if f.strength]
            clean_rows.append(
                {"person": person.name, "psnr": face_psnr(restored, original, box),
                 "identity": identity_distance(original, restored), "strength": max(touched, default=0.0)}
            )  # fmt: skip
            for scale in SCALES:
                lq = degraded(original, scale, seed=person.index)
                src = out / f"{n}_x{scale}.png"
                cv2.imwrite(str(src), cv2.cvtColor(lq, cv2.COLOR_RGB2BGR))
                base = face_psnr(lq, original, box)
                for mode, runner in runners.items():
                    dst = out / f"{n}_x{scale}_{mode}.png"
                    r = runner.process(InputItem(src, Path(src.name)), dst)
                    if not r.ok:
                        sys.exit(f"error: {src.name} ({mode}) failed: {r.error}")
                    gains[scale][mode].append(face_psnr(read_rgb(dst), original, box) - base)
                    if mode == "auto":
                        strengths[scale].append(max((f.strength or 0.0 for f in r.faces), default=0.0))
            print(f"  {n + 1}/{len(people)} {person.name}", file=sys.stderr, flush=True)

    psnrs = np.array([min(r["psnr"], 99.0) for r in clean_rows])  # 99: identical (infinite PSNR)
    ids = np.array([r["identity"] for r in clean_rows])
    untouched = int(np.sum(psnrs >= 99.0))
    finite_min = float(np.min(psnrs))
    print("\n**Clean photos** (the 50 London smiling photos, default command)\n")
    print(markdown_table(
        ["faces", "left exactly as they were", "face PSNR p5 / min (dB)", "identity distance median / max", "goal"],
        [[str(len(clean_rows)), str(untouched), f"{np.percentile(psnrs, 5):.1f} / {finite_min:.1f} (99 = identical)",
          f"{np.median(ids):.4f} / {ids.max():.4f}", f">= {PSNR_GOAL:.0f} dB, <= {IDENTITY_GOAL}"]],
    ))  # fmt: skip
    rows = []
    for scale in SCALES:
        a, f = np.mean(gains[scale]["auto"]), np.mean(gains[scale]["1"])
        rows.append([f"x{scale}", f"{np.mean(strengths[scale]):.3f}", f"{a:+.3f}", f"{f:+.3f}", f"{a - f:+.3f}",
                     "yes" if a >= f - GAIN_TOLERANCE else "NO"])  # fmt: skip
    print("\n**Degraded photos** (PSNR gain over the degraded input, face region, dB)\n")
    print(
        markdown_table(["degradation", "mean auto strength", "auto", "strength 1", "auto - 1", "within 0.1 dB"], rows)
    )
    passed = finite_min >= PSNR_GOAL and np.median(ids) <= IDENTITY_GOAL and all(r[-1] == "yes" for r in rows)
    print(f"\nall goals met: {'yes' if passed else 'NO'}")
    write_json(args.out, {"clean": clean_rows, "gains": gains, "strengths": strengths, "passed": bool(passed)})


if __name__ == "__main__":
    main()
