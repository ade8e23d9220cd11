"""Derivatives with respect to the variance parameters, from the per-group summaries.

The variance parameters are psi = (the free elements of tau, sigma2), in which the marginal
covariance is linear (pbkrtest's parameterisation):

    V_j = Z_j tau Z_j' + sigma2 I = sum_i psi_i G_ij,
    G_i = Z (E_ab + E_ba) Z' for tau_ab (a != b),  Z E_aa Z' for tau_aa,  I for sigma2.

With W = V^-1, Phi = (X'WX)^-1 (= vcov(beta)) and e = y - X beta (GLS residuals):

    P_i  = -X'W G_i W X                                   (pbkrtest P; dPhi/dpsi_i = -Phi P_i Phi)
    Q_ij =  X'W G_i W G_j W X                             (pbkrtest Q)
    T_ij =  tr(W G_i W G_j)
    I_E  =  T_ij - 2 tr(Phi Q_ij) + tr(Phi P_i Phi P_j)    (expected REML information x 2, pbkrtest IE2)

and the observed Hessian of the deviance (-2 log L, beta profiled out; lmerTest differentiates the
same function numerically):

    REML: H_ij = -I_E,ij + 2 y'P G_i P G_j P y
    ML:   H_ij = -T_ij   + 2 y'P G_i P G_j P y,
    y'P G_i P G_j P y = e'W G_i W G_j W e - (e'W G_i W X) Phi (X'W G_j W e)     (P y = W e).

Every n_j-by-n_j product is done in `group_operators`, so the cost is O(J k^2 r^3) for k
parameters, independent of the number of rows.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from multilevel.numerics.group_operators import GroupOperator, GroupSpace


@dataclass(frozen=True, eq=False)
class VarianceDerivatives:
    names: tuple[str, ...]
    psi: np.ndarray  # (k,)
    Phi: np.ndarray  # (p, p)
    P: np.ndarray  # (k, p, p)
    Q: np.ndarray  # (k, k, p, p)
    T: np.ndarray  # (k, k)
    eGGe: np.ndarray  # (k, k): e'W G_i W G_j W e
    eGX: np.ndarray  # (k, p):  e'W G_i W X
    reml: bool
    trWG: np.ndarray  # (k,): tr(W G_i)
    eGe: np.ndarray  # (k,): e'W G_i W e
    theta_map: tuple[np.ndarray, np.ndarray]  # d psi/d phi and d2 psi/d phi2, phi = (theta, sigma2)

    @property
    def k(self) -> int:
        return len(self.names)

    @cached_property
    def expected_information(self) -> np.ndarray:
        """pbkrtest's IE2 (twice the expected REML information in psi)."""
        k, Phi = self.k, self.Phi
        PhiP = Phi @ self.P  # (k, p, p)
        IE = np.empty((k, k))
        for i in range(k):
            for j in range(k):
                IE[i, j] = self.T[i, j] - 2 * np.trace(Phi @ self.Q[i, j]) + np.trace(PhiP[i] @ PhiP[j])
        return IE

    @cached_property
    def hessian(self) -> np.ndarray:
        """Observed Hessian of the (RE)ML deviance in psi, at the estimates (module doc)."""
        quad = self.eGGe - self.eGX @ self.Phi @ self.eGX.T
        first = self.expected_information if self.reml else self.T
        H = -first + 2 * quad
        return 0.5 * (H + H.T)

    @cached_property
    def gradient(self) -> np.ndarray:
        """d deviance / d psi: tr(W G_i) [+ tr(Phi P_i) under REML] - e'W G_i W e (0 at an interior
        optimum; not at a boundary, where a variance is held at 0)."""
        g = self.trWG - self.eGe
        if self.reml:
            g = g + np.einsum("ab,kba->k", self.Phi, self.P)
        return g

    @cached_property
    def hessian_theta(self) -> np.ndarray:
        """Hessian of the deviance in phi = (lme4's theta, sigma2), the scale lmerTest
        differentiates on: J'H J + sum_i (dD/dpsi_i) d2psi_i/dphi2. The second term vanishes at an
        interior optimum; at a boundary (a variance at 0) it is what makes the df agree with
        lmerTest's, for which a parameter on its bound drops out."""
        J, H2 = self.theta_map
        H = J.T @ self.hessian @ J + np.einsum("i,itu->tu", self.gradient, H2)
        return 0.5 * (H + H.T)

    @cached_property
    def identified(self) -> bool:
        """False when the Hessian is singular: some combination of the variance parameters does
        not change the likelihood (e.g. a random slope of a variable constant within groups)."""
        ev = np.linalg.eigvalsh(self.hessian)
        return bool(ev.min() > 1e-8 * max(abs(ev).max(), 1e-300))

    @cached_property
    def asymptotic_vcov(self) -> np.ndarray:
        """Var(psi-hat) = 2 H^-1 (lmerTest's vcov_varpar, in psi); a pseudo-inverse, with a
        warning, when the variance parameters are not identified."""
        if not self.identified:
            warnings.warn(
                "The Hessian of the deviance in the variance parameters is singular: some of them are not "
                "identified by the data (for example a random slope of a variable that is constant within "
                "groups). Satterthwaite df and Wald intervals of variance parameters rest on a "
                "pseudo-inverse and are unreliable; simplify the random part.",
                stacklevel=3,
            )
        return 2.0 * np.linalg.pinv(self.hessian)

    @cached_property
    def asymptotic_vcov_theta(self) -> np.ndarray:
        """2 H_theta^+ (lmerTest's vcov_varpar): as lmerTest, a generalised inverse over the
        eigenvalues above 1e-8 only, so that directions in which the deviance is flat or falls
        (a fit that is not a minimum there) carry no variance; with a warning."""
        ev, V = np.linalg.eigh(self.hessian_theta)
        pos = ev > 1e-8
        if np.any(ev < -1e-8):
            warnings.warn(
                f"The deviance is not at a minimum in {int(np.sum(ev < -1e-8))} direction(s) of the variance "
                "parameters (negative eigenvalues of its Hessian); as lmerTest does, those directions are left "
                "out of the Satterthwaite df. Check the fit (fit.optimizer) and simplify the random part.",
                stacklevel=3,
            )
        elif not pos.all():
            self.asymptotic_vcov  # noqa: B018 (warns that some parameters are not identified)
        return 2.0 * (V[:, pos] / ev[pos]) @ V[:, pos].T

    def dPhi(self) -> np.ndarray:
        """dPhi/dpsi_i = -Phi P_i Phi, (k, p, p)."""
        return -self.Phi @ self.P @ self.Phi


