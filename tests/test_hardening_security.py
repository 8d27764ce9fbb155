"""Issue 15, bullet 1: no code from data.

Every torch.load is weights_only (a planted last.pt runs nothing and the stage is retrained); CIFAR python
batches go through a restricted unpickler; `hf:` model kwargs are an allowed list and remote code needs
`forgetbench run --trust-remote-code`; the cached KNOWN kernel is loaded only when private and matching its
recorded hash; SLURM partition / sbatch values cannot inject #SBATCH or shell lines.
"""
from __future__ import annotations

import ast
import json
import os
import pickle
import stat
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.config import SpecError
from bench.security import TRUST_REMOTE_CODE_ENV, hash_sidecar, record_hash, untrusted_reason
from bench.store import RESULT, read_json
import yaml  # noqa: E402
from conftest import tiny_spec_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this creates `marker`: stands for arbitrary code in a planted file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ---------------------------------------------------------------------------------------------- torch.load
def test_every_torch_load_in_the_project_is_weights_only() -> None:
    offenders = []
    for folder in ("bench", "methods", "baselines", "report", "scripts", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                    kw = {k.arg: k.value for k in node.keywords}
                    ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                    if not ok:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


SPEC = yaml.safe_dump(tiny_spec_dict(), sort_keys=False)


def test_planted_resume_checkpoint_runs_no_code_and_the_stage_is_retrained(tmp_path) -> None:
    from bench.stages import DONE, StageDiscarded
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    (res_path,) = out.glob(f"tiny/*/{RESULT}")
    before = read_json(res_path)["metrics"]
    (sdir,) = out.glob("_stages/base-*/")
    marker = tmp_path / "pwned"
    torch.save({"epoch": 1, "model": Payload(marker), "optimizer": {}, "scheduler": {}}, sdir / "last.pt")
    (sdir / DONE).unlink()  # an unfinished stage with a planted checkpoint, e.g. in a shared store
    res_path.unlink()
    with pytest.warns(StageDiscarded, match="cannot resume"):
        assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert not marker.exists(), "the planted checkpoint ran code"
    assert read_json(res_path)["metrics"] == before
    pickle.loads(pickle.dumps(Payload(marker)))  # the payload is real: an unrestricted unpickler runs it
    assert marker.exists()


# ------------------------------------------------------------------------------------------ CIFAR pickles
def _cifar_folder(root: Path, *, evil: Path | None = None, protocol: int = 4) -> Path:
    from bench.data.sources import CIFAR10_CLASSES
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [1, 2], b"batch_label": b"x"}
        if evil is not None and name == "data_batch_3":
            d[b"extra"] = Payload(evil)
        (folder / name).write_bytes(pickle.dumps(d, protocol=protocol))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}))
    return folder


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_with_numpy_arrays_decode_through_the_restricted_unpickler(tmp_path, protocol) -> None:
    from bench.data.sources import Cifar10
    raw = Cifar10().decode(_cifar_folder(tmp_path, protocol=protocol))
    assert tuple(raw.x_train.shape) == (10, 3, 32, 32) and raw.y_train.tolist() == [1, 2] * 5


def test_python2_style_cifar_pickle_names_are_allowed() -> None:
    """The real CIFAR files were written by Python 2 numpy: numpy.core.multiarray._reconstruct, protocol 2."""
    from bench.data.sources import safe_unpickle
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    blob = pickle.dumps({b"data": arr, b"labels": [np.int64(3), 4]}, protocol=2)
    blob = blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray" in blob
    d = safe_unpickle(blob, "data_batch_1")
    assert np.array_equal(d[b"data"], arr) and d[b"labels"] == [3, 4]


def test_planted_cifar_batch_runs_no_code_and_the_error_names_the_file(tmp_path) -> None:
    from bench.data.sources import Cifar10
    marker = tmp_path / "pwned"
    folder = _cifar_folder(tmp_path, evil=marker)
    with pytest.raises(ValueError, match=r"data_batch_3.*refusing to load (io|builtins)\.open"):
        Cifar10().decode(folder)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    b"cos\nsystem\n(S'echo hi'\ntR.",                     # os.system
    b"cposix\nsystem\n(S'echo hi'\ntR.",                  # the same under its real module
    b"cbuiltins\neval\n(S'1+1'\ntR.",                     # eval
    b"c__builtin__\ngetattr\n(cos\nenviron\nS'x'\ntR.",  # Python 2 names, mapped by fix_imports
    b"cnumpy\nload\n(S'x.npy'\ntR.",                      # numpy, but not an array constructor
    b"ctorch\nload\n(S'x'\ntR.",
])
def test_restricted_unpickler_refuses_every_other_global(payload) -> None:
    from bench.data.sources import safe_unpickle
    with pytest.raises(pickle.UnpicklingError, match="batch_x: refusing to load"):
        safe_unpickle(payload, "batch_x")


