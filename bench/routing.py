"""Routing benchmark on the London pairs: which person's references each face of an album gets.

The album is every person's *smiling* photo degraded with the fixed x4 and x8 evaluation degradations
(``fixed_degradation(scale, seed=<person index>)``); the people folder has one sub-folder per person
holding their *neutral* photo. The run goes through the real code: ``Pipeline.prepare`` compiles every
person with ``compile_person`` (detect, align, landmarks, face embedding, DMDNet encoder, cache) into
a ``PeopleIndex`` at the embedder's defaults, and every album photo goes through
``Pipeline.restore_photo`` as ``--aligned`` (landmarks on the degraded crop, face embedding,
``PeopleIndex.route``). Only the restoration itself is skipped (an identity restorer that delegates
the reference encoding to DMDNet), so the run costs what ``--method none`` costs.

Printed: at the defaults, the share of faces matched to their own person, given *somebody else's*
references (must be ≤ 1%), and sent to generic; the same faces as strangers (their own person removed
from the people folder: any match is wrong); the genuine and impostor distance distributions; and the
threshold/margin chosen from them by the procedure documented in ``facerestore_cli/people.py``
(2-fold cross-validation over people, then the same rule on everyone for the defaults).

``--embedder`` picks the face embeddings (``dlib``, the default, whose defaults this measured, or
``insightface[:pack]`` with its model pack on disk, whose defaults in ``identity.py`` come from
insightface's published guidance and are not measured yet: this run measures them, and its last table
says what the procedure would choose instead). The grid follows the embedder's distance scale.

    python bench/routing.py --threads 1 [--embedder dlib|insightface] [--limit N] [--out routing.json]
        [--dmdnet-weights FILE]
"""

from __future__ import annotations

import argparse
import json
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
#: A face given somebody else's references costs this many correctly matched faces.
WRONG_COST = 10
PCTS = (0, 1, 5, 25, 50, 75, 95, 99, 100)
#: The (threshold, margin) grid, step 0.01, per embedder family: dlib distances are mostly 0.2–0.8;
#: insightface's unit vectors are 0–2 apart (orthogonal = 1.41), so its grid spans 0.60–1.40.
GRIDS = {
    "dlib": (np.round(np.arange(0.30, 0.8001, 0.01), 2), np.round(np.arange(0.0, 0.2001, 0.01), 2)),
    "insightface": (np.round(np.arange(0.60, 1.4001, 0.01), 2), np.round(np.arange(0.0, 0.3001, 0.01), 2)),
}


def grid_for(embedder: str) -> tuple[np.ndarray, np.ndarray]:
    return GRIDS["insightface" if embedder.startswith("insightface") else "dlib"]


