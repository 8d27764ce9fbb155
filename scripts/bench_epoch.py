"""Overhead benchmark: one training epoch of the engine's `fit` against a bare PyTorch loop, same process.

Both train the same architecture (same init) on the same data with the same batch size, SGD (momentum 0.9,
weight decay 5e-4, constant lr), plain cross-entropy, random-permutation batching and no augmentation. The bare
loop reads pre-normalised float tensors (its most favourable case); the engine gathers uint8 and normalises per
batch and also keeps its per-sample bookkeeping. Each engine epoch is a full `fit(..., epochs=1)` call (setup
included). Epochs alternate (engine/bare, then bare/engine, ...) after one untimed warm-up of each.

    python scripts/bench_epoch.py                                   # small_cnn, 5000 synthetic 3x32x32, CPU
    python scripts/bench_epoch.py --data digits --n 1500            # a registered dataset via load_splits
    python scripts/bench_epoch.py --model resnet18_cifar --device cuda --amp --channels-last --data cifar10_jpg
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

from bench.config import ModelConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from bench.data.tensors import ImageData
from bench.device import resolve_device
from bench.train import fit, init_model


def load_data(args: argparse.Namespace, device: torch.device) -> ImageData:
    if args.data == "synthetic":
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (args.n, args.channels, args.img_size, args.img_size), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (args.n,), generator=g)
        return ImageData(x, y, (0.5,) * args.channels, (0.25,) * args.channels).to(device)
    try:
        from bench.data import load_splits
        from bench.config import DataConfig
    except ImportError as e:  # the data layer is optional for this script
        raise SystemExit(f"--data {args.data} needs bench.data.load_splits ({e}); use --data synthetic")
    train = load_splits(DataConfig(name=args.data, val_fraction=0.0), device=device).train
    return train.subset(torch.arange(min(args.n, len(train)), device=train.device)) if args.n else train


def bare_epoch(model, opt, X, Y, batch_size, gen, amp, channels_last, device):
    """The reference: ~15 lines of plain PyTorch."""
    n = X.shape[0]
    perm = torch.randperm(n, generator=gen).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    model.train()
    for i in range(0, n, batch_size):
        idx = perm[i:i + batch_size]
        x, y = X[idx], Y[idx]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--model-kwargs", default="{}", help="JSON dict of model kwargs")
    p.add_argument("--data", default="synthetic", help="'synthetic' or a registered dataset (e.g. digits, cifar10_jpg)")
    p.add_argument("--n", type=int, default=5000, help="training samples (0 = all of a real dataset)")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=7, help="timed epochs of each (median reported); >= 5")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--channels-last", action="store_true", help="channels_last (CUDA only)")
    p.add_argument("--progress", action="store_true", help="keep the engine's progress bar on")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave)")
    args = p.parse_args()
    import json

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    amp, channels_last = cuda and args.amp, cuda and args.channels_last
    data = load_data(args, device)
    num_classes, in_chans, img_size = max(data.num_classes, 2), data.x.shape[1], data.x.shape[-1]
    mcfg = ModelConfig(args.model, json.loads(args.model_kwargs))
    make = lambda: init_model(mcfg, num_classes=num_classes, in_chans=in_chans, img_size=img_size, seed=0).to(device)

    recipe = TrainConfig(epochs=1, batch_size=args.batch_size,
                         optimizer=OptimizerConfig(name="sgd", lr=0.01, momentum=0.9, nesterov=False,
                                                   weight_decay=5e-4),
                         schedule=ScheduleConfig(name="constant"), amp=args.amp, channels_last=args.channels_last)
    engine_model = make()

    bare_model = make()
    if channels_last:
        bare_model = bare_model.to(memory_format=torch.channels_last)
    bare_opt = torch.optim.SGD(bare_model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scale, shift = data.normalization()
    X = data.x.float() * scale + shift  # pre-normalised once: the bare loop does no per-batch conversion
    Y = data.y
    gen = torch.Generator().manual_seed(0)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def time_engine(i: int) -> float:
        sync()
        t = time.perf_counter()
        fit(engine_model, data, recipe, seed=i, device=device, progress=args.progress)
        sync()
        return time.perf_counter() - t

    def time_bare() -> float:
        sync()
        t = time.perf_counter()
        bare_epoch(bare_model, bare_opt, X, Y, args.batch_size, gen, amp, channels_last, device)
        sync()
        return time.perf_counter() - t

    print(f"model={args.model} data={args.data} n={len(data)} shape={tuple(data.x.shape[1:])} "
          f"batch={args.batch_size} device={device} amp={amp} channels_last={channels_last} "
          f"threads={torch.get_num_threads()}", flush=True)
    time_engine(-1), time_bare()  # warm-up (allocator, kernels, mkldnn primitives)
    engine, bare = [], []
    for i in range(max(args.epochs, 5)):
        if i % 2 == 0:
            engine.append(time_engine(i))
            bare.append(time_bare())
        else:
            bare.append(time_bare())
            engine.append(time_engine(i))
    me, mb = statistics.median(engine), statistics.median(bare)
    print("engine epochs (s):", " ".join(f"{t:.3f}" for t in engine))
    print("bare   epochs (s):", " ".join(f"{t:.3f}" for t in bare))
    print(f"median engine {me:.4f} s  bare {mb:.4f} s  ratio engine/bare {me / mb:.3f}")


if __name__ == "__main__":
    main()
