"""Read the results store into pandas and summarise over seeds."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.provenance import code_version
from bench.store import RESULT, read_json

ID_COLUMNS = ("spec", "run_id", "status", "reason", "wall_time_s", "git_sha")
# provenance: which code (git sha, dirty tree, hash of `git diff HEAD`), where and when
PROVENANCE_COLUMNS = ("git_dirty", "git_diff_hash", "started_at", "finished_at")


def read_results(root: str | Path) -> list[tuple[Path, dict]]:
    """(path, parsed result.json) of every readable run folder under `root`, sorted by path."""
    out = []
    for path in sorted(Path(root).glob("**/" + RESULT)):
        res = read_json(path)
        if isinstance(res, dict) and isinstance(res.get("config"), dict):
            out.append((path, res))
    return out


def result_row(res: dict) -> dict:
    """One tidy row of a parsed result.json: ids, status, config.* columns, metrics, provenance."""
    row = {k: res.get(k) for k in ID_COLUMNS + PROVENANCE_COLUMNS}
    row["code_version"] = code_version(res)
    dev = res.get("device") if isinstance(res.get("device"), dict) else {}
    row.update({f"device.{k}": v for k, v in dev.items()})
    vers = res.get("versions") if isinstance(res.get("versions"), dict) else {}
    row.update({f"versions.{k}": v for k, v in vers.items()})
    row.update(_flatten(res["config"], "config"))
    metrics = res.get("metrics")
    row.update(metrics if isinstance(metrics, dict) else {})
    data = res.get("data") if isinstance(res.get("data"), dict) else {}
    row["realised_noise_rate"] = data.get("realised_rate")
    return row


RENAME = {"config.method.name": "method", "config.dataset.name": "dataset", "config.model.name": "model",
          "config.seed": "seed"}


def load_results(root: str | Path) -> pd.DataFrame:
    """One row per run folder under `root` (a results dir or a spec folder): config.* columns, metrics, status,
    provenance (git_sha, git_dirty, git_diff_hash, code_version, device.*, versions.*, started/finished_at)."""
    return results_frame(res for _, res in read_results(root))


def results_frame(results) -> pd.DataFrame:
    df = pd.DataFrame([result_row(res) for res in results])
    if not df.empty:
        df = df.rename(columns=RENAME)
    return df


EXPORT_FORMATS = ("csv", "parquet", "json")


def export_results(root: str | Path, fmt: str, output: str | Path | None = None) -> str:
    """Write `load_results(root)` (one tidy row per run) as csv | parquet | json to `output` (default
    results.<fmt> in the current folder); returns the path written. Parquet needs pyarrow."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"--format: got {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise RuntimeError("--format parquet needs pyarrow, which is not installed here "
                               "(pip install pyarrow), or use --format csv | json") from None
    df = load_results(root)
    path = Path(output) if output else Path(f"results.{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "json":
        df.to_json(path, orient="records", indent=1, force_ascii=False, double_precision=15)
    else:
        _parquet_safe(df).to_parquet(path, index=False)
    return str(path)


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding values of several types (e.g. int and str) as strings, None kept."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            kinds = {type(v) for v in out[c] if v is not None and not (isinstance(v, float) and v != v)}
            if len(kinds) > 1:
                out[c] = [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in out[c]]
    return out


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
