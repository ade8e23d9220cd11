"""Per-group cross-product summaries: the only thing the likelihood needs from the rows.

For one grouping factor with q random effects and p fixed effects, stack `W = [Z X y]` (k = q+p+1
columns) and keep, for every group j, `C_j = W_j' W_j` (a k-by-k block) and the group size n_j.
One pass over the rows builds them (O(N k^2)); everything after costs O(J k^3), whatever N is.
Summaries of two chunks aligned on the same group codes add up to those of their union (`+`),
which is what out-of-core and distributed fitting build on.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True, eq=False)
class GroupSummaries:
    """`C[j] = [Z_j X_j y_j]' [Z_j X_j y_j]` (J, k, k) and `n[j]` rows, for q random, p fixed columns.

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

    # Views of the blocks, named as in lme4's and HLM's algebra.
    @property
    def ZtZ(self) -> np.ndarray:
        return self.C[:, : self.q, : self.q]

    @property
    def ZtX(self) -> np.ndarray:
        return self.C[:, : self.q, self.q : self.q + self.p]

    @property
    def Zty(self) -> np.ndarray:
        return self.C[:, : self.q, -1]

    @property
    def XtX_j(self) -> np.ndarray:
        return self.C[:, self.q : self.q + self.p, self.q : self.q + self.p]

    @property
    def Xty_j(self) -> np.ndarray:
        return self.C[:, self.q : self.q + self.p, -1]

    @property
    def yty_j(self) -> np.ndarray:
        return self.C[:, -1, -1]

    @property
    def n_groups(self) -> int:
        return int(self.C.shape[0])

    @cached_property
    def n_obs(self) -> int:
        return int(self.n.sum())

    def __add__(self, other: GroupSummaries) -> GroupSummaries:
        if (self.q, self.p, self.C.shape) != (other.q, other.p, other.C.shape):
            raise ValueError("Summaries of different models or groupings cannot be added.")
        if self.weighted or other.weighted:
            raise ValueError("Weighted summaries are built in one pass (the weights are scaled per unit); they cannot be added.")
        if self.precision != other.precision:
            raise ValueError("Summaries with and without precision weights cannot be added.")
        return GroupSummaries(self.C + other.C, self.n + other.n, self.q, self.p, ldw=self.ldw + other.ldw, precision=self.precision)

    def with_C(self, C: np.ndarray, p: int | None = None) -> GroupSummaries:
        """The same units (sizes and weights) with other cross-products."""
        return GroupSummaries(
            C, self.n, self.q, self.p if p is None else p, self.unit_weights, self.row_weights, ldw=self.ldw, precision=self.precision
        )

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
        """One pass over the rows (`columns.Columns.summaries`), a block of rows at a time."""
        from multilevel.design.columns import Columns

        cols = Columns.of_matrices(np.asarray(Z, float), np.asarray(X, float), np.asarray(y, float))
        return cols.summaries(np.asarray(codes, dtype=np.intp), n_groups, row_weights, unit_weights)
