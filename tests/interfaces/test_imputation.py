"""Pooling over multiply imputed data sets (multilevel.interfaces.imputation) against mitml.

refs/hsb/mi/imp<k>.csv.gz and refs/hsb/mitml.json are made by refs/make_refs_mitml.R: HSB with
~15% of mathach and of ses deleted at random, m = 5 mice imputations, M4 fitted by REML with lme4
on each and pooled by mitml::testEstimates / testConstraints with df.com = 157.
"""
from __future__ import annotations

import json
from functools import cache

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from conftest import MODELS, REFS, fitted
from multilevel.errors import SpecificationError
from multilevel.interfaces.imputation import PooledFit, PooledTest, d1_df_lrr, d1_df_reiter, pool, rubin_scalar

MI = json.loads((REFS / "mitml.json").read_text())
ROOT = REFS.parent
M4 = MODELS["M4"]
D1_CONTRAST = "sector = 0, sector:cses = 0"


def name(r_name: str) -> str:
    return "Intercept" if r_name == "(Intercept)" else r_name


@cache
def imputed(k: int) -> pd.DataFrame:
    return pd.read_csv(ROOT / MI["files"][k], dtype={"school": str})


@cache
def mi_fits(method: str = "REML") -> tuple[ml.Fit, ...]:
    return tuple(ml.fit(M4, imputed(k), method=method) for k in range(MI["m"]))


@cache
def pooled(df: str = "hlm", se: str | None = None) -> PooledFit:
    return pool(list(mi_fits()), df=df, se=se)


def test_reference_is_the_model_fitted():
    assert MI["model"] == M4 and MI["method"] == "REML" and MI["m"] == 5 and MI["df_com"] == 157
    for k in range(MI["m"]):
        d = imputed(k)
        assert len(d) == 7185 and not d.isna().any().any()
        # cses recomputed from the imputed ses
        np.testing.assert_allclose(d["cses"], d["ses"] - d.groupby("school")["ses"].transform("mean"), atol=1e-12)


# ----- Rubin's rules per fixed effect against mitml::testEstimates ------------------------------
@pytest.mark.parametrize("df, key", [("hlm", "fixed"), ("infinite", "fixed_df_com_inf")])
def test_fixed_effects_match_mitml(df, key):
    pf = pooled(df)
    assert list(pf.fixed.columns[:7]) == ["estimate", "se", "df", "t", "p", "ci_low", "ci_high"]
    for r_name, r in MI[key].items():
        row = pf.fixed.loc[name(r_name)]
        for col in ("estimate", "se", "riv", "fmi"):
            assert row[col] == pytest.approx(r[col], rel=1e-6), (r_name, col)
        assert row["df"] == pytest.approx(r["df"], rel=1e-4), r_name
        assert row["t"] == pytest.approx(r["t"], rel=1e-6)
        assert row["p"] == pytest.approx(r["p"], rel=1e-4, abs=1e-12)
    if df == "hlm":
        assert (pf.fixed["df_com"] == 157).all()
        # df_rubin is mitml's df without df.com
        np.testing.assert_allclose(pf.fixed["df_rubin"], [MI["fixed_df_com_inf"][k]["df"] for k in MI[key]], rtol=1e-4)
    else:
        np.testing.assert_allclose(pf.fixed["df"], pf.fixed["df_rubin"], rtol=1e-12)


def test_per_imputation_fits_match_lme4():
    for k, r in enumerate(MI["per_imputation"]):
        f = mi_fits()[k]
        np.testing.assert_allclose(f.beta, list(r["estimate"].values()), rtol=1e-6)
        np.testing.assert_allclose(np.sqrt(np.diag(f.vcov)), list(r["se"].values()), rtol=1e-6)


def _r_q_u():
    q = np.array([list(r["estimate"].values()) for r in MI["per_imputation"]])
    v = np.array([np.array(r["vcov"]) for r in MI["per_imputation"]])
    return q, v


