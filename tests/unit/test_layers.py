"""The layering of the library, checked from the source (issue 18, item 4).

Every module of every package that pyproject.toml maps (``[tool.setuptools] package-dir``) is parsed
with :mod:`ast`; every import statement counts, including those inside functions and under
``if TYPE_CHECKING`` (relative imports resolved). The tests fail on

- an import cycle between modules of the library (the cycle is printed);
- an import that runs up a layer (``ALLOWED`` says which attnsift packages each package may import;
  a package may always import itself);
- a module over ``MAX_LINES`` lines.

Implementations named only as strings (``attnsift/registry.py``, resolved with importlib) are not
import statements and are allowed.
"""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 500
CORE = "core"  # the modules directly in attnsift/ (types, pipeline, config, errors, registry, io, trec)

_LEAVES = {CORE, "eval", "indexes", "attention_kernels"}
_MIDDLE = _LEAVES | {"retrieval", "rerank"}
ALLOWED: dict[str, set[str]] = {
    CORE: {CORE},
    "eval": {CORE},
    "indexes": {CORE},
    "attention_kernels": {CORE},
    "retrieval": {CORE, "indexes", "attention_kernels"},
    "rerank": {CORE, "attention_kernels"},
    # Integrations wrap Pipeline (ARCHITECTURE.md): the Ray engine, the framework components, the server.
    "engines": _MIDDLE | {"engines"},
    "bench": _MIDDLE | {"engines"},
    "analysis": _MIDDLE | {"bench"},
    "train": _MIDDLE,
    "integrations": _MIDDLE | {"integrations"},
    "serve": _MIDDLE | {"serve"},
    "cli": _MIDDLE | {"bench", "analysis", "train", "cli", "engines", "serve"},
}


# ------------------------------------------------------------------------------------------ the checker

def package_dirs(root: Path) -> dict[str, Path]:
    """``{package: folder}`` from the ``package-dir`` table of ``root/pyproject.toml``."""
    cfg = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    table = cfg["tool"]["setuptools"]["package-dir"]
    return {pkg: root / folder for pkg, folder in table.items()}


def collect_modules(root: Path) -> dict[str, Path]:
    """``{module name: file}`` for every ``.py`` file under the mapped folders (a folder's
    ``__init__.py`` is the package itself)."""
    dirs = package_dirs(root)
    mapped = {d.resolve() for d in dirs.values()}
    out: dict[str, Path] = {}
    for pkg, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            if "__pycache__" in rel.parts:
                continue
            # a subfolder mapped on its own belongs to that package, not to this one
            if any(p.resolve() in mapped for p in list(path.parents)[: len(rel.parts) - 1]):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([pkg, *parts])] = path
    return out


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """The library modules that ``module`` imports, as ``(module, line)``, every statement counted.

    ``from a.b import c`` names the module ``a.b.c`` when it is one, else ``a.b``; a name below a
    module (``a.b.C``) is attributed to the longest library module it starts with.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            m = owner(t)
            if m is not None and m != module:
                found.append((m, node.lineno))
    return sorted(found, key=lambda e: e[1])


def layer_of(module: str) -> str:
    """``attnsift.rerank.icr`` -> ``rerank``; a module directly in ``attnsift`` -> ``core``."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ALLOWED and parts[1] != CORE:
        return parts[1]
    return CORE


def import_graph(root: Path) -> dict[str, list[tuple[str, int]]]:
    """``{module: [(imported module, line), ...]}`` over the whole library under ``root``."""
    modules = collect_modules(root)
    known = set(modules)
    return {m: imports_of(m, p, known) for m, p in modules.items()}


