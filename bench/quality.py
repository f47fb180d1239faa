"""Quality benchmark on the London pairs: what DMDNet (with and without a reference) and MemGAN add.

For every person the *smiling* photo is the ground truth. It is degraded with the fixed x4, x8 and x16
evaluation degradations (``fixed_degradation(scale, seed=<person index>)``: blur σ 2, noise σ 8,
JPEG 75, bicubic, DMDNet eq. 19 mid-range; only the scale differs) and restored the way
``facerestore --aligned`` does it: the degraded 512 crop gets its 68 landmarks from
``landmarks.default_predictor()`` and goes through the restorer; the float output is rounded to 8 bits
as a saved file would be. The rows are

* ``input``: the degraded photo itself (already resized back to 512 by the degradation);
* ``dmdnet``: DMDNet with its generic dictionary only;
* ``dmdnet+ref``: DMDNet with the specific dictionary compiled from the same person's *neutral* photo,
  through ``FaceRestorer.compile_person`` (what ``facerestore build-dict`` does) and used for the face
  whatever the routing would say (``--force-refs``);
* ``memgan``: MemGAN.

Metrics, against the original smiling photo unless said otherwise:

* PSNR and SSIM on RGB in [0, 1] (SSIM is ``facerestore_cli.train.losses.ssim``: Gaussian window σ 1.5,
  11 taps, K1 0.01, K2 0.03, mean over pixels and channels, identical to skimage's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1)``).
  Both reward a smooth average face, so they are reported but no longer trusted alone;
* *detail ratio*: var(Laplacian) of the luma on the central 256x256 of the output over the original's,
  median over faces (1 = as much fine detail as the real face; ``quality_metrics.detail_ratio``);
* *ΔE>10 %*: the share of face pixels (``paste.face_mask`` of the original's landmarks > 0.5) whose
  CIEDE2000 colour difference exceeds 10 once both images share the original's low frequencies
  (Gaussian σ = 0.05 x 512 in Lab), mean over faces: local colour errors, not a global tone shift;
* *cross-photo identity*: the cosine between dlib's 128-d embedding of the output and that of the same
  person's *neutral* photo, and the rank of the right person among all the neutral photos of the run
  (1 = best; rank-1 % is the top-1 accuracy). Training never sees the neutral photos;
* *identity (seen in training)*: the cosine between the embeddings of the output and of the original
  smiling photo. DMDNet's training now sees dlib embeddings of its ground truth, so this one can be won
  without looking more like the person.

Every version of a smiling face is embedded with the landmarks found on the *original* smiling photo
(all versions share its alignment), and each neutral photo with its own, so identity measures the pixels
and not how well landmarks survive a degradation. ``s/face`` is the wall time of the restorer call for
one face (batch of one, after a warm-up); compiling a reference dictionary is timed apart.

Results are kept per person, strength, method and weights (sha256) in ``--work``, so an interrupted run
resumes, and a run with new weights only recomputes what they change; a kept row that lacks a metric
(written by an older version of this script) is recomputed rather than mixed with new ones.

    python bench/quality.py --threads 1 [--limit N] [--scales 4,8,16] [--out results.json]
        [--dmdnet-weights FILE] [--memgan-weights FILE] [--pass-criteria]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    QUALITY_SCALES,
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
from quality_metrics import (
    COLOUR_ERROR_THRESHOLD,
    LOWPASS_SIGMA_FRACTION,
    colour_error_share,
    detail_ratio,
    identity_ranks,
)

METHODS = ("input", "dmdnet", "dmdnet+ref", "memgan")
RESTORERS = ("dmdnet", "dmdnet+ref", "memgan")
LABELS = {
    "input": "degraded input",
    "dmdnet": "DMDNet generic",
    "dmdnet+ref": "DMDNet + neutral ref",
    "memgan": "MemGAN",
}
SSIM_NAME = "facerestore_cli.train.losses.ssim (Gaussian σ=1.5, RGB in [0,1]; = skimage gaussian SSIM)"
#: What a kept row must hold to be reused; a row without one of them was written by an older version.
ROW_FIELDS = ("psnr", "ssim", "identity", "distance", "detail", "grid", "colour_error", "embedding", "seconds")

#: The pass criteria (``--pass-criteria``), the bar a restorer must clear to ship.
DETAIL_MIN = 0.5  # median detail ratio at x8
DETAIL_SCALE = 8
#: PSNR must beat the input by this many dB (x4, x8); at other strengths (x16) matching it is enough.
PSNR_MARGIN = {4: 0.8, 8: 0.8}
COLOUR_ERROR_MAX_PCT = 1.0  # mean % of face pixels with ΔE > 10, at every strength
REF_SCALE = 8  # where DMDNet + ref must beat DMDNet generic on cross-photo identity


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

    def get(self, key: str, fields: tuple[str, ...] = ()) -> dict | None:
        """The kept row of ``key``, or None when there is none or it lacks one of ``fields``."""
        row = self.rows.get(key)
        if row is None or any(f not in row for f in fields):
            return None
        return row

    def put(self, row: dict) -> None:
        self.rows[row["key"]] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def _scales(text: str) -> tuple[int, ...]:
    try:
        scales = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--scales takes comma-separated integers, got {text!r}") from exc
    if not scales or min(scales) < 1:
        raise argparse.ArgumentTypeError("--scales needs at least one strength, each 1 or more")
    return scales


def _embedding(store: Store, key: str, embed: Callable[[], np.ndarray]) -> np.ndarray:
    """A photo's embedding, kept in the store under ``key`` (computed by ``embed()`` the first time)."""
    row = store.get(key, ("embedding",))
    if row is None:
        row = {"key": key, "embedding": embed().tolist()}
        store.put(row)
    return np.asarray(row["embedding"], dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument(
        "--memgan-weights", type=Path, default=None, help="MemGAN weights (default: the normal weights lookup)"
    )
    parser.add_argument(
        "--scales", type=_scales, default=QUALITY_SCALES,
        help=f"comma-separated strengths (default {','.join(map(str, QUALITY_SCALES))})",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="resume folder (default: <cache>/bench/quality)")
    parser.add_argument("--fresh", action="store_true", help="ignore results kept in --work")
    parser.add_argument("--examples", type=Path, default=None, help="write side-by-side strips of computed faces")
    parser.add_argument(
        "--pass-criteria", action="store_true", help="print, per restorer, which of the shipping criteria it meets"
    )
    args = parser.parse_args(argv)
    set_threads(args.threads)
    scales: tuple[int, ...] = tuple(args.scales)

    from facerestore_cli import FaceRestorer, RestoreOptions, create_restorer
    from facerestore_cli.face.identity import cosine_similarity
    from facerestore_cli.paste import face_mask
    from facerestore_cli.references.dictionary import cache_root
    from facerestore_cli.train.losses import ssim
    from facerestore_cli.train.objectives import grid_energy
    from facerestore_cli.weights import WeightsError

    people = london_pairs(args.data, args.limit)
    work = args.work or cache_root() / "bench" / "quality"
    work.mkdir(parents=True, exist_ok=True)
    store = Store(work / "records.jsonl")
    if args.fresh:
        store.rows.clear()

    try:
        engine = FaceRestorer(
            RestoreOptions.from_flat(
                method="dmdnet", weights=args.dmdnet_weights, device=args.device, threads=args.threads,
                batch_size=1, aligned=True, cache_dir=work, embedder="dlib",  # the identity metrics are dlib's
            ),
            prepare=False,
        )  # fmt: skip
        memgan = create_restorer("memgan", weights=args.memgan_weights, runtime=engine.runtime, batch_size=1)
    except WeightsError as exc:
        sys.exit(f"error: {exc}")
    dmdnet = engine.restorer
    restorers = {"dmdnet": dmdnet, "dmdnet+ref": dmdnet, "memgan": memgan}
    shas = {"input": "-", "dmdnet": dmdnet.info.sha256, "dmdnet+ref": dmdnet.info.sha256, "memgan": memgan.info.sha256}
    predictor, embedder = engine.predictor, engine.embedder
    print(f"DMDNet: {dmdnet.info.weights} ({dmdnet.info.sha256[:12]}) config {dmdnet.info.config}", file=sys.stderr)
    print(f"MemGAN: {memgan.info.weights} ({memgan.info.sha256[:12]}) config {memgan.info.config}", file=sys.stderr)
    print(f"{len(people)} people, scales {scales}, work folder {work}", file=sys.stderr)

    started = time.perf_counter()
    # the cross-photo gallery: every person's neutral photo, embedded with its own landmarks
    gallery = np.stack(
        [_embedding(store, f"neutral:{file_digest(p.neutral)}", _photo_embedder(p.neutral, predictor, embedder))
         for p in people]
    )  # fmt: skip

    warmed: set[str] = set()
    compile_seconds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="facerestore-quality-") as tmp:
        people_root = make_people_folder(Path(tmp) / "people", people)
        for n, person in enumerate(people, 1):
            todo = [
                (scale, method)
                for scale in scales
                for method in METHODS
                if store.get(f"{person.name}:x{scale}:{method}:{shas[method]}", ROW_FIELDS) is None
            ]
            if todo:
                gt = read_rgb(person.smiling)
                gt_marks = predictor.predict(gt)
                gt_mask = face_mask(gt_marks) > 0.5
                gt_emb = _embedding(
                    store, f"original:{file_digest(person.smiling)}", lambda g=gt, m=gt_marks: embedder.embed(g, m)
                )
                dictionary = None
                lq: dict[int, tuple[np.ndarray, np.ndarray]] = {}
                for scale, method in todo:
                    if scale not in lq:
                        image = degraded(gt, scale, person.index)
                        lq[scale] = (image, predictor.predict(image))
                    lq_image, lq_marks = lq[scale]
                    seconds = None
                    if method == "input":
                        out = lq_image
                    else:
                        tensors = None
                        if method == "dmdnet+ref":
                            if dictionary is None:
                                dictionary = engine.compile_person(people_root / person.name)
                                if not dictionary.from_cache:
                                    compile_seconds.append(dictionary.seconds)
                            tensors = dictionary.tensors
                        restorer = restorers[method]
                        if method not in warmed:
                            restorer.restore(lq_image[None], lq_marks[None], tensors)
                            warmed.add(method)
                        t = time.perf_counter()
                        out = to_uint8(restorer.restore(lq_image[None], lq_marks[None], tensors)[0])
                        seconds = time.perf_counter() - t
                    if args.examples:
                        _save_example(args.examples, person.name, scale, method, out)
                    emb = embedder.embed(out, gt_marks)
                    store.put(
                        {
                            "key": f"{person.name}:x{scale}:{method}:{shas[method]}", "person": person.name,
                            "scale": scale, "method": method,
                            "psnr": psnr(out, gt),
                            "ssim": ssim(out.astype(np.float32) / 255.0, gt.astype(np.float32) / 255.0),
                            "identity": cosine_similarity(emb, gt_emb),
                            "distance": float(np.linalg.norm(emb - gt_emb)),
                            "detail": detail_ratio(out, gt),
                            "grid": grid_energy(out),
                            "grid_original": grid_energy(gt),
                            "colour_error": colour_error_share(out, gt, gt_mask),
                            "embedding": emb.tolist(),
                            "seconds": seconds,
                        }
                    )  # fmt: skip
            if n % 10 == 0 or n == len(people):
                print(f"  {n}/{len(people)} people, {time.perf_counter() - started:.0f} s", file=sys.stderr)

    results = {
        method: {scale: [store.get(f"{p.name}:x{scale}:{method}:{shas[method]}") for p in people] for scale in scales}
        for method in METHODS
    }
    add_cross_identity(results, gallery)
    report = summarise(results, people, scales, compile_seconds)
    criteria = pass_criteria(results, scales)
    if args.pass_criteria:
        print_pass_criteria(criteria)
    report["pass_criteria"] = criteria
    report["meta"] = {
        "people": len(people),
        "scales": list(scales),
        "degradation": "fixed_degradation(scale, seed=person index): blur σ 2, noise σ 8, JPEG 75, bicubic",
        "ssim": SSIM_NAME,
        "detail": "median over faces of var(Laplacian 3x3 of BT.601 luma) on the central 256x256, output / original",
        "colour_error": (
            f"mean over faces of the % of face pixels (paste.face_mask(original landmarks) > 0.5) with CIEDE2000 "
            f"ΔE > {COLOUR_ERROR_THRESHOLD:g} after replacing the output's Lab Gaussian low-pass "
            f"(σ = {LOWPASS_SIGMA_FRACTION:g} x side) by the original's"
        ),
        "cross_identity": (
            "cosine of dlib 128-d embeddings (output with the smiling original's landmarks) to the same person's "
            f"neutral photo (its own landmarks); rank of the right person among the {len(people)} neutral photos"
        ),
        "identity": "seen in training: cosine of dlib 128-d embeddings (landmarks of the original) to the original",
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


def _photo_embedder(path: Path, predictor: Any, embedder: Any) -> Callable[[], np.ndarray]:
    """A call that embeds a photo with its own landmarks: only made when the store has no embedding for it."""

    def embed() -> np.ndarray:
        rgb = read_rgb(path)
        return embedder.embed(rgb, predictor.predict(rgb))

    return embed


def add_cross_identity(results: dict, gallery: np.ndarray) -> None:
    """Give every row its cross-photo cosine and rank against the run's neutral gallery (in people order).

    Computed here rather than kept, because the rank depends on who else is in the gallery (``--limit``).
    """
    for by_scale in results.values():
        for rows in by_scale.values():
            queries = np.stack([np.asarray(r["embedding"], dtype=np.float32) for r in rows])
            cosines, ranks = identity_ranks(queries, gallery, np.arange(len(rows)))
            for row, cos, rank in zip(rows, cosines, ranks, strict=True):
                row["cross_identity"] = float(cos)
                row["rank"] = int(rank)


def aggregate(rows: list[dict]) -> dict[str, Any]:
    """The table's figures for one method and strength."""

    def ms(key: str) -> dict[str, float]:
        v = np.array([r[key] for r in rows], dtype=np.float64)
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}

    detail = np.array([r["detail"] for r in rows], dtype=np.float64)
    ranks = np.array([r["rank"] for r in rows], dtype=np.float64)
    secs = [r["seconds"] for r in rows if r["seconds"] is not None]
    return {
        "psnr": ms("psnr"),
        "ssim": ms("ssim"),
        "detail_median": float(np.median(detail)),
        "detail_quartiles": [float(np.percentile(detail, 25)), float(np.percentile(detail, 75))],
        "grid_median": float(np.median([r["grid"] for r in rows])),
        "grid_original_median": float(np.median([r["grid_original"] for r in rows])),
        "colour_error_pct": 100.0 * float(np.mean([r["colour_error"] for r in rows])),
        "cross_identity": ms("cross_identity"),
        "rank1_pct": 100.0 * float(np.mean(ranks == 1)),
        "mean_rank": float(ranks.mean()),
        "identity": ms("identity"),
        "seconds_per_face": float(np.mean(secs)) if secs else None,
    }


