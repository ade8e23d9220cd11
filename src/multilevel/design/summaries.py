"""Cross-product summaries by random-effects term: the only thing the likelihood needs from the rows.

One grouping factor (every model fitted today). With q random and p fixed effects, stack
`W = [Z X y]` (k = q + p + 1 columns) and keep, for every group j, `C_j = W_j' W_j` (a k-by-k block)
and the group size n_j. One pass over the rows builds them (O(N k^2)); everything after costs
O(J k^3), whatever N is. Summaries of two chunks aligned on the same group codes add up to those of
their union (`+`), which is what out-of-core and distributed fitting build on.

Many grouping factors (nested or crossed; MixedModels.jl's blocked A = [Z X y]'[Z X y]). Terms
t = 1..T, term t with a grouping factor g_t of J_t levels and q_t random effects: Z_t is N by
J_t q_t, the q_t columns of each level side by side (level-major, as lme4's and MixedModels.jl's Z).
The terms are sorted by J_t, largest first (MixedModels.jl's order: for nested factors the inner
one comes first). In blocks by term, A (symmetric; the lower triangle shown) is

    Z_1'Z_1
    Z_2'Z_1   Z_2'Z_2
      ...       ...     ...
    X'Z_1     X'Z_2     ...   X'X
    y'Z_1     y'Z_2     ...   y'X   y'y

- Every row lies in one level of each factor, so Z_t'Z_t is block diagonal (one q_t-by-q_t block
  per level) and Z_t'X, Z_t'y are one q_t-by-p block and one q_t-vector per level. Term t keeps them
  as the first term does, in `TermBlock.C` (J_t, q_t + p + 1, q_t + p + 1) = [Z_tj X_j y_j]'[Z_tj
  X_j y_j] over the rows in level j of g_t, with the rows per level `n` and the level's weights:
  each term's block is the one-factor summaries of its own factor (its X'X_j part, summed over j,
  is X'X for every term).
- Below the diagonal, Z_t'Z_s (s < t) is a cross-tabulation of the levels: `CrossBlock` holds,
  for each pair (level i of g_t, level j of g_s) that shares at least one row, the q_t-by-q_s block
  sum of z_t z_s' over those rows (the same weights as C). It is sparse: nested factors give one
  pair per level of the inner factor, no fill-in across outer units; crossed ones up to J_t J_s
  pairs, for which `CrossBlock.dense()` gives the (J_t q_t, J_s q_s) matrix. Term t carries its
  blocks with every earlier term in `TermBlock.cross`, one `CrossBlock` per s.
- X'X, X'y and y'y are the totals (`XtX_total`, ...), once for the model.
Each evaluation of a many-factor objective updates its blocked Cholesky factor L from these blocks
and Lambda(theta), never from the rows.

Storage. The first term is held in `GroupSummaries`' own fields (`C`, `n`, `q`, `unit_weights`,
`row_weights`, `factor`): the one-factor fast path that the compiled loops of the objective read,
and `dataclasses.replace(s, C=...)` keeps working. `terms[0]` is a `TermBlock` over those very arrays
(no copy); later terms are `more_terms`. The one-factor accessors (C, n, ZtZ, ZtX, Zty, XtX_j, ...)
are the first term's; the totals are the model's.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from multilevel.numerics.rowpass import cross_products

#: what `cross_products` takes besides the rows' codes: (bases, recipe, affine, cmap), as
#: `columns.Columns.recipe` makes it
Recipe = tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class CrossBlock:
    """Z_t'Z_s of a term t with an earlier term s: the cross-tabulation of their levels, sparse.

    `blocks[m]` = sum of z_t z_s' (q_t by q_s) over the rows in level `rows[m]` of g_t and level
    `cols[m]` of g_s (each pair listed once); pairs with no rows in common are left out.
    `shape` = (J_t, J_s). MixedModels.jl's off-diagonal blocks of A (`BlockedSparse` or dense).
    """

    term: int  # s: the index of the earlier term in `GroupSummaries.terms`
    rows: np.ndarray  # (m,) levels of g_t
    cols: np.ndarray  # (m,) levels of g_s
    blocks: np.ndarray  # (m, q_t, q_s)
    shape: tuple[int, int]  # (J_t, J_s)

    def dense(self) -> np.ndarray:
        """Z_t'Z_s as a (J_t q_t, J_s q_s) matrix (level-major columns, as Z_t's)."""
        qt, qs = self.blocks.shape[1:]
        Jt, Js = self.shape
        out = np.zeros((Jt, qt, Js, qs))
        out[self.rows, :, self.cols, :] = self.blocks
        return out.reshape(Jt * qt, Js * qs)

    def __add__(self, other: CrossBlock) -> CrossBlock:
        """The blocks of two chunks' rows: pairs in both add, the others are kept."""
        if (self.term, self.shape, self.blocks.shape[1:]) != (other.term, other.shape, other.blocks.shape[1:]):
            raise ValueError("Summaries of different models or groupings cannot be added.")
        rows = np.concatenate([self.rows, other.rows])
        cols = np.concatenate([self.cols, other.cols])
        pairs, first, where = np.unique(rows * self.shape[1] + cols, return_index=True, return_inverse=True)
        blocks = np.zeros((pairs.size,) + self.blocks.shape[1:])
        np.add.at(blocks, where.ravel(), np.concatenate([self.blocks, other.blocks]))
        return CrossBlock(self.term, rows[first], cols[first], blocks, self.shape)


