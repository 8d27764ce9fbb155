"""KNOWN port: the released Keras weights reproduce the card's reference outputs with both backends (the fused C++
CPU kernel and the PyTorch path); loader, layout, chunking, threads."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import bench.paths
from bench.config import ModelConfig
import methods.know.kernel as known_kernel
from methods.know.layout import KINDS, WeightLayout
from methods.know.extrapolate import KnownExtrapolator
from methods.know.known import KnownNet, keras_layer_map, known_backend, load_keras_h5, load_known
from bench.train import init_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


WEIGHTS = Path(bench.paths.PROJECT_ROOT).parent / "shared" / "papers" / "know-weights"

# card section 2: residual (before adding w_0) for constant histories [c]*5
CONSTANT = {0.00: (+0.000297, +0.000293, +0.000021), 0.01: (-0.003283, -0.000818, -0.003413),
            0.05: (-0.011075, -0.003794, -0.011254), 0.10: (-0.019623, -0.006366, -0.019826),
            0.20: (-0.040037, -0.011056, -0.037208), -0.10: (+0.015945, +0.004608, +0.014029)}
TOY = [0.050, 0.056, 0.060, 0.063, 0.065]
TOY_STEPS = {"conv": (0.052339, 0.040448, 0.029600), "fc": (0.061187, 0.056848, 0.052534),
             "bias": (0.057437, 0.039875, 0.008395)}


@pytest.fixture(scope="module")
def official() -> dict[str, KnownNet]:
    if not all((WEIGHTS / f"KNOWN_{n}.h5").is_file() for n in ("Conv", "FC", "Bias")):
        pytest.skip(f"official KNOWN weights absent ({WEIGHTS})")
    pytest.importorskip("h5py")
    return load_known(str(WEIGHTS))


@pytest.fixture(params=["kernel", "torch"])
def backend(request) -> str:
    """Both backends; the kernel skips only where this machine has no C++ compiler at all."""
    if request.param == "kernel" and not known_kernel.available():
        why = known_kernel.why_unavailable() or ""
        if why.startswith("no C++ compiler"):
            pytest.skip(why)
        pytest.fail(f"the KNOWN kernel does not build here: {why}")
    return request.param


def test_official_constant_histories(official, backend: str) -> None:
    x = torch.tensor([[c] * 5 for c in CONSTANT])
    for j, kind in enumerate(KINDS):
        got = official[kind].residual(x, backend=backend)
        want = torch.tensor([v[j] for v in CONSTANT.values()])
        assert torch.allclose(got, want, atol=1e-5, rtol=0), (kind, got, want)


def test_official_toy_history_three_steps(official, backend: str) -> None:
    window = {k: torch.tensor(TOY).unsqueeze(1) for k in KINDS}
    pred = KnownExtrapolator(official, backend=backend).predict(window, 3)
    for kind in KINDS:
        assert torch.allclose(pred[kind][:, 0], torch.tensor(TOY_STEPS[kind]), atol=1e-5, rtol=0), kind


def test_parameter_count_and_layer_map() -> None:
    assert sum(p.numel() for p in KnownNet().parameters()) == 9425
    names = keras_layer_map()
    assert sorted(names) == sorted(["dense"] + [f"dense_{i}" for i in range(1, 13)])
    params = dict(KnownNet().named_parameters())
    for stream, role in names.values():
        prefix = f"{stream}." if stream else ""
        assert f"{prefix}k{role}" in params and f"{prefix}b{role}" in params


def test_keras_h5_roundtrip(tmp_path: Path) -> None:
    """A Keras-layout file written from a random net loads back to the same function."""
    h5py = pytest.importorskip("h5py")
    torch.manual_seed(0)
    net = KnownNet()
    params = dict(net.named_parameters())
    path = tmp_path / "k.h5"
    with h5py.File(path, "w") as f:
        for layer, (stream, role) in keras_layer_map().items():
            g = f.create_group(layer).create_group(layer)
            prefix = f"{stream}." if stream else ""
            g["kernel:0"] = params[f"{prefix}k{role}"].detach().numpy()
            g["bias:0"] = params[f"{prefix}b{role}"].detach().numpy()
    loaded = load_keras_h5(path)
    x = torch.randn(100, 5) * 0.1
    assert torch.equal(loaded.residual(x), net.residual(x))


def test_chunked_inference_matches_autograd_forward() -> None:
    torch.manual_seed(1)
    net = KnownNet()
    x = torch.randn(1000, 5) * 0.1
    ref = net(x)                      # grad-enabled path (out-of-place)
    assert ref.requires_grad
    for chunk in (1, 7, 256, 4096):
        assert torch.allclose(net.residual(x, chunk, backend="torch"), ref.detach(), atol=1e-6)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 1000, 5003])
def test_kernel_matches_the_float64_function_at_any_size(n: int, backend: str) -> None:
    """Block tails (n not a multiple of the kernel's 16 lanes) and thread splits give the same function."""
    torch.manual_seed(3)
    net = KnownNet()
    x = (torch.randn(n, 5) * 0.05).cumsum(1)
    ref = net.double()(x.double()).float().detach()
    net.float()
    for workers in (1, 3):
        got = net.residual(x, workers=workers, backend=backend)
        assert got.shape == (n,)
        assert torch.allclose(got, ref, atol=1e-6, rtol=0), (workers, (got - ref).abs().max())


def test_kernel_off_switch_falls_back_to_torch(monkeypatch) -> None:
    monkeypatch.setenv("FORGETBENCH_KNOWN_KERNEL", "0")
    monkeypatch.setattr(known_kernel, "_lib", None)
    monkeypatch.setattr(known_kernel, "_why", None)
    assert known_backend("cpu") == "torch"
    assert "FORGETBENCH_KNOWN_KERNEL=0" in known_kernel.why_unavailable()
    x = torch.randn(50, 5) * 0.1
    net = KnownNet()
    assert torch.equal(net.residual(x), net.residual(x, backend="torch"))
    with pytest.raises(RuntimeError, match="FORGETBENCH_KNOWN_KERNEL=0"):
        net.residual(x, backend="kernel")
    with pytest.raises(ValueError, match="backend"):
        net.residual(x, backend="gpu")


@pytest.mark.parametrize("name", ["small_cnn", "resnet18_cifar"])
def test_layout_kinds_and_roundtrip(name: str) -> None:
    kwargs = {"width": 4}
    model = init_model(ModelConfig(name=name, kwargs=kwargs), num_classes=3, in_chans=3, img_size=8, seed=0)
    layout = WeightLayout.of(model)
    state = model.state_dict()
    kinds = {k: kind for k, kind, _ in layout.entries}
    assert all(kinds[k] == "conv" for k in kinds if state[k].ndim == 4)
    assert not any(k.endswith("running_mean") for k in kinds)
    for key, mod in model.named_modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            assert f"{key}.weight" not in kinds and f"{key}.bias" not in kinds
    head = [k for k, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    assert kinds[f"{head}.weight"] == "fc" and kinds[f"{head}.bias"] == "bias"
    flat = layout.flatten(state)
    assert sum(v.numel() for v in flat.values()) == sum(state[k].numel() for k in kinds)
    new = layout.unflatten({k: v + 1 for k, v in flat.items()}, state)
    for k, v in state.items():
        assert torch.equal(new[k], v + 1 if k in kinds else v), k


def test_threaded_residual_matches_single_thread() -> None:
    torch.manual_seed(2)
    net = KnownNet()
    x = torch.randn(5000, 5) * 0.1
    one = net.residual(x, chunk=64, workers=1)
    assert torch.allclose(net.residual(x, chunk=64, workers=3), one, atol=1e-7)
    assert torch.get_num_threads() == 1   # restored (the autouse fixture set 1)


def test_kernel_window_steps_match_the_torch_path(backend: str) -> None:
    """Three recursive steps read in place from the window's rows (vector loads + a tail) equal the torch path."""
    torch.manual_seed(4)
    nets = {k: KnownNet() for k in KINDS}
    window = {k: (torch.randn(6, n) * 0.05).cumsum(0) for k, n in zip(KINDS, (5003, 32, 1))}
    want = KnownExtrapolator(nets, backend="torch").predict(window, 3)
    got = KnownExtrapolator(nets, backend=backend).predict(window, 3)
    for k in KINDS:
        assert torch.allclose(got[k], want[k], atol=1e-6, rtol=0), (k, (got[k] - want[k]).abs().max())


def test_kernel_builds_into_an_empty_cache(tmp_path: Path, monkeypatch) -> None:
    """A fresh machine: the library is compiled into $FORGETBENCH_KERNEL_CACHE and gives the torch path's values."""
    if known_kernel._compiler() is None:
        pytest.skip("no C++ compiler on this machine")
    monkeypatch.setenv("FORGETBENCH_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(known_kernel, "_lib", None)
    monkeypatch.setattr(known_kernel, "_why", None)
    assert known_kernel.available(), known_kernel.why_unavailable()
    # no temporary file left behind: the library, its recorded sha256 (checked at load) and the build lock
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".lock", ".sha256", ".so"]
    net = KnownNet()
    x = torch.randn(100, 5) * 0.1
    assert torch.allclose(net.residual(x, backend="kernel"), net.residual(x, backend="torch"), atol=1e-6)
