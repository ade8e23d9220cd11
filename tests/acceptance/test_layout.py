"""The package's layout: data flows one way through the pipeline's stages.

Every module belongs to a stage (its folder, or a top-level module of stage 0); a module may import
only modules of its own stage or of lower ones, and no module may import one that imports it back
(directly or through others). Imports inside functions count, and so do imports under
`if TYPE_CHECKING:`: a lower stage does not name a higher one's types either.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "multilevel"

# Lowest first. A module's stage is that of the longest prefix that names it.
STAGES: tuple[tuple[str, ...], ...] = (
    ("errors", "display", "parallel", "output"),  # shared by all: errors, tables, threads, output paths
    ("numerics",),  # compiled kernels and dense per-unit algebra: arrays in, arrays out
    ("model",),  # what the user wrote: formulas, level equations, the model specification
    ("data",),  # reading, ids, checks and weights of the rows
    ("design",),  # columns, coordinates, the one pass, summaries
    ("engine",),  # objective, optimizer, conditional modes: the estimates
    ("results",),  # the core record of a fit: estimates, their covariance, the optimizer record
    ("inference",),  # df, SEs, tests, intervals, comparisons
    ("diagnostics",),  # HLM's statistics, residual files, effect sizes, plots
    ("reports",),  # HLM's report, lme4's summary, HTML
    ("interfaces",),  # ml.fit, the Fit a user holds, pooling
    ("datasets", "examples", ""),  # the package's front door and its examples
)


def stage_of(module: str) -> int:
    rel = module.removeprefix("multilevel").lstrip(".")
    best, rank = -1, None
    for r, names in enumerate(STAGES):
        for name in names:
            if (rel == name or rel.startswith(name + ".") or name == "") and len(name) > best:
                best, rank = len(name), r
    assert rank is not None, f"{module} is in no stage: add its folder to STAGES"
    return rank


def modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its file."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("multilevel"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("multilevel")}
    found.discard(name)
    return {m for m in found if m in known}


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def test_every_module_has_a_stage():
    for name in GRAPH:
        stage_of(name)


def test_no_module_imports_a_higher_stage():
    wrong = [
        f"{m} (stage {stage_of(m)}) imports {d} (stage {stage_of(d)})"
        for m, deps in sorted(GRAPH.items())
        for d in sorted(deps)
        if stage_of(d) > stage_of(m) and not (m == "multilevel" or d.startswith(m + "."))
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    # a package's __init__ importing its own modules lazily is the one loop allowed (PEP 562)
    edges = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in GRAPH.items()}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("stage", [names for names in STAGES[1:-1]])
def test_the_stage_folders_exist(stage):
    for name in stage:
        assert (SRC / name / "__init__.py").is_file(), f"the stage folder {name}/ is missing"