@dataclass(frozen=True, eq=False)
class TermBlock:
    """One random-effects term's diagonal blocks: `C[j] = [Z_j X_j y_j]'[Z_j X_j y_j]` (J, q+p+1,
    q+p+1) over the rows in level j of its grouping factor, `n[j]` rows, the level weights (as in
    `GroupSummaries`), and Z'Z with every earlier term (`cross`; empty for the first term).
    lme4's `(z | g)`, a `ReMat` of MixedModels.jl with its diagonal block of A."""

    C: np.ndarray
    n: np.ndarray
    q: int
    factor: str | None = None  # the grouping factor's name
    unit_weights: np.ndarray | None = None
    row_weights: np.ndarray | None = None
    cross: tuple[CrossBlock, ...] = ()

    @property
    def J(self) -> int:
        """The number of levels of the grouping factor."""
        return int(self.C.shape[0])

    @property
    def p(self) -> int:
        return int(self.C.shape[1]) - self.q - 1

    @property
    def ZtZ(self) -> np.ndarray:
        return self.C[:, : self.q, : self.q]

    @property
    def ZtX(self) -> np.ndarray:
        return self.C[:, : self.q, self.q : -1]

    @property
    def Zty(self) -> np.ndarray:
        return self.C[:, : self.q, -1]

    @property
    def XtX_j(self) -> np.ndarray:
        return self.C[:, self.q : -1, self.q : -1]

    @property
    def Xty_j(self) -> np.ndarray:
        return self.C[:, self.q : -1, -1]

    @property
    def yty_j(self) -> np.ndarray:
        return self.C[:, -1, -1]

    def __add__(self, other: TermBlock) -> TermBlock:
        if (self.q, self.factor, self.C.shape, len(self.cross)) != (other.q, other.factor, other.C.shape, len(other.cross)):
            raise ValueError("Summaries of different models or groupings cannot be added.")
        if self.unit_weights is not None or self.row_weights is not None or other.unit_weights is not None or other.row_weights is not None:
            raise ValueError("Weighted summaries are built in one pass (the weights are scaled per unit); they cannot be added.")
        cross = tuple(a + b for a, b in zip(self.cross, other.cross))
        return TermBlock(self.C + other.C, self.n + other.n, self.q, self.factor, cross=cross)


