"""The house rules of docs/architecture.md, checked on the source itself (parsed, never imported):

- no import cycles between our modules;
- layers: flows -> tasks -> models, every layer may use infra; models import nothing of ours but infra;
  infra imports only infra; nothing imports flows but flows;
- a stage (a module directly in a phase package, ``tasks/<phase>/<name>.py``) defines ``run`` and never
  reaches another stage, neither directly nor through helpers; a helper (anything under a phase's
  ``lib/`` or ``filters/``) defines no ``run``;
- no source file over 300 lines outside tests/.

The checkers are plain functions over an import graph, so the last tests feed them a graph that breaks
each rule and see it reported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("flows", "tasks", "models", "infra")
MAX_LINES = 300
CODE = ("*.py", "*.js", "*.html", "*.css")


def module_files() -> dict[str, Path]:
    out = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(name: str, known: set[str]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that ``module`` imports anywhere in its body (function-level imports count too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    resolved = {_resolve(name, known) for name in found}
    return {m for m in resolved if m and m != module}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {m: imports_of(m, p, set(files)) for m, p in files.items()}


HELPER_PACKAGES = ("lib", "filters")  # a phase's helpers live in these subpackages


def is_stage(module: str) -> bool:
    """``tasks.<phase>.<name>``: a module directly in a phase package (not one of its helper packages)."""
    parts = module.split(".")
    return len(parts) == 3 and parts[0] == "tasks" and parts[2] not in HELPER_PACKAGES


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


ALLOWED = {"flows": set(LAYERS), "tasks": {"tasks", "models", "infra"}, "models": {"models", "infra"},
           "infra": {"infra"}}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} -> {d}" for m, deps in sorted(graph.items()) for d in sorted(deps)
            if d.split(".")[0] not in ALLOWED[m.split(".")[0]]]


def stage_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every stage another stage reaches, directly or through helpers (helpers are walked, stages are not)."""
    out = []
    for stage in sorted(m for m in graph if is_stage(m)):
        seen, todo = set(), list(graph[stage])
        while todo:
            module = todo.pop()
            if module in seen or not module.startswith("tasks."):
                continue
            seen.add(module)
            if is_stage(module) and module != stage:
                out.append(f"{stage} reaches stage {module}")
                continue
            todo.extend(graph.get(module, ()))
    return out


def defines_run(path: Path) -> bool:
    tree = ast.parse(path.read_text(), str(path))
    return any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in tree.body)


def test_no_import_cycles():
    assert find_cycles(import_graph()) == []


def test_layers_import_only_downwards():
    assert layer_violations(import_graph()) == []


def test_no_stage_reaches_another_stage():
    graph = import_graph()
    assert sum(is_stage(m) for m in graph) >= 13  # the report's stages are all found where the rule looks
    assert stage_violations(graph) == []


def test_stage_and_helper_modules_are_told_apart_by_place():
    files = module_files()
    stages_without_run = [m for m, p in files.items() if is_stage(m) and not defines_run(p)]
    helpers_with_run = [m for m, p in files.items() if m.startswith("tasks.") and not is_stage(m) and defines_run(p)]
    assert (stages_without_run, helpers_with_run) == ([], [])


def test_no_source_file_over_300_lines():
    too_long = {}
    for pattern in CODE:
        for path in ROOT.rglob(pattern):
            rel = path.relative_to(ROOT)
            if rel.parts[0] in ("tests", ".venv", "runs", ".reelflow", "node_modules") or rel.parts[0].startswith("."):
                continue
            lines = len(path.read_text(errors="replace").splitlines())
            if lines > MAX_LINES:
                too_long[str(rel)] = lines
    assert too_long == {}


# --- the checkers catch what they are for -------------------------------------------------------------
BROKEN = {
    "flows.run": {"tasks.curate.clips"},
    "tasks.curate.clips": {"tasks.curate.lib.shared", "models.net"},
    "tasks.curate.lib.shared": {"tasks.curate.score"},  # a helper that leads to another stage
    "tasks.curate.score": {"infra.io"},
    "models.net": {"tasks.curate.lib.shared"},  # models reaching up into tasks
    "infra.io": {"infra.util"},
    "infra.util": {"infra.io"},  # a cycle
}


@pytest.mark.parametrize("check, expected", [
    (find_cycles, [["infra.io", "infra.util"]]),
    (layer_violations, ["models.net -> tasks.curate.lib.shared"]),
    (stage_violations, ["tasks.curate.clips reaches stage tasks.curate.score"]),
])
def test_checkers_report_a_broken_graph(check, expected):
    assert check(BROKEN) == expected


def test_import_resolution_reads_relative_and_function_level_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from . import sibling\n\ndef f():\n    from infra.storage import join\n")
    known = {"tasks.curate", "tasks.curate.sibling", "infra.storage", "tasks.curate.mod"}
    assert imports_of("tasks.curate.mod", source, known) == {"tasks.curate", "tasks.curate.sibling", "infra.storage"}
