"""A synthetic results store of N runs, for timing `forgetbench report` / `forgetbench results` at cluster scale.

Real small results are the templates (`forgetbench run sweeps/smoke.yaml --out SRC` gives them: result.json,
metrics.jsonl, config.json, sweep.json); they are replicated over a grid of lr × epochs × weight decay × label
noise × method × seed with distinct run ids, in `--specs` spec folders. Besides the template's method (naive) a
share of the runs carries other papers' methods with plausible metrics (kf_inf, ensemble: Forget Me Not; know_naive,
know_x2: KNOW; plain_ft, cf_replay: context-free replay on a text task). A few runs have no metrics.jsonl
(`--no-curves`), a few failed (`--failed`); `--shas K` spreads the runs over K code versions.

    python scripts/make_synthetic_store.py --src /tmp/smoke_src --out /tmp/synth_1k --runs 1000
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import math
import random
import sys
from pathlib import Path

SEEDS = 5
METHODS = ("naive", "naive", "naive", "kf_inf", "ensemble", "know_naive", "know_x2", "plain_ft", "cf_replay")
NOISE = ({"kind": "none", "rate": 0.0}, {"kind": "symmetric", "rate": 0.2})
EPOCHS = (4, 6, 8, 10, 12, 16, 20, 30, 40, 50)
WEIGHT_DECAY = (5e-4, 1e-4)


def load_templates(src: Path) -> list[tuple[dict, list[dict]]]:
    """(result.json, metrics.jsonl rows) of every finished run under `src`."""
    out = []
    for path in sorted(src.glob("**/result.json")):
        res = json.loads(path.read_text())
        if res.get("status") != "done" or "config" not in res:
            continue
        m = path.parent / "metrics.jsonl"
        rows = [json.loads(ln) for ln in m.read_text().splitlines() if ln.strip()] if m.is_file() else []
        out.append((res, rows))
    if not out:
        sys.exit(f"no finished runs under {src}: run `forgetbench run sweeps/smoke.yaml --out {src}` first")
    return out


def grid(n: int):
    """(lr, epochs, wd, noise, method, seed) tuples, complete seed groups first; lr and epochs both vary (about
    sqrt(K) values each for K configurations), weight decay once those are used up."""
    per = len(NOISE) * len(METHODS) * SEEDS
    k = max(1, math.ceil(n / per))
    n_lr = max(2, math.ceil(math.sqrt(k)), math.ceil(k / (len(EPOCHS) * len(WEIGHT_DECAY))))
    lrs = [round(0.2 * 0.8 ** j, 6) for j in range(n_lr)]
    combos = [(lrs[j % n_lr], EPOCHS[(j // n_lr) % len(EPOCHS)],
               WEIGHT_DECAY[(j // (n_lr * len(EPOCHS))) % len(WEIGHT_DECAY)]) for j in range(k)]
    it = ((lr, ep, wd, noise, mi, s) for lr, ep, wd in combos for noise in NOISE for mi in range(len(METHODS))
          for s in range(SEEDS))
    return itertools.islice(it, n)


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def make_run(tpl: tuple[dict, list[dict]], spec: str, i: int, lr: float, epochs: int, wd: float, noise: dict,
             mi: int, seed: int, rng: random.Random, sha: str) -> tuple[dict, list[dict]]:
    res, rows = tpl
    method = METHODS[mi]
    res = copy.deepcopy(res)
    cfg = res["config"]
    cfg["spec"], cfg["seed"] = spec, seed
    cfg["train"]["epochs"], cfg["train"]["optimizer"]["lr"] = epochs, lr
    cfg["train"]["optimizer"]["weight_decay"] = wd
    cfg["dataset"]["noise"] = dict(noise)
    cfg["method"] = {"name": method, "params": {}}
    # a smooth response surface (best lr ~0.05, more epochs help), seed noise on top
    quality = 1.0 - 0.04 * abs(math.log(lr / 0.05)) - 0.3 / epochs - noise["rate"] * 0.3
    base = _clip(quality + rng.gauss(0, 0.01))
    metrics = dict(res.get("metrics") or {})
    metrics["epochs"] = epochs
    if method in ("plain_ft", "cf_replay"):
        cfg["dataset"] = {**cfg["dataset"], "name": "text", "noise": {"kind": "none", "rate": 0.0}}
        cfg["model"] = {"name": "tiny_lm", "kwargs": {}}
        forget = (0.5 if method == "plain_ft" else 0.12) * (1.5 - quality) + rng.gauss(0, 0.01)
        metrics = {"forgetting_bpc": forget, "task_em": _clip(0.4 * quality + rng.gauss(0, 0.01)),
                   "epochs": epochs}
        res["data"] = {"note": "tinyshakespeare (synthetic copy)", "n_train": 4000, "n_val": 400, "n_test": 400,
                       "realised_rate": 0.0}
        rows = []
    elif method.startswith("know_"):
        cfg["method"]["params"] = {"rate": 0.5}
        gain = 0.01 if method == "know_x2" else 0.0
        metrics.update(test_acc=_clip(base + gain), val_acc=_clip(base + gain - 0.005),
                       scale=2.0 if method == "know_x2" else 1.0)
    else:
        gain = {"kf_inf": 0.01, "ensemble": 0.015}.get(method, 0.0)
        metrics.update(test_acc=_clip(base + gain), val_acc=_clip(base + gain - 0.005))
        if method == "kf_inf":
            metrics["protocol"] = "test_half"
    rid = hashlib.sha256(f"{spec}/{i}".encode()).hexdigest()[:12]
    res.update(run_id=rid, spec=spec, metrics=metrics, git_sha=sha, pid=10000 + i,
               wall_time_s=abs(rng.gauss(epochs * 0.05, 0.01)))
    res.pop("reason", None)
    curve = []
    if rows:
        last = rows[-1]
        for e in range(1, epochs + 1):
            t = e / epochs
            r = dict(rows[min(len(rows) - 1, int(t * (len(rows) - 1)))])
            r["epoch"] = e
            r["val_acc"] = _clip(metrics["val_acc"] * (1 - math.exp(-4 * t)) / (1 - math.exp(-4)))
            r["train_acc"] = _clip(r["val_acc"] + 0.02)
            r["lr"] = lr * 0.5 * (1 + math.cos(math.pi * t))
            r["forget_fraction"] = float(last.get("forget_fraction", 0.0)) * (1 - t) + rng.random() * 0.01
            curve.append(r)
    return res, curve


def build(src: Path, out: Path, n: int, specs: int, no_curves: float, failed: float, shas: int,
          seed: int) -> int:
    rng = random.Random(seed)
    templates = load_templates(src)
    sha0 = templates[0][0].get("git_sha", "unknown")
    versions = [sha0] + [hashlib.sha1(f"{sha0}{k}".encode()).hexdigest() for k in range(1, shas)]
    ids: dict[str, list[str]] = {}
    names = [f"synth_{k}" for k in range(specs)]
    for i, (lr, epochs, wd, noise, mi, s) in enumerate(grid(n)):
        spec = names[(i // (SEEDS * len(METHODS))) % specs]  # complete seed groups stay in one spec
        tpl = templates[(i + s) % len(templates)]
        res, curve = make_run(tpl, spec, i, lr, epochs, wd, noise, mi, s, rng, versions[i % len(versions)])
        if rng.random() < failed:
            res.update(status="failed", reason="RuntimeError: synthetic failure")
            res.pop("metrics", None)
        d = out / spec / res["run_id"]
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"run_id": res["run_id"], **res["config"]}, indent=2,
                                                  sort_keys=True) + "\n")
        if curve and rng.random() >= no_curves:
            (d / "metrics.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in curve))
        (d / "result.json").write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
        ids.setdefault(spec, []).append(res["run_id"])
    for spec, rids in ids.items():
        (out / spec / "sweep.json").write_text(json.dumps(
            {"name": spec, "runs": rids, "spec": {"name": spec, "description": f"synthetic copy of {src} "
                                                  f"({len(rids)} runs)"}}, indent=2) + "\n")
    return sum(map(len, ids.values()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, required=True, help="a real results store (e.g. of sweeps/smoke.yaml)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--specs", type=int, default=2, help="spec folders the runs are spread over")
    p.add_argument("--no-curves", type=float, default=0.02, help="share of runs without metrics.jsonl")
    p.add_argument("--failed", type=float, default=0.005, help="share of failed runs")
    p.add_argument("--shas", type=int, default=1, help="code versions (git shas) the runs are spread over")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.out.exists() and any(a.out.iterdir()):
        sys.exit(f"{a.out} exists and is not empty")
    n = build(a.src, a.out, a.runs, a.specs, a.no_curves, a.failed, a.shas, a.seed)
    print(f"{n} runs in {a.specs} spec folder(s) under {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
