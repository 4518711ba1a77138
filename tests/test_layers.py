"""The package's imports follow the pipeline: a module imports only its own layer or the ones below it.

    ground    io, errors, device, formats, provenance, ... (no stage)
    config    config, plan, workflow, models, ni_settings, overrides
    data      menagerie.data.*
    inference menagerie.inference.* (the vLLM runner shared by evaluation and NI sampling; NI predictions)
    train     menagerie.train.*
    merge     merge, dequantize_merge
    evaluate  menagerie.evaluate.*
    report    report, leaderboard, leaderboard_html, verify, verdict, reproduction
    cli       cli, __main__ (the `menagerie` command), bundle, check (reproduction bundles: read every stage), jobs
              (what rules/*.smk call: the workflow's entry)

Every import of a `menagerie` module is read with ast, at module level and inside functions alike (an in-function
import hides a dependency from a reader, not from this test). A new top-level module must be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "menagerie"

LAYERS = ["ground", "config", "data", "inference", "train", "merge", "evaluate", "report", "cli"]
# subpackages take the layer of their package; top-level modules are listed
PACKAGES = {
    "data": "data",
    "inference": "inference",
    "train": "train",
    "evaluate": "evaluate",
    "hpc": "ground",
    "schemas": "ground",
}
MODULES = {
    "ground": [
        "menagerie",
        "io",
        "errors",
        "device",
        "formats",
        "rounding",
        "provenance",
        "cli_support",
        "resources",
        "bytecode",
        "runlock",
    ],
    "config": ["config", "plan", "workflow", "models", "ni_settings", "overrides"],
    "merge": ["merge", "dequantize_merge"],
    "report": ["report", "leaderboard", "leaderboard_html", "verify", "verdict", "reproduction"],
    "cli": ["cli", "__main__", "bundle", "check", "jobs"],
}
# inside the contamination gate's package, each stage imports only the stages before it (its __init__ documents it)
CONTAMINATION = "menagerie.data.contamination"
CONTAMINATION_ORDER = [
    ["records", "text", "arrays", "shards"],
    ["guard"],
    ["ngram", "code_match"],
    ["candidates"],
    ["embedding", "items"],
    ["gate"],
]
ENTRY_POINTS = {f"{CONTAMINATION}.gate", f"{CONTAMINATION}.items"}  # what the rest of the package may import


def module_name(path: Path) -> str:
    parts = ("menagerie",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The menagerie modules `path` imports anywhere in its body (`from menagerie import x` counts as
    menagerie.x when x is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "menagerie"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "menagerie":
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
    return found - {name}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in PACKAGES:
        return PACKAGES[parts[1]]
    short = "menagerie" if len(parts) == 1 else parts[1]
    for layer, names in MODULES.items():
        if short in names:
            return layer
    raise AssertionError(f"{module} has no layer: add it to MODULES in tests/test_layers.py")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, name, set(modules)) for name, path in modules.items()}


def test_every_module_has_a_layer(graph):
    for module in graph:
        assert layer_of(module) in LAYERS


def test_no_module_imports_a_higher_layer(graph):
    upward = [
        f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})"
        for m, targets in sorted(graph.items())
        for t in sorted(targets)
        if LAYERS.index(layer_of(t)) > LAYERS.index(layer_of(m))
    ]
    assert not upward, "imports against the pipeline:\n" + "\n".join(upward)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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


def test_no_import_cycles(graph):
    assert not cycles(graph), f"import cycles: {cycles(graph)}"


def test_contamination_stages_import_in_one_direction(graph):
    """text <- guard <- n-gram / code <- lexical candidates <- embedding <- gate: a stage imports only earlier ones,
    and the rest of the package reaches it only through the gate and its items (scripts, bench and tests may)."""
    level = {f"{CONTAMINATION}.{name}": k for k, names in enumerate(CONTAMINATION_ORDER) for name in names}
    inside = {m for m in graph if m.startswith(CONTAMINATION + ".")}
    assert inside == set(level), "a module of the package is missing from CONTAMINATION_ORDER, or gone"
    backward = [
        f"{m} imports {t}"
        for m in sorted(inside)
        for t in sorted(graph[m])
        if t in level and level[t] >= level[m] and t != m
    ]
    assert not backward, "contamination stages importing later or same-level ones:\n" + "\n".join(backward)
    assert not graph[CONTAMINATION], "the package's __init__ imports nothing: callers import the stage they need"
    outside = [
        f"{m} imports {t}"
        for m in sorted(set(graph) - inside - {CONTAMINATION})
        for t in sorted(graph[m])
        if t in level and t not in ENTRY_POINTS
    ]
    assert not outside, "the package's stages imported from outside it:\n" + "\n".join(outside)


def test_the_checks_catch_an_upward_in_function_import_and_a_cycle(tmp_path):
    probe = tmp_path / "_probe.py"
    probe.write_text("from menagerie import io\n\ndef f():\n    from menagerie.train import common\n")
    found = imports_of(probe, "menagerie.data._probe", {"menagerie.io", "menagerie.train", "menagerie.train.common"})
    assert found == {"menagerie.io", "menagerie.train.common"}
    assert LAYERS.index(layer_of("menagerie.train.common")) > LAYERS.index(layer_of("menagerie.data._probe"))
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
