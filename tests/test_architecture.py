"""The layer rules of ARCHITECTURE.md, checked on the source: every module's imports are read with ``ast``
(nothing is imported), lazy imports inside functions and ``TYPE_CHECKING`` blocks included.

``python -m tests.test_architecture`` prints the import graph between packages that ARCHITECTURE.md shows.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ecgml"

#: The layers that know nothing of tracking, training or orchestration, and what they must not import.
LOWER = ("ecgml.data", "ecgml.models", "ecgml.evaluate")
ABOVE_LOWER = ("mlflow", "ecgml.train", "ecgml.posttrain", "ecgml.experiments", "ecgml.workflow",
               "ecgml.tracking", "ecgml.tune", "ecgml.cli")
#: Tracking (runs, registry, the served model) sits below training and the jobs that use it.
ABOVE_TRACKING = ("ecgml.train", "ecgml.posttrain", "ecgml.experiments", "ecgml.workflow",
                  "ecgml.tune", "ecgml.cli")
#: Training runs one tracked run; calibration, evaluation, the sweeps, tuning and CLI that start runs sit above it.
ABOVE_TRAIN = ("ecgml.posttrain", "ecgml.experiments", "ecgml.workflow", "ecgml.tune", "ecgml.cli")
#: Calibration and evaluation (one tracked run each) sit below everything that orchestrates several runs.
ABOVE_POSTTRAIN = ("ecgml.experiments", "ecgml.workflow", "ecgml.tune", "ecgml.cli")
#: The main job runs a sweep and its report, so it sits above the sweeps; only the CLI imports it.
ABOVE_EXPERIMENTS = ("ecgml.workflow", "ecgml.cli")


@dataclass(frozen=True)
class Import:
    """One imported module, where and how: ``lazy`` inside a function, ``typing`` under TYPE_CHECKING."""

    source: str
    target: str
    line: int
    lazy: bool
    typing: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(source: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".") if is_package else source.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(source: str) -> list[Import]:
    """The modules ``source`` imports; ``from ecgml.x import y`` names ``ecgml.x.y`` when that is a module."""
    path = modules()[source]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool, typing: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(source, alias.name, node.lineno, lazy, typing) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(source, node, path.name == "__init__.py")
            found.append(Import(source, target, node.lineno, lazy, typing))
            for alias in node.names:
                if f"{target}.{alias.name}" in modules():
                    found.append(Import(source, f"{target}.{alias.name}", node.lineno, lazy, typing))
        for child in ast.iter_child_nodes(node):
            visit(child, lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef),
                  typing or (isinstance(node, ast.If) and _is_type_checking(node)))

    visit(tree, False, False)
    return found


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(i for name in modules() for i in imports_of(name))


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(sources: Iterable[str], forbidden: Iterable[str]) -> list[str]:
    sources, forbidden = tuple(sources), tuple(forbidden)
    return [f"{i.source}:{i.line} imports {i.target}" for i in all_imports()
            if _under(i.source, sources) and _under(i.target, forbidden)]


def package_of(module: str) -> str:
    """``ecgml.data.synth.writers`` -> ``data``; top-level modules (``ecgml.config``) stand for themselves."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ecgml"


def package_graph() -> dict[str, set[str]]:
    """Arrows between the package's top-level packages and modules (``ecgml.*`` targets only)."""
    graph: dict[str, set[str]] = {package_of(m): set() for m in modules() if m != "ecgml"}
    for i in all_imports():
        if i.target.startswith("ecgml.") and package_of(i.source) != package_of(i.target) and i.source != "ecgml":
            graph[package_of(i.source)].add(package_of(i.target))
    return graph


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def test_the_parser_sees_lazy_typing_and_relative_imports() -> None:
    """The rules below are only as good as the parse: it finds each kind of import a module can make."""
    found = {i.target: i for i in imports_of("ecgml.cli.train")}
    assert "ecgml.cli.options" in found and not found["ecgml.cli.options"].lazy
    assert found["ecgml.train.runner"].lazy  # imported inside the command
    typing_only = [i for i in imports_of("ecgml.tune.space") if i.typing]
    assert any(i.target == "ecgml.train.pipeline" for i in typing_only)
    assert package_of("ecgml.data.synth.writers") == "data" and package_of("ecgml.config") == "config"


def test_data_models_and_evaluate_import_no_tracking_training_or_orchestration() -> None:
    assert violations(LOWER, ABOVE_LOWER) == []


def test_tracking_and_serving_import_no_training_jobs_experiments_or_tuning() -> None:
    """The served model, shipped backbones and ``ecgml predict`` depend on data, models and tracking only."""
    assert violations(["ecgml.tracking", "ecgml.pretrained", "ecgml.predict"], ABOVE_TRACKING) == []


def test_runtime_and_defaults_import_no_other_layer() -> None:
    """Everything may import them (the CLI sets up threads and console before any layer loads)."""
    assert [f"{i.source}:{i.line} imports {i.target}" for i in all_imports()
            if _under(i.source, ["ecgml.runtime", "ecgml.defaults"]) and _under(i.target, ["ecgml"])] == []


