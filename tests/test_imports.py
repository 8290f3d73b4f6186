"""The package's own house rules: no import circle (imports inside functions counted), no module over 450 lines."""

import ast
from pathlib import Path

import pytest

import seg_utils

PACKAGE = Path(seg_utils.__file__).parent
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = ["seg_utils", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Return the package modules ``name`` imports anywhere in its file (top level, functions, TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from . import x` / `from .pkg import mod` name modules; `from .mod import f` names the module
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            # the longest known module the name starts with: seg_utils.images.read_image -> seg_utils.images
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    # Importing a submodule runs its package's __init__ first: that edge is Python's, not the module's, so the
    # package itself (seg_utils) is left out as a target. A cycle through it would show up as a cycle of the
    # modules it imports.
    return {name: {t for t in targets if t != "seg_utils"} for name, targets in graph.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions():
    # the check must be able to fail: a function-level import is an edge like any other
    graph = _graph()
    assert "seg_utils.config" in graph["seg_utils.engine"]
    assert "seg_utils.outputs" in graph["seg_utils.synthetic.folders"]  # relative import from a subpackage
    assert "seg_utils.synthetic" in graph["seg_utils.cli"]  # imported inside _cmd_synth
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circle_in_the_package():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_environment_readers_and_the_config_stand_low():
    graph = _graph()
    assert graph["seg_utils.env"] == set()  # SEG_PROFILE, CITYSCAPES_DATASET, SEG_WORKSPACE: imports nothing
    assert graph["seg_utils.config"] == {"seg_utils.env"}  # TrainConfig and profiles know no engine
    for low in ("seg_utils.outputs", "seg_utils.images", "seg_utils.layouts", "seg_utils.cityscapes",
                "seg_utils.folder", "seg_utils.checkpoint", "seg_utils.model_info"):
        assert not graph[low] & {"seg_utils.config", "seg_utils.engine", "seg_utils.notebook"}, low


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_over_450_lines(name):
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines (at most {MAX_LINES}: one idea per module)"