def summarise(results: dict, people: list, scales: tuple[int, ...], compile_seconds: list[float]) -> dict:
    """Print one table per strength and the before/after checks; return them for the JSON file."""
    header = [
        "method", "PSNR (dB)", "SSIM", "detail ratio", "grid", f"ΔE>{COLOUR_ERROR_THRESHOLD:g} %", "cross-photo cosine",
        "rank-1 %", "mean rank", "identity (seen in training)", "s/face",
    ]  # fmt: skip
    table: dict[str, dict] = {}
    print(f"\n## Face quality on the London pairs ({len(people)} people, mean ± std; detail ratio: median)")
    for scale in scales:
        rows = []
        for method in METHODS:
            recs = results[method][scale]
            agg = table[f"{method}@x{scale}"] = aggregate(recs)
            secs = agg["seconds_per_face"]
            rows.append(
                [
                    LABELS[method], mean_std([r["psnr"] for r in recs], "{:.2f}"),
                    mean_std([r["ssim"] for r in recs], "{:.4f}"), f"{agg['detail_median']:.2f}",
                    f"{agg['grid_median']:.2f}",
                    f"{agg['colour_error_pct']:.2f}", mean_std([r["cross_identity"] for r in recs], "{:.4f}"),
                    f"{agg['rank1_pct']:.0f}", f"{agg['mean_rank']:.2f}",
                    mean_std([r["identity"] for r in recs], "{:.4f}"), f"{secs:.2f}" if secs is not None else "–",
                ]
            )  # fmt: skip
        print(f"\n### x{scale}\n")
        print(markdown_table(header, rows))
    print(f"\nSSIM: {SSIM_NAME}.")
    print("detail ratio: var(Laplacian) of the luma on the central 256x256, output over original (1 = real detail).")
    originals = table[f"input@x{scales[0]}"]["grid_original_median"]
    print(
        "grid: power at 4-5 px periods over the bands beside them (train.objectives.grid_energy), median; a "
        f"crosshatch or JPEG blocks raise it. The original photos: {originals:.2f}."
    )
    print(
        f"ΔE>{COLOUR_ERROR_THRESHOLD:g} %: share of face pixels with CIEDE2000 ΔE > {COLOUR_ERROR_THRESHOLD:g} "
        "after matching low frequencies (local colour errors only)."
    )
    print(f"cross-photo: dlib cosine to the same person's neutral photo; rank among the {len(people)} neutral photos.")
    print("identity (seen in training): dlib cosine to the original smiling photo.")
    if compile_seconds:
        print(
            f"reference dictionary compile (detect + align + embed + encode): {np.mean(compile_seconds):.2f} s/person"
        )

    print("\n## Checks\n")
    checks = []
    for method in ("dmdnet", "memgan"):
        for scale in scales:
            diffs = {
                metric: float(
                    np.mean(_column(results, method, scale, metric) - _column(results, "input", scale, metric))
                )
                for metric in ("psnr", "ssim", "identity", "cross_identity")
            }
            ok = all(d > 0 for d in diffs.values())
            print(
                f"[{'PASS' if ok else 'FAIL'}] {LABELS[method]} beats the input at x{scale}: "
                f"ΔPSNR {diffs['psnr']:+.2f} dB, ΔSSIM {diffs['ssim']:+.4f}, "
                f"Δidentity (seen in training) {diffs['identity']:+.4f}, Δcross-photo {diffs['cross_identity']:+.4f}"
            )
            checks.append({"check": f"{method} beats input at x{scale}", "pass": ok, "mean_differences": diffs})
    overall = all(c["pass"] for c in checks)
    print(
        f"[{'PASS' if overall else 'FAIL'}] both restorers beat the input on PSNR, SSIM and both identities at "
        + ", ".join(f"x{s}" for s in scales)
    )
    if REF_SCALE in scales:
        for metric, name in (("identity", "identity (seen in training)"), ("cross_identity", "cross-photo identity")):
            stats = paired(results, "dmdnet+ref", "dmdnet", REF_SCALE, metric)
            ok = stats["paired_mean"] > 0
            print(
                f"[{'PASS' if ok else 'FAIL'}] DMDNet with the neutral reference beats DMDNet generic on {name} at "
                f"x{REF_SCALE}: {_paired_text(stats)}"
            )
            checks.append({"check": f"dmdnet+ref beats dmdnet on {metric} at x{REF_SCALE}", "pass": ok, **stats})
    return {"table": table, "checks": checks, "all_restorers_beat_input": overall}