def test_formulas_exact_on_lme4_numbers():
    """rubin_scalar on lme4's own estimates and SEs reproduces mitml to rounding (no optimiser
    differences)."""
    q, _ = _r_q_u()
    u = np.array([list(r["se"].values()) for r in MI["per_imputation"]]) ** 2
    for key, com in (("fixed", 157.0), ("fixed_df_com_inf", np.inf)):
        out = rubin_scalar(q, u, com)
        ref = pd.DataFrame(MI[key]).T
        np.testing.assert_allclose(out["qbar"], ref["estimate"], rtol=1e-12)
        np.testing.assert_allclose(np.sqrt(out["t"]), ref["se"], rtol=1e-12)
        np.testing.assert_allclose(out["riv"], ref["riv"], rtol=1e-10)
        np.testing.assert_allclose(out["df"], ref["df"], rtol=1e-10)
        np.testing.assert_allclose(out["fmi"], ref["fmi"], rtol=1e-10)


def test_d1_formula_exact_on_lme4_numbers():
    q, v = _r_q_u()
    names = list(MI["per_imputation"][0]["estimate"])
    L = np.zeros((2, len(names)))
    L[0, names.index("sector")] = L[1, names.index("sector:cses")] = 1
    m, k = len(q), 2
    qs = q @ L.T
    us = np.einsum("ka,iab,lb->ikl", L, v, L)
    qbar, ubar = qs.mean(0), us.mean(0)
    b = np.cov(qs.T)
    r1 = (1 + 1 / m) * np.trace(b @ np.linalg.inv(ubar)) / k
    F = qbar @ np.linalg.solve(ubar, qbar) / (k * (1 + r1))
    d1 = MI["D1"]
    # testConstraints differentiates the constraints numerically (forward differences)
    assert F == pytest.approx(d1["df_com"]["F"], rel=1e-7)
    assert r1 == pytest.approx(d1["df_com"]["riv"], rel=1e-7)
    assert d1_df_reiter(r1, k, m, 157) == pytest.approx(d1["df_com"]["df2"], rel=1e-7)
    assert d1_df_lrr(r1, k, m) == pytest.approx(d1["no_df_com"]["df2"], rel=1e-7)


# ----- the averages ------------------------------------------------------------------------------
def test_variance_components_are_averages_matching_mitml():
    pf = pooled()
    vc = MI["variance_components"]
    assert pf.tau.loc["Intercept", "Intercept"] == pytest.approx(vc["Intercept~~Intercept|school"], rel=1e-4)
    assert pf.tau.loc["cses", "cses"] == pytest.approx(vc["cses~~cses|school"], rel=1e-4)
    assert pf.tau.loc["Intercept", "cses"] == pytest.approx(vc["Intercept~~cses|school"], rel=1e-4)
    assert pf.sigma2 == pytest.approx(vc["Residual~~Residual"], rel=1e-4)
    assert pf.icc == pytest.approx(vc["ICC|school"], rel=1e-4)
    fits = mi_fits()
    assert pf.reliability["cses"] == pytest.approx(np.mean([f.reliability["cses"] for f in fits]), rel=1e-12)
    assert pf.deviance == pytest.approx(np.mean([f.deviance for f in fits]), rel=1e-12)
    assert pf.deviance == pytest.approx(np.mean([r["REMLcrit"] for r in MI["per_imputation"]]), rel=1e-9)
    assert pf.variance_components.loc["level-1", "variance"] == pytest.approx(pf.sigma2)
    assert pf.variance_components.loc["cses", "min"] == min(f.tau.loc["cses", "cses"] for f in fits)