def embedder_defaults(embedder: str) -> tuple[float, float]:
    """The (threshold, margin) an embedder routes with by default (no model or pack is loaded)."""
    from facerestore_cli.face.identity import FaceEmbedder, InsightFaceEmbedder

    cls = InsightFaceEmbedder if embedder.startswith("insightface") else FaceEmbedder
    return cls.threshold, cls.margin


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
    parser.add_argument("--distances", type=Path, default=None, help="only re-run the tuning on a previous --out")
    parser.add_argument(
        "--embedder", default="dlib", help="face embeddings: dlib (default), insightface[:pack] or auto"
    )
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if args.distances:
        saved = json.loads(args.distances.read_text(encoding="utf-8"))
        names = saved["people"]
        own = np.array([names.index(person) for person, _ in saved["distance_matrix"]["rows"]])
        embedder_name = saved.get("embedder", "dlib")
        tuning_report(np.array(saved["distance_matrix"]["values"]), own, names, embedder=embedder_name)
        return 0

    from facerestore_cli.device import make_runtime
    from facerestore_cli.face.identity import EmbedderUnavailable
    from facerestore_cli.imagefile import Photo
    from facerestore_cli.pipeline import Pipeline, RestoreOptions
    from facerestore_cli.references.people import PeopleIndex
    from facerestore_cli.restore import create_restorer
    from facerestore_cli.weights import WeightsError

    people = london_pairs(args.data, args.limit)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="facerestore-routing-") as tmp:
        root = make_people_folder(Path(tmp) / "people", people)
        options = RestoreOptions(
            method="dmdnet", weights=args.dmdnet_weights, device=args.device, threads=args.threads,
            aligned=not args.detect, people=root, cache_dir=Path(tmp) / "cache", embedder=args.embedder,
        )  # fmt: skip
        try:
            runtime = make_runtime(args.device, None, args.threads)
            dmdnet = create_restorer("dmdnet", weights=args.dmdnet_weights, runtime=runtime, batch_size=1)
            pipeline = Pipeline(options, restorer=route_only_restorer(dmdnet), on_message=print)
            embedder = pipeline.embedder
        except (WeightsError, EmbedderUnavailable, ValueError) as exc:
            sys.exit(f"error: {exc}")
        threshold0, margin0 = embedder.threshold, embedder.margin
        print(f"embedder: {embedder.name} (defaults: threshold {threshold0}, margin {margin0})")
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
        predictor = pipeline.predictor

        probes: list[Probe] = []
        clean_d: list[float] = []
        mismatches = 0
        for p in people:
            gt = read_rgb(p.smiling)
            clean_d.append(
                float(np.linalg.norm(embedder.embed(gt, predictor.predict(gt)) - centroids[position[p.name]]))
            )
            for scale in SCALES:
                lq = degraded(gt, scale, p.index)
                result = pipeline.restore_photo(Photo(pixels=lq, format="png"))
                if not result.faces or not result.crops:
                    nan = np.full(embedder.dimension, np.nan, np.float32)
                    probes.append(Probe(position[p.name], scale, nan, None, "no face"))
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
    print(f"\n## Routing at the {embedder.name} defaults (threshold {threshold0}, margin {margin0})\n")
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
        rows.append(
            [f"x{scale}" if scale else "all", len(sel), _pct(c, len(sel)), _pct(w, len(sel)), _pct(g, len(sel))]
        )
    print(markdown_table(["album", "faces", "own person (accuracy)", "wrong person's refs", "generic"], rows))
    stranger_wrong = 0
    full = PeopleIndex(index.people, threshold0, margin0, embedder.name)
    for q in ok:
        others = [person for person in full.people if person.name != names[q.person]]
        rest = PeopleIndex(others, threshold0, margin0, embedder.name) if others else None
        if rest is not None and rest.route(q.embedding).person is not None:
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
    print(f"\n## {embedder.name} distances (face embedding to a person's centroid)\n")
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
    tuning = tuning_report(dist, own, names, embedder=embedder.name)

    write_json(
        args.out,
        {
            "embedder": embedder.name,
            "defaults": {"threshold": threshold0, "margin": margin0},
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
            **tuning,
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


def tuning_report(dist: np.ndarray, own: np.ndarray, names: list[str], *, embedder: str = "dlib") -> dict:
    """Print how the threshold and margin are chosen (see ``people.py``) and how well that generalises.

    The grid and the current defaults compared with the choice are ``embedder``'s.
    """
    thresholds, margins = grid_for(embedder)
    threshold0, margin0 = embedder_defaults(embedder)

    print(f"\n## Choosing the threshold and margin ({embedder})\n")
    print(
        "Rule (people.py): a face goes to its nearest person when distance ≤ threshold and the second nearest is\n"
        "at least margin further. Every album face is scored in three roles on the tuning people: known (its person\n"
        "is in the people folder: right only if it gets them), stranger (its person removed: any match is wrong),\n"
        "and against each other person alone (one-person folders, --refs: any match is wrong; margin plays no part).\n"
        f"Keep the (threshold, margin) of the {thresholds[0]:.2f}–{thresholds[-1]:.2f} × "
        f"{margins[0]:.2f}–{margins[-1]:.2f} grid (step 0.01) with ≤ {MAX_WRONG:.0%} wrong in every role;\n"
        f"maximise own-person matches − {WRONG_COST} × wrong-person matches (a wrong person's references are worse\n"
        "than none); among equally good cells take the one nearest the middle of their plateau. 2-fold\n"
        "cross-validation over people (alternate people in name order, then 200 random halvings) estimates\n"
        "how the choice generalises; the defaults are the procedure applied to all people."
    )
    people_idx = np.arange(len(names))
    folds = [people_idx[0::2], people_idx[1::2]]
    cv_rows, cv = [], []
    halves = [(folds[0], folds[1]), (folds[1], folds[0])] if len(names) >= 4 else []
    for k, (tune, test) in enumerate(halves):
        t, m, _ = choose(dist, own, tune, thresholds, margins)
        res = evaluate(dist, own, test, t, m)
        cv.append({"fold": k + 1, "threshold": t, "margin": m, **res})
        cv_rows.append(_cv_row(f"fold {k + 1}: {len(tune)} → {len(test)}", t, m, res))
    rng = np.random.default_rng(0)
    random_cv = []
    for _ in range(200 if len(names) >= 4 else 0):
        perm = rng.permutation(people_idx)
        tune, test = np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2 :])
        t, m, _ = choose(dist, own, tune, thresholds, margins)
        random_cv.append((t, m, evaluate(dist, own, test, t, m)))
    if random_cv:
        mean = {k: float(np.mean([r[k] for _, _, r in random_cv])) for k in random_cv[0][2]}
        ts, ms = [t for t, _, _ in random_cv], [m for _, m, _ in random_cv]
        cv_rows.append(
            [
                "200 random halvings (mean; threshold, margin p5–p95)",
                f"{np.percentile(ts, 5):.2f}–{np.percentile(ts, 95):.2f}",
                f"{np.percentile(ms, 5):.2f}–{np.percentile(ms, 95):.2f}",
                f"{100 * mean['correct'] / mean['known']:.1f}%", f"{100 * mean['wrong_known'] / mean['known']:.1f}%",
                f"{100 * mean['generic'] / mean['known']:.1f}%", f"{100 * mean['wrong_stranger'] / mean['known']:.1f}%",
                f"{100 * mean['pair_accept']:.2f}%",
            ]
        )  # fmt: skip
    print()
    print(
        markdown_table(
            ["held-out evaluation", "threshold", "margin", "own person", "wrong (known)", "generic",
             "wrong (strangers)", "wrong (one-person)"],
            cv_rows,
        )
    )  # fmt: skip
    t_all, m_all, res_all = choose(dist, own, people_idx, thresholds, margins)
    cur = evaluate(dist, own, people_idx, threshold0, margin0)
    print()
    print(
        markdown_table(
            ["on all people", "threshold", "margin", "own person", "wrong (known)", "generic", "wrong (strangers)",
             "wrong (one-person)"],
            [_cv_row("chosen", t_all, m_all, res_all), _cv_row(f"{embedder} defaults", threshold0, margin0, cur)],
        )
    )  # fmt: skip
    same = abs(t_all - threshold0) < 1e-9 and abs(m_all - margin0) < 1e-9
    print(
        f"\nthe {embedder} defaults are what this procedure chooses"
        if same
        else f"\nNOTE: this procedure chooses threshold {t_all:.2f}, margin {m_all:.2f}; the {embedder} defaults "
        f"are {threshold0}, {margin0} (dlib: people.py; insightface: identity.py)"
    )
    return {
        "cross_validation": cv,
        "random_halvings": [{"threshold": t, "margin": m, **r} for t, m, r in random_cv],
        "chosen": {"threshold": t_all, "margin": m_all, **res_all},
        "defaults_evaluated": cur,
    }


