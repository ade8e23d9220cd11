"""The one pass over the rows, and the other compiled loops over rows.

`accumulate` makes every unit's cross-products C_j = sum_i w_i W_i W_i' in one pass (W_i made from the
data's columns as it goes, never held as a matrix); `accumulate_into` and `cross_products` call it on
numpy arrays. The row helpers: `nonfinite` (NaN and infinity counts), `sorted_codes` (codes of ids in
order), `varies` (a column's variation within units, stopping early), `mirror`, `group_range`.
Compiled on first use (`compile.Loops`: numba, cached on disk in the checked folder of `cache`);
each has a numpy version (`*_numpy`, `NUMPY`) that runs while the compiled one is not in the cache
and the data are small enough (`compile.run`: the choice at each call).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from multilevel.numerics.compile import Loops, ready, run

# ----- the loops, as plain Python that numba compiles (`LOOPS`) ----------------------------------

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
    once per run, so C is touched once per unit, not once per row.

    Rows not grouped by unit (runs of fewer than SORT_RUN rows on average in the first SORT_PROBE
    rows: shuffled files) are visited in unit order instead: a counting sort of the row numbers by
    code (O(N + J), one int32 array, stable, so each unit's rows keep their order and C[j] is the
    same sum as row by row), so that each unit is one run. Reading the columns' rows out of order
    costs less than adding every row into its own unit's k x k block of C: measured on shuffled
    rows of y ~ x1*w1 + x2 + w2 + (1 + x1 | g), ~50 rows a unit, 0.13 -> 0.07 s at 10^6 rows and
    4.2 -> 1.5 s at 10^7 (sorted rows: unchanged)."""
    n = codes.shape[0]
    if n == 0:
        return
    nf = recipe.shape[1]
    # rows per block: the block of W (rows x u doubles) stays within the cache also for many columns
    size = min(W.shape[0], max(256, BLOCK_VALUES // u))
    use_w = weights.shape[0] == n
    pair = np.empty((u, u), dtype=np.int64)
    t = 0
    for a in range(u):
        for b in range(a, u):
            pair[a, b] = t
            pair[b, a] = t
            t += 1
    # the runs of the first rows tell grouped from shuffled rows (a pass over all codes would cost
    # as much as a sorted pass's gain at 10^7 rows: memory bandwidth)
    probe = min(n, SORT_PROBE)
    runs = 1
    for i in range(1, probe):
        if codes[i] != codes[i - 1]:
            runs += 1
    by_unit = runs * SORT_RUN > probe and n < 2**31
    J = C.shape[0]
    order = np.empty(n if by_unit else 0, dtype=np.int32)
    if by_unit:
        # counting sort: next_row[j] is where unit j's next row goes
        next_row = np.zeros(J + 1, dtype=np.int64)
        for i in range(n):
            next_row[codes[i] + 1] += 1
        for j in range(J):
            next_row[j + 1] += next_row[j]
        for i in range(n):
            j = codes[i]
            order[next_row[j]] = i
            next_row[j] += 1
    buf = np.zeros(u * (u + 1) // 2)
    cur = codes[order[0]] if by_unit else codes[0]
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
                if by_unit:
                    for i in range(m):
                        W[i, c] *= base[order[start + i]] - centre
                elif centre == 0.0:
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
            row = (order[start + i] if by_unit else start + i) if i < m else 0
            j = codes[row] if i < m else -1
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
            wi = weights[row] if use_w else 1.0
            run += 1
            t = 0
            for a in range(u):
                wa = wi * W[i, a]
                for b in range(a, u):
                    buf[t] += wa * W[i, b]
                    t += 1
        if stop == n:
            break


#: values of W per block of rows in `accumulate` (192 kB)
BLOCK_VALUES = 24576
#: ... for fewer than SMALL_PASS_ROWS rows (64 kB): the block size does not change the sums (the
#: rows are added in the same order), and a 192 kB scratch block is new memory for the first fit
#: of 10^4 rows after a small one (~50 page faults, ~0.1 ms of a ~4 ms fit)
SMALL_BLOCK_VALUES = 8192
SMALL_PASS_ROWS = 100_000


#: `accumulate` visits the rows in unit order (a counting sort) when their runs of one unit are
#: shorter than this on average
SORT_RUN = 4
#: ... in the first this many rows
SORT_PROBE = 65536


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
    """C[j] lower triangle := its upper triangle, per unit."""
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


def accumulate_sized(bases, recipe, affine, cmap, us, ks, codes, weights, C, W, total, counts):
    """`accumulate` compiled for u = len(us), k = len(ks) columns (constants: the loops over columns
    unrolled, `compile`), for large data."""
    accumulate(bases, recipe, affine, cmap, len(us), len(ks), codes, weights, C, W, total, counts)


# ----- the same loops in numpy (`compile.run` chooses; tests/numerics/test_numpy_path.py) --------

#: rows per block of the numpy pass: a block of products (rows x u(u+1)/2 doubles) stays small
NUMPY_BLOCK_ROWS = 32768


def accumulate_numpy(bases, recipe, affine, cmap, u, k, codes, weights, C, W, total, counts):
    """`accumulate` in numpy, a block of rows at a time: the block's distinct columns V (the same
    recipe, centres and affine maps), the products w_i V_ia V_ib (a <= b, `accumulate`'s order),
    summed per run of equal codes after a stable sort of the block's codes (np.add.reduceat), and
    added to the units' C (upper triangle, through cmap), total and counts. W is not used."""
    n = codes.shape[0]
    nf = recipe.shape[1]
    ia, ib = np.triu_indices(u)
    pair = np.empty((u, u), dtype=np.int64)
    pair[ia, ib] = np.arange(ia.size)
    pair[ib, ia] = pair[ia, ib]
    ka, kb = np.triu_indices(k)
    take = pair[cmap[ka], cmap[kb]]
    use_w = weights.shape[0] == n
    for start in range(0, n, NUMPY_BLOCK_ROWS):
        stop = min(start + NUMPY_BLOCK_ROWS, n)
        V = np.empty((stop - start, u))
        for c in range(u):
            col = np.ones(stop - start)
            for f in range(nf):
                r = recipe[c, f]
                if r < 0:
                    break
                base = bases[r][start:stop]
                centre = affine[c, 2 + f]
                col = col * base if centre == 0.0 else col * (base - centre)
            shift, factor = affine[c, 0], affine[c, 1]
            if shift != 0.0 or factor != 1.0:
                col = (col - shift) * factor
            V[:, c] = col
        left = V * weights[start:stop, None] if use_w else V
        P = left[:, ia] * V[:, ib]
        cb = codes[start:stop]
        if cb.shape[0] > 1 and not bool(np.all(cb[1:] >= cb[:-1])):
            order = np.argsort(cb, kind="stable")
            cb = cb[order]
            P = P[order]
        starts = np.flatnonzero(np.concatenate(([True], cb[1:] != cb[:-1])))
        sums = np.add.reduceat(P, starts, axis=0)[:, take]  # (runs, k(k+1)/2), each unit once
        units = cb[starts]
        C[units[:, None], ka, kb] += sums
        total[ka, kb] += sums.sum(axis=0)
        counts[units] += np.diff(np.append(starts, cb.shape[0]))


def nonfinite_numpy(x):
    """`nonfinite` in numpy."""
    return int(np.count_nonzero(np.isnan(x))), int(np.count_nonzero(np.isinf(x)))


def sorted_codes_numpy(v, codes):
    """`sorted_codes` in numpy (codes written only when the ids are in order)."""
    n = v.shape[0]
    if n == 0:
        return 0
    if bool(np.any(v[1:] < v[:-1])):
        return -1
    codes[0] = 0
    np.cumsum(v[1:] != v[:-1], out=codes[1:])
    return int(codes[-1]) + 1


def varies_numpy(codes, x, first, seen, tol):
    """`varies` in numpy: each row against its unit's first row (first, seen: as the loop leaves them)."""
    n = x.shape[0]
    row = np.full(first.shape[0], n)
    np.minimum.at(row, codes, np.arange(n))  # each unit's first row
    seen[codes] = True
    first[seen] = x[row[seen]]
    a = first[codes]
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, not "differs", as in the loop
        return bool(np.any(np.abs(x - a) > tol * np.maximum(np.abs(x), np.abs(a))))


def mirror_numpy(C):
    """`mirror` in numpy."""
    rows, cols = np.tril_indices(C.shape[1], -1)
    C[:, rows, cols] = C[:, cols, rows]


def group_range_numpy(codes, x, lo, hi):
    """`group_range` in numpy (fmin/fmax: a NaN is passed over, as the loop's comparisons do)."""
    np.fmin.at(lo, codes, x)
    np.fmax.at(hi, codes, x)


NUMPY: dict[str, Any] = {"accumulate": accumulate_numpy, "nonfinite": nonfinite_numpy,
                         "sorted_codes": sorted_codes_numpy, "varies": varies_numpy, "mirror": mirror_numpy,
                         "group_range": group_range_numpy}

#: estimated seconds of the numpy versions (`compile.run`'s rule), measured on this machine: the pass
#: per row and product or factor (1.9 ms for HSB's 7185 rows and 7 columns: 35 products, 7 factors;
#: 0.25 s at 10^6 rows), the row helpers per row (`varies`, the slowest: 24 ms at 10^6 rows), and per call
PASS_SECONDS_PER_ROW_PRODUCT = 6e-9
HELPER_SECONDS_PER_ROW = 20e-9
CALL_SECONDS = 20e-6


LOOPS = Loops(globals(), ("accumulate", "accumulate_sized", "nonfinite", "sorted_codes", "varies", "mirror",
                          "group_range"))


def kernel(name: str) -> Any:
    """The row helper `name` (nonfinite, sorted_codes, varies, mirror, group_range): compiled or in
    numpy, chosen at each call (`compile.run`, the work estimated from the rows of the first argument)."""
    numpy_version = NUMPY[name]

    def helper(*args: Any) -> Any:
        seconds = CALL_SECONDS + HELPER_SECONDS_PER_ROW * int(np.size(args[0]))
        return run(LOOPS, name, args, numpy_version, seconds)

    return helper


#: the one pass is compiled for its columns (`accumulate_sized`) from this many rows on; below, the
#: loop compiled once for all sizes serves until the sized one is in the cache (`compile.ready`:
#: asked for in the background the first time), so that a model of a new shape on ordinary data
#: costs no compilation (seconds once per shape and machine otherwise). The sized loop gives the
#: same sums (no fast-math) faster: 0.54 -> 0.31 ms at 10^4 shuffled rows of 7 distinct columns
SPECIALISE_ROWS = 1_000_000


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
    # the compiled pass's scratch block: the rows `accumulate` uses of it (`accumulate` takes blocks
    # of W's rows at most), fewer for small data (memory the heap has at hand, not new pages)
    values = BLOCK_VALUES if codes.shape[0] >= SMALL_PASS_ROWS else SMALL_BLOCK_VALUES
    W = np.empty((min(BLOCK_ROWS, max(256, values // max(u, 1))), u))
    total = np.zeros((k, k)) if total is None else total
    counts = np.zeros(C.shape[0]) if counts is None else counts
    w = np.empty(0) if weights is None else weights
    n = codes.shape[0]
    seconds = CALL_SECONDS + PASS_SECONDS_PER_ROW_PRODUCT * n * (u * (u + 1) // 2 + u * recipe.shape[1])
    sized = (bases, recipe, affine, cmap, (0,) * int(u), (0,) * int(k), codes, w, C, W, total, counts)
    if n >= SPECIALISE_ROWS or ready(LOOPS, "accumulate_sized", sized):  # (one call a fit: its types exactly)
        run(LOOPS, "accumulate_sized", sized, _accumulate_sized_numpy, seconds)
    else:
        run(LOOPS, "accumulate", (bases, recipe, affine, cmap, int(u), int(k), codes, w, C, W, total, counts),
            accumulate_numpy, seconds)


def _accumulate_sized_numpy(bases, recipe, affine, cmap, us, ks, codes, weights, C, W, total, counts):
    """`accumulate_sized` in numpy: `accumulate_numpy` (numpy has nothing to unroll)."""
    accumulate_numpy(bases, recipe, affine, cmap, len(us), len(ks), codes, weights, C, W, total, counts)


def mirror_upper(C: np.ndarray) -> np.ndarray:
    """C with each unit's lower triangle filled from its upper one (`mirror`)."""
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
    mirror_upper(total[None])  # (its lower triangle from the upper one, as each unit's)
    return mirror_upper(C), total, counts


def group_ranges(codes: np.ndarray, x: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit (min, max) of x, exactly (used to tell level-2 variables from level-1 ones)."""
    lo = np.full(n_groups, np.inf)
    hi = np.full(n_groups, -np.inf)
    kernel("group_range")(codes, np.ascontiguousarray(x, dtype=float), lo, hi)
    return lo, hi