# ----- D1 ----------------------------------------------------------------------------------------
def test_d1_matches_mitml_testConstraints():
    d1 = MI["D1"]
    t = pooled().test(D1_CONTRAST)
    assert isinstance(t, PooledTest)
    assert t.F == pytest.approx(d1["df_com"]["F"], rel=1e-6)
    assert t.num_df == d1["df_com"]["df1"] == 2
    assert t.riv == pytest.approx(d1["df_com"]["riv"], rel=1e-6)
    assert t.den_df == pytest.approx(d1["df_com"]["df2"], rel=1e-4)  # Reiter's df (df.com = 157)
    assert t.p == pytest.approx(d1["df_com"]["p"], rel=1e-4)
    assert t.df_com == 157
    assert t.den_df_lrr == pytest.approx(d1["no_df_com"]["df2"], rel=1e-4)
    ti = pooled("infinite").test(D1_CONTRAST)
    assert ti.den_df == pytest.approx(d1["no_df_com"]["df2"], rel=1e-4)
    assert ti.p == pytest.approx(d1["no_df_com"]["p"], rel=1e-4)
    # single rows pooled by Rubin's rules as in the fixed table
    np.testing.assert_allclose(t.estimates["se"], pooled().fixed.loc[["sector", "sector:cses"], "se"], rtol=1e-12)
    # a matrix gives the same test
    L = np.zeros((2, 6))
    L[0, 1] = L[1, 4] = 1
    assert pooled().test(L).F == pytest.approx(t.F, rel=1e-12)


# ----- identical copies, refusals ----------------------------------------------------------------
def test_identical_copies_give_the_single_fit():
    fit = fitted("M4", "REML")
    for df in ("hlm", "infinite"):
        pf = pool([fit, fit, fit], df=df)
        np.testing.assert_array_equal(pf.b.to_numpy(), 0)
        single = fit.coef_table(df=df)
        np.testing.assert_allclose(pf.fixed["estimate"], single["estimate"], rtol=1e-14)
        np.testing.assert_allclose(pf.fixed["se"], single["se"], rtol=1e-14)
        assert (pf.fixed["riv"] == 0).all() and (pf.fixed["lambda"] == 0).all()
        if df == "infinite":
            assert (pf.fixed["fmi"] == 0).all() and np.isinf(pf.fixed["df"]).all()
        else:
            # Barnard-Rubin at B = 0: nu_obs = nu_com(nu_com+1)/(nu_com+3); mitml's FMI = 2/(nu+3)
            nu = 157 * 158 / 160
            np.testing.assert_allclose(pf.fixed["df"], nu, rtol=1e-14)
            np.testing.assert_allclose(pf.fixed["fmi"], 2 / (nu + 3), rtol=1e-14)
        t = pf.test(D1_CONTRAST)
        assert t.riv == 0
        assert t.F == pytest.approx(fit.test(D1_CONTRAST, df=df).F, rel=1e-12)
    assert pf.tau.to_numpy() == pytest.approx(fit.tau.to_numpy(), rel=1e-14)
    assert pf.sigma2 == pytest.approx(fit.sigma2, rel=1e-14)


def test_mismatched_models_are_refused():
    fits = list(mi_fits())
    other = ml.fit("mathach ~ sector * cses + (cses | school)", imputed(0))
    with pytest.raises(SpecificationError, match=r"fit 3 has fixed effects Intercept, sector, cses, sector:cses"):
        pool([fits[0], fits[1], other])
    ri = ml.fit("mathach ~ (sector + meanses) * cses + (1 | school)", imputed(0))
    with pytest.raises(SpecificationError, match=r"fit 2 has random effects Intercept, fit 1 has Intercept, cses"):
        pool([fits[0], ri])
    with pytest.raises(SpecificationError, match=r"fit 2 has estimation method ML, fit 1 has REML"):
        pool([fits[0], fits[1].refit("ML")])


def test_fewer_than_two_fits_refused():
    fit = fitted("M4", "REML")
    with pytest.raises(SpecificationError, match="at least 2"):
        pool([fit])
    with pytest.raises(SpecificationError, match="at least 2"):
        pool([])
    with pytest.raises(SpecificationError, match="list of fits"):
        pool(fit)


def test_other_methods_and_report():
    pf = pooled()
    rob = pooled("hlm", "CR0")
    np.testing.assert_allclose(pf.robust["se"], rob.fixed["se"], rtol=1e-14)
    assert len(pf.fits) == 5 and pf.m == 5
    text = pf.report(tests=[D1_CONTRAST])
    assert "average over m = 5" in text and "Barnard-Rubin" in text and "pooled (D1)" in text
    assert str(pf) == pf.report()
    sat = pool(list(mi_fits()), df="satterthwaite")
    assert (sat.fixed["df_com"] != 157).any()
    assert (sat.fixed["df"] < sat.fixed["df_com"]).all()


