"""Training engine: learning, CPU determinism, exact resume, non-finite loss, hooks, schedules, evaluate/predict."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.config import AugmentConfig, ModelConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from bench.data.tensors import ImageData
from bench.train import (CheckpointHook, EpochEnd, NonFiniteLoss, evaluate, fit, init_model, make_optimizer,
                         make_scheduler, predict, training_state)


def separable(n: int = 256, seed: int = 0) -> ImageData:
    """4 classes of 1x8x8 noisy images; class k has a bright 4x4 quadrant k."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randint(0, 60, (n, 1, 8, 8), generator=g)
    for k, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        x[y == k, :, r:r + 4, c:c + 4] += 150
    return ImageData(x.to(torch.uint8), y, mean=(0.3,), std=(0.3,))


def recipe(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=32, optimizer=OptimizerConfig(lr=0.05),
                schedule=ScheduleConfig(name="cosine", warmup_epochs=0.5))
    base.update(kw)
    return TrainConfig(**base)


def small(seed: int = 0) -> nn.Module:
    return init_model(ModelConfig("small_cnn", {"width": 8}), num_classes=4, in_chans=1, img_size=8, seed=seed)


def strip_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in history]


def test_fit_learns_a_separable_problem():
    data = separable()
    model = small()
    history = fit(model, data, recipe(epochs=4), seed=0, device="cpu", val=separable(64, seed=1), progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["train_acc"] >= 0.95 and history[-1]["val_acc"] >= 0.95
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s"} <= set(history[0])


def test_same_seed_gives_identical_history_and_weights():
    runs = []
    for _ in range(2):
        model = small()
        h = fit(model, separable(), recipe(augment=AugmentConfig(crop_padding=1, flip=True)), seed=3, device="cpu",
                progress=False)
        runs.append((strip_time(h), model.state_dict()))
    (h1, s1), (h2, s2) = runs
    assert h1 == h2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    model = small()  # another training seed changes the run
    h3 = fit(model, separable(), recipe(augment=AugmentConfig(crop_padding=1, flip=True)), seed=4, device="cpu",
             progress=False)
    assert strip_time(h3) != h1


def dropout_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(8 * 64, 4))


def test_resume_from_checkpoint_is_bit_identical(tmp_path):
    r = recipe(epochs=4, augment=AugmentConfig(crop_padding=2, flip=True))
    full = dropout_model()
    ckpt = tmp_path / "ck" / "last.pt"
    saved = {}

    def keep(end: EpochEnd) -> None:
        if end.epoch == 2:
            saved["state"] = torch.load(ckpt, weights_only=True)

    h_full = fit(full, separable(), r, seed=5, device="cpu", hooks=[CheckpointHook(ckpt, every=2), keep],
                 progress=False)
    assert saved["state"]["epoch"] == 2 and not list(ckpt.parent.glob("*.tmp"))

    resumed = dropout_model()
    h_rest = fit(resumed, separable(), r, seed=5, device="cpu", resume=saved["state"], progress=False)
    assert [h["epoch"] for h in h_rest] == [3, 4]
    assert strip_time(h_rest) == strip_time(h_full[2:])
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_state_is_a_snapshot():
    model = small()
    opt = make_optimizer(model, OptimizerConfig())
    sched = make_scheduler(opt, ScheduleConfig(), 1, 1)
    state = training_state(model, opt, sched, 1)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert not torch.equal(state["model"]["0.0.weight"], model.state_dict()["0.0.weight"])


def test_huge_lr_raises_non_finite_loss():
    r = recipe(epochs=2, optimizer=OptimizerConfig(lr=1e30), schedule=ScheduleConfig(name="constant"))
    calls = []
    with pytest.raises(NonFiniteLoss, match=r"epoch 1, step \d+/8: loss = (nan|inf)"):
        fit(small(), separable(), r, seed=0, device="cpu", hooks=[calls.append], progress=False)
    assert calls == []  # the bad epoch never reaches the hooks


def test_loss_fn_returning_nan_raises_with_its_step():
    def loss_fn(logits, y, idx):
        loss = nn.functional.cross_entropy(logits, y)
        return loss * float("nan") if fit_step[0] == 2 else loss

    fit_step = [0]

    def counting(logits, y, idx):
        fit_step[0] += 1
        return loss_fn(logits, y, idx)

    with pytest.raises(NonFiniteLoss, match=r"epoch 1, step 2/8: loss = nan"):
        fit(small(), separable(), recipe(), seed=0, device="cpu", loss_fn=counting, progress=False)