def psi_names(z_names: tuple[str, ...], rows, cols) -> tuple[str, ...]:
    names = [f"var({z_names[r]})" if r == c else f"cov({z_names[c]}, {z_names[r]})" for r, c in zip(rows, cols)]
    return tuple(names) + ("sigma2",)


def variance_derivatives(summaries, solution, template, sigma2: float, reml: bool, z_names) -> VarianceDerivatives:
    q, p = summaries.q, summaries.p
    space = GroupSpace(summaries.C, summaries.n)
    Zs = slice(0, q)
    r = space.r

    # W = V^-1 = (I - Z B Z') / sigma2, B = Lambda M^-1 Lambda' = (L^-1 Lambda')'(L^-1 Lambda').
    B = solution.relative_condvar
    W = space.operator(1.0 / sigma2, space.embed(-B / sigma2, Zs))

    # dV/dpsi_i as operators.
    G_ops: list[GroupOperator] = []
    for a, b in zip(template.rows, template.cols):
        E = np.zeros((q, q))
        E[a, b] = E[b, a] = 1.0
        G_ops.append(space.operator(0.0, space.embed(E, Zs)))
    G_ops.append(space.identity())
    k = len(G_ops)

    WG = [space.compose(W, G) for G in G_ops]
    WGW = [space.compose(wg, W) for wg in WG]

    Sx = np.zeros((r, p))
    Sx[q : q + p] = np.eye(p)
    se = np.zeros((r, 1))
    se[q : q + p, 0] = -solution.beta
    se[-1, 0] = 1.0
    S = np.concatenate([Sx, se], axis=1)  # columns: X, e

    P = np.empty((k, p, p))
    eGX = np.empty((k, p))
    eGe = np.empty(k)
    trWG = np.empty(k)
    for i in range(k):
        F = space.form(WGW[i], S, S).sum(axis=0)
        P[i] = -F[:p, :p]
        eGX[i] = F[p, :p]
        eGe[i] = F[p, p]
        trWG[i] = space.trace(WG[i]).sum()
    Q = np.empty((k, k, p, p))
    T = np.empty((k, k))
    eGGe = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            WGWGW = space.compose(WG[i], WGW[j])
            F = space.form(WGWGW, S, S).sum(axis=0)
            t = space.trace(space.compose(WG[i], WG[j])).sum()
            # Q_ij' = Q_ji: the forms of a product and of its reverse are transposes.
            Q[i, j], Q[j, i] = F[:p, :p], F[:p, :p].T
            eGGe[i, j] = eGGe[j, i] = F[p, p]
            T[i, j] = T[j, i] = t
    Phi = sigma2 * solution.A_inv
    tau = sigma2 * solution.lam @ solution.lam.T
    psi = np.array([tau[a, b] for a, b in zip(template.rows, template.cols)] + [sigma2])
    return VarianceDerivatives(
        psi_names(tuple(z_names), template.rows, template.cols), psi, Phi, P, Q, T, eGGe, eGX, reml,
        trWG, eGe, _theta_jacobian(template, solution.lam, sigma2),
    )


def _theta_jacobian(template, lam: np.ndarray, sigma2: float) -> tuple[np.ndarray, np.ndarray]:
    """d psi / d phi (k x k) and d2 psi_i / d phi d phi' (k, k, k) for phi = (theta, sigma2):
    tau_ab = sigma2 (Lambda Lambda')_ab with theta_t the element (r_t, c_t) of Lambda, so
      d tau_ab / d theta_t        = sigma2 (delta_a,r_t Lambda_b,c_t + Lambda_a,c_t delta_b,r_t)
      d tau_ab / d sigma2         = (Lambda Lambda')_ab
      d2 tau_ab / d theta_t d theta_u = sigma2 delta_c_t,c_u (delta_a,r_t delta_b,r_u + delta_a,r_u delta_b,r_t)
      d2 tau_ab / d theta_t d sigma2  = d tau_ab / d theta_t / sigma2."""
    rows, cols = template.rows, template.cols
    m = len(rows)
    k = m + 1
    D = lam @ lam.T
    J = np.zeros((k, k))
    H2 = np.zeros((k, k, k))
    for i, (a, b) in enumerate(zip(rows, cols)):
        for t, (rt, ct) in enumerate(zip(rows, cols)):
            d = (a == rt) * lam[b, ct] + lam[a, ct] * (b == rt)
            J[i, t] = sigma2 * d
            H2[i, t, m] = H2[i, m, t] = d
            for u, (ru, cu) in enumerate(zip(rows, cols)):
                if ct == cu:
                    H2[i, t, u] = sigma2 * ((a == rt) * (b == ru) + (a == ru) * (b == rt))
        J[i, m] = D[a, b]
    J[m, m] = 1.0
    return J, H2