@dataclass(frozen=True, eq=False)
class GroupSummaries:
    """`C[j] = [Z_j X_j y_j]' [Z_j X_j y_j]` (J, k, k) and `n[j]` rows, for q random, p fixed columns
    (the first term, see the module doc); `more_terms`: the other random-effects terms' blocks.

    Under sampling weights (`multilevel.weights`) the cross-products carry the level-1 weights,
    C[j] = [Z X y]' diag(w_i|j) [Z X y], `row_weights[j]` = sum_i w_i|j, and `unit_weights[j]`
    = w_j multiplies unit j's contribution to the pseudo-likelihood.

    Under precision weights (lme4's `weights=`, `weights.PrecisionWeights`) the cross-products
    carry the row weights too, C[j] = [Z X y]' diag(w) [Z X y], but N stays the number of rows
    (`row_weights` and `unit_weights` are None) and `ldw` = sum_i log w_i (lme4's ldW) is
    subtracted from the deviance (`objective`).
    """

    C: np.ndarray
    n: np.ndarray
    q: int
    p: int
    unit_weights: np.ndarray | None = None
    row_weights: np.ndarray | None = None
    total: np.ndarray | None = None  # sum_j C[j], when the one pass made it (saves a pass over C)
    ldw: float = 0.0  # lme4's ldW = sum_i log w_i of precision weights (0 without)
    precision: bool = False  # C carries precision weights
    factor: str | None = None  # the first term's grouping factor
    more_terms: tuple[TermBlock, ...] = ()  # terms 2..T (the module doc), by levels, most first

    def __post_init__(self) -> None:
        for t, term in enumerate(self.more_terms, start=1):
            if term.p != self.p or len(term.cross) != t:
                raise ValueError(f"Term {t + 1} has p = {term.p} and {len(term.cross)} cross blocks; the model has p = {self.p} and it needs {t}.")
            for s, block in enumerate(term.cross):
                earlier = self.terms[s]
                if block.term != s or block.shape != (term.J, earlier.J) or block.blocks.shape[1:] != (term.q, earlier.q):
                    raise ValueError(f"The cross block of term {t + 1} with term {s + 1} does not match their levels and columns.")

    @classmethod
    def of_terms(
        cls, terms: tuple[TermBlock, ...], total: np.ndarray | None = None, ldw: float = 0.0, precision: bool = False
    ) -> GroupSummaries:
        """The summaries of `terms` (the first term's arrays are held as they are, not copied)."""
        first = terms[0]
        if first.cross:
            raise ValueError("The first term has no earlier term to cross with.")
        return cls(first.C, first.n, first.q, first.p, first.unit_weights, first.row_weights, total, ldw, precision,
                   first.factor, tuple(terms[1:]))

    @cached_property
    def terms(self) -> tuple[TermBlock, ...]:
        """The random-effects terms, each with its blocks; `terms[0]` views this object's own arrays."""
        first = TermBlock(self.C, self.n, self.q, self.factor, self.unit_weights, self.row_weights)
        return (first, *self.more_terms)

    @property
    def weighted(self) -> bool:
        return self.unit_weights is not None or self.row_weights is not None

    @cached_property
    def w2(self) -> np.ndarray:
        """The level-2 weight of each unit (1 when unweighted)."""
        w = np.ones(self.C.shape[0]) if self.unit_weights is None else self.unit_weights
        return np.ascontiguousarray(w, dtype=float)

    @cached_property
    def C_contiguous(self) -> np.ndarray:
        """C as a C-ordered float array (what the compiled loops of `kernels` take)."""
        return np.ascontiguousarray(self.C, dtype=float)

    @cached_property
    def compact(self) -> np.ndarray:
        """[Z'Z | Z'X | Z'y] per unit, (J, q, q+p+1) contiguous: the only per-unit numbers an
        evaluation of the deviance reads (`objective.deviance_and_gradient`); a quarter of C."""
        return np.ascontiguousarray(self.C[:, : self.q, :], dtype=float)

    @cached_property
    def _total(self) -> np.ndarray:
        """sum_j w_j C[j] (the level-2-weighted total)."""
        if self.total is not None and self.unit_weights is None:
            return self.total
        return np.tensordot(self.w2, self.C, axes=1)

    @property
    def XtX_total(self) -> np.ndarray:
        """sum_j w_j X_j'X_j (the level-2-weighted total)."""
        q, p = self.q, self.p
        return np.ascontiguousarray(self._total[q : q + p, q : q + p])

    @property
    def Xty_total(self) -> np.ndarray:
        q, p = self.q, self.p
        return np.ascontiguousarray(self._total[q : q + p, -1])

    @property
    def yty_total(self) -> float:
        return float(self._total[-1, -1])

    @cached_property
    def total_weight(self) -> float:
        """N in the likelihood: sum_j w_j sum_i w_i|j (the number of rows when unweighted)."""
        rows = self.n if self.row_weights is None else self.row_weights
        return float(np.sum(self.w2 * rows))

    # Views of the first term's blocks, named as in lme4's and HLM's algebra.
    @property
    def ZtZ(self) -> np.ndarray:
        return self.terms[0].ZtZ

    @property
    def ZtX(self) -> np.ndarray:
        return self.terms[0].ZtX

    @property
    def Zty(self) -> np.ndarray:
        return self.terms[0].Zty

    @property
    def XtX_j(self) -> np.ndarray:
        return self.terms[0].XtX_j

    @property
    def Xty_j(self) -> np.ndarray:
        return self.terms[0].Xty_j

    @property
    def yty_j(self) -> np.ndarray:
        return self.terms[0].yty_j

    @property
    def n_groups(self) -> int:
        return int(self.C.shape[0])

    @cached_property
    def n_obs(self) -> int:
        return int(self.n.sum())

    def __add__(self, other: GroupSummaries) -> GroupSummaries:
        """The summaries of two chunks' rows, aligned on the same levels (unweighted, or under
        precision weights): every block adds, and lme4's ldW."""
        if (self.q, self.p, self.C.shape, len(self.terms)) != (other.q, other.p, other.C.shape, len(other.terms)):
            raise ValueError("Summaries of different models or groupings cannot be added.")
        if self.weighted or other.weighted:
            raise ValueError("Weighted summaries are built in one pass (the weights are scaled per unit); they cannot be added.")
        if self.precision != other.precision:
            raise ValueError("Summaries with and without precision weights cannot be added.")
        terms = tuple(a + b for a, b in zip(self.terms, other.terms))
        return GroupSummaries.of_terms(terms, ldw=self.ldw + other.ldw, precision=self.precision)

    @classmethod
    def one_pass(
        cls,
        recipe: Recipe,
        q: int,
        p: int,
        codes: np.ndarray,
        n_groups: int,
        row_weights: np.ndarray | None = None,
        unit_weights: np.ndarray | None = None,
        precision_weights: np.ndarray | None = None,
    ) -> GroupSummaries:
        """The per-unit cross-products of the columns `recipe` makes, in one pass over the rows
        (`rowpass.cross_products`). Sampling weights: `row_weights` (level 1) and `unit_weights`
        (level 2); precision weights (lme4's weights=): `precision_weights`, which weight the same
        pass but leave N the number of rows and give the deviance its -sum log w (`ldw`)."""
        if precision_weights is not None:
            if row_weights is not None or unit_weights is not None:
                raise ValueError("Sampling and precision weights cannot be combined.")
            pw = np.ascontiguousarray(precision_weights, dtype=float)
            C, total, n = cross_products(*recipe, codes, n_groups, pw)
            return cls(C, n, q, p, total=total, ldw=float(np.log(pw).sum()), precision=True)
        rw = None if row_weights is None else np.ascontiguousarray(row_weights, dtype=float)
        C, total, n = cross_products(*recipe, codes, n_groups, rw)
        sums = None if row_weights is None else np.bincount(codes, weights=row_weights, minlength=n_groups)
        return cls(C, n, q, p, unit_weights, sums, total=total)

    @classmethod
    def of_factors(
        cls,
        Zs: tuple[np.ndarray, ...],
        X: np.ndarray,
        y: np.ndarray,
        codes: tuple[np.ndarray, ...],
        n_levels: tuple[int, ...],
        names: tuple[str, ...],
    ) -> tuple[GroupSummaries, tuple[int, ...]]:
        """The blocked summaries of several grouping factors (the module doc) from the rows: factor f
        has the random-effect columns `Zs[f]` (N, q_f) and the level `codes[f]` (N,) of each row in
        0..n_levels[f]-1 (every level used). Returns (summaries, order): the terms sorted by their
        number of levels, most first (lme4's and MixedModels.jl's order; stable for ties), `order[t]`
        the factor of term t. Each term's diagonal blocks are the one pass of its own factor; the
        blocks below the diagonal are the cross-tabulations of each pair of factors' levels, the
        sums of z_t z_s' over the rows of each pair of levels that share rows."""
        F = len(Zs)
        order = tuple(sorted(range(F), key=lambda f: -n_levels[f]))
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        terms: list[TermBlock] = []
        for t, f in enumerate(order):
            Z = np.asarray(Zs[f], dtype=float)
            s = cls.from_arrays(Z, X, y, codes[f], n_levels[f])
            cross = []
            for e in range(t):
                g = order[e]
                Ze = np.asarray(Zs[g], dtype=float)
                key = codes[f].astype(np.int64) * n_levels[g] + codes[g]
                pairs, where = np.unique(key, return_inverse=True)
                where = where.ravel()
                blocks = np.empty((pairs.size, Z.shape[1], Ze.shape[1]))
                for a in range(Z.shape[1]):
                    for b in range(Ze.shape[1]):
                        blocks[:, a, b] = np.bincount(where, weights=Z[:, a] * Ze[:, b], minlength=pairs.size)
                cross.append(CrossBlock(e, (pairs // n_levels[g]).astype(np.intp), (pairs % n_levels[g]).astype(np.intp),
                                        blocks, (n_levels[f], n_levels[g])))
            terms.append(TermBlock(s.C, s.n, Z.shape[1], names[f], cross=tuple(cross)))
        W = np.column_stack([X, y])
        total = np.zeros((terms[0].C.shape[1],) * 2)
        q0 = terms[0].q
        total[q0:, q0:] = W.T @ W
        total[:q0, :q0] = terms[0].C[:, :q0, :q0].sum(axis=0)
        total[:q0, q0:] = terms[0].C[:, :q0, q0:].sum(axis=0)
        total[q0:, :q0] = total[:q0, q0:].T
        return cls.of_terms(tuple(terms), total=total), order

    @classmethod
    def from_arrays(
        cls,
        Z: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        codes: np.ndarray,
        n_groups: int,
        row_weights: np.ndarray | None = None,
        unit_weights: np.ndarray | None = None,
    ) -> GroupSummaries:
        """The one pass (`one_pass`) over materialised matrices: each column of [Z X y] its own
        factor, raw (what `columns.Columns.of_matrices(Z, X, y).recipe()` makes)."""
        Z, X = np.asarray(Z, float), np.asarray(X, float)
        columns = [Z[:, c] for c in range(Z.shape[1])] + [X[:, c] for c in range(X.shape[1])] + [np.asarray(y, float)]
        bases = []
        for column in columns:
            base = np.ascontiguousarray(column, dtype=float).view()
            base.flags.writeable = False  # the one array type the compiled pass is specialised for
            bases.append(base)
        k = len(bases)
        affine = np.zeros((k, 3))
        affine[:, 1] = 1.0  # shift 0, scale 1, factor centred at 0: the column as it is
        index = np.arange(k, dtype=np.int64)
        recipe = (tuple(bases), index[:, None].copy(), affine, index)
        return cls.one_pass(recipe, Z.shape[1], X.shape[1], np.asarray(codes, dtype=np.intp), n_groups, row_weights, unit_weights)
