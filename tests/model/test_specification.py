"""Two ways to say a model, one specification; centring; the level and mixed forms."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from conftest import fitted, hsb
from multilevel.model.spec import RandomTerm

M4_LEVELS = dict(level1="mathach ~ 1 + cwc(ses)", level2={"Intercept": "sector + meanses + u", "ses": "sector + meanses + u"}, group="school")


def test_formula_and_levels_give_the_same_spec():
    a = ml.parse_formula("mathach ~ (sector + meanses) * cwc(ses) + (cwc(ses) | school)")
    b = ml.levels(**M4_LEVELS)
    assert a == b
    assert a.to_formula() == "mathach ~ 1 + sector + meanses + cwc(ses) + sector:cwc(ses) + meanses:cwc(ses) + (cwc(ses) | school)"
    assert ml.parse_formula(a.to_formula()) == a  # round trip


def test_levels_fit_equals_lme4_reference_model4():
    """Group-mean centring in the spec (of the rows used) reproduces the precomputed cses column."""
    f = ml.fit_levels(**M4_LEVELS, data=hsb())
    ref = fitted("M4", "REML")
    np.testing.assert_allclose(f.fixed["estimate"].to_numpy(), ref.fixed["estimate"].to_numpy(), rtol=1e-7)  # two optimiser runs on data equal to the last bits
    assert f.deviance == pytest.approx(ref.deviance, rel=1e-12)
    means = f.design.centering_means["cwc(ses)"]
    schools = pd.read_csv(ml.datasets.__path__[0] + "/data/hsb_schools.csv", dtype={"school": str})
    np.testing.assert_allclose(means, schools.set_index("school").loc[list(f.design.group_labels), "mean_ses_sample"], rtol=1e-12)


def test_section4_random_without_fixed_effect():
    spec = ml.levels(
        "mathach ~ 1 + female + cwc(ses)",
        {"Intercept": "sector + meanses + u", "female": "0 + u", "ses": "sector + meanses + u"},
        group="school",
    )
    assert spec.random == (RandomTerm("school", ("1", "female", "cwc(ses)")),)
    assert "female" not in spec.fixed
    f = ml.fit_spec(spec, hsb(), method="ML")
    assert [c.name for c in f.design.coefficients] == ["Intercept", "female", "cwc(ses)"]
    assert "B1 = U1" in "\n".join(f.level_equations)
    assert f.deviance == pytest.approx(fitted("S4", "ML").deviance, rel=1e-9)


def test_level1_model_without_intercept():
    data = hsb().assign(male=lambda d: 1 - d["female"])
    f = ml.fit_levels("mathach ~ 0 + female + male", {"female": "sector + u", "male": "sector + u"}, group="school", data=data)
    assert list(f.fixed.index) == ["female", "male", "sector:female", "sector:male"]
    assert list(f.tau.index) == ["female", "male"]
    eq = "\n".join(f.level_equations)
    assert "mathach = B0*(female) + B1*(male) + R" in eq
    assert "B0 = G00 + G01*(sector) + U0" in eq
    same = ml.fit("mathach ~ 0 + female + male + sector:female + sector:male + (0 + female + male | school)", data)
    assert f.deviance == pytest.approx(same.deviance, rel=1e-10)


def test_grand_mean_centring_keeps_the_mean():
    f = ml.fit("mathach ~ cgm(ses) + (1 | school)", hsb())
    assert f.design.centering_means["cgm(ses)"] == pytest.approx(hsb()["ses"].mean())
    g = ml.fit("mathach ~ ses + (1 | school)", hsb())
    assert f.fixed.loc["cgm(ses)", "estimate"] == pytest.approx(g.fixed.loc["ses", "estimate"], rel=1e-7)
    assert "$" in f.report()  # HLM marks grand-mean centred predictors


def test_bars_uncorrelated_and_no_intercept():
    s = ml.parse_formula("y ~ x + (x || g)")
    assert s.random == (RandomTerm("g", ("1",)), RandomTerm("g", ("x",)))
    assert s == ml.parse_formula("y ~ x + (1 | g) + (0 + x | g)")
    f = ml.fit("mathach ~ cses + (cses || school)", hsb())
    assert f.tau.loc["Intercept", "cses"] == 0.0
    assert f.template.size == 2
    g = ml.fit("mathach ~ cses + (0 + cses | school)", hsb())
    assert list(g.tau.index) == ["cses"]


def test_categorical_predictor():
    data = hsb().assign(track=lambda d: np.where(d["pracad"] > 0.6, "academic", np.where(d["pracad"] > 0.3, "mixed", "general")))
    f = ml.fit("mathach ~ C(track) + cses + (1 | school)", data)
    assert any(n.startswith("C(track)[T.") for n in f.fixed.index)
    assert f.fixed.shape[0] == 4
    # track is a school variable: its columns are level-2 predictors of the intercept
    intercept = f.design.coefficients[0]
    assert intercept.name == "Intercept" and len(intercept.columns) == 3


def test_fit_prints_both_forms():
    f = fitted("M4", "REML")
    rep = f.report()
    assert "Level-1 Model" in rep and "Level-2 Model" in rep and "Mixed Model" in rep
    assert "B1 = G10 + G11*(sector) + G12*(meanses) + U1" in rep
    assert f.mixed_equation.startswith("mathach = G00 + G01*sector + G02*meanses + G10*cses")
    assert "(cses | school)" in rep
