"""Issue 14: HCM2's level equations (`ml.levels(level1, level2, row=..., column=...)`, 'b' and 'c' for the
random row and column effects): the spec equals the lme4 formula's, the fits are equal, and what is not
taken is refused with a message that says what to write."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.errors import SpecificationError
from multilevel.model.formula import parse_formula

ROOT = Path(__file__).resolve().parents[2]
L1 = "y ~ 1 + ses"
L2 = {"Intercept": "dep + sfree + b + c", "ses": "dep + sfree + b"}
FORMULA = "y ~ (dep + sfree) * ses + (1 + ses | nbhd) + (1 | school)"


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return pd.read_csv(ROOT / "refs/hcm2/data/hcm2_sim.csv")


def test_hcm2_equations_are_the_lme4_formula():
    spec = ml.levels(L1, L2, row="nbhd", column="school")
    assert spec == parse_formula(FORMULA)
    assert spec.groups == ("nbhd", "school")  # the rows first
    assert spec.random[0].terms == ("1", "ses") and spec.random[1].terms == ("1",)


@pytest.mark.parametrize(
    ("level1", "level2", "formula"),
    [
        ("y ~ 1", {"Intercept": "b + c"}, "y ~ 1 + (1 | r) + (1 | k)"),
        ("y ~ 1 + x", {"Intercept": "w + c + b", "x": "c"}, "y ~ w + x + (1 | r) + (1 + x | k)"),
        ("y ~ 1 + x", {"Intercept": "b", "x": "0 + c"}, "y ~ 1 + (1 | r) + (0 + x | k)"),
        ("y ~ 1 + cgm(x)", {"Intercept": "b + c"}, "y ~ 1 + cgm(x) + (1 | r) + (1 | k)"),
        # HCM2's (beta_01 + b_01j) W and (gamma_01 + c_01k) X: b:w over the rows, c:x over the columns
        ("y ~ 1 + x", {"Intercept": "xr + wc + b + c + b:wc + c:xr", "x": "b + b:wc"},
         "y ~ xr + wc + x + (1 + wc + x + wc:x | r) + (1 + xr | k)"),
        ("y ~ 1", {"Intercept": "b:wc + c"}, "y ~ 1 + (0 + wc | r) + (1 | k)"),
    ],
)
def test_other_equations(level1, level2, formula):
    assert ml.levels(level1, level2, row="r", column="k") == parse_formula(formula)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_level_fit_equals_formula_fit(data, method):
    a = ml.fit_levels(L1, L2, row="nbhd", column="school", data=data, method=method)
    f = ml.fit(FORMULA, data, method=method)
    assert a.spec == f.spec
    np.testing.assert_allclose(a.beta.to_numpy(), f.beta.to_numpy(), rtol=1e-10, atol=0)
    np.testing.assert_allclose(a.vcov.to_numpy(), f.vcov.to_numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(a.theta.to_numpy(), f.theta.to_numpy(), rtol=1e-10, atol=1e-12)
    assert a.deviance == pytest.approx(f.deviance, rel=1e-10)
    assert a.report() == f.report()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level2": {"Intercept": "b"}}, r"random column \('c'\) effect"),
        ({"level2": {"Intercept": "c"}}, r"random row \('b'\) effect"),
        ({"level2": {"Intercept": "u"}}, r"'b' for the random row effect"),
        ({"level2": {"Intercept": "random"}}, r"'b' for the random row effect"),
        ({"level2": {"Intercept": "b00 + c00"}}, r"'b00' .* 'b' for the random row effect"),
        ({"level2": {"Intercept": "b + c"}, "column": "nbhd"}, "row and column ids are both"),
        ({"level2": {"Intercept": "b + c"}, "group": "nbhd"}, "row= and column= name the two crossed"),
        ({"level2": {"Intercept": "b + c"}, "row": None, "column": None}, "Say which column holds the units"),
        ({"level2": {"Intercept": "cgm(dep) + b + c"}}, r"centring a row or column predictor"),
        ({"level2": {"Intercept": "dep:sfree + b + c"}}, "interaction"),
        ({"level2": {"Intercept": "b + c + b:dep:sfree"}}, r"after 'b:' name one predictor"),
        ({"level1": "y ~ 1 + cwc(ses)", "level2": {"Intercept": "b + c"}}, "group-mean centring .* ambiguous"),
        ({"level2": {"Intercept": "b + c", "tses": "b"}}, "not a level-1 coefficient"),
        ({"level2": "b + c"}, "must be a dict"),
        ({"level1": "y ~ 1 + (1 | nbhd)", "level2": {"Intercept": "b + c"}}, "takes no"),
    ],
)
def test_refusals(kwargs, message):
    args = {"level1": L1, "row": "nbhd", "column": "school"} | kwargs
    with pytest.raises(SpecificationError, match=message):
        ml.levels(args.pop("level1"), args.pop("level2"), **args)


def test_a_data_column_named_b_is_refused_beside_the_marker(data):
    d = data.assign(b=1.0)
    with pytest.raises(SpecificationError, match=r"column named 'b'.*backticks"):
        ml.fit_levels(L1, {"Intercept": "b + c"}, row="nbhd", column="school", data=d)
    # backticked, it is the column (a constant: the fit refuses it as the intercept's copy, not as a marker)
    spec = ml.levels(L1, {"Intercept": "`b` + b + c"}, row="nbhd", column="school")
    assert "b" in spec.fixed


def test_fit_levels_with_text_ids_and_a_pandas_string_column(data):
    d = data.assign(nbhd=data["nbhd"].astype("string"), school="S" + data["school"].astype(str))
    a = ml.fit_levels(L1, L2, row="nbhd", column="school", data=d, method="ML")
    f = ml.fit(FORMULA, data, method="ML")
    assert a.deviance == pytest.approx(f.deviance, rel=1e-10)