def _column(results: dict, method: str, scale: int, metric: str) -> np.ndarray:
    return np.array([r[metric] for r in results[method][scale]], dtype=np.float64)


def paired(results: dict, a: str, b: str, scale: int, metric: str) -> dict[str, Any]:
    """Paired difference a − b over people: mean, std, 95% CI, how many improve, sign test."""
    d = _column(results, a, scale, metric) - _column(results, b, scale, metric)
    n = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    half = 1.96 * sd / math.sqrt(n) if n > 1 else float("nan")
    improved = int((d > 0).sum())
    return {
        "paired_mean": mean,
        "paired_std": sd,
        "ci95": [mean - half, mean + half],
        "improved": improved,
        "people": n,
        "sign_test_p": _sign_test(improved, int((d != 0).sum())),
    }


def _paired_text(stats: dict) -> str:
    lo, hi = stats["ci95"]
    return (
        f"paired Δ = {stats['paired_mean']:+.4f} ± {stats['paired_std']:.4f} (95% CI {lo:+.4f} … {hi:+.4f}), "
        f"{stats['improved']}/{stats['people']} people improve (two-sided sign test p = {stats['sign_test_p']:.3g})"
    )


def pass_criteria(results: dict, scales: tuple[int, ...]) -> dict[str, dict]:
    """Per restorer, each shipping criterion with its figures; a criterion on a strength not run is ``None``.

    Means over faces except the detail ratio (a median, because a few faces with hallucinated texture
    would otherwise carry it). A restorer passes when every criterion is measured and met.
    """
    out: dict[str, dict] = {}
    for method in RESTORERS:
        mean = {
            (s, m, k): float(np.mean(_column(results, m, s, k)))
            for s in scales
            for m in ("input", method)
            for k in ("psnr", "ssim", "cross_identity", "colour_error")
        }
        detail = {s: float(np.median(_column(results, method, s, "detail"))) for s in scales if s == DETAIL_SCALE}
        psnr_rule = {}
        for s in scales:
            target = mean[(s, "input", "psnr")] + PSNR_MARGIN.get(s, 0.0)
            psnr_rule[s] = (mean[(s, method, "psnr")], target, mean[(s, method, "psnr")] >= target)
        colour = {}
        for s in scales:
            pct = 100.0 * mean[(s, method, "colour_error")]
            colour[s] = (pct, COLOUR_ERROR_MAX_PCT, pct <= COLOUR_ERROR_MAX_PCT)
        items = [
            _criterion(
                f"detail ratio ≥ {DETAIL_MIN:g} at x{DETAIL_SCALE}",
                {s: (v, DETAIL_MIN, v >= DETAIL_MIN) for s, v in detail.items()},
                (DETAIL_SCALE,),
            ),
            _criterion("PSNR ≥ input + 0.8 dB at x4 and x8, ≥ input at x16", psnr_rule, (4, 8, 16)),
        ]
        for key, name in (("ssim", "SSIM ≥ input"), ("cross_identity", "cross-photo identity ≥ input")):
            rule = {s: (mean[(s, method, key)], mean[(s, "input", key)]) for s in scales}
            items.append(
                _criterion(f"{name} at every strength", {s: (v, t, v >= t) for s, (v, t) in rule.items()}, scales)
            )
        items.append(
            _criterion(
                f"ΔE>{COLOUR_ERROR_THRESHOLD:g} ≤ {COLOUR_ERROR_MAX_PCT:g}% of face pixels at every strength",
                colour,
                scales,
            )
        )
        if method == "dmdnet+ref":
            rule, stats = {}, None
            if REF_SCALE in scales:
                stats = paired(results, "dmdnet+ref", "dmdnet", REF_SCALE, "cross_identity")
                ref_mean = float(np.mean(_column(results, "dmdnet+ref", REF_SCALE, "cross_identity")))
                gen_mean = float(np.mean(_column(results, "dmdnet", REF_SCALE, "cross_identity")))
                rule[REF_SCALE] = (ref_mean, gen_mean, stats["paired_mean"] > 0)
            item = _criterion(f"beats DMDNet generic on cross-photo identity at x{REF_SCALE}", rule, (REF_SCALE,))
            if stats is not None:
                item["paired"] = stats
            items.append(item)
        out[method] = {"pass": all(i["pass"] is True for i in items), "criteria": items}
    return out


