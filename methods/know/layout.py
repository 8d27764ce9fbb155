"""KNOW: the conv / fc / bias weights of a model flattened by kind (the unit KNOWN and the extrapolators
work on), and back (card section 2)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

KINDS = ("conv", "fc", "bias")

# ============================================================================ weight layout by kind
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class WeightLayout:
    """Which state-dict entries KNOWN predicts and with which model (card section 2): conv kernels -> 'conv',
    linear kernels and any other weight matrix -> 'fc', biases of conv/linear layers -> 'bias'. Normalisation
    layers (BatchNorm & co.) and buffers are kept aside (copied from the base state).

    `entries` are (state-dict key, kind, shape) in state-dict order; flattening concatenates each kind's
    entries in that order."""
    entries: list[tuple[str, str, tuple[int, ...]]]

    @classmethod
    def of(cls, model: nn.Module) -> "WeightLayout":
        entries: list[tuple[str, str, tuple[int, ...]]] = []
        for mname, mod in model.named_modules():
            if isinstance(mod, _NORM_TYPES):
                continue
            for pname, p in mod.named_parameters(recurse=False):
                key = f"{mname}.{pname}" if mname else pname
                if isinstance(mod, nn.modules.conv._ConvNd) and pname == "weight":
                    kind = "conv"
                elif pname == "bias" or p.ndim == 1:
                    kind = "bias"
                else:
                    kind = "fc"
                entries.append((key, kind, tuple(p.shape)))
        order = {k: i for i, k in enumerate(model.state_dict().keys())}
        entries.sort(key=lambda e: order.get(e[0], len(order)))
        return cls(entries)

    def keys(self, kind: Optional[str] = None) -> list[str]:
        return [k for k, knd, _ in self.entries if kind is None or knd == kind]

    def sizes(self) -> dict[str, int]:
        out = {k: 0 for k in KINDS}
        for _, kind, shape in self.entries:
            out[kind] += math.prod(shape)
        return out

    def flatten(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{kind: float32 [P_kind]} (CPU) of the predicted entries of `state`; kinds without entries are [0]."""
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in KINDS}
        for key, kind, _ in self.entries:
            parts[kind].append(state[key].detach().reshape(-1).float().cpu())
        return {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items()}

    def unflatten(self, flat: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A copy of `base` whose predicted entries are replaced by `flat` (everything else kept, e.g. BN)."""
        out = {k: v.clone() for k, v in base.items()}
        pos = {k: 0 for k in KINDS}
        for key, kind, shape in self.entries:
            n = math.prod(shape)
            out[key] = flat[kind][pos[kind]:pos[kind] + n].reshape(shape).to(base[key].dtype).clone()
            pos[kind] += n
        for kind in KINDS:
            if kind in flat and pos[kind] != flat[kind].numel():
                raise ValueError(f"unflatten: {kind} has {flat[kind].numel()} values, the layout {pos[kind]}")
        return out
