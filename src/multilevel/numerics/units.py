"""The per-unit algebra of the objective, compiled: one loop over the units (module doc of
`engine.objective` for the formulas).

Per unit j, from its block K_j = [Z'Z | Z'X | Z'y] of the summaries: the Cholesky factor of
M_j = Lambda' Z_j'Z_j Lambda + I and the solves of the penalised least squares (`factor_unit`),
summed over units (`solve_units`, which keeps the per-unit factors; `deviance_terms`, which keeps
nothing per unit and also makes the sums of the gradient), then the deviance and its gradient
(`finish_deviance`; the one deviance formula is `deviance`). Compiled on first use (`compile.Loops`),
or batched over the units in numpy (`*_numpy`, `NUMPY`) while the compiled loops are not in the
cache and the units are few enough (`compile.run`: the choice at each call).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from multilevel.numerics.compile import Loops, ready, run
from multilevel.numerics.compile import compile_later as compile_later  # the engine calls it at a fit's end


def factor_unit(Kj, q, p, lam, L, G, R, r, T):
    """One unit's factors from its first q rows Kj = [Z'Z | Z'X | Z'y] (module doc of
    `objective`): M = Lambda' Z'Z Lambda + I = L L', G = L^-1 Lambda', R = G Z'X, r = G Z'y
    (written into L, G, R, r; T is scratch). Returns (log|L|^2, |r|^2), or (nan, nan) when M is
    not positive definite. Shared by `solve_units` and `deviance_terms` (compiled into both)."""
    y = q + p
    for a in range(q):
        for b in range(q):
            s = 0.0
            for c in range(q):
                s += lam[c, a] * Kj[c, b]
            T[a, b] = s
    prod = 1.0
    for a in range(q):
        for b in range(a + 1):
            s = 1.0 if a == b else 0.0
            for c in range(q):
                s += T[a, c] * lam[c, b]
            for c in range(b):
                s -= L[a, c] * L[b, c]
            if a == b:
                if not s > 0.0:
                    return np.nan, np.nan
                L[a, a] = np.sqrt(s)
                prod *= s
            else:
                L[a, b] = s / L[b, b]
        for b in range(a + 1, q):
            L[a, b] = 0.0
    for b in range(q):
        for a in range(q):
            s = lam[b, a]
            for c in range(a):
                s -= L[a, c] * G[c, b]
            G[a, b] = s / L[a, a]
    ss = 0.0
    for a in range(q):
        for b in range(p):
            s = 0.0
            for c in range(q):
                s += G[a, c] * Kj[c, q + b]
            R[a, b] = s
        s = 0.0
        for c in range(q):
            s += G[a, c] * Kj[c, y]
        r[a] = s
        ss += s * s
    return np.log(prod), ss


def add_cross(R, r, q, p, wj, FtF, Ftr):
    """FtF += wj R'R (upper triangle), Ftr += wj R'r."""
    for a in range(p):
        for c in range(q):
            f = wj * R[c, a]
            Ftr[a] += f * r[c]
            for b in range(a, p):
                FtF[a, b] += f * R[c, b]


def solve_units(C, q, p, lam, w, L, LtLam, RZX, rZy, FtF, Ftr):
    """Per unit j (`factor_unit`): L_j, LtLam_j = L_j^-1 Lambda', RZX_j, rZy_j, kept; and the
    weighted sums FtF = sum_j w_j RZX_j' RZX_j, Ftr = sum_j w_j RZX_j' rZy_j. Returns
    (sum_j w_j log|L_j|^2, sum_j w_j |rZy_j|^2), or (nan, nan) when an M_j is not positive definite."""
    J = C.shape[0]
    T = np.empty((q, q))
    logdet = 0.0
    ss = 0.0
    FtF[:] = 0.0
    Ftr[:] = 0.0
    for j in range(J):
        ld, s2 = factor_unit(C[j], q, p, lam, L[j], LtLam[j], RZX[j], rZy[j], T)
        if not ld == ld:
            return np.nan, np.nan
        wj = w[j]
        logdet += wj * ld
        ss += wj * s2
        add_cross(RZX[j], rZy[j], q, p, wj, FtF, Ftr)
    for a in range(p):
        for b in range(a):
            FtF[a, b] = FtF[b, a]
    return logdet, ss


def deviance_terms(K, q, p, lam, w, FtF, Ftr, ZWZ, S):
    """One pass over the units for the deviance and its gradient together, writing nothing
    per unit. K[j] = [Z'Z | Z'X | Z'y] (q rows). With the per-unit quantities of `solve_units`,
    P = L^-1 Lambda' Z'Z, Z'WZ = Z'Z - P'P, Z'WX = Z'X - P' RZX, Z'Wy = Z'y - P' rZy (W_j = (I + Z_j
    Lambda Lambda' Z_j')^-1 by Woodbury), accumulate (weights w_j):
      FtF = sum RZX'RZX, Ftr = sum RZX'rZy, ZWZ = sum Z'WZ, and
      S = sum z z' (upper triangle) for z = [vec(Z'WX) (row-major), Z'Wy], length q p + q,
    from which the gradient at any beta follows without a second pass (`finish_deviance`).
    Returns (sum w log|L_j|^2, sum w |rZy_j|^2), nan if not PD."""
    J = K.shape[0]
    y = q + p
    D = q * p + q
    T = np.empty((q, q))
    Lj = np.zeros((q, q))
    Gj = np.empty((q, q))  # L^-1 Lambda'
    R = np.empty((q, p))
    r = np.empty(q)
    P = np.empty((q, q))
    z = np.empty(D)
    logdet = 0.0
    ss = 0.0
    FtF[:] = 0.0
    Ftr[:] = 0.0
    ZWZ[:] = 0.0
    S[:] = 0.0
    for j in range(J):
        wj = w[j]
        ld, s2 = factor_unit(K[j], q, p, lam, Lj, Gj, R, r, T)
        if not ld == ld:
            return np.nan, np.nan
        logdet += wj * ld
        ss += wj * s2
        for a in range(q):
            for b in range(q):
                s = 0.0
                for c in range(q):
                    s += Gj[a, c] * K[j, c, b]
                P[a, b] = s
        add_cross(R, r, q, p, wj, FtF, Ftr)
        # Z'WX = Z'X - P'R, Z'Wy = Z'y - P'r, Z'WZ = Z'Z - P'P
        for a in range(q):
            for b in range(p):
                s = K[j, a, q + b]
                for c in range(q):
                    s -= P[c, a] * R[c, b]
                z[a * p + b] = s
            s = K[j, a, y]
            for c in range(q):
                s -= P[c, a] * r[c]
            z[q * p + a] = s
            for b in range(a + 1):
                s = K[j, a, b]
                for c in range(q):
                    s -= P[c, a] * P[c, b]
                ZWZ[a, b] += wj * s
        for a in range(D):
            f = wj * z[a]
            for b in range(a, D):
                S[a, b] += f * z[b]
    for a in range(p):
        for b in range(a):
            FtF[a, b] = FtF[b, a]
    for a in range(q):
        for b in range(a + 1, q):
            ZWZ[a, b] = ZWZ[b, a]
    for a in range(D):
        for b in range(a):
            S[a, b] = S[b, a]
    return logdet, ss


def finish_deviance(q, p, logdet, ss, FtF, Ftr, ZWZ, S, XtX, Xty, yty, n, ldw, reml, G):
    """The profiled deviance (`deviance`) and G, its derivative in D = Lambda Lambda' (q x q, written
    into G), from the sums of `deviance_terms`:
      A = X'X - FtF, beta = A^-1 (X'y - Ftr), pwrss = y'y - ss - beta'(X'y - Ftr),
      G = sum_j Z'WZ - [REML] sum_j Z'WX A^-1 X'WZ - df/pwrss sum_j (Z'Wr)(Z'Wr)',  df = N - p or N
    (Z'Wr = Z'Wy - Z'WX beta; the sums from S, `deviance_terms`). Compiled, so that an evaluation on
    small data costs microseconds, not a dozen numpy calls. Returns nan when a matrix is not
    positive definite."""
    if not np.isfinite(logdet):
        return np.nan
    A = XtX - FtF
    b = Xty - Ftr
    # Cholesky of A by hand (p is small): the log-determinant and a PD check in one go
    R = np.zeros((p, p))
    logdet_A = 0.0
    for i in range(p):
        for j in range(i + 1):
            s = A[i, j]
            for c in range(j):
                s -= R[i, c] * R[j, c]
            if i == j:
                if not s > 0.0:
                    return np.nan
                R[i, i] = np.sqrt(s)
                logdet_A += np.log(s)
            else:
                R[i, j] = s / R[j, j]
    # A^-1 from the factor: solve R R' X = I column by column
    Ainv = np.zeros((p, p))
    for col in range(p):
        z = np.zeros(p)
        for i in range(p):
            s = 1.0 if i == col else 0.0
            for c in range(i):
                s -= R[i, c] * z[c]
            z[i] = s / R[i, i]
        for i in range(p - 1, -1, -1):
            s = z[i]
            for c in range(i + 1, p):
                s -= R[c, i] * Ainv[c, col]
            Ainv[i, col] = s / R[i, i]
    beta = np.zeros(p)
    for i in range(p):
        s = 0.0
        for c in range(p):
            s += Ainv[i, c] * b[c]
        beta[i] = s
    pwrss = yty - ss
    for i in range(p):
        pwrss -= b[i] * beta[i]
    sigma2 = profiled_sigma2(pwrss, n, p, reml)
    d = deviance(n, p, reml, logdet, logdet_A, pwrss, sigma2, ldw)
    factor = 1.0 / sigma2
    qp = q * p
    for a in range(q):
        for bb in range(q):
            # sum (Z'Wr)(Z'Wr)' = Syy - SyX.beta - (SyX.beta)' + SXX:(beta beta')
            rr = S[qp + a, qp + bb]
            for c in range(p):
                rr -= S[qp + a, bb * p + c] * beta[c] + S[qp + bb, a * p + c] * beta[c]
                for e in range(p):
                    rr += S[a * p + c, bb * p + e] * beta[c] * beta[e]
            g = ZWZ[a, bb] - factor * rr
            if reml:
                for c in range(p):
                    for e in range(p):
                        g -= S[a * p + c, bb * p + e] * Ainv[c, e]
            G[a, bb] = g
    return d


def profiled_sigma2(pwrss, n, p, reml):
    """sigma2 at its optimum for given theta: pwrss / (N - p) under REML, pwrss / N under ML."""
    return pwrss / (n - p if reml else n)


def deviance(n, p, reml, logdet_L, logdet_A, pwrss, sigma2, ldw):
    """-2 log-likelihood (ML) or the REML criterion at sigma2 (the one deviance formula):
      ML:   N log(2 pi sigma2) + log|L|^2 + pwrss / sigma2 - ldW
      REML: (N-p) log(2 pi sigma2) + log|L|^2 + log|R_X|^2 + pwrss / sigma2 - ldW
    (lme4's deviance and REMLcrit; at sigma2 = `profiled_sigma2` the profiled ones, e.g. ML's
    log|L|^2 + N (1 + log(2 pi pwrss / N)) - ldW. Without the Harville -log|X'X| term, as HLM prints
    it too. ldW = sum_i log w_i of precision weights, lme4's `lmerResp::Laplace`)."""
    df = n - p if reml else n
    d = df * (np.log(2.0 * np.pi) + np.log(sigma2)) + logdet_L + pwrss / sigma2 - ldw
    if reml:
        d += logdet_A
    return d


def deviance_gradient(K, q, p, lam, w, XtX, Xty, yty, n, ldw, reml, G):
    """The profiled deviance at Lambda and its derivative G in D = Lambda Lambda' (written into G):
    `deviance_terms` then `finish_deviance`, one pass over the units."""
    FtF = np.empty((p, p))
    Ftr = np.empty(p)
    ZWZ = np.empty((q, q))
    S = np.empty((q * p + q, q * p + q))
    logdet, ss = deviance_terms(K, q, p, lam, w, FtF, Ftr, ZWZ, S)
    return finish_deviance(q, p, logdet, ss, FtF, Ftr, ZWZ, S, XtX, Xty, yty, n, ldw, reml, G)


def deviance_gradient_sized(K, qs, ps, lam, w, XtX, Xty, yty, n, ldw, reml, G):
    """`deviance_gradient` compiled for q = len(qs), p = len(ps) (constants: unrolled, `compile`)."""
    return deviance_gradient(K, len(qs), len(ps), lam, w, XtX, Xty, yty, n, ldw, reml, G)


def solve_units_sized(C, qs, ps, lam, w, L, LtLam, RZX, rZy, FtF, Ftr):
    """`solve_units` compiled for q = len(qs), p = len(ps) (constants: unrolled, `compile`)."""
    return solve_units(C, len(qs), len(ps), lam, w, L, LtLam, RZX, rZy, FtF, Ftr)


# ----- the same algebra in numpy, batched over the units (`compile.run` chooses) -------------------

def _factors_numpy(K, q, p, lam):
    """`factor_unit` for all units at once: (ZtZ, ZtX, Zty, G = L^-1 Lambda', R, r, log|L_j|^2, |r_j|^2)
    with L_j the Cholesky factor of Lambda' Z'Z Lambda + I; None when an M_j is not positive definite."""
    ZtZ = K[:, :q, :q]
    ZtX = K[:, :q, q : q + p]
    Zty = K[:, :q, q + p]
    M = (lam.T @ ZtZ) @ lam + np.eye(q)
    try:
        L = np.linalg.cholesky(M)
    except np.linalg.LinAlgError:
        return None
    # G = L^-1 Lambda' by forward substitution, row by row (q is small), as `factor_unit` solves
    G = np.empty(L.shape)
    for a in range(q):
        G[:, a, :] = (lam.T[a, :] - np.einsum("jc,jcb->jb", L[:, a, :a], G[:, :a, :])) / L[:, a, a, None]
    d = np.diagonal(L, axis1=1, axis2=2)
    logdet = np.log(np.prod(d * d, axis=1))
    if not np.all(np.isfinite(logdet)):
        return None
    R = G @ ZtX
    r = (G @ Zty[:, :, None])[:, :, 0]
    return ZtZ, ZtX, Zty, L, G, R, r, logdet, np.einsum("ja,ja->j", r, r)


def solve_units_numpy(C, q, p, lam, w, L, LtLam, RZX, rZy, FtF, Ftr):
    """`solve_units` in numpy (`_factors_numpy`), writing the same arrays."""
    f = _factors_numpy(C, q, p, lam)
    if f is None:
        return np.nan, np.nan
    _, _, _, L[:], LtLam[:], RZX[:], rZy[:], logdet, ss = f
    FtF[:] = np.einsum("j,jca,jcb->ab", w, RZX, RZX)
    Ftr[:] = np.einsum("j,jca,jc->a", w, RZX, rZy)
    return float(w @ logdet), float(w @ ss)


def deviance_gradient_numpy(K, q, p, lam, w, XtX, Xty, yty, n, ldw, reml, G):
    """`deviance_gradient` in numpy: the sums of `deviance_terms` batched over the units, then
    `finish_deviance`'s algebra with the one deviance formula (`deviance`, `profiled_sigma2`)."""
    f = _factors_numpy(K, q, p, lam)
    if f is None:
        return np.nan
    ZtZ, ZtX, Zty, _, Gj, R, r, logdet_j, ss_j = f
    logdet, ss = float(w @ logdet_j), float(w @ ss_j)
    FtF = np.einsum("j,jca,jcb->ab", w, R, R)
    Ftr = np.einsum("j,jca,jc->a", w, R, r)
    P = Gj @ ZtZ
    Pt = np.swapaxes(P, 1, 2)
    ZWZ = np.einsum("j,jab->ab", w, ZtZ - Pt @ P)
    z = np.concatenate(((ZtX - Pt @ R).reshape(K.shape[0], q * p), Zty - (Pt @ r[:, :, None])[:, :, 0]), axis=1)
    S = (z * w[:, None]).T @ z
    # finish_deviance
    A = XtX - FtF
    b = Xty - Ftr
    try:
        RX = np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return np.nan
    dA = np.diag(RX)
    logdet_A = float(np.log(dA * dA).sum())
    RXinv = np.linalg.inv(RX)
    Ainv = RXinv.T @ RXinv
    beta = Ainv @ b
    pwrss = yty - ss - float(b @ beta)
    python = LOOPS.python
    sigma2 = python["profiled_sigma2"](pwrss, n, p, reml)
    d = python["deviance"](n, p, reml, logdet, logdet_A, pwrss, sigma2, ldw)
    qp = q * p
    SXX = S[:qp, :qp].reshape(q, p, q, p)
    SyXb = S[qp:, :qp].reshape(q, q, p) @ beta
    rr = S[qp:, qp:] - SyXb - SyXb.T + np.einsum("acbe,c,e->ab", SXX, beta, beta)
    g = ZWZ - (1.0 / sigma2) * rr
    if reml:
        g -= np.einsum("acbe,ce->ab", SXX, Ainv)
    G[:] = g
    return d


NUMPY: dict[str, Any] = {"solve_units": solve_units_numpy, "deviance_gradient": deviance_gradient_numpy}

#: estimated seconds of one numpy evaluation (`compile.run`'s rule), measured on this machine: a
#: fixed part (the numpy calls) and a part per unit and element of the unit's (q + p + 1)^2 block
#: (HSB's 160 units, q = 2, p = 6: 0.26 ms; 2000 units, p = 4: 1.6 ms; 20000 units: 90 ms)
EVAL_SECONDS = 250e-6
EVAL_SECONDS_PER_UNIT_ELEMENT = 40e-9


LOOPS = Loops(globals(), ("factor_unit", "add_cross", "solve_units", "deviance_terms", "profiled_sigma2", "deviance",
                          "finish_deviance", "deviance_gradient", "deviance_gradient_sized", "solve_units_sized"))

#: the per-unit loops are compiled for (q, p) (`*_sized`) from this many units on; below, the loops
#: compiled once for all sizes serve until the sized ones are in the cache (`compile.ready`: asked
#: for in the background the first time), so that a model of a new shape on ordinary data costs no
#: compilation (seconds once per shape and machine otherwise). The sized loops are about twice as
#: fast per unit and give the same numbers (no fast-math: the compiler keeps every operation):
#: 55 -> 27 us an evaluation at 200 units, q = 2, p = 6 (11 evaluations a fit)
SPECIALISE_UNITS = 20_000

_SIZED: dict[tuple[str, int, int], bool] = {}  # (loop, q, p) -> its sized loop is in the cache (this process)
_SIZES: dict[tuple[int, int], tuple[tuple[int, ...], tuple[int, ...]]] = {}  # (q, p) -> the sizes as tuples


def _sized_numpy(name: str) -> Any:
    """The numpy version of `name` with the sized loop's arguments (sizes as tuple lengths)."""
    numpy_version = NUMPY[name]
    return lambda first, qs, ps, *rest: numpy_version(first, len(qs), len(ps), *rest)


_SIZED_NUMPY = {name: _sized_numpy(name) for name in NUMPY}


def call(name: str, units: int, first: Any, q: int, p: int, *rest: Any) -> Any:
    """name(first, q, p, *rest) (solve_units, deviance_gradient), for `units` units: compiled or in
    numpy (`compile.run`, the work estimated from the units and sizes); compiled, from
    SPECIALISE_UNITS units on the loop compiled for (q, p) (`*_sized`, the sizes as tuple lengths)."""
    seconds = EVAL_SECONDS + EVAL_SECONDS_PER_UNIT_ELEMENT * units * (q + p + 1) ** 2
    sizes = _SIZES.get((q, p))
    if sizes is None:
        sizes = _SIZES[(q, p)] = ((0,) * q, (0,) * p)
    if units < SPECIALISE_UNITS:
        # the sized loop once it is in the cache (asked once per process and shape: the arguments
        # of a shape are always of the same types, the summaries' contiguous float arrays)
        sized = _SIZED.get((name, q, p))
        if sized is None:
            sized = _SIZED[(name, q, p)] = ready(LOOPS, f"{name}_sized", (first, *sizes, *rest))
        if not sized:
            return run(LOOPS, name, (first, q, p, *rest), NUMPY[name], seconds)
    return run(LOOPS, f"{name}_sized", (first, *sizes, *rest), _SIZED_NUMPY[name], seconds)


def formula(name: str) -> Any:
    """The scalar formula `name` (deviance, profiled_sigma2) as plain Python: the one formula, for
    callers outside the loops (no compiled call needed for a few floating-point operations)."""
    return LOOPS.python[name]
