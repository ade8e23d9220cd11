"""Precision weights (lme4's `lmer(weights=)`, here `precision_weights=`) against lmer, and the
refusal of a bare `weights="w"` (issue 11, item 7).

References: refs/make_refs_weights.R -> refs/hsb/precision_weights.json (lme4 + lmerTest). The
weight is built identically there: w = 1 + ((row - 1) mod 5) / 2 over the rows of hsb.csv.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import scipy.stats

import multilevel as ml
from multilevel.errors import DataError, SpecificationError

REFS = json.loads((Path(__file__).resolve().parents[2] / "refs" / "hsb" / "precision_weights.json").read_text())
MODELS = {
    "RI": "mathach ~ cses + meanses + sector + (1 | school)",
    "RS": "mathach ~ (sector + meanses) * cses + (cses | school)",
}
RI = MODELS["RI"]


def hsb_w() -> pd.DataFrame:
    d = ml.datasets.hsb()
    d["w"] = 1 + (np.arange(len(d)) % 5) / 2  # R: 1 + ((seq_len(n) - 1) %% 5) / 2
    return d


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return hsb_w()


def _lme4(name: str) -> str:
    return "Intercept" if name == "(Intercept)" else name


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_precision_weights_reproduce_lmer(data, model, method):
    ref = REFS["models"][model][method]
    fit = ml.fit(MODELS[model], data, method, precision_weights="w")
    names = [_lme4(n) for n in ref["fixef"]]
    assert _rel(fit.beta[names], list(ref["fixef"].values())) < 1e-6
    assert _rel(fit.fixed["se"][names], list(ref["se"].values())) < 1e-6
    assert fit.deviance == pytest.approx(ref["criterion"], rel=1e-6)  # REMLcrit / deviance, with lme4's -sum log w
    assert fit.loglik == pytest.approx(ref["loglik"], rel=1e-6)
    assert fit.sigma2 == pytest.approx(ref["sigma2"], rel=1e-4)
    assert fit.n_obs == ref["nobs"]
    tau = fit.tau
    for vc in ref["varcorr"]:
        if vc["grp"] == "Residual":
            assert fit.sigma2 == pytest.approx(vc["vcov"], rel=1e-4)
            continue
        a, b = _lme4(vc["var1"]), _lme4(vc["var2"] or vc["var1"])
        assert tau.loc[a, b] == pytest.approx(vc["vcov"], rel=1e-4)
    # lmerTest's Satterthwaite df of the weighted lmer (numerical derivatives there: 1e-5)
    df = fit.coef_table(df="satterthwaite")["df"][names]
    assert _rel(df, list(ref["df_satterthwaite"].values())) < 1e-5


def test_the_unweighted_likelihood_is_off_by_the_weights(data):
    """The point of the item: ignoring lmer's weights changes sigma2 by about mean(w), so a user
    must say which weights a column holds."""
    ref = REFS["models"]["RI"]["REML"]
    plain = ml.fit(RI, data)
    assert abs(plain.sigma2 / ref["sigma2"] - 1) > 0.1


def test_ldw_is_the_constant_of_the_deviance(data):
    """The deviance is lme4's: the weighted criterion minus sum log w_i (module doc of objective)."""
    fit = ml.fit(RI, data, "ML", precision_weights="w")
    assert fit.summaries.ldw == pytest.approx(REFS["sum_log_w"], rel=1e-12)
    sol = fit.solution
    n = fit.n_obs
    by_hand = sol.logdet_L - REFS["sum_log_w"] + n * (1 + np.log(2 * np.pi * sol.pwrss / n))
    assert fit.deviance == pytest.approx(by_hand, rel=1e-12)


def test_weights_equal_to_one_change_nothing(data):
    a = ml.fit(RI, data)
    b = ml.fit(RI, data.assign(one=1.0), precision_weights="one")
    assert b.deviance == pytest.approx(a.deviance, rel=1e-12)
    np.testing.assert_allclose(b.beta, a.beta, rtol=1e-9)
    assert b.sigma2 == pytest.approx(a.sigma2, rel=1e-9)


def test_scaling_the_weights_scales_sigma2_only(data):
    """w -> c w: sigma2 -> c sigma2 (a row of weight 1 has c times the variance), beta and tau stay."""
    a = ml.fit(RI, data, precision_weights="w")
    b = ml.fit(RI, data.assign(w=data.w * 4.0), precision_weights="w")
    assert b.sigma2 == pytest.approx(4 * a.sigma2, rel=1e-7)
    np.testing.assert_allclose(b.beta, a.beta, rtol=1e-7)
    np.testing.assert_allclose(b.tau, a.tau, rtol=1e-6)


