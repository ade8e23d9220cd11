"""Cluster-robust (sandwich) covariance of the fixed effects, from the summaries.

HLM's "robust standard errors" (R&B 2002 ch. 9; Liang & Zeger 1986) are CR0:

    V_R = M^-1 [ sum_j X_j'V_j^-1 e_j e_j'V_j^-1 X_j ] M^-1,   M = sum_j X_j'V_j^-1 X_j,  e_j = y_j - X_j gamma

(clubSandwich::vcovCR(type = "CR0")). With V_j = sigma2 W_j^-1, sigma2 cancels:
V_R = A^-1 [sum_j t_j t_j'] A^-1 with t_j = X_j'W_j e_j, and by Woodbury
t_j = X_j'e_j - R_ZX_j' L_j^-1 Lambda' Z_j'e_j, all from per-group cross-products.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from multilevel.design.summaries import GroupSummaries
from multilevel.engine.objective import Solution
from multilevel.numerics.group_operators import GroupSpace


def cluster_scores(s: GroupSummaries, sol: Solution) -> np.ndarray:
    """t_j = X_j' W_j e_j for every group (J, p): the unit's contribution to the GLS score."""
    Xte = s.Xty_j - s.XtX_j @ sol.beta
    Zte = s.Zty - s.ZtX @ sol.beta
    u = np.einsum("jab,jb->ja", sol.LtLam, Zte)
    return Xte - np.einsum("jqp,jq->jp", sol.RZX, u)


def cr0_vcov(s: GroupSummaries, sol: Solution) -> np.ndarray:
    """HLM's robust covariance of gamma-hat (CR0, no small-sample factor). Under sampling weights
    each unit's score carries its level-2 weight: A^-1 [sum_j w_j^2 t_j t_j'] A^-1."""
    t = cluster_scores(s, sol) * s.w2[:, None]
    meat = t.T @ t
    return sol.A_inv @ meat @ sol.A_inv


# ----- the bias-reduced sandwich (clubSandwich's CR2) --------------------------------------------
@dataclass(frozen=True, eq=False)
class CR2:
    """Bell and McCaffrey's bias-reduced sandwich (CR2) and its Satterthwaite df.

    As clubSandwich computes it for lmer fits (working model and target both the fitted V,
    `inverse_var = TRUE`), with relative V_j = I + Z_j Lambda Lambda' Z_j', W_j = V_j^-1 and
    M = (X'WX)^-1:

        A_j  = V_j^1/2 (V_j^1/2 (V_j - X_j M X_j') V_j^1/2)^-1/2 V_j^1/2
        V_CR2 = M [sum_j X_j'W_j A_j e_j e_j' A_j W_j X_j] M

    (clubSandwich writes A_j = D_j' (D_j (V_j - X_j M X_j') D_j')^-1/2 D_j with D_j the Cholesky
    factor of V_j; every factor F with F'F = V_j gives the same A_j.) A_j e_j has the expected
    outer product of a homoskedastic-model residual, which removes CR0's downward bias.

    df for a contrast c (Bell and McCaffrey 2002; clubSandwich `coef_test(test = "Satterthwaite")`):
    with g_j = A_j W_j X_j M c and Omega_jk = delta_jk g_j'V_j g_j - (X_j'g_j)' M (X_k'g_k),
    df = (sum_j Omega_jj)^2 / sum_jk Omega_jk^2. With A_j = I the same formula gives the df of CR0.
    """

    M: np.ndarray  # (p, p)
    scores: np.ndarray  # (J, p): X_j'W_j A_j e_j
    F: np.ndarray  # (J, p, p): X_j'W_j A_j V_j A_j W_j X_j
    H: np.ndarray  # (J, p, p): X_j'A_j W_j X_j

    @property
    def vcov(self) -> np.ndarray:
        return self.M @ (self.scores.T @ self.scores) @ self.M

    def df(self, c: np.ndarray) -> float:
        Mc = self.M @ np.asarray(c, dtype=float)
        a = np.einsum("a,jab,b->j", Mc, self.F, Mc)
        h = self.H @ Mc  # (J, p)
        hMh = h @ self.M @ h.T  # (J, J)
        trace = a.sum() - np.trace(hMh)
        square = np.sum(a**2) - 2 * np.sum(a * np.diag(hMh)) + np.sum(hMh**2)
        return float(trace**2 / square)


    def htz(self, L: np.ndarray, Q: float) -> tuple[float, float, float]:
        """Pustejovsky and Tipton's (2018) HTZ test of L gamma = rhs (clubSandwich `Wald_test`,
        test = "HTZ"), for the Wald statistic Q of the sandwich. Returns (F, df, delta).

        With N = M L' Omega^-1/2 and, per cluster, a_j = N'F_jN, h_j = H_j N, the q x q blocks
        B_jk = delta_jk a_j - h_j'M h_k; Var_st = sum_jk B_jk[s,t]B_jk[t,s] + B_jk[s,s]B_jk[t,t];
        nu = q(q+1) / sum(Var); F = delta Q/q with delta = (nu - q + 1)/nu on (q, nu - q + 1) df.
        The double sums over clusters are reduced to p x p sums, so the cost is O(J).
        """
        L = np.atleast_2d(L)
        q = L.shape[0]
        ML = self.M @ L.T
        a = np.einsum("as,jab,bt->jst", ML, self.F, ML)
        h = self.H @ ML  # (J, p, q)
        R = np.einsum("jas,ab,jbt->jst", h, self.M, h)
        Omega = (a - R).sum(axis=0)
        w, V = np.linalg.eigh(Omega)
        Om = (V / np.sqrt(w)) @ V.T
        a = Om @ a @ Om
        h = h @ Om
        Rjj = np.einsum("jas,ab,jbt->jst", h, self.M, h)  # R_jj
        S = np.einsum("jas,jbt->stab", h, h)  # S_st = sum_j h_j[:,s] h_j[:,t]'
        MS = np.einsum("ab,stbc->stac", self.M, S)

        def pair_sum(s_, t, u, v) -> float:
            """sum_jk B_jk[s,t] B_jk[u,v]; sum_jk R_jk[s,t] R_jk[u,v] = tr(M S_tv M S_us)."""
            return float(
                np.sum(a[:, s_, t] * a[:, u, v]) - np.sum(a[:, s_, t] * Rjj[:, u, v]) - np.sum(Rjj[:, s_, t] * a[:, u, v])
                + np.trace(MS[t, v] @ MS[u, s_])
            )

        total = sum(pair_sum(s_, t, t, s_) + pair_sum(s_, s_, t, t) for s_ in range(q) for t in range(q))
        nu = q * (q + 1) / total
        delta = (nu - q + 1) / nu
        return delta * Q / q, nu - q + 1, delta


def cr2(s: GroupSummaries, sol: Solution, adjust: bool = True) -> CR2:
    """The CR2 pieces from the summaries (`group_operators`); adjust=False gives CR0's (A_j = I)."""
    space = GroupSpace(s.C, s.n)
    return cr2_pieces(space, sol.lam @ sol.lam.T, sol.relative_condvar, sol.A_inv, sol.beta, s.q, adjust)