def _num(v: float) -> str:
    """Two decimals, three when the value has them (insightface's margin is 0.065)."""
    return f"{v:.2f}" if abs(round(v, 2) - v) < 1e-9 else f"{v:.3f}"


def _cv_row(label: str, t: float, m: float, res: dict) -> list[str]:
    k = res["known"]
    return [
        label, _num(t), _num(m), _pct(res["correct"], k), _pct(res["wrong_known"], k), _pct(res["generic"], k),
        _pct(res["wrong_stranger"], k), f"{100 * res['pair_accept']:.2f}%",
    ]  # fmt: skip


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
    """Counts at threshold(s) ``t`` and margin(s) ``m`` (scalars or broadcastable arrays).

    ``known``: faces of the gallery's people routed among them; ``wrong_stranger``: the same faces with
    their own person removed; ``pair_accept``: the share of (face, other person) pairs within ``t``,
    i.e. strangers against a one-person people folder (``--refs``), where the margin plays no part.
    """
    faces = np.flatnonzero(np.isin(own, gallery))
    best, d1, gap = _decide(dist, faces, gallery, own, stranger=False)
    t = np.asarray(t, dtype=np.float64)[..., None]
    m = np.asarray(m, dtype=np.float64)[..., None]
    take = (d1 <= t + 1e-9) & (gap >= m - 1e-9)
    hit = best == own[faces]
    _, s1, sgap = _decide(dist, faces, gallery, own, stranger=True)
    stake = (s1 <= t + 1e-9) & (sgap >= m - 1e-9)
    sub = dist[np.ix_(faces, gallery)]
    impostor = np.sort(sub[gallery[None, :] != own[faces][:, None]])
    pairs = np.searchsorted(impostor, t[..., 0] + 1e-9, side="right") / max(impostor.size, 1)
    out = {
        "known": len(faces),
        "correct": (take & hit).sum(-1),
        "wrong_known": (take & ~hit).sum(-1),
        "generic": (~take).sum(-1),
        "wrong_stranger": stake.sum(-1),
        "pair_accept": pairs,
    }
    return {k: (v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v) for k, v in out.items()}


def choose(
    dist: np.ndarray,
    own: np.ndarray,
    gallery: np.ndarray,
    thresholds: np.ndarray = GRIDS["dlib"][0],
    margins: np.ndarray = GRIDS["dlib"][1],
) -> tuple[float, float, dict]:
    """The procedure of ``people.py``: feasible, then most useful, then the middle of the best plateau."""
    tt, mm = np.meshgrid(thresholds, margins, indexing="ij")
    res = evaluate(dist, own, gallery, tt, mm)
    n = res["known"]
    feasible = (
        (res["wrong_known"] <= MAX_WRONG * n)
        & (res["wrong_stranger"] <= MAX_WRONG * n)
        & (res["pair_accept"] <= MAX_WRONG)
    )
    utility = res["correct"] - WRONG_COST * (res["wrong_known"] + res["wrong_stranger"])
    utility = np.where(feasible, utility, -np.inf)
    tied = np.argwhere(utility == utility.max())
    centre = tied.mean(axis=0)
    ti, mi = tied[np.argmin(((tied - centre) ** 2).sum(axis=1))]
    t, m = float(thresholds[ti]), float(margins[mi])
    return t, m, evaluate(dist, own, gallery, t, m)


def _pct(k: int, n: int) -> str:
    return f"{100.0 * k / n:.1f}% ({k}/{n})" if n else "n/a"


if __name__ == "__main__":
    sys.exit(main())
