"""The one pass over rows not grouped by unit (shuffled files): `rowpass.accumulate` visits them
in unit order (a counting sort), and gives the per-unit sums of the rows in their given order."""
from __future__ import annotations

import numpy as np
import pytest

from multilevel.design.columns import Columns
from multilevel.numerics.rowpass import SORT_RUN, accumulate_into, cross_products


def _columns(n: int, rng: np.random.Generator) -> Columns:
    x, w, y = rng.normal(size=n), rng.normal(size=n), rng.normal(10.0, 1.0, size=n)
    # intercept, x (random part); intercept, x, w, x*w (fixed part); y
    factors = ((), (x,), (), (x,), (w,), (x, w), (y,))
    return Columns(factors, 2, 4, n).with_affine(((0.0, 1.0),) * 6 + ((10.0, 0.5),), ((),) + ((0.1,),) * 2 + ((0.1,), (0.0,), (0.1, 0.0), (0.0,)))


def _reference(cols: Columns, codes: np.ndarray, J: int, w: np.ndarray | None) -> np.ndarray:
    """sum_i w_i W_i W_i' per unit from the whole matrix (numpy), in the internal coordinates."""
    bases, recipe, affine, cmap = cols.recipe()
    V = np.ones((cols.n, recipe.shape[0]))
    for d in range(recipe.shape[0]):
        for f in range(recipe.shape[1]):
            if recipe[d, f] >= 0:
                V[:, d] *= bases[recipe[d, f]] - affine[d, 2 + f]
        V[:, d] = (V[:, d] - affine[d, 0]) * affine[d, 1]
    W = V[:, cmap]
    wt = np.ones(cols.n) if w is None else w
    C = np.zeros((J, W.shape[1], W.shape[1]))
    np.add.at(C, codes, wt[:, None, None] * W[:, :, None] * W[:, None, :])
    return C


@pytest.mark.parametrize("run", [1, 2, SORT_RUN + 4])  # shuffled, short runs (sorted), long runs (as given)
@pytest.mark.parametrize("weighted", [False, True])
def test_rows_in_any_order_give_the_per_unit_sums(run, weighted):
    rng = np.random.default_rng(run)
    J, n = 37, 5000
    codes = np.repeat(rng.integers(0, J, size=n // run + 1), run)[:n].astype(np.intp)
    codes[:J] = np.arange(J)  # every unit has rows
    cols = _columns(n, rng)
    w = rng.uniform(0.5, 2.0, n) if weighted else None
    C, total, counts = cross_products(*cols.recipe(), codes, J, w)
    want = _reference(cols, codes, J, w)
    np.testing.assert_allclose(C, want, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(total, want.sum(axis=0), rtol=1e-12, atol=1e-8)
    np.testing.assert_array_equal(counts, np.bincount(codes, minlength=J))


def test_shuffled_rows_give_the_sums_of_the_grouped_rows():
    """The rows of each unit keep their order (a stable sort): the sums of a shuffled table and of
    the same table grouped by unit (its rows in the same order within each unit) are equal."""
    rng = np.random.default_rng(5)
    J, n = 300, 20000
    codes = rng.integers(0, J, size=n).astype(np.intp)
    cols = _columns(n, rng)
    C, total, counts = cross_products(*cols.recipe(), codes, J)
    order = np.argsort(codes, kind="stable")
    grouped = Columns(tuple(tuple(f[order] for f in fs) for fs in cols.factors), cols.q, cols.p, n, cols.affine, cols.centres)
    C2, total2, counts2 = cross_products(*grouped.recipe(), codes[order], J)
    np.testing.assert_array_equal(C, C2)
    np.testing.assert_allclose(total, total2, rtol=1e-13)
    np.testing.assert_array_equal(counts, counts2)


def test_chunks_of_shuffled_rows_add_up():
    rng = np.random.default_rng(6)
    J, n = 50, 6000
    codes = rng.integers(0, J, size=n).astype(np.intp)
    cols = _columns(n, rng)
    bases, recipe, affine, cmap = cols.recipe()
    k = cmap.shape[0]
    C, total, counts = np.zeros((J, k, k)), np.zeros((k, k)), np.zeros(J)
    for part in (slice(0, 2500), slice(2500, n)):
        accumulate_into(tuple(np.ascontiguousarray(b[part]) for b in bases), recipe, affine, cmap, codes[part], C, None, total, counts)
    whole, _, whole_counts = cross_products(bases, recipe, affine, cmap, codes, J)
    # accumulate_into fills the upper triangles only (cross_products mirrors them)
    np.testing.assert_allclose(np.triu(C), np.triu(whole), rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(counts, whole_counts)
