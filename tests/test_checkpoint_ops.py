"""Weight averaging and BatchNorm re-estimation used by averaged KF."""
from __future__ import annotations

import torch
from torch import nn

from bench.data.tensors import ImageData
from bench.train import average_states, recompute_bn


def test_average_states_averages_floats_and_keeps_integer_buffers() -> None:
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(7)}
    avg = average_states([a, b])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and int(avg["n"]) == 7


def test_recompute_bn_sets_running_stats_to_the_data_statistics() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8)
    data = ImageData(x, torch.zeros(64, dtype=torch.long), (0.0,), (1.0,))
    model = nn.Sequential(nn.BatchNorm2d(1))
    model[0].running_mean.fill_(123.0)
    recompute_bn(model, data, batch_size=16)
    xs = x.float() / 255
    assert torch.allclose(model[0].running_mean, xs.mean().reshape(1), atol=1e-5)
    assert torch.allclose(model[0].running_var, xs.var(unbiased=False).reshape(1), rtol=0.05)
    assert model[0].momentum == 0.1
