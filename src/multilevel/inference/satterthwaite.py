"""Satterthwaite denominator df for contrasts of the fixed effects (lmerTest's method).

For a contrast l, with Phi = Var(beta-hat) and A = 2 H^-1 the asymptotic covariance of the
variance parameters (H: Hessian of the deviance):

    df = 2 (l'Phi l)^2 / (g' A g),     g = d(l'Phi l)/dphi

(lmerTest `contest1D`; Satterthwaite 1946). As lmerTest, phi = (lme4's theta, sigma2); the
derivatives are exact, from psi = (tau, sigma2) (`variance_derivatives`) by the chain rule:
g = J'g_psi with g_psi,i = -l'Phi P_i Phi l, and H = J'H_psi J + sum_i dD/dpsi_i d2psi_i/dphi2.
At an interior optimum this is the same as working in psi; at a boundary (a variance estimated
as 0) it is not, and theta is the scale on which lmerTest's numbers are defined. Where
g'A g <= 0 (a Hessian that is not positive definite) the df is undefined: NaN with a warning.

For q > 1 rows (lmerTest `contestMD`): eigen-decompose L Phi L' = sum_m d_m p_m p_m', take
nu_m from the 1-df formula for p_m'L, F = (1/q) sum_m (p_m'L beta)^2 / d_m and
ddf = 2E/(E - q), E = sum_m nu_m/(nu_m - 2); ddf is 2 if any nu_m <= 2 (lmerTest's rule).
"""
from __future__ import annotations

import warnings

import numpy as np

from multilevel.inference.variance_derivatives import VarianceDerivatives


def df_1d(vd: VarianceDerivatives, l: np.ndarray) -> float:
    l = np.asarray(l, dtype=float)
    var = float(l @ vd.Phi @ l)
    J, _ = vd.theta_map
    g = J.T @ np.einsum("a,kab,b->k", l, vd.dPhi(), l)
    denom = float(g @ vd.asymptotic_vcov_theta @ g)
    if not denom > 0:
        warnings.warn(
            "Satterthwaite's df is undefined here: the Hessian of the deviance in the variance parameters "
            "is not positive definite (the fit may not be at an optimum). The df is NaN.",
            stacklevel=3,
        )
        return np.nan
    return 2.0 * var**2 / denom


def f_test(vd: VarianceDerivatives, L: np.ndarray, beta: np.ndarray, rhs: np.ndarray) -> tuple[float, float, float]:
    """(F, numerator df q, denominator df) for H0: L beta = rhs."""
    L = np.atleast_2d(np.asarray(L, dtype=float))
    q = L.shape[0]
    d, P = np.linalg.eigh(L @ vd.Phi @ L.T)
    if d.min() <= 1e-12 * max(d.max(), 1e-300):
        raise ValueError("The contrast rows are linearly dependent (L Phi L' is singular); drop the redundant rows.")
    PL = P.T @ L
    diff = L @ beta - rhs
    F = float(np.sum((P.T @ diff) ** 2 / d) / q)
    nu = np.array([df_1d(vd, row) for row in PL])
    if q == 1:
        return F, 1.0, float(nu[0])
    if np.any(nu <= 2):
        return F, float(q), 2.0
    if np.allclose(nu, nu[0], rtol=1e-12):
        return F, float(q), float(nu.mean())
    E = float(np.sum(nu / (nu - 2)))
    return F, float(q), 2 * E / (E - q)