def cr2_pieces(space: GroupSpace, D: np.ndarray, B: np.ndarray, M: np.ndarray, beta: np.ndarray, q: int,
               adjust: bool = True) -> CR2:
    """The CR2 pieces of clusters whose columns are U_j = [Z_j X_j y_j] (Z_j: the first q columns):
    relative V_j = I + Z_j D_j Z_j', W_j = V_j^-1 = I - Z_j B_j Z_j', M = (X'WX)^-1 (relative),
    beta the GLS estimate; D and B (q, q) or per cluster (J, q, q). adjust=False: CR0's (A_j = I)."""
    p = M.shape[0]
    Zs = slice(0, q)
    V = space.operator(1.0, space.embed(D, Zs))
    W = space.operator(1.0, space.embed(-B, Zs))
    if adjust:
        Vh = space.apply(V, np.sqrt)
        XMX = space.operator(0.0, space.embed(M, slice(q, q + p)))
        K = space.chain(Vh, space.add(V, XMX, -1.0), Vh)
        A = space.chain(Vh, space.apply(K, lambda x: 1.0 / np.sqrt(np.clip(x, 1e-300, None))), Vh)
    else:
        A = space.identity()
    r = space.r
    S = np.zeros((r, p + 1))
    S[q : q + p, :p] = np.eye(p)
    S[q : q + p, p] = -beta
    S[-1, p] = 1.0
    WA = space.compose(W, A)
    scores = space.form(WA, S[:, :p], S[:, p:])[:, :, 0]
    F = space.form(space.chain(WA, V, space.compose(A, W)), S[:, :p], S[:, :p])
    H = space.form(space.compose(A, W), S[:, :p], S[:, :p])
    return CR2(M, scores, F, H)
