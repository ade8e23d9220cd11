"""Sampling weights (pseudo-maximum likelihood). R's WeMix is not in Debian and CRAN is out of
reach, so the checks are: the definition evaluated directly (dense per-unit integrals), the
replication identities, the scaling invariance, and the sandwich from numerical scores."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from conftest import hsb
from multilevel.errors import DataError, SpecificationError

M = "mathach ~ meanses + cses + (cses | school)"


def weighted_data(seed: int = 5) -> pd.DataFrame:
    d = hsb()[["school", "mathach", "meanses", "cses", "sector"]].copy()
    rng = np.random.default_rng(seed)
    schools = d["school"].unique()
    w2 = dict(zip(schools, rng.uniform(0.5, 3.0, len(schools))))
    d["w2"] = d["school"].map(w2)
    d["w1"] = rng.uniform(0.5, 2.0, len(d))
    d["k2"] = d["school"].map(dict(zip(schools, rng.integers(1, 4, len(schools)))))
    d["k1"] = rng.integers(1, 3, len(d))
    d["one"] = 1.0
    return d


def close_fits(a, b, rtol=1e-7):
    np.testing.assert_allclose(a.beta, b.beta, rtol=rtol)
    # the variance components are as precise as the optimiser's convergence (~1e-7)
    np.testing.assert_allclose(a.tau, b.tau, rtol=max(50 * rtol, 1e-6), atol=1e-9)
    assert a.sigma2 == pytest.approx(b.sigma2, rel=rtol)


def test_unit_weights_equal_the_unweighted_fit():
    d = weighted_data()
    plain = ml.fit(M, d, method="ML")
    for scaling in ("raw", "normalize"):
        w = ml.fit(M, d, method="ML", sampling_weights=ml.Weights(level1="one", level2="one", level1_scaling="raw", level2_scaling=scaling))
        close_fits(w, plain, rtol=1e-8)
        assert w.deviance == pytest.approx(plain.deviance, rel=1e-12)
        np.testing.assert_allclose(w.vcov_robust, plain.vcov_robust, rtol=1e-8)


def test_integer_level2_weights_equal_duplicated_units():
    d = weighted_data()
    copies = []
    for k in range(1, 4):
        part = d[d.k2 >= k].copy()
        part["school"] = part["school"] + f"_{k}"
        copies.append(part)
    dup = ml.fit(M, pd.concat(copies, ignore_index=True), method="ML")
    w = ml.fit(M, d, method="ML", sampling_weights=ml.Weights(level2="k2", level2_scaling="raw"))
    close_fits(w, dup)
    assert w.deviance == pytest.approx(dup.deviance, rel=1e-10)


def test_integer_level1_weights_equal_duplicated_rows():
    d = weighted_data()
    dup = ml.fit(M, d.loc[d.index.repeat(d.k1)].reset_index(drop=True), method="ML")
    w = ml.fit(M, d, method="ML", sampling_weights=ml.Weights(level1="k1", level1_scaling="raw"))
    close_fits(w, dup)
    assert w.deviance == pytest.approx(dup.deviance, rel=1e-10)


@pytest.mark.parametrize("scaling", ["size", "effective", "global"])
def test_scaling_all_weights_by_a_constant_changes_nothing_under_normalisation(scaling):
    d = weighted_data()
    spec = ml.SamplingWeights(level1="w1", level2="w2", level1_scaling=scaling)
    a = ml.fit(M, d, method="ML", sampling_weights=spec)
    b = ml.fit(M, d.assign(w1=d.w1 * 7.3, w2=d.w2 * 0.01), method="ML", sampling_weights=spec)
    close_fits(a, b, rtol=1e-9)
    np.testing.assert_allclose(a.vcov_robust, b.vcov_robust, rtol=1e-7, atol=1e-9 * np.abs(a.vcov_robust.to_numpy()).max())
    raw = ml.Weights(level1="w1", level2="w2", level1_scaling="raw", level2_scaling="raw")
    c = ml.fit(M, d, method="ML", sampling_weights=raw)
    e = ml.fit(M, d.assign(w1=d.w1 * 7.3), method="ML", sampling_weights=raw)
    assert not np.allclose(c.tau, e.tau, rtol=1e-3)  # without normalisation the level-1 scale matters


def _dense_unit_loglik(fit, j, gamma, tau, sigma2, w1):
    """log of integral prod_i phi(y_i; x_i'gamma + z_i'u, sigma2)^w_i phi_T(u) du for unit j, in
    closed form with n_j x n_j algebra: -S1/2 log(2 pi sigma2) - r'Dr/(2 sigma2) - log|T|/2
    - log|P|/2 + b'P^-1 b/2, with P = Z'DZ/sigma2 + T^-1 and b = Z'Dr/sigma2."""
    d = fit.design
    rows = d.codes == j
    X, Z, y, w = d.X[rows], d.Z[rows], d.y[rows], w1[rows]
    r = y - X @ gamma
    P = Z.T @ (w[:, None] * Z) / sigma2 + np.linalg.inv(tau)
    b = Z.T @ (w * r) / sigma2
    return (
        -0.5 * w.sum() * np.log(2 * np.pi * sigma2) - 0.5 * (w * r * r).sum() / sigma2
        - 0.5 * np.linalg.slogdet(tau)[1] - 0.5 * np.linalg.slogdet(P)[1] + 0.5 * b @ np.linalg.solve(P, b)
    )


