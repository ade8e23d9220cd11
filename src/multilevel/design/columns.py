"""The model's columns W = [Z X y], held as recipes over the data's arrays.

Every column of X and Z that formulaic would make from numeric variables is a product of data
columns: the intercept is the empty product, `x` is x, the interaction `x:w` is x*w. Holding the
factors (views of the data's own arrays, or a centred copy) instead of the N x k matrix lets the
one pass over the rows (`rowpass.accumulate`) make each row of W as it goes
and accumulate it, so a fit adds O(J k^2) memory to the data, not O(N k). Columns formulaic has to
make itself (factors, transforms) enter as one materialised factor each. X, Z and y as whole
matrices are built only when something asks for the rows (residual files, effect sizes, plots).

The one pass accumulates each column in the fit's internal coordinates, (column - shift) * scale
(`affine`, chosen by `coordinates.choose`): sums of products of raw columns cancel when a
column's mean is large against its spread (an outcome of 1e7 + N(0, 1)), shifted ones do not.
X, Z and y as whole matrices are the data's own (original) columns.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from multilevel.design.summaries import GroupSummaries


@dataclass(frozen=True, eq=False)
class Columns:
    """`factors[c]`: the arrays (length N) whose elementwise product is column c of [Z X y]."""

    factors: tuple[tuple[np.ndarray, ...], ...]
    q: int
    p: int
    n: int
    #: per column (shift, scale): the one pass sums ((column - shift) * scale) products; None: raw
    affine: tuple[tuple[float, float], ...] | None = None
    #: per column, a centre for each of its factors: the column is prod_f (factor_f - centre_f)
    centres: tuple[tuple[float, ...], ...] | None = None

    @property
    def k(self) -> int:
        return self.q + self.p + 1

    def with_affine(self, affine: tuple[tuple[float, float], ...], centres: tuple[tuple[float, ...], ...] | None = None) -> Columns:
        """The same columns, summed in the internal coordinates: (shift, scale) per column, and a
        centre per factor of each column (`coordinates`)."""
        return Columns(self.factors, self.q, self.p, self.n, tuple((float(a), float(b)) for a, b in affine),
                       None if centres is None else tuple(tuple(float(v) for v in c) for c in centres))

    def recipe(self) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, np.ndarray]:
        """(bases, recipe, affine, cmap): the distinct factor arrays (contiguous float, read-only),
        the factors of each distinct column (indices into bases, -1: none), each distinct column's
        (shift, scale, centre of each factor), and for each column of W its distinct column (Z and X share the intercept
        and the random slopes: the one pass multiplies each distinct pair once)."""
        bases: list[np.ndarray] = []
        index: dict[int, int] = {}
        distinct: dict[tuple, int] = {}
        rows: list[tuple[tuple[int, float], ...]] = []  # per distinct column: (base, its centre) per factor
        maps: list[tuple[float, float]] = []
        cmap = np.empty(self.k, dtype=np.int64)
        for c, fs in enumerate(self.factors):
            shift, scale = self.affine[c] if self.affine is not None else (0.0, 1.0)
            centre = self.centres[c] if self.centres is not None else (0.0,) * len(fs)
            key = []
            for arr in fs:
                if id(arr) not in index:
                    index[id(arr)] = len(bases)
                    base = np.ascontiguousarray(arr, dtype=float).view()
                    base.flags.writeable = False  # one array type for all (pandas may hand out read-only views)
                    bases.append(base)
                key.append(index[id(arr)])
            pairs = tuple(sorted(zip(key, (float(v) for v in centre))))  # (base, its centre), in base order
            full = (pairs, shift, scale)
            if full not in distinct:
                distinct[full] = len(rows)
                rows.append(pairs)
                maps.append((shift, scale))
            cmap[c] = distinct[full]
        width = max(1, max(len(r) for r in rows))
        recipe = np.full((len(rows), width), -1, dtype=np.int64)
        affine = np.zeros((len(rows), 2 + width))
        for d, r in enumerate(rows):
            recipe[d, : len(r)] = [b for b, _ in r]
            affine[d, 0], affine[d, 1] = maps[d]
            affine[d, 2 : 2 + len(r)] = [v for _, v in r]
        if not bases:
            ones = np.ones(self.n)
            ones.flags.writeable = False
            bases.append(ones)
        return tuple(bases), recipe, affine, cmap

    def column(self, c: int) -> np.ndarray:
        fs = self.factors[c]
        if not fs:
            return np.ones(self.n)
        out = np.array(fs[0], dtype=float)
        for f in fs[1:]:
            out *= f
        return out

    def _matrix(self, cols: range) -> np.ndarray:
        out = np.empty((self.n, len(cols)))
        for i, c in enumerate(cols):
            out[:, i] = self.column(c)
        return out

    def internal_column(self, c: int) -> np.ndarray:
        """Column c in the internal coordinates the one pass sums: (prod_f (factor_f - centre_f) -
        shift) * scale (`affine`, `centres`; the column itself without them)."""
        fs = self.factors[c]
        centre = self.centres[c] if self.centres is not None else (0.0,) * len(fs)
        out = np.ones(self.n)
        for f, m in zip(fs, centre):
            out *= np.asarray(f, dtype=float) - m
        if self.affine is not None:
            shift, scale = self.affine[c]
            out = (out - shift) * scale
        return out

    def internal_matrix(self, cols: range) -> np.ndarray:
        """The columns `cols` in the internal coordinates (`internal_column`), N by len(cols)."""
        out = np.empty((self.n, len(cols)))
        for i, c in enumerate(cols):
            out[:, i] = self.internal_column(c)
        return out

    @cached_property
    def Z(self) -> np.ndarray:
        return self._matrix(range(self.q))

    @cached_property
    def X(self) -> np.ndarray:
        return self._matrix(range(self.q, self.q + self.p))

    @cached_property
    def y(self) -> np.ndarray:
        return self.column(self.k - 1)

    def summaries(
        self,
        codes: np.ndarray,
        n_groups: int,
        row_weights: np.ndarray | None = None,
        unit_weights: np.ndarray | None = None,
        precision_weights: np.ndarray | None = None,
    ) -> GroupSummaries:
        """The per-unit cross-products of these columns in one pass over the rows
        (`summaries.GroupSummaries.one_pass`: sampling weights `row_weights`, `unit_weights`, or
        lme4's precision weights)."""
        return GroupSummaries.one_pass(self.recipe(), self.q, self.p, codes, n_groups, row_weights, unit_weights, precision_weights)

    def with_outcome(self, y: np.ndarray) -> Columns:
        """The same Z and X with another outcome (a bootstrap replicate's), in the same coordinates."""
        return Columns(self.factors[:-1] + ((y,),), self.q, self.p, self.n, self.affine, self.centres)

    @classmethod
    def of_matrices(cls, Z: np.ndarray, X: np.ndarray, y: np.ndarray) -> Columns:
        """Materialised matrices (formulaic's, or arrays given directly) as one factor per column."""
        factors = [(Z[:, c],) for c in range(Z.shape[1])] + [(X[:, c],) for c in range(X.shape[1])] + [(y,)]
        return cls(tuple(factors), Z.shape[1], X.shape[1], int(y.shape[0]))
