"""Formulas: text is never code (issue 11, item 4), they mean what an lme4 user means (item 3),
derived columns are named by their helper (item 9), and the formula errors of item 6.

References are independent of the transform code: each transformed fit is compared with the fit
of a column computed beforehand with numpy/pandas (x**2, y - z, the group-mean-centred column)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from conftest import hsb
from multilevel.errors import DataError, SpecificationError


def small() -> pd.DataFrame:
    d = hsb()[["school", "mathach", "ses", "sector", "meanses", "minority"]].iloc[:2000].copy()
    return d.reset_index(drop=True)


# ----- item 4: formula text is never code --------------------------------------------------------
@pytest.mark.parametrize(
    "term",
    [
        "I(np.savetxt({path!r}, [1]) or ses)",
        "I(__import__('os').system('touch {path}') or ses)",
        "log(open({path!r}, 'w').close() or ses)",
        "I((lambda: open({path!r}, 'w'))() or ses)",
        "I(exec('open(\"{path}\", \"w\")') or ses)",
    ],
)
def test_code_in_a_formula_does_not_run(tmp_path, term):
    path = str(tmp_path / "pwned")
    with pytest.raises(SpecificationError, match="is not allowed"):
        ml.fit(f"mathach ~ {term.format(path=path)} + (1 | school)", small())
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "formula, what",
    [
        ("mathach ~ I(ses[0]) + (1 | school)", "'\\['"),
        ("mathach ~ I('a') + (1 | school)", "text"),
        ("mathach ~ I(__class__) + (1 | school)", "__class__"),
        ("mathach ~ foo(ses) + (1 | school)", "foo"),
        ("mathach ~ I(ses and sector) + (1 | school)", "and"),
    ],
)
def test_anything_outside_the_whitelist_is_refused(formula, what):
    with pytest.raises(SpecificationError) as e:
        ml.fit(formula, small())
    assert "Allowed in a formula" in str(e.value) or "not allowed" in str(e.value)


def test_a_dotted_name_is_a_column_never_an_attribute():
    # R names may hold dots (mean.ses): 'np.pi' is looked up as a column, never evaluated
    with pytest.raises(DataError, match=r"Column 'np\.pi' .* is not in the data"):
        ml.fit("mathach ~ I(np.pi * ses) + (1 | school)", small())
    with pytest.raises(SpecificationError, match=r"The function 'np\.exp' .* is not allowed"):
        ml.fit("mathach ~ I(np.exp(ses)) + (1 | school)", small())


def test_formulaic_gets_only_lookups():
    spec = ml.parse_formula("mathach ~ I(ses^2) + log(mathach2) + C(sector) + (1 | school)")
    text = spec.fixed_formula()
    assert "`I(ses^2)`" in text and "`log(mathach2)`" in text and "C(sector)" in text


# ----- item 3: formulas mean what an lme4 user means ----------------------------------------------
def test_I_power_is_a_square_not_xor():
    d = small().assign(ses_sq=lambda t: t["ses"] ** 2)
    f = ml.fit("mathach ~ ses + I(ses^2) + (1 | school)", d)
    ref = ml.fit("mathach ~ ses + ses_sq + (1 | school)", d)
    np.testing.assert_allclose(f.beta.to_numpy(), ref.beta.to_numpy(), rtol=1e-7)
    assert list(f.beta.index) == ["Intercept", "ses", "I(ses^2)"]
    assert f.deviance == pytest.approx(ref.deviance, rel=1e-10)
    g = ml.fit("mathach ~ ses + I(ses**2) + (1 | school)", d)  # Python's spelling, same column
    assert g.deviance == pytest.approx(ref.deviance, rel=1e-10)


def test_factor_is_C():
    d = small()
    f = ml.fit("mathach ~ factor(sector) + (1 | school)", d)
    g = ml.fit("mathach ~ C(sector) + (1 | school)", d)
    assert list(f.beta.index) == list(g.beta.index) == ["Intercept", "C(sector)[T.1]"]
    assert f.deviance == pytest.approx(g.deviance, rel=1e-12)


def test_TRUE_FALSE_and_raw_poly():
    d = small().assign(ses_sq=lambda t: t["ses"] ** 2)
    f = ml.fit("mathach ~ poly(ses, 2, raw = TRUE) + (1 | school)", d)
    ref = ml.fit("mathach ~ ses + ses_sq + (1 | school)", d)
    assert list(f.beta.index) == ["Intercept", "poly(ses, 2, raw = TRUE)1", "poly(ses, 2, raw = TRUE)2"]
    np.testing.assert_allclose(f.beta.to_numpy(), ref.beta.to_numpy(), rtol=1e-7)
    t = ml.fit("mathach ~ I(ses * TRUE) + I(sector + FALSE) + (1 | school)", d)
    r = ml.fit("mathach ~ ses + sector + (1 | school)", d)
    np.testing.assert_allclose(t.beta.to_numpy(), r.beta.to_numpy(), rtol=1e-7)


def test_orthogonal_poly_spans_the_powers():
    d = small().assign(ses_sq=lambda t: t["ses"] ** 2)
    f = ml.fit("mathach ~ poly(ses, 2) + (1 | school)", d, method="ML")  # ML: invariant to X -> XA
    ref = ml.fit("mathach ~ ses + ses_sq + (1 | school)", d, method="ML")
    assert f.deviance == pytest.approx(ref.deviance, rel=1e-10)
    P = f.design.X[:, 1:]
    np.testing.assert_allclose(P.T @ P, np.eye(2), atol=1e-10)  # R's poly: orthonormal columns
    np.testing.assert_allclose(P.sum(axis=0), 0, atol=1e-10)  # ... orthogonal to the constant


def test_offset_is_a_known_part_of_the_linear_predictor():
    d = small().assign(z=lambda t: 0.5 * t["ses"] + t["minority"])
    d["y_minus_z"] = d["mathach"] - d["z"]
    f = ml.fit("mathach ~ ses + offset(z) + (1 | school)", d)
    ref = ml.fit("y_minus_z ~ ses + (1 | school)", d)
    np.testing.assert_allclose(f.beta.to_numpy(), ref.beta.to_numpy(), rtol=1e-7)
    assert f.deviance == pytest.approx(ref.deviance, rel=1e-10)
    assert "offset(z)" not in f.beta.index
    r1, r0 = f.residuals(level=1), ref.residuals(level=1)
    np.testing.assert_allclose(r1["fitted"].to_numpy(), r0["fitted"].to_numpy() + d["z"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(r1["resid"].to_numpy(), r0["resid"].to_numpy(), atol=1e-6)
    spec = ml.parse_formula("mathach ~ ses + offset(z) + (1 | school)")
    assert "offset(z)" in spec.to_formula()
    assert ml.parse_formula(spec.to_formula()) == spec


def test_cwc_plus_raw_keeps_both():
    d = small()
    d["cses_ref"] = d["ses"] - d.groupby("school")["ses"].transform("mean")
    f = ml.fit("mathach ~ cwc(ses) + ses + (1 | school)", d)
    ref = ml.fit("mathach ~ cses_ref + ses + (1 | school)", d)
    assert list(f.beta.index) == ["Intercept", "cwc(ses)", "ses"]
    np.testing.assert_allclose(f.beta.to_numpy(), ref.beta.to_numpy(), rtol=1e-7)


def test_backticked_names_with_spaces():
    d = small().rename(columns={"ses": "my ses", "school": "school id"})
    f = ml.fit("mathach ~ `my ses` + cwc(`my ses`) + (`my ses` | `school id`)", d)
    ref = ml.fit("mathach ~ ses + cwc(ses) + (ses | school)", small())
    assert list(f.beta.index) == ["Intercept", "my ses", "cwc(my ses)"]
    np.testing.assert_allclose(f.beta.to_numpy(), ref.beta.to_numpy(), rtol=1e-6)
    assert ml.parse_formula(f.design.spec.to_formula()) == f.design.spec


@pytest.mark.parametrize(
    "formula, message",
    [
        ("mathach ~ ses ~ sector + (1 | school)", "has 2 '~'"),
        ("mathach ~ ses + ( | school)", "nothing before the bar"),
        ("mathach ~ ses + (0 | school)", "no random effect at all"),
        ("mathach ~ mathach + ses + (1 | school)", "The outcome 'mathach' is also among the predictors"),
        ("mathach ~ ses + (mathach | school)", "The outcome 'mathach' is also among the predictors"),
        ("mathach ~ Intercept + (1 | school)", "name of the intercept's column"),
    ],
)
def test_formula_errors(formula, message):
    d = small().assign(Intercept=1.0)
    with pytest.raises(SpecificationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ml.fit(formula, d)


def test_cwc_of_a_level2_variable_is_refused():
    with pytest.raises(DataError, match=r"cwc\(meanses\): 'meanses' is constant within every unit of 'school'.*cgm\(meanses\)"):
        ml.fit("mathach ~ cwc(meanses) + (1 | school)", small())


def test_non_finite_transform_is_refused():
    with pytest.raises(DataError, match=r"'log\(ses\)' is not a finite number"):
        ml.fit("mathach ~ log(ses) + (1 | school)", small())


# ----- item 9: names ---------------------------------------------------------------------------
def test_centred_terms_are_named_by_their_helper():
    d = small()
    f = ml.fit("mathach ~ sector * cwc(ses) + cgm(meanses) + (cwc(ses) | school)", d)
    assert list(f.beta.index) == ["Intercept", "sector", "cwc(ses)", "cgm(meanses)", "sector:cwc(ses)"]
    assert "cwc(ses)" in f.tau.index
    assert list(f.ranef.columns) == ["Intercept", "cwc(ses)"]
    w = f.test("sector:cwc(ses) = 0")
    assert "sector:cwc(ses)" in str(w)
    e = f.estimate("cwc(ses) + sector:cwc(ses)")
    assert float(e.iloc[0]["estimate"]) == pytest.approx(f.beta["cwc(ses)"] + f.beta["sector:cwc(ses)"], rel=1e-12)
    eq = "\n".join(f.level_equations)
    assert "B1*(cwc(ses))" in eq and "cwc(ses) is ses centred around its group mean" in eq
    assert "cwc(ses)" in f.report()
    # the printed formula refits the same model
    spec = f.design.spec
    assert ml.parse_formula(spec.to_formula()) == spec
    assert ml.fit(spec.to_formula(), d).deviance == pytest.approx(f.deviance, rel=1e-12)


def test_level2_keys_with_or_without_the_helper():
    a = ml.levels("mathach ~ 1 + cwc(ses)", {"Intercept": "sector + u", "ses": "sector + u"}, group="school")
    b = ml.levels("mathach ~ 1 + cwc(ses)", {"Intercept": "sector + u", "cwc(ses)": "sector + u"}, group="school")
    assert a == b == ml.parse_formula("mathach ~ sector * cwc(ses) + (cwc(ses) | school)")
    with pytest.raises(SpecificationError, match="more than one level-1 coefficient"):
        ml.levels("mathach ~ 1 + cwc(ses) + cgm(ses)", {"ses": "u"}, group="school")
