"""Routing benchmark on the London pairs: which person's references each face of an album gets.

The album is every person's *smiling* photo degraded with the fixed x4 and x8 evaluation degradations
(``fixed_degradation(scale, seed=<person index>)``); the people folder has one sub-folder per person
holding their *neutral* photo. The run goes through the real code: ``Pipeline.prepare`` compiles every
person with ``compile_person`` (detect, align, landmarks, dlib embedding, DMDNet encoder, cache) into
a ``PeopleIndex`` at the defaults of ``people.py``, and every album photo goes through
``Pipeline.restore_photo`` as ``--aligned`` (landmarks on the degraded crop, dlib embedding,
``PeopleIndex.route``). Only the restoration itself is skipped (an identity restorer that delegates
the reference encoding to DMDNet), so the run costs what ``--method none`` costs.

Printed: at the defaults, the share of faces matched to their own person, given *somebody else's*
references (must be ≤ 1%), and sent to generic; the same faces as strangers (their own person removed
from the people folder: any match is wrong); the genuine and impostor distance distributions; and the
threshold/margin chosen from them by the procedure documented in ``facerestore_cli/people.py``
(2-fold cross-validation over people, then the same rule on everyone for the defaults).

    python bench/routing.py --threads 1 [--limit N] [--out routing.json] [--dmdnet-weights FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import (
    SCALES,
    add_common_args,
    degraded,
    environment,
    london_pairs,
    make_people_folder,
    markdown_table,
    percentiles,
    read_rgb,
    set_threads,
    write_json,
)

#: Highest share of faces allowed to get another person's references (known people and strangers).
MAX_WRONG = 0.01
THRESHOLDS = np.round(np.arange(0.30, 0.8001, 0.01), 2)
MARGINS = np.round(np.arange(0.0, 0.2001, 0.01), 2)
PCTS = (0, 1, 5, 25, 50, 75, 95, 99, 100)


@dataclass
class Probe:
    person: int  # index into the people list
    scale: int
    embedding: np.ndarray
    routed: str | None
    reason: str


def route_only_restorer(dmdnet):
    """A restorer that compiles real DMDNet dictionaries but returns faces unchanged (cost of --method none)."""
    from facerestore_cli.restore import Restorer

    class RouteOnly(Restorer):
        uses_references = True

        def __init__(self) -> None:
            self.info = dmdnet.info

        def encode_references(self, faces, landmarks68):
            return dmdnet.encode_references(faces, landmarks68)

        def restore(self, faces, landmarks68, dictionary=None):
            return faces.astype(np.float32) / 255.0

    return RouteOnly()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--detect", action="store_true", help="detect and align the album faces instead of --aligned")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from facerestore_cli.device import make_runtime
    from facerestore_cli.imagefile import Photo
    from facerestore_cli.people import DEFAULT_MARGIN, DEFAULT_THRESHOLD, PeopleIndex
    from facerestore_cli.pipeline import Pipeline, RestoreOptions
    from facerestore_cli.restore import create_restorer
    from facerestore_cli.weights import WeightsError

    people = london_pairs(args.data, args.limit)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="facerestore-routing-") as tmp:
        root = make_people_folder(Path(tmp) / "people", people)
        options = RestoreOptions(
            method="dmdnet", weights=args.dmdnet_weights, device=args.device, threads=args.threads,
            aligned=not args.detect, people=root, cache_dir=Path(tmp) / "cache",
        )  # fmt: skip
        try:
            runtime = make_runtime(args.device, None, args.threads)
            dmdnet = create_restorer("dmdnet", weights=args.dmdnet_weights, runtime=runtime, batch_size=1)
        except WeightsError as exc:
            sys.exit(f"error: {exc}")
        pipeline = Pipeline(options, restorer=route_only_restorer(dmdnet), on_message=print)
        pipeline.prepare()
        index = pipeline.people
        assert index is not None
        compiled = {p.name for p in index.people}
        missing = [p.name for p in people if p.name not in compiled]
        if missing:
            sys.exit(f"error: could not compile {missing}: every person needs a dictionary for this benchmark")
        names = [p.name for p in index.people]
        centroids = np.stack([p.centroid for p in index.people])
        position = {name: i for i, name in enumerate(names)}
        predictor, embedder = pipeline.predictor, pipeline.embedder

        probes: list[Probe] = []
        clean_d: list[float] = []
        mismatches = 0
        for p in people:
            gt = read_rgb(p.smiling)
            clean_d.append(float(np.linalg.norm(embedder.embed(gt, predictor.predict(gt)) - centroids[position[p.name]])))
            for scale in SCALES:
                lq = degraded(gt, scale, p.index)
                result = pipeline.restore_photo(Photo(pixels=lq, format="png"))
                if not result.faces or not result.crops:
                    probes.append(Probe(position[p.name], scale, np.full(128, np.nan, np.float32), None, "no face"))
                    continue
                face = result.faces[0]
                crop = result.crops[0]
                emb = embedder.embed(crop, predictor.predict(crop))
                if index.route(emb).person != face.person:
                    mismatches += 1
                probes.append(Probe(position[p.name], scale, emb, face.person, face.routing or ""))

    ok = [q for q in probes if np.isfinite(q.embedding).all()]
    emb = np.stack([q.embedding for q in ok])
    own = np.array([q.person for q in ok])
    scales = np.array([q.scale for q in ok])
    dist = np.linalg.norm(emb[:, None, :] - centroids[None, :, :], axis=2)

    n = len(probes)
    correct = sum(q.routed == names[q.person] for q in probes)
    wrong = sum(q.routed is not None and q.routed != names[q.person] for q in probes)
    generic = sum(q.routed is None for q in probes)
    print(f"\n## Routing at the defaults (threshold {DEFAULT_THRESHOLD}, margin {DEFAULT_MARGIN})\n")
    print(
        f"album: {len(people)} people x {len(SCALES)} strengths = {n} faces "
        f"({'detected' if args.detect else '--aligned'}); people folder: one neutral photo per person"
    )
    if mismatches:
        print(f"WARNING: {mismatches} faces routed differently by the pipeline and by PeopleIndex.route")
    rows = []
    for scale in (*SCALES, None):
        sel = [q for q in probes if scale is None or q.scale == scale]
        c = sum(q.routed == names[q.person] for q in sel)
        w = sum(q.routed is not None and q.routed != names[q.person] for q in sel)
        g = sum(q.routed is None for q in sel)
        rows.append([f"x{scale}" if scale else "all", len(sel), _pct(c, len(sel)), _pct(w, len(sel)), _pct(g, len(sel))])
    print(markdown_table(["album", "faces", "own person (accuracy)", "wrong person's refs", "generic"], rows))
    stranger_wrong = 0
    full = PeopleIndex(index.people, DEFAULT_THRESHOLD, DEFAULT_MARGIN)
    for q in ok:
        others = [person for person in full.people if person.name != names[q.person]]
        if others and PeopleIndex(others, DEFAULT_THRESHOLD, DEFAULT_MARGIN).route(q.embedding).person is not None:
            stranger_wrong += 1
    print(
        f"\nstrangers (each face again with its own person removed from the people folder): "
        f"{_pct(stranger_wrong, len(ok))} got somebody's references"
    )
    wrong_share = wrong / n if n else 0.0
    verdict = "PASS" if wrong_share <= MAX_WRONG and stranger_wrong / max(len(ok), 1) <= MAX_WRONG else "FAIL"
    print(
        f"[{verdict}] wrong person's references ≤ {MAX_WRONG:.0%}: {_pct(wrong, n)} of album faces, "
        f"{_pct(stranger_wrong, len(ok))} of strangers"
    )

    # distributions
    genuine = dist[np.arange(len(ok)), own]
    masked = dist.copy()
    masked[np.arange(len(ok)), own] = np.inf
    nearest_impostor = masked.min(axis=1)
    print("\n## dlib distances (face embedding to a person's centroid)\n")
    dist_rows = []
    dist_rows.append(["clean smiling → own", len(clean_d), *[f"{v:.3f}" for v in percentiles(clean_d, PCTS)]])
    for scale in SCALES:
        s = scales == scale
        imp = masked[s][np.isfinite(masked[s])]
        dist_rows.append([f"x{scale} genuine", int(s.sum()), *[f"{v:.3f}" for v in percentiles(genuine[s], PCTS)]])
        dist_rows.append([f"x{scale} impostor (all)", imp.size, *[f"{v:.3f}" for v in percentiles(imp, PCTS)]])
        dist_rows.append(
            [f"x{scale} nearest impostor", int(s.sum()), *[f"{v:.3f}" for v in percentiles(nearest_impostor[s], PCTS)]]
        )
        dist_rows.append(
            [
                f"x{scale} nearest impostor − genuine", int(s.sum()),
                *[f"{v:.3f}" for v in percentiles(nearest_impostor[s] - genuine[s], PCTS)],
            ]
        )  # fmt: skip
    print(markdown_table(["distances", "n", *[f"p{q}" for q in PCTS]], dist_rows))
    overlap = int((genuine > nearest_impostor).sum())
    print(f"\nfaces whose nearest impostor is closer than their own person: {overlap}/{len(ok)}")

    # choice of threshold and margin
    print("\n## Choosing the threshold and margin\n")
    print(
        "Rule: a face goes to its nearest person when distance ≤ threshold and the second nearest is at least "
        "margin further.\nEach face is scored twice: as a known person (correct only if it gets its own person) "
        "and as a stranger\n(its own person removed: correct only if it gets nobody). On the tuning people, pick "
        f"the (threshold, margin)\non a {THRESHOLDS[0]:.2f}–{THRESHOLDS[-1]:.2f} × {MARGINS[0]:.2f}–{MARGINS[-1]:.2f} "
        f"grid (step 0.01) with the most correct matches subject to ≤ {MAX_WRONG:.0%} wrong-person\n"
        "assignments among known faces and among strangers; ties: fewer wrong, then the larger margin, then the "
        "middle\nof the tied thresholds. 2-fold cross-validation over people (alternate people in name order) "
        "estimates how\nthat generalises; the defaults are the rule applied to all people."
    )
    people_idx = np.arange(len(names))
    folds = [people_idx[0::2], people_idx[1::2]]
    cv_rows, cv = [], []
    for k, (tune, test) in enumerate([(folds[0], folds[1]), (folds[1], folds[0])]):
        t, m, _ = choose(dist, own, tune)
        res = evaluate(dist, own, test, t, m)
        cv.append({"fold": k + 1, "threshold": t, "margin": m, **res})
        cv_rows.append(
            [
                k + 1, f"{len(tune)} → {len(test)}", f"{t:.2f}", f"{m:.2f}", _pct(res["correct"], res["known"]),
                _pct(res["wrong_known"], res["known"]), _pct(res["generic"], res["known"]),
                _pct(res["wrong_stranger"], res["known"]),
            ]
        )  # fmt: skip
    print()
    print(
        markdown_table(
            ["fold", "people tune → test", "threshold", "margin", "held-out own person", "wrong (known)",
             "generic", "wrong (strangers)"],
            cv_rows,
        )
    )  # fmt: skip
    t_all, m_all, res_all = choose(dist, own, people_idx)
    cur = evaluate(dist, own, people_idx, DEFAULT_THRESHOLD, DEFAULT_MARGIN)
    print(
        f"\nchosen on all {len(names)} people: threshold {t_all:.2f}, margin {m_all:.2f} → own person "
        f"{_pct(res_all['correct'], res_all['known'])}, wrong {_pct(res_all['wrong_known'], res_all['known'])}, "
        f"strangers wrong {_pct(res_all['wrong_stranger'], res_all['known'])}"
    )
    print(
        f"current defaults: threshold {DEFAULT_THRESHOLD}, margin {DEFAULT_MARGIN} → own person "
        f"{_pct(cur['correct'], cur['known'])}, wrong {_pct(cur['wrong_known'], cur['known'])}, "
        f"strangers wrong {_pct(cur['wrong_stranger'], cur['known'])}"
    )
    same = abs(t_all - DEFAULT_THRESHOLD) < 1e-9 and abs(m_all - DEFAULT_MARGIN) < 1e-9
    print("the defaults match the data" if same else "NOTE: the data suggests different defaults than people.py has")

    write_json(
        args.out,
        {
            "defaults": {"threshold": DEFAULT_THRESHOLD, "margin": DEFAULT_MARGIN},
            "at_defaults": {
                "faces": n, "own_person": correct / n, "wrong_person": wrong / n, "generic": generic / n,
                "strangers_wrong": stranger_wrong / max(len(ok), 1), "pipeline_vs_index_mismatches": mismatches,
            },
            "distances": {
                "clean_genuine": percentiles(clean_d, PCTS),
                **{f"x{s}_genuine": percentiles(genuine[scales == s], PCTS) for s in SCALES},
                **{f"x{s}_nearest_impostor": percentiles(nearest_impostor[scales == s], PCTS) for s in SCALES},
                "percentiles": list(PCTS),
            },
            "cross_validation": cv,
            "chosen": {"threshold": t_all, "margin": m_all, **res_all},
            "faces": [
                {"person": names[q.person], "scale": q.scale, "routed": q.routed, "reason": q.reason} for q in probes
            ],
            "people": names,
            "distance_matrix": {"rows": [[names[int(o)], int(s)] for o, s in zip(own, scales, strict=True)],
                                "values": np.round(dist, 5)},
            "meta": {"people": len(names), "detect": args.detect, "environment": environment(),
                     "wall_seconds": round(time.perf_counter() - started, 1)},
        },
    )  # fmt: skip
    return 0


def _decide(dist: np.ndarray, faces: np.ndarray, gallery: np.ndarray, own: np.ndarray, stranger: bool):
    """Nearest gallery person, its distance and the gap to the second, for each face."""
    d = dist[np.ix_(faces, gallery)].copy()
    if stranger:
        d[gallery[None, :] == own[faces][:, None]] = np.inf
    order = np.argsort(d, axis=1)
    rows = np.arange(len(faces))
    d1 = d[rows, order[:, 0]]
    d2 = d[rows, order[:, 1]] if d.shape[1] > 1 else np.full(len(faces), np.inf)
    return gallery[order[:, 0]], d1, d2 - d1


def evaluate(dist: np.ndarray, own: np.ndarray, gallery: np.ndarray, t, m) -> dict:
    """Counts at threshold(s) ``t`` and margin(s) ``m`` (scalars or broadcastable arrays)."""
    faces = np.flatnonzero(np.isin(own, gallery))
    best, d1, gap = _decide(dist, faces, gallery, own, stranger=False)
    t = np.asarray(t, dtype=np.float64)[..., None]
    m = np.asarray(m, dtype=np.float64)[..., None]
    take = (d1 <= t + 1e-9) & (gap >= m - 1e-9)
    hit = best == own[faces]
    _, s1, sgap = _decide(dist, faces, gallery, own, stranger=True)
    stake = (s1 <= t + 1e-9) & (sgap >= m - 1e-9)
    out = {
        "known": len(faces),
        "correct": (take & hit).sum(-1),
        "wrong_known": (take & ~hit).sum(-1),
        "generic": (~take).sum(-1),
        "wrong_stranger": stake.sum(-1),
    }
    return {k: (v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v) for k, v in out.items()}


def choose(dist: np.ndarray, own: np.ndarray, gallery: np.ndarray) -> tuple[float, float, dict]:
    """The rule of ``people.py``: most correct matches with ≤ MAX_WRONG wrong-person assignments."""
    tt, mm = np.meshgrid(THRESHOLDS, MARGINS, indexing="ij")
    res = evaluate(dist, own, gallery, tt, mm)
    n = res["known"]
    feasible = (res["wrong_known"] <= MAX_WRONG * n) & (res["wrong_stranger"] <= MAX_WRONG * n)
    score = np.where(feasible, res["correct"], -1)
    best = score.max()
    tied = score == best
    wrong = np.where(tied, res["wrong_known"] + res["wrong_stranger"], np.iinfo(np.int64).max)
    tied &= wrong == wrong.min()
    mi = int(np.flatnonzero(tied.any(axis=0)).max())  # the largest margin among the ties
    ts = np.flatnonzero(tied[:, mi])
    ti = int(ts[len(ts) // 2])  # the middle of the tied thresholds
    t, m = float(THRESHOLDS[ti]), float(MARGINS[mi])
    return t, m, evaluate(dist, own, gallery, t, m)


def _pct(k: int, n: int) -> str:
    return f"{100.0 * k / n:.1f}% ({k}/{n})" if n else "n/a"


if __name__ == "__main__":
    sys.exit(main())