def test_pseudo_likelihood_and_sandwich_equal_their_definitions():
    d = weighted_data()
    fit = ml.fit(M, d, method="ML", sampling_weights=ml.Weights(level1="w1", level2="w2"))
    w = fit.design.weights
    gamma, tau, s2 = fit.beta.to_numpy(), fit.tau.to_numpy(), fit.sigma2
    J = fit.n_groups
    ll = [_dense_unit_loglik(fit, j, gamma, tau, s2, w.row) for j in range(J)]
    assert fit.deviance == pytest.approx(-2 * np.dot(w.unit, ll), rel=1e-11)
    # scores and Hessian in gamma of each unit's log-likelihood (quadratic in gamma: central
    # differences are exact up to rounding)
    p = len(gamma)
    h = 1e-4
    S = np.zeros((J, p))
    H = np.zeros((p, p))
    for j in range(J):
        f = lambda g, j=j: _dense_unit_loglik(fit, j, g, tau, s2, w.row)  # noqa: E731 (unit j's log-likelihood in gamma, j bound now)
        for a in range(p):
            e = np.eye(p)[a] * h
            S[j, a] = (f(gamma + e) - f(gamma - e)) / (2 * h)
            for b in range(p):
                e2 = np.eye(p)[b] * h
                H[a, b] += w.unit[j] * (f(gamma + e + e2) - f(gamma + e - e2) - f(gamma - e + e2) + f(gamma - e - e2)) / (4 * h * h)
    assert np.abs(w.unit @ S).max() < 1e-5  # gamma maximises the pseudo-likelihood
    Hi = np.linalg.inv(H)
    sandwich = Hi @ (S.T @ (w.unit[:, None] ** 2 * S)) @ Hi
    np.testing.assert_allclose(fit.vcov_robust.to_numpy(), sandwich, rtol=1e-5, atol=1e-6 * np.abs(sandwich).max())
    # the variance components maximise it too: moving tau or sigma2 lowers it
    base = np.dot(w.unit, ll)
    for dt in ([[0.05, 0], [0, 0]], [[-0.05, 0], [0, 0]], [[0, 0], [0, 0.01]]):
        moved = [_dense_unit_loglik(fit, j, gamma, tau + np.array(dt), s2, w.row) for j in range(J)]
        assert np.dot(w.unit, moved) < base
    # default SEs of a weighted fit are the sandwich
    assert fit.coef_table()["se"].tolist() == pytest.approx(np.sqrt(np.diag(sandwich)).tolist(), rel=1e-5)
    cr1 = fit.coef_table(se="CR1")["se"].to_numpy()
    np.testing.assert_allclose(cr1, np.sqrt(np.diag(fit.vcov_robust) * J / (J - 1)), rtol=1e-12)


