"""Summaries by random-effects term (`multilevel.design.summaries`): every block against the dense
product [Z X y]'[Z X y], for one factor (the one pass) and for two (built by hand, numpy only)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.linalg import block_diag

from multilevel.design.summaries import CrossBlock, GroupSummaries, TermBlock


def _rows(seed: int, N: int, J1: int, J2: int, nested: bool):
    """Rows of a model with two grouping factors: g1 (J1 levels, z1 = (1, x)), g2 (J2 levels,
    z2 = (1,)), X = (1, x, w); g1 nested in g2 (each level of g1 in one level of g2) or crossed."""
    rng = np.random.default_rng(seed)
    g1 = np.concatenate([np.arange(J1), rng.integers(0, J1, N - J1)])  # every level has a row
    g2 = g1 % J2 if nested else np.concatenate([np.arange(J2), rng.integers(0, J2, N - J2)])
    x, w = rng.normal(3.0, 2.0, N), rng.normal(size=N)
    X = np.column_stack([np.ones(N), x, w])
    y = X @ [1.0, 0.5, -0.3] + rng.normal(size=N)
    return g1, g2, X[:, :2], X[:, :1], X, y


def _dense_Z(codes: np.ndarray, z: np.ndarray, J: int) -> np.ndarray:
    """Z of one term, N by J q, the q columns of each level side by side."""
    N, q = z.shape
    Z = np.zeros((N, J, q))
    Z[np.arange(N), codes, :] = z
    return Z.reshape(N, J * q)


def _by_hand(g1, g2, z1, z2, X, y, J1: int, J2: int) -> GroupSummaries:
    """Each block by its definition, level by level (no compiled pass)."""
    def term(codes, z, J, cross=()):
        W = np.column_stack([z, X, y])
        C = np.stack([W[codes == j].T @ W[codes == j] for j in range(J)])
        return TermBlock(C, np.bincount(codes, minlength=J).astype(float), z.shape[1], cross=cross)

    pairs = sorted(set(zip(g2.tolist(), g1.tolist())))
    blocks = np.stack([z2[(g2 == i) & (g1 == j)].T @ z1[(g2 == i) & (g1 == j)] for i, j in pairs])
    rows, cols = (np.array(v, dtype=np.intp) for v in zip(*pairs))
    cross = CrossBlock(0, rows, cols, blocks, (J2, J1))
    first = term(g1, z1, J1)
    W1 = np.column_stack([z1, X, y])
    return GroupSummaries.of_terms((first, term(g2, z2, J2, (cross,))), total=W1.T @ W1)


@pytest.mark.parametrize("nested", [False, True])
def test_two_terms_hold_every_block_of_the_dense_product(nested):
    J1, J2 = 12, 4
    g1, g2, z1, z2, X, y = _rows(3, 90, J1, J2, nested)
    s = _by_hand(g1, g2, z1, z2, X, y, J1, J2)
    Z1, Z2 = _dense_Z(g1, z1, J1), _dense_Z(g2, z2, J2)
    W = np.column_stack([Z1, Z2, X, y])
    A = W.T @ W
    a, b, c = Z1.shape[1], Z1.shape[1] + Z2.shape[1], W.shape[1] - 1
    t1, t2 = s.terms
    assert (t1.J, t1.q, t2.J, t2.q, s.p) == (J1, 2, J2, 1, 3)
    close = dict(rtol=1e-12, atol=1e-10)
    # the diagonal blocks: block diagonal, one q_t x q_t block per level
    np.testing.assert_allclose(block_diag(*t1.ZtZ), A[:a, :a], **close)
    np.testing.assert_allclose(block_diag(*t2.ZtZ), A[a:b, a:b], **close)
    # below the diagonal: the cross-tabulation of the levels; only pairs that share rows are held
    (cross,) = t2.cross
    np.testing.assert_allclose(cross.dense(), A[a:b, :a], **close)
    assert cross.rows.size == len(set(zip(g2.tolist(), g1.tolist())))
    if nested:
        assert cross.rows.size == J1  # one pair per level of the inner factor: no fill-in
    # Z_t'X and Z_t'y per level, stacked level by level as Z_t's columns
    np.testing.assert_allclose(t1.ZtX.reshape(-1, 3), A[:a, b:c], **close)
    np.testing.assert_allclose(t2.ZtX.reshape(-1, 3), A[a:b, b:c], **close)
    np.testing.assert_allclose(t1.Zty.ravel(), A[:a, c], **close)
    np.testing.assert_allclose(t2.Zty.ravel(), A[a:b, c], **close)
    # the totals, and each term's per-level X'X, X'y, y'y adding up to them
    np.testing.assert_allclose(s.XtX_total, A[b:c, b:c], **close)
    np.testing.assert_allclose(s.Xty_total, A[b:c, c], **close)
    assert s.yty_total == pytest.approx(A[c, c], rel=1e-12)
    for t in s.terms:
        np.testing.assert_allclose(t.XtX_j.sum(axis=0), A[b:c, b:c], **close)
        np.testing.assert_allclose(t.Xty_j.sum(axis=0), A[b:c, c], **close)
        assert t.yty_j.sum() == pytest.approx(A[c, c], rel=1e-12)
        assert t.n.sum() == len(y)
    # the one-factor accessors are the first term's
    assert s.C is t1.C and s.n is t1.n and (s.q, s.n_groups, s.n_obs) == (2, J1, len(y))


@pytest.mark.parametrize("nested", [False, True])
def test_two_term_summaries_of_two_chunks_add_up(nested):
    J1, J2 = 10, 3
    g1, g2, z1, z2, X, y = _rows(5, 70, J1, J2, nested)
    whole = _by_hand(g1, g2, z1, z2, X, y, J1, J2)
    # the chunks: the second has no row in some pairs of levels, the first in others
    parts = [_by_hand(g1[sl], g2[sl], z1[sl], z2[sl], X[sl], y[sl], J1, J2) for sl in (slice(0, 25), slice(25, None))]
    added = parts[0] + parts[1]
    for a, b in zip(added.terms, whole.terms):
        np.testing.assert_allclose(a.C, b.C, rtol=1e-12, atol=1e-10)
        np.testing.assert_array_equal(a.n, b.n)
    np.testing.assert_allclose(added.terms[1].cross[0].dense(), whole.terms[1].cross[0].dense(), rtol=1e-12, atol=1e-10)
    assert added.terms[1].cross[0].rows.size == whole.terms[1].cross[0].rows.size
    np.testing.assert_allclose(added.XtX_total, whole.XtX_total, rtol=1e-12)


def test_blocks_that_do_not_fit_the_terms_are_refused():
    J1, J2 = 6, 2
    g1, g2, z1, z2, X, y = _rows(1, 30, J1, J2, False)
    s = _by_hand(g1, g2, z1, z2, X, y, J1, J2)
    t1, t2 = s.terms
    with pytest.raises(ValueError, match="p = 2"):  # term 2 with one fixed column fewer
        GroupSummaries.of_terms((t1, dataclasses.replace(t2, C=t2.C[:, :-1, :-1])))
    with pytest.raises(ValueError, match="needs 1"):  # no block with the first term
        GroupSummaries.of_terms((t1, dataclasses.replace(t2, cross=())))
    cross = t2.cross[0]
    with pytest.raises(ValueError, match="does not match"):  # levels of the wrong term
        GroupSummaries.of_terms((t1, dataclasses.replace(t2, cross=(dataclasses.replace(cross, shape=(J2, J1 + 1)),))))
    with pytest.raises(ValueError, match="no earlier term"):
        GroupSummaries.of_terms((dataclasses.replace(t1, cross=(cross,)),))


def _numpy_summaries(Z, X, y, codes, J, w=None):
    """C[j] = sum_i w_i W_i W_i' by one weighted bincount per pair of columns (a numpy reference)."""
    W = np.column_stack([Z, X, y])
    k = W.shape[1]
    w = np.ones(len(y)) if w is None else w
    C = np.empty((J, k, k))
    for a in range(k):
        for b in range(k):
            C[:, a, b] = np.bincount(codes, weights=w * W[:, a] * W[:, b], minlength=J)
    return C