# ----- the entry points: ml.fit(data=[...]) and an imputation column ------------------------------
def test_fit_takes_a_list_of_data_sets_paths_or_an_imputation_column(tmp_path):
    expected = pooled()
    by_list = ml.fit(M4, [imputed(k) for k in range(MI["m"])])
    assert isinstance(by_list, PooledFit)
    np.testing.assert_array_equal(by_list.fixed.to_numpy(), expected.fixed.to_numpy())
    paths = [ROOT / MI["files"][k] for k in range(MI["m"])]
    by_paths = ml.fit(M4, paths)
    np.testing.assert_allclose(by_paths.fixed["estimate"], expected.fixed["estimate"], rtol=1e-12)
    stacked = pd.concat([imputed(k).assign(imp=k + 1) for k in range(MI["m"])], ignore_index=True)
    by_column = ml.fit(M4, stacked, imputation="imp")
    np.testing.assert_array_equal(by_column.fixed.to_numpy(), expected.fixed.to_numpy())
    lv = ml.fit_levels("mathach ~ 1 + cses", {"Intercept": "sector + meanses + u", "cses": "sector + meanses + u"},
                       group="school", data=[imputed(k) for k in range(MI["m"])])
    np.testing.assert_allclose(lv.fixed["estimate"].to_numpy(), expected.fixed["estimate"].to_numpy(), rtol=1e-10)
    with pytest.raises(SpecificationError, match="at least two"):
        ml.fit(M4, [imputed(0)])
    with pytest.raises(SpecificationError, match="one value"):
        ml.fit(M4, imputed(0).assign(imp=1), imputation="imp")


def test_imputation_column_rules_and_pooled_data_report():
    stacked = pd.concat([imputed(k).assign(imp=k) for k in range(MI["m"])], ignore_index=True)  # 0, 1, ...
    with pytest.raises(SpecificationError, match=r"data set 0 .* original, incomplete data"):
        ml.fit(M4, stacked, imputation="imp")
    gaps = pd.concat([imputed(k).assign(imp=k + 1.0) for k in range(2)], ignore_index=True)
    gaps.loc[[3, 7], "imp"] = np.nan
    with pytest.raises(SpecificationError, match="2 rows have no imputation number"):
        ml.fit(M4, gaps, imputation="imp")
    rep = pooled().data_report
    assert list(rep["rows_used"]) == [7185] * MI["m"] and list(rep["units_used"]) == [160] * MI["m"]


def test_imputations_fitted_in_threads_pool_as_fitted_one_by_one(monkeypatch):
    """Large imputed data sets are fitted in threads (api.PARALLEL_ROWS); forced here on HSB."""
    import multilevel.interfaces.api as api

    sets = [imputed(k) for k in range(MI["m"])]
    serial = ml.fit(M4, sets)
    monkeypatch.setattr(api, "PARALLEL_ROWS", 0)
    monkeypatch.setattr("multilevel.parallel.default_jobs", lambda: 2)
    threaded = ml.fit(M4, sets)
    assert len(threaded.fits) == MI["m"]
    for a, b in zip(serial.fits, threaded.fits):
        np.testing.assert_array_equal(a.beta.to_numpy(), b.beta.to_numpy())
        np.testing.assert_array_equal(a.theta, b.theta)


def test_a_pooled_fit_and_its_test_print_as_tables():
    """(issue 11, 9c) a pooled fit and its test print as readable tables, not as dumps of their fields."""
    pf = pooled()
    text = repr(pf)
    assert "PooledFit(" not in text and "fits=(" not in text
    assert "Rubin" in text and "sector:cses" in text and f"m = {pf.m}" in text
    assert "<table" in pf._repr_html_()
    assert "MULTIPLE IMPUTATION" in str(pf)  # print(pooled): the full report
    t = pf.test("sector = 0, sector:cses = 0")
    text = repr(t)
    assert text == str(t) and "HypothesisTest(" not in text and "PooledTest(" not in text
    assert f"F (D1) = {t.F:.4f}" in text and "sector = 0" in text
    assert "<table" in t._repr_html_()
