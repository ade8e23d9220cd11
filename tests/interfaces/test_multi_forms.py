"""MultiFit.level_equations and mixed_equation: HLM's two printed forms as members, the same text
the report prints (HLM3 for nested factors, HCM2 for two crossed ones), refused by name for other
structures."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import multilevel as ml
from multilevel.errors import SpecificationError

DATA = Path(__file__).resolve().parents[2] / "refs" / "multi" / "data"


@pytest.fixture(scope="module")
def machines() -> pd.DataFrame:
    return pd.read_csv(DATA / "machines.csv", dtype={"Worker": str, "Machine": str})


def test_nested_forms_are_the_reports(machines):
    fit = ml.fit("score ~ 1 + (1 | Worker/Machine)", machines, method="ML")
    report = fit.report()
    assert fit.level_equations[0] == "Level-1 Model"
    assert "Level-3 Model" in fit.level_equations
    for line in fit.level_equations:
        assert line in report
    assert fit.mixed_equation in report
    assert fit.mixed_equation.startswith("score = G000") and fit.mixed_equation.endswith("+ E")


def test_crossed_forms_are_hcm2s(machines):
    fit = ml.fit("score ~ 1 + (1 | Worker) + (1 | Machine)", machines)
    report = fit.report()
    assert any("b00j" in line and "c00k" in line for line in fit.level_equations)
    for line in fit.level_equations:
        assert line in report
    assert fit.mixed_equation in report


def test_other_structures_are_refused(machines):
    m = machines.assign(Shift=machines.index % 3)
    fit = ml.fit("score ~ 1 + (1 | Worker) + (1 | Machine) + (1 | Shift)", m)
    with pytest.raises(SpecificationError, match="not one chain of nested factors"):
        _ = fit.level_equations
    with pytest.raises(SpecificationError, match="not available yet"):
        _ = fit.hlm_df