@pytest.mark.parametrize("weighted", [False, True])
def test_one_factor_summaries_equal_the_dense_product_per_unit(weighted):
    J = 7
    g1, _, Z, _, X, y = _rows(2, 60, J, 2, False)
    rng = np.random.default_rng(0)
    rw = rng.uniform(0.5, 2.0, len(y)) if weighted else None
    uw = rng.uniform(0.5, 2.0, J) if weighted else None
    s = GroupSummaries.from_arrays(Z, X, y, g1, J, rw, uw)
    np.testing.assert_allclose(s.C, _numpy_summaries(Z, X, y, g1, J, rw), rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(s.n, np.bincount(g1, minlength=J))
    if weighted:
        np.testing.assert_allclose(s.row_weights, np.bincount(g1, weights=rw, minlength=J), rtol=1e-13)
        assert s.unit_weights is uw
        np.testing.assert_allclose(s.XtX_total, np.einsum("j,jab->ab", uw, s.XtX_j), rtol=1e-12)
    else:
        np.testing.assert_allclose(s.XtX_total, X.T @ X, rtol=1e-12)
    # the first term is these arrays themselves: views, no copies
    (t,) = s.terms
    assert t.C is s.C and t.n is s.n and t.unit_weights is s.unit_weights and t.row_weights is s.row_weights
    for name in ("ZtZ", "ZtX", "Zty", "XtX_j", "Xty_j", "yty_j"):
        assert np.shares_memory(getattr(s, name), s.C), name
    np.testing.assert_array_equal(s.ZtX, s.C[:, :2, 2:5])
    # the same units with other cross-products (the profile of a fixed effect, `intervals`)
    fewer = dataclasses.replace(s, C=s.C[:, :-1, :-1], p=2, total=None)
    assert fewer.terms[0].C is fewer.C and fewer.unit_weights is s.unit_weights
    np.testing.assert_allclose(fewer.XtX_total, s.XtX_total[:2, :2], rtol=1e-13)


def test_summaries_add_only_when_they_can():
    J = 5
    g1, _, Z, _, X, y = _rows(4, 40, J, 2, False)
    a = GroupSummaries.from_arrays(Z, X, y, g1, J)
    assert np.array_equal((a + a).C, 2 * a.C)
    with pytest.raises(ValueError, match="different models or groupings"):
        a + GroupSummaries.from_arrays(Z, X[:, :2], y, g1, J)
    with pytest.raises(ValueError, match="different models or groupings"):
        a + GroupSummaries.from_arrays(Z, X, y, g1 % 3, 3)
    weighted = GroupSummaries.from_arrays(Z, X, y, g1, J, np.ones(len(y)))
    with pytest.raises(ValueError, match="Weighted summaries"):
        a + weighted
    with pytest.raises(ValueError, match="precision weights"):
        a + dataclasses.replace(a, precision=True)
