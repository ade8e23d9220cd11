"""The package's layout as data: its stages, modules and imports (read by test_layout.py and by
`python tests/acceptance/layout.py`, which writes docs/architecture.md).

Every module belongs to a stage (its folder, or a top-level module of stage 0); imports are read
from the source with `ast`, inside functions and under `if TYPE_CHECKING:` included.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

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


def summary_line(path: Path) -> str:
    """The first sentence of a module's docstring (its one line in the folder list)."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    return first.split(". ")[0].rstrip(".") + "." if first else "(no docstring)"


def architecture() -> str:
    """docs/architecture.md: the folders by stage, one line per module, and the import graph."""
    mods = modules()
    out = [
        "# The package's layout",
        "",
        "Made by `python tests/acceptance/layout.py > docs/architecture.md`; tests/acceptance/test_layout.py",
        "checks that it is current, that no module imports a higher stage and that there is no import cycle.",
        "Stages, lowest first: a module imports only its own stage or lower ones.",
        "",
        "## Modules",
        "",
    ]
    for rank, names in enumerate(STAGES):
        members = sorted(m for m in mods if stage_of(m) == rank)
        out.append(f"### Stage {rank}: {', '.join(n + ('/' if (SRC / n).is_dir() else '') for n in names if n) or 'the package'}")
        out.append("")
        for m in members:
            out.append(f"- `{m}`: {summary_line(mods[m])}")
        out.append("")
    out += ["## Imports", "", "Each module with the package's modules it imports (stage in brackets).", ""]
    for m in sorted(GRAPH, key=lambda m: (stage_of(m), m)):
        deps = ", ".join(f"{d.removeprefix('multilevel.')} [{stage_of(d)}]" for d in sorted(GRAPH[m], key=lambda d: (stage_of(d), d)))
        out.append(f"- `{m}` [{stage_of(m)}]: {deps or '-'}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(architecture())
