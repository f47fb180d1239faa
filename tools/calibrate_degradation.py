"""Fit the degradation estimate of ``facerestore_cli/face/degradation.py`` on synthetic degradations.

Every sampled training face (``../shared/data/train-faces``) is measured clean, after the small
resampling an alignment adds, and after random degradations spanning DMDNet eq. 19 and beyond (blur
σ 0-3, down-sampling 1-16, noise σ 0-15, JPEG 40-100, each factor sometimes off). The target need of
a version is how far it is from its clean face, as PSNR over the face box: 40 dB or more is "no
measurable degradation" (need 0), the x4 benchmark input's ~30 dB is need 1. A logistic model on the
measures is fitted to those soft targets; the printed weights go into ``degradation.py``.

    python tools/calibrate_degradation.py --faces 400 --versions 6 [--out /work/notes/calibration.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facerestore_cli.face.degradation import (  # noqa: E402
    FEATURES,
    FULL_NEED,
    MODEL_FILE,
    NO_HARM_NEED,
    measure,
    model_inputs,
    need_from,
)
from facerestore_cli.face.landmarks import ALIGNED_FACE_BOX  # noqa: E402
from facerestore_cli.train.degrade import DegradationParams, degrade  # noqa: E402

CLEAN_DB, FULL_DB = 40.0, 30.0


def face_psnr(a: np.ndarray, b: np.ndarray) -> float:
    n = a.shape[0]
    x0, y0, x1, y1 = (round(v * n / 512) for v in ALIGNED_FACE_BOX)
    d = a[y0:y1, x0:x1].astype(np.float64) - b[y0:y1, x0:x1].astype(np.float64)
    mse = float(np.mean(d**2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def target_need(psnr: float) -> float:
    return float(np.clip((CLEAN_DB - psnr) / (CLEAN_DB - FULL_DB), 0.0, 1.0))


def random_params(rng: np.random.Generator) -> DegradationParams:
    on = rng.random(4) < np.array([0.7, 0.7, 0.6, 0.7])
    return DegradationParams(
        blur_sigma=float(rng.uniform(0.3, 3.0)) if on[0] else 0.0,
        scale=float(np.exp(rng.uniform(0, np.log(16)))) if on[1] else 1.0,
        noise_sigma=float(rng.uniform(1, 15)) if on[2] else 0.0,
        jpeg_quality=int(rng.integers(40, 101)) if on[3] else None,
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def as_pipeline_sees(native: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A face of ``native`` size as the alignment gives it: enlarged (bilinear) to the 512 crop, with a
    small rotation, and the crop's scale (crop px per photo px) that the estimate is told."""
    n = native.shape[0]
    scale = 512 / n * rng.uniform(0.95, 1.05)
    m = cv2.getRotationMatrix2D((n / 2, n / 2), rng.uniform(-5, 5), scale)
    m[:, 2] += 256 - np.array([n / 2, n / 2]) * scale
    crop = cv2.warpAffine(native, m, (512, 512), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    return crop, scale


def realistic_clean(native: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sharp photo as cameras make them: a little sensor noise, sharpening, a high-quality JPEG."""
    out = native.astype(np.float32)
    if rng.random() < 0.6:
        blur = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.8, 1.5))
        out = out + rng.uniform(0.2, 0.8) * (out - blur)
    if rng.random() < 0.7:
        out = out + rng.normal(0, rng.uniform(0.5, 2.5), out.shape[:2])[..., None]
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if rng.random() < 0.7:
        _ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(88, 101))])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(out)


NATIVE_SIZES = (512, 384, 256, 192, 160)


def samples(files: list[Path], versions: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for n, path in enumerate(files):
        clean512 = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        for k in range(versions + 3):
            size = int(rng.choice(NATIVE_SIZES))
            clean = clean512 if size == 512 else cv2.resize(clean512, (size, size), interpolation=cv2.INTER_AREA)
            if k < 3:  # clean and camera-clean faces: nothing to restore
                img, need = (clean if k == 0 else realistic_clean(clean, rng)), 0.0
            else:
                img = degrade(clean, random_params(rng))
                need = target_need(face_psnr(img, clean))
            crop, scale = as_pipeline_sees(img, rng)
            xs.append(measure(crop, scale))
            ys.append(need)
        if n % 50 == 0:
            print(f"  {n}/{len(files)} faces", flush=True)
    return np.array(xs), np.array(ys)


def fit(x: np.ndarray, y: np.ndarray, steps: int = 4000, seed: int = 0) -> dict[str, list]:
    """The need model: standardised inputs, two tanh layers of 16, a logistic output; soft-target BCE."""
    inputs = model_inputs(x)
    mean, std = inputs.mean(0), inputs.std(0) + 1e-9
    xt = torch.tensor((inputs - mean) / std, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(xt.shape[1], 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
        torch.nn.Linear(16, 1),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt).squeeze(1), yt)
        loss.backward()
        opt.step()
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    out = {"mean": mean.tolist(), "std": std.tolist()}
    for k, layer in enumerate(layers, 1):
        out[f"w{k}"] = layer.weight.detach().double().tolist()
        out[f"b{k}"] = layer.bias.detach().double().tolist()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "train-faces")
    p.add_argument("--faces", type=int, default=400)
    p.add_argument("--versions", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    files = sorted(args.data.glob("*.jpg"))
    step = max(1, len(files) // args.faces)
    train_files = files[::step][: args.faces]
    print(f"measuring {len(train_files)} faces x {args.versions + 3} versions", flush=True)
    x, y = samples(train_files, args.versions, args.seed)
    order = np.random.default_rng(args.seed).permutation(len(x))
    train, test = order[: len(x) // 2], order[len(x) // 2 :]
    model = {k: np.asarray(v) for k, v in fit(x[train], y[train]).items()}
    report = evaluate(need_from(x[test], model), y[test])
    print("held-out half:", report)
    final = fit(x, y)
    MODEL_FILE.write_text(json.dumps({"features": FEATURES, "clean_db": CLEAN_DB, "full_db": FULL_DB,
                                      "faces": len(train_files), "samples": len(x), "held_out": report,
                                      "model": final}, indent=1) + "\n")  # fmt: skip
    print(f"wrote {MODEL_FILE}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"x": x.tolist(), "y": y.tolist()}))


def evaluate(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    clean, severe = y == 0, y >= 0.9
    return {
        "mean_abs_error": round(float(np.abs(pred - y).mean()), 4),
        "clean_need_p50": round(float(np.percentile(pred[clean], 50)), 4),
        "clean_need_p95": round(float(np.percentile(pred[clean], 95)), 4),
        "clean_below_no_harm": round(float(np.mean(pred[clean] < NO_HARM_NEED)), 4),
        "severe_need_p5": round(float(np.percentile(pred[severe], 5)), 4),
        "severe_at_full": round(float(np.mean(pred[severe] >= FULL_NEED)), 4),
    }


if __name__ == "__main__":
    main()
