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

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from multilevel.design.summaries import GroupSummaries
from multilevel.engine.covariance import LambdaTemplate
from multilevel.numerics import units

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
        return float(units.formula("profiled_sigma2")(self.pwrss, self.n, self.p, reml))


def solve_at(s: GroupSummaries, lam: np.ndarray) -> Solution:
    """Penalised least squares at Lambda: beta, pwrss and the log-determinants (module doc).
    The per-unit part is one loop over the units (`units.solve_units`, compiled or in numpy)."""
    q, p = s.q, s.p
    J = s.n_groups
    L = np.empty((J, q, q))
    LtLam = np.empty((J, q, q))
    RZX = np.empty((J, q, p))
    rZy = np.empty((J, q))
    FtF = np.empty((p, p))
    Ftr = np.empty(p)
    logdet_L, ss = units.call(
        "solve_units", J, s.C_contiguous, q, p, np.ascontiguousarray(lam, dtype=float), s.w2, L, LtLam, RZX, rZy, FtF, Ftr
    )
    # the last call of a fit into the numerics: loops it ran in numpy for want of a cache are now
    # compiled for the next process, in the background (`compile.compile_later`)
    units.compile_later()
    if not np.isfinite(logdet_L):
        raise np.linalg.LinAlgError("Matrix is not positive definite")
    A = s.XtX_total - FtF
    b = s.Xty_total - Ftr
    RX = np.linalg.cholesky(A)
    A_inv = np.linalg.inv(A)
    beta = A_inv @ b
    pwrss = float(s.yty_total - ss - b @ beta)
    logdet_A = 2.0 * float(np.log(np.diag(RX)).sum())
    return Solution(lam, L, LtLam, RZX, rZy, A, A_inv, beta, pwrss, float(logdet_L), logdet_A, _n(s), p, s.ldw)


def deviance(sol: Solution, reml: bool, sigma2: float | None = None) -> float:
    """-2 log-likelihood (ML) or the REML criterion, profiled over sigma2 unless `sigma2` is given
    (the formula: `units.deviance`, the one the optimiser's evaluations use too)."""
    if sigma2 is None:
        sigma2 = sol.sigma2_hat(reml)
    return float(units.formula("deviance")(sol.n, sol.p, reml, sol.logdet_L, sol.logdet_A, sol.pwrss, sigma2, sol.ldw))


def _n(s: GroupSummaries) -> float:
    """N: the number of rows (sum_j w_j sum_i w_i|j under sampling weights)."""
    return float(s.total_weight if s.weighted else s.n_obs)


class Objective:
    """The profiled (RE)ML deviance of one LMM as a function of theta (lme4's `devfun`).

    value_and_grad(theta): the deviance and its gradient, from one pass over the units that
    keeps nothing per unit (`units.deviance_gradient`): with D = Lambda Lambda' the profiled
    deviance has
      d/dD = sum_j Z_j'W_jZ_j - [REML] sum_j Z_j'W_jX_j A^-1 X_j'W_jZ_j
             - (N-p or N)/pwrss * sum_j (Z_j'W_j r_j)(Z_j'W_j r_j)'   =: G,
    and d/dLambda = 2 G Lambda, read off at theta's positions. solve(theta): the per-unit factors
    and the estimates (`solve_at`), for everything after the fit. start(): where the search starts.
    The variances' elements of theta are bounded below by 0 (`lower`), as in lme4."""

    def __init__(self, s: GroupSummaries, template: LambdaTemplate, reml: bool):
        self.summaries = s
        self.template = template
        self.reml = reml
        self.lower = template.lower_bounds
        self._rows = np.array(template.rows, dtype=np.intp)
        self._cols = np.array(template.cols, dtype=np.intp)
        self._args: tuple | None = None  # the evaluation's arguments other than Lambda (`_fixed`)

    def _fixed(self) -> tuple:
        """(units, [Z'Z|Z'X|Z'y], q, p) and (w, X'X, X'y, y'y, N, ldW, reml) of the summaries: the same
        at every evaluation, taken once (each is a property of the summaries)."""
        if self._args is None:
            s = self.summaries
            self._args = ((s.n_groups, s.compact, s.q, s.p),
                          (s.w2, s.XtX_total, s.Xty_total, s.yty_total, _n(s), float(s.ldw), self.reml))
        return self._args

    def value_and_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """(deviance, gradient); (inf, nan) where Lambda makes a matrix not positive definite (never a
        zero gradient that looks converged)."""
        lam = self.template.lam(theta)
        try:
            d, G = self.deviance_and_derivative(lam)
        except (np.linalg.LinAlgError, ZeroDivisionError, FloatingPointError):
            return np.inf, np.full(np.shape(theta), np.nan)
        return d, (2.0 * G @ lam)[self._rows, self._cols]

    def deviance_and_derivative(self, lam: np.ndarray) -> tuple[float, np.ndarray]:
        """The profiled deviance and G = d deviance / dD (q x q, the class doc) at Lambda."""
        head, tail = self._fixed()
        q = head[2]
        G = np.empty((q, q))
        d = units.call("deviance_gradient", *head, np.ascontiguousarray(lam, dtype=float), *tail, G)
        if not math.isfinite(d):
            raise np.linalg.LinAlgError("Matrix is not positive definite")
        return float(d), G

    def solve(self, theta: np.ndarray) -> Solution:
        return solve_at(self.summaries, self.template.lam(theta))

    def start(self) -> tuple[np.ndarray, ...]:
        """Starting points, the search begins at the lowest: the moments (`moment_start`, as HLM
        starts), then lme4's (Lambda = I)."""
        return (moment_start(self.summaries, self.template), self.template.start())

    def starts(self, theta: np.ndarray) -> tuple[np.ndarray, ...]:
        """Other starts, for a search that ended away from a checked optimum at theta."""
        lme4 = self.template.start()
        return (lme4, moment_start(self.summaries, self.template), 0.5 * lme4 + 0.5 * theta)

    @property
    def is_variance(self) -> np.ndarray:
        """The elements of theta on the diagonal of Lambda (the deviance is even in each)."""
        return self.template.is_diagonal


