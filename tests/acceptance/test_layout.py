"""The package's layout: data flows one way through the pipeline's stages.

Every module belongs to a stage (its folder, or a top-level module of stage 0); a module may import
only modules of its own stage or of lower ones, and no module may import one that imports it back
(directly or through others). Imports inside functions count, and so do imports under
`if TYPE_CHECKING:`: a lower stage does not name a higher one's types either.
"""
from __future__ import annotations

import pytest
from layout import GRAPH, SRC, STAGES, architecture, stage_of  # the shared reading of the layout


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


def test_the_architecture_document_is_current():
    doc = SRC.parents[1] / "docs" / "architecture.md"
    assert doc.read_text() == architecture(), (
        "docs/architecture.md is out of date: run python tests/acceptance/layout.py > docs/architecture.md"
    )
