"""Turn a finished training run into the shipped compact weights, their ONNX graphs, and their
MANIFEST.json entries.

    python tools/ship_weights.py dmdnet /work/train/dmdnet-compact.safetensors \
        --command "facerestore train dmdnet ..." [--command "..."]
    python tools/ship_weights.py dmdnet --onnx-only     # re-export the graphs of the shipped file

The ONNX graphs (``weights/<stem>.<graph>.onnx``, see ``facerestore_cli/weights/onnx.py``) are exported
from the shipped file itself, so they hold exactly its numbers; each gets a manifest entry with its own
sha256 and the weights' sha256, opset and exporter version, which is what the runtime checks.

The training run's own metadata (config, steps, wall time, validation figures) goes into the manifest
with the exact commands that produced the file (a run resumed with a changed schedule lists each one).
Machine-specific paths in the metadata are replaced by the paths of the repository's layout, so the file
says how to reproduce it, not where it was made.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facerestore_cli.weights import file_sha256, load_weights, locate_weights, save_weights, update_manifest
from facerestore_cli.weights.onnx import export_onnx

REPO = Path(__file__).resolve().parents[1]
DATA = "../shared/data/train-faces"
LICENCE = (
    "non-commercial research use only: trained by facerestore with this code on ../shared/data/train-faces "
    "(StyleGAN samples from an FFHQ-trained model, non-commercial; generated portraits, research use only)"
)


def _portable(value: object, method: str) -> object:
    if isinstance(value, dict):
        return {k: _portable(v, method) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("/"):
        if value.rstrip("/").endswith("train-faces"):
            return DATA
        if "/data/eval-dev/" in value:
            return "../shared/data/eval-dev/" + value.split("/data/eval-dev/", 1)[1]
        if value.endswith(".safetensors"):
            return f"{method}-compact.safetensors"
        if value.endswith((".work", "/work")):
            return f"{method}-compact.work"
    return value


def ship(method: str, trained: Path, commands: list[str], notes: str | None) -> dict:
    loaded = load_weights(trained, verify=False)
    meta = _portable(dict(loaded.metadata), method)
    training = dict(meta.get("training", {}))
    training["commands"] = commands
    training["data"] = f"{DATA} (1,389 aligned 512x512 faces; every 50th held out for validation)"
    meta["training"] = training
    name = f"{method}-compact.safetensors"
    out = REPO / "weights" / name
    save_weights(loaded.tensors, out, meta, half=True)
    entry = {
        "sha256": file_sha256(out, use_cache=False),
        "size": out.stat().st_size,
        "method": method,
        "config": meta["config"],
        "dtype": "float16",
        "format_version": meta.get("format_version", 1),
        "training": training,
        "validation": meta.get("validation", {}),
        "perceptual": meta.get("perceptual"),
        "licence": LICENCE,
    }
    if notes:
        entry["notes"] = notes
    update_manifest(out.parent, name, entry)
    ship_onnx(method)
    return entry


def ship_onnx(method: str) -> dict[str, str]:
    """Export every ONNX graph of the shipped ``<method>-compact.safetensors`` next to it; graph -> sha256."""
    folder = REPO / "weights"
    location = locate_weights(method, folder / f"{method}-compact.safetensors")
    files = export_onnx(method, location, folder=folder)
    return {graph: file_sha256(path, use_cache=False) for graph, path in files.paths.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=["dmdnet", "memgan"])
    parser.add_argument("trained", type=Path, nargs="?")
    parser.add_argument("--command", action="append", help="a command of the run, in order")
    parser.add_argument("--notes")
    parser.add_argument("--onnx-only", action="store_true", help="only (re-)export the shipped file's ONNX graphs")
    args = parser.parse_args()
    if args.onnx_only:
        print(json.dumps(ship_onnx(args.method), indent=1))
        return
    if args.trained is None or not args.command:
        parser.error("a trained file and at least one --command are needed (or --onnx-only)")
    entry = ship(args.method, args.trained, args.command, args.notes)
    print(json.dumps({k: entry[k] for k in ("sha256", "size", "method")}, indent=1))


if __name__ == "__main__":
    main()
