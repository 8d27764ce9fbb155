"""Benchmark: training K ensemble members sequentially with `fit` vs in one vmapped pass (`bench.batched`).

Same process, same model, data, recipe and member seeds for both; each side is a full training of all K members
(model construction included, validation off). One untimed warm-up of each side on a small subset first; with
--repeats > 1 the order alternates (sequential first, then batched first, ...) and the median is reported. Also
prints the largest relative weight difference between the two results: they agree to float rounding at first,
but rounding differences grow with training, fast when training is chaotic (high lr, random labels: there a 1e-7
perturbation of the initial weights moves the result just as much), so read it with tests/test_ensemble.py's
tolerance checks, not as a pass/fail (in float64 the two agree to ~1e-15; see the float64 test there).

    python scripts/bench_ensemble.py                                        # K=4 small_cnn w32, 2000 synthetic 3x32x32
    python scripts/bench_ensemble.py --data digits --width 8 --epochs 3
    python scripts/bench_ensemble.py --device cuda --model resnet18_cifar --n 10000 --k 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.batched import batched_fit
from bench.config import ModelConfig, TrainConfig, parse
from bench.data.tensors import ImageData
from bench.device import resolve_device
from bench.train import fit, init_model


def load_data(args: argparse.Namespace, device: torch.device) -> ImageData:
    if args.data == "synthetic":
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (args.n, 3, args.img_size, args.img_size), dtype=torch.uint8, generator=g)
        # learnable labels (argmax of a fixed random linear map of the pixels): random labels make training chaotic,
        # so that the sequential and batched weights would drift apart from float rounding alone
        proj = torch.randn(x[0].numel(), 10, generator=g)
        y = (x.flatten(1).float() / 255 - 0.5).matmul(proj).argmax(1)
        return ImageData(x, y, (0.5,) * 3, (0.25,) * 3).to(device)
    from bench.config import DataConfig
    from bench.data import load_splits
    train = load_splits(DataConfig(name=args.data, val_fraction=0.0), device=device).train
    return train.subset(torch.arange(min(args.n, len(train)), device=train.device)) if args.n else train


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--data", default="synthetic", help="synthetic or a registered dataset name (e.g. digits)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05, help="SGD (momentum 0.9, nesterov, weight decay 5e-4)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (both sides)")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    device = resolve_device(args.device)
    data = load_data(args, device)
    recipe = parse(TrainConfig, {"epochs": args.epochs, "batch_size": args.batch_size, "amp": args.amp,
                                 "channels_last": False, "augment": {"crop_padding": 2, "flip": True},
                                 "optimizer": {"name": "sgd", "lr": args.lr},
                                 "schedule": {"name": "cosine", "warmup_epochs": 0.5}}, "train")
    mc = ModelConfig(name=args.model, kwargs={"width": args.width})
    seeds = list(range(args.k))

    def make(s: int) -> torch.nn.Module:
        return init_model(mc, num_classes=data.num_classes, in_chans=data.x.shape[1], img_size=data.x.shape[-1],
                          seed=s).to(device)

    def sequential(d: ImageData, r: TrainConfig) -> list[torch.nn.Module]:
        models = [make(s) for s in seeds]
        for m, s in zip(models, seeds):
            fit(m, d, r, seed=s, device=device, progress=False)
        return models

    def batched(d: ImageData, r: TrainConfig) -> list[torch.nn.Module]:
        models = [make(s) for s in seeds]
        batched_fit(models, d, r, seeds=seeds, device=device, progress=False)
        return models

    def timed(fn) -> tuple[float, list[torch.nn.Module]]:
        sync(device)
        t0 = time.perf_counter()
        models = fn(data, recipe)
        sync(device)
        return time.perf_counter() - t0, models

    warm = data.subset(torch.arange(min(256, len(data)), device=data.device))
    warm_recipe = parse(TrainConfig, {**{"epochs": 1, "batch_size": args.batch_size, "amp": args.amp,
                                         "channels_last": False}}, "train")
    sequential(warm, warm_recipe)
    batched(warm, warm_recipe)

    times: dict[str, list[float]] = {"sequential": [], "batched": []}
    results: dict[str, list[torch.nn.Module]] = {}
    for r in range(args.repeats):
        order = ("sequential", "batched") if r % 2 == 0 else ("batched", "sequential")
        for name in order:
            t, models = timed(sequential if name == "sequential" else batched)
            times[name].append(t)
            results[name] = models
    diff = 0.0
    for a, b in zip(results["sequential"], results["batched"]):
        sa, sb = a.state_dict(), b.state_dict()
        for key in sa:
            if sa[key].is_floating_point():
                diff = max(diff, float((sa[key] - sb[key]).abs().max() / sa[key].abs().max().clamp_min(1e-12)))
    seq, bat = statistics.median(times["sequential"]), statistics.median(times["batched"])
    threads = torch.get_num_threads() if device.type == "cpu" else None
    print(f"device={device} threads={threads} model={args.model} width={args.width} data={args.data} "
          f"n={len(data)} img={tuple(data.x.shape[1:])} epochs={args.epochs} batch={args.batch_size} K={args.k} "
          f"repeats={args.repeats}")
    print(f"sequential fit x{args.k}: {seq:.2f} s   batched (vmap): {bat:.2f} s   speed-up: {seq / bat:.2f}x   "
          f"max relative weight difference: {diff:.1e}")


if __name__ == "__main__":
    main()