def test_data_does_not_import_the_stage_configs() -> None:
    """The configs sit above the data layer (they are built from its facts); data names the fields it needs."""
    assert violations(["ecgml.data"], ["ecgml.config"]) == []


def test_training_imports_no_jobs_experiments_tuning_or_cli() -> None:
    assert violations(["ecgml.train"], ABOVE_TRAIN) == []


def test_calibration_and_evaluation_import_no_orchestration() -> None:
    """The sweeps and the main job both calibrate and evaluate: the core they share sits below both."""
    assert violations(["ecgml.posttrain"], ABOVE_POSTTRAIN) == []


def test_the_sweeps_import_no_main_job_and_only_the_cli_imports_it() -> None:
    """One way only: the main job (``ecgml.workflow``) runs a sweep, a sweep never runs the main job."""
    assert violations(["ecgml.experiments"], ABOVE_EXPERIMENTS) == []
    assert [f"{i.source}:{i.line}" for i in all_imports() if _under(i.target, ["ecgml.workflow"])
            and not _under(i.source, ["ecgml.workflow", "ecgml.cli"])] == []


def test_only_the_cli_imports_the_cli() -> None:
    assert [f"{i.source}:{i.line}" for i in all_imports()
            if _under(i.target, ["ecgml.cli"]) and not _under(i.source, ["ecgml.cli"])] == []


def test_defaults_import_nothing() -> None:
    """Plain constants: importing ecgml.defaults costs nothing (no numpy, torch or mlflow either)."""
    assert [i.target for i in imports_of("ecgml.defaults") if i.target != "__future__"] == []


def test_no_import_cycle_between_modules_at_import_time() -> None:
    """Module-level imports only: a lazy import inside a function is how a command defers a heavy layer."""
    edges: dict[str, set[str]] = {}
    for i in all_imports():
        if not i.lazy and not i.typing and i.target in modules() and i.target != i.source:
            edges.setdefault(i.source, set()).add(i.target)
    # A package's __init__ importing its own submodules is not a cycle of layers.
    for source, targets in edges.items():
        edges[source] = {t for t in targets if not (modules()[source].name == "__init__.py" and t.startswith(source))}
    assert cycles(edges) == []


def test_no_import_cycle_between_packages() -> None:
    assert cycles(package_graph()) == []


def test_importing_the_cli_imports_neither_torch_nor_mlflow() -> None:
    """`ecgml --help` stays fast: every command imports its library when it runs."""
    code = "import sys, ecgml.cli; print(sorted(m for m in ('torch', 'mlflow', 'optuna') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- facts: typed once ------------------------------------------------------------------------------------

def _string_constants(path: Path) -> list[tuple[str, int]]:
    """String literals of a module, docstrings left out (prose may name a fact)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.value, n.lineno) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_each_shared_fact_is_typed_in_its_home_only() -> None:
    from ecgml import defaults
    from ecgml.data.labels import SINUS_RHYTHM

    homes = {value: "ecgml.defaults" for value in (
        defaults.DEFAULT_BACKBONE, defaults.DEFAULT_SPLITS, defaults.DEFAULT_BACKBONE_MODEL,
        defaults.DEFAULT_CLASSIFIER_MODEL, defaults.STUDY_BACKBONE_MODEL, defaults.STUDY_EXPERIMENT,
        defaults.PRETRAIN_EXPERIMENT, defaults.FINETUNE_EXPERIMENT, defaults.STANDALONE_EXPERIMENT,
        defaults.CALIBRATE_EXPERIMENT, defaults.EVALUATE_EXPERIMENT, defaults.TUNE_EXPERIMENT,
        *defaults.STANDALONE_BACKBONES)}
    homes[SINUS_RHYTHM] = "ecgml.data.labels"
    retyped = [f"{name}:{line} types {value!r} (its home: {homes[value]})"
               for name, path in modules().items() for value, line in _string_constants(path)
               if value in homes and name != homes[value]]
    assert retyped == []


def test_sweep_and_protocol_names_agree_everywhere() -> None:
    import importlib

    from ecgml.experiments import schema, study

    # The report's axis of each sweep (in experiments/analysis.py since the report was split in two).
    owners = [importlib.import_module(f"ecgml.experiments.{name}") for name in ("analysis", "report")
              if f"ecgml.experiments.{name}" in modules()]
    axis = next(owner.SWEEP_AXIS for owner in owners if hasattr(owner, "SWEEP_AXIS"))
    assert set(study.DEFAULT_VALUES) == set(schema.SWEEPS) == set(axis)
    assert set(study.PROTOCOLS) == set(schema.PROTOCOLS)


def render_graph() -> str:
    """The package graph as Mermaid (``A --> B``: A imports B), for ARCHITECTURE.md."""
    lines = ["```mermaid", "graph TD"]
    for source, targets in sorted(package_graph().items()):
        lines += [f"    {source} --> {target}" for target in sorted(targets)]
    return "\n".join([*lines, "```"])


if __name__ == "__main__":
    print(render_graph())
