"""The objective from summaries equals a dense, textbook computation on a small data set."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.design.summaries import GroupSummaries
from multilevel.engine.covariance import LambdaTemplate
from multilevel.engine.objective import Objective, deviance, solve_at


def small_data(seed: int = 1, J: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = rng.integers(2, 9, size=J)
    g = np.repeat([f"g{j}" for j in range(J)], n)
    x = rng.normal(size=g.size)
    w = np.repeat(rng.normal(size=J), n)
    u0 = np.repeat(rng.normal(scale=1.0, size=J), n)
    u1 = np.repeat(rng.normal(scale=0.5, size=J), n)
    y = 1 + 0.5 * x + 0.3 * w + u0 + u1 * x + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "x": x, "w": w, "g": g})


def dense(fit: ml.Fit, tau: np.ndarray, sigma2: float):
    """Textbook GLS and (RE)ML with the full n-by-n V = Z T Z' + sigma2 I (block diagonal)."""
    d = fit.design
    n = d.n_obs
    Zfull = np.zeros((n, d.n_groups * d.Z.shape[1]))
    q = d.Z.shape[1]
    for i in range(n):
        Zfull[i, d.codes[i] * q : (d.codes[i] + 1) * q] = d.Z[i]
    G = np.kron(np.eye(d.n_groups), tau)
    V = Zfull @ G @ Zfull.T + sigma2 * np.eye(n)
    Vi = np.linalg.inv(V)
    X, y = d.X, d.y
    M = X.T @ Vi @ X
    beta = np.linalg.solve(M, X.T @ Vi @ y)
    e = y - X @ beta
    _, logdetV = np.linalg.slogdet(V)
    _, logdetM = np.linalg.slogdet(M)
    p = X.shape[1]
    ml_dev = n * np.log(2 * np.pi) + logdetV + e @ Vi @ e
    reml_dev = (n - p) * np.log(2 * np.pi) + logdetV + logdetM + e @ Vi @ e
    # CR0 sandwich
    meat = np.zeros((p, p))
    for j in range(d.n_groups):
        idx = d.codes == j
        s = X[idx].T @ Vi[np.ix_(idx, idx)] @ e[idx]
        meat += np.outer(s, s)
    Minv = np.linalg.inv(M)
    blups = (G @ Zfull.T @ Vi @ e).reshape(d.n_groups, q)
    return beta, Minv, Minv @ meat @ Minv, ml_dev, reml_dev, blups


@pytest.mark.parametrize("formula", ["y ~ x + w + (x | g)", "y ~ x * w + (1 | g)", "y ~ w + (x || g)"])
def test_summaries_equal_dense_computation(formula):
    data = small_data()
    base = ml.fit(formula, data)
    q = len(base.design.z_names)
    rng = np.random.default_rng(3)
    A = rng.normal(size=(q, q))
    tau = A @ A.T + 0.2 * np.eye(q)
    if "||" in formula:
        tau = np.diag(np.diag(tau))
    sigma2 = 1.7
    for method in ("REML", "ML"):
        fit = ml.fit(formula, data, method=method, tau=tau, sigma2=sigma2)
        beta, vcov, vr, ml_dev, reml_dev, blups = dense(fit, tau, sigma2)
        np.testing.assert_allclose(fit.fixed["estimate"], beta, rtol=1e-10)
        np.testing.assert_allclose(fit.vcov.to_numpy(), vcov, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(fit.vcov_robust.to_numpy(), vr, rtol=1e-8, atol=1e-13)
        np.testing.assert_allclose(fit.ranef.to_numpy(), blups, rtol=1e-8, atol=1e-12)
        assert fit.deviance == pytest.approx(reml_dev if method == "REML" else ml_dev, rel=1e-12)


def test_profiled_deviance_is_the_minimum_over_sigma2():
    """The profiled criterion equals the unprofiled one at sigma2-hat and is below it elsewhere."""
    data = small_data(seed=5, J=9)
    fit = ml.fit("y ~ x + (x | g)", data)
    s = fit.summaries
    sol = solve_at(s, fit.template.lam(fit.theta_internal))
    for reml in (True, False):
        prof = deviance(sol, reml)
        s2 = sol.sigma2_hat(reml)
        assert prof == pytest.approx(deviance(sol, reml, s2), rel=1e-13)
        assert deviance(sol, reml, 1.1 * s2) > prof and deviance(sol, reml, 0.9 * s2) > prof


@pytest.mark.parametrize("reml", [True, False])
def test_gradient_matches_finite_differences(reml):
    data = small_data(seed=7, J=12)
    fit = ml.fit("y ~ x + w + (x | g)", data)
    s, tpl = fit.summaries, fit.template
    theta = np.array([0.8, -0.3, 0.4])
    g = Objective(s, tpl, reml).value_and_grad(theta)[1]
    h = 1e-6
    fd = [
        (deviance(solve_at(s, tpl.lam(theta + h * e)), reml) - deviance(solve_at(s, tpl.lam(theta - h * e)), reml)) / (2 * h)
        for e in np.eye(3)
    ]
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)


