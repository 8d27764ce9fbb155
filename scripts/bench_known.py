"""Time KNOWN prediction for a ResNet-18 (card section 7: the paper reports 3.01 s).

Builds `resnet18_cifar` (10 classes), makes a synthetic 5-snapshot trajectory of its conv/linear weights
(Θ0 plus small decaying perturbations), and times `KnownExtrapolator.predict(window, steps)` — by default
steps=1 (one ×2 prediction, the paper's unit) and steps=3 (×2, ×4, ×8) — reporting the median of `--repeats`,
for each `--backend` (the fused C++ kernel and the PyTorch path).

It also measures this machine's float32 matmul peak (a 2048² sgemm with the same threads) and reports the
roofline floor: KNOWN's multiply-adds (7,440 per scalar, both streams, packed) at that peak — no float32
implementation of the exact function can beat it on this machine.

    python scripts/bench_known.py [--weights official|PATH] [--repeats 5] [--chunk 2048] [--threads N]
                                  [--device cpu|cuda] [--steps 1 3] [--backend kernel torch]
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
from methods.know.known import KINDS, KNOWN_BACKENDS, KnownExtrapolator, KnownNet, WeightLayout, load_known  # noqa: E402
from bench.train import init_model  # noqa: E402


def macs_per_scalar(net: KnownNet) -> int:
    """Multiply-adds of one scalar through the packed KNOWN (`KnownNet.packed`): both streams' matmuls + head."""
    w = net.packed()
    return sum(t.numel() for t in [w["k_in"], *w["k_mid"], *w["k5"], w["k_head"]])


def roofline(n_weights: int, sync) -> dict:
    """Measured float32 sgemm peak (GFLOP/s, best of 5) and the time KNOWN's multiply-adds need at that peak."""
    a = torch.randn(2048, 2048)
    torch.mm(a, a)
    best = min(_timed(lambda: torch.mm(a, a), sync) for _ in range(5))
    gflops = 2 * 2048 ** 3 / best / 1e9
    flop = 2 * macs_per_scalar(KnownNet()) * n_weights
    return {"sgemm_gflops": round(gflops, 1), "known_gflop_per_step": round(flop / 1e9, 1),
            "floor_s_per_step": round(flop / (gflops * 1e9), 4)}


def _timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="official", help="official | a .pt checkpoint | random")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--backend", nargs="+", default=["kernel", "torch"], choices=KNOWN_BACKENDS)
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
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    n = sum(v.shape[1] for v in window.values())
    report = {"n_weights": n, "sizes": {k: int(v.shape[1]) for k, v in window.items()},
              "threads": torch.get_num_threads(), "device": str(device), "chunk": args.chunk, "timings": {}}
    if device.type == "cpu":
        report["roofline"] = roofline(n, sync)
    outputs = {}
    for backend in args.backend:
        ex = KnownExtrapolator(nets, chunk=args.chunk, device=device, backend=backend)
        ex.predict({k: v[:, :1024] for k, v in window.items()}, 1)  # warm-up (and the kernel's first build)
        for steps in args.steps:
            times = [_timed(lambda: ex.predict(window, steps), sync) for _ in range(args.repeats)]
            med = statistics.median(times)
            row = {"median_s": round(med, 4), "min_s": round(min(times), 4), "all_s": [round(t, 3) for t in times]}
            if "roofline" in report:
                row["fraction_of_peak"] = round(report["roofline"]["floor_s_per_step"] * steps / med, 3)
            report["timings"][f"{backend} steps={steps}"] = row
        outputs[backend] = ex.predict(window, 1)
    if len(outputs) > 1:   # the backends compute the same function
        first, *rest = outputs.values()
        report["max_abs_diff_between_backends"] = max(float((first[k] - o[k]).abs().max()) for o in rest
                                                      for k in KINDS if first[k].numel())
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
