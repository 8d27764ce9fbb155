"""KNOW / KNOWN engine pieces (card: ../shared/papers/know.md): weight layout by kind, the KNOWN hyper-model and
its Keras HDF5 loader, the extrapolators (TaskVector, ExpFit, KNOWN), the structured-forgetting trajectory stage
and the two-phase downstream fine-tuning.

Orientation used everywhere here: a trajectory *window* is a tensor [S, P] ordered as a time series in the
direction of extrapolation, i.e. most forgotten first and the full-data weights Θ0 last (the card's
x1 = [w_4, w_3, w_2, w_1, w_0]). `Extrapolator.predict(window, steps)` continues that series `steps` times and
returns [steps, P]: with r = 0.5 the rows are the ×2, ×4, ×8 predictions. The trajectory stage stores the
snapshots in *recording* order (Θ0 .. Θ_{S-1}); `Trajectory.window()` flips them.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("conv", "fc", "bias")
KNOWN_WINDOW = 5                     # KNOWN reads 5 snapshots (card section 2)
LEAKY_SLOPE = 0.3                    # Keras LeakyReLU default (card section 2), not PyTorch's 0.01
KERAS_KIND_FILES = {"conv": "KNOWN_Conv.h5", "fc": "KNOWN_FC.h5", "bias": "KNOWN_Bias.h5"}
KNOWN_BACKENDS = ("auto", "kernel", "torch")   # see KnownNet.residual


def official_weights_dir() -> Path:
    """../shared/papers/know-weights next to the project (may not exist)."""
    from bench.paths import PROJECT_ROOT
    return Path(PROJECT_ROOT).parent / "shared" / "papers" / "know-weights"


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


# ============================================================================ KNOWN hyper-model
class KnownStream(nn.Module):
    """One input stream of KNOWN (card section 2):
    h = Dense64(x); g = ReLU(Dense8(h)); t = Dense64(g) + Dense64_a(g) * exp(Dense64_b(g) * h);
    u = LeakyReLU_0.3(Dense32(t)). Kernels are stored (in, out) as in Keras: forward is x @ K + b."""

    def __init__(self, n_in: int) -> None:
        super().__init__()
        shapes = {"k1": (n_in, 64), "k2": (64, 8), "k_add": (8, 64), "k_a": (8, 64), "k_b": (8, 64), "k5": (64, 32)}
        for name, (i, o) in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.empty(i, o)))
            self.register_parameter(name.replace("k", "b", 1), nn.Parameter(torch.empty(o)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras init of the official code: VarianceScaling(0.1, fan_in, uniform) kernels, bias 0.1."""
        for name, p in self.named_parameters():
            if name.startswith("k"):
                bound = math.sqrt(3.0 * 0.1 / p.shape[0])
                nn.init.uniform_(p, -bound, bound)
            else:
                nn.init.constant_(p, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.addmm(self.b1, x, self.k1)
        g = torch.relu(torch.addmm(self.b2, h, self.k2))
        # the three 8->64 layers as one matmul
        k = torch.cat([self.k_add, self.k_a, self.k_b], 1)
        b = torch.cat([self.b_add, self.b_a, self.b_b])
        z = torch.addmm(b, g, k)
        add, a, mult = z[:, :64], z[:, 64:128], z[:, 128:]
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            t = add + a * torch.exp(mult * h)
        else:  # inference: in place, fewer temporaries
            t = mult.mul_(h).exp_().mul_(a).add_(add)
        return F.leaky_relu(torch.addmm(self.b5, t, self.k5), LEAKY_SLOPE)


class KnownNet(nn.Module):
    """One KNOWN model (Conv, FC or Bias; card section 2): element-wise, two streams (history x1 of 5 values,
    most forgotten first; differences x2 = x1[1:] - x1[:-1]), head tanh(Dense1(concat[u1, u2])).
    `forward(x1)` returns the residual [N]; the prediction is x1[:, -1] + residual. 9,425 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.s1 = KnownStream(KNOWN_WINDOW)
        self.s2 = KnownStream(KNOWN_WINDOW - 1)
        self.k_head = nn.Parameter(torch.empty(64, 1))
        self.b_head = nn.Parameter(torch.full((1,), 0.1))
        bound = math.sqrt(3.0 * 0.1 / 64)
        nn.init.uniform_(self.k_head, -bound, bound)

    def forward(self, x1: torch.Tensor) -> torch.Tensor:
        x2 = x1[:, 1:] - x1[:, :-1]
        u1, u2 = self.s1(x1), self.s2(x2)
        out = torch.addmm(self.b_head, u1, self.k_head[:32]).addmm_(u2, self.k_head[32:])
        return torch.tanh(out).squeeze(1)

    @torch.no_grad()
    def packed(self) -> dict[str, torch.Tensor]:
        """The same function with its linear parts folded together (inference only; equal up to rounding):
        - x2 = x1 @ D (D the 5x4 difference matrix), so both streams' first layers read x1: one [5, 144] matmul
          giving h1 (64), h2 (64), and g's pre-activations through k1 @ k2 (8 + 8);
        - Dense_add feeds Dense32 linearly, so Dense32(add + a·e) = g @ (k_add k5) + (a·e) @ k5: the 8-wide
          matmul gives [a (64), b (64), add·k5 (32)] per stream."""
        diff = torch.zeros(KNOWN_WINDOW, KNOWN_WINDOW - 1, dtype=self.k_head.dtype, device=self.k_head.device)
        idx = torch.arange(KNOWN_WINDOW - 1)
        diff[idx + 1, idx], diff[idx, idx] = 1.0, -1.0
        k_in, b_in, k_mid, b_mid, k_out, b_out = [], [], [], [], [], []
        for s, pre in ((self.s1, None), (self.s2, diff)):
            k1 = s.k1 if pre is None else pre @ s.k1
            k_in += [k1, k1 @ s.k2]
            b_in += [s.b1, s.b1 @ s.k2 + s.b2]
            k_mid.append(torch.cat([s.k_a, s.k_b, s.k_add @ s.k5], 1))
            b_mid.append(torch.cat([s.b_a, s.b_b, s.b_add @ s.k5 + s.b5]))
            k_out.append(s.k5)
        # column order of the input matmul: h1, g1, h2, g2
        return {"k_in": torch.cat(k_in, 1), "b_in": torch.cat(b_in), "k_mid": k_mid, "b_mid": b_mid,
                "k5": k_out, "k_head": self.k_head.detach(), "b_head": self.b_head.detach()}

    @torch.no_grad()
    def residual(self, x1: torch.Tensor, chunk: int = 2048, workers: Optional[int] = None,
                 backend: str = "auto") -> torch.Tensor:
        """The residual over [N, 5] (float32, on x1's device), with the packed weights (see `packed`).

        backend: 'kernel' = the fused C++ CPU kernel (bench/known_kernel.cpp, every intermediate in registers);
        'torch' = batched matmuls in chunks of `chunk` scalars (small chunks keep the [chunk, 160] intermediates
        in cache); 'auto' = the kernel on CPU where it builds, else torch. Both compute the same function (equal
        to ~1e-7). On CPU, `workers` (default: torch's thread count) threads each run one contiguous part."""
        x1 = x1.float()
        w = self.packed()
        n = x1.shape[0]
        workers = torch.get_num_threads() if workers is None else int(workers)
        if known_backend(x1.device, backend) == "kernel":
            from bench import known_kernel
            return known_kernel.residual(x1, known_kernel.pack(w), workers)
        out = torch.empty(n, dtype=x1.dtype, device=x1.device)
        if x1.device.type != "cpu":
            self._residual_into(x1, out, w, max(chunk, 1 << 20))   # accelerators: large chunks
            return out
        if workers <= 1 or n < 4 * chunk * workers:
            self._residual_into(x1, out, w, chunk)
            return out
        from concurrent.futures import ThreadPoolExecutor
        bounds = [round(n * i / workers) for i in range(workers + 1)]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda i: self._residual_into(x1[bounds[i]:bounds[i + 1]],
                                                            out[bounds[i]:bounds[i + 1]], w, chunk),
                              range(workers)))
        finally:
            torch.set_num_threads(threads)
        return out

    @staticmethod
    @torch.no_grad()        # grad mode is thread-local: worker threads need their own no_grad
    def _residual_into(x1: torch.Tensor, out: torch.Tensor, w: dict[str, Any], chunk: int) -> None:
        for i in range(0, x1.shape[0], chunk):
            x = x1[i:i + chunk]
            hg = torch.addmm(w["b_in"], x, w["k_in"])                          # [c, 144]: h1, g1, h2, g2
            acc = w["b_head"].expand(x.shape[0], 1).clone()
            for j in range(2):
                base = 72 * j
                h, g = hg[:, base:base + 64], hg[:, base + 64:base + 72].relu()
                z = torch.addmm(w["b_mid"][j], g, w["k_mid"][j])               # [c, 160]: a, b, add·k5
                e = z[:, 64:128].mul_(h).exp_().mul_(z[:, :64])                # a · exp(b · h)
                u = torch.addmm(z[:, 128:], e, w["k5"][j])                     # Dense32(t)
                u = F.leaky_relu(u, LEAKY_SLOPE, inplace=True)
                acc.addmm_(u, w["k_head"][32 * j:32 * (j + 1)])
            out[i:i + chunk] = acc.tanh_().squeeze(1)


# Keras layer names -> (stream attribute, parameter suffix); card section 2
_KERAS_ROLES = ["1", "2", "_add", "_a", "_b", "5"]


def keras_layer_map() -> dict[str, tuple[str, str]]:
    """{'dense': ('s1', '1'), ..., 'dense_6': ('s2', '1'), ..., 'dense_12': ('', '_head')}."""
    out = {}
    for s, stream in enumerate(("s1", "s2")):
        for j, role in enumerate(_KERAS_ROLES):
            idx = 6 * s + j
            out["dense" if idx == 0 else f"dense_{idx}"] = (stream, role)
    out["dense_12"] = ("", "_head")
    return out


def load_keras_h5(path: str | Path) -> KnownNet:
    """A KnownNet holding the weights of an official Keras 2.x weights-only HDF5 file (h5py)."""
    import h5py

    net = KnownNet()
    params = dict(net.named_parameters())
    with h5py.File(path, "r") as f:
        for layer, (stream, role) in keras_layer_map().items():
            grp = f[layer][layer]
            prefix = f"{stream}." if stream else ""
            for kb, h5name in (("k", "kernel:0"), ("b", "bias:0")):
                target = params[f"{prefix}{kb}{role}"]
                value = torch.from_numpy(grp[h5name][()]).float()
                if value.shape != target.shape:
                    raise ValueError(f"{path}: {layer}/{h5name} has shape {tuple(value.shape)}, "
                                     f"expected {tuple(target.shape)}")
                with torch.no_grad():
                    target.copy_(value)
    return net.eval()


def load_known(weights: str = "official") -> dict[str, KnownNet]:
    """{kind: KnownNet}: 'official' = the released Keras files; else a .pt checkpoint from methods/known_train.py
    ({'conv': state_dict, 'fc': ..., 'bias': ...}) or a folder holding the three official .h5 files."""
    if weights == "official":
        folder = official_weights_dir()
    else:
        folder = Path(weights)
    if folder.is_dir():
        missing = [f for f in KERAS_KIND_FILES.values() if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"KNOWN weights missing in {folder}: {', '.join(missing)}")
        return {k: load_keras_h5(folder / f) for k, f in KERAS_KIND_FILES.items()}
    ckpt = torch.load(folder, map_location="cpu", weights_only=True)
    nets = {}
    for kind in KINDS:
        net = KnownNet()
        net.load_state_dict(ckpt[kind])
        nets[kind] = net.eval()
    return nets


# ============================================================================ extrapolators
class Extrapolator:
    """Continue a weight series: `predict(window, steps)` with window {kind: [S, P]} (most forgotten first, Θ0
    last) returns {kind: [steps, P]}, row j being the (j+1)-th step beyond Θ0 (×2, ×4, ×8 for r = 0.5)."""
    min_window = 2

    def info(self) -> dict[str, Any]:
        """Facts worth recording with a result (e.g. which KNOWN backend ran)."""
        return {}

    def predict(self, window: dict[str, torch.Tensor], steps: int) -> dict[str, torch.Tensor]:
        out = {}
        for kind, w in window.items():
            if w.ndim != 2 or w.shape[0] < self.min_window:
                raise ValueError(f"{type(self).__name__}: window[{kind!r}] must be [S >= {self.min_window}, P], "
                                 f"got {tuple(w.shape)}")
            out[kind] = self.predict_kind(kind, w.float(), steps) if w.shape[1] else w.new_zeros(steps, 0)
        return out

    def predict_kind(self, kind: str, w: torch.Tensor, steps: int) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class TaskVector(Extrapolator):
    """Card section 5: Θ̂ = Θ0 + λ(Θ0 − Θ1), iterated on its own output for ×4, ×8 (λ = 1: linear continuation)."""

    def __init__(self, lam: float = 1.0) -> None:
        self.lam = float(lam)

    def predict_kind(self, kind: str, w: torch.Tensor, steps: int) -> torch.Tensor:
        prev, last = w[-2], w[-1]
        out = []
        for _ in range(steps):
            new = last + self.lam * (last - prev)
            out.append(new)
            prev, last = last, new
        return torch.stack(out)


class ExpFit(Extrapolator):
    """Card section 5 (ExpFit is [open] in the card; this is the harness's reading): per scalar, fit
    w(s) = a + b·exp(c·s) on s = 0..S-1 (most forgotten → full) and evaluate at s = S, S+1, ...

    Vectorised closed form for equally spaced s: the successive differences d_k = w_{k+1} − w_k of an exact
    exponential satisfy d_{k+1} = q·d_k with q = e^c, so q is the least-squares ratio Σ d_k d_{k+1} / Σ d_k²;
    then (a, b) is the linear least-squares fit on the basis (1, q^s). Where the fit is degenerate (flat series,
    q ≤ 0 i.e. oscillating, q > q_max, |q − 1| < 1e-4, or non-finite) the scalar falls back to the least-squares
    line over the window. Exact exponentials (and lines) are recovered exactly."""
    min_window = 3

    def __init__(self, q_max: float = 2.0, eps: float = 1e-12) -> None:
        self.q_max, self.eps = float(q_max), float(eps)

    def predict_kind(self, kind: str, w: torch.Tensor, steps: int) -> torch.Tensor:
        w = w.double()
        S = w.shape[0]
        s_new = torch.arange(S, S + steps, dtype=w.dtype, device=w.device).unsqueeze(1)  # [steps, 1]
        # linear least squares line (fallback)
        s = torch.arange(S, dtype=w.dtype, device=w.device).unsqueeze(1)
        s_mean = s.mean()
        w_mean = w.mean(0)
        slope = ((s - s_mean) * (w - w_mean)).sum(0) / ((s - s_mean) ** 2).sum()
        linear = w_mean + slope * (s_new - s_mean)
        # exponential: ratio of successive differences
        d = w[1:] - w[:-1]                                   # [S-1, P]
        num = (d[:-1] * d[1:]).sum(0)
        den = (d[:-1] ** 2).sum(0)
        scale = w.abs().amax(0).clamp_min(1e-30)
        q = num / den.clamp_min(self.eps * scale ** 2)
        ok = (den > self.eps * scale ** 2) & (q > 0) & (q <= self.q_max) & ((q - 1).abs() > 1e-4) & q.isfinite()
        q = torch.where(ok, q, torch.full_like(q, 0.5))
        basis = q.unsqueeze(0) ** s                          # [S, P]
        b_mean = basis.mean(0)
        var = ((basis - b_mean) ** 2).sum(0)
        b = ((basis - b_mean) * (w - w_mean)).sum(0) / var.clamp_min(1e-300)
        a = w_mean - b * b_mean
        expo = a + b * q.unsqueeze(0) ** s_new
        ok = ok & (var > 1e-300) & expo.isfinite().all(0)
        return torch.where(ok.unsqueeze(0), expo, linear).float()


def known_backend(device: str | torch.device, backend: str = "auto") -> str:
    """The backend KNOWN runs with for `backend` on `device`: 'kernel' (CPU only; 'kernel' asked for where it
    cannot build raises when called) or 'torch'."""
    if backend not in KNOWN_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, KNOWN_BACKENDS))}, got {backend!r}")
    if torch.device(device).type != "cpu" or backend == "torch":
        return "torch"
    if backend == "kernel":
        return "kernel"
    from bench import known_kernel
    return "kernel" if known_kernel.available() else "torch"


