"""Seconds per face on a GPU: torch fp16, onnxruntime CUDA (fp16) and TensorRT (fp16), batch 1 and 8.

    python bench/gpu_speed.py [--device cuda:0] [--repeats K] [--batches 1,8] [--json FILE]

For each restorer (DMDNet generic, DMDNet with a cached dictionary, MemGAN) and batch size, one
process measures the median of ``--repeats`` timed calls after warm-up calls (TensorRT builds its
engines during the warm-up, once per shape, into the user cache folder; the first run is therefore
slow and later ones are not). Outputs are compared with torch's, so a fast but wrong provider shows.
On a machine without a CUDA GPU (or without onnxruntime-gpu) the missing columns are skipped with
a message, and the script exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from facerestore_cli.device import DeviceError, cuda_provider_usable, make_runtime
from facerestore_cli.restore import create_restorer


def faces() -> tuple[np.ndarray, np.ndarray]:
    """An aligned face and its landmarks: the golden DMDNet face when the shared data is there, else
    scikit-image's astronaut through our own pipeline."""
    shared = os.environ.get("FACERESTORE_SHARED")
    golden = Path(shared or "/nonexistent") / "golden" / "dmdnet"
    if golden.is_dir():
        import cv2

        bgr = cv2.imread(str(golden / "inputs" / "lq" / "00005_17.png"), cv2.IMREAD_UNCHANGED)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.loadtxt(golden / "lq_landmarks.txt")
    from skimage import data

    from facerestore_cli.face.align import align_face
    from facerestore_cli.face.detect import create_detector
    from facerestore_cli.face.landmarks import default_predictor

    rgb = data.astronaut()
    crop = align_face(rgb, create_detector("retinaface").detect(rgb)[0].landmarks).image
    return crop, default_predictor().predict(crop)


def _time(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    try:
        torch_rt = make_runtime(args.device, half=True)
    except DeviceError as exc:
        print(f"skipped: no CUDA GPU for torch ({exc})")
        return 0
    import onnxruntime as ort
    import torch

    backends = {"torch fp16": torch_rt}
    if cuda_provider_usable():
        os.environ["FACERESTORE_TENSORRT"] = "0"
        backends["onnxruntime CUDA fp16"] = make_runtime(args.device, True, backend="onnxruntime")
        if "TensorrtExecutionProvider" in ort.get_available_providers():
            backends["onnxruntime TensorRT fp16"] = make_runtime(args.device, True, backend="onnxruntime")
        else:
            print("skipped TensorRT: this onnxruntime has no TensorrtExecutionProvider")
    else:
        print(f"skipped onnxruntime: no CUDA provider (providers: {', '.join(ort.get_available_providers())})")

    crop, marks = faces()
    rows = []
    restorers: dict[tuple[str, str], object] = {}
    for name, rt in backends.items():
        os.environ["FACERESTORE_TENSORRT"] = "1" if "TensorRT" in name else "0"
        for method in ("dmdnet", "memgan"):
            restorers[method, name] = create_restorer(method, runtime=rt, batch_size=max(batches))
            info = restorers[method, name].info
            print(f"{name}: {method} on {info.device} {info.dtype} {info.providers or ''}", flush=True)
    refs = restorers["dmdnet", "torch fp16"].encode_references(np.stack([crop[:, ::-1].copy(), crop]),
                                                               np.stack([marks] * 2))  # fmt: skip
    for batch in batches:
        x, lm = np.stack([crop] * batch), np.stack([marks] * batch)
        variants = {
            "dmdnet generic": lambda r, x=x, lm=lm: r.restore(x, lm),
            "dmdnet + cached refs (2)": lambda r, x=x, lm=lm: r.restore(x, lm, refs),
            "memgan": lambda r, x=x, lm=lm: r.restore(x, lm),
        }
        for variant, call in variants.items():
            method = variant.split()[0]
            reference = call(restorers[method, "torch fp16"])
            base = None
            for name in backends:
                restorer = restorers[method, name]
                restorer.batch_size = batch
                os.environ["FACERESTORE_TENSORRT"] = "1" if "TensorRT" in name else "0"

                def run(r=restorer, c=call):
                    c(r)
                    torch.cuda.synchronize()

                seconds = _time(run, args.repeats, args.warmup) / batch
                base = base or seconds
                diff = float(np.nanmax(np.abs(call(restorer) - reference)))
                rows.append({"restorer": variant, "batch": batch, "backend": name, "s_per_face": seconds,
                             "vs_torch_fp16": base / seconds, "max_abs_vs_torch": diff})  # fmt: skip
                print(f"| {variant} | {batch} | {name} | {seconds:.4f} | {base / seconds:.2f}x | {diff:.2e} |",
                      flush=True)  # fmt: skip
    print(f"\n{torch.cuda.get_device_name(torch_rt.device)}, torch {torch.__version__}, onnxruntime {ort.__version__}")
    print("| restorer | batch | backend | s / face | speed-up vs torch fp16 | max abs vs torch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['restorer']} | {r['batch']} | {r['backend']} | {r['s_per_face']:.4f} | "
              f"{r['vs_torch_fp16']:.2f}x | {r['max_abs_vs_torch']:.2e} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
