"""Empirical Bayes quantities, HLM's residual files, the homogeneity test, plots and the HTML report."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import multilevel as ml
from conftest import MODELS, REFS, fitted, hsb, ref
from multilevel.errors import DataError, SpecificationError
from multilevel.interfaces.fit import Fit

SHARED = [m for m in MODELS if m != "S4"]


def lme4_name(n: str) -> str:
    return "(Intercept)" if n == "Intercept" else n


@pytest.mark.parametrize("model,method", [(m, meth) for m in SHARED for meth in ("REML", "ML")])
def test_eb_residuals_and_conditional_covariances_match_lme4(model, method):
    """At lme4's theta (so that the comparison is of the formulas, not of two optimisers' last
    digits) every mode, conditional variance and covariance agrees to 1e-6 relative."""
    fit = fitted(model, method)
    at = Fit.at_theta(fit.design, fit.summaries, fit.template, method, np.array(ref(model)[method]["variance_components"]["theta"]))
    csv = pd.read_csv(REFS / f"{model}_{method}_ranef_school.csv", dtype={"group": str}).set_index("group")
    z = list(fit.design.z_names)
    for k, name in enumerate(z):
        np.testing.assert_allclose(at.ranef[name], csv[f"mode:{lme4_name(name)}"], rtol=1e-6)
        np.testing.assert_allclose(at.ranef_condvar[:, k, k], csv[f"condvar:{lme4_name(name)}"], rtol=1e-6)
    if len(z) == 2:
        np.testing.assert_allclose(at.ranef_condvar[:, 0, 1], csv[f"condcov:{lme4_name(z[0])}|{lme4_name(z[1])}"], rtol=1e-6)


def test_posterior_variances_with_gamma_uncertainty_equal_henderson():
    """PV = Var(u_j - u*_j) and PVC = Var(beta_j - EC_j) against the inverse of Henderson's mixed
    model equations, built densely for all 160 schools."""
    fit = fitted("M4", "REML")
    d = fit.design
    J, q, p = fit.n_groups, 2, 6
    T, s2 = fit.tau.to_numpy(), fit.sigma2
    Zfull = np.zeros((fit.n_obs, J * q))
    for k in range(q):
        Zfull[np.arange(fit.n_obs), d.codes * q + k] = d.Z[:, k]
    Cm = np.block([[d.X.T @ d.X, d.X.T @ Zfull], [Zfull.T @ d.X, Zfull.T @ Zfull + s2 * np.kron(np.eye(J), np.linalg.inv(T))]])
    Cinv = s2 * np.linalg.inv(Cm)
    pev = np.stack([Cinv[p + j * q : p + (j + 1) * q, p + j * q : p + (j + 1) * q] for j in range(J)])
    np.testing.assert_allclose(fit.ranef_pev, pev, rtol=1e-7, atol=1e-10)
    # PVC: beta_j = W_j gamma + u_j, so Var = [W_j I] Cinv_(gamma, u_j) [W_j I]'
    W = fit.diagnostics.eb["W"]
    for j in (0, 57, 159):
        idx = list(range(p)) + list(range(p + j * q, p + (j + 1) * q))
        Aj = np.hstack([W[j], np.eye(q)])
        np.testing.assert_allclose(fit.diagnostics.eb["PVC"][j], Aj @ Cinv[np.ix_(idx, idx)] @ Aj.T, rtol=1e-7)
    assert np.all(fit.ranef_pev[:, 0, 0] > fit.ranef_condvar[:, 0, 0])
    np.testing.assert_allclose(fit.eb_coefficients.to_numpy(), fit.diagnostics.eb["FV"] + fit.ranef.to_numpy())


def test_mdist_and_chipct_on_a_case_computed_by_hand():
    rng = np.random.default_rng(3)
    rows = []
    for j, n in enumerate([4, 6, 9, 5, 2, 8, 7]):
        x = rng.normal(size=n)
        w = float(j % 2)
        rows += [{"g": f"u{j}", "x": xi, "w": w, "y": 1 + 0.5 * w + (0.8 + 0.3 * w) * xi + rng.normal()} for xi in x]
    data = pd.DataFrame(rows)
    fit = ml.fit("y ~ w * x + (x | g)", data)
    beta, T, s2 = fit.beta, fit.tau.to_numpy(), fit.sigma2
    md = {}
    for g, part in data.groupby("g"):
        Z = np.column_stack([np.ones(len(part)), part.x])
        bhat = np.linalg.lstsq(Z, part.y.to_numpy(), rcond=None)[0]
        wv = part.w.iloc[0]
        fitted_b = np.array([beta["Intercept"] + beta["w"] * wv, beta["x"] + beta["w:x"] * wv])
        V = s2 * np.linalg.inv(Z.T @ Z)
        delta = bhat - fitted_b
        md[g] = float(delta @ np.linalg.solve(T + V, delta))
    r = fit.residuals(2).set_index("g")
    for g, v in md.items():
        assert r.loc[g, "mdist"] == pytest.approx(v, rel=1e-9)
    ranks = scipy.stats.rankdata([md[g] for g in r.index])
    np.testing.assert_allclose(r["chipct"], scipy.stats.chi2.ppf((ranks - 0.5) / len(md), 2), rtol=1e-12)
    # the unit with 2 rows fits its OLS exactly; OLS and MDIST still defined (Z of full rank)
    assert np.isfinite(r.loc["u4", "mdist"]) and np.isnan(r.loc["u4", "olsrsvar"])


def test_units_without_sufficient_data_are_marked():
    d = hsb()
    d = pd.concat([d, pd.DataFrame({"school": ["X"], "mathach": [12.0], "cses": [0.0], "sector": [0], "meanses": [0.0]})], ignore_index=True)
    fit = ml.fit(MODELS["M4"], d)
    ols = fit.unit_ols()
    assert not ols.loc["X", "sufficient"] and ols.loc["X", ["Intercept", "cses"]].isna().all()
    assert ols["sufficient"].sum() == 160
    r = fit.residuals(2).set_index("school")
    assert np.isnan(r.loc["X", "mdist"]) and np.isnan(r.loc["X", "ol_Intercept"]) and np.isfinite(r.loc["X", "eb_Intercept"])


def test_level2_residual_file_columns_and_values():
    fit = fitted("M4", "REML")
    r = fit.residuals(2, extra=["pracad"])
    assert list(r.columns[:7]) == ["school", "nj", "chipct", "mdist", "lntotvar", "olsrsvar", "mdrsvar"]
    for c in ["eb_Intercept", "ol_cses", "fv_cses", "ec_Intercept", "pv_cses_Intercept", "pvc_cses_cses", "sector", "meanses", "pracad"]:
        assert c in r.columns
    d = hsb()
    first = d.groupby("school").first()
    np.testing.assert_array_equal(r.set_index("school")["pracad"], first.loc[r["school"], "pracad"])
    np.testing.assert_allclose(r["lntotvar"], np.log(d.groupby("school").mathach.std(ddof=1).loc[r["school"]]), rtol=1e-12)
    np.testing.assert_allclose(r["ec_Intercept"], r["fv_Intercept"] + r["eb_Intercept"], rtol=1e-12)
    # OLSRSVAR from a direct regression of one school
    one = d[d.school == "1224"]
    Z = np.column_stack([np.ones(len(one)), one.cses])
    rss = np.sum((one.mathach - Z @ np.linalg.lstsq(Z, one.mathach, rcond=None)[0]) ** 2)
    assert r.set_index("school").loc["1224", "olsrsvar"] == pytest.approx(0.5 * np.log(rss / (len(one) - 2)), rel=1e-10)
    with pytest.raises(DataError, match="'nope'"):
        fit.residuals(2, extra=["nope"])


def test_level1_residual_file():
    fit = fitted("M4", "REML")
    r = fit.residuals(1, extra=["female"])
    assert len(r) == 7185
    np.testing.assert_allclose(r["resid"], r["mathach"] - r["fitted"], rtol=1e-12)
    u = fit.ranef.loc[r["school"]].to_numpy()
    np.testing.assert_allclose(r["fitted"] - r["fitted_fixed"], u[:, 0] + u[:, 1] * r["cses"], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(r["female"], hsb()["female"])


@pytest.mark.parametrize("ext", ["csv", "parquet", "sav", "dta"])
def test_save_residuals_by_extension(tmp_path, ext):
    fit = fitted("M4", "REML")
    path = fit.save_residuals(tmp_path / f"res.{ext}", level=2)
    back = ml.read(path)
    assert len(back) == 160
    np.testing.assert_allclose(back.iloc[:, 3].to_numpy(dtype=float), fit.residuals(2)["mdist"], rtol=1e-12)
    if ext in ("sav", "dta"):
        assert all(re.fullmatch(r"[A-Za-z]\w*", c) for c in back.columns)  # names SPSS/Stata accept
    with pytest.raises(SpecificationError, match=r"\.csv, \.parquet, \.sav or \.dta"):
        fit.save_residuals(tmp_path / "res.xlsx")


def test_homogeneity_of_level1_variance():
    fit = fitted("M4", "REML")
    h = fit.homogeneity_test()
    # direct computation: OLS of mathach on (1, cses) per school, R&B eq. 9.5-9.6
    logs, fs = [], []
    for _, part in hsb().groupby("school"):
        Z = np.column_stack([np.ones(len(part)), part.cses])
        res = part.mathach - Z @ np.linalg.lstsq(Z, part.mathach, rcond=None)[0]
        f = len(part) - 2
        logs.append(np.log(res @ res / f))
        fs.append(f)
    logs, fs = np.array(logs), np.array(fs)
    lbar = np.sum(fs * logs) / fs.sum()
    H = np.sum((logs - lbar) ** 2 / (2 / fs))
    assert h["chisq"] == pytest.approx(H, rel=1e-10) and h["df"] == 159
    # the seminar printed 245.76576 on 159 df (HLM's exact variant is not documented; see note)
    assert h["chisq"] == pytest.approx(245.76576, rel=2e-3)
    text = fit.report(homogeneity=True)
    assert "Test of homogeneity of level-1 variance" in text and "Number of degrees of freedom =  159" in text
    strict = fit.homogeneity_test(min_df=40)
    assert strict["units_used"] == int((fs >= 40).sum()) and strict["df"] == strict["units_used"] - 1


def test_every_plot_kind_renders_without_warnings(tmp_path):
    fit = fitted("M4", "REML")
    kinds = {
        "caterpillar": {}, "qq": {}, "residual-sd": {}, "eb": {"variable": "pracad"},
        "model": {"x": "cses", "lines": {"sector": [0, 1], "meanses": "quartiles"}}, "residuals-fitted": {},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kind, options in kinds.items():
            fig = fit.plot(kind, path=tmp_path / f"{kind}.png", **options)
            assert (tmp_path / f"{kind}.png").stat().st_size > 5000
            for ax in fig.axes:
                assert ax.get_xlabel() or not ax.has_data()  # every axis with data is labelled
        fit.plot("qq", path=tmp_path / "qq.svg")
        fit.plot("qq", path=tmp_path / "qq.pdf")
    model = fit.plot("model", x="cses", lines={"sector": [0, 1], "meanses": "quartiles"})
    assert len(model.axes[0].get_lines()) == 4 and model.axes[0].get_legend() is not None
    # each line is the fixed part: sector = 1, meanses at its upper quartile over schools
    q75 = hsb().groupby("school").meanses.first().quantile(0.75)
    line = model.axes[0].get_lines()[3]
    x, y = line.get_data()
    b = fit.beta
    expected = b["Intercept"] + b["sector"] + b["meanses"] * q75 + x * (b["cses"] + b["sector:cses"] + b["meanses:cses"] * q75)
    np.testing.assert_allclose(y, expected, rtol=1e-10)
    with pytest.raises(SpecificationError, match="kind="):
        fit.plot("histogram")
    with pytest.raises(SpecificationError, match=r"\.png, \.svg or \.pdf"):
        fit.plot("qq", path=tmp_path / "x.jpg")


def test_html_report_is_self_contained(tmp_path):
    fit = fitted("M4", "REML")
    page = fit.to_html(tmp_path / "report.html")
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == page
    for part in ("Level-1 Model", "Mixed form", "lme4 form", "Level-1 rows: 7185 used of 7185", "Fixed effects",
                 "Variance components", "Effect sizes", "Final estimation of fixed effects", "Random effects:",
                 "Satterthwaite"):
        assert part in page, part
    assert page.count("data:image/png;base64,") == 6
    assert not re.search(r"(src|href)=\"https?:", page)  # nothing loaded from elsewhere
    compact = fit._repr_html_()
    assert "<table" in compact and "data:image" not in compact
