"""Satterthwaite denominator df for contrasts of the fixed effects (lmerTest's method).

For a contrast l, with Phi(psi) = Var(beta-hat) and A = 2 H^-1 the asymptotic covariance of the
variance parameters (H: Hessian of the deviance):

    df = 2 (l'Phi l)^2 / (g' A g),     g_i = d(l'Phi l)/dpsi_i = -l'Phi P_i Phi l

(lmerTest `contest1D`; Satterthwaite 1946). The df is invariant to the parameterisation of the
variance parameters at the optimum, so psi = (tau, sigma2) gives lmerTest's (theta, sigma) numbers,
here with exact derivatives instead of numerical ones.

For q > 1 rows (lmerTest `contestMD`): eigen-decompose L Phi L' = sum_m d_m p_m p_m', take
nu_m from the 1-df formula for p_m'L, F = (1/q) sum_m (p_m'L beta)^2 / d_m and
ddf = 2E/(E - q), E = sum_m nu_m/(nu_m - 2); ddf is 2 if any nu_m <= 2 (lmerTest's rule).
"""
from __future__ import annotations

import numpy as np

from .variance_derivatives import VarianceDerivatives


def df_1d(vd: VarianceDerivatives, l: np.ndarray) -> float:
    l = np.asarray(l, dtype=float)
    var = float(l @ vd.Phi @ l)
    g = np.einsum("a,kab,b->k", l, vd.dPhi(), l)
    denom = float(g @ vd.asymptotic_vcov @ g)
    return 2.0 * var**2 / denom if denom > 0 else np.inf


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
