"""The report from a hand-written results store: numbers against hand-computed ones, 'not run' rows, figures."""
from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from bench.cli import main as cli_main

SHA = "0123456789abcdef0123456789abcdef01234567"


def _config(spec, seed, method, dataset="cifar100", model="resnet18_cifar", noise=("none", 0.0), params=None,
            train_per_class=None):
    return {"spec": spec, "seed": seed, "device": "auto",
            "dataset": {"name": dataset, "noise": {"kind": noise[0], "rate": noise[1]}, "val_fraction": 0.1,
                        "train_per_class": train_per_class, "test_per_class": None, "seed": 0},
            "model": {"name": model, "kwargs": {}}, "method": {"name": method, "params": params or {}},
            "train": {"epochs": 4, "batch_size": 128, "optimizer": {"name": "sgd", "lr": 0.1}}}


def _write_run(root: Path, spec: str, rid: str, config: dict, metrics: dict | None, *, note="CIFAR-100",
               sizes=(45000, 5000, 10000), curve=None, status="done"):
    d = root / spec / rid
    d.mkdir(parents=True)
    res = {"run_id": rid, "spec": spec, "status": status, "config": config, "git_sha": SHA,
           "versions": {"torch": "2.x"}, "device": {"device": "cuda:0", "gpu": "NVIDIA H200", "host": "node1"},
           "data": {"note": note, "n_train": sizes[0], "n_val": sizes[1], "n_test": sizes[2], "realised_rate": 0.0},
           "wall_time_s": 1.0}
    if metrics is not None:
        res["metrics"] = metrics
    if status == "failed":
        res["reason"] = "RuntimeError: boom"
    (d / "result.json").write_text(json.dumps(res))
    if curve:
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
    return d


def _sweep(root: Path, spec: str, ids: list[str]):
    (root / spec).mkdir(parents=True, exist_ok=True)
    (root / spec / "sweep.json").write_text(json.dumps({"name": spec, "runs": ids, "spec": {"name": spec}}))


# Known numbers (fractions as stored; the report shows %)
FMN_NAIVE = [0.78, 0.79, 0.80]          # mean 79.00, std 1.00
FMN_KF_INF = [0.795, 0.800, 0.805]      # mean 80.00, std 0.50
FMN_JPG_NAIVE = [0.60, 0.62, 0.64]      # CIFAR-10 (JPEG) subset: a different setting
KNOW_NAIVE = [0.920, 0.925, 0.930]      # mean 92.50, std 0.50
KNOW_X2 = [0.930, 0.935, 0.940]         # mean 93.50, std 0.50
CF = {"plain_ft": ([0.50, 0.52, 0.54], [0.40, 0.42, 0.44]),
      "cf_replay": ([0.10, 0.12, 0.14], [0.38, 0.40, 0.42]),
      "contextual_replay": ([0.20, 0.22, 0.24], [0.37, 0.39, 0.41]),
      "real_replay": ([0.30, 0.31, 0.32], [0.36, 0.38, 0.40])}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    ids = []
    for seed in range(3):
        curve = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.2 * e, "val_acc": 0.2 * e + 0.01 * seed,
                  "val_loss": 1.0 / e, "forget_fraction": 0.05 * (4 - e)} for e in range(1, 5)]
        for m, vals in (("naive", FMN_NAIVE), ("kf_inf", FMN_KF_INF)):
            rid = f"fmn{m[:3]}{seed}"
            metrics = {"test_acc": vals[seed], **({"protocol": "test_half"} if m == "kf_inf" else {})}
            _write_run(root, "fmn", rid, _config("fmn", seed, m), metrics,
                       curve=curve if m == "naive" else None)
            ids.append(rid)
        rid = f"fmnjpg{seed}"
        _write_run(root, "fmn", rid, _config("fmn", seed, "naive", dataset="cifar10_jpg", model="small_cnn",
                                             noise=("symmetric", 0.2), train_per_class=500),
                   {"test_acc": FMN_JPG_NAIVE[seed]}, note="CIFAR-10 (JPEG)", sizes=(4500, 500, 1000), curve=curve)
        ids.append(rid)
    _write_run(root, "fmn", "fmnfailed0", _config("fmn", 7, "distilled_kf"), None, status="failed")
    _sweep(root, "fmn", ids + ["fmnfailed0"])

    ids = []
    for seed in range(3):
        for m, vals, scale in (("know_naive", KNOW_NAIVE, 1.0), ("know_x2", KNOW_X2, 2.0)):
            rid = f"know{m[-2:]}{seed}"
            params = {"source": {"name": "cifar100"}, "rate": 0.5}
            d = _write_run(root, "know_synth", rid, _config("know_synth", seed, m, dataset="cifar10", params=params),
                           {"test_acc": vals[seed], "scale": scale}, note="CIFAR-10")
            ids.append(rid)
            if m == "know_x2" and seed == 0:
                (d / "artifacts").mkdir()
                g = torch.Generator().manual_seed(0)
                torch.save({"trajectory": torch.cumsum(torch.randn(5, 30, generator=g), 0),
                            "predicted": torch.randn(3, 30, generator=g)}, d / "artifacts" / "trajectory_pca.pt")
    _sweep(root, "know_synth", ids)

    ids = []
    for seed in range(3):
        for arm, (forget, em) in CF.items():
            rid = f"cf{arm[:4]}{seed}"
            _write_run(root, "cf", rid, _config("cf", seed, arm, dataset="text", model="tiny_lm"),
                       {"forgetting_bpc": forget[seed], "task_em": em[seed]}, note="tinyshakespeare")
            ids.append(rid)
    _sweep(root, "cf", ids)

    out = tmp_path_factory.mktemp("report")
    assert cli_main(["report", str(root), "--out", str(out)]) == 0
    return out


