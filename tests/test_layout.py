"""The layout the project promises: no import cycles, a generic engine, one package per paper."""
from __future__ import annotations

import ast
from pathlib import Path

from bench.method import METHODS, load_methods
from bench.paper import papers

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "baselines", "methods", "report")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = p
    return mods


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Project modules `name` imports anywhere (module level and function bodies), TYPE_CHECKING blocks aside."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for blk in ast.walk(tree) if isinstance(blk, ast.If) and _is_type_checking(blk)
            for n in ast.walk(blk)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def test_no_import_cycles_among_project_modules():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        stack.pop()
        return None
    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_engine_never_imports_a_paper_or_a_baseline():
    bad = [(m, t) for m, ts in _graph().items() if m.split(".")[0] == "bench"
           for t in ts if t.split(".")[0] in ("methods", "baselines")]
    assert bad == []


def test_the_engine_names_no_paper_and_no_method_in_its_code():
    """String constants and names in bench/ (docstrings and comments may cite a paper) are never a registered
    method or a paper key: the engine reaches them through the registries only."""
    load_methods()
    names = set(METHODS.names()) | {p.key for p in papers()} | {m for p in papers() for m in p.methods}
    hits = []
    for p in (ROOT / "bench").rglob("*.py"):
        tree = ast.parse(p.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs \
                    and node.value in names:
                hits.append(f"{p.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert hits == []


def test_every_method_lives_in_a_paper_package_or_baselines():
    load_methods()
    for name in METHODS.names():
        module = METHODS.get(name).__module__
        parts = module.split(".")
        if parts[0] not in ("bench", "report", "methods", "baselines"):
            continue          # a probe a test registered
        assert parts[0] == "baselines" or (parts[0] == "methods" and len(parts) == 3), (name, module)


def test_every_paper_declares_its_metadata_in_its_own_package():
    for p in papers():
        assert p.reference is None or p.reference.is_file(), p.key
        assert p.reference is None or p.reference.parent.name == p.key
        assert (ROOT / "methods" / p.key / "paper.py").is_file()
        assert (Path(__file__).resolve().parents[2] / "shared" / "papers" / p.card).name == p.card
        for c in p.claims:
            assert c.a.method in METHODS and c.b.method in METHODS, (p.key, c.key)
