"""Models by name: registered builders (small_cnn, resnet18_cifar) and any timm model as `timm:<name>`.

A builder is `fn(*, num_classes, in_chans, img_size, **kwargs) -> nn.Module`; its extra keyword-only
parameters are the kwargs a spec may set (checked before building, so typos become SpecErrors).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
import re
import sys
from typing import Any, Callable

import torch
from torch import nn

from bench.config import ModelConfig, SpecError
from bench.registry import Registry, suggest
from bench.seeding import derive_seed

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


@dataclass(frozen=True)
class ModelFamily:
    """Models a paper package builds itself (e.g. language models): exact names and name prefixes it accepts."""
    names: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    def accepts(self, name: str) -> bool:
        return name in self.names or any(name.startswith(p) and len(name) > len(p) for p in self.prefixes)

    def describe(self) -> list[str]:
        return list(self.names) + [f"{p}<...>" for p in self.prefixes]


MODEL_FAMILIES: Registry[ModelFamily] = Registry("model family")
HARNESS_ARGS = ("num_classes", "in_chans", "img_size")


# ----------------------------------------------------------------------------------------- small_cnn
def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@MODELS.register("small_cnn")
def small_cnn(*, num_classes: int, in_chans: int, img_size: int, width: int = 32, depth: int = 3) -> nn.Module:
    """`depth` conv-BN-ReLU blocks of `width` channels (doubled in the last block), each with stride 2 while the
    feature map is larger than 4x4, then global average pooling and a linear head. Strided convs rather than
    max-pooling keep it fast on CPU (~15 ms per step of 128 32x32 images on 2 cores).
    Sizes: 8x8 -> 4 -> 4 -> 4; 28x28 -> 14 -> 7 -> 4; 32x32 -> 16 -> 8 -> 4."""
    if width < 1 or depth < 1:
        raise SpecError("model.kwargs", {"width": width, "depth": depth}, "width >= 1 and depth >= 1")
    layers: list[nn.Module] = []
    c, size = in_chans, img_size
    for i in range(depth):
        c_out = 2 * width if (i == depth - 1 and depth > 1) else width
        stride = 2 if size > 4 else 1
        layers.append(conv_bn_relu(c, c_out, stride))
        c, size = c_out, (size + 1) // 2 if stride == 2 else size
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


# ------------------------------------------------------------------------------------- resnet18_cifar
class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with a 3x3 stride-1 stem and no max-pool (He et al. 2016, CIFAR variant of ResNet-18)."""

    def __init__(self, blocks: list[int], *, num_classes: int, in_chans: int, width: int) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_chans, width)
        stages, c = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2 ** i
            stages.append(nn.Sequential(*[BasicBlock(c if j == 0 else c_out, c_out, 2 if (i > 0 and j == 0) else 1)
                                          for j in range(n)]))
            c = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@MODELS.register("resnet18_cifar")
def resnet18_cifar(*, num_classes: int, in_chans: int, img_size: int, width: int = 64) -> nn.Module:
    """CIFAR ResNet-18: BasicBlocks [2, 2, 2, 2] with widths width * [1, 2, 4, 8] (width=64: 11.2M params)."""
    if width < 1:
        raise SpecError("model.kwargs", {"width": width}, "width >= 1")
    return CifarResNet([2, 2, 2, 2], num_classes=num_classes, in_chans=in_chans, width=width)


# ------------------------------------------------------------------------------------------- building
def build_model(cfg: ModelConfig, *, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """The model named by `cfg` (registered name or `timm:<name>`), randomly initialised from the global RNG."""
    name, kwargs = cfg.name, dict(cfg.kwargs)
    if name.startswith("timm:"):
        return build_timm(name[len("timm:"):], kwargs, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    if name not in MODELS:
        names = MODELS.names()
        raise SpecError("model.name", name, f"one of {', '.join(names)} or timm:<name>{suggest(name, names)}")
    builder = MODELS.get(name)
    accepted = [p for p in inspect.signature(builder).parameters if p not in HARNESS_ARGS]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise SpecError("model.kwargs", kwargs, f"keys among {', '.join(accepted) or '(none)'} for model {name!r} "
                        f"(unknown: {', '.join(map(repr, unknown))}{suggest(unknown[0], accepted)})")
    return builder(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)


def init_model(cfg: ModelConfig, *, num_classes: int, in_chans: int, img_size: int, seed: int) -> nn.Module:
    """build_model with its initialisation drawn from the run's own `init` stream; the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return build_model(cfg, num_classes=num_classes, in_chans=in_chans, img_size=img_size)


def build_timm(arch: str, kwargs: dict[str, Any], *, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """timm.create_model(arch, pretrained=False, num_classes, in_chans, img_size if the model takes it, **kwargs)."""
    import timm

    if not timm.is_model(arch):
        options = timm.list_models()
        raise SpecError("model.name", f"timm:{arch}", f"a timm model name after 'timm:'{suggest(arch, options)}")
    clash = [k for k in kwargs if k in (*HARNESS_ARGS, "pretrained")]
    if clash:
        raise SpecError("model.kwargs", kwargs, f"keys other than {', '.join(clash)}: the harness sets "
                        "num_classes/in_chans/img_size from the dataset and always builds with pretrained=False")
    common = dict(pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    try:
        try:
            return timm.create_model(arch, img_size=img_size, **common)
        except TypeError as e:  # the model does not take img_size (CNNs): build it without
            if "'img_size'" not in str(e):
                raise
            return timm.create_model(arch, **common)
    except TypeError as e:
        raise SpecError("model.kwargs", kwargs, _timm_accepted(arch, str(e))) from None


def _timm_accepted(arch: str, message: str) -> str:
    """'keyword arguments of <Class>: a, b, ...' recovered from a TypeError of the model's constructor."""
    import timm

    m = re.search(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'", message)
    cls = getattr(sys.modules.get(timm.models.model_entrypoint(arch).__module__), m.group(1), None) if m else None
    if cls is None:
        return f"keyword arguments that timm's {arch} accepts ({message})"
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    return (f"keyword arguments of timm's {cls.__name__} (unknown: {m.group(2)!r}{suggest(m.group(2), params)}): "
            f"{', '.join(p for p in params if p not in (*HARNESS_ARGS, 'pretrained'))}")