def _csv(report: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(report / "tables" / f"{name}.csv", keep_default_na=False)


def _num(x) -> float:
    return float(x) if x not in ("", None) else math.nan


def test_forgetmenot_numbers_and_differences(report):
    t = _csv(report, "forgetmenot")
    naive = t[(t["method"] == "naive") & t["setting"].str.contains("CIFAR-100, resnet18_cifar")]
    assert len(naive) == 2  # matched by the predecessor's table and by Table II: one row per source
    for _, r in naive.iterrows():
        assert _num(r["mean"]) == pytest.approx(79.00)
        assert _num(r["std"]) == pytest.approx(1.00)  # sample std (ddof=1); ddof=0 would be 0.8165
        assert int(r["n"]) == 3
    pred = naive[naive["source"].str.contains("2412.12968")].iloc[0]
    assert _num(pred["published_value"]) == pytest.approx(78.07)
    assert _num(pred["diff"]) == pytest.approx(79.00 - 78.07)
    assert pred["diff_str"] == "+0.93"
    t2 = naive[naive["source"].str.contains("Table II")].iloc[0]
    assert _num(t2["diff"]) == pytest.approx(79.00 - 78.85)
    kf = t[(t["method"] == "kf_inf") & t["setting"].str.contains("CIFAR-100, resnet18_cifar")]
    pred_kf = kf[kf["source"].str.contains("2412.12968")].iloc[0]
    assert (_num(pred_kf["mean"]), _num(pred_kf["std"]), int(pred_kf["n"])) == \
        (pytest.approx(80.0), pytest.approx(0.5), 3)
    assert _num(pred_kf["diff"]) == pytest.approx(80.0 - 79.13)
    assert pred_kf["measured"] == "80.00 ± 0.50"
    assert "validation protocol: test_half" in pred_kf["setting_note"]


def test_different_setting_is_labelled_not_differenced(report):
    t = _csv(report, "forgetmenot")
    jpg = t[(t["method"] == "naive") & t["setting"].str.contains("CIFAR-10 \\(JPEG\\)")]
    assert len(jpg) == 1
    r = jpg.iloc[0]
    assert _num(r["mean"]) == pytest.approx(62.0) and _num(r["std"]) == pytest.approx(2.0)
    assert r["diff_str"] == "different setting" and math.isnan(_num(r["diff"]))
    assert _num(r["published_value"]) == pytest.approx(65.4)  # nearest: CIFAR-100 sym 20%, ResNet-18
    assert "subset" in r["setting_note"] and "cifar100" in r["setting_note"]
    md = (report / "index.md").read_text()
    assert "CIFAR-10 (JPEG)" in md and "4,500 train" in md


def test_missing_rows_say_not_run(report):
    t = _csv(report, "forgetmenot")
    for col in ("measured", "published", "diff_str"):
        assert (t[col].astype(str).str.strip() != "").all(), col
    ens = t[t["method"] == "ensemble"]
    assert len(ens) >= 2 and (ens["measured"] == "not run").all()
    distilled = t[(t["method"] == "distilled_kf")]
    assert (distilled["measured"] == "not run").all()  # its only run failed
    tin = t[t["setting"] == "TinyImageNet sym 40%, ResNet-18"]
    assert set(tin["method"]) == {"naive", "kf_inf"} and (tin["measured"] == "not run").all()
    assert (tin["diff_str"] == "not run").all()
    k = _csv(report, "know")
    x8 = k[(k["method"] == "know_x8") & (k["setting"].str.contains("resnet18_cifar"))].iloc[0]
    assert x8["measured"] == "not run" and x8["diff_str"] == "not run"
    assert _num(x8["published_value"]) == pytest.approx(93.55)
    md = (report / "tables" / "forgetmenot.md").read_text()
    assert "not run" in md and "| |" not in md.replace(" ", " ")
    assert "FAILED fmn/fmnfailed0" in (report / "index.md").read_text()


def test_know_numbers(report):
    k = _csv(report, "know")
    x2 = k[(k["method"] == "know_x2") & (k["source"].str.contains("top-1"))].iloc[0]
    assert (_num(x2["mean"]), _num(x2["std"]), int(x2["n"])) == (pytest.approx(93.5), pytest.approx(0.5), 3)
    assert _num(x2["diff"]) == pytest.approx(93.5 - 93.00)
    naive = k[(k["method"] == "naive") & (k["source"].str.contains("top-1")) & (k["n"] == 3)]
    assert len(naive) == 1 and _num(naive.iloc[0]["diff"]) == pytest.approx(92.5 - 92.40)
    grid = pd.read_csv(report / "tables" / "know_layout_1.csv", keep_default_na=False).set_index("row")
    assert "93.50 ± 0.50, Δ +0.50" in grid.loc["100%", "×2"]
    assert "not run" in grid.loc["50%", "×2"] and "not run" in grid.loc["100%", "×8"]


def test_contextfree_claim_and_values(report):
    c = _csv(report, "contextfree")
    cf = c[c["method"] == "cf_replay"].iloc[0]
    assert _num(cf["mean"]) == pytest.approx(0.12) and _num(cf["std"]) == pytest.approx(0.02)
    assert _num(cf["task_em_mean"]) == pytest.approx(40.0) and _num(cf["task_em_std"]) == pytest.approx(2.0)
    assert "qualitative" in cf["published"]
    assert (c[c["method"] == "wise_ft"]["measured"] == "not run").all()
    md = (report / "index.md").read_text()
    assert "cf_replay < contextual_replay: holds" in md and "cf_replay < real_replay: holds" in md


def test_latex_is_booktabs_and_escaped(report):
    tex = (report / "tables" / "forgetmenot.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"79.00 $\pm$ 1.00" in tex
    body = tex.split(r"\midrule")[1].replace(" & ", " ")  # cells only, not the column separators
    assert not re.search(r"(?<!\\)[%_&#]", body)  # every special character escaped


def test_figures_are_valid_images_and_embedded(report):
    figs = sorted((report / "figures").glob("*.png"))
    names = {p.stem for p in figs}
    for prefix in ("forgetmenot_curves_", "forgetmenot_methods", "know_scaling_", "know_trajectory_pca",
                   "contextfree_tradeoff_", "generic_fmn_test_acc", "generic_fmn_val_curves", "generic_cf_task_em"):
        assert any(n.startswith(prefix) for n in names), (prefix, names)
    html = (report / "index.html").read_text()
    for p in figs:
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] >= 600 and im.size[1] >= 400
        assert p.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
        assert base64.b64encode(p.read_bytes()).decode() in html, p.name
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', html)
    assert len(srcs) == len(figs) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "node1" in html and SHA in html and "fmnnai0" in html  # provenance: device, git sha, run ids


def test_empty_store_says_not_run_everywhere(tmp_path):
    from report.build import build_report
    (tmp_path / "store").mkdir()
    index = build_report(tmp_path / "store", tmp_path / "out")
    assert index.is_file() and (tmp_path / "out" / "index.md").is_file()
    for paper in ("forgetmenot", "know", "contextfree"):
        t = _csv(tmp_path / "out", paper)
        assert len(t) and (t["measured"] == "not run").all(), paper
        assert (t["diff_str"].astype(str).str.strip() != "").all()


def test_reference_matches_the_paper_cards():
    """Every published number in reference.csv is in the card's table (and every FMN card number is used)."""
    from bench.paths import PROJECT_ROOT
    papers = PROJECT_ROOT.parent / "shared" / "papers"
    if not (papers / "forgetmenot.md").is_file():
        pytest.skip(f"paper cards absent ({papers})")
    from report.tables import load_reference
    ref = load_reference()

    def numbers(card: str, start: str, end: str | None) -> list[float]:
        text = (papers / card).read_text()
        text = text.split(start, 1)[1]
        text = text.split(end, 1)[0] if end else text
        return [float(x) for x in re.findall(r"(?<![\d.])\d{2}\.\d{1,2}(?![\d.])", text)]

    fmn = numbers("forgetmenot.md", "## 6. Published numbers", "Seed headline")
    got = ref[ref["paper"] == "forgetmenot"]["value_num"].tolist()
    assert sorted(got) == sorted(fmn)
    know = numbers("know.md", "## 7. Published numbers", "PACS")
    for v in ref[ref["paper"] == "know"]["value_num"].dropna():
        assert v in know
    for v in ref[ref["paper"] == "know"]["std_num"].dropna():
        assert re.search(rf"± {v:.2f}", (papers / "know.md").read_text())
    assert ref[ref["paper"] == "contextfree"]["value_num"].isna().all()


def test_paper_assignment_and_pca():
    from methods.know.figures import _pca2
    from bench.paper import paper_of
    assert paper_of("naive") == "forgetmenot" and paper_of("know_naive") == "know"   # by registry, not spec name
    assert paper_of("cf_replay") == "contextfree" and paper_of("taskvector") == "know"
    assert paper_of("something_else") is None
    g = torch.Generator().manual_seed(1)
    traj = torch.randn(5, 40, generator=g).double().numpy()
    proj = _pca2(traj, traj)
    xc = traj - traj.mean(0)
    u, s, _ = torch.linalg.svd(torch.from_numpy(xc), full_matrices=False)
    ref = (u[:, :2] * s[:2]).numpy()
    assert abs(abs(proj) - abs(ref)).max() < 1e-8  # the same projection up to the sign of each component
