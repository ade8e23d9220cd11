"""The summary-space algebra behind Satterthwaite, Kenward-Roger and CR2, checked against dense
n_j-by-n_j matrices built from the rows, and the analytic Hessian against finite differences."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from conftest import fitted
from multilevel.engine.objective import deviance, solve_at
from multilevel.numerics.group_operators import GroupSpace


def _groups(seed=3):
    rng = np.random.default_rng(seed)
    U = []
    for n in (1, 2, 5, 9):
        z = np.column_stack([np.ones(n), rng.normal(size=n)])
        w = np.full(n, rng.normal())  # a level-2 column: collinear with the intercept
        x = np.column_stack([np.ones(n), w, z[:, 1] * w])
        y = rng.normal(size=n)
        U.append(np.column_stack([z, x, y]))
    return U


def _space(U):
    G = np.stack([u.T @ u for u in U])
    return GroupSpace(G, np.array([len(u) for u in U], dtype=float))


def _dense(op, U, j):
    return op.alpha[j] * np.eye(len(U[j])) + U[j] @ op.C[j] @ U[j].T


def test_products_forms_traces_and_functions_equal_dense_matrices():
    U = _groups()
    sp = _space(U)
    r = sp.r
    rng = np.random.default_rng(1)
    C1 = rng.normal(size=(r, r)) * 0.1
    C1 = C1 + C1.T
    A = sp.operator(1.5, C1)
    B = sp.operator(0.7, sp.embed(np.array([[1.0, 0.3], [0.3, 0.5]]), slice(0, 2)))
    AB = sp.compose(A, B)
    S = rng.normal(size=(r, 2))
    for j, u in enumerate(U):
        Ad, Bd = _dense(A, U, j), _dense(B, U, j)
        np.testing.assert_allclose(_dense(AB, U, j), Ad @ Bd, atol=1e-12)
        np.testing.assert_allclose(sp.form(A, S, S)[j], (u @ S).T @ Ad @ (u @ S), atol=1e-10)
        assert sp.trace(AB)[j] == pytest.approx(np.trace(Ad @ Bd), abs=1e-10)
    # matrix functions of a positive definite operator (V = I + Z D Z'): sqrt and inverse sqrt,
    # including groups where the columns of U are collinear or outnumber the rows
    V = sp.operator(1.0, sp.embed(np.array([[2.0, 0.4], [0.4, 0.3]]), slice(0, 2)))
    for f, dense_f in ((np.sqrt, scipy.linalg.sqrtm), (lambda x: 1 / np.sqrt(x), lambda m: np.linalg.inv(scipy.linalg.sqrtm(m)))):
        FV = sp.apply(V, f)
        for j in range(len(U)):
            np.testing.assert_allclose(_dense(FV, U, j), np.real(dense_f(_dense(V, U, j))), atol=1e-9)


def test_kenward_roger_pieces_equal_dense_computation():
    """P_i, Q_ij and tr(W G_i W G_j) of variance_derivatives against the full N x N algebra on a
    subset of the HSB schools. The pieces are in the summaries' internal coordinates
    (`multilevel.design.coordinates`: X' = X S), so the dense algebra uses X S."""
    fit = fitted("M4", "REML")
    d = fit.design
    X_internal = d.X @ d.coords.S
    vd = fit.inference.variance_derivatives
    tau, s2 = fit.tau.to_numpy(), fit.sigma2
    k = vd.k
    Gs = [np.array([[1.0, 0], [0, 0]]), np.array([[0, 1.0], [1.0, 0]]), np.array([[0, 0], [0, 1.0]])]
    P = np.zeros_like(vd.P)
    Q = np.zeros_like(vd.Q)
    T = np.zeros_like(vd.T)
    for j in range(d.n_groups):
        rows = d.codes == j
        Z, X = d.Z[rows], X_internal[rows]
        V = Z @ tau @ Z.T + s2 * np.eye(len(Z))
        W = np.linalg.inv(V)
        G = [Z @ E @ Z.T for E in Gs] + [np.eye(len(Z))]
        for a in range(k):
            P[a] -= X.T @ W @ G[a] @ W @ X
            for b in range(k):
                Q[a, b] += X.T @ W @ G[a] @ W @ G[b] @ W @ X
                T[a, b] += np.trace(W @ G[a] @ W @ G[b])
    np.testing.assert_allclose(vd.P, P, rtol=1e-9, atol=1e-9 * np.abs(P).max())
    np.testing.assert_allclose(vd.Q, Q, rtol=1e-9, atol=1e-9 * np.abs(Q).max())
    np.testing.assert_allclose(vd.T, T, rtol=1e-9)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_analytic_hessian_equals_finite_differences_of_the_deviance(method):
    fit = fitted("M4", method)
    vd = fit.inference.variance_derivatives
    psi = vd.psi
    t = fit.template

    def dev(p):
        tau = np.array([[p[0], p[1]], [p[1], p[2]]])
        theta = t.theta_from_tau(tau, p[3])
        return deviance(solve_at(fit.summaries, t.lam(theta)), fit.reml, p[3])

    h = 2e-3 * np.maximum(np.abs(psi), 1e-2)  # large enough that rounding in the deviance (~1e-9) does not matter
    H = np.empty((4, 4))
    for a in range(4):
        for b in range(4):
            pp, pm, mp, mm = (psi.copy() for _ in range(4))
            for v, sa, sb in ((pp, 1, 1), (pm, 1, -1), (mp, -1, 1), (mm, -1, -1)):
                v[a] += sa * h[a]
                v[b] += sb * h[b]
            H[a, b] = (dev(pp) - dev(pm) - dev(mp) + dev(mm)) / (4 * h[a] * h[b])
    np.testing.assert_allclose(vd.hessian, H, rtol=2e-4, atol=1e-4 * np.abs(H).max())