#: the moment start uses at most this many units
MOMENT_UNITS = 5000


def moment_start(s: GroupSummaries, template: LambdaTemplate) -> np.ndarray:
    """A starting theta from the units' own OLS fits, as HLM starts its iterations: sigma2 from the
    pooled within-unit residuals; the units' OLS coefficients of y - X gamma_OLS (gamma_OLS from
    the pooled data, so that the level-2 predictors' part of the coefficients' spread is taken
    out); T = cov(those coefficients) - mean(sigma2 (Z_j'Z_j)^-1), made positive definite; and
    theta from T / sigma2. Only a start: the optimiser does the rest."""
    q = s.q
    ZtZ, Zty, ZtX, yty, n = s.ZtZ, s.Zty, s.ZtX, s.yty_j, s.n
    if s.n_groups > MOMENT_UNITS:
        # it is only a start: the moments of an evenly spread subset of units do
        pick = np.linspace(0, s.n_groups - 1, MOMENT_UNITS).astype(np.intp)
        ZtZ, Zty, ZtX, yty, n = ZtZ[pick], Zty[pick], ZtX[pick], yty[pick], n[pick]
    try:
        gamma = np.linalg.solve(s.XtX_total, s.Xty_total)
    except np.linalg.LinAlgError:
        gamma = np.zeros(s.p)
    if q == 2:
        return _moment_start_2(template, ZtZ, Zty, ZtX, yty, n, gamma)
    # units whose Z_j has full rank (a determinant well away from 0 relative to its diagonal)
    det, inv = _det_inv(ZtZ)
    ok = (n > q) & (det > 1e-10 * np.diagonal(ZtZ, axis1=1, axis2=2).prod(axis=1))
    n_ok = int(ok.sum())
    if n_ok < q + 2:
        return template.start()
    if n_ok < ok.size:  # (every unit, the usual case: the arrays as they are, no copies)
        ZtZ, Zty, ZtX, yty, n = ZtZ[ok], Zty[ok], ZtX[ok], yty[ok], n[ok]
        inv = None if inv is None else inv[ok]
    if inv is None:
        inv = np.linalg.inv(ZtZ)
    b = (inv @ Zty[:, :, None])[:, :, 0]
    rss = yty - np.einsum("ja,ja->j", Zty, b)
    b = b - (inv @ (ZtX @ gamma)[:, :, None])[:, :, 0]  # the coefficients of y - X gamma_OLS
    sigma2 = float(rss.sum() / (n.sum() - q * n_ok))
    if not sigma2 > 0:
        return template.start()
    # np.cov(b, rowvar=False) by its own operations, without its wrappers (n_ok >= 3 units)
    X = np.array(b, ndmin=2, dtype=float).T
    X -= X.mean(axis=1)[:, None]
    cov = np.dot(X, X.T.conj())
    cov *= np.true_divide(1, X.shape[1] - 1)
    T = cov - sigma2 * inv.mean(axis=0)
    w, V = np.linalg.eigh(0.5 * (T + T.T))
    T = (V * np.maximum(w, 0.05 * max(float(w.max()), 1e-8))) @ V.T
    mask = np.zeros((q, q), dtype=bool)
    mask[template.rows, template.cols] = True
    mask = mask | mask.T
    T = np.where(mask, T, 0.0)  # uncorrelated blocks stay uncorrelated
    try:
        return template.theta_from_tau(T, sigma2)
    except ValueError:
        return template.start()


