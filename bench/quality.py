"""Quality benchmark on the London pairs: what DMDNet (with and without a reference) and MemGAN add.

For every person the *smiling* photo is the ground truth. It is degraded with the fixed x4 and x8
evaluation degradations (``fixed_degradation(scale, seed=<person index>)``: blur σ 2, noise σ 8,
JPEG 75, bicubic, DMDNet eq. 19 mid-range) and restored the way ``facerestore --aligned`` does it: the
degraded 512 crop gets its 68 landmarks from ``landmarks.default_predictor()`` and goes through the
restorer; the float output is rounded to 8 bits as a saved file would be. The rows are

* ``input``: the degraded photo itself (already resized back to 512 by the degradation);
* ``dmdnet``: DMDNet with its generic dictionary only;
* ``dmdnet+ref``: DMDNet with the specific dictionary compiled from the same person's *neutral* photo,
  through ``Pipeline.compile_person`` (what ``facerestore build-dict`` does) and used for the face
  whatever the routing would say (``--force-refs``);
* ``memgan``: MemGAN.

Metrics, against the original smiling photo: PSNR and SSIM on RGB in [0, 1] (SSIM is
``facerestore_cli.train.losses.ssim``: Gaussian window σ 1.5, 11 taps, K1 0.01, K2 0.03, mean over
pixels and channels, identical to skimage's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, channel_axis=-1)``), and identity: the cosine between dlib's 128-d
embeddings of the output and of the original. Every version of a face is embedded with the landmarks
found on the *original* photo (all versions share its alignment), so the identity score measures the
pixels and not how well landmarks survive a degradation. ``s/face`` is the wall time of the restorer
call for one face (batch of one, after a warm-up); compiling a reference dictionary is timed apart.

Results are kept per person, strength, method and weights (sha256) in ``--work``, so an interrupted run
resumes, and a run with new weights only recomputes what they change.

    python bench/quality.py --threads 1 [--limit N] [--out results.json]
        [--dmdnet-weights FILE] [--memgan-weights FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import (
    SCALES,
    add_common_args,
    degraded,
    environment,
    file_digest,
    london_pairs,
    make_people_folder,
    markdown_table,
    mean_std,
    read_rgb,
    set_threads,
    write_json,
)

METHODS = ("input", "dmdnet", "dmdnet+ref", "memgan")
LABELS = {
    "input": "degraded input",
    "dmdnet": "DMDNet generic",
    "dmdnet+ref": "DMDNet + neutral ref",
    "memgan": "MemGAN",
}
SSIM_NAME = "facerestore_cli.train.losses.ssim (Gaussian σ=1.5, RGB in [0,1]; = skimage gaussian SSIM)"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) / 255.0**2
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def to_uint8(face: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(face * 255.0), 0, 255).astype(np.uint8)


class Store:
    """Results as JSON lines, keyed by what they depend on: resuming skips every key already there."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.rows[row["key"]] = row
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut by an interruption

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def put(self, row: dict) -> None:
        self.rows[row["key"]] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument(
        "--memgan-weights", type=Path, default=None, help="MemGAN weights (default: the normal weights lookup)"
    )
    parser.add_argument("--work", type=Path, default=None, help="resume folder (default: <cache>/bench/quality)")
    parser.add_argument("--fresh", action="store_true", help="ignore results kept in --work")
    parser.add_argument("--examples", type=Path, default=None, help="write side-by-side strips of computed faces")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from facerestore_cli.face.identity import cosine_similarity
    from facerestore_cli.pipeline import Pipeline, RestoreOptions
    from facerestore_cli.references.dictionary import cache_root
    from facerestore_cli.restore import create_restorer
    from facerestore_cli.train.losses import ssim
    from facerestore_cli.weights import WeightsError

    people = london_pairs(args.data, args.limit)
    work = args.work or cache_root() / "bench" / "quality"
    work.mkdir(parents=True, exist_ok=True)
    store = Store(work / "records.jsonl")
    if args.fresh:
        store.rows.clear()

    try:
        pipeline = Pipeline(
            RestoreOptions(
                method="dmdnet", weights=args.dmdnet_weights, device=args.device, threads=args.threads,
                batch_size=1, aligned=True, cache_dir=work, embedder="dlib",  # the identity metric is dlib's
            )
        )  # fmt: skip
        memgan = create_restorer("memgan", weights=args.memgan_weights, runtime=pipeline.runtime, batch_size=1)
    except WeightsError as exc:
        sys.exit(f"error: {exc}")
    dmdnet = pipeline.restorer
    restorers = {"dmdnet": dmdnet, "dmdnet+ref": dmdnet, "memgan": memgan}
    shas = {"input": "-", "dmdnet": dmdnet.info.sha256, "dmdnet+ref": dmdnet.info.sha256, "memgan": memgan.info.sha256}
    predictor, embedder = pipeline.predictor, pipeline.embedder
    print(f"DMDNet: {dmdnet.info.weights} ({dmdnet.info.sha256[:12]}) config {dmdnet.info.config}", file=sys.stderr)
    print(f"MemGAN: {memgan.info.weights} ({memgan.info.sha256[:12]}) config {memgan.info.config}", file=sys.stderr)
    print(f"{len(people)} people, scales {SCALES}, work folder {work}", file=sys.stderr)

    warmed: set[str] = set()
    compile_seconds: list[float] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="facerestore-quality-") as tmp:
        people_root = make_people_folder(Path(tmp) / "people", people)
        for n, person in enumerate(people, 1):
            gt = read_rgb(person.smiling)
            gt_digest = file_digest(person.smiling)
            original = store.get(f"original:{gt_digest}")
            gt_marks = predictor.predict(gt)
            if original is None:
                original = {"key": f"original:{gt_digest}", "embedding": embedder.embed(gt, gt_marks).tolist()}
                store.put(original)
            gt_emb = np.asarray(original["embedding"], dtype=np.float32)
            dictionary = None
            for scale in SCALES:
                lq = None
                for method in METHODS:
                    key = f"{person.name}:x{scale}:{method}:{shas[method]}"
                    if store.get(key) is not None:
                        continue
                    if lq is None:
                        lq = degraded(gt, scale, person.index)
                        lq_marks = predictor.predict(lq)
                    seconds = None
                    if method == "input":
                        out = lq
                    else:
                        tensors = None
                        if method == "dmdnet+ref":
                            if dictionary is None:
                                dictionary = pipeline.compile_person(people_root / person.name)
                                if not dictionary.from_cache:
                                    compile_seconds.append(dictionary.seconds)
                            tensors = dictionary.tensors
                        restorer = restorers[method]
                        if method not in warmed:
                            restorer.restore(lq[None], lq_marks[None], tensors)
                            warmed.add(method)
                        t = time.perf_counter()
                        out = to_uint8(restorer.restore(lq[None], lq_marks[None], tensors)[0])
                        seconds = time.perf_counter() - t
                    if args.examples:
                        _save_example(args.examples, person.name, scale, method, out)
                    emb = embedder.embed(out, gt_marks)
                    store.put(
                        {
                            "key": key, "person": person.name, "scale": scale, "method": method,
                            "psnr": psnr(out, gt),
                            "ssim": ssim(out.astype(np.float32) / 255.0, gt.astype(np.float32) / 255.0),
                            "identity": cosine_similarity(emb, gt_emb),
                            "distance": float(np.linalg.norm(emb - gt_emb)),
                            "seconds": seconds,
                        }
                    )  # fmt: skip
            if n % 10 == 0 or n == len(people):
                print(f"  {n}/{len(people)} people, {time.perf_counter() - started:.0f} s", file=sys.stderr)

    results = {
        method: {scale: [store.get(f"{p.name}:x{scale}:{method}:{shas[method]}") for p in people] for scale in SCALES}
        for method in METHODS
    }
    report = summarise(results, people, compile_seconds)
    report["meta"] = {
        "people": len(people),
        "scales": list(SCALES),
        "degradation": "fixed_degradation(scale, seed=person index): blur σ 2, noise σ 8, JPEG 75, bicubic",
        "ssim": SSIM_NAME,
        "identity": "cosine of dlib 128-d embeddings (landmarks of the original photo) to the original smiling photo",
        "dmdnet_weights": str(dmdnet.info.weights),
        "dmdnet_sha256": dmdnet.info.sha256,
        "dmdnet_config": dmdnet.info.config,
        "memgan_weights": str(memgan.info.weights),
        "memgan_sha256": memgan.info.sha256,
        "memgan_config": memgan.info.config,
        "environment": environment(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    report["per_person"] = {
        f"{method}@x{scale}": {row["person"]: _clean(row) for row in rows}
        for method, by_scale in results.items()
        for scale, rows in by_scale.items()
    }
    write_json(args.out, report)
    return 0


def summarise(results: dict, people: list, compile_seconds: list[float]) -> dict:
    """Print the table and the two checks of the issue; return them for the JSON file."""
    header = ["strength", "method", "PSNR (dB)", "SSIM", "identity (cos)", "s/face"]
    rows, table = [], {}
    for scale in SCALES:
        for method in METHODS:
            recs = results[method][scale]
            cols = {k: [r[k] for r in recs] for k in ("psnr", "ssim", "identity")}
            secs = [r["seconds"] for r in recs if r["seconds"] is not None]
            table[f"{method}@x{scale}"] = {
                **{k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
                   for k, v in cols.items()},
                "seconds_per_face": float(np.mean(secs)) if secs else None,
            }  # fmt: skip
            rows.append(
                [
                    f"x{scale}", LABELS[method], mean_std(cols["psnr"], "{:.2f}"), mean_std(cols["ssim"], "{:.4f}"),
                    mean_std(cols["identity"], "{:.4f}"), f"{np.mean(secs):.2f}" if secs else "–",
                ]
            )  # fmt: skip
    print(f"\n## Face quality on the London pairs ({len(people)} people, mean ± std)\n")
    print(markdown_table(header, rows))
    print(f"\nSSIM: {SSIM_NAME}.")
    print("identity: cosine of dlib 128-d embeddings to the original smiling photo (1 = same direction).")
    if compile_seconds:
        print(
            f"reference dictionary compile (detect + align + embed + encode): {np.mean(compile_seconds):.2f} s/person"
        )

    print("\n## Checks\n")
    checks = []
    for method in ("dmdnet", "memgan"):
        for scale in SCALES:
            diffs = {}
            for metric in ("psnr", "ssim", "identity"):
                a = np.array([r[metric] for r in results[method][scale]])
                b = np.array([r[metric] for r in results["input"][scale]])
                diffs[metric] = float(np.mean(a - b))
            ok = all(d > 0 for d in diffs.values())
            line = (
                f"[{'PASS' if ok else 'FAIL'}] {LABELS[method]} beats the input at x{scale}: "
                f"ΔPSNR {diffs['psnr']:+.2f} dB, ΔSSIM {diffs['ssim']:+.4f}, Δidentity {diffs['identity']:+.4f}"
            )
            print(line)
            checks.append({"check": f"{method} beats input at x{scale}", "pass": ok, "mean_differences": diffs})
    overall = all(c["pass"] for c in checks)
    print(f"[{'PASS' if overall else 'FAIL'}] both restorers beat the input on PSNR, SSIM and identity at x4 and x8")

    with_ref = np.array([r["identity"] for r in results["dmdnet+ref"][8]])
    generic = np.array([r["identity"] for r in results["dmdnet"][8]])
    d = with_ref - generic
    n = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    half = 1.96 * sd / math.sqrt(n) if n > 1 else float("nan")
    improved = int((d > 0).sum())
    sign_p = _sign_test(improved, int((d != 0).sum()))
    ok = mean > 0
    print(
        f"[{'PASS' if ok else 'FAIL'}] DMDNet with the neutral reference beats DMDNet generic on identity at x8: "
        f"paired Δ = {mean:+.4f} ± {sd:.4f} (95% CI {mean - half:+.4f} … {mean + half:+.4f}), "
        f"{improved}/{n} people improve (two-sided sign test p = {sign_p:.3g})"
    )
    ref_check = {
        "check": "dmdnet+ref beats dmdnet on identity at x8",
        "pass": ok,
        "paired_mean": mean,
        "paired_std": sd,
        "ci95": [mean - half, mean + half],
        "improved": improved,
        "people": n,
        "sign_test_p": sign_p,
    }
    return {"table": table, "checks": [*checks, ref_check], "all_restorers_beat_input": overall}


def _sign_test(wins: int, n: int) -> float:
    """Two-sided exact binomial p-value of ``wins`` successes out of ``n`` at p = 1/2."""
    if n == 0:
        return 1.0
    k = min(wins, n - wins)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def _clean(row: dict) -> dict:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items() if k not in ("key", "person")}


def _save_example(folder: Path, name: str, scale: int, method: str, face: np.ndarray) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{name}_x{scale}_{method.replace('+', '_')}.jpg"), face[:, :, ::-1])


if __name__ == "__main__":
    sys.exit(main())
