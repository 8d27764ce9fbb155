"""The KNOWN hyper-model (card sections 2 and 4): the PyTorch port, its Keras HDF5 loader, the CPU/accelerator
backend decision, and meta-training on forgetting trajectories."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

import methods.know.kernel as known_kernel
from bench.paths import PROJECT_ROOT
from bench.seeding import generator
from methods.know.layout import KINDS

KNOWN_WINDOW = 5                     # KNOWN reads 5 snapshots (card section 2)
LEAKY_SLOPE = 0.3                    # Keras LeakyReLU default (card section 2), not PyTorch's 0.01
KERAS_KIND_FILES = {"conv": "KNOWN_Conv.h5", "fc": "KNOWN_FC.h5", "bias": "KNOWN_Bias.h5"}
KNOWN_BACKENDS = ("auto", "kernel", "torch")   # see KnownNet.residual


def official_weights_dir() -> Path:
    """../shared/papers/know-weights next to the project (may not exist)."""
    return Path(PROJECT_ROOT).parent / "shared" / "papers" / "know-weights"

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


def known_backend(device: str | torch.device, backend: str = "auto") -> str:
    """The backend KNOWN runs with for `backend` on `device`: 'kernel' (CPU only; 'kernel' asked for where it
    cannot build raises when called) or 'torch'."""
    if backend not in KNOWN_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, KNOWN_BACKENDS))}, got {backend!r}")
    if torch.device(device).type != "cpu" or backend == "torch":
        return "torch"
    if backend == "kernel":
        return "kernel"
    return "kernel" if known_kernel.available() else "torch"



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
