"""The fit's internal coordinates: the fixed-effect columns and the outcome shifted before the one
pass, so that the per-unit sums of products do not cancel.

Why: the summaries are sums of products of columns, and everything after them (the deviance,
beta, sigma2) takes differences of those sums. For an outcome 1e7 + N(0, 1) (or a predictor
1e6 + N(0, 1)) the sums are ~1e14 times larger than the differences, so half of the 16 digits
are lost before the optimiser starts. Shifted columns keep them. With a fixed intercept (column
i0 of X, the column of ones),

    X' = X S,   S = I - e_i0 m'   (X'_c = X_c - m_c 1 for c != i0; m_i0 = 0)
    y' = y - m_y 1 = y - m_y X e_i0
    y - X beta = y' - X' beta'    <=>    beta = S beta' + m_y e_i0,

so the residuals, sigma2, theta, tau, the EB residuals and the (RE)ML criterion are the same in
both coordinates (S is unit triangular: |det S| = 1, and log|X'V^-1X| does not change), and only
what is expressed in X's terms is mapped back: beta, its covariance S V S', and a contrast
L beta = r, which is (L S) beta' = r - m_y L e_i0. Without a fixed intercept nothing is shifted.

The random-effect columns Z keep the data's coordinates (theta, tau and the EB residuals are
reported in them). A random slope whose variable lies very far from 0 relative to its spread
cannot be told apart from the random intercept in double precision; `choose` refuses it with
what to do (centre it), rather than return a wrong number.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import DataError

#: rows sampled (evenly spread) to choose the shifts: any shift is exact, it only has to be near the mean
SAMPLE_ROWS = 20_000

#: an X column that is also a Z column (a random slope's variable) is shifted for X only when its
#: mean exceeds this many SDs: below it the raw sums lose at most ~(8^2) ulps, and X and Z share
#: one column in the one pass (fewer products per row)
SHARED_SHIFT_SDS = 8.0

#: a random slope whose variable's mean exceeds this many SDs is refused: the raw sums of Z'Z then
#: lose (mean / SD)^2 ulps, 1e-8 relative at this limit
MAX_RANDOM_OFFSET_SDS = 1e4

#: a column whose spread is beyond these magnitudes makes products that underflow or overflow
TINY, HUGE = 1e-100, 1e100


@dataclass(frozen=True)
class Coordinates:
    """The shifts of the module doc: `shift[c]` = m_c of each fixed-effect column, `y_shift` = m_y,
    `intercept` = i0 (None: no fixed intercept, nothing shifted)."""

    shift: np.ndarray
    y_shift: float
    intercept: int | None

    @classmethod
    def identity(cls, p: int) -> Coordinates:
        return cls(np.zeros(p), 0.0, None)

    @property
    def is_identity(self) -> bool:
        return self.intercept is None or (not np.any(self.shift) and self.y_shift == 0.0)

    @cached_property
    def S(self) -> np.ndarray:
        """X' = X S: S = I - e_i0 m'."""
        p = self.shift.size
        S = np.eye(p)
        if self.intercept is not None:
            S[self.intercept, :] -= self.shift
            S[self.intercept, self.intercept] = 1.0
        return S

    @cached_property
    def S_inv(self) -> np.ndarray:
        """X = X' S^-1: S^-1 = I + e_i0 m' (m_i0 = 0)."""
        p = self.shift.size
        T = np.eye(p)
        if self.intercept is not None:
            T[self.intercept, :] += self.shift
            T[self.intercept, self.intercept] = 1.0
        return T

    def beta(self, beta_internal: np.ndarray) -> np.ndarray:
        """beta = S beta' + m_y e_i0."""
        b = self.S @ np.asarray(beta_internal, dtype=float)
        if self.intercept is not None:
            b[self.intercept] += self.y_shift
        return b

    def beta_internal(self, beta: np.ndarray) -> np.ndarray:
        """beta' = S^-1 (beta - m_y e_i0)."""
        b = np.array(beta, dtype=float)
        if self.intercept is not None:
            b[self.intercept] -= self.y_shift
        return self.S_inv @ b

    def vcov(self, V_internal: np.ndarray) -> np.ndarray:
        """Var(beta) = S Var(beta') S'."""
        return self.S @ V_internal @ self.S.T

    def contrast(self, L: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """L beta = r  <=>  (L S) beta' = r - m_y L e_i0."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        r = np.asarray(rhs, dtype=float)
        if self.intercept is None:
            return L, r
        return L @ self.S, r - self.y_shift * L[:, self.intercept]

    def ZtX(self, s) -> np.ndarray:
        """Z_j'X_j per unit in the data's coordinates: Z'X' S^-1 (no sum of squares of a large
        column is involved, so this is exact to rounding)."""
        return s.ZtX @ self.S_inv

    def Zty(self, s) -> np.ndarray:
        """Z_j'y_j per unit in the data's coordinates: Z'y' + m_y Z'1 (1 = X'e_i0)."""
        if self.intercept is None or self.y_shift == 0.0:
            return s.Zty
        return s.Zty + self.y_shift * s.ZtX[:, :, self.intercept]

    def original_C(self, s) -> np.ndarray:
        """[Z X y]'[Z X y] per unit in the data's coordinates: T' C' T with [Z X y] = [Z X' y'] T
        (for algebra that needs the data's own columns, e.g. a fixed effect held at a value; at
        large offsets these sums are as inexact as raw ones)."""
        q, p = s.q, s.p
        k = q + p + 1
        T = np.eye(k)
        T[q : q + p, q : q + p] = self.S_inv
        if self.intercept is not None:
            T[q + self.intercept, -1] = self.y_shift
        return np.einsum("ab,jbc,cd->jad", T.T, s.C, T)


def _sample(factors, idx: np.ndarray) -> np.ndarray:
    out = np.ones(idx.size)
    for f in factors:
        out = out * np.asarray(f, dtype=float)[idx]
    return out


def _key(factors) -> tuple[int, ...]:
    return tuple(sorted(id(f) for f in factors))


def choose(columns, x_names: tuple[str, ...], z_names: tuple[str, ...], outcome: str, intercept_name: str = "Intercept"):
    """(Coordinates, affine per column of [Z X y]) for `columns.Columns` (module doc): each
    fixed-effect column and the outcome shifted by their mean over an even sample of the rows
    (any shift is exact; it only has to be near the mean). Refuses columns whose products would
    underflow or overflow, and random slopes too far from 0 to be told from the intercept."""
    n, q, p = columns.n, columns.q, columns.p
    idx = np.unique(np.linspace(0, n - 1, min(n, SAMPLE_ROWS)).astype(np.intp)) if n else np.zeros(0, np.intp)
    x_factors = columns.factors[q : q + p]
    i0 = None
    if intercept_name in x_names:
        c = x_names.index(intercept_name)
        fs = x_factors[c]
        if not fs or (len(fs) == 1 and np.all(np.asarray(fs[0]) == 1.0)):
            i0 = c
    z_keys = {_key(fs) for fs in columns.factors[:q]}
    z_intercept = any(not fs or (len(fs) == 1 and np.all(np.asarray(fs[0]) == 1.0)) for fs in columns.factors[:q])

    def spread(v: np.ndarray) -> tuple[float, float]:
        return float(v.mean()), float(v.std())

    for c, name in enumerate(z_names):
        fs = columns.factors[c]
        if not fs:
            continue
        v = _sample(fs, idx)
        m, sd = spread(v)
        _check_magnitude(name, float(np.max(np.abs(v), initial=0.0)), "random effect's column")
        if z_intercept and sd > 0 and abs(m) > MAX_RANDOM_OFFSET_SDS * sd:
            raise DataError(
                f"'{name}' has a random slope and its values lie far from 0 against their spread (mean {m:.6g}, "
                f"SD {sd:.3g}: {abs(m) / sd:.3g} SDs): the random intercept (each unit's value at {name} = 0) and "
                "the random slope cannot be told apart in double precision. Centre it: cgm(" + name + ") at its "
                "grand mean, cwc(" + name + ") within units, or subtract a round number near its mean."
            )
    shift = np.zeros(p)
    if i0 is not None:
        for c in range(p):
            if c == i0:
                continue
            m, sd = spread(_sample(x_factors[c], idx))
            if _key(x_factors[c]) in z_keys and abs(m) <= SHARED_SHIFT_SDS * sd:
                continue  # shared with Z, and near enough to 0
            shift[c] = m
    for c, name in enumerate(x_names):
        if c != i0:
            v = _sample(x_factors[c], idx) - shift[c]
            _check_magnitude(name, float(np.max(np.abs(v), initial=0.0)), "predictor")
    y = _sample(columns.factors[-1], idx)
    y_shift = float(y.mean()) if i0 is not None else 0.0
    _check_magnitude(outcome, float(np.max(np.abs(y - y_shift), initial=0.0)), "outcome")
    affine = [(0.0, 1.0)] * q + [(float(s), 1.0) for s in shift] + [(y_shift, 1.0)]
    return Coordinates(shift, y_shift, i0), tuple(affine)


def _check_magnitude(name: str, size: float, what: str) -> None:
    if size == 0.0 or not np.isfinite(size):
        return  # constant or missing columns are named by the checks that follow
    # the largest deviation from the shift (no squares: they would underflow here themselves)
    if size < TINY or size > HUGE:
        power = int(np.round(-np.log10(size)))
        raise DataError(
            f"The {what} '{name}' has values of the order of {size:.1e}: its squares and products "
            f"{'underflow' if size < TINY else 'overflow'} double precision, so no estimate would be exact. "
            f"Rescale it first (e.g. multiply it by 1e{power}); every estimate then scales by the known factor."
        )
