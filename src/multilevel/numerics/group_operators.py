"""n_j-by-n_j matrices of one group, handled through the group's summaries only.

Every matrix that Satterthwaite, Kenward-Roger and CR2 need (V_j, V_j^-1, V_j^1/2, the CR2
adjustment A_j, products of these with dV/dpsi_j) has the form

    alpha I + U_j C U_j',      U_j = [Z_j X_j y_j]  (the n_j x r rows of the group, r = q + p + 1),

because all of them are built from I and the columns of U_j. Such a matrix is held as
(alpha, C) with C r-by-r, and everything about it follows from the Gram matrix G_j = U_j'U_j,
which is exactly the group's summary block (`GroupSummaries.C`):

    product:   (a I + U C U')(b I + U D U') = ab I + U (a D + b C + C G D) U'
    forms:     (U s)' (a I + U C U') (U t) = s' (a G + G C G) t
    trace:     tr(a I + U C U') = a n_j + tr(C G)
    functions: f(a I + U C U') = f(a) I + U C_f U' for symmetric C, from the eigenvalues of the
               r-by-r matrix a I + G^1/2 C G^1/2 (the matrix restricted to the span of U_j).

So the cost is O(J r^3) whatever the group sizes, and no row is touched after the one pass.
Arrays are batched over groups: alpha (J,), C (J, r, r), G (J, r, r).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Directions of U_j whose scaled eigenvalue is below this are treated as absent (exactly
#: collinear columns within a group, e.g. a level-2 predictor and the intercept).
RANK_TOL = 1e-10


@dataclass(frozen=True, eq=False)
class GroupOperator:
    """alpha_j I + U_j C_j U_j' for every group j."""

    alpha: np.ndarray  # (J,)
    C: np.ndarray  # (J, r, r)

    def __matmul__(self, other: GroupOperator) -> GroupOperator:
        raise TypeError("Use GroupSpace.compose: a product needs the groups' Gram matrices.")


class GroupSpace:
    """The groups' Gram matrices G_j = U_j'U_j and sizes n_j, with the algebra of the module doc."""

    def __init__(self, G: np.ndarray, n: np.ndarray):
        self.G = G
        self.n = n
        self.J, self.r = G.shape[0], G.shape[1]
        self._eig: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # ----- building blocks --------------------------------------------------------------
    def operator(self, alpha, C) -> GroupOperator:
        alpha = np.broadcast_to(np.asarray(alpha, dtype=float), (self.J,)).copy()
        C = np.broadcast_to(np.asarray(C, dtype=float), (self.J, self.r, self.r)).copy()
        return GroupOperator(alpha, C)

    def identity(self) -> GroupOperator:
        return self.operator(1.0, 0.0)

    def embed(self, block: np.ndarray, rows: slice, cols: slice | None = None) -> np.ndarray:
        """An r-by-r (or (J, r, r)) core with `block` at the given columns of U and zeros elsewhere."""
        cols = rows if cols is None else cols
        block = np.asarray(block, dtype=float)
        out = np.zeros(block.shape[:-2] + (self.r, self.r))
        out[..., rows, cols] = block
        return out

    # ----- algebra --------------------------------------------------------------------------
    def compose(self, A: GroupOperator, B: GroupOperator) -> GroupOperator:
        a, b = A.alpha[:, None, None], B.alpha[:, None, None]
        return GroupOperator(A.alpha * B.alpha, a * B.C + b * A.C + A.C @ self.G @ B.C)

    def chain(self, *ops: GroupOperator) -> GroupOperator:
        out = ops[0]
        for op in ops[1:]:
            out = self.compose(out, op)
        return out

    def add(self, A: GroupOperator, B: GroupOperator, b: float = 1.0) -> GroupOperator:
        return GroupOperator(A.alpha + b * B.alpha, A.C + b * B.C)

    def sandwich_core(self, A: GroupOperator) -> np.ndarray:
        """alpha G + G C G: the matrix of U'(alpha I + U C U')U, so that forms are s' (.) t."""
        return A.alpha[:, None, None] * self.G + self.G @ A.C @ self.G

    def form(self, A: GroupOperator, S: np.ndarray, T: np.ndarray) -> np.ndarray:
        """(U S)' A (U T) per group; S, T are coefficient matrices (r, a), (r, b) or batched (J, r, a)."""
        return np.swapaxes(S, -1, -2) @ self.sandwich_core(A) @ T

    def trace(self, A: GroupOperator) -> np.ndarray:
        return A.alpha * self.n + np.einsum("jab,jba->j", A.C, self.G)

    # ----- functions of symmetric operators -------------------------------------------------
    def _basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per group, R_j with U_j = Q_j R_j (Q_j orthonormal) and its pseudo-inverse R_j^+.

        Columns are scaled to unit length first so that the rank cut is scale free; directions
        with scaled eigenvalue below RANK_TOL (collinear columns) are dropped.
        """
        if self._eig is None:
            d = np.sqrt(np.clip(np.diagonal(self.G, axis1=1, axis2=2), 0.0, None))
            s = np.where(d > 0, d, 1.0)
            Gs = self.G / s[:, :, None] / s[:, None, :]
            lam, P = np.linalg.eigh(Gs)
            keep = lam > RANK_TOL * np.maximum(lam[:, -1:], 1e-300)
            root = np.where(keep, np.sqrt(np.where(keep, lam, 1.0)), 0.0)
            inv_root = np.where(keep, 1.0 / np.where(keep, root, 1.0), 0.0)
            # U = Us diag(s), Us = Q diag(root) P' on the kept directions.
            R = root[:, :, None] * np.swapaxes(P, 1, 2) * s[:, None, :]  # (J, r, r): R = diag(root) P' diag(s)
            Rp = (P * inv_root[:, None, :]) / s[:, :, None]  # R^+ = diag(1/s) P diag(1/root)
            self._eig = (R, Rp, keep)
        return self._eig

    def apply(self, A: GroupOperator, f: Callable[[np.ndarray], np.ndarray]) -> GroupOperator:
        """f(A) for a symmetric A (C_j symmetric), f applied to eigenvalues."""
        R, Rp, keep = self._basis()
        K = A.alpha[:, None, None] * np.eye(self.r) + R @ A.C @ np.swapaxes(R, 1, 2)
        # Dropped directions carry no column of U: give them eigenvalue alpha so they cancel below.
        K = np.where((keep[:, :, None] & keep[:, None, :]) | np.eye(self.r, dtype=bool), K, 0.0)
        lam, P = np.linalg.eigh(K)
        fa = f(A.alpha)
        E = (P * (f(lam) - fa[:, None])[:, None, :]) @ np.swapaxes(P, 1, 2)
        return GroupOperator(fa, Rp @ E @ np.swapaxes(Rp, 1, 2))
