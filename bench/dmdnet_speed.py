"""DMDNet inference speed on this CPU: our port against the official way of running the same network.

``python bench/dmdnet_speed.py [--threads N] [--repeats K] [--refs 3,10,19]``

Both networks have the official size (``Config()``: ngf 64, 128 generic items) and the same random
weights:

* **official**: our module with every conv wrapped in hook-style ``torch.nn.utils.spectral_norm``
  (eval mode: ``weight_orig / (u . W v)`` recomputed on every forward), run with the plain modules in
  NCHW, which is how the official code runs. With references it does what ``main_test`` does: encode
  the R references, then one generic forward and one generic+specific forward.
* **ours**: the same state dict through :func:`convert_official` (spectral norm folded), run in
  ``eval()`` under ``torch.inference_mode()``, i.e. the fused CPU path; with references a single
  forward with a cached specific dictionary. ``ours (plain)`` is the folded network with the fused
  path switched off, to show what folding alone gives.

All variants run in one process, interleaved (A B C ... A B C ...), after a warm-up of each model.
Every round runs the single forwards, the official runs with references, then the single forwards
again, so those get twice the samples. The table gives medians of wall-clock and of process CPU time.
On a loaded machine the wall-clock times also measure the scheduler, so read the CPU-time ratios (with
one thread they are the time the work itself takes). Inputs: the golden LQ and references with their
landmarks (``$FACERESTORE_SHARED/golden/dmdnet``, else ``<repo>/../shared/golden/dmdnet``); without
them, noise images with the golden boxes (the timing does not depend on the pixels).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facerestore_cli.models.dmdnet import network as D

REPO = Path(__file__).resolve().parent.parent
#: The golden boxes (LQ, then the three references), used when the golden data is not available.
FALLBACK_BOXES = {
    "lq": [[150, 190, 231, 271], [278, 190, 357, 269], [217, 275, 283, 342], [193, 313, 312, 432]],
    "refs": [
        [[151, 188, 232, 269], [277, 182, 363, 268], [229, 273, 297, 341], [202, 316, 318, 433]],
        [[152, 190, 231, 268], [274, 184, 359, 268], [228, 277, 291, 340], [203, 324, 303, 424]],
        [[146, 186, 229, 269], [268, 178, 363, 273], [195, 271, 277, 352], [191, 335, 302, 447]],
    ],
}
REF_NAMES = ("0.png", "1.png", "10.png")


def golden_dir() -> Path:
    shared = os.environ.get("FACERESTORE_SHARED")
    return (Path(shared) if shared else REPO.parent / "shared") / "golden" / "dmdnet"


def read_face(path: Path) -> torch.Tensor:
    """The official pre-processing: BGR2RGB, /255 in float64, float32, (x - 0.5) / 0.5."""
    import cv2

    rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy((rgb / 255.0).astype(np.float32)).permute(2, 0, 1)[None]
    return (x - 0.5) / 0.5


def load_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """LQ (1, 3, 512, 512), its boxes (1, 4, 4), the 3 references and their boxes, and where they came from."""
    folder = golden_dir()
    if (folder / "lq_landmarks.txt").is_file():
        lq = read_face(folder / "inputs" / "lq" / "00005_17.png")
        boxes = torch.from_numpy(D.component_boxes(np.loadtxt(folder / "lq_landmarks.txt")))[None]
        refs = torch.cat([read_face(folder / "inputs" / "refs" / n) for n in REF_NAMES])
        ref_boxes = torch.from_numpy(
            np.stack([D.component_boxes(np.loadtxt(folder / "refs_landmarks" / f"{n}.txt")) for n in REF_NAMES])
        )
        return lq, boxes, refs, ref_boxes, str(folder)
    gen = torch.Generator().manual_seed(0)
    lq = torch.rand(1, 3, 512, 512, generator=gen) * 2 - 1
    refs = torch.rand(3, 3, 512, 512, generator=gen) * 2 - 1
    boxes = torch.tensor(FALLBACK_BOXES["lq"])[None]
    return lq, boxes, refs, torch.tensor(FALLBACK_BOXES["refs"]), "noise images (golden data not found)"


def official_state_dict(config: D.Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random official-format state dict: hook-style spectral-norm entries for every conv (including
    E_hq's unused query networks), u and v from 20 power iterations, N(0, 1) generic dictionary."""
    gen = torch.Generator().manual_seed(seed)
    shapes = D._official_keys(config)
    sd: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith(".weight_orig"):
            fan_in = int(np.prod(shape[1:]))
            w = torch.randn(shape, generator=gen, dtype=torch.float64) * (1.0 / fan_in) ** 0.5
            wm = w.reshape(shape[0], -1)
            v = torch.nn.functional.normalize(torch.randn(wm.shape[1], generator=gen, dtype=torch.float64), dim=0)
            for _ in range(20):
                u = torch.nn.functional.normalize(wm @ v, dim=0)
                v = torch.nn.functional.normalize(wm.t() @ u, dim=0)
            prefix = key[: -len(".weight_orig")]
            sd[key] = w.float()
            sd[prefix + ".weight_u"] = u.float()
            sd[prefix + ".weight_v"] = v.float()
        elif key.endswith(".bias"):
            sd[key] = torch.randn(shape, generator=gen) * 0.01
        elif key.endswith(("_mem_key", "_mem_value")):
            sd[key] = torch.randn(shape, generator=gen)
    return sd


