"""Denominator df, adjusted and robust SEs, contrasts and F tests against lmerTest, pbkrtest and
clubSandwich (refs/hsb/<model>.json from the shared references; refs/hsb/inference.json from
refs/make_refs_inference.R)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import multilevel as ml
from conftest import MODELS, REFS, fitted, hsb, ref
from multilevel.errors import SpecificationError

SHARED = [m for m in MODELS if m != "S4"]
CASES = [(m, meth) for m in SHARED for meth in ("REML", "ML")]
INFERENCE = json.loads((REFS / "inference.json").read_text())
INF_FORMULAS = {
    "M4": MODELS["M4"],
    "M4b": MODELS["M4b"],
    "M3": MODELS["M3"],
    "C1": "mathach ~ cses + meanses + (1 | school)",
}
INF_CASES = [(m, meth, c) for m in INF_FORMULAS for meth in ("REML", "ML") for c in INFERENCE["models"][m][meth]["contrasts"]]


def inf_fit(model: str, method: str) -> ml.Fit:
    return fitted(model, method) if model in MODELS else _c1(method)


_C1: dict = {}


def _c1(method):
    if method not in _C1:
        _C1[method] = ml.fit(INF_FORMULAS["C1"], hsb(), method=method)
    return _C1[method]


# ----- per coefficient: the shared references ------------------------------------------------
@pytest.mark.parametrize("model,method", CASES)
def test_satterthwaite_df_match_lmerTest(model, method):
    tab = fitted(model, method).coef_table(df="satterthwaite")
    r = ref(model)[method]["satterthwaite"]
    np.testing.assert_allclose(tab["df"], r["df"], rtol=1e-4)
    np.testing.assert_allclose(tab["p"], r["p"], rtol=1e-3)


@pytest.mark.parametrize("model", SHARED)
def test_kenward_roger_se_df_and_vcov_match_pbkrtest(model):
    fit = fitted(model, "REML")
    r = ref(model)["REML"]["kenward_roger"]
    tab = fit.coef_table(df="kenward-roger")
    np.testing.assert_allclose(tab["se"], r["se"], rtol=1e-6)
    np.testing.assert_allclose(tab["df"], r["df"], rtol=1e-4)
    v = np.array(r["vcov_adj"])
    np.testing.assert_allclose(fit.coordinates.vcov(fit.inference.kenward_roger.vcov_adjusted), v, rtol=1e-6, atol=1e-6 * np.abs(v).max())


@pytest.mark.parametrize("model,method", CASES)
def test_cr0_cr2_se_and_cr2_df_match_clubSandwich(model, method):
    fit = fitted(model, method)
    r = ref(model)[method]["cluster_robust"]
    np.testing.assert_allclose(fit.coef_table(se="CR0")["se"], r["CR0"]["se"], rtol=1e-6)
    cr2 = fit.coef_table(se="CR2")
    np.testing.assert_allclose(cr2["se"], r["CR2"]["se"], rtol=1e-6)
    np.testing.assert_allclose(cr2["df"], r["CR2"]["satterthwaite_df"], rtol=1e-4)
    np.testing.assert_allclose(cr2["p"], r["CR2"]["p_satterthwaite"], rtol=1e-3)
    v = np.array(r["CR2"]["vcov"])
    np.testing.assert_allclose(fit.coordinates.vcov(fit.inference.cr2.vcov), v, rtol=1e-6, atol=1e-6 * np.abs(v).max())


def test_kenward_roger_is_refused_for_ml_fits():
    with pytest.raises(SpecificationError, match="REML"):
        fitted("M4", "ML").coef_table(df="kenward-roger")


def test_df_and_se_methods_that_do_not_belong_together_are_refused():
    fit = fitted("M4", "REML")
    with pytest.raises(SpecificationError, match="bell-mccaffrey"):
        fit.coef_table(df="satterthwaite", se="CR2")
    with pytest.raises(SpecificationError, match="CR2"):
        fit.coef_table(df="bell-mccaffrey", se="model")
    with pytest.raises(SpecificationError, match="not known"):
        fit.coef_table(df="containment")


def test_simple_df_methods():
    fit = fitted("M4", "REML")
    N, J = fit.n_obs, fit.n_groups
    assert fit.coef_table()["df"].tolist() == fit.hlm_df.tolist()  # HLM's df by default
    assert set(fit.coef_table(df="residual")["df"]) == {N - 6}
    bw = fit.coef_table(df="between-within")["df"]
    # intercept, sector, meanses are between-school columns; the three cses terms within
    assert bw.tolist() == [J - 3] * 3 + [N - J - 3] * 3
    z = fit.coef_table(df="infinite")
    assert np.all(np.isinf(z["df"]))
    np.testing.assert_allclose(z["ci_high"] - z["estimate"], 1.959963984540054 * z["se"], rtol=1e-12)


# ----- contrasts and F tests: refs/hsb/inference.json ----------------------------------------
def _rows(table):
    return table["rows"]


@pytest.mark.parametrize("model,method,name", INF_CASES)
def test_contrasts_match_lmerTest_pbkrtest_clubSandwich(model, method, name):
    fit = inf_fit(model, method)
    r = INFERENCE["models"][model][method]
    np.testing.assert_allclose(fit.beta, [r["fixef"][n] for n in r["fixef_names"]], rtol=1e-6)
    c = r["contrasts"][name]
    L = np.array(c["L"], dtype=float)

    # one t test per row (lmerTest contest, joint = FALSE)
    for ddf, key in (("satterthwaite", "Satterthwaite"), ("kenward-roger", "KenwardRoger")):
        if method == "ML" and ddf == "kenward-roger":
            continue
        est = fit.estimate(L, df=ddf)
        rows = _rows(c[key]["rowwise"])
        np.testing.assert_allclose(est["estimate"], [x["Estimate"] for x in rows], rtol=1e-6)
        np.testing.assert_allclose(est["se"], [x["Std. Error"] for x in rows], rtol=1e-6)
        np.testing.assert_allclose(est["df"], [x["df"] for x in rows], rtol=1e-4)
        np.testing.assert_allclose(est["p"], [x["Pr(>|t|)"] for x in rows], rtol=1e-3)
        # the F test (joint = TRUE)
        joint = _rows(c[key]["joint"])[0]
        t = fit.test(L, df=ddf)
        assert t.F == pytest.approx(joint["F value"], rel=1e-6)
        assert t.num_df == joint["NumDF"]
        assert t.den_df == pytest.approx(joint["DenDF"], rel=1e-4)
        assert t.F_p == pytest.approx(joint["Pr(>F)"], rel=1e-3)

    w = c["wald_chisq_model_vcov"]
    assert fit.test(L).chisq == pytest.approx(w["chisq"], rel=1e-6)

    cs = c["clubSandwich_CR2"]
    robust = fit.test(L, se="CR2")
    by_test = {x["test"]: x for x in _rows(cs["Wald_test"])}
    assert robust.chisq == pytest.approx(by_test["chi-sq"]["Fstat"] * L.shape[0], rel=1e-6)
    if L.shape[0] > 1:
        assert robust.F == pytest.approx(by_test["HTZ"]["Fstat"], rel=1e-6)
        assert robust.den_df == pytest.approx(by_test["HTZ"]["df_denom"], rel=1e-4)
        assert robust.F_p == pytest.approx(by_test["HTZ"]["p_val"], rel=1e-3)
    else:
        lc = _rows(cs["linear_contrast"])[0]
        est = fit.estimate(L, se="CR2")
        assert est["se"].iloc[0] == pytest.approx(lc["SE"], rel=1e-6)
        assert est["df"].iloc[0] == pytest.approx(lc["df"], rel=1e-4)
        assert robust.den_df == pytest.approx(lc["df"], rel=1e-4)


def test_text_contrasts_equal_the_matrix_and_hlm_labels():
    fit = fitted("M4", "REML")
    L = np.zeros((2, 6))
    L[0, 1] = L[1, 4] = 1
    a = fit.test("sector = 0, sector:cses = 0", df="satterthwaite")
    b = fit.test("G01 = 0, G11 = 0", df="satterthwaite")
    c = fit.test(L, df="satterthwaite")
    assert a.F == b.F == c.F
    np.testing.assert_array_equal(a.L, L)
    e = fit.estimate("2*meanses - cses = 1")
    # the estimate is L gamma, the hypothesised value beside it; t measures the difference
    assert e["estimate"].iloc[0] == pytest.approx(2 * fit.beta["meanses"] - fit.beta["cses"], rel=1e-12)
    assert e["rhs"].iloc[0] == 1
    assert e["t"].iloc[0] == pytest.approx((e["estimate"].iloc[0] - 1) / e["se"].iloc[0], rel=1e-12)
    assert e.index[0] == "2*meanses - cses = 1"


def test_contextual_effect_is_one_call():
    """The lecture's contextual effect: with cluster-mean-centred x at level 1 and the cluster mean
    at level 2, contextual = between - within (C1: meanses - cses), as lmerTest contest1D gives."""
    fit = _c1("REML")
    r = _rows(INFERENCE["models"]["C1"]["REML"]["contrasts"]["contextual"]["Satterthwaite"]["rowwise"])[0]
    est = fit.estimate("meanses - cses", df="satterthwaite")
    assert est["estimate"].iloc[0] == pytest.approx(r["Estimate"], rel=1e-6)
    assert est["se"].iloc[0] == pytest.approx(r["Std. Error"], rel=1e-6)
    assert est["ci_low"].iloc[0] == pytest.approx(r["lower"], rel=1e-5)
    assert est["ci_high"].iloc[0] == pytest.approx(r["upper"], rel=1e-5)


@pytest.mark.parametrize(
    "text,message",
    [
        ("sectr = 0", "not a fixed effect"),
        ("sector = 0 = 1", "more than one"),
        ("", "empty"),
        ("sector = sector", "no fixed effect"),
        ("sector = 0, 2*sector = 0", "linearly dependent"),
    ],
)
def test_bad_contrasts_are_explained(text, message):
    with pytest.raises(SpecificationError, match=message):
        fitted("M4", "REML").test(text)


def test_contrast_matrix_of_the_wrong_width_is_explained():
    with pytest.raises(SpecificationError, match="6 fixed effects"):
        fitted("M4", "REML").test(np.ones((1, 5)))


def test_lme4_summary_prints_lmertest_satterthwaite_df():
    fit = fitted("M4", "REML")
    line = next(x for x in fit.summary().splitlines() if x.startswith("sector "))
    assert float(line.split()[3]) == pytest.approx(ref("M4")["REML"]["satterthwaite"]["df"][1], abs=0.005)
    kr = next(x for x in fit.summary(df="kenward-roger").splitlines() if x.startswith("sector "))
    assert float(kr.split()[3]) == pytest.approx(ref("M4")["REML"]["kenward_roger"]["df"][1], abs=0.005)


# ----- a singular fit: the slope SD estimated as 0 (refs/make_refs_boundary.R) ---------------------
BOUNDARY = json.loads((REFS / "boundary.json").read_text())


def _tiny_schools():
    """The subset of make_refs_boundary.R: schools 1-30 keep one row, 31-60 two, 61-80 all."""
    d = hsb()
    schools = list(dict.fromkeys(d["school"]))[:80]
    keep = []
    for i, s in enumerate(schools, start=1):
        rows = list(np.flatnonzero(d["school"].to_numpy() == s))
        keep += rows[:1] if i <= 30 else rows[:2] if i <= 60 else rows
    return d.iloc[keep]


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_singular_fit_df_match_lmerTest_pbkrtest_clubSandwich(method):
    """At a boundary the Satterthwaite df depend on the scale of the variance parameters; lmerTest's
    are on lme4's theta scale, where the zero SD drops out (in tau it would not)."""
    r = BOUNDARY["cases"]["uncorrelated"][method]
    data = _tiny_schools()
    assert len(data) == BOUNDARY["n_rows"]
    fit = ml.fit(r["formula"], data, method=method)
    assert fit.singular and r["isSingular"]
    np.testing.assert_allclose(fit.theta, r["theta"], atol=1e-6)
    tab = fit.coef_table(df="satterthwaite")
    np.testing.assert_allclose(tab["se"], r["se"], rtol=1e-6)
    np.testing.assert_allclose(tab["df"], r["satterthwaite_df"], rtol=1e-4)
    if method == "REML":
        kr = fit.coef_table(df="kenward-roger")
        np.testing.assert_allclose(kr["se"], r["kenward_roger_se"], rtol=1e-6)
        np.testing.assert_allclose(kr["df"], r["kenward_roger_df"], rtol=1e-4)
    cr2 = fit.coef_table(se="CR2")
    np.testing.assert_allclose(cr2["se"], r["cr2_se"], rtol=1e-6)
    np.testing.assert_allclose(cr2["df"], r["cr2_df"], rtol=1e-4)


