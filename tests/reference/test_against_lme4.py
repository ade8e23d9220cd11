"""Every model of the references, REML and ML, against converged lme4 (and clubSandwich CR0).

Tolerances (the project's standard): relative 1e-6 on fixed effects, SEs and the criterion;
1e-4 on variance components.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import MODELS, REFS, fitted, hlm_printed, ref

CASES = [(m, meth) for m in MODELS for meth in ("REML", "ML")]


def lme4_name(n: str) -> str:
    return "(Intercept)" if n == "Intercept" else n


@pytest.mark.parametrize("model,method", CASES)
def test_fixed_effects_and_se(model, method):
    fit, r = fitted(model, method), ref(model)[method]["fixed_effects"]
    assert [lme4_name(n) for n in fit.fixed.index] == r["names"]
    np.testing.assert_allclose(fit.fixed["estimate"], r["estimate"], rtol=1e-6)
    np.testing.assert_allclose(fit.fixed["se"], r["se"], rtol=1e-6)
    v = np.array(r["vcov"])
    # off-diagonal elements near zero: compare them on the scale of the matrix
    np.testing.assert_allclose(fit.vcov.to_numpy(), v, rtol=1e-6, atol=1e-6 * np.abs(v).max())


@pytest.mark.parametrize("model,method", CASES)
def test_criterion_and_information(model, method):
    fit, r = fitted(model, method), ref(model)[method]["fit_statistics"]
    crit = r["REMLcrit"] if method == "REML" else r["ML_deviance"]
    assert fit.deviance == pytest.approx(crit, rel=1e-6, abs=0)
    # The criterion itself must be as low as lme4's (not just close): the optimum is reached.
    assert fit.deviance <= crit + 1e-6
    assert fit.loglik == pytest.approx(r["logLik"], rel=1e-6)
    assert fit.aic == pytest.approx(r["AIC"], rel=1e-6)
    assert fit.bic == pytest.approx(r["BIC"], rel=1e-6)


@pytest.mark.parametrize("model,method", CASES)
def test_variance_components(model, method):
    fit, r = fitted(model, method), ref(model)[method]["variance_components"]
    # the shared references nest cov in terms[0]; refs/make_refs_s4.R writes it flat
    cov = np.array(r["terms"][0]["cov"] if isinstance(r["terms"][0], dict) else r["cov"])
    sigma2 = r["residual_variance"]
    tau = fit.tau.to_numpy()
    # relative 1e-4, with an absolute floor for elements that are zero at the boundary
    np.testing.assert_allclose(tau, cov, rtol=1e-4, atol=1e-4 * np.abs(cov).max())
    assert fit.sigma2 == pytest.approx(sigma2, rel=1e-4)


@pytest.mark.parametrize("model,method", CASES)
def test_robust_cr0(model, method):
    fit, r = fitted(model, method), ref(model)[method]["cluster_robust"]["CR0"]
    np.testing.assert_allclose(fit.robust["se"], r["se"], rtol=1e-6)
    if "vcov" in r:
        v = np.array(r["vcov"])
        np.testing.assert_allclose(fit.vcov_robust.to_numpy(), v, rtol=1e-6, atol=1e-6 * np.abs(v).max())


@pytest.mark.parametrize("model,method", CASES)
def test_empirical_bayes(model, method):
    fit = fitted(model, method)
    csv = pd.read_csv(REFS / f"{model}_{method}_ranef_school.csv", dtype={"group": str}).set_index("group")
    assert list(csv.index) == list(fit.ranef.index)
    scale = np.sqrt(np.diag(fit.tau.to_numpy())).max()
    for k, z in enumerate(fit.design.z_names):
        np.testing.assert_allclose(fit.ranef[z], csv[f"mode:{lme4_name(z)}"], rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(fit.ranef_condvar[:, k, k], csv[f"condvar:{lme4_name(z)}"], rtol=1e-4, atol=1e-7 * scale**2)


@pytest.mark.parametrize("model,method", CASES)
def test_hlm_statistics_at_lme4_estimates(model, method):
    """Reliabilities and chi-squares from HLM's formulas, as the R script computes them."""
    r = ref(model)
    block = r[method].get("hlm_style_stats_at_lme4_estimates")
    if block is None and method == "REML":
        block = r["hlm6_comparison"]["hlm_style_stats_at_lme4_estimates"]
    if block is None:
        pytest.skip("the shared references have HLM-style statistics for REML fits only (S4 has both)")
    fit = fitted(model, method)
    chisq = np.ravel(block["chisq"])
    np.testing.assert_allclose(fit.variance_components["chisq"].iloc[:-1], chisq, rtol=1e-6)
    np.testing.assert_allclose(fit.variance_components["df"].iloc[:-1], block["chisq_df"])
    np.testing.assert_allclose(fit.reliability, np.ravel(block["reliability"]), rtol=1e-5, atol=1e-8)
    assert fit.n_units_sufficient == int(np.ravel(block["groups_used"])[0])


@pytest.mark.parametrize("model", list(MODELS))
def test_hlm_fixed_df(model):
    """HLM's approximate df as HLM printed them (J - S_q - 1; N - F for the fixed slope of M4b)."""
    expected = [row[3] for row in hlm_printed()[model]["fixed"].values()]
    np.testing.assert_array_equal(fitted(model, "REML").hlm_df.to_numpy(), expected)
