"""KF's bookkeeping overhead: the base run with and without per-epoch prediction recording + epoch checkpoints.

Trains the same model/data/recipe alternately with the Forget Me Not hooks (softmax on val and test every epoch,
weights to disk every epoch) and without them, in one process; prints median wall times, their ratio, and the
time of the KF selection itself (kf_select on the recorded predictions).

    python scripts/bench_kf_overhead.py --data cifar10_jpg --per-class 1000 --epochs 10 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.config import DataConfig, ModelConfig, TrainConfig, parse
from bench.data import load_splits
from methods.forgetmenot.selection import kf_select
from bench.stages import PredictionRecorder, save_weights
from bench.train import fit, init_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="cifar10_jpg")
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    data = load_splits(parse(DataConfig, {"name": args.data, "train_per_class": args.per_class,
                                          "test_per_class": 200, "val_fraction": 0.1}, "dataset"))
    recipe = parse(TrainConfig, {"epochs": args.epochs, "batch_size": 128, "optimizer": {"lr": 0.05},
                                 "augment": {"crop_padding": 2, "flip": True}}, "train")
    mcfg = ModelConfig("small_cnn", {"width": args.width})

    def train(with_hooks: bool) -> float:
        model = init_model(mcfg, num_classes=data.num_classes, in_chans=data.in_chans, img_size=data.img_size, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            hooks = []
            rec = None
            if with_hooks:
                rec = PredictionRecorder(Path(tmp) / "preds", {"val": data.val, "test": data.test}, 1024)
                hooks = [rec, save_weights(Path(tmp) / "ckpt")]
            t0 = time.perf_counter()
            fit(model, data.train, recipe, seed=0, device="cpu", val=data.val, hooks=hooks, progress=False)
            if rec is not None:
                rec.consolidate(args.epochs)
            elapsed = time.perf_counter() - t0
            if rec is not None:
                probs = torch.load(Path(tmp) / "preds" / "val.pt", weights_only=True).float()
                t1 = time.perf_counter()
                kf_select(probs, data.val.y, window=1, iterate=True)
                train.kf_select_s.append(time.perf_counter() - t1)
        return elapsed
    train.kf_select_s = []

    plain, hooked = [], []
    for r in range(args.repeats):
        for with_hooks in ((False, True) if r % 2 == 0 else (True, False)):
            (hooked if with_hooks else plain).append(train(with_hooks))
    mp, mh = statistics.median(plain), statistics.median(hooked)
    print(f"n_train={len(data.train)} n_val={len(data.val)} n_test={len(data.test)} epochs={args.epochs}")
    print("plain  (s):", " ".join(f"{t:.2f}" for t in plain))
    print("hooked (s):", " ".join(f"{t:.2f}" for t in hooked))
    print(f"median plain {mp:.2f} s, with KF bookkeeping {mh:.2f} s, overhead {100 * (mh / mp - 1):.1f}%;"
          f" kf_inf selection {statistics.median(train.kf_select_s) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
