"""The fused CPU kernel for KNOWN's residual (kernel.cpp beside this file): compiled on first use with the system C++
compiler for this CPU (`-march=native`), cached as a shared library under ~/.cache/forgetbench/kernels
($FORGETBENCH_KERNEL_CACHE) keyed by the source, the flags, the compiler and the CPU, and called through ctypes
from one thread per core. The cached library is loaded only when it (and its folder) belong to this user, are not
group/world writable, and its sha256 matches the hash recorded at build (`<name>.so.sha256`); otherwise it is
rebuilt with a KernelCacheWarning (see bench.security).

`load()` returns None (and `why_unavailable()` says why) where no compiler works or FORGETBENCH_KNOWN_KERNEL=0;
callers then use the PyTorch path of `KnownNet.residual`, which computes the same function."""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import torch

from bench.paths import kernel_cache_root
from bench.security import hash_sidecar, record_hash, unsafe_folder_reason, untrusted_reason

SOURCE = Path(__file__).with_name("kernel.cpp")
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-shared", "-fPIC"]
# packed weight buffer, in the order the kernel reads it (sizes in floats)
PACKED_LAYOUT = ([("k_in", 5 * 144), ("b_in", 144)]
                 + [(f"{name}{j}", size) for j in range(2)
                    for name, size in (("k_mid", 8 * 160), ("b_mid", 160), ("k5", 64 * 32))]
                 + [("k_head", 64), ("b_head", 1)])

_lib: Optional[ctypes.CDLL] = None
_why: Optional[str] = None


def _cpu_key() -> str:
    """The CPU's model and feature flags (the library is built with -march=native)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return platform.processor() or platform.machine()


def _compiler() -> Optional[str]:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def library_path(cxx: str) -> Path:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), cxx, version, _cpu_key()]).encode())
    return kernel_cache_root() / f"known-{key.hexdigest()[:16]}.so"


def load() -> Optional[ctypes.CDLL]:
    """The compiled kernel (built once per machine and source), or None where it cannot be built."""
    global _lib, _why
    if _lib is not None or _why is not None:
        return _lib
    if os.environ.get("FORGETBENCH_KNOWN_KERNEL", "1") == "0":
        _why = "disabled by FORGETBENCH_KNOWN_KERNEL=0"
        return None
    cxx = _compiler()
    if cxx is None:
        _why = "no C++ compiler found (set CXX)"
        return None
    try:
        lib = _build_and_load(cxx)
    except OSError as err:
        _why = f"cannot build or load the kernel: {err}"
        return None
    if isinstance(lib, str):
        _why = lib
        return None
    lib.known_residual.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_int]
    lib.known_residual.restype = None
    _lib = lib
    return lib


class KernelCacheWarning(UserWarning):
    """The cached kernel could not be trusted (owner, mode or hash): it is rebuilt."""


def _build_and_load(cxx: str) -> ctypes.CDLL | str:
    """Build (if needed) and load the library; a string says why it cannot be built.

    The cached .so is loaded only when it and its folder are this user's and not group/world writable and its
    sha256 equals the hash recorded at build (`<name>.so.sha256`); otherwise it is rebuilt, with a warning. A
    folder that others could write to is not used at all: the kernel is then built into a private temp folder.
    Build, check and load happen under a file lock, so concurrent processes never load each other's half-step.
    """
    from filelock import FileLock

    path = library_path(cxx)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    problem = unsafe_folder_reason(path.parent)
    if problem:
        warnings.warn(f"KNOWN kernel cache not used ({problem}): building into a private temp folder",
                      KernelCacheWarning, stacklevel=3)
        path = Path(tempfile.mkdtemp(prefix="forgetbench-kernel-")) / path.name
    with FileLock(str(path) + ".lock"):
        if os.path.lexists(path):
            problem = untrusted_reason(path)
            if problem:
                warnings.warn(f"KNOWN kernel cache {path} is not trusted ({problem}): rebuilding",
                              KernelCacheWarning, stacklevel=3)
                path.unlink()
                hash_sidecar(path).unlink(missing_ok=True)
        if not path.is_file():
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
            os.close(fd)
            proc = subprocess.run([cxx, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True)
            if proc.returncode != 0:
                os.unlink(tmp)
                return f"{cxx} failed: {proc.stderr.strip()[-500:]}"
            os.chmod(tmp, 0o700)
            os.replace(tmp, path)            # atomic: concurrent builders never load a half-written file
            record_hash(path)
        problem = untrusted_reason(path)
        if problem:
            return f"the freshly built kernel {path} is not trusted: {problem}"
        return ctypes.CDLL(str(path))


def available() -> bool:
    """Whether the kernel builds and loads on this machine."""
    return load() is not None


def why_unavailable() -> Optional[str]:
    load()
    return _why


def pack(packed: dict) -> torch.Tensor:
    """One contiguous float32 buffer of `KnownNet.packed()` in the kernel's order (PACKED_LAYOUT)."""
    parts = {"k_in": packed["k_in"], "b_in": packed["b_in"], "k_head": packed["k_head"], "b_head": packed["b_head"]}
    for j in range(2):
        parts[f"k_mid{j}"], parts[f"b_mid{j}"], parts[f"k5{j}"] = packed["k_mid"][j], packed["b_mid"][j], packed["k5"][j]
    flat = []
    for name, size in PACKED_LAYOUT:
        t = parts[name].detach().float().cpu().contiguous().reshape(-1)
        if t.numel() != size:
            raise ValueError(f"packed KNOWN weight {name} has {t.numel()} values, the kernel expects {size}")
        flat.append(t)
    return torch.cat(flat)