def test_bare_weights_column_is_refused_as_ambiguous(data):
    for entry in (ml.fit, lambda f, d, **kw: ml.fit_levels("mathach ~ 1 + cses", {"Intercept": "u"}, group="school", data=d, **kw)):
        with pytest.raises(SpecificationError, match=r"(?s)ambiguous.*precision_weights='w'.*sampling_weights='w'"):
            entry(RI, data, weights="w")
    with pytest.raises(SpecificationError, match="ambiguous"):
        ml.fit(RI, data, method="ML", weights={"level1": "w"})
    with pytest.raises(SpecificationError, match="not both"):
        ml.fit(RI, data, method="ML", sampling_weights="w", precision_weights="w")
    with pytest.raises(SpecificationError, match="name of a column"):
        ml.fit(RI, data, precision_weights=data["w"])
    with pytest.raises(SpecificationError, match="ambiguous"):  # also with imputed data sets
        ml.fit(RI, [data, data], weights="w")


def test_a_sampling_weights_object_is_still_accepted_as_weights(data):
    a = ml.fit(RI, data, "ML", weights=ml.Weights(level1="w"))
    b = ml.fit(RI, data, "ML", sampling_weights="w")
    c = ml.fit(RI, data, "ML", sampling_weights=ml.SamplingWeights(level1="w"))
    assert ml.Weights is ml.SamplingWeights
    assert a.deviance == b.deviance == c.deviance
    assert a.weight_kind == "sampling"


def test_bad_precision_weights(data):
    zero = data.copy()
    zero.loc[[2, 10], "w"] = 0.0
    # lme4 fits this with an infinite criterion (refs: zero_weight); here: refused, rows named
    assert REFS["zero_weight"]["REMLcrit"] == "Inf"
    with pytest.raises(DataError, match=r"(?s)'w' is 0 in 2 rows \(rows 2, 10\).*drop those rows"):
        ml.fit(RI, zero, precision_weights="w")
    for bad, message in ((-1.0, r"precision weight 'w' is zero, negative or infinite in 1 row \(row 7\)"),
                         (np.inf, r"'w' has 1 infinite value \(row 7\)")):
        neg = data.copy()
        neg.loc[7, "w"] = bad
        with pytest.raises(DataError, match=message):
            ml.fit(RI, neg, precision_weights="w")
    text = data.assign(w=data.w.map(lambda v: f"w{v}"))
    with pytest.raises(DataError, match="precision weight column 'w' is not numeric"):
        ml.fit(RI, text, precision_weights="w")
    with pytest.raises(DataError, match="sampling weight column 'w' is not numeric"):
        ml.fit(RI, text, "ML", sampling_weights="w")
    with pytest.raises(DataError, match="precision weight column 'wt' is not in the data"):
        ml.fit(RI, data, precision_weights="wt")
    miss = data.copy()
    miss.loc[[1, 2], "w"] = np.nan  # dropped listwise and reported, as lme4's na.omit drops them
    fit = ml.fit(RI, miss, precision_weights="w")
    assert dict(fit.data_report.dropped_by_variable) == {"w": 2}
    ref = ml.fit(RI, miss.dropna(subset=["w"]), precision_weights="w")
    assert fit.deviance == pytest.approx(ref.deviance, rel=1e-12)


def test_reports_name_the_weights(data):
    fit = ml.fit(RI, data, precision_weights="w")
    assert fit.weight_kind == "precision"
    assert "Weights: w  (precision weights, as lmer's weights=)" in fit.summary()
    report = fit.report()
    assert " Precision  yes          w           no" in report
    assert "Weights: precision weights 'w'" in report
    assert "precision weights 'w'" in html.unescape(fit.to_html(plots=False))
    sampled = ml.fit(RI, data, "ML", sampling_weights=ml.SamplingWeights(level1="w", level2="size"))
    assert "Weights: sampling weights level 1 'w' (size), level 2 'size' (normalize)" in sampled.summary()
    assert "Weights: sampling weights" in sampled.report()
    assert "Weights" not in ml.fit(RI, data).summary().split("Random effects")[0]


