"""The random-effects covariance, parameterised as lme4 does.

tau = sigma2 * Lambda Lambda', with Lambda lower triangular; theta holds the free elements of
Lambda, term by term, column-major within a term (lme4's `theta`, e.g. for `(x | g)`:
[L11, L21, L22]). Terms are uncorrelated blocks of Lambda. Diagonal elements are bounded below by
0 (lme4's `lower`); a fit with a diagonal element at 0 is singular (on the boundary).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: lme4's tolerance for calling a fit singular (isSingular(tol = 1e-4)).
SINGULAR_TOL = 1e-4


@dataclass(frozen=True)
class LambdaTemplate:
    """Where each theta goes in the q-by-q Lambda, and which thetas are variances (diagonal)."""

    q: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    names: tuple[str, ...]
    blocks: tuple[tuple[int, ...], ...] = ()  # the Z columns of each term (uncorrelated blocks)
    intercept: int | None = None  # the Z column of ones (the random intercept), if any

    @classmethod
    def from_blocks(cls, blocks: tuple[tuple[int, ...], ...], z_names: tuple[str, ...], group: str) -> LambdaTemplate:
        rows, cols, names = [], [], []
        for block in blocks:
            for jc, c in enumerate(block):
                for r in block[jc:]:
                    rows.append(r)
                    cols.append(c)
                    names.append(f"{group}.{z_names[c]}" if r == c else f"{group}.{z_names[r]}.{z_names[c]}")
        intercept = z_names.index("Intercept") if "Intercept" in z_names else None
        return cls(sum(len(b) for b in blocks), tuple(rows), tuple(cols), tuple(names), tuple(tuple(b) for b in blocks), intercept)

    @property
    def size(self) -> int:
        return len(self.rows)

    @property
    def is_diagonal(self) -> np.ndarray:
        return np.array([r == c for r, c in zip(self.rows, self.cols)])

    @property
    def lower_bounds(self) -> np.ndarray:
        return np.where(self.is_diagonal, 0.0, -np.inf)

    def boundary(self, theta: np.ndarray) -> tuple[str, ...]:
        """theta names of the diagonal elements of Lambda below lme4's isSingular tolerance (1e-4):
        a variance at zero or a correlation at +/-1. Empty for a non-singular fit."""
        small = self.is_diagonal & (np.abs(theta) < SINGULAR_TOL)
        return tuple(n for n, b in zip(self.names, small) if b)

    def start(self) -> np.ndarray:
        """lme4's starting point: Lambda = I."""
        return self.is_diagonal.astype(float)

    @cached_property
    def _flat(self) -> np.ndarray:
        # where each theta goes in Lambda's q*q elements (row-major): indexed once, not per call
        return np.array(self.rows, dtype=np.intp) * self.q + np.array(self.cols, dtype=np.intp)

    def lam(self, theta: np.ndarray) -> np.ndarray:
        L = np.zeros(self.q * self.q)
        L[self._flat] = theta
        return L.reshape(self.q, self.q)

    def theta_from_tau(self, tau: np.ndarray, sigma2: float) -> np.ndarray:
        """theta whose Lambda Lambda' = tau / sigma2 (Cholesky per block; zero variances allowed)."""
        rel = np.asarray(tau, dtype=float) / sigma2
        L = np.zeros_like(rel)
        # A semidefinite Cholesky: columns with zero pivot are set to zero, as lme4 does at the boundary.
        for j in range(self.q):
            d = rel[j, j] - L[j, :j] @ L[j, :j]
            # zero to rounding of this diagonal element itself (not of 1: a slope's variance in
            # small units, 1e-12, with a correlation near 1 is still a variance)
            if d <= 1e-14 * abs(rel[j, j]):
                continue
            L[j, j] = np.sqrt(d)
            L[j + 1 :, j] = (rel[j + 1 :, j] - L[j + 1 :, :j] @ L[j, :j]) / L[j, j]
        theta = L[self.rows, self.cols]
        lam = self.lam(theta)
        if not _allclose(lam @ lam.T, rel, 1e-10 * max(1.0, np.abs(rel).max())):
            raise ValueError("tau does not have the structure of this model's random effects (or is not positive semidefinite).")
        return theta


def _allclose(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    """np.allclose(a, b, atol=atol) (rtol 1e-5): |a - b| <= atol + 1e-5 |b| everywhere; numpy's own
    for values that are not finite (its rules for inf and nan), else without its Python wrapper (a
    tenth of the cost: this runs at every evaluation the optimiser's history keeps)."""
    if not (np.isfinite(atol) and np.isfinite(a).all() and np.isfinite(b).all()):
        return bool(np.allclose(a, b, atol=atol))
    return bool((np.abs(a - b) <= atol + 1e-5 * np.abs(b)).all())


def correlations(cov):
    """The correlation matrix of a covariance matrix (a DataFrame), NaN where a variance is 0."""
    import pandas as pd

    t = cov.to_numpy()
    sd = np.sqrt(np.diag(t))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = t / np.outer(sd, sd)
    return pd.DataFrame(r, index=cov.index, columns=cov.columns)
