"""Kenward-Roger (1997) adjusted covariance and denominator df (pbkrtest's method, REML fits).

With the notation of `variance_derivatives` (P_i, Q_ij, Phi = Var(beta-hat), IE2) and
W = 2 IE2^-1 (pbkrtest `vcovAdj_internal`):

    U     = sum_ij W_ij (Q_ij - P_i Phi P_j)
    Phi_A = Phi + 2 Phi U Phi            (the R_ij term is 0: V is linear in psi)

For L (q x p) with Theta = L'(L Phi L')^-1 L (pbkrtest `.ddf_Lb`):

    A1 = sum_ij W_ij tr(Theta Phi P_i Phi) tr(Theta Phi P_j Phi)
    A2 = sum_ij W_ij tr(Theta Phi P_i Phi Theta Phi P_j Phi)
    B  = (A1 + 6 A2) / (2q),  g = ((q+1) A1 - (q+4) A2) / ((q+2) A2)
    c1 = g / (3q + 2(1-g)),  c2 = (q-g) / (3q + 2(1-g)),  c3 = (q+2-g) / (3q + 2(1-g))
    rho = (1/q) ((1 - A2/q) / (1 - c2 B))^2 (1 + c1 B) / (1 - c3 B)
    m   = 4 + (q+2) / (q rho - 1),       lambda = m (1 - A2/q) / (m - 2)

F* = lambda (1/q) (L beta)'(L Phi_A L')^-1 (L beta) ~ F(q, m) (pbkrtest `KRmodcomp`); for q = 1
the t test uses SE sqrt(l'Phi_A l) and df m (lmerTest `ddf = "Kenward-Roger"`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from multilevel.inference.variance_derivatives import VarianceDerivatives


@dataclass(frozen=True, eq=False)
class KenwardRoger:
    vd: VarianceDerivatives

    @cached_property
    def W(self) -> np.ndarray:
        IE = self.vd.expected_information
        ev = np.linalg.eigvalsh(IE)
        # pbkrtest falls back to a generalised inverse when IE2 is (near) singular.
        inv = np.linalg.inv(IE) if np.min(np.abs(ev)) > 1e-10 else np.linalg.pinv(IE)
        W = 2.0 * inv
        return 0.5 * (W + W.T)

    @cached_property
    def vcov_adjusted(self) -> np.ndarray:
        """Phi_A (pbkrtest `vcovAdj`)."""
        vd, W = self.vd, self.W
        Phi, P, Q = vd.Phi, vd.P, vd.Q
        U = np.zeros_like(Phi)
        for i in range(vd.k):
            for j in range(vd.k):
                U += W[i, j] * (Q[i, j] - P[i] @ Phi @ P[j])
        PhiA = Phi + 2 * Phi @ U @ Phi
        return 0.5 * (PhiA + PhiA.T)

    def _a1_a2(self, L: np.ndarray) -> tuple[int, float, float]:
        L = np.atleast_2d(np.asarray(L, dtype=float))
        q = int(np.linalg.matrix_rank(L))
        Phi, W = self.vd.Phi, self.W
        Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
        u = [Theta @ Phi @ Pi @ Phi for Pi in self.vd.P]
        tr = np.array([np.trace(x) for x in u])
        A1 = float(tr @ W @ tr)
        A2 = float(sum(W[i, j] * np.sum(u[i] * u[j].T) for i in range(len(u)) for j in range(len(u))))
        return q, A1, A2

    def ddf(self, L: np.ndarray) -> float:
        q, A1, A2 = self._a1_a2(L)
        B = (A1 + 6 * A2) / (2 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        den = 3 * q + 2 * (1 - g)
        c1, c2, c3 = g / den, (q - g) / den, (q + 2 - g) / den
        v0 = 1 + c1 * B
        v0 = 0.0 if abs(v0) < 1e-10 else v0
        v1, v2 = 1 - c2 * B, 1 - c3 * B
        ratio = 1.0 if (abs(1 - A2 / q) < 1e-14 and abs(v1) < 1e-14) else (1 - A2 / q) / v1
        rho = ratio**2 * v0 / v2 / q
        return 4 + (q + 2) / (q * rho - 1)

    def scale(self, L: np.ndarray, m: float) -> float:
        """lambda = m (1 - A2/q) / (m - 2)."""
        q, _, A2 = self._a1_a2(L)
        return m * (1 - A2 / q) / (m - 2)

    def f_test(self, L: np.ndarray, beta: np.ndarray, rhs: np.ndarray) -> tuple[float, float, float, float]:
        """(scaled F*, q, m, lambda) of pbkrtest's KRmodcomp."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        q = np.linalg.matrix_rank(L)
        diff = L @ beta - rhs
        wald = float(diff @ np.linalg.solve(L @ self.vcov_adjusted @ L.T, diff))
        m = self.ddf(L)
        lam = self.scale(L, m)
        return lam * wald / q, float(q), m, lam