def find_cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one module."""
    succ = {m: sorted({t for t, _ in edges}) for m, edges in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan; the graph has a few hundred nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ.get(v, []):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(succ):
        if v not in index:
            strongconnect(v)
    return [_cycle_through(comp, succ) for comp in components]


def _cycle_through(component: list[str], succ: dict[str, list[str]]) -> list[str]:
    """A shortest cycle from the component's first module back to it (breadth first)."""
    members, start = set(component), component[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in succ[v]:
                if w == start:
                    path = [v]  # walk back: v, parent of v, ..., start
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w in members and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return component  # not reached: a strongly connected component always has a cycle


def upward_imports(graph: dict[str, list[tuple[str, int]]], modules: dict[str, Path], root: Path) -> list[str]:
    """``file:line: a (layer) imports b (layer)`` for every import that ``ALLOWED`` does not permit."""
    out = []
    for m, edges in sorted(graph.items()):
        src = layer_of(m)
        for t, line in edges:
            dst = layer_of(t)
            if dst != src and dst not in ALLOWED.get(src, set()):
                out.append((str(modules[m].relative_to(root)), line, f"{m} ({src}) imports {t} ({dst})"))
    return [f"{f}:{line}: {what}" for f, line, what in sorted(out)]


def oversized(modules: dict[str, Path], limit: int = MAX_LINES) -> list[str]:
    """``file: N lines`` for every module longer than ``limit`` lines."""
    out = []
    for m, p in sorted(modules.items()):
        n = len(p.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out.append(f"{m} ({p.name}): {n} lines")
    return out


# ------------------------------------------------------------------------------------------ the library

def test_every_package_has_a_layer():
    unknown = sorted({layer_of(m) for m in collect_modules(REPO)} - set(ALLOWED))
    top = sorted({pkg.split(".")[1] for pkg in package_dirs(REPO) if "." in pkg} - set(ALLOWED))
    assert not unknown and not top, f"packages without a layer in ALLOWED: {top or unknown}"


def test_no_import_cycles():
    cycles = find_cycles(import_graph(REPO))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_upward_imports():
    bad = upward_imports(import_graph(REPO), collect_modules(REPO), REPO)
    assert not bad, f"{len(bad)} imports run up a layer:\n" + "\n".join(bad)


def test_no_module_over_the_size_limit():
    big = oversized(collect_modules(REPO))
    assert not big, f"modules over {MAX_LINES} lines:\n" + "\n".join(big)


# ------------------------------------------------------------------------------------------ the check itself

def _fake_tree(root: Path, files: dict[str, str]) -> Path:
    (root / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "attnsift" = "attnsift", "attnsift.eval" = "eval", '
        '"attnsift.rerank" = "rerank" }\n'
    )
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_check_flags_a_cycle_an_upward_import_and_a_long_module(tmp_path):
    root = _fake_tree(tmp_path, {
        "attnsift/__init__.py": "",
        "attnsift/types.py": "def f():\n    from attnsift.eval.trec import read\n",  # core -> eval: upward
        "eval/__init__.py": "",
        "eval/trec.py": "from ..types import f\nfrom . import metrics\n",  # relative imports resolved
        "eval/metrics.py": "import attnsift.eval.trec as t\n",  # cycle trec <-> metrics
        "rerank/__init__.py": "",
        "rerank/icr.py": "from attnsift.eval.metrics import x\n" + "pass\n" * 501,  # rerank -> eval: upward
    })
    modules = collect_modules(root)
    assert set(modules) == {"attnsift", "attnsift.types", "attnsift.eval", "attnsift.eval.trec",
                            "attnsift.eval.metrics", "attnsift.rerank", "attnsift.rerank.icr"}
    graph = import_graph(root)
    assert graph["attnsift.eval.trec"] == [("attnsift.types", 1), ("attnsift.eval.metrics", 2)]
    cycles = find_cycles(graph)
    # one strongly connected component {types, trec, metrics}: its shortest cycle from its first module
    assert cycles == [["attnsift.eval.metrics", "attnsift.eval.trec", "attnsift.eval.metrics"]]
    bad = upward_imports(graph, modules, root)
    assert bad == [
        "attnsift/types.py:2: attnsift.types (core) imports attnsift.eval.trec (eval)",
        "rerank/icr.py:1: attnsift.rerank.icr (rerank) imports attnsift.eval.metrics (eval)",
    ]
    assert oversized(modules) == ["attnsift.rerank.icr (icr.py): 502 lines"]


def test_the_check_passes_a_clean_tree(tmp_path):
    root = _fake_tree(tmp_path, {
        "attnsift/__init__.py": "",
        "attnsift/types.py": "import json\n",
        "attnsift/registry.py": "import importlib\nIMPL = 'attnsift.rerank.icr:ICR'\n",  # a string, not an import
        "eval/__init__.py": "from attnsift.eval.metrics import x\n",
        "eval/metrics.py": "from attnsift import types\nx = 1\n",
        "rerank/__init__.py": "",
        "rerank/icr.py": "from attnsift.types import f\n",
    })
    graph = import_graph(root)
    assert find_cycles(graph) == []
    assert upward_imports(graph, collect_modules(root), root) == []
    assert graph["attnsift.eval.metrics"] == [("attnsift.types", 1)]


@pytest.mark.parametrize("module,layer", [("attnsift", CORE), ("attnsift.trec", CORE), ("attnsift.eval", "eval"),
                                          ("attnsift.eval.datasets.base", "eval"), ("attnsift.cli.main", "cli")])
def test_layer_of(module, layer):
    assert layer_of(module) == layer
