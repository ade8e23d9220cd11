"""The loops of the blocked Cholesky factor (`engine.blocked`) over a nested factor's links to the
dense rest (the crossed factors): per level, a few entries of a dense matrix of thousands of rows
(InstEval: 2972 students, each linked to ~25 of 1156 lecturers and departments).

Why compiled: each level touches |links|^2 elements of the dense matrix (1.9 million for
InstEval); numpy needs one fancy-indexing call per level (0.19 s an evaluation for InstEval),
the loop ~2 ms. Entries are sorted by level; `start[j]:start[j+1]` are level j's.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from multilevel.numerics.compile import Loops, run


def rest_update(dense, nR, start, rest, Lent, LX):
    """The Schur update of the rest and of its rows of [X y] by the levels of a chain factor:
    dense[rho_a, rho_b] -= L_a . L_b for the entries a, b of one level, and dense[nR + x, rho_a]
    (and its mirror) -= LX[j, x] . L_a."""
    J = start.shape[0] - 1
    q = Lent.shape[1]
    k = LX.shape[1]
    for j in range(J):
        a0 = start[j]
        a1 = start[j + 1]
        for a in range(a0, a1):
            ra = rest[a]
            for b in range(a0, a1):
                s = 0.0
                for c in range(q):
                    s += Lent[a, c] * Lent[b, c]
                dense[ra, rest[b]] -= s
            for x in range(k):
                s = 0.0
                for c in range(q):
                    s += LX[j, x, c] * Lent[a, c]
                dense[nR + x, ra] -= s
                dense[ra, nR + x] -= s


def gather_rest(S, start, rest, Lent, out):
    """out[a] = sum over the entries b of a's level of S[rho_a, rho_b] L_b (Takahashi's product of
    the rest's inverse with a level's links)."""
    J = start.shape[0] - 1
    q = Lent.shape[1]
    for j in range(J):
        a0 = start[j]
        a1 = start[j + 1]
        for a in range(a0, a1):
            ra = rest[a]
            for c in range(q):
                out[a, c] = 0.0
            for b in range(a0, a1):
                s = S[ra, rest[b]]
                for c in range(q):
                    out[a, c] += s * Lent[b, c]


def rest_update_numpy(dense, nR, start, rest, Lent, LX):
    """`rest_update` in numpy: one fancy-indexed update per level."""
    for j in range(start.shape[0] - 1):
        a, b = start[j], start[j + 1]
        if a == b:
            continue
        idx = rest[a:b]
        Lj = Lent[a:b]
        dense[np.ix_(idx, idx)] -= Lj @ Lj.T
        upd = LX[j] @ Lj.T
        dense[nR:, idx] -= upd
        dense[idx, nR:] -= upd.T


def gather_rest_numpy(S, start, rest, Lent, out):
    """`gather_rest` in numpy."""
    for j in range(start.shape[0] - 1):
        a, b = start[j], start[j + 1]
        if a == b:
            continue
        idx = rest[a:b]
        out[a:b] = S[np.ix_(idx, idx)] @ Lent[a:b]


LOOPS = Loops(globals(), ("rest_update", "gather_rest"))

#: estimated seconds of the numpy versions (`compile.run`'s rule): per level, and per pair of links
LEVEL_SECONDS = 30e-6
PAIR_SECONDS = 2e-9


def _seconds(start: np.ndarray) -> float:
    sizes = np.diff(start)
    return LEVEL_SECONDS * float(np.count_nonzero(sizes)) + PAIR_SECONDS * float(sizes @ sizes)


def call_rest_update(dense: np.ndarray, nR: int, start: np.ndarray, rest: np.ndarray, Lent: np.ndarray, LX: np.ndarray) -> None:
    """`rest_update`, compiled or in numpy (`compile.run`)."""
    args: tuple[Any, ...] = (dense, int(nR), start, rest, np.ascontiguousarray(Lent), np.ascontiguousarray(LX))
    run(LOOPS, "rest_update", args, rest_update_numpy, _seconds(start))


def call_gather_rest(S: np.ndarray, start: np.ndarray, rest: np.ndarray, Lent: np.ndarray) -> np.ndarray:
    """`gather_rest`, compiled or in numpy (`compile.run`): the (n_entries, q) products."""
    out = np.zeros_like(Lent)
    run(LOOPS, "gather_rest", (np.ascontiguousarray(S), start, rest, np.ascontiguousarray(Lent), out), gather_rest_numpy,
        _seconds(start))
    return out
