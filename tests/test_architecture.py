"""docs/architecture.md kept true: every module's imports go to its own layer or below, the
modules import no cycle, and implementations import only the API for implementation authors."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The layers of docs/architecture.md, bottom first: module (or package prefix) -> layer.
LAYERS = {
    "harness.spec": 0, "harness.inputs": 0, "harness.reference": 0, "harness.moves": 0, "harness.traffic": 0,
    "harness.perf": 0, "harness.files": 0, "harness.timelimit": 0,
    "harness.registry": 1, "harness.cases": 1, "harness.eligibility": 1,
    "harness": 2,
    "harness.cudac": 3,
    "harness.checking": 4, "harness.cudac.sanitizers": 4,
    "harness.peers": 5, "harness.machine": 5, "harness.results": 5, "harness.gputime": 5, "harness.paired": 5,
    "harness.bench": 6,
    "harness.models": 7, "harness.layer_compare": 7,
    "harness.report": 8, "harness.gpuday": 8, "harness.cluster": 8, "harness.bench_plugin": 8,
    "harness.cli": 9,
}  # fmt: skip
#: What implementations may import from the harness.
IMPLEMENTATION_API = {"harness", "harness.cudac"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The layer of the longest matching entry (a package entry covers its submodules)."""
    candidates = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    assert candidates, f"{module} is in no layer of docs/architecture.md: add it to the page and to LAYERS"
    return LAYERS[max(candidates, key=len)]


def harness_imports(path: Path) -> set[str]:
    """Every harness module ``path`` imports (anywhere in the file, deferred imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "harness"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "harness":
            # `from harness.cudac import sanitizers` imports the submodule harness.cudac.sanitizers
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                is_module = (ROOT / Path(*submodule.split("."))).with_suffix(".py").exists() or (
                    ROOT / Path(*submodule.split(".")) / "__init__.py"
                ).exists()
                found.add(submodule if is_module else node.module)
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((ROOT / "harness").rglob("*.py"))}


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for module, path in _modules().items():
        mine = layer_of(module)
        for imported in harness_imports(path):
            if layer_of(imported) > mine:  # a package's own submodules too: a package face is a module like any other
                upward.append(f"{module} (layer {mine}) imports {imported} (layer {layer_of(imported)})")
    assert upward == [], "\n".join(upward)


def test_modules_import_no_cycle():
    modules = _modules()
    # Every explicit import is an edge, a package face's (its __init__) included: a submodule that
    # imports its own package while the package imports it is a cycle.
    graph = {m: {i for i in harness_imports(p) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*trail, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*trail, node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [])
            assert cycle is None, " -> ".join(cycle[cycle.index(cycle[-1]) :])


def test_implementations_import_only_the_api_for_implementation_authors():
    wrong = []
    for path in sorted((ROOT / "impls").rglob("*.py")):
        for imported in harness_imports(path):
            if imported not in IMPLEMENTATION_API:
                wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert wrong == [], "\n".join(wrong)


def test_the_checker_is_not_fooled_by_deferred_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from harness.report import render_report\n    import harness.cli\n")
    assert harness_imports(probe) == {"harness.report", "harness.cli"}
