"""Model registry: output shapes for 1-channel 8x8 and 3-channel 32x32 input, timm models, helpful errors."""
from __future__ import annotations

import pytest
import torch

from bench.config import ModelConfig, SpecError
from bench.device import resolve_device
from bench.models import MODELS, build_model, init_model


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("in_chans,size", [(1, 8), (1, 28), (3, 32)])
def test_registered_model_gives_logits_per_class(name, in_chans, size):
    kwargs = {"width": 8} if name == "resnet18_cifar" else {}
    model = build_model(ModelConfig(name, kwargs), num_classes=7, in_chans=in_chans, img_size=size)
    out = model(torch.randn(3, in_chans, size, size))
    assert out.shape == (3, 7)


def test_small_cnn_and_resnet_kwargs_change_the_architecture():
    n = lambda m: sum(p.numel() for p in m.parameters())
    a = build_model(ModelConfig("small_cnn", {"width": 8, "depth": 2}), num_classes=10, in_chans=3, img_size=32)
    b = build_model(ModelConfig("small_cnn", {"width": 16, "depth": 4}), num_classes=10, in_chans=3, img_size=32)
    assert n(a) < n(b)
    narrow = build_model(ModelConfig("resnet18_cifar", {"width": 16}), num_classes=10, in_chans=3, img_size=32)
    full = build_model(ModelConfig("resnet18_cifar"), num_classes=10, in_chans=3, img_size=32)
    assert 11_000_000 < n(full) < 11_300_000 and n(narrow) < n(full) / 10
    assert full.stem[0].stride == (1, 1) and full.stem[0].kernel_size == (3, 3)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in full.modules())


@pytest.mark.parametrize("in_chans", [1, 3])
def test_timm_resnet18_with_ten_classes(in_chans):
    model = build_model(ModelConfig("timm:resnet18"), num_classes=10, in_chans=in_chans, img_size=32)
    assert model(torch.randn(2, in_chans, 32, 32)).shape == (2, 10)


def test_timm_vit_gets_img_size_and_kwargs_pass_through():
    model = build_model(ModelConfig("timm:vit_tiny_patch16_224", {"patch_size": 4, "depth": 2}),
                        num_classes=5, in_chans=3, img_size=32)
    assert model.patch_embed.img_size == (32, 32) and len(model.blocks) == 2
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(SpecError, match="did you mean 'small_cnn'") as e:
        build_model(ModelConfig("smal_cnn"), num_classes=10, in_chans=3, img_size=32)
    assert e.value.path == "model.name"
    with pytest.raises(SpecError, match="did you mean 'resnet18'") as e:
        build_model(ModelConfig("timm:resnet81"), num_classes=10, in_chans=3, img_size=32)
    assert e.value.path == "model.name"


def test_bad_kwargs_list_what_the_builder_accepts():
    with pytest.raises(SpecError, match="width, depth") as e:
        build_model(ModelConfig("small_cnn", {"widht": 3}), num_classes=10, in_chans=3, img_size=32)
    assert e.value.path == "model.kwargs" and "did you mean 'width'" in str(e.value)
    with pytest.raises(SpecError, match="drop_rate") as e:
        build_model(ModelConfig("timm:resnet18", {"dropp_rate": 0.1}), num_classes=10, in_chans=3, img_size=32)
    assert e.value.path == "model.kwargs"
    with pytest.raises(SpecError, match="pretrained"):
        build_model(ModelConfig("timm:resnet18", {"pretrained": True}), num_classes=10, in_chans=3, img_size=32)


def test_init_model_is_its_own_stream():
    cfg = ModelConfig("small_cnn")
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = init_model(cfg, num_classes=10, in_chans=1, img_size=8, seed=0)
    assert torch.equal(torch.rand(3), before)  # global RNG untouched
    b = init_model(cfg, num_classes=10, in_chans=1, img_size=8, seed=0)
    c = init_model(cfg, num_classes=10, in_chans=1, img_size=8, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["0.0.weight"], sc["0.0.weight"])


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", ""):
        with pytest.raises(SpecError) as e:
            resolve_device(bad)
        assert e.value.path == "device"
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="not available"):
            resolve_device("cuda:1")
