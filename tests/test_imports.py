"""The package's import graph has no cycles: between modules, or between subpackages (the layering in
docs/architecture.md). Imports inside functions count too: they only hide an edge, they do not remove it."""

from __future__ import annotations

import ast
from pathlib import Path

import tuner

PACKAGE = Path(tuner.__file__).parent


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from a.b import c`` counts a.b.c if it is a module, else a.b)."""
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    top = root.name

    def resolve(name: str) -> str:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {m: set() for m in paths}
    for module, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                package = module.split(".")[: len(module.split(".")) - node.level] if node.level else []
                base = ".".join([*package, node.module] if node.module else package)
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[module] |= {resolve(n) for n in names if n.split(".")[0] == top} - {module, ""}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def subpackages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    def head(m: str) -> str:
        return ".".join(m.split(".")[:2])

    out: dict[str, set[str]] = {}
    for m, targets in graph.items():
        out.setdefault(head(m), set()).update(head(t) for t in targets if head(t) != head(m))
    return out


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_no_subpackage_imports_itself_through_others() -> None:
    assert cycles(subpackages(import_graph(PACKAGE))) == []


def test_a_cycle_is_found_also_through_an_import_inside_a_function(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "a").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a" / "__init__.py").write_text("")
    (root / "a" / "x.py").write_text("from pkg.b import y\n")
    (root / "b.py").write_text("def f():\n    from .a.x import thing\n")
    graph = import_graph(root)
    assert graph["pkg.a.x"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a.x"}
    assert cycles(graph) == [["pkg.a.x", "pkg.b"]]
    assert cycles(subpackages(graph)) == [["pkg.a", "pkg.b"]]


# Imports inside functions, and why (docs/architecture.md): libraries only some commands need, loaded when they do.
LAZY_LIBRARIES = {"matplotlib", "mlflow", "boto3", "botocore", "lightning", "transformers"}
# tuner/_ray.py imports each private Ray module at the call that needs it, so a Ray upgrade fails that call alone;
# the entry points import the driver once the config has composed, so a typo is reported before Ray loads.
LAZY_MODULES = {"tuner._ray", "tuner.run.__main__", "tuner.check.__main__"}


def imports_in_functions(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found += [(inner.lineno, a.name) for a in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    found.append((inner.lineno, "." * inner.level + (inner.module or "")))
    return found


def test_imports_are_at_module_top_unless_listed_here() -> None:
    stray = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if module_name(path, PACKAGE) not in LAZY_MODULES
        for line, name in imports_in_functions(path)
        if name.split(".")[0] not in LAZY_LIBRARIES
    ]
    assert not stray, "import at the module's top (or add the reason here):\n" + "\n".join(stray)
