"""The compiled inner loops: the one pass over the rows, and the per-unit algebra of the objective.

Why compiled (numba): both loops do a handful of floating-point operations per row or per unit
(a 2 x 2 Cholesky factor, a 2 x 4 solve), so in numpy the cost is the interpreter and the
temporaries, not the arithmetic. Measured at 10^7 rows and 200,000 units (profiles of the
benchmark fit): the one pass took 2.7 s as 28 weighted bincounts and takes 0.32 s here (this
machine reads memory at ~2.3 GB/s); an evaluation of the deviance with its gradient took ~145 ms
as vectorised "structure of arrays" numpy and takes ~23 ms here.

numba is imported on the first call, not with `multilevel` (the import stays light), and the
compiled code is cached on disk (`cache=True`, and the generated modules below) in a folder only
this user can write to (`cache_dir`; else compiled in memory), so a machine
compiles each loop once.
The functions release the GIL (`nogil=True`), so parallel refits can use threads.
"""
from __future__ import annotations

import os
import threading
from functools import cache

import numpy as np

# ----- the loops, as plain Python that numba compiles (`_generic`, `_specialised`) -----------------

def accumulate(bases, recipe, affine, cmap, u, k, codes, weights, C, W, total, counts):
    """C[j] += sum_{i in j} w_i W_i W_i' (upper triangle only; `mirror` fills the rest), total +=
    the same summed over units, counts[j] += rows. W has k columns of which u are distinct (Z and
    X share the intercept and the random slopes): column c of W is distinct column cmap[c], and
    distinct column d is V_id = (prod_f (bases[recipe[d, f]][i] - affine[d, 2 + f]) - affine[d, 0])
    * affine[d, 1] (recipe -1: no factor; none at all: the intercept, 1; the affine maps centre the
    factors and shift and scale the column into the fit's internal coordinates, `coordinates`, so
    that the sums do not cancel). V is made a block of rows at a time in the scratch array W (rows x u,
    cache-sized), column by column, and only its u(u+1)/2 products are summed per row. Rows of
    one unit that follow each other (grouped data) are summed in a local buffer and added to C
    once per run, so C is touched once per unit, not once per row."""
    n = codes.shape[0]
    if n == 0:
        return
    nf = recipe.shape[1]
    size = W.shape[0]
    use_w = weights.shape[0] == n
    pair = np.empty((u, u), dtype=np.int64)
    t = 0
    for a in range(u):
        for b in range(a, u):
            pair[a, b] = t
            pair[b, a] = t
            t += 1
    buf = np.zeros(u * (u + 1) // 2)
    cur = codes[0]
    run = 0
    for start in range(0, n + size, size):
        stop = min(start + size, n)
        m = stop - start if stop > start else 0
        for c in range(u):
            for i in range(m):
                W[i, c] = 1.0
            for f in range(nf):
                r = recipe[c, f]
                if r < 0:
                    break
                base = bases[r]
                centre = affine[c, 2 + f]
                if centre == 0.0:
                    for i in range(m):
                        W[i, c] *= base[start + i]
                else:
                    for i in range(m):
                        W[i, c] *= base[start + i] - centre
            shift = affine[c, 0]
            factor = affine[c, 1]
            if shift != 0.0 or factor != 1.0:
                for i in range(m):
                    W[i, c] = (W[i, c] - shift) * factor
        for i in range(m + (1 if stop == n else 0)):
            j = codes[start + i] if i < m else -1
            if j != cur:
                for a in range(k):
                    for b in range(a, k):
                        v = buf[pair[cmap[a], cmap[b]]]
                        C[cur, a, b] += v
                        total[a, b] += v
                for t in range(buf.shape[0]):
                    buf[t] = 0.0
                counts[cur] += run
                run = 0
                cur = j
                if i == m:
                    break
            wi = weights[start + i] if use_w else 1.0
            run += 1
            t = 0
            for a in range(u):
                wa = wi * W[i, a]
                for b in range(a, u):
                    buf[t] += wa * W[i, b]
                    t += 1
        if stop == n:
            break


def nonfinite(x):
    """(number of NaN, number of +-inf) in x, in one pass."""
    nan = 0
    inf = 0
    for i in range(x.shape[0]):
        v = x[i]
        if v != v:
            nan += 1
        elif v - v != 0.0:
            inf += 1
    return nan, inf


def sorted_codes(v, codes):
    """Codes 0..J-1 for ids in non-decreasing order (one pass); returns J, or -1 as soon as an
    id is smaller than the one before (the ids are not in order)."""
    n = v.shape[0]
    if n == 0:
        return 0
    c = 0
    codes[0] = 0
    for i in range(1, n):
        if v[i] != v[i - 1]:
            if v[i] < v[i - 1]:
                return -1
            c += 1
        codes[i] = c
    return c + 1


def varies(codes, x, first, seen, tol):
    """Whether x differs (by more than tol * max(|a|, |b|)) between two rows of some unit; stops
    at the first such unit, so a level-1 variable costs a few rows, a level-2 one a pass."""
    for i in range(x.shape[0]):
        j = codes[i]
        if seen[j]:
            a = first[j]
            if abs(x[i] - a) > tol * max(abs(x[i]), abs(a)):
                return True
        else:
            seen[j] = True
            first[j] = x[i]
    return False


def mirror(C):
    J, k, _ = C.shape
    for j in range(J):
        for a in range(k):
            for b in range(a + 1, k):
                C[j, b, a] = C[j, a, b]

def group_range(codes, x, lo, hi):
    """Per unit minimum and maximum of x (lo, hi start at +inf, -inf)."""
    for i in range(x.shape[0]):
        j = codes[i]
        v = x[i]
        if v < lo[j]:
            lo[j] = v
        if v > hi[j]:
            hi[j] = v

def factor_unit(Kj, q, p, lam, L, G, R, r, T):
    """One unit's factors from its first q rows Kj = [Z'Z | Z'X | Z'y] (module doc of
    `objective`): M = Lambda' Z'Z Lambda + I = L L', G = L^-1 Lambda', R = G Z'X, r = G Z'y
    (written into L, G, R, r; T is scratch). Returns (log|L|^2, |r|^2), or (nan, nan) when M is
    not positive definite. Shared by `solve_units` and `deviance_terms`; compiled inline into
    both (`_jit_helpers`)."""
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


def gradient_units(C, q, p, w, LtLam, RZX, rZy, beta, A_inv, factor, reml, G):
    """G = sum_j w_j [Z'WZ - (REML) Z'WX A^-1 X'WZ - factor (Z'Wr)(Z'Wr)'] with, per unit,
    P = LtLam Z'Z, Z'WZ = Z'Z - P'P, Z'WX = Z'X - P' RZX, Z'Wr = Z'y - P' rZy - Z'WX beta
    (W_j = (I + Z_j Lambda Lambda' Z_j')^-1 by Woodbury: `objective.gradient`)."""
    J = C.shape[0]
    y = q + p
    P = np.empty((q, q))
    ZWX = np.empty((q, p))
    ZWr = np.empty(q)
    B = np.empty((q, p))
    for a in range(q):
        for b in range(q):
            G[a, b] = 0.0
    for j in range(J):
        wj = w[j]
        for a in range(q):
            for b in range(q):
                s = 0.0
                for c in range(q):
                    s += LtLam[j, a, c] * C[j, c, b]
                P[a, b] = s
        for a in range(q):
            for b in range(p):
                s = C[j, a, q + b]
                for c in range(q):
                    s -= P[c, a] * RZX[j, c, b]
                ZWX[a, b] = s
            s = C[j, a, y]
            for c in range(q):
                s -= P[c, a] * rZy[j, c]
            for b in range(p):
                s -= ZWX[a, b] * beta[b]
            ZWr[a] = s
        if reml:
            for a in range(q):
                for d in range(p):
                    s = 0.0
                    for c in range(p):
                        s += ZWX[a, c] * A_inv[c, d]
                    B[a, d] = s
        for a in range(q):
            for b in range(a + 1):
                s = C[j, a, b]
                for c in range(q):
                    s -= P[c, a] * P[c, b]
                if reml:
                    for d in range(p):
                        s -= B[a, d] * ZWX[b, d]
                s -= factor * ZWr[a] * ZWr[b]
                G[a, b] += wj * s
    for a in range(q):
        for b in range(a + 1, q):
            G[a, b] = G[b, a]

def deviance_terms(K, q, p, lam, w, FtF, Ftr, ZWZ, S):
    """One pass over the units for the deviance and its gradient together, writing nothing
    per unit. K[j] = [Z'Z | Z'X | Z'y] (q rows). With the per-unit quantities of `solve_units`
    and of `gradient_units`, accumulate (weights w_j):
      FtF = sum RZX'RZX, Ftr = sum RZX'rZy, ZWZ = sum Z'WZ, and
      S = sum z z' (upper triangle) for z = [vec(Z'WX) (row-major), Z'Wy], length q p + q,
    from which the gradient at any beta follows without a second pass (`objective.
    deviance_and_gradient`). Returns (sum w log|L_j|^2, sum w |rZy_j|^2), nan if not PD."""
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


def finish_deviance(q, p, logdet, ss, FtF, Ftr, ZWZ, S, XtX, Xty, yty, n, reml, G):
    """The profiled deviance and G (its derivative in D = Lambda Lambda', q x q, written into G)
    from the sums of `deviance_terms`: the rest of `objective.deviance_and_gradient`, compiled,
    so that an evaluation on small data costs microseconds, not a dozen numpy calls. Returns nan
    when a matrix is not positive definite."""
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
    df = n - p if reml else n
    sigma2 = pwrss / df
    d = df * (np.log(2.0 * np.pi) + np.log(sigma2)) + logdet + pwrss / sigma2
    if reml:
        d += logdet_A
    factor = df / pwrss
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


_SPECIALISED = ("solve_units", "gradient_units", "deviance_gradient")


@cache
def _jit_helpers() -> None:
    """The helpers the loops call (`factor_unit`, `add_cross`) become compiled functions here, so
    that numba compiles the loops that name them; done before any loop compiles."""
    import numba

    g = globals()
    for name in ("factor_unit", "add_cross"):
        g[name] = numba.njit(g[name], inline="always", cache=_use_numba_cache())


@cache
def _generic():
    import numba

    _jit_helpers()

    jit = numba.njit(cache=_use_numba_cache(), nogil=True)
    return {f.__name__: jit(f) for f in (mirror, group_range, sorted_codes, varies, nonfinite)}


# Specialising the loops for their sizes (q, p; k = q + p + 1) lets the compiler unroll them: about
# twice as fast, measured. numba's disk cache does not take closures (they recompile in every
# process, seconds each), so each size gets a small generated module in which the sizes are
# module constants; its functions are cached like any module's. The module embeds a hash of this
# file, so a changed loop makes a new module, never a stale cache entry.
_TEMPLATE = '''"""multilevel.kernels specialised for {what} (generated; source hash {digest})."""
import numba
import numpy as np
from multilevel.numerics import kernels as _k

{constants}

jit = numba.njit(cache={cache}, nogil=True)
{body}
'''

_UNITS = '''
_solve = numba.njit(_k.solve_units, inline="always")
_grad = numba.njit(_k.gradient_units, inline="always")
_terms = numba.njit(_k.deviance_terms, inline="always")
_finish = numba.njit(_k.finish_deviance, inline="always")


@jit
def solve_units(C, lam, w, L, LtLam, RZX, rZy, FtF, Ftr):
    return _solve(C, Q, P, lam, w, L, LtLam, RZX, rZy, FtF, Ftr)


@jit
def gradient_units(C, w, LtLam, RZX, rZy, beta, A_inv, factor, reml, G):
    return _grad(C, Q, P, w, LtLam, RZX, rZy, beta, A_inv, factor, reml, G)


@jit
def deviance_gradient(K, lam, w, XtX, Xty, yty, n, reml, G):
    FtF = np.empty((P, P))
    Ftr = np.empty(P)
    ZWZ = np.empty((Q, Q))
    S = np.empty((Q * P + Q, Q * P + Q))
    logdet, ss = _terms(K, Q, P, lam, w, FtF, Ftr, ZWZ, S)
    return _finish(Q, P, logdet, ss, FtF, Ftr, ZWZ, S, XtX, Xty, yty, n, reml, G)
'''

# The same loops with the sizes as arguments: compiled once for every model, used where the data
# are small enough for the unrolling not to matter (a new model shape then costs no compilation).
_UNITS_ANY = '''
_solve = numba.njit(_k.solve_units)
_grad = numba.njit(_k.gradient_units)
_terms = numba.njit(_k.deviance_terms)
_finish = numba.njit(_k.finish_deviance)


@jit
def solve_units(C, q, p, lam, w, L, LtLam, RZX, rZy, FtF, Ftr):
    return _solve(C, q, p, lam, w, L, LtLam, RZX, rZy, FtF, Ftr)


@jit
def gradient_units(C, q, p, w, LtLam, RZX, rZy, beta, A_inv, factor, reml, G):
    return _grad(C, q, p, w, LtLam, RZX, rZy, beta, A_inv, factor, reml, G)


@jit
def deviance_gradient(K, q, p, lam, w, XtX, Xty, yty, n, reml, G):
    FtF = np.empty((p, p))
    Ftr = np.empty(p)
    ZWZ = np.empty((q, q))
    S = np.empty((q * p + q, q * p + q))
    logdet, ss = _terms(K, q, p, lam, w, FtF, Ftr, ZWZ, S)
    return _finish(q, p, logdet, ss, FtF, Ftr, ZWZ, S, XtX, Xty, yty, n, reml, G)


_acc = numba.njit(_k.accumulate)


@jit
def accumulate(bases, recipe, affine, cmap, u, k, codes, weights, C, W, total, counts):
    _acc(bases, recipe, affine, cmap, u, k, codes, weights, C, W, total, counts)
'''

_ACCUMULATE = '''
_acc = numba.njit(_k.accumulate, inline="always")


@jit
def accumulate(bases, recipe, affine, cmap, codes, weights, C, W, total, counts):
    _acc(bases, recipe, affine, cmap, U, K, codes, weights, C, W, total, counts)
'''


# ----- where compiled code is cached, and why it is safe to load from there ------------------------
#
# Loading cached code runs it: a generated module (.py, and its .pyc in __pycache__) is imported,
# and numba's cache files (.nbi/.nbc) are unpickled. So code is cached, and loaded, only from a
# folder no other user can write to (checked with lstat: owned by this user, no group/other write
# bit, not a symbolic link; created 0700, its parents owned by this user or root and not writable
# by others unless sticky, as /tmp is). Where no such folder exists, the kernels are compiled in
# memory without a cache (a slower first fit in every process, never someone else's code).
#
# Where: $MULTILEVEL_CACHE_DIR if set (if that folder is unsafe: no cache, with a warning), else
# $XDG_CACHE_HOME/multilevel or ~/.cache/multilevel, else (no writable home) <tmp>/multilevel-<uid>.
# numba's own cache files of these functions go to the subfolder `numba` of the same folder (a
# locator of ours, first in numba's list, answers for this module and the generated ones only), so
# numba never needs a writable install or home: it does not touch NUMBA_CACHE_DIR or other code.

CACHE_ENV = "MULTILEVEL_CACHE_DIR"


def cache_candidates() -> tuple[tuple[str, bool], ...]:
    """The folders tried for the cache, in order, each with whether the user named it."""
    import tempfile

    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return ((os.path.abspath(os.path.expanduser(explicit)), True),)
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return (
        (os.path.join(os.path.abspath(home), "multilevel"), False),
        (os.path.join(tempfile.gettempdir(), f"multilevel-{uid}"), False),
    )


def unsafe_reason(path: str, uid: int | None = None) -> str | None:
    """Why code must not be loaded from the folder `path` (None: it is safe).

    Safe means: an existing folder (not a symbolic link), owned by `uid` (default: this process's
    user), with no write bit for group or others, writable by us; and every parent folder owned by
    `uid` or root and not writable by group or others unless it has the sticky bit (as /tmp has:
    nobody else can then rename or replace our folder). On systems without uids (Windows) the
    per-user folders are trusted as they are."""
    import stat

    if not hasattr(os, "getuid"):
        return None if os.path.isdir(path) and os.access(path, os.W_OK) else "it is not a writable folder"
    uid = os.getuid() if uid is None else uid
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    if st.st_uid != uid:
        return f"it belongs to another user (uid {st.st_uid}, not {uid})"
    if st.st_mode & 0o022:
        return f"other users can write to it (mode {stat.S_IMODE(st.st_mode):o})"
    if not os.access(path, os.W_OK | os.X_OK):
        return "it is not writable"
    parent = os.path.realpath(os.path.dirname(path) or ".")
    while True:
        pst = os.stat(parent)
        if pst.st_uid not in (uid, 0):
            return f"its parent folder {parent} belongs to another user (uid {pst.st_uid})"
        if pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX:
            return f"its parent folder {parent} is writable by other users (mode {stat.S_IMODE(pst.st_mode):o})"
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up


def _make_private(path: str) -> None:
    """Create `path` (and missing parents) with the folder itself 0700; errors are left to the check."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkdir(path, 0o700)
    except OSError:
        pass


_CACHE_LOCK = threading.Lock()
_CACHE_CHOICE: dict[tuple[tuple[str, bool], ...], str | None] = {}


def cache_dir() -> str | None:
    """The folder compiled code is cached in and loaded from, or None: compile in memory.

    The first safe folder of `cache_candidates()` (see `unsafe_reason`), created 0700 if missing.
    A folder named by MULTILEVEL_CACHE_DIR that is unsafe, or a folder of ours in the temporary
    directory that someone else made, gets a warning (once per process) and no cache."""
    import warnings

    candidates = cache_candidates()
    with _CACHE_LOCK:
        if candidates in _CACHE_CHOICE:
            return _CACHE_CHOICE[candidates]
        chosen = None
        for path, explicit in candidates:
            _make_private(path)
            reason = unsafe_reason(path)
            if reason is None:
                chosen = path
                break
            # an unwritable home is ordinary (read-only containers); anything else is worth a word
            if explicit or (os.path.lexists(path) and "not writable" not in reason and "cannot be read" not in reason):
                warnings.warn(
                    f"multilevel does not cache compiled code in {path}: {reason}. Loading code from a "
                    f"folder others can change could run their code. The kernels are compiled in memory "
                    f"instead (slower first fit in each process). To cache them, set {CACHE_ENV} to a "
                    f"folder of your own that only you can write to (e.g. mode 700), or remove {path}.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                if explicit:
                    break
        _CACHE_CHOICE[candidates] = chosen
        if chosen is not None:
            _install_numba_locator()
        return chosen


def _use_numba_cache() -> bool:
    """Whether numba may cache the kernels on disk: only in a checked folder, through our locator."""
    return cache_dir() is not None and _install_numba_locator()


@cache
def _install_numba_locator() -> bool:
    """Put a locator first in numba's list that keeps the cache files of this module and of the
    generated modules in `<cache_dir()>/numba` (numba's own choice would be the install's
    __pycache__, or ~/.cache/numba, or fail with "no locator available" when neither is writable).
    False (no disk cache) if numba's internals are not as expected or the user chose the locators."""
    try:
        from numba.core import caching, config
    except ImportError:
        return False
    base = getattr(caching, "UserProvidedCacheLocator", None) or getattr(caching, "_UserProvidedCacheLocator", None)
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    if base is None or impl is None or not isinstance(getattr(impl, "_locator_classes", None), list):
        return False
    if getattr(config, "CACHE_LOCATOR_CLASSES", None):
        return False

    here = os.path.realpath(__file__)

    class MultilevelCacheLocator(base):
        def __init__(self, py_func, py_file, root: str = ""):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = os.path.join(root, "numba", self.get_suitable_cache_subpath(py_file))

        def ensure_cache_path(self):
            # the subfolders are made private too (the root already is: cache_dir())
            os.makedirs(self.get_cache_path(), mode=0o700, exist_ok=True)

        @classmethod
        def from_function(cls, py_func, py_file):
            real = os.path.realpath(py_file)
            if real != here and not os.path.basename(real).startswith("multilevel_kernels_"):
                return None  # anyone else's functions: numba's own locators, as before
            root = cache_dir()
            if root is None or (real != here and os.path.dirname(real) != os.path.realpath(root)):
                # never fall through to numba's other locators (the install's __pycache__, ...)
                raise RuntimeError(f"multilevel: no checked cache folder for {py_file}; compile it with cache=False")
            self = cls(py_func, py_file, root)
            self.ensure_cache_path()
            return self

    impl._locator_classes.insert(0, MultilevelCacheLocator)
    return True


_GENERATE = threading.Lock()  # refits in threads may ask for the same module at once


def _generated(stem: str, what: str, constants: dict[str, int], body: str):
    """Import (writing it first if needed) the generated module `stem` (see _TEMPLATE)."""
    with _GENERATE:
        return _generate(stem, what, constants, body)


def _generate(stem: str, what: str, constants: dict[str, int], body: str):
    _jit_helpers()
    import hashlib
    import importlib.util
    import sys
    import types

    with open(__file__, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    name = f"multilevel_kernels_{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    folder = cache_dir()
    use_cache = folder is not None and _use_numba_cache()
    text = _TEMPLATE.format(
        what=what,
        digest=digest,
        constants="\n".join(f"{k} = {v}" for k, v in constants.items()),
        cache=use_cache,
        body=body,
    )
    if folder is None:
        # no folder only we can write to: compiled in memory, nothing read from or written to disk
        module = types.ModuleType(name)
        exec(compile(text, f"<{name}>", "exec"), module.__dict__)
        sys.modules[name] = module
        return module
    path = os.path.join(folder, f"{name}.py")
    if not os.path.exists(path) or _read_text(path) != text:
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # atomic: parallel processes never see half a file
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


#: per-unit loops are specialised for (q, p) from this many units on, the one pass for its
#: columns from this many rows on; below, the loops compiled once for all sizes serve (about half
#: as fast per unit, which at these sizes is microseconds), so that a model of a new shape on
#: ordinary data costs no compilation (~10 s once per shape and machine otherwise).
SPECIALISE_UNITS = 20_000
SPECIALISE_ROWS = 1_000_000


@cache
def _any():
    return _generated("any", "any sizes (given as arguments)", {}, _UNITS_ANY)


@cache
def _accumulate(u: int, k: int, large: bool = True):
    """`accumulate` for k columns of which u are distinct (compiled for them when `large`)."""
    if not large:
        f = _any().accumulate

        def accumulate_any(bases, recipe, affine, cmap, codes, weights, C, W, total, counts):
            f(bases, recipe, affine, cmap, u, k, codes, weights, C, W, total, counts)

        return accumulate_any
    return _generated(f"u{u}_k{k}", f"k = {k} columns, u = {u} distinct", {"U": u, "K": k}, _ACCUMULATE).accumulate


@cache
def _specialised(q: int, p: int):
    """The per-unit loops compiled for q random effects and p fixed effects."""
    m = _generated(f"q{q}_p{p}", f"q = {q}, p = {p}", {"Q": q, "P": p}, _UNITS)
    return {name: getattr(m, name) for name in _SPECIALISED}


@cache
def _sized(name: str, q: int, p: int):
    """The loop compiled for all sizes, called like the specialised one (q, p bound here)."""
    f = getattr(_any(), name)

    def bound(first, *rest):
        return f(first, q, p, *rest)

    return bound


def kernel(name: str, q: int | None = None, p: int | None = None, units: int | None = None):
    """The compiled function `name` (compiling, or loading from the disk cache, on first use). The
    per-unit loops take (q, p): compiled for them when `units` (J) is None or reaches
    SPECIALISE_UNITS, else the loop for all sizes with q and p bound; both are called alike."""
    if name in _SPECIALISED:
        if units is not None and units < SPECIALISE_UNITS:
            return _sized(name, int(q), int(p))
        return _specialised(int(q), int(p))[name]
    return _generic()[name]


#: rows per block of the one pass: a block of W (rows x k doubles) stays in the cache
BLOCK_ROWS = 4096


def accumulate_into(bases: tuple[np.ndarray, ...], recipe: np.ndarray, affine: np.ndarray, cmap: np.ndarray,
                    codes: np.ndarray, C: np.ndarray, weights: np.ndarray | None = None,
                    total: np.ndarray | None = None, counts: np.ndarray | None = None) -> None:
    """C[j] += sum_i w_i W_i W_i' over the rows given (upper triangles; `mirror_upper` completes
    them), and total, counts (rows per unit) alike: the one pass, W made row by row from the
    `bases` arrays by `recipe`, `affine` and `cmap` (`accumulate`), so no N x k matrix is ever held.
    Chunks of rows add into the same arrays."""
    u, k = recipe.shape[0], cmap.shape[0]
    W = np.empty((BLOCK_ROWS, u))
    total = np.zeros((k, k)) if total is None else total
    counts = np.zeros(C.shape[0]) if counts is None else counts
    large = codes.shape[0] >= SPECIALISE_ROWS
    _accumulate(int(u), int(k), large)(bases, recipe, affine, cmap, codes, np.empty(0) if weights is None else weights, C, W, total, counts)


def mirror_upper(C: np.ndarray) -> np.ndarray:
    kernel("mirror")(C)
    return C


def cross_products(
    bases: tuple[np.ndarray, ...], recipe: np.ndarray, affine: np.ndarray, cmap: np.ndarray, codes: np.ndarray,
    n_groups: int, weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C, total, counts): sum_i w_i W_i W_i' per unit (J, k, k), over all rows (k, k), and the
    rows per unit (J,), in one pass over the rows (`accumulate_into`)."""
    k = cmap.shape[0]
    C = np.zeros((n_groups, k, k))
    total = np.zeros((k, k))
    counts = np.zeros(n_groups)
    accumulate_into(bases, recipe, affine, cmap, codes, C, weights, total, counts)
    total = np.triu(total) + np.triu(total, 1).T
    return mirror_upper(C), total, counts


def group_ranges(codes: np.ndarray, x: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit (min, max) of x, exactly (used to tell level-2 variables from level-1 ones)."""
    lo = np.full(n_groups, np.inf)
    hi = np.full(n_groups, -np.inf)
    kernel("group_range")(codes, np.ascontiguousarray(x, dtype=float), lo, hi)
    return lo, hi


def _read_text(path) -> str:
    with open(path) as f:  # closed at once (a bare open() leaves it to the garbage collector)
        return f.read()