class KnownExtrapolator(Extrapolator):
    """Card sections 2-3: per kind, new = w_last + KNOWN_kind(window of the last 5), slide the window, repeat."""
    min_window = KNOWN_WINDOW

    def __init__(self, nets: dict[str, KnownNet], chunk: int = 2048, device: str | torch.device = "cpu",
                 backend: str = "auto") -> None:
        self.nets, self.chunk, self.device, self.backend = nets, int(chunk), torch.device(device), backend
        for net in nets.values():
            net.to(self.device).eval()

    def info(self) -> dict[str, Any]:
        return {"known_backend": known_backend(self.device, self.backend)}

    def predict_kind(self, kind: str, w: torch.Tensor, steps: int) -> torch.Tensor:
        net = self.nets[kind]
        if known_backend(self.device, self.backend) == "kernel":
            from bench import known_kernel          # the window's rows are read in place: no transpose, no copies
            packed = known_kernel.pack(net.packed())
            rows = list(w[-KNOWN_WINDOW:].float().cpu().contiguous())
            out = torch.empty(steps, w.shape[1], dtype=torch.float32)
            for j in range(steps):
                known_kernel.step(rows, packed, out[j], workers=torch.get_num_threads())
                rows = rows[1:] + [out[j]]
            return out.to(w.device)
        x = w[-KNOWN_WINDOW:].t().contiguous().to(self.device)        # [P, 5], most forgotten first
        out = torch.empty(steps, x.shape[0], dtype=x.dtype, device=self.device)
        for j in range(steps):
            new = x[:, -1] + net.residual(x, self.chunk, backend=self.backend)
            out[j] = new
            x = torch.cat([x[:, 1:], new.unsqueeze(1)], 1)
        return out.to(w.device)


