"""The package's imports only go down: no cycle, no import from a lower layer to a higher one.

Every import of an ``hf_gradmm`` module is read with ``ast``, at module level and inside
functions alike (an import hidden in a function is still a dependency). Each module belongs to
one layer; a module may import its own layer and the layers below. A new module must be given a
layer here, which is the point: where it sits is a decision, not an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hf_gradmm"

# Lowest first. A module's layer is the entry matching its longest dotted prefix.
LAYERS = [
    ("foundation", ["version", "distributed", "models", "tasks", "lm", "arguments"]),
    ("engine", ["engine", "finetune", "classifier", "label_word_accuracy"]),
    ("targets", ["targets"]),
    ("config", ["config"]),
    ("run folder and reports", ["rundir", "diagnostics", "callbacks"]),
    ("synthesizer", ["synthesizer"]),
    ("dataset", ["dataset"]),
    ("evaluation and benchmarks", ["evaluation", "bench"]),
    ("cli and public API", ["cli", "__init__", "__main__"]),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank is not None, f"hf_gradmm.{module} has no layer: add it to LAYERS in {Path(__file__).name}"
    return rank


def _resolve(name: str, known: set[str]) -> str | None:
    """The known module a dotted ``hf_gradmm...`` name lives in (its longest known prefix)."""
    target = name.removeprefix("hf_gradmm").lstrip(".")
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The hf_gradmm modules ``module`` imports. ``from P import x`` counts ``P.x`` when that is a
    module and ``P`` when x is a name P defines (``__init__`` for the package root)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "hf_gradmm":
                    out.add("__init__")
                elif alias.name.startswith("hf_gradmm."):
                    out.add(_resolve(alias.name, known))
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("hf_gradmm"):
            base = node.module
            for alias in node.names:
                full = f"{base}.{alias.name}".removeprefix("hf_gradmm.")
                if full in known:
                    out.add(full)  # a submodule imported by name: the dependency is on it
                else:  # a name the (package) module defines
                    out.add("__init__" if base == "hf_gradmm" else _resolve(base, known))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"hf_gradmm.{module}: relative import; write it absolute")
    out.discard(None)
    out.discard(module)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, set(modules)) for m, p in modules.items()}


def test_every_module_has_a_layer_and_no_import_climbs():
    graph = _graph()
    climbs = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if _layer(target) > _layer(module):
                climbs.append(
                    f"hf_gradmm.{module} ({LAYERS[_layer(module)][0]}) imports hf_gradmm.{target} "
                    f"({LAYERS[_layer(target)][0]})"
                )
    assert not climbs, "imports that go up a layer:\n" + "\n".join(climbs)


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            raise AssertionError("import cycle: " + " -> ".join(f"hf_gradmm.{m}" for m in cycle))


def test_the_checker_sees_a_climb_and_a_cycle(tmp_path):
    """The walk itself: an import inside a function is found, and ``from hf_gradmm import x`` resolves x."""
    source = tmp_path / "probe.py"
    source.write_text(
        "import hf_gradmm\nfrom hf_gradmm import rundir\nfrom hf_gradmm.tasks import offline, TaskSpec\n\n"
        "def f():\n    from hf_gradmm.cli.main import main\n"
    )
    found = _imports("engine.probe", source, set(_modules()))
    assert found == {"__init__", "rundir", "tasks", "tasks.offline", "cli.main"}
    source.write_text("from hf_gradmm import GradMatchConfig\n")
    assert _imports("engine.probe", source, set(_modules())) == {"__init__"}
    assert _layer("cli.main") > _layer("engine.probe")


def test_no_function_is_longer_than_80_lines():
    long = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"hf_gradmm.{module}.{node.name}: {lines} lines")
    assert not long, long
