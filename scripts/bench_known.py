"""Time KNOWN prediction for a ResNet-18 (card section 7: the paper reports 3.01 s).

Builds `resnet18_cifar` (10 classes), makes a synthetic 5-snapshot trajectory of its conv/linear weights
(Θ0 plus small decaying perturbations), and times `KnownExtrapolator.predict(window, steps)` — by default
steps=1 (one ×2 prediction, the paper's unit) and steps=3 (×2, ×4, ×8) — reporting the median of `--repeats`.

    python scripts/bench_known.py [--weights official|PATH] [--repeats 5] [--chunk 2048] [--threads N]
                                  [--device cpu|cuda] [--steps 1 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.config import ModelConfig  # noqa: E402
from bench.know import KINDS, KnownExtrapolator, KnownNet, WeightLayout, load_known  # noqa: E402
from bench.train import init_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="official", help="official | a .pt checkpoint | random")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 3])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    model = init_model(ModelConfig(name="resnet18_cifar"), num_classes=10, in_chans=3, img_size=32, seed=0)
    layout = WeightLayout.of(model)
    theta0 = layout.flatten(model.state_dict())
    g = torch.Generator().manual_seed(0)
    window = {}
    for k in KINDS:
        noise = torch.randn(theta0[k].shape, generator=g) * 1e-3
        # most forgotten first, Θ0 last
        window[k] = torch.stack([theta0[k] + noise * 2.0 ** (4 - s) for s in range(5)]).to(device)
    nets = {k: KnownNet() for k in KINDS} if args.weights == "random" else load_known(args.weights)
    ex = KnownExtrapolator(nets, chunk=args.chunk, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    n = sum(v.shape[1] for v in window.values())
    report = {"n_weights": n, "sizes": {k: int(v.shape[1]) for k, v in window.items()},
              "threads": torch.get_num_threads(), "device": str(device), "chunk": args.chunk, "timings": {}}
    ex.predict({k: v[:, :1024] for k, v in window.items()}, 1)  # warm-up
    for steps in args.steps:
        times = []
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            ex.predict(window, steps)
            sync()
            times.append(time.perf_counter() - t0)
        report["timings"][f"steps={steps}"] = {"median_s": statistics.median(times), "min_s": min(times),
                                               "all_s": [round(t, 3) for t in times]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
