"""Model comparison (ml.compare) against lme4's anova and lmerTest's ranova, the lecture's rules,
and the seminar's hypothesis tests (HLM's printed output)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import multilevel as ml
from conftest import MODELS, REFS, fitted, hlm_printed, hsb
from multilevel.errors import SpecificationError

INFERENCE = json.loads((REFS / "inference.json").read_text())


def _anova(key):
    return INFERENCE["anova"][key]["rows"]


def test_reml_comparison_of_variance_models_matches_lme4_anova_and_ranova():
    small, big = fitted("M4b", "REML"), fitted("M4", "REML")
    c = ml.compare(big, small, labels=["M4", "M4b"])  # any order: sorted by parameters
    assert list(c.table.index) == ["M4b", "M4"]
    rows = _anova("REML_M4b_vs_M4_refitFALSE")
    np.testing.assert_allclose(c.table["deviance"], [r["deviance"] for r in rows], rtol=1e-6)
    np.testing.assert_allclose(c.table["aic"], [r["AIC"] for r in rows], rtol=1e-6)
    np.testing.assert_allclose(c.table["bic"], [r["BIC"] for r in rows], rtol=1e-6)
    assert c.table["n_params"].tolist() == [r["npar"] for r in rows]
    last = c.table.iloc[1]
    assert last["chisq"] == pytest.approx(rows[1]["Chisq"], rel=1e-5)
    assert last["df"] == rows[1]["Df"] == 2
    assert last["p"] == pytest.approx(rows[1]["Pr(>Chisq)"], rel=1e-5)
    ranova = INFERENCE["rand_lmerTest"]["M4_REML"]["rows"]
    assert last["chisq"] == pytest.approx(next(r for r in ranova if r["LRT"] is not None)["LRT"], rel=1e-5)
    # the slope variance is on its boundary under H0: 0.5 chi2(2) + 0.5 chi2(1), smaller than naive
    mix = 0.5 * scipy.stats.chi2.sf(last["chisq"], 2) + 0.5 * scipy.stats.chi2.sf(last["chisq"], 1)
    assert last["p_mixture"] == pytest.approx(mix, rel=1e-12)
    assert last["p_mixture"] < last["p"]
    assert any("boundary" in n for n in c.notes)


@pytest.mark.parametrize("key,models", [("ML_M4b_vs_M4", ("M4b", "M4")), ("ML_C1_vs_M4", ("C1", "M4"))])
def test_ml_comparisons_match_lme4_anova(key, models):
    fits = [
        fitted(m, "ML") if m in MODELS else ml.fit("mathach ~ cses + meanses + (1 | school)", hsb(), method="ML")
        for m in models
    ]
    c = ml.compare(*fits)
    rows = _anova(key)
    np.testing.assert_allclose(c.table["deviance"], [r["deviance"] for r in rows], rtol=1e-6)
    np.testing.assert_allclose(c.table["aic"], [r["AIC"] for r in rows], rtol=1e-6)
    np.testing.assert_allclose(c.table["bic"], [r["BIC"] for r in rows], rtol=1e-6)
    assert c.table["chisq"].iloc[1] == pytest.approx(rows[1]["Chisq"], rel=1e-4)
    assert c.table["p"].iloc[1] == pytest.approx(rows[1]["Pr(>Chisq)"], rel=1e-4)


def test_sas_hlm_information_criteria_count_covariance_parameters_under_reml():
    f = fitted("M4", "REML")
    row = ml.compare(fitted("M4b", "REML"), f).table.loc["model 2"]
    assert row["n_params_sas"] == 4 == f.hlm_n_params  # tau00, tau01, tau11, sigma2
    assert row["aic_sas"] == pytest.approx(f.deviance + 8)
    assert row["bic_sas"] == pytest.approx(f.deviance + 4 * np.log(160))


def test_reml_fits_with_different_fixed_effects_are_refused_then_refitted_by_ml():
    a = ml.fit("mathach ~ cses + meanses + (1 | school)", hsb())
    b = fitted("M4", "REML")
    with pytest.raises(SpecificationError, match="refit='ML'"):
        ml.compare(a, b)
    c = ml.compare(a, b, refit="ML")
    assert set(c.table["method"]) == {"ML"}
    assert c.table["chisq"].iloc[1] == pytest.approx(_anova("ML_C1_vs_M4")[1]["Chisq"], rel=1e-4)
    assert np.isnan(c.table["p_mixture"].iloc[1])  # fixed effects differ too: no boundary mixture


def test_different_data_and_mixed_methods_are_refused():
    d = hsb()
    with pytest.raises(SpecificationError, match="different data"):
        ml.compare(fitted("M1", "REML"), ml.fit(MODELS["M1"], d.iloc[:5000]))
    with pytest.raises(SpecificationError, match="REML and ML"):
        ml.compare(fitted("M4b", "REML"), fitted("M4", "ML"))


def test_mixture_p_value():
    from multilevel.inference.compare import mixture_p

    assert mixture_p(3.0, 1) == pytest.approx(0.5 * scipy.stats.chi2.sf(3.0, 1))  # the lecture: halve p
    assert mixture_p(0.0, 1) == pytest.approx(1.0)
    assert mixture_p(5.0, 2) == pytest.approx(0.5 * scipy.stats.chi2.sf(5, 2) + 0.5 * scipy.stats.chi2.sf(5, 1))


# ----- the seminar's tests ---------------------------------------------------------------------
def _hlm_m4_point():
    """The variance components at which HLM computed model 4's printed fixed effects, SEs, robust
    SEs and deviance, recovered from those 18 printed fixed-effect numbers.

    HLM's model 4 stopped before convergence (EM), and its printed tau is one update past the
    point where its gammas and deviance were computed: at the printed tau the gammas differ from
    the printed ones by up to 40 half-units of the last printed digit. Least squares over
    (tau00, tau01, tau11, sigma2) finds the point where all 18 printed numbers agree."""
    p = hlm_printed()["M4"]
    f = fitted("M4", "REML")
    names = list(f.beta.index)
    gam = np.array([p["fixed"][n][0] for n in names])
    se = np.array([p["fixed"][n][1] for n in names])
    rse = np.array([p["robust"][n][0] for n in names])

    def at(x):
        return f.at(np.array([[x[0], x[1]], [x[1], x[2]]]), x[3])

    def residuals(x):
        g = at(x)
        # in half-units of the last printed digit (all six decimals)
        return np.concatenate([g.beta - gam, np.sqrt(np.diag(g.vcov)) - se, np.sqrt(np.diag(g.vcov_robust)) - rse]) / 5e-7

    t, s2 = np.array(p["tau"]), p["sigma2"]
    x0 = np.array([t[0, 0], t[0, 1], t[1, 1], s2])
    res = scipy.optimize.least_squares(residuals, x0, x_scale=[1e-3, 1e-3, 1e-3, 1e-2])
    return f, at, residuals, x0, res


def test_hlm_model4_fixed_effects_table_pins_down_its_variance_components():
    _, at, residuals, x0, res = _hlm_m4_point()
    assert np.abs(residuals(x0)).max() > 20  # the printed tau does not give the printed gammas
    assert np.abs(res.fun).max() < 1.2  # the recovered point gives all 18 to the printed digits
    printed = hlm_printed()["M4"]
    # the recovered point rounds to the printed tau except tau11 (0.149139 vs 0.14892, the last update)
    assert res.x[0] == pytest.approx(printed["tau"][0][0], abs=1e-5)
    assert res.x[1] == pytest.approx(printed["tau"][0][1], abs=1e-5)
    assert res.x[3] == pytest.approx(printed["sigma2"], abs=1e-5)
    # ... and HLM's printed deviance is the deviance there
    assert at(res.x).hlm_deviance == pytest.approx(printed["deviance"], abs=1e-5)


def test_seminar_general_linear_hypothesis_chi_square():
    """'Results of General Linear Hypothesis Testing': G01 = 0 and G11 = 0, chi-square 60.596880,
    df 2. HLM uses the robust (CR0) covariance for it when robust SEs are printed."""
    _, at, _, x0, res = _hlm_m4_point()
    t = at(res.x).test("G01 = 0, G11 = 0", se="CR0")
    assert t.chisq == pytest.approx(60.596880, abs=5e-6)
    assert t.chisq_df == 2
    assert round(t.chisq_p, 6) == 0.0
    # at the printed tau itself (gammas off by up to 2e-5) the statistic is within 1e-5 relative
    assert at(x0).test("G01 = 0, G11 = 0", se="CR0").chisq == pytest.approx(60.596880, rel=1e-5)
    # the model-based covariance gives a different number: HLM's is the robust one
    assert at(res.x).test("G01 = 0, G11 = 0").chisq == pytest.approx(66.148, abs=0.01)


def test_seminar_variance_covariance_components_test():
    """Model 4 against its random-intercept variant: chi-square 1.07710, df 2, p > .500."""
    p = hlm_printed()
    _, at, _, x0, res = _hlm_m4_point()
    small = fitted("M4b", "REML").at(p["M4b"]["tau"], p["M4b"]["sigma2"])
    big = at(res.x)
    c = ml.compare(small, big)
    # HLM's deviances differ from lme4's criterion by the same log(2 pi): the difference is the same
    assert c.table["chisq"].iloc[1] == pytest.approx(1.07710, abs=5e-6)
    assert c.table["df"].iloc[1] == 2
    assert c.table["p"].iloc[1] > 0.5
    # at the printed tau of model 4 the deviance is 4.4e-4 lower (see _hlm_m4_point)
    c_printed = ml.compare(small, at(x0))
    assert c_printed.table["chisq"].iloc[1] == pytest.approx(1.07755, abs=1e-5)
    # as HLM computes it, from the two printed deviances and parameter counts
    entered = ml.compare(ml.Deviance(p["M4b"]["deviance"], 2, "4b"), ml.Deviance(p["M4"]["deviance"], 4, "4"))
    assert entered.table["chisq"].iloc[1] == pytest.approx(1.07710, abs=1e-5)  # deviances printed to 1e-6
    assert "1.07709" in str(entered)


def test_seminar_model_comparison_test_from_entered_deviances():
    """HLM's "Model comparison test" of the heterogeneous-sigma2 run: its deviance 46482.093344
    (11 parameters) against model 4's 46501.875643 (4): chi-square 19.78230, df 7, p 0.006.
    (HLM compares an ML deviance with a REML one here; with fits, compare() refuses that.)"""
    c = ml.compare(ml.Deviance(46501.875643, 4, "model 4"), ml.Deviance(46482.093344, 11, "heterogeneous"))
    row = c.table.loc["heterogeneous"]
    assert row["chisq"] == pytest.approx(19.78230, abs=5e-6)
    assert row["df"] == 7
    assert round(row["p"], 3) == 0.006


def test_report_prints_the_glh_test_as_hlm_does():
    _, at, _, _, res = _hlm_m4_point()
    text = at(res.x).report(tests=["G01 = 0, G11 = 0"])
    block = text[text.index("Results of General Linear Hypothesis Testing"):]
    chisq = float(block.split("Chi-square statistic =")[1].split()[0])
    assert chisq == pytest.approx(60.596880, abs=5e-6)
    assert "Degrees of freedom   = 2" in block
    sector_row = next(line for line in block.splitlines() if "G01" in line)
    assert sector_row.split()[-2:] == ["1.000", "0.000"]
    assert "robust (CR0)" in block


def test_compare_input_errors_and_non_nested_models():
    f = fitted("M4", "REML")
    with pytest.raises(SpecificationError, match="Argument 2"):
        ml.compare(f, "model 4b")
    with pytest.raises(SpecificationError, match="twice"):
        ml.compare(f, f)
    with pytest.raises(SpecificationError, match="two fits"):
        ml.pseudo_r2(f, 3)
    a = ml.fit("mathach ~ cses + (1 | school)", hsb(), method="ML")
    b = ml.fit("mathach ~ meanses + (1 | school)", hsb(), method="ML")
    c = ml.compare(a, b)
    assert np.isnan(c.table["chisq"].iloc[1])
    assert any("not nested" in n for n in c.notes)