def test_satterthwaite_on_the_theta_scale_equals_the_tau_scale_inside():
    """Away from the boundary the two scales give the same df (the invariance lmerTest relies on)."""
    from multilevel.inference.satterthwaite import df_1d

    vd = fitted("M4", "REML").inference.variance_derivatives
    l = np.eye(6)[1]
    g = np.einsum("a,kab,b->k", l, vd.dPhi(), l)
    tau_scale = 2 * (l @ vd.Phi @ l) ** 2 / (g @ vd.asymptotic_vcov @ g)
    assert df_1d(vd, l) == pytest.approx(tau_scale, rel=1e-6)
    assert np.abs(vd.gradient).max() < 1e-4 * np.abs(vd.hessian).max()  # an interior optimum


def test_input_errors_of_tests_and_tables():
    fit = fitted("M4", "REML")
    e = fit.estimate("1e-3*sector - 2.5E+1*meanses = 1e-2")
    assert e["estimate"].iloc[0] == pytest.approx(1e-3 * fit.beta["sector"] - 25 * fit.beta["meanses"])
    assert e["rhs"].iloc[0] == pytest.approx(1e-2)
    for text in ("sector > 0", "sector*2 = 0", "sector/2"):
        with pytest.raises(SpecificationError, match="linear equations"):
            fit.test(text)
    with pytest.raises(SpecificationError, match="rhs has 3 values for 2"):
        fit.test("sector = 0, cses = 0", rhs=[0, 0, 0])
    with pytest.raises(SpecificationError, match="level"):
        fit.coef_table(level=95)
    assert fit.coef_table(se="cr2")["se"].tolist() == fit.coef_table(se="CR2")["se"].tolist()