def official_model(config: D.Config, state: dict[str, torch.Tensor]) -> D.DMDNet:
    """The network as the official code runs it: hook-style spectral norm on every conv, plain modules."""
    model = D.DMDNet(config)
    for module in list(model.modules()):
        if isinstance(module, nn.Conv2d):
            nn.utils.spectral_norm(module)
    own = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)  # E_hq queries are unused
    model.fused_inference = False
    return model.eval().requires_grad_(False)


def our_model(config: D.Config, state: dict[str, torch.Tensor], fused: bool = True) -> D.DMDNet:
    folded, cfg = D.convert_official(state)
    assert cfg == config
    model = D.DMDNet(cfg)
    model.load_state_dict(folded, strict=True)
    model.fused_inference = fused
    return model.eval().requires_grad_(False)


def measure(
    light: dict[str, Callable[[], object]], heavy: dict[str, Callable[[], object]], repeats: int
) -> dict[str, tuple[float, float]]:
    """Median (wall, cpu) seconds per variant over ``repeats`` rounds of light, heavy, light."""
    variants = {**light, **heavy}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}

    def timed(block: dict[str, Callable[[], object]]) -> None:
        for name, fn in block.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)

    with torch.inference_mode():
        for fn in light.values():  # warm-up (oneDNN kernels, allocator) of every model and path
            fn()
        for r in range(repeats):
            timed(light)
            timed(heavy)
            timed(light)
            print(f"  round {r + 1}/{repeats} done, load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in variants}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (after one warm-up)")
    parser.add_argument("--refs", default="3,10,19", help="numbers of references, comma-separated")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref_counts = [int(r) for r in args.refs.split(",") if r.strip()]

    config = D.Config()
    state = official_state_dict(config)
    official = official_model(config, state)
    ours = our_model(config, state)
    plain = our_model(config, state, fused=False)
    del state
    lq, boxes, refs3, ref_boxes3, source = load_inputs()

    def refs_of(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = [i % refs3.shape[0] for i in range(n)]
        return refs3[idx], ref_boxes3[idx]

    with torch.inference_mode():
        out_off = official(lq, boxes)
        out_ours = ours(lq, boxes)
        out_plain = plain(lq, boxes)
        assert ours.uses_fused_path(lq) or not D.fused_convolutions_available()
        dicts = {n: ours.encode_references(*refs_of(n)) for n in ref_counts}
    agree = float((out_off - out_ours).abs().max())
    agree_plain = float((out_off - out_plain).abs().max())

    def official_with_refs(n: int) -> Callable[[], object]:
        def run() -> None:
            specific = official.encode_references(*refs_of(n))
            official(lq, boxes)
            official(lq, boxes, specific)

        return run

    light: dict[str, Callable[[], object]] = {
        "official generic": lambda: official(lq, boxes),
        "ours (plain) generic": lambda: plain(lq, boxes),
        "ours generic": lambda: ours(lq, boxes),
    }
    heavy: dict[str, Callable[[], object]] = {}
    for n in ref_counts:
        light[f"ours cached R={n}"] = lambda n=n: ours(lq, boxes, dicts[n])
        heavy[f"official refs R={n}"] = official_with_refs(n)

    load_before = os.getloadavg()
    print(f"measuring {len(light) + len(heavy)} variants x {args.repeats} rounds ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    med = measure(light, heavy, args.repeats)
    total = time.perf_counter() - t0
    load_after = os.getloadavg()

    print("DMDNet inference speed (official size: ngf 64, 128 generic items; 1 face of 512x512, fp32 CPU)")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {torch.get_num_threads()}")
    print(f"fused path available: {D.fused_convolutions_available()}; inputs: {source}")
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} ({os.cpu_count()} CPUs); "
        f"medians of {args.repeats} interleaved rounds ({2 * args.repeats} samples of single forwards), "
        f"{total:.0f} s in all"
    )
    print(f"max |ours - official| on the generic output: fused {agree:.2e}, plain {agree_plain:.2e}")
    print()
    header = f"{'variant':<26}{'wall s':>9}{'cpu s':>9}   comparison"
    print(header)
    print("-" * (len(header) + 44))

    def row(name: str, note: str = "") -> None:
        w, c = med[name]
        print(f"{name:<26}{w:>9.2f}{c:>9.2f}   {note}")

    def ratio(a: str, b: str) -> str:
        return f"{med[a][0] / med[b][0]:.2f}x wall, {med[a][1] / med[b][1]:.2f}x cpu"

    row("official generic")
    row("ours (plain) generic", f"official / plain: {ratio('official generic', 'ours (plain) generic')}")
    row("ours generic", f"official / ours: {ratio('official generic', 'ours generic')}  (goal >= 1.3x)")
    for n in ref_counts:
        row(f"official refs R={n}", "encode R refs + generic forward + generic+specific forward")
        row(
            f"ours cached R={n}",
            f"official / ours: {ratio(f'official refs R={n}', f'ours cached R={n}')}; "
            f"cached / generic: {ratio(f'ours cached R={n}', 'ours generic')}  (goal <= 1.1x)",
        )


if __name__ == "__main__":
    main()