def dense_profiled(fit: ml.Fit, lam: np.ndarray, reml: bool) -> float:
    """The profiled criterion from the full n-by-n V_rel = I + Z Lambda Lambda' Z' (block diagonal),
    in the data's own columns: log|V_rel| [+ log|X'V_rel^-1 X|] + df (1 + log(2 pi pwrss / df))."""
    d = fit.design
    n, q = d.n_obs, d.Z.shape[1]
    Zfull = np.zeros((n, d.n_groups * q))
    for i in range(n):
        Zfull[i, d.codes[i] * q : (d.codes[i] + 1) * q] = d.Z[i]
    V = np.eye(n) + Zfull @ np.kron(np.eye(d.n_groups), lam @ lam.T) @ Zfull.T
    Vi = np.linalg.inv(V)
    X, y = d.X, d.y
    M = X.T @ Vi @ X
    e = y - X @ np.linalg.solve(M, X.T @ Vi @ y)
    df = n - X.shape[1] if reml else n
    out = np.linalg.slogdet(V)[1] + df * (1 + np.log(2 * np.pi * (e @ Vi @ e) / df))
    return float(out + (np.linalg.slogdet(M)[1] if reml else 0.0))


@pytest.mark.parametrize("reml", [True, False])
def test_the_one_deviance_and_gradient_equal_the_dense_computation(reml):
    """`Objective.value_and_grad` (the optimiser's evaluation) against the dense n x n criterion and
    its central differences, at a theta away from the optimum."""
    data = small_data(seed=7, J=12)
    fit = ml.fit("y ~ x + w + (x | g)", data)
    tpl = fit.template
    objective = Objective(fit.summaries, tpl, reml)
    theta = np.array([0.8, -0.3, 0.4])  # relative to sigma, in the data's columns: the fit's internal
    internal = fit.design.coords  # coordinates map Z by S_z (identity here: x is not shifted)
    assert internal.z_identity
    dev, g = objective.value_and_grad(theta)
    assert dev == pytest.approx(dense_profiled(fit, tpl.lam(theta), reml), rel=1e-10)
    h = 1e-5
    fd = [(dense_profiled(fit, tpl.lam(theta + h * e), reml) - dense_profiled(fit, tpl.lam(theta - h * e), reml)) / (2 * h)
          for e in np.eye(3)]
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)


def test_summaries_add_up_over_chunks():
    data = small_data(seed=11, J=6)
    fit = ml.fit("y ~ x + (x | g)", data)
    d = fit.design
    half = d.n_obs // 2
    # in the summaries' internal coordinates (`multilevel.design.coordinates`): X S and y - m_y
    X, y = d.X @ d.coords.S, d.y - d.coords.y_shift
    parts = [
        GroupSummaries.from_arrays(d.Z[sl], X[sl], y[sl], d.codes[sl], d.n_groups)
        for sl in (slice(0, half), slice(half, None))
    ]
    whole = parts[0] + parts[1]
    np.testing.assert_allclose(whole.C, fit.summaries.C, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(whole.n, fit.summaries.n)


def test_theta_follows_lme4_layout():
    tpl = LambdaTemplate.from_blocks(((0, 1),), ("Intercept", "x"), "g")
    assert tpl.names == ("g.Intercept", "g.x.Intercept", "g.x")
    lam = tpl.lam(np.array([1.0, 0.5, 2.0]))
    np.testing.assert_array_equal(lam, [[1.0, 0.0], [0.5, 2.0]])
    np.testing.assert_allclose(tpl.theta_from_tau(lam @ lam.T * 3.0, 3.0), [1.0, 0.5, 2.0])
