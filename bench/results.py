"""Read the results store into pandas and summarise over seeds."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.store import RESULT, read_json

ID_COLUMNS = ("spec", "run_id", "status", "reason", "wall_time_s", "git_sha")


def load_results(root: str | Path) -> pd.DataFrame:
    """One row per run folder under `root` (a results dir or a spec folder): config.* columns, metrics, status."""
    rows = []
    for path in sorted(Path(root).glob("**/" + RESULT)):
        res = read_json(path)
        if not res or "config" not in res:
            continue
        row = {k: res.get(k) for k in ID_COLUMNS}
        row.update(_flatten(res["config"], "config"))
        row.update(res.get("metrics") or {})
        row["realised_noise_rate"] = (res.get("data") or {}).get("realised_rate")
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.rename(columns={"config.method.name": "method", "config.dataset.name": "dataset",
                                "config.model.name": "model", "config.seed": "seed"})
    return df


def _flatten(d: dict, prefix: str) -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v if not isinstance(v, list) else str(v)
    return out


def summarize(df: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Mean, std and n of `metric` over seeds, grouped by every config column that varies (seed excluded)."""
    done = df[df["status"] == "done"] if "status" in df else df
    if done.empty or metric not in done:
        return pd.DataFrame()
    config_cols = [c for c in ("dataset", "model", "method") if c in done]
    config_cols += [c for c in done.columns if c.startswith("config.") and c != "config.spec"
                    and done[c].astype(str).nunique() > 1]
    config_cols = list(dict.fromkeys(config_cols))
    g = done.groupby(config_cols, dropna=False, sort=False)[metric]
    out = g.agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index()
    out.columns = [c.removeprefix("config.") for c in out.columns]
    return out


def format_table(summary: pd.DataFrame, metric: str = "test_acc", scale: float = 100.0) -> str:
    """A Markdown table with `mean ± std` (in %, by default) and n."""
    if summary.empty:
        return "(no finished runs)"
    t = summary.copy()
    t[metric] = [f"{m * scale:.2f} ± {0.0 if pd.isna(s) else s * scale:.2f}" for m, s in zip(t["mean"], t["std"])]
    t = t.drop(columns=["mean", "std"])
    return t.to_markdown(index=False)
