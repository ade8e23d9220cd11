"""The loops of `numerics.blocked`: compiled and numpy versions give the same numbers."""
from __future__ import annotations

import numpy as np

from multilevel.numerics import blocked


def _entries(seed: int):
    rng = np.random.default_rng(seed)
    J, nR, q, k = 25, 40, 2, 3
    per = rng.integers(1, 6, J)
    start = np.concatenate([[0], np.cumsum(per)]).astype(np.intp)
    rest = np.concatenate([np.sort(rng.choice(nR, size=n, replace=False)) for n in per]).astype(np.intp)
    Lent = rng.normal(size=(start[-1], q))
    LX = rng.normal(size=(J, k, q))
    return nR, k, start, rest, Lent, LX


def test_rest_update_compiled_equals_numpy():
    nR, k, start, rest, Lent, LX = _entries(1)
    base = np.random.default_rng(2).normal(size=(nR + k, nR + k))
    a, b = base.copy(), base.copy()
    blocked.rest_update_numpy(a, nR, start, rest, Lent, LX)
    blocked.LOOPS["rest_update"](b, nR, start, rest, Lent, LX)
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    assert not np.allclose(a, base)  # something was updated


def test_gather_rest_compiled_equals_numpy():
    nR, _k, start, rest, Lent, _LX = _entries(3)
    S = np.random.default_rng(4).normal(size=(nR, nR))
    a, b = np.zeros_like(Lent), np.zeros_like(Lent)
    blocked.gather_rest_numpy(S, start, rest, Lent, a)
    blocked.LOOPS["gather_rest"](S, start, rest, Lent, b)
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    assert np.abs(a).sum() > 0