def test_weighted_fit_rules_and_report():
    d = weighted_data()
    with pytest.raises(SpecificationError, match="method='ML'"):
        ml.fit(M, d, sampling_weights="w1")
    fit = ml.fit(M, d, method="ML", sampling_weights=ml.Weights(level1="w1", level2="w2"))
    for bad in (dict(df="satterthwaite"), dict(df="kenward-roger"), dict(se="CR2")):
        with pytest.raises(SpecificationError, match="unweighted likelihood"):
            fit.coef_table(**bad)
    with pytest.raises(SpecificationError, match="pseudo-likelihood"):
        ml.compare(ml.fit(M, d, method="ML"), fit)
    with pytest.raises(SpecificationError, match="sampling weights"):
        fit.confint("profile")
    text = fit.report()
    assert " Level 1    yes          w1          yes (size)" in text
    assert " Level 2    yes          w2          yes (normalize)" in text
    assert "AIC, BIC and likelihood-ratio tests do not apply" in text
    # a single level-1 weight is scaled to sum to N (global)
    single = ml.fit(M, d, method="ML", sampling_weights="w1")
    assert single.design.weights.row.sum() == pytest.approx(len(d))


def test_bad_weights():
    d = weighted_data()
    bad = d.assign(w2=d.w2 + np.arange(len(d)) * 1e-3)
    with pytest.raises(DataError, match="level-2 weight 'w2' varies within 160 units"):
        ml.fit(M, bad, method="ML", sampling_weights=ml.Weights(level2="w2"))
    neg = d.copy()
    neg.loc[4, "w1"] = -1.0
    with pytest.raises(DataError, match=r"negative or infinite values \(rows 4\)"):
        ml.fit(M, neg, method="ML", sampling_weights="w1")
    miss = d.copy()
    miss.loc[[1, 2], "w1"] = np.nan
    fit = ml.fit(M, miss, method="ML", sampling_weights="w1")
    assert dict(fit.data_report.dropped_by_variable) == {"w1": 2}
    with pytest.raises(DataError, match="weight column 'wt' is not in the data"):
        ml.fit(M, d, method="ML", sampling_weights="wt")


def test_zero_level1_weights_drop_their_rows_with_a_report_line():
    d = weighted_data()
    zero = d.assign(w1=np.where(np.arange(len(d)) % 5 == 0, 0.0, d.w1))
    spec = ml.Weights(level1="w1", level2="w2")
    a = ml.fit(M, zero, method="ML", sampling_weights=spec)
    b = ml.fit(M, zero[zero.w1 > 0], method="ML", sampling_weights=spec)
    close_fits(a, b, rtol=1e-9)
    r = a.data_report
    assert r.zero_weight_rows == 1437 and r.n_rows_used == len(d) - 1437 and r.n_rows_in == len(d)
    assert "level-1 weight 0: 1437 rows dropped" in str(r)
    with pytest.raises(SpecificationError, match="cannot be refitted by REML"):
        a.refit("REML")
    neg = d.copy()
    neg.loc[[1, 4], "w1"] = [np.nan, -1.0]
    with pytest.raises(DataError, match=r"\(rows 4\)"):  # the input row, not the row after listwise deletion
        ml.fit(M, neg, method="ML", sampling_weights="w1")


def test_variance_components_maximise_the_pseudo_likelihood_in_every_direction():
    d = weighted_data()
    fit = ml.fit(M, d, method="ML", sampling_weights=ml.Weights(level1="w1", level2="w2"))
    base = fit.deviance
    tau, s2 = fit.tau.to_numpy(), fit.sigma2
    for dt, ds in (([[0.05, 0], [0, 0]], 0), ([[-0.05, 0], [0, 0]], 0), ([[0, 0.02], [0.02, 0]], 0),
                   ([[0, -0.02], [-0.02, 0]], 0), ([[0, 0], [0, 0.01]], 0), ([[0, 0], [0, 0]], 0.1), ([[0, 0], [0, 0]], -0.1)):
        assert fit.at(tau + np.array(dt), s2 + ds).deviance > base