# ============================================================================ trajectory stage
TRAJECTORY_STAGE_VERSION = 1


@dataclass
class Trajectory:
    """Output of the trajectory stage: Θ0 (full state, with BN) and the snapshots Θ0..Θ_{S-1} by kind."""
    dir: Path
    layout: WeightLayout
    info: dict[str, Any]

    def theta0(self) -> dict[str, torch.Tensor]:
        return torch.load(self.dir / "theta0.pt", map_location="cpu", weights_only=True)

    def snapshots(self) -> dict[str, torch.Tensor]:
        """{kind: [S, P]} in recording order: row 0 = Θ0 (full data), row S-1 = the most forgotten."""
        return torch.load(self.dir / "trajectory.pt", map_location="cpu", weights_only=True)

    def window(self, length: Optional[int] = None) -> dict[str, torch.Tensor]:
        """{kind: [L, P]} most forgotten first, Θ0 last (the extrapolators' orientation); L defaults to S."""
        snaps = self.snapshots()
        return {k: v[:length].flip(0) if length else v.flip(0) for k, v in snaps.items()}


def nested_subsets(n: int, rate: float, steps: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Card section 1: prefix subsets of one shuffle, |D_s| = round(n * rate^s) for s = 1..steps (at least 1)."""
    perm = torch.randperm(n, generator=gen)
    return [perm[:max(1, round(n * rate ** s))] for s in range(1, steps + 1)]


def trajectory_recipes(train, *, pretrain_epochs: int, step_lr: float, step_optimizer: str = "adam",
                       epochs_per_step: int = 1):
    """Card section 1: (pretrain, step) TrainConfigs for `trajectory_stage`: the run's `train` block lasting
    `pretrain_epochs`, and a constant-lr step recipe (no weight decay) with the run's batch, augmentation and
    precision; neither records predictions nor keeps checkpoints."""
    from dataclasses import replace

    from bench.config import OptimizerConfig, ScheduleConfig, TrainConfig
    pretrain = replace(train, epochs=pretrain_epochs, record_predictions=False, keep_checkpoints=False)
    step = TrainConfig(epochs=epochs_per_step, batch_size=train.batch_size, eval_batch_size=train.eval_batch_size,
                       optimizer=OptimizerConfig(name=step_optimizer, lr=step_lr, weight_decay=0.0),
                       schedule=ScheduleConfig(name="constant"), augment=replace(train.augment), amp=train.amp,
                       channels_last=train.channels_last, checkpoint_every=0, record_predictions=False,
                       keep_checkpoints=False)
    return pretrain, step


def trajectory_stage(ctx, source, model_cfg, pretrain, step_recipe, *, rate: float, length: int,
                     seed: int) -> Trajectory:
    """Shared stage (card section 1): pretrain on the source task (`pretrain` recipe) -> Θ0, then fine-tune
    sequentially on nested prefix subsets D1 ⊃ D2 ... (|D_s| = r^s |D0|) with `step_recipe` (fresh optimizer per
    step), recording Θ0..Θ_{length-1} (conv/linear kernels and biases; BN kept aside in theta0.pt).

    `source` is a DataConfig; the stage is keyed by (source, model, both recipes, rate, length, seed, device)."""
    from bench.config import to_dict
    from bench.method import _cached_splits
    from bench.seeding import derive_seed, generator
    from bench.spec import canonical_json
    from bench.store import atomic_torch_save, atomic_write_json
    from bench.train import fit, init_model

    key = {"version": TRAJECTORY_STAGE_VERSION, "source": to_dict(source), "model": to_dict(model_cfg),
           "pretrain": to_dict(pretrain), "step": to_dict(step_recipe), "rate": rate, "length": length,
           "seed": seed, "device": str(ctx.device)}

    def load_source():
        return _cached_splits(canonical_json(to_dict(source)), str(ctx.device))

    def build():
        d = load_source()
        return init_model(model_cfg, num_classes=d.num_classes, in_chans=d.in_chans, img_size=d.img_size,
                          seed=seed).to(ctx.device)

    def compute(sdir: Path) -> None:
        t0 = time.perf_counter()
        d = load_source()
        model = build()
        layout = WeightLayout.of(model)
        history: list[dict] = []
        fit(model, d.train, pretrain, seed=seed, device=ctx.device, val=d.val, progress=ctx.progress,
            desc=f"know pretrain s{seed}", hooks=[lambda e: history.append({"phase": "pretrain", "epoch": e.epoch,
                                                                             **e.metrics})])
        t_pre = time.perf_counter() - t0
        state0 = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        atomic_torch_save(sdir / "theta0.pt", state0)
        snaps = [layout.flatten(state0)]
        subsets = nested_subsets(len(d.train), rate, length - 1, generator(seed, "know/subsets"))
        for s, idx in enumerate(subsets, start=1):
            fit(model, d.train.subset(idx.to(d.train.device)), step_recipe,
                seed=derive_seed(seed, f"know/step{s}"), device=ctx.device, val=d.val, progress=ctx.progress,
                desc=f"know forget {s}/{length - 1} s{seed}",
                hooks=[lambda e, s=s, n=len(idx): history.append({"phase": f"forget{s}", "n_train": n,
                                                                 "epoch": e.epoch, **e.metrics})])
            snaps.append(layout.flatten(model.state_dict()))
        traj = {k: torch.stack([sn[k] for sn in snaps]) for k in KINDS}
        atomic_torch_save(sdir / "trajectory.pt", traj)
        atomic_write_json(sdir / "info.json", {
            "history": history, "subset_sizes": [len(d.train)] + [len(i) for i in subsets],
            "sizes": layout.sizes(), "pretrain_s": t_pre, "trajectory_s": time.perf_counter() - t0 - t_pre,
            "source_meta": d.meta})

    sdir = ctx.stage("know_trajectory", key, compute)
    info = json.loads((sdir / "info.json").read_text())
    return Trajectory(dir=sdir, layout=WeightLayout.of(build()), info=info)


# ============================================================================ downstream
def head_prefix(model: nn.Module) -> str:
    """Module name of the classifier head: the last nn.Linear in module order."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError("no nn.Linear head found in the model")
    return names[-1]


def transplant(target: nn.Module, source_state: dict[str, torch.Tensor]) -> list[str]:
    """Load `source_state` into `target` except the head (kept as initialised: the new head); returns the
    head keys left untouched."""
    head = head_prefix(target) + "."
    own = target.state_dict()
    head_keys = [k for k in own if k.startswith(head)]
    new = {k: (own[k] if k in head_keys else source_state[k].to(own[k].device, own[k].dtype)) for k in own}
    target.load_state_dict(new)
    return head_keys


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Phase 1 of card section 6: conv/linear layers frozen except the head; norm layers stay trainable."""
    head = head_prefix(model)
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)) and name != head:
            for p in mod.parameters(recurse=False):
                p.requires_grad_(not frozen)


@dataclass
class DownstreamRecipe:
    """Card section 6 (sizes as parameters): phase 1 conv/linear frozen, Adam lr1 constant; phase 2 all
    trainable, Adam lr2 with cosine decay to 0. batch/augment/eval batch come from the run's train block."""
    phase1_epochs: int = 10
    phase2_epochs: int = 100
    lr1: float = 1e-3
    lr2: float = 4e-4
    weight_decay: float = 0.0

    def recipes(self, base):
        from bench.config import OptimizerConfig, ScheduleConfig, TrainConfig
        common = dict(batch_size=base.batch_size, eval_batch_size=base.eval_batch_size, augment=base.augment,
                      label_smoothing=base.label_smoothing, grad_clip=base.grad_clip, amp=base.amp,
                      channels_last=base.channels_last, checkpoint_every=0, record_predictions=False,
                      keep_checkpoints=False)
        p1 = TrainConfig(epochs=self.phase1_epochs, optimizer=OptimizerConfig(name="adam", lr=self.lr1,
                         weight_decay=self.weight_decay), schedule=ScheduleConfig(name="constant"), **common)
        p2 = TrainConfig(epochs=self.phase2_epochs, optimizer=OptimizerConfig(name="adam", lr=self.lr2,
                         weight_decay=self.weight_decay), schedule=ScheduleConfig(name="cosine"), **common)
        return p1, p2


def finetune_downstream(ctx, model: nn.Module, recipe: DownstreamRecipe, *, seed: int,
                        log: Optional[Any] = None) -> dict[str, float]:
    """Two-phase fine-tuning on the run's dataset (the target task); returns test/val accuracy and loss."""
    from bench.seeding import derive_seed
    from bench.train import evaluate, fit
    p1, p2 = recipe.recipes(ctx.config.train)
    data = ctx.data
    rows: list[dict] = []
    for phase, rec, frozen in (("phase1", p1, True), ("phase2", p2, False)):
        if rec.epochs == 0:
            continue
        set_backbone_frozen(model, frozen)
        fit(model, data.train, rec, seed=derive_seed(seed, f"know/{phase}"), device=ctx.device, val=data.val,
            progress=ctx.progress, desc=f"{phase} s{seed}",
            hooks=[lambda e, phase=phase: rows.append({"phase": phase, "epoch": e.epoch, **e.metrics})])
    set_backbone_frozen(model, False)
    if log is not None:
        for r in rows:
            log(r)
    bs = ctx.config.train.eval_batch_size
    test = evaluate(model, data.test, batch_size=bs)
    out = {"test_acc": test["acc"], "test_loss": test["loss"]}
    if len(data.val):
        val = evaluate(model, data.val, batch_size=bs)
        out.update(val_acc=val["acc"], val_loss=val["loss"])
    return out


def predict_states(layout: WeightLayout, window: dict[str, torch.Tensor], theta0: dict[str, torch.Tensor],
                   extrapolator: Extrapolator, steps: int) -> list[dict[str, torch.Tensor]]:
    """Full state dicts for each of the `steps` predictions (BN and buffers from Θ0)."""
    pred = extrapolator.predict(window, steps)
    return [layout.unflatten({k: pred[k][j] for k in KINDS}, theta0) for j in range(steps)]


# ============================================================================ meta-training (card section 4)
def known_samples(snapshots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs along the *reversed* forgetting trajectory (card section 4): `snapshots` [S, P] in recording
    order (Θ0 = full data first). The reversed series v = snapshots.flip(0) runs from the most forgotten toward
    the full data; every window v[i:i+5] -> residual target v[i+5] − v[i+4]. Returns x [M, 5], y [M] with
    M = (S − 5) · P (S >= 6 needed)."""
    v = snapshots.flip(0).float()
    S = v.shape[0]
    if S < KNOWN_WINDOW + 1:
        raise ValueError(f"meta-training needs at least {KNOWN_WINDOW + 1} snapshots, got {S}")
    xs = [v[i:i + KNOWN_WINDOW].t() for i in range(S - KNOWN_WINDOW)]
    ys = [v[i + KNOWN_WINDOW] - v[i + KNOWN_WINDOW - 1] for i in range(S - KNOWN_WINDOW)]
    return torch.cat(xs), torch.cat(ys)


def train_known(x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float = 1e-3, batch_size: int = 4096,
                seed: int = 0, init: Optional[KnownNet] = None, log: Optional[Any] = None) -> KnownNet:
    """Card section 4: ℓ1 loss on the residual, Adam(lr). Starts from `init` (e.g. the official weights) or the
    Keras initialisation; one pass over the shuffled samples per epoch."""
    from bench.seeding import generator
    g = generator(seed, "known/meta")
    if init is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2 ** 31, (1,), generator=g)))
            net = KnownNet()
    else:
        net = init
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = x.shape[0]
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = (net(x[idx]) - y[idx]).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        if log is not None:
            log({"epoch": epoch, "meta_l1": total / max(n, 1)})
    return net.eval()