def residual(x1: torch.Tensor, weights: torch.Tensor, workers: int = 1) -> torch.Tensor:
    """KNOWN's residual of x1 [N, 5] (float32, CPU) with a `pack`ed buffer."""
    x1 = x1.detach().float().contiguous()
    if x1.device.type != "cpu" or x1.ndim != 2 or x1.shape[1] != 5:
        raise ValueError(f"x1 must be a CPU tensor [N, 5], got {tuple(x1.shape)} on {x1.device}")
    out = torch.empty(x1.shape[0], dtype=torch.float32)
    _run([x1.data_ptr() + 4 * k for k in range(5)], 5, x1.shape[0], weights, out, False, workers)
    return out


def step(rows: list[torch.Tensor], weights: torch.Tensor, out: torch.Tensor, workers: int = 1) -> torch.Tensor:
    """One KNOWN step on a window given as 5 rows [P] (most forgotten first, w_0 last; float32, contiguous, CPU):
    writes w_0 + residual into `out` [P] and returns it. The rows are read in place, so sliding the window costs
    nothing."""
    if len(rows) != 5:
        raise ValueError(f"a KNOWN window has 5 rows, got {len(rows)}")
    n = out.numel()
    for r in [*rows, out]:
        if r.device.type != "cpu" or r.dtype != torch.float32 or not r.is_contiguous() or r.numel() != n:
            raise ValueError(f"window rows and out must be contiguous float32 CPU tensors of {n} values, got "
                             f"{r.dtype} {tuple(r.shape)} on {r.device}")
    _run([r.data_ptr() for r in rows], 1, n, weights, out, True, workers)
    return out


def _run(row_ptrs: list[int], stride: int, n: int, weights: torch.Tensor, out: torch.Tensor, add_last: bool,
         workers: int) -> None:
    """The kernel on `workers` threads over equal slices (ctypes releases the GIL during each call)."""
    lib = load()
    if lib is None:
        raise RuntimeError(f"the KNOWN CPU kernel is unavailable: {_why}")
    weights = weights.contiguous()
    workers = max(1, min(int(workers), n // 1024 or 1))
    bounds = [n * i // workers for i in range(workers + 1)]

    def part(i: int) -> None:
        lo, hi = bounds[i], bounds[i + 1]
        ptrs = (ctypes.c_void_p * 5)(*[p + 4 * stride * lo for p in row_ptrs])
        lib.known_residual(ptrs, stride, hi - lo, weights.data_ptr(), out.data_ptr() + 4 * lo, int(add_last))

    if workers == 1:
        part(0)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(part, range(workers)))
