"""Splits: per-class counts and fractions, class filter, stratified disjoint val, test carving, errors, determinism."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
import torch

from bench.config import DataConfig, SpecError
from bench.data import DATASETS, load_splits
from bench.data.registry import RawData, Source
from bench.data.splits import rank_within_class, stratified_holdout


class Indexed(Source):
    """A fake source whose image i stores i in its pixels, so rows can be traced through every split."""
    name = kind = "_indexed"
    note = "indexed test source"
    mean, std = (0.5,), (0.5,)
    # class c has 20 + 5c train examples, 10 test examples each; classes 0..3
    train_counts = [20, 25, 30, 35]

    def fingerprint(self, path: Optional[Path], cache_dir: Optional[Path] = None) -> str:
        return "0" * 64

    def decode(self, path) -> RawData:
        ytr = torch.cat([torch.full((n,), c) for c, n in enumerate(self.train_counts)])
        ytr = ytr[torch.randperm(len(ytr), generator=torch.Generator().manual_seed(0))]  # interleaved
        yte = torch.arange(40) % 4
        return RawData(self._x(len(ytr), 0), ytr, self._x(40, 1000), yte, ["a", "b", "c", "d"])

    @staticmethod
    def _x(n: int, start: int) -> torch.Tensor:
        ids = torch.arange(start, start + n)
        x = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
        x[:, 0, 0, 0], x[:, 0, 0, 1] = ids % 256, ids // 256
        return x


def ids(data) -> list[int]:
    x = data.x.long()
    return (x[:, 0, 0, 0] + 256 * x[:, 0, 0, 1]).tolist()


@pytest.fixture()
def indexed(monkeypatch):
    monkeypatch.setitem(DATASETS._items, Indexed.name, Indexed())
    return Indexed


def cfg(**kw) -> DataConfig:
    return DataConfig(name="_indexed", **{"val_fraction": 0.0, **kw})


def test_train_per_class_int_gives_exact_counts(indexed, cache_dir):
    s = load_splits(cfg(train_per_class=20, test_per_class=3), cache_dir=cache_dir)
    assert torch.bincount(s.train.y).tolist() == [20] * 4 and torch.bincount(s.test.y).tolist() == [3] * 4
    assert len(set(ids(s.train))) == 80  # distinct rows


def test_train_per_class_fraction_rounds_per_class(indexed, cache_dir):
    s = load_splits(cfg(train_per_class=0.5), cache_dir=cache_dir)
    assert torch.bincount(s.train.y).tolist() == [10, 13, 15, 18]  # round(0.5 * [20, 25, 30, 35]), halves up


def test_too_many_per_class_names_field_and_available(indexed, cache_dir):
    with pytest.raises(SpecError) as e:
        load_splits(cfg(train_per_class=21), cache_dir=cache_dir)
    assert e.value.path == "dataset.train_per_class" and "at most 20" in str(e.value)
    with pytest.raises(SpecError) as e:
        load_splits(cfg(test_per_class=11), cache_dir=cache_dir)
    assert e.value.path == "dataset.test_per_class"
    with pytest.raises(SpecError, match="dataset.train_per_class"):
        load_splits(cfg(train_per_class=1.5), cache_dir=cache_dir)


def test_class_filter_relabels_in_given_order_and_names_follow(indexed, cache_dir):
    full = load_splits(cfg(), cache_dir=cache_dir)
    s = load_splits(cfg(classes=[3, 1]), cache_dir=cache_dir)
    assert s.num_classes == 2 and s.train.classes == ["d", "b"] and s.meta["classes"] == ["d", "b"]
    assert ids(s.train) == [i for i, y in zip(ids(full.train), full.train.y.tolist()) if y in (3, 1)]
    orig = dict(zip(ids(full.train), full.train.y.tolist()))
    assert all({3: 0, 1: 1}[orig[i]] == y for i, y in zip(ids(s.train), s.train.y.tolist()))
    assert torch.bincount(s.test.y).tolist() == [10, 10]
    with pytest.raises(SpecError) as e:
        load_splits(cfg(classes=[0, 4]), cache_dir=cache_dir)
    assert e.value.path == "dataset.classes[1]"


def test_val_is_stratified_and_disjoint_from_train(indexed, cache_dir):
    full = load_splits(cfg(), cache_dir=cache_dir)
    s = load_splits(cfg(val_fraction=0.2), cache_dir=cache_dir)
    assert torch.bincount(s.val.y).tolist() == [4, 5, 6, 7]  # 0.2 of each class
    tr, va = set(ids(s.train)), set(ids(s.val))
    assert not tr & va and tr | va == set(ids(full.train)) and s.meta["n_val"] == 22
    assert not set(ids(s.test)) & (tr | va)
    assert s.val.mean == (0.5,) and s.val.x.dtype == torch.uint8
    empty = load_splits(cfg(val_fraction=0.0), cache_dir=cache_dir)
    assert len(empty.val) == 0 and empty.val.x.shape[1:] == (1, 2, 2)


def test_val_held_out_of_the_per_class_subset(indexed, cache_dir):
    s = load_splits(cfg(train_per_class=20, val_fraction=0.1), cache_dir=cache_dir)
    assert torch.bincount(s.train.y).tolist() == [18] * 4 and torch.bincount(s.val.y).tolist() == [2] * 4


def test_same_cfg_identical_tensors_other_seed_other_split(indexed, cache_dir):
    a = load_splits(cfg(val_fraction=0.3, train_per_class=0.8), cache_dir=cache_dir)
    b = load_splits(cfg(val_fraction=0.3, train_per_class=0.8), cache_dir=cache_dir)
    c = load_splits(cfg(val_fraction=0.3, train_per_class=0.8, seed=1), cache_dir=cache_dir)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y) and a.meta == b.meta
    assert ids(a.val) != ids(c.val)


def test_single_split_test_carved_stratified_with_test_split(cache_dir):
    s = load_splits(DataConfig(name="digits", test_split=0.5, val_fraction=0.0), cache_dir=cache_dir)
    full = torch.bincount(torch.cat([s.train.y, s.test.y]), minlength=10)
    assert torch.bincount(s.test.y, minlength=10).tolist() == torch.floor(full * 0.5 + 0.5).long().tolist()
    assert s.meta["test_split"] == 0.5 and "single" in s.meta["note"]


def test_test_split_on_two_split_dataset_warns(indexed, cache_dir):
    with pytest.warns(UserWarning, match="test_split"):
        s = load_splits(cfg(test_split=0.3), cache_dir=cache_dir)
    assert len(s.test) == 40 and s.meta["test_split"] is None


def test_rank_within_class_is_a_permutation_per_class():
    y = torch.tensor([2, 0, 2, 1, 2, 0])
    r = rank_within_class(y, 3, torch.Generator().manual_seed(0))
    for c in range(3):
        assert sorted(r[y == c].tolist()) == list(range(int((y == c).sum())))
    held = stratified_holdout(y, 3, 0.5, torch.Generator().manual_seed(0))
    assert torch.bincount(y[held], minlength=3).tolist() == [1, 1, 2]  # round(0.5*[2,1,3]) halves up


def test_meta_is_json_ready(indexed, cache_dir):
    import json
    s = load_splits(cfg(val_fraction=0.1), cache_dir=cache_dir)
    assert json.loads(json.dumps(s.meta)) == s.meta
    assert {"dataset", "source_hash", "n_train", "n_val", "n_test", "noise_kind", "noise_rate",
            "realised_rate", "note"} <= set(s.meta)
