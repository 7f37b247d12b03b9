"""The package's layers import one way: cli → jobs → (lm, saes) → runs/errors, with no cycle.

Read from the source (every `import`, including those inside functions and under
TYPE_CHECKING), so a lazy import cannot hide an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pivotal_sae

SRC = Path(pivotal_sae.__file__).parent


def _package_of(module: str) -> str:
    """`pivotal_sae.lm.model` → `lm`; top-level modules (`runs`, `errors`) name themselves."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_graph() -> dict[str, set[str]]:
    """Sub-package → the sub-packages its modules import."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        source = _package_of(module) or relative.name
        edges = graph.setdefault(source, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "pivotal_sae":
                    names = [f"pivotal_sae.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("pivotal_sae.") and _package_of(name) != source:
                    edges.add(_package_of(name))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_the_import_graph_has_no_cycle():
    assert find_cycle(import_graph()) is None


def test_lower_layers_import_no_higher_one():
    graph = import_graph()
    assert not graph["lm"] & {"saes", "training", "absorption", "toy", "explorer", "cli"}
    assert not graph["saes"] & {"lm", "training", "absorption", "toy", "explorer", "cli"}
    for base in ("runs", "errors"):
        assert graph[base] <= {"errors"}, (base, graph[base])
    assert not graph["render"], "the shared templates and stylesheet depend on nothing of ours"


def test_the_explorer_never_trains():
    """It may look the default SAEs up (`training.defaults`), never reach the training job."""
    trees = [ast.parse(p.read_text()) for p in (SRC / "explorer").rglob("*.py")]
    modules = {
        node.module
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert {m for m in modules if m.startswith("pivotal_sae.training")} == {
        "pivotal_sae.training.defaults"
    }
