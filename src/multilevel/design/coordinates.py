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

A random slope's column of Z is shifted the same way when its variable lies far from 0 (more
than SHIFT_SDS SDs), within a correlated term that has a random intercept (only there is the
model the same: lme4's (x || g) is not invariant to shifting x):

    Z' = Z S_z,  S_z = I - e_z0 m_z'    b = S_z b',  tau = S_z tau' S_z',  theta from tau / sigma2

and the fit maps what is expressed in Z's terms (tau, theta, the EB residuals, their conditional
variances, the units' OLS estimates) back; Z_j'Z_j in the data's coordinates is S_z^-T Z'Z' S_z^-1,
and its inverse S_z (Z'Z')^-1 S_z' (no inverse of an ill-conditioned matrix is taken).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from multilevel.errors import DataError

#: the shifts are chosen from the first SAMPLE_ROWS rows used (all rows of smaller data): any shift
#: is exact, it only has to be near the mean. The first rows, not a sample spread over all rows,
#: because a stream (`chunked`) has them before its one pass, so that a streamed design and an
#: in-memory one choose from the same rows (and refuse with the same numbers)
SAMPLE_ROWS = 20_000

#: a random slope's column (and the fixed-effect column of the same variable, so that the one
#: pass shares them) is shifted when its mean exceeds this many SDs: below it the raw sums lose at
#: most ~(8^2) ulps, and the fit's random effects stay in the data's own coordinates
SHIFT_SDS = 8.0

#: a column whose spread is beyond these magnitudes makes products that underflow or overflow
TINY, HUGE = 1e-100, 1e100


@dataclass(frozen=True)
class Coordinates:
    """The shifts of the module doc: `shift[c]` = m_c of each fixed-effect column, `y_shift` = m_y,
    `intercept` = i0 (None: no fixed intercept, nothing shifted)."""

    shift: np.ndarray
    y_shift: float
    intercept: int | None
    z_shift: np.ndarray | None = None  # (q,) m_z of each random-effect column (None: none shifted)
    z_intercept: int | None = None
    #: X' = X S when an interaction is formed from centred factors (then S is not only I - e_i0 m':
    #: (x - m_x)(w - m_w) = xw - m_w x - m_x w + m_x m_w); None: S of `shift`
    S_x: np.ndarray | None = None

    @classmethod
    def identity(cls, p: int) -> Coordinates:
        return cls(np.zeros(p), 0.0, None)

    @property
    def is_identity(self) -> bool:
        x_identity = self.intercept is None or (not np.any(self.shift) and self.y_shift == 0.0)
        return x_identity and self.S_x is None and self.z_identity

    @property
    def z_identity(self) -> bool:
        return self.z_shift is None or self.z_intercept is None or not np.any(self.z_shift)

    @cached_property
    def S_z(self) -> np.ndarray:
        """Z' = Z S_z: S_z = I - e_z0 m_z'."""
        q = 0 if self.z_shift is None else self.z_shift.size
        S = np.eye(q)
        if self.z_shift is not None and self.z_intercept is not None and not self.z_identity:
            S[self.z_intercept, :] -= self.z_shift
            S[self.z_intercept, self.z_intercept] = 1.0
        return S

    @cached_property
    def S_z_inv(self) -> np.ndarray:
        q = 0 if self.z_shift is None else self.z_shift.size
        T = np.eye(q)
        if self.z_shift is not None and self.z_intercept is not None and not self.z_identity:
            T[self.z_intercept, :] += self.z_shift
            T[self.z_intercept, self.z_intercept] = 1.0
        return T

    # ----- the random effects (Z's terms) ------------------------------------------------------
    def tau(self, tau_internal: np.ndarray) -> np.ndarray:
        """tau = S_z tau' S_z' (also sigma2 Lambda Lambda', or a conditional variance D_j)."""
        if self.z_identity:
            return tau_internal
        return self.S_z @ tau_internal @ self.S_z.T

    def tau_internal(self, tau: np.ndarray) -> np.ndarray:
        if self.z_identity:
            return np.asarray(tau, dtype=float)
        return self.S_z_inv @ np.asarray(tau, dtype=float) @ self.S_z_inv.T

    def ranef(self, u_internal: np.ndarray) -> np.ndarray:
        """b_j = S_z b'_j for every unit (J, q)."""
        return u_internal if self.z_identity else u_internal @ self.S_z.T

    def ZtZ(self, s) -> np.ndarray:
        """Z_j'Z_j in the data's coordinates: S_z^-T Z'Z' S_z^-1."""
        if self.z_identity:
            return s.ZtZ
        return np.swapaxes(self.S_z_inv, 0, 1) @ s.ZtZ @ self.S_z_inv

    def ZtZ_inv(self, ZtZ_internal_inv: np.ndarray) -> np.ndarray:
        """(Z_j'Z_j)^-1 in the data's coordinates from the internal inverse: S_z (Z'Z')^-1 S_z'."""
        if self.z_identity:
            return ZtZ_internal_inv
        return self.S_z @ ZtZ_internal_inv @ self.S_z.T

    @cached_property
    def S(self) -> np.ndarray:
        """X' = X S: S = I - e_i0 m' (or `S_x`)."""
        if self.S_x is not None:
            return self.S_x
        p = self.shift.size
        S = np.eye(p)
        if self.intercept is not None:
            S[self.intercept, :] -= self.shift
            S[self.intercept, self.intercept] = 1.0
        return S

    @cached_property
    def S_inv(self) -> np.ndarray:
        """X = X' S^-1: S^-1 = I + e_i0 m' (m_i0 = 0); of `S_x`, its inverse (unit triangular in
        the order of the factors' subsets, so exact to rounding)."""
        if self.S_x is not None:
            return np.linalg.inv(self.S_x)
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
        """Z_j'X_j per unit in the data's coordinates: S_z^-T Z'X' S^-1 (no difference of sums of
        squares of a large column is taken, so this is exact to rounding)."""
        out = s.ZtX @ self.S_inv
        return out if self.z_identity else np.swapaxes(self.S_z_inv, 0, 1) @ out

    def Zty(self, s) -> np.ndarray:
        """Z_j'y_j per unit in the data's coordinates: S_z^-T (Z'y' + m_y Z'1) (1 = X'e_i0)."""
        out = s.Zty
        if self.intercept is not None and self.y_shift != 0.0:
            out = out + self.y_shift * s.ZtX[:, :, self.intercept]
        return out if self.z_identity else out @ self.S_z_inv

    def original_C(self, s) -> np.ndarray:
        """[Z X y]'[Z X y] per unit in the data's coordinates: T' C' T with [Z X y] = [Z X' y'] T
        (for algebra that needs the data's own columns, e.g. a fixed effect held at a value; at
        large offsets these sums are as inexact as raw ones)."""
        q, p = s.q, s.p
        k = q + p + 1
        T = np.eye(k)
        if not self.z_identity:
            T[:q, :q] = self.S_z_inv
        T[q : q + p, q : q + p] = self.S_inv
        if self.intercept is not None:
            T[q + self.intercept, -1] = self.y_shift
        return np.einsum("ab,jbc,cd->jad", T.T, s.C, T)


def _sample(factors, rows: int) -> np.ndarray:
    """The product column on the first `rows` rows (read only: it may be a view of the data)."""
    if not factors:
        return np.ones(rows)
    out = np.asarray(factors[0][:rows], dtype=float)  # (1.0 * x is x: no product with ones)
    for f in factors[1:]:
        out = out * np.asarray(f[:rows], dtype=float)
    return out


def _mean_sd(v: np.ndarray, out: np.ndarray | None = None) -> tuple[float, float]:
    """(v.mean(), v.std()) with one sum less: numpy's own steps (the sum over n, the squares of
    v - mean summed over n, the root), so the same numbers to the bit. `out`: scratch of v's
    length for v - mean (no new array per column)."""
    m = v.mean()
    x = np.subtract(v, m, out=out)
    np.multiply(x, x, out=x)
    return float(m), float(np.sqrt(np.add.reduce(x) / v.size))


def _key(factors) -> tuple[int, ...]:
    return tuple(sorted(id(f) for f in factors))


def choose(columns, x_names: tuple[str, ...], z_names: tuple[str, ...], outcome: str, intercept_name: str = "Intercept",
           blocks: tuple[tuple[int, ...], ...] = ()):
    """(Coordinates, (affine, centres)) for `columns.Columns.with_affine` (module doc): each
    fixed-effect column and the outcome shifted by their mean over the first `SAMPLE_ROWS` rows
    (any shift is exact; it only has to be near the mean), an interaction with all its
    lower-order terms made of centred factors, and a random slope's column when it lies far from
    0, within a correlated term (`blocks`) with a random intercept. Refuses columns whose products
    would underflow or overflow."""
    n, q, p = columns.n, columns.q, columns.p
    rows = min(n, SAMPLE_ROWS)  # the first rows
    x_factors = columns.factors[q : q + p]
    z_factors = columns.factors[:q]
    samples: dict[tuple[int, ...], np.ndarray] = {}
    means: dict[tuple[int, ...], float] = {}
    sds: dict[tuple[int, ...], float] = {}
    extremes: dict[tuple[int, ...], tuple[float, float]] = {}
    scratch = np.empty(rows)  # for the deviations and their squares: one array for all columns

    def sample(fs) -> np.ndarray:
        """`_sample(fs, rows)`, made once per column (the same product of the same arrays)."""
        key = tuple(id(f) for f in fs)
        if key not in samples:
            samples[key] = _sample(fs, rows)
        return samples[key]

    def mean(fs) -> float:
        """The column's mean over the sample rows (`_mean_sd`'s), once per column."""
        key = tuple(id(f) for f in fs)
        if key not in means:
            means[key] = float(sample(fs).mean())
        return means[key]

    def sd(fs) -> float:
        """The column's standard deviation over the sample rows (`_mean_sd`'s), once per column."""
        key = tuple(id(f) for f in fs)
        if key not in sds:
            means[key], sds[key] = _mean_sd(sample(fs), scratch)
        return sds[key]

    def largest(fs, centre: float) -> float:
        """max |column - centre| over the sample rows (0 for none): the larger of max - centre and
        centre - min, which are the largest of the rounded differences (rounding is monotone),
        so the number max |v - centre| gives, without an array of the differences."""
        key = tuple(id(f) for f in fs)
        if key not in extremes:
            v = sample(fs)
            extremes[key] = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
        lo, hi = extremes[key]
        if np.isnan(lo) or np.isnan(hi):
            return float("nan")
        return max(hi - centre, centre - lo, 0.0)

    def is_ones(fs) -> bool:
        return not fs or (len(fs) == 1 and bool(np.all(np.asarray(fs[0]) == 1.0)))

    i0 = None
    if intercept_name in x_names:
        c = x_names.index(intercept_name)
        if is_ones(x_factors[c]):
            i0 = c
    z0 = next((c for c in range(q) if z_names[c] == intercept_name and is_ones(z_factors[c])), None)
    z_shift = np.zeros(q)
    shifted_keys: dict[tuple[int, ...], float] = {}
    for c, name in enumerate(z_names):
        fs = z_factors[c]
        if not fs or c == z0:
            continue
        m = mean(fs)
        _check_magnitude(name, largest(fs, 0.0), "random effect's column")
        block = next((b for b in blocks if c in b), ())
        if z0 is not None and z0 in block and len(block) > 1 and abs(m) > SHIFT_SDS * sd(fs):
            z_shift[c] = m
            shifted_keys[_key(fs)] = m
    z_keys = {_key(fs) for fs in z_factors}
    shift = np.zeros(p)  # per column: its mean (the value in messages about a constant column)
    col_shift = np.zeros(p)  # per column: what the one pass subtracts from it (after centring its factors)
    centres: list[tuple[float, ...]] = [(0.0,) * len(fs) for fs in columns.factors]
    S = np.eye(p)
    if i0 is not None:
        by_key = {_key(fs): c for c, fs in enumerate(x_factors)}
        for c in range(p):
            if c == i0:
                continue
            fs = x_factors[c]
            key = _key(fs)
            m = mean(fs)
            if key in shifted_keys:
                shift[c] = col_shift[c] = shifted_keys[key]  # the same column as Z's: shared in the one pass
                S[i0, c] = -shift[c]
                continue
            if key in z_keys and abs(m) <= SHIFT_SDS * sd(fs):
                continue  # shared with Z, and near enough to 0
            subsets = [tuple(a) for r in range(len(fs)) for a in itertools.combinations(range(len(fs)), r)]
            if len(fs) > 1 and len(set(key)) == len(fs) and all(
                (_key([fs[i] for i in a]) in by_key) if a else True for a in subsets
            ):
                # an interaction whose lower-order terms are all in the model: the product of the
                # centred factors, prod_f (x_f - m_f) = sum over subsets A of prod_{A} x_f prod_{not A} (-m_f)
                ms = [mean((f,)) for f in fs]
                centres[q + c] = tuple(ms)
                for a in subsets:
                    coef = float(np.prod([-ms[i] for i in range(len(fs)) if i not in a]))
                    S[by_key[_key([fs[i] for i in a])] if a else i0, c] += coef
                centred = np.subtract(np.asarray(fs[0][:rows], dtype=float), ms[0], out=scratch)  # (1.0 * x is x)
                for f, mf in zip(fs[1:], ms[1:]):
                    centred *= np.asarray(f[:rows], dtype=float) - mf
                rest = float(centred.mean())  # and the centred product shifted by its own mean
                S[i0, c] -= rest
                shift[c], col_shift[c] = m, rest
                continue
            shift[c] = col_shift[c] = m
            S[i0, c] = -m
    for c, name in enumerate(x_names):
        if c != i0:
            _check_magnitude(name, largest(x_factors[c], float(shift[c])), "predictor")
    products = any(any(centres[q + c]) for c in range(p))
    y_shift = mean(columns.factors[-1]) if i0 is not None else 0.0
    _check_magnitude(outcome, largest(columns.factors[-1], y_shift), "outcome")
    affine = [(float(m), 1.0) for m in z_shift] + [(float(m), 1.0) for m in col_shift] + [(y_shift, 1.0)]
    z_shifted = bool(np.any(z_shift))
    coordinates = Coordinates(shift, y_shift, i0, z_shift=z_shift if z_shifted else None, z_intercept=z0 if z_shifted else None,
                              S_x=S if products else None)
    return coordinates, (tuple(affine), tuple(centres))


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