def test_refits_keep_the_precision_weights(data):
    fit = ml.fit(RI, data, precision_weights="w")
    ml_fit = fit.refit("ML")
    ref = REFS["models"]["RI"]["ML"]
    assert ml_fit.deviance == pytest.approx(ref["criterion"], rel=1e-6)
    assert ml_fit.refit("REML").deviance == pytest.approx(REFS["models"]["RI"]["REML"]["criterion"], rel=1e-6)
    # a likelihood-ratio test needs the same weights on both sides
    smaller = ml.fit("mathach ~ cses + meanses + (1 | school)", data, "ML", precision_weights="w")
    assert ml.compare(smaller, ml_fit).table["chisq"].iloc[1] == pytest.approx(smaller.deviance - ml_fit.deviance, rel=1e-12)
    with pytest.raises(SpecificationError, match="different weights"):
        ml.compare(ml.fit("mathach ~ cses + meanses + (1 | school)", data, "ML"), ml_fit)


def test_profile_interval_of_a_variance_is_where_the_profiled_deviance_rises_by_the_chi_square(data):
    """lme4's profile is wrong with prior weights (its devfun2 leaves out ldW: lme4 issue #192),
    so the interval is checked by its definition: at each end of the interval for the intercept
    SD, the ML deviance minimised over sigma2 (beta is profiled in `fit.at`) is the minimum plus
    chi2_1(0.95)."""
    fit = ml.fit(RI, data, "ML", precision_weights="w")
    ci = fit.confint("profile", which="all")
    crit = scipy.stats.chi2.ppf(0.95, 1)
    for end in ("ci_low", "ci_high"):
        sd = ci.loc["sd_Intercept|school", end]
        res = scipy.optimize.minimize_scalar(
            lambda ls2, sd=sd: fit.at([[sd**2]], float(np.exp(ls2))).deviance, bracket=(np.log(60), np.log(80)), tol=1e-12
        )
        assert res.fun - fit.deviance == pytest.approx(crit, rel=1e-4)


def test_bootstrap_draws_with_the_precision_weights(data):
    """Samples have Var(e_i) = sigma2 / w_i: the replicates' sigma centres on the fitted sigma
    (ignoring the weights in the draws would give sigma near sqrt(mean(w)) = 1.4 times larger)."""
    fit = ml.fit(RI, data, precision_weights="w")
    boot = fit.bootstrap(40, seed=3, progress=False)
    assert boot.n_failed == 0
    assert boot.replicates["sigma"].mean() == pytest.approx(np.sqrt(fit.sigma2), rel=0.01)
    assert boot.replicates["Intercept"].mean() == pytest.approx(fit.beta["Intercept"], abs=3 * fit.fixed.loc["Intercept", "se"] / np.sqrt(40) + 0.05)


def test_unverified_inference_is_refused_and_cr0_is_the_dense_sandwich(data):
    fit = ml.fit(RI, data, precision_weights="w")
    for bad in (dict(df="kenward-roger"), dict(se="CR2"), dict(se="CR0", df="bell-mccaffrey")):
        with pytest.raises(SpecificationError, match="not verified for precision weights"):
            fit.coef_table(**bad)
    # CR0 = A^-1 [sum_j X_j'V_j^-1 r_j r_j'V_j^-1 X_j] A^-1 with V_j = sigma2 (W_j^-1 + Z_j Lambda Lambda' Z_j'),
    # computed here densely, unit by unit, from the rows
    d = fit.design
    X, Z, y, w = d.X, d.Z, d.y, d.precision_weights.values
    r = y - X @ fit.beta.to_numpy()
    tau = fit.tau.to_numpy()
    bread = np.zeros((X.shape[1],) * 2)
    meat = np.zeros_like(bread)
    for j in range(d.n_groups):
        rows = d.codes == j
        V = np.diag(fit.sigma2 / w[rows]) + Z[rows] @ tau @ Z[rows].T
        XV = np.linalg.solve(V, X[rows]).T
        bread += XV @ X[rows]
        t = XV @ r[rows]
        meat += np.outer(t, t)
    A = np.linalg.inv(bread)
    np.testing.assert_allclose(fit.vcov_robust.to_numpy(), A @ meat @ A, rtol=1e-7)
    np.testing.assert_allclose(fit.vcov.to_numpy(), A, rtol=1e-7)


def test_imputed_data_sets_carry_the_precision_weights(data):
    pooled = ml.fit(RI, [data, data.assign(mathach=data.mathach + 0.01)], precision_weights="w")
    single = ml.fit(RI, data, precision_weights="w")
    assert pooled.fits[0].deviance == single.deviance
    assert all(f.weight_kind == "precision" for f in pooled.fits)


def test_streamed_fits_refuse_weights(tmp_path, data):
    path = tmp_path / "d.parquet"
    pytest.importorskip("pyarrow")
    data.to_parquet(path)
    with pytest.raises(SpecificationError, match="precision_weights="):
        ml.fit(RI, str(path), stream=True, precision_weights="w")
