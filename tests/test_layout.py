"""The house rules of labnet's layout, read from the code: no two modules import each other, nor two
packages (the folders directly under labnet/; imports inside functions count), the library never imports a
command (only ``__main__`` imports ``cli/``), no module over 400 lines, and ``import labnet`` imports none of
the heavy libraries (every plugin module imports labnet; ``labnet --help`` must stay fast)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "labnet"
MAX_LINES = 400
HEAVY = ("numpy", "mlflow", "hydra", "omegaconf", "matplotlib", "pandas")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The labnet modules a file imports, wherever the import stands (``from a import b`` is module a.b when
    there is one, else a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named = (f"{node.module}.{alias.name}" for alias in node.names)
            found |= {name if name in known else node.module for name in named}
    return {name for name in found if name in known}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
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
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def import_graph() -> dict[str, set[str]]:
    """labnet's modules and what each imports. The package's face (labnet/__init__.py, which hands on
    ``labnet.run`` and friends lazily) is left out: every plugin imports ``hookimpl`` from it."""
    known = modules()
    return {name: imports(path, known) - {"labnet", name} for name, path in known.items() if name != "labnet"}


def test_no_two_modules_import_each_other():
    assert circles(import_graph()) == []


#: pairs of packages that import each other on purpose, and why (each is checked to be still there)
PACKAGE_CIRCLES_ALLOWED: dict[tuple[str, str], str] = {}


def package_of(module: str) -> str | None:
    """The package (folder directly under labnet/) a module belongs to; None for a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else None


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Which package imports which, from the modules' imports (a package's imports of itself left out)."""
    packages: dict[str, set[str]] = {}
    for module, imported in graph.items():
        source = package_of(module)
        if source is not None:
            targets = {package_of(name) for name in imported} - {None, source}
            packages.setdefault(source, set()).update(targets)
    return packages


def package_circles(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """Pairs of packages that import each other, each with the imports that tie them (module -> module)."""
    packages = package_graph(graph)
    found = {}
    for a in sorted(packages):
        for b in sorted(packages[a]):
            if a < b and a in packages.get(b, ()):
                found[(a, b)] = sorted(
                    f"{m} -> {n}"
                    for m, imported in graph.items()
                    for n in imported
                    if {package_of(m), package_of(n)} == {a, b}
                )
    return found


def test_no_two_packages_import_each_other():
    found = package_circles(import_graph())
    assert {pair: ties for pair, ties in found.items() if pair not in PACKAGE_CIRCLES_ALLOWED} == {}
    assert set(PACKAGE_CIRCLES_ALLOWED) <= set(found), "an allowed circle is gone: take it off the list"


def test_the_package_check_sees_a_circle_through_imports_inside_functions():
    graph = import_graph()
    assert "labnet.tracking.sweep_summary" in graph["labnet.studies"]  # imported inside labnet_sweep_end
    graph["labnet.tracking.sweep_table"].add("labnet.studies")  # as if tracking imported studies back
    assert package_circles(graph)[("studies", "tracking")] == [
        "labnet.studies -> labnet.tracking.sweep_summary",
        "labnet.tracking.sweep_table -> labnet.studies",
    ]
    assert package_of("labnet.runner") is None and package_of("labnet.compare") == "compare"


def test_the_circle_finder_finds_a_circle_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert circles(graph) == [["a", "b", "c"]]
    graph["c"] = {"d"}
    assert circles(graph) == []


def test_the_import_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "labnet.cli.compare.command" in graph["labnet.__main__"]  # imported inside a function
    assert "labnet.studies.components" in graph["labnet.studies"]  # `from labnet.studies.components import ...`


def test_only_the_command_line_imports_the_commands():
    importers = {
        module: sorted(name for name in imported if name.startswith("labnet.cli"))
        for module, imported in import_graph().items()
        if module != "labnet.__main__" and not module.startswith("labnet.cli")
    }
    assert {module: names for module, names in importers.items() if names} == {}


def test_no_module_is_over_400_lines():
    lengths = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


@pytest.mark.parametrize("statement", ["import labnet", "from labnet import hookimpl, ConfigError"])
def test_importing_labnet_imports_no_heavy_library(statement):
    code = f"{statement}; import sys; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(done.stdout.split()) & set(HEAVY) == set()


def test_only_tracking_and_the_store_reader_make_an_mlflow_client():
    """The studies plugin (and any other module) reads a store through labnet.compare.stores and logs on a
    sweep's parent run through tracking/, never with an MlflowClient of its own."""
    makers = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and any(alias.name == "MlflowClient" for alias in node.names):
                makers.add(name)
    assert {n for n in makers if not n.startswith("labnet.tracking.")} == {"labnet.compare.stores"}


def test_the_architecture_page_names_every_top_level_module_and_package():
    """docs/architecture.md draws the packages: a module or package added under labnet/ (or a launcher under
    hydra_plugins/) that it does not name is a house a newcomer cannot find from the map."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    top = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    top |= {f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    top |= {p.name for p in (PACKAGE.parent / "hydra_plugins").iterdir() if (p / "__init__.py").is_file()}
    missing = sorted(name for name in top if name not in page)
    assert not missing, f"docs/architecture.md does not name {missing}"
