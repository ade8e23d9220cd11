"""Effect sizes: the lecture's worked examples, the seminar's numbers, and Rights & Sterba's R2
checked by simulating the model's variance components (r2mlm cannot be installed here: CRAN is
out of reach and Debian has no r-cran-r2mlm)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from conftest import fitted, hlm_printed, hsb
from multilevel.diagnostics.effect_sizes import column_levels, representative_size
from multilevel.errors import SpecificationError


# ----- the lecture ---------------------------------------------------------------------------
def test_lecture_design_effects_and_effective_n():
    # n = 5 patients from each of 100 doctors, ICC = .30
    assert ml.design_effect(icc=0.30, cluster_size=5) == pytest.approx(2.20)
    assert round(ml.effective_n(n_total=500, icc=0.30, cluster_size=5)) == 227
    # n = 20 students from each of 50 schools, ICC = .05
    assert ml.design_effect(icc=0.05, cluster_size=20) == pytest.approx(1.95)
    assert round(ml.effective_n(n_total=1000, icc=0.05, cluster_size=20)) == 513


def test_lecture_true_intercept_variance():
    # 4.65 - 7.06/4 = 2.885 (printed 2.88); after a level-1 predictor 4.65 - 2.17/4 = 4.1075 (printed 4.10)
    assert ml.true_intercept_variance(4.65, 7.06, 4) == pytest.approx(2.885)
    assert ml.true_intercept_variance(4.65, 2.17, 4) == pytest.approx(4.1075)


def test_unequal_cluster_sizes():
    sizes = [2, 4, 6]
    assert representative_size(sizes, "mean") == 4
    assert representative_size(sizes, "median") == 4
    assert representative_size(sizes, "kish") == pytest.approx(56 / 12)
    assert representative_size(sizes, "anova") == pytest.approx((12 - 56 / 12) / 2)
    # effective N from the list alone: N = 12
    assert ml.effective_n(icc=0.1, cluster_size=sizes, size="kish") == pytest.approx(12 / (1 + (56 / 12 - 1) * 0.1))
    with pytest.raises(SpecificationError, match="icc"):
        ml.design_effect(icc=1.5, cluster_size=3)
    with pytest.raises(SpecificationError, match="n_total"):
        ml.effective_n(icc=0.1, cluster_size=3)


def test_d_and_r_from_t():
    fit = fitted("M4", "REML")
    es = fit.effect_sizes(df="satterthwaite").fixed
    tab = fit.coef_table(df="satterthwaite")
    np.testing.assert_allclose(es["d"], 2 * tab["t"] / np.sqrt(tab["df"]), rtol=1e-12)
    np.testing.assert_allclose(es["r"], tab["t"] / np.sqrt(tab["t"] ** 2 + tab["df"]), rtol=1e-12)


# ----- the seminar -------------------------------------------------------------------------
def test_seminar_icc():
    es = fitted("M1", "REML").effect_sizes()
    assert round(es.icc.loc["unconditional", "icc"], 2) == 0.18
    p = hlm_printed()["M1"]
    at_hlm = fitted("M1", "REML").at(p["tau"], p["sigma2"]).effect_sizes()
    assert at_hlm.icc.loc["unconditional", "icc"] == pytest.approx(8.61431 / (8.61431 + 39.14831), rel=1e-6)
    # design effect and effective N follow from it with the mean school size N/J
    row = es.design_effects.loc["mean"]
    assert row["cluster_size"] == pytest.approx(7185 / 160)
    assert row["design_effect"] == pytest.approx(1 + (7185 / 160 - 1) * es.icc.loc["unconditional", "icc"])
    assert row["effective_n"] == pytest.approx(7185 / row["design_effect"])


def test_seminar_proportion_of_variance_explained():
    m1, m2, m3 = (fitted(m, "REML") for m in ("M1", "M2", "M3"))
    level2 = ml.pseudo_r2(m1, m2).loc["tau Intercept", "pseudo_r2"]
    assert round(level2, 2) == 0.69  # (8.61 - 2.64) / 8.61
    level1 = ml.pseudo_r2(m1, m3).loc["level-1 (sigma2)", "pseudo_r2"]
    assert round(level1, 3) == 0.063  # (39.15 - 36.70) / 39.15
    # at HLM's printed variance components
    p = hlm_printed()
    hl = ml.pseudo_r2(m1.at(p["M1"]["tau"], p["M1"]["sigma2"]), m2.at(p["M2"]["tau"], p["M2"]["sigma2"]))
    assert hl.loc["tau Intercept", "pseudo_r2"] == pytest.approx((8.61431 - p["M2"]["tau"][0][0]) / 8.61431, rel=1e-9)
    # a negative reduction is reported as is and flagged
    assert ml.pseudo_r2(m1, m3).loc["tau Intercept", "negative"]


def test_total_r2_uses_fixed_only_predictions():
    fit = fitted("M4", "REML")
    d = hsb()
    pred = fit.beta["Intercept"] + fit.beta["sector"] * d.sector + fit.beta["meanses"] * d.meanses + d.cses * (
        fit.beta["cses"] + fit.beta["sector:cses"] * d.sector + fit.beta["meanses:cses"] * d.meanses
    )
    expected = np.corrcoef(d.mathach, pred)[0, 1] ** 2
    assert fit.effect_sizes().r2.iloc[0, 0] == pytest.approx(expected, rel=1e-10)


def test_plausible_values_range():
    fit = fitted("M3", "REML")  # no level-2 predictors: centred at gamma
    pv = fit.effect_sizes().plausible_values
    sd = np.sqrt(fit.tau.loc["cses", "cses"])
    assert pv.loc["cses", "centre"] == pytest.approx(fit.beta["cses"])
    assert pv.loc["cses", "high"] == pytest.approx(fit.beta["cses"] + 1.959963984540054 * sd)


def test_observed_and_true_intercept_variance_of_a_fit():
    fit = fitted("M1", "REML")
    iv = fit.effect_sizes().intercept_variance
    means = hsb().groupby("school").mathach.mean()
    assert iv.loc["mean", "observed_var_of_means"] == pytest.approx(means.var(ddof=1), rel=1e-10)
    assert iv.loc["mean", "true_tau00"] == pytest.approx(means.var(ddof=1) - fit.sigma2 / (7185 / 160), rel=1e-10)


# ----- Rights & Sterba ------------------------------------------------------------------------
def test_column_levels():
    fit = fitted("M4", "REML")
    lv = column_levels(fit.design.X, fit.design.codes, fit.n_groups)
    assert lv.tolist() == ["constant", "between", "between", "within", "within", "within"]


def test_rights_sterba_against_simulated_variance_components():
    """Draw u_j ~ N(0, tau), e ~ N(0, sigma2) many times on the HSB design and measure each
    source's share of the outcome variance directly: within fixed part, between fixed part,
    random slopes (z_slope'u_slope), random intercept, residual."""
    fit = fitted("M4", "REML")
    rs = fit.effect_sizes().rights_sterba
    d = fit.design
    X, Z, codes, beta = d.X, d.Z, d.codes, fit.beta.to_numpy()
    lv = column_levels(X, codes, fit.n_groups)
    rng = np.random.default_rng(20261125)
    tau = fit.tau.to_numpy()
    R = 400
    u = rng.multivariate_normal(np.zeros(2), tau, size=(R, fit.n_groups))  # (R, J, 2)
    within_fixed = X[:, lv == "within"] @ beta[lv == "within"]
    between_fixed = X[:, lv == "between"] @ beta[lv == "between"]
    intercept = u[:, codes, 0]
    slopes = u[:, codes, 1] * Z[:, 1]
    resid = rng.standard_normal((R, d.n_obs)) * np.sqrt(fit.sigma2)
    y = within_fixed + between_fixed + intercept + slopes + resid
    var = {k: np.var(v) for k, v in dict(f1=np.broadcast_to(within_fixed, y.shape), f2=np.broadcast_to(between_fixed, y.shape),
                                          m=intercept, v=slopes, y=y).items()}
    within_total = np.var(y - between_fixed - intercept)
    between_total = np.var(between_fixed + intercept)
    for name in ("f1", "f2", "v", "m"):
        assert rs.loc["total", name] == pytest.approx(var[name] / var["y"], rel=0.03), name
    assert rs.loc["within", "f1"] == pytest.approx(var["f1"] / within_total, rel=0.03)
    assert rs.loc["within", "v"] == pytest.approx(var["v"] / within_total, rel=0.03)
    assert rs.loc["between", "f2"] == pytest.approx(var["f2"] / between_total, rel=0.03)
    assert rs.loc["between", "m"] == pytest.approx(var["m"] / between_total, rel=0.03)
    assert rs.loc["total", "fvm"] == pytest.approx(1 - fit.sigma2 / var["y"], rel=0.01)


def test_rights_sterba_without_centring_gives_total_measures_only():
    fit = ml.fit("mathach ~ ses + (1 | school)", hsb())
    es = fit.effect_sizes()
    assert "within" not in es.rights_sterba.index
    assert np.isnan(es.rights_sterba.loc["total", "f1"])
    assert 0 < es.rights_sterba.loc["total", "f"] < 1
    assert any("cluster-mean centred" in n for n in es.notes)


def test_report_and_html_show_the_effect_sizes():
    fit = fitted("M1", "REML")
    es = fit.effect_sizes()
    text = fit.report()
    line = next(x for x in text.splitlines() if "ICC, unconditional" in x)
    assert float(line.split("=")[1]) == pytest.approx(es.icc.loc["unconditional", "icc"], abs=5e-5)
    assert "effective N" in text and "Rights & Sterba" in text
    assert "Effect sizes" in fit._repr_html_()
    assert "Effect sizes" not in fit.report(effect_sizes=False)


def test_rights_sterba_total_decomposition_without_centring_by_simulation():
    """Raw ses with a random slope: the random part's share is v + m = (tr(T Sigma_z) + mu'T mu)/total."""
    fit = ml.fit("mathach ~ ses + (ses | school)", hsb())
    rs = fit.effect_sizes().rights_sterba
    d = fit.design
    rng = np.random.default_rng(11)
    R = 400
    u = rng.multivariate_normal(np.zeros(2), fit.tau.to_numpy(), size=(R, fit.n_groups))
    fixed = d.X @ fit.beta.to_numpy()
    random = u[:, d.codes, 0] + u[:, d.codes, 1] * d.Z[:, 1]
    y = fixed + random + rng.standard_normal((R, d.n_obs)) * np.sqrt(fit.sigma2)
    total = np.var(y)
    assert rs.loc["total", "f"] == pytest.approx(np.var(fixed) / total, rel=0.03)
    assert rs.loc["total", "v"] + rs.loc["total", "m"] == pytest.approx(np.var(random) / total, rel=0.03)


def test_effect_sizes_without_a_fixed_intercept_are_not_defined():
    fit = ml.fit("mathach ~ 0 + ses + sector + (1 | school)", hsb())
    es = fit.effect_sizes()
    assert es.rights_sterba.isna().all().all()
    assert np.isnan(es.icc.loc["adjusted (Nakagawa)", "icc"])
    assert any("no fixed intercept" in n for n in es.notes)


def test_plausible_values_with_groups_of_one_row():
    d = hsb()
    first = d.groupby("school").head(1)
    data = pd.concat([first.iloc[:40], d[d.school.isin(d.school.unique()[40:])]])
    fit = ml.fit("mathach ~ sector * cwc(ses) + (cwc(ses) | school)", data)
    pv = fit.effect_sizes().plausible_values
    assert np.isfinite(pv.to_numpy()).all()
    assert "nan" not in fit.report()