def _criterion(name: str, per_scale: dict[int, tuple[float, float, bool]], needed: tuple[int, ...]) -> dict[str, Any]:
    """One criterion: (value, target, met) per strength; ``pass`` is None when a strength it needs was not run."""
    missing = [s for s in needed if s not in per_scale]
    item: dict[str, Any] = {
        "criterion": name,
        "pass": None if missing else all(met for _, _, met in per_scale.values()),
        "per_scale": {f"x{s}": {"value": v, "target": t, "pass": met} for s, (v, t, met) in per_scale.items()},
    }
    if missing:
        item["not_measured"] = [f"x{s}" for s in missing]
    return item


def print_pass_criteria(criteria: dict[str, dict]) -> None:
    print("\n## Pass criteria\n")
    for method, verdict in criteria.items():
        print(f"### {LABELS[method]}: {'PASS' if verdict['pass'] else 'FAIL'}\n")
        for item in verdict["criteria"]:
            mark = {True: "PASS", False: "FAIL", None: "n/a "}[item["pass"]]
            figures = ", ".join(
                f"{s} {v['value']:.4g} vs {v['target']:.4g}{'' if v['pass'] else ' ✗'}"
                for s, v in item["per_scale"].items()
            )
            missing = f" (not measured: {', '.join(item['not_measured'])})" if item.get("not_measured") else ""
            print(f"- [{mark}] {item['criterion']}: {figures}{missing}")
            if "paired" in item:
                print(f"  {_paired_text(item['paired'])}")
        print()


def _sign_test(wins: int, n: int) -> float:
    """Two-sided exact binomial p-value of ``wins`` successes out of ``n`` at p = 1/2."""
    if n == 0:
        return 1.0
    k = min(wins, n - wins)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def _clean(row: dict) -> dict:
    return {
        k: (round(v, 5) if isinstance(v, float) else v)
        for k, v in row.items()
        if k not in ("key", "person", "embedding")
    }


def _save_example(folder: Path, name: str, scale: int, method: str, face: np.ndarray) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{name}_x{scale}_{method.replace('+', '_')}.jpg"), face[:, :, ::-1])


if __name__ == "__main__":
    sys.exit(main())
