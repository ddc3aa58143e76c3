"""The package's layout: no import cycle between modules, no module ``__getattr__`` shim,
every package re-export used, and the torch-free packages stay torch-free."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import partlearn

ROOT = Path(partlearn.__file__).parent
REPO = ROOT.parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _edges(name: str, path: Path) -> set[str]:
    """Every partlearn module ``name`` imports, at module level or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base.startswith("partlearn"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in MODULES else base)
    return {m for m in out if m in MODULES and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    graph = {name: _edges(name, path) for name, path in MODULES.items()}
    # a package's __init__ importing its own modules is not a cycle; a module importing its
    # package's __init__ back is
    assert _cycles(graph) == []


def test_cycle_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_getattr_shim():
    shims = [name for name, path in MODULES.items()
             if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__"
                    for n in ast.parse(path.read_text()).body)]
    assert shims == []


def _all(path: Path) -> list[str]:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__"
                                                for t in node.targets):
            return [ast.literal_eval(e) for e in node.value.elts]
    return []


PACKAGES = sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_reexport_is_used(package):
    """A name a package's ``__init__`` re-exports is used outside that package."""
    init = ROOT / package / "__init__.py"
    names = _all(init)
    outside = [p for p in list(REPO.glob("partlearn/**/*.py")) + list(REPO.glob("tests/**/*.py"))
               + list(REPO.glob("benchmarks/*.py")) + [REPO / "README.md"]
               if ROOT / package not in p.parents]
    text = "\n".join(p.read_text() for p in outside)
    unused = [n for n in names if not re.search(rf"\b{re.escape(n)}\b", text)]
    assert unused == [], f"partlearn.{package} re-exports names nothing uses: {unused}"
    # and each is really there
    module = __import__(f"partlearn.{package}", fromlist=names)
    assert all(hasattr(module, n) for n in names)


@pytest.mark.parametrize("module", ["partlearn", "partlearn.parts", "partlearn.encoding",
                                    "partlearn.classify", "partlearn.retrieval",
                                    "partlearn.data", "partlearn.runner"])
def test_torch_free_imports(module):
    """Only ``features``, ``dpnet`` and what runs them import torch."""
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