# ------------------------------------------------------------------------------------------- hf: models
def _lm_spec(tmp_path: Path, kwargs: str) -> Path:
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    spec = tmp_path / "lm.yaml"
    spec.write_text(textwrap.dedent(f"""
        name: lm
        seeds: [0]
        datasets: [pydoc]
        models: [{{name: "hf:{model_dir}", kwargs: {kwargs}}}]
        methods: [plain_ft]
    """))
    return spec


@pytest.fixture()
def no_remote_code(monkeypatch):
    monkeypatch.delenv(TRUST_REMOTE_CODE_ENV, raising=False)
    yield
    os.environ.pop(TRUST_REMOTE_CODE_ENV, None)


@pytest.mark.parametrize("kwargs, field", [
    ("{trust_remote_code: true}", "models[0].kwargs.trust_remote_code"),
    ("{trust_remote_code: 'yes'}", "models[0].kwargs.trust_remote_code"),
    ("{code_revision: main}", "models[0].kwargs.code_revision"),
    ("{device_map: auto}", "models[0].kwargs.device_map"),
    ("{dtype: float8}", "models[0].kwargs.dtype"),
    ("{tokenizer: other}", "models[0].kwargs.tokenizer"),
])
def test_hf_kwargs_outside_the_allowed_list_exit_2_naming_the_field(tmp_path, capsys, no_remote_code, kwargs,
                                                                    field) -> None:
    # exported by hand, the variable does not count: only the flag does
    os.environ[TRUST_REMOTE_CODE_ENV] = "1"
    assert main(["run", str(_lm_spec(tmp_path, kwargs)), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_trust_remote_code_is_accepted_only_with_the_command_line_flag(tmp_path, capsys, no_remote_code) -> None:
    spec = _lm_spec(tmp_path, "{trust_remote_code: true, tokenizer: byte, dtype: float32}")
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--dry-run", "--trust-remote-code"]) == 0
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert "--trust-remote-code" in capsys.readouterr().err


def _remote_code_model(folder: Path, marker: Path) -> Path:
    """A model folder whose config maps to a Python file that creates `marker` when imported."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}}))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit('evil imported')\n")
    return folder


def test_remote_code_of_a_model_folder_never_runs_without_the_flag(tmp_path, no_remote_code) -> None:
    pytest.importorskip("transformers")
    from bench.config import ModelConfig
    from methods.contextfree.lm import ByteTokenizer, build_lm
    marker = tmp_path / "pwned"
    folder = _remote_code_model(tmp_path / "m", marker)
    for kwargs in ({"tokenizer": "byte"}, {"tokenizer": "byte", "trust_remote_code": False}):
        with pytest.raises(Exception):  # noqa: B017 - transformers refuses (ValueError) or the folder is odd
            build_lm(ModelConfig(f"hf:{folder}", kwargs), ByteTokenizer(), seed=0)
        assert not marker.exists()
    with pytest.raises(SpecError, match="trust_remote_code"):
        build_lm(ModelConfig(f"hf:{folder}", {"tokenizer": "byte", "trust_remote_code": True}), ByteTokenizer(),
                 seed=0)
    assert not marker.exists()


def test_hf_load_kwargs_are_explicit() -> None:
    from methods.contextfree.lm import hf_load_kwargs
    assert hf_load_kwargs({"tokenizer": "byte"}) == {"local_files_only": True, "trust_remote_code": False}
    assert hf_load_kwargs({"torch_dtype": "bfloat16", "attn_implementation": "eager"}) == {
        "local_files_only": True, "trust_remote_code": False, "dtype": torch.bfloat16, "attn_implementation": "eager"}


# ------------------------------------------------------------------------------------------ kernel cache
@pytest.fixture()
def kernel(tmp_path, monkeypatch):
    from methods.know import kernel as k
    if k._compiler() is None:
        pytest.skip("no C++ compiler")
    cache = tmp_path / "kernels"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("FORGETBENCH_KERNEL_CACHE", str(cache))
    monkeypatch.delenv("FORGETBENCH_KNOWN_KERNEL", raising=False)

    def fresh_load():
        monkeypatch.setattr(k, "_lib", None)
        monkeypatch.setattr(k, "_why", None)
        return k.load()
    yield k, cache, fresh_load
    monkeypatch.setattr(k, "_lib", None)
    monkeypatch.setattr(k, "_why", None)


def _so(cache: Path) -> Path:
    (so,) = cache.glob("known-*.so")
    return so


def _works(k, lib) -> None:
    assert lib is not None, k.why_unavailable()


def test_kernel_cache_records_its_hash_and_loads_when_private(kernel) -> None:
    import warnings

    k, cache, fresh_load = kernel
    _works(k, fresh_load())
    so = _so(cache)
    assert hash_sidecar(so).is_file() and untrusted_reason(so) is None
    assert not stat.S_IMODE(so.stat().st_mode) & 0o022
    with warnings.catch_warnings():
        warnings.simplefilter("error", k.KernelCacheWarning)
        _works(k, fresh_load())  # a trusted cache is reused silently


def _replace_content(so: Path) -> None:
    """A changed library, written beside and renamed over (never in place: this process has it mapped)."""
    tmp = so.with_suffix(".new")
    tmp.write_bytes(so.read_bytes() + b"\0")
    tmp.chmod(0o700)
    os.replace(tmp, so)


TAMPERING = {
    "content changed": (_replace_content, "sha256"),
    "group writable": (lambda so: so.chmod(0o775), "writable by group or others"),
    "world writable": (lambda so: so.chmod(0o757), "writable by group or others"),
    "hash missing": (lambda so: hash_sidecar(so).unlink(), "recorded at build"),
    "hash forged by others": (lambda so: hash_sidecar(so).chmod(0o666), "not a private file"),
    "a symlink": (lambda so: (so.rename(so.with_suffix(".real")), so.symlink_to(so.with_suffix(".real"))),
                  "not a regular file"),
}


@pytest.mark.parametrize("tampering", list(TAMPERING))
def test_untrusted_kernel_cache_is_rebuilt_with_a_warning(kernel, tampering) -> None:
    k, cache, fresh_load = kernel
    _works(k, fresh_load())
    so = _so(cache)
    change, reason = TAMPERING[tampering]
    change(so)
    assert reason in untrusted_reason(so)
    with pytest.warns(k.KernelCacheWarning, match=reason):
        _works(k, fresh_load())
    assert untrusted_reason(so) is None and not so.is_symlink()


def test_kernel_owned_by_someone_else_is_not_trusted(kernel, monkeypatch) -> None:
    import bench.security
    k, cache, fresh_load = kernel
    _works(k, fresh_load())
    other = os.getuid() + 4242
    monkeypatch.setattr(bench.security.os, "getuid", lambda: other)
    assert "owned by uid" in untrusted_reason(_so(cache))


def test_kernel_cache_folder_writable_by_others_is_not_used(kernel) -> None:
    k, cache, fresh_load = kernel
    cache.chmod(0o777)
    with pytest.warns(k.KernelCacheWarning, match="private temp folder"):
        _works(k, fresh_load())
    assert not list(cache.glob("known-*.so")), "nothing is built into a folder others can write"


def test_record_hash_is_private_and_matches(tmp_path) -> None:
    f = tmp_path / "lib.so"
    f.write_bytes(b"abc")
    f.chmod(0o700)
    digest = record_hash(f)
    assert hash_sidecar(f).read_text().strip() == digest and untrusted_reason(f) is None
    assert stat.S_IMODE(hash_sidecar(f).stat().st_mode) == 0o600


# ------------------------------------------------------------------------------------------------- SLURM
@pytest.mark.parametrize("resources, field", [
    ({"partition": "gpu\n#SBATCH --uid=0"}, "resources.partition"),
    ({"partition": "gpu #comment"}, "resources.partition"),
    ({"partition": "gpu\rx"}, "resources.partition"),
    ({"partition": "  "}, "resources.partition"),
    ({"sbatch": {"qos": "high\nrm -rf ~"}}, "resources.sbatch.qos"),
    ({"sbatch": {"comment": "a#b"}}, "resources.sbatch.comment"),
    ({"sbatch": {"account": "x\x1b[2J"}}, "resources.sbatch.account"),
    ({"sbatch": {"nice": float("nan")}}, "resources.sbatch.nice"),
])
def test_slurm_values_cannot_inject_directives(resources, field) -> None:
    from bench.slurm import parse_resources
    with pytest.raises(SpecError) as e:
        parse_resources(resources)
    assert e.value.path == field


def test_slurm_injection_in_a_spec_exits_2(tmp_path, capsys) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC + 'resources: {partition: "gpu\\n#SBATCH --mem=1T"}\n')
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert "resources.partition" in capsys.readouterr().err


def test_plain_slurm_values_still_pass() -> None:
    from bench.slurm import parse_resources
    res = parse_resources({"partition": "gpu-a100", "sbatch": {"qos": "high", "exclusive": True, "nice": 10,
                                                               "constraint": "a100|h100"}})
    assert res.partition == "gpu-a100" and res.sbatch["constraint"] == "a100|h100"


def test_readme_says_setup_lines_are_shell() -> None:
    text = (ROOT / "README.md").read_text()
    assert "setup:" in text and "shell" in text[text.index("`setup:`"):][:400].lower()
    assert "--trust-remote-code" in text