def test_hooks_once_per_epoch_and_can_add_metrics():
    seen = []
    data = separable()

    def hook(end: EpochEnd) -> None:
        seen.append(end.epoch)
        end.metrics["pred_acc"] = float((end.train_pred == data.y).float().mean())
        end.metrics["lr_now"] = end.scheduler.get_last_lr()[0]

    idx_seen = []
    loss_fn = lambda logits, y, idx: (idx_seen.append(idx), nn.functional.cross_entropy(logits, y))[1]
    history = fit(small(), data, recipe(epochs=3), seed=0, device="cpu", hooks=[hook], loss_fn=loss_fn,
                  progress=False)
    assert seen == [1, 2, 3]
    assert all("pred_acc" in h and "lr_now" in h for h in history)
    for h in history:  # train_pred is exactly what train_acc counted
        assert h["pred_acc"] == pytest.approx(h["train_acc"])
    epoch_idx = torch.cat(idx_seen).view(3, -1)
    assert all(sorted(row.tolist()) == list(range(len(data))) for row in epoch_idx)


def lrs(cfg: ScheduleConfig, epochs: int, steps: int, lr: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(opt, cfg, epochs, steps)
    out = []
    for _ in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_schedule_with_warmup_matches_hand_values():
    v = lrs(ScheduleConfig(name="cosine", warmup_epochs=0.4, min_lr_ratio=0.1), epochs=2, steps=5)  # 10 steps, 2 warmup
    assert v[0] == pytest.approx(0.05) and v[1] == pytest.approx(0.1) and v[2] == pytest.approx(0.1)
    assert v[6] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))  # halfway through the 8 cosine steps
    assert v[9] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8))))


def test_step_schedule_matches_hand_values():
    v = lrs(ScheduleConfig(name="step", milestones=[0.5, 0.8], gamma=0.1), epochs=2, steps=5)
    assert v == pytest.approx([0.1] * 5 + [0.01] * 3 + [0.001] * 2)


def test_onecycle_schedule_matches_hand_values_and_torch():
    v = lrs(ScheduleConfig(name="onecycle", pct_start=0.3), epochs=2, steps=5)
    assert v[0] == pytest.approx(0.1 / 25) and v[2] == pytest.approx(0.1) and v[9] == pytest.approx(0.1 / 25 / 1e4)
    assert v[1] == pytest.approx(0.1 / 25 + (0.1 - 0.1 / 25) * 0.5)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10, pct_start=0.3, cycle_momentum=False)
    expected = []
    for _ in range(10):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert v == pytest.approx(expected)


def test_constant_schedule_and_adamw_weight_decay_groups():
    assert lrs(ScheduleConfig(name="constant"), 1, 4) == pytest.approx([0.1] * 4)
    model = small()
    opt = make_optimizer(model, OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.05))
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.05
    split = make_optimizer(model, OptimizerConfig(), decay_norm_and_bias=False)
    assert split.param_groups[1]["weight_decay"] == 0.0
    assert all(p.ndim == 1 for p in split.param_groups[1]["params"])


def test_evaluate_and_predict_agree_and_restore_mode():
    data = separable(100)
    model = small()
    fit(model, data, recipe(epochs=1), seed=0, device="cpu", progress=False)
    model.train()
    logits = predict(model, data, batch_size=32)
    res = evaluate(model, data, batch_size=32)
    assert model.training
    assert logits.shape == (100, 4) and logits.dtype == torch.float32 and not logits.is_inference()
    assert res["acc"] == pytest.approx(float((logits.argmax(1) == data.y).float().mean()))
    assert res["loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, data.y)), rel=1e-5)
    assert torch.allclose(predict(model, data, batch_size=7), logits, atol=1e-5)  # batch size does not matter


class Recorder(nn.Module):
    """A linear model that keeps every training input it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 4)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.inputs.append(x.clone())
        return self.fc(x.flatten(1))


def test_epoch_batches_come_from_the_order_and_augment_streams_of_that_epoch():
    from bench.seeding import generator
    data, aug = separable(64), AugmentConfig(crop_padding=2, flip=True)
    model = Recorder()
    fit(model, data, recipe(epochs=2, batch_size=16, augment=aug), seed=9, device="cpu", progress=False)
    for epoch in (1, 2):
        expected = [x for x, _, _ in data.batches(16, shuffle=True, generator=generator(9, f"order/{epoch}"),
                                                  augment=aug, aug_generator=generator(9, f"augment/{epoch}"))]
        got = model.inputs[(epoch - 1) * 4:epoch * 4]
        assert all(torch.equal(a, b) for a, b in zip(got, expected)) and len(got) == 4
