"""The profiled (RE)ML deviance of a linear mixed model, from per-group summaries alone.

Model (lme4's notation): y = X beta + Z b + e, b ~ N(0, sigma2 Lambda Lambda'), e ~ N(0, sigma2 I).
With one grouping factor the random-effects part is block diagonal over groups j, and for each
group (from `GroupSummaries`)

    M_j    = Lambda' Z_j'Z_j Lambda + I = L_j L_j'          (q x q Cholesky)
    R_ZX_j = L_j^-1 Lambda' Z_j'X_j,   r_Zy_j = L_j^-1 Lambda' Z_j'y_j
    A      = X'X - sum_j R_ZX_j' R_ZX_j = R_X' R_X  (= X'V^-1 X * sigma2: HLM's M times sigma2)
    beta   = A^-1 (X'y - sum_j R_ZX_j' r_Zy_j)          (GLS, HLM's gamma-hat)
    pwrss  = y'y - sum_j |r_Zy_j|^2 - beta'(X'y - sum_j R_ZX_j' r_Zy_j)

and the profiled deviances (sigma2 at its optimum) are lme4's

    ML:   d(theta) = log|L|^2 + N (1 + log(2 pi pwrss / N))                          (`deviance`)
    REML: d(theta) = log|L|^2 + log|R_X|^2 + (N-p)(1 + log(2 pi pwrss / (N-p)))      (`REMLcrit`)

Cost per evaluation: O(J q^3 + J q^2 p + p^3), independent of the number of rows N.

Precision weights (lme4's `weights=`, Var(e_i) = sigma2 / w_i): the row weights are inside the
cross-products, N stays the number of rows, and both deviances subtract lme4's ldW = sum_i log w_i
(`GroupSummaries.ldw`; checked against lmer in refs/hsb/precision_weights.json).

Sampling weights (pseudo-likelihood, `multilevel.weights`): the level-1 weights are inside the
cross-products, and every sum over units above is weighted by the unit's level-2 weight w_j
(log|L|^2 = sum_j w_j log|L_j|^2, A, X'y, pwrss alike); N becomes sum_j w_j sum_i w_i|j.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from multilevel.design.summaries import GroupSummaries
from multilevel.engine.covariance import LambdaTemplate
from multilevel.numerics.kernels import kernel

LOG_2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True, eq=False)
class Solution:
    """The quantities of the module doc at one relative covariance Lambda."""

    lam: np.ndarray
    L: np.ndarray  # (J, q, q) Cholesky factors of M_j
    LtLam: np.ndarray  # (J, q, q) L_j^-1 Lambda'
    RZX: np.ndarray  # (J, q, p)
    rZy: np.ndarray  # (J, q)
    A: np.ndarray  # (p, p)
    A_inv: np.ndarray
    beta: np.ndarray
    pwrss: float
    logdet_L: float
    logdet_A: float
    n: float  # the number of rows (sum_j w_j sum_i w_i|j under sampling weights)
    p: int
    ldw: float = 0.0  # sum_i log w_i of precision weights (lme4's ldW), subtracted from the deviance

    @cached_property
    def relative_condvar(self) -> np.ndarray:
        """Lambda M_j^-1 Lambda' = (L_j^-1 Lambda')'(L_j^-1 Lambda') per unit (J, q, q): the
        conditional covariance of u_j over sigma2, and the B of V_j^-1 = (I - Z_j B_j Z_j')/sigma2."""
        return np.swapaxes(self.LtLam, 1, 2) @ self.LtLam

    def sigma2_hat(self, reml: bool) -> float:
        """The profiled residual variance: pwrss/(N-p) under REML, pwrss/N under ML."""
        return self.pwrss / (self.n - self.p if reml else self.n)


def solve_at(s: GroupSummaries, lam: np.ndarray) -> Solution:
    """Penalised least squares at Lambda: beta, pwrss and the log-determinants (module doc).
    The per-unit part is one compiled loop over the units (`kernels.solve_units`)."""
    q, p = s.q, s.p
    J = s.n_groups
    L = np.empty((J, q, q))
    LtLam = np.empty((J, q, q))
    RZX = np.empty((J, q, p))
    rZy = np.empty((J, q))
    FtF = np.empty((p, p))
    Ftr = np.empty(p)
    logdet_L, ss = kernel("solve_units", q, p, J)(
        s.C_contiguous, np.ascontiguousarray(lam, dtype=float), s.w2, L, LtLam, RZX, rZy, FtF, Ftr
    )
    if not np.isfinite(logdet_L):
        raise np.linalg.LinAlgError("Matrix is not positive definite")
    A = s.XtX_total - FtF
    b = s.Xty_total - Ftr
    RX = np.linalg.cholesky(A)
    A_inv = np.linalg.inv(A)
    beta = A_inv @ b
    pwrss = float(s.yty_total - ss - b @ beta)
    logdet_A = 2.0 * float(np.log(np.diag(RX)).sum())
    n = s.total_weight if s.weighted else s.n_obs
    return Solution(lam, L, LtLam, RZX, rZy, A, A_inv, beta, pwrss, float(logdet_L), logdet_A, n, p, s.ldw)


def deviance(sol: Solution, reml: bool, sigma2: float | None = None) -> float:
    """-2 log-likelihood (ML) or the REML criterion, profiled over sigma2 unless `sigma2` is given.

    At a given sigma2 (not profiled), with V = sigma2 (I + Z Lambda Lambda' Z'):
      ML:   N log(2 pi sigma2) + log|L|^2 + pwrss / sigma2
      REML: (N-p) log(2 pi) + (N-p) log sigma2 + log|L|^2 + log|R_X|^2 + pwrss / sigma2
    (the REML one is lme4's REMLcrit; without the Harville -log|X'X| term, as HLM prints it too).
    Precision weights subtract ldW = sum_i log w_i from both (lme4's `lmerResp::Laplace`).
    """
    n, p = sol.n, sol.p
    if sigma2 is None:
        sigma2 = sol.sigma2_hat(reml)
    if reml:
        return (n - p) * (LOG_2PI + np.log(sigma2)) + sol.logdet_L + sol.logdet_A + sol.pwrss / sigma2 - sol.ldw
    return n * (LOG_2PI + np.log(sigma2)) + sol.logdet_L + sol.pwrss / sigma2 - sol.ldw


def gradient(s: GroupSummaries, sol: Solution, template: LambdaTemplate, reml: bool) -> np.ndarray:
    """d deviance / d theta, analytically, from the summaries.

    With D = Lambda Lambda' the profiled deviance has
      d/dD = sum_j Z_j'W_jZ_j - [REML] sum_j Z_j'W_jX_j A^-1 X_j'W_jZ_j
             - (N-p or N)/pwrss * sum_j (Z_j'W_j r_j)(Z_j'W_j r_j)'   =: G,
    and d/dLambda = 2 G Lambda, read off at theta's positions (one compiled loop over the units,
    `kernels.gradient_units`). The optimiser uses `deviance_and_gradient`, which gets the same
    from one pass that keeps no per-unit factors; this one serves as its factorised counterpart.
    """
    q = s.q
    df = sol.n - sol.p if reml else sol.n
    G = np.empty((q, q))
    kernel("gradient_units", q, s.p, s.n_groups)(
        s.C_contiguous, s.w2, sol.LtLam, sol.RZX, sol.rZy, sol.beta, sol.A_inv, df / sol.pwrss, reml, G
    )
    dLam = 2.0 * G @ sol.lam
    return dLam[list(template.rows), list(template.cols)]


def deviance_and_gradient(s: GroupSummaries, lam: np.ndarray, reml: bool) -> tuple[float, np.ndarray]:
    """The profiled deviance and d deviance / d Lambda-bar (G of `gradient`, q x q) in one pass
    over the units that reads only `GroupSummaries.compact` and writes nothing per unit.

    The gradient's per-unit terms are quadratic in Z'Wr = Z'Wy - Z'WX beta, so with the sums
    S = sum_j z_j z_j', z_j = [vec(Z'WX_j), Z'Wy_j] of `kernels.deviance_terms`, i.e. the blocks
    SXX[a,b,c,d] = sum Z'WX_ac Z'WX_bd, SyX[a,b,c] = sum Z'Wy_a Z'WX_bc, Syy = sum Z'Wy Z'Wy',
      sum_j (Z'Wr)(Z'Wr)' = Syy - SyX.beta - (SyX.beta)' + SXX:(beta beta'),
      sum_j Z'WX A^-1 X'WZ = SXX:A^-1,
    and beta (which needs the whole pass) enters only afterwards. The optimiser's evaluation;
    `solve_at` keeps the per-unit factors for everything after the fit.
    """
    G = np.empty((s.q, s.q))
    n = s.total_weight if s.weighted else s.n_obs
    d = kernel("deviance_gradient", s.q, s.p, s.n_groups)(
        s.compact, np.ascontiguousarray(lam, dtype=float), s.w2, s.XtX_total, s.Xty_total, s.yty_total, float(n), reml, G
    )
    if not np.isfinite(d):
        raise np.linalg.LinAlgError("Matrix is not positive definite")
    return float(d) - s.ldw, G
