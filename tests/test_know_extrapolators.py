"""Extrapolators on hand-made trajectories with closed-form answers; nested subsets of the forgetting stage."""
from __future__ import annotations

import pytest
import torch

from methods.know.extrapolate import ExpFit, KnownExtrapolator, TaskVector

from methods.know.known import KnownNet

from methods.know.trajectory import nested_subsets


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _window(values: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"conv": values, "fc": values[:, :3].clone(), "bias": values[:, :0]}


def test_taskvector_linear_trajectory_continues_the_line() -> None:
    s = torch.arange(5.0).unsqueeze(1)
    slope = torch.tensor([[0.5, -1.0, 0.0, 2.0]])
    w = 0.1 + s * slope                                   # most forgotten first, Θ0 last
    pred = TaskVector(1.0).predict(_window(w), 3)
    want = 0.1 + torch.arange(5.0, 8.0).unsqueeze(1) * slope
    assert torch.allclose(pred["conv"], want, atol=1e-6)
    assert pred["fc"].shape == (3, 3) and pred["bias"].shape == (3, 0)
    # λ = 0.5, one step: Θ0 + 0.5 (Θ0 − Θ1)
    one = TaskVector(0.5).predict({"conv": w}, 1)["conv"][0]
    assert torch.allclose(one, w[-1] + 0.5 * (w[-1] - w[-2]))


@pytest.mark.parametrize("q", [0.5, 0.8, 1.5])
def test_expfit_recovers_an_exact_exponential(q: float) -> None:
    g = torch.Generator().manual_seed(0)
    P = 1000
    a, b = torch.randn(P, generator=g) * 0.1, torch.randn(P, generator=g) * 0.05
    qs = torch.full((P,), q) * (1 + 0.1 * torch.rand(P, generator=g))   # per-scalar rate c = log q
    s = torch.arange(8.0).unsqueeze(1)
    full = a + b * qs ** s                                # [8, P]
    pred = ExpFit(q_max=2.0).predict({"conv": full[:5]}, 3)["conv"]
    assert torch.allclose(pred, full[5:], atol=1e-5, rtol=1e-4)


def test_expfit_linear_and_constant_and_oscillating_fall_back_to_the_line() -> None:
    s = torch.arange(5.0).unsqueeze(1)
    lin = 0.2 - 0.03 * s
    const = torch.full((5, 1), 0.07)
    osc = torch.tensor([[0.0], [1.0], [0.0], [1.0], [0.0]])  # q < 0: degenerate
    w = torch.cat([lin, const, osc], 1)
    pred = ExpFit().predict({"conv": w}, 3)["conv"]
    assert torch.allclose(pred[:, 0], 0.2 - 0.03 * torch.arange(5.0, 8.0), atol=1e-6)
    assert torch.allclose(pred[:, 1], torch.full((3,), 0.07), atol=1e-7)
    line = w[:, 2].mean() + ((s[:, 0] - 2) * (w[:, 2] - w[:, 2].mean())).sum() / 10 * (torch.arange(5.0, 8.0) - 2)
    assert torch.allclose(pred[:, 2], line, atol=1e-6)
    assert torch.isfinite(ExpFit().predict({"conv": torch.randn(5, 10000)}, 3)["conv"]).all()


def test_window_too_short_is_an_error() -> None:
    with pytest.raises(ValueError):
        ExpFit().predict({"conv": torch.zeros(2, 4)}, 1)
    with pytest.raises(ValueError):
        KnownExtrapolator({"conv": KnownNet()}).predict({"conv": torch.zeros(4, 4)}, 1)


def test_known_extrapolator_slides_the_window() -> None:
    torch.manual_seed(0)
    net = KnownNet()
    w = torch.randn(6, 50) * 0.05                       # 6 snapshots: only the last 5 are read
    pred = KnownExtrapolator({"conv": net}, chunk=16).predict({"conv": w}, 3)["conv"]
    x = w[-5:].t()
    for j in range(3):
        new = x[:, -1] + net(x).detach()
        assert torch.allclose(pred[j], new, atol=1e-6)
        x = torch.cat([x[:, 1:], new.unsqueeze(1)], 1)


def test_nested_subsets_are_prefixes_with_rate() -> None:
    subs = nested_subsets(1000, 0.5, 4, torch.Generator().manual_seed(0))
    assert [len(s) for s in subs] == [500, 250, 125, 62]
    for big, small in zip(subs, subs[1:]):
        assert torch.equal(big[:len(small)], small)
    assert len(set(subs[0].tolist())) == 500
    assert [len(s) for s in nested_subsets(90, 1 / 3, 2, torch.Generator().manual_seed(0))] == [30, 10]


def test_known_samples_follow_the_reversed_trajectory() -> None:
    from methods.know.known import known_samples
    snaps = torch.arange(7.0).unsqueeze(1) * torch.tensor([[1.0, 10.0]])   # recording order Θ0..Θ6
    x, y = known_samples(snaps)
    assert x.shape == (4, 5) and y.shape == (4,)
    # reversed series 6,5,4,3,2,1,0 -> window [6..2] predicts 1 (residual 1 - 2 = -1)
    assert x[0].tolist() == [6, 5, 4, 3, 2] and y[0] == -1 and x[1].tolist() == [60, 50, 40, 30, 20]
    assert x[2].tolist() == [5, 4, 3, 2, 1] and y[3] == -10


def test_train_known_lowers_the_l1_on_exponential_histories() -> None:
    from methods.know.known import train_known
    g = torch.Generator().manual_seed(0)
    P = 4000
    a, b = torch.randn(P, generator=g) * 0.05, torch.randn(P, generator=g) * 0.02
    s = torch.arange(6.0).unsqueeze(1)
    series = a + b * 0.6 ** s                                              # converging toward a
    x, y = series[:5].t().contiguous(), series[5] - series[4]
    net0 = train_known(x, y, epochs=0, seed=0)
    before = float((net0.residual(x) - y).abs().mean())
    net = train_known(x, y, epochs=15, lr=3e-3, batch_size=256, seed=0)
    after = float((net.residual(x) - y).abs().mean())
    assert after < 0.5 * before, (before, after)