def _det_inv(M: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The determinants of the q x q matrices M[j], and for q = 1 their inverses 1 / M[j] (a
    singular one: inf, the caller keeps only units of full rank); numpy's batched det and inv of
    1 x 1 matrices cost tens of microseconds for nothing. For q > 2 numpy's det and no inverse
    (None: numpy's inv of the units kept, by the caller). (q = 2: `_moment_start_2`.)"""
    if M.shape[1] > 1:
        return np.linalg.det(M), None
    det = M[:, 0, 0].copy()
    with np.errstate(divide="ignore"):
        return det, (1.0 / det)[:, None, None]


def _moment_start_2(template: LambdaTemplate, ZtZ: np.ndarray, Zty: np.ndarray, ZtX: np.ndarray, yty: np.ndarray,
                    n: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """`moment_start` for q = 2 (a random intercept and slope, the usual model), the same formulas
    written out over the units' elements (the inverse of Z_j'Z_j = [[a, b], [c, d]] is
    [[d, -b], [-c, a]] / det) and theta as the Cholesky factor of T / sigma2 in closed form: the
    batched 2 x 2 linear algebra of the general path costs ~0.1 ms of a 0.3 ms fit of 200 units."""
    a, b, c, d = ZtZ[:, 0, 0], ZtZ[:, 0, 1], ZtZ[:, 1, 0], ZtZ[:, 1, 1]
    ad = a * d
    det = ad - b * c
    ok = (n > 2) & (det > 1e-10 * ad)
    n_ok = int(np.count_nonzero(ok))
    if n_ok < 4:
        return template.start()
    y0, y1 = Zty[:, 0], Zty[:, 1]
    e = ZtX @ gamma
    if n_ok < ok.size:
        a, b, c, d, det, y0, y1, yty, n, e = a[ok], b[ok], c[ok], d[ok], det[ok], y0[ok], y1[ok], yty[ok], n[ok], e[ok]
    r = 1.0 / det
    i00, i01, i10, i11 = d * r, -b * r, -c * r, a * r
    rss = yty - (y0 * (i00 * y0 + i01 * y1) + y1 * (i10 * y0 + i11 * y1))
    u0, u1 = y0 - e[:, 0], y1 - e[:, 1]  # the coefficients of y - X gamma_OLS
    b0, b1 = i00 * u0 + i01 * u1, i10 * u0 + i11 * u1
    sigma2 = float(rss.sum()) / (float(n.sum()) - 2 * n_ok)
    if not sigma2 > 0:
        return template.start()
    x0, x1 = b0 - float(b0.sum()) / n_ok, b1 - float(b1.sum()) / n_ok
    k = 1.0 / (n_ok - 1)
    t00 = float(x0 @ x0) * k - sigma2 * float(i00.sum()) / n_ok
    t11 = float(x1 @ x1) * k - sigma2 * float(i11.sum()) / n_ok
    t10 = float(x0 @ x1) * k - sigma2 * 0.5 * (float(i01.sum()) + float(i10.sum())) / n_ok
    w, V = np.linalg.eigh(np.array([[t00, t10], [t10, t11]]))
    T = (V * np.maximum(w, 0.05 * max(float(w.max()), 1e-8))) @ V.T
    correlated = (1, 0) in zip(template.rows, template.cols)
    t00, t11 = float(T[0, 0]) / sigma2, float(T[1, 1]) / sigma2
    t10 = float(T[1, 0]) / sigma2 if correlated else 0.0  # uncorrelated terms stay uncorrelated
    if not (t00 > 0 and t11 > 0 and math.isfinite(t00 + t11 + t10)):
        return template.start()
    l00 = math.sqrt(t00)
    l10 = t10 / l00
    l11 = math.sqrt(max(t11 - l10 * l10, 0.0))
    L = ((l00, 0.0), (l10, l11))
    return np.array([L[i][j] for i, j in zip(template.rows, template.cols)])
