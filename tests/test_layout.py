"""The layering the code claims: flows/ thin (at most 5 import levels deep within itself) and
pipeline/ importing nothing of flows/ or scrapers/. Read from the source with ast."""

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FLOWS_DEPTH = 5  # modules in the longest chain of flows/ modules importing each other


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def package_imports(package: str) -> dict[str, set[str]]:
    """Each module of `package` and the modules of `package` it imports."""
    modules = {p.stem: p for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}
    prefix = f"{package}."
    return {
        name: {
            m.removeprefix(prefix)
            for m in imported_modules(path)
            if m.removeprefix(prefix) in modules
        }
        for name, path in modules.items()
    }


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    """The longest import chain (modules, importer first); a cycle fails."""

    @cache
    def chain(module: str, seen: frozenset[str] = frozenset()) -> tuple[str, ...]:
        assert module not in seen, f"import cycle through {module}"
        below = [chain(m, seen | {module}) for m in graph[module]]
        return (module, *max(below, key=len, default=()))

    return list(max((chain(m) for m in graph), key=len))


def test_flows_is_at_most_five_import_levels_deep():
    deepest = longest_chain(package_imports("flows"))
    assert len(deepest) <= MAX_FLOWS_DEPTH, " → ".join(deepest)


def test_the_depth_count_sees_function_level_imports(tmp_path):
    for name, body in {
        "a": "from flows.b import x\n",
        "b": "def f():\n    from flows import c\n",
        "c": "import flows.d\n",
        "d": "",
    }.items():
        (tmp_path / f"{name}.py").write_text(body)
    graph = {
        p.stem: {m.removeprefix("flows.") for m in imported_modules(p)} & {"a", "b", "c", "d"}
        for p in tmp_path.glob("*.py")
    }
    assert longest_chain(graph) == ["a", "b", "c", "d"]


def test_pipeline_imports_nothing_of_flows_or_scrapers():
    for path in sorted((ROOT / "pipeline").glob("*.py")):
        upward = {m for m in imported_modules(path) if m.split(".")[0] in {"flows", "scrapers"}}
        assert not upward, f"{path.name} imports {sorted(upward)}"
