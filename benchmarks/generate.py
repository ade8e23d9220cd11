"""Seeded two-level data for the benchmarks, written to Parquet.

    python benchmarks/generate.py                     # 1e4, 1e5, 1e6, 1e7 rows
    python benchmarks/generate.py --sizes 1e4,1e8     # any sizes
    python benchmarks/generate.py --csv               # also a CSV copy (for R without arrow)

Model (true values in TRUTH):

    y_ij = g00 + g10 x_ij + g01 w_j + g11 x_ij w_j + u0_j + u1_j x_ij + e_ij
    (u0_j, u1_j) ~ N(0, tau) correlated, e_ij ~ N(0, sigma2)

x is a level-1 predictor (with a group-level component, so it varies between and within groups),
w a level-2 predictor (constant within a group), x:w the cross-level interaction. Group sizes are
drawn uniformly from 25..75 (mean 50), so there are about n / 50 groups; the rows are sorted by
group. Columns: g (int64 group id, 0..J-1), y, x, w (float64).

The data are made group by group in chunks of about a million rows and written as they are made
(one Parquet row group per chunk), so memory stays bounded whatever the size (1e8 rows included).
Each chunk has its own random stream, spawned from the seed: the same seed and size give the
same file, byte for byte.

Issue 13's data (`users_table`, `ensure_users`; `--users`): the model users meet,

    y ~ x1*w1 + x2 + w2 + (1 + x1 | g)      (and, with a 20-level text predictor, ... + f)

with the same group sizes (25..75), written four ways per size: integer ids (0..J-1) or text ids
("S0000123"), rows sorted by group or shuffled (one seeded permutation), to
benchmarks/data/users_<n>_<ids>_<order>.parquet (CSV copies on demand, `csv_copy_of`). Columns
g (int64 or text), y, x1, w1, x2, w2 (float64), f (text, levels L01..L20). The same rows in all
four files, so every fit of the same model gives the same estimates.
"""
from __future__ import annotations

import argparse
import math
from itertools import pairwise
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
SEED = 20240606
CHUNK_ROWS = 1_000_000
MIN_SIZE, MAX_SIZE = 25, 75

TRUTH = {
    "beta": {"Intercept": 10.0, "x": 2.0, "w": 1.0, "x:w": 0.5},
    "tau": [[1.0, 0.3], [0.3, 0.25]],  # correlation 0.6
    "sigma2": 4.0,
}


def parse_size(text: str) -> int:
    """'1e6' -> 1000000; '250000' -> 250000."""
    value = float(text)
    if value != int(value) or value < 100:
        raise argparse.ArgumentTypeError(f"size {text!r}: a whole number of rows, at least 100")
    return int(value)


def size_label(n: int) -> str:
    """1000000 -> '1e6' (for file names and tables); other numbers as they are."""
    exp = round(math.log10(n))
    return f"1e{exp}" if 10**exp == n else str(n)


def path_for(n: int, suffix: str = "parquet") -> Path:
    return DATA_DIR / f"two_level_{size_label(n)}.{suffix}"


def group_sizes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Sizes uniform on MIN_SIZE..MAX_SIZE, the last one trimmed (or topped up) so they sum to n."""
    sizes = rng.integers(MIN_SIZE, MAX_SIZE + 1, size=n // MIN_SIZE + 1)
    cum = np.cumsum(sizes)
    k = int(np.searchsorted(cum, n))  # first index with cum >= n
    sizes = sizes[: k + 1].copy()
    sizes[-1] -= cum[k] - n
    if sizes[-1] < MIN_SIZE and len(sizes) > 1:  # fold a short last group into the one before
        sizes[-2] += sizes[-1]
        sizes = sizes[:-1]
    return sizes


def chunk_frame(sizes: np.ndarray, first_group: int, rng: np.random.Generator):
    """The rows of the groups first_group .. first_group + len(sizes) - 1, as a pyarrow Table."""
    import pyarrow as pa

    J = len(sizes)
    n = int(sizes.sum())
    g_local = np.repeat(np.arange(J), sizes)
    w = rng.standard_normal(J)
    x_mean = 0.5 * rng.standard_normal(J)
    L = np.linalg.cholesky(np.asarray(TRUTH["tau"]))
    u = rng.standard_normal((J, 2)) @ L.T
    x = x_mean[g_local] + rng.standard_normal(n)
    b = TRUTH["beta"]
    wr = w[g_local]
    y = (
        b["Intercept"] + b["x"] * x + b["w"] * wr + b["x:w"] * x * wr
        + u[g_local, 0] + u[g_local, 1] * x
        + np.sqrt(TRUTH["sigma2"]) * rng.standard_normal(n)
    )
    return pa.table({
        "g": pa.array(g_local.astype(np.int64) + first_group),
        "y": pa.array(y),
        "x": pa.array(x),
        "w": pa.array(wr),
    })


def generate(n: int, seed: int = SEED, path: Path | None = None, csv: bool = False) -> Path:
    """Write the n-row data set to `path` (default benchmarks/data/two_level_<n>.parquet)."""
    import pyarrow.parquet as pq

    path = Path(path) if path is not None else path_for(n)
    path.parent.mkdir(parents=True, exist_ok=True)
    ss = np.random.SeedSequence([seed, n])
    sizes = group_sizes(n, np.random.default_rng(ss.spawn(1)[0]))
    # chunks of whole groups, about CHUNK_ROWS rows each
    cum = np.cumsum(sizes)
    bounds = [0]
    while bounds[-1] < len(sizes):
        start_rows = cum[bounds[-1] - 1] if bounds[-1] > 0 else 0
        bounds.append(min(len(sizes), int(np.searchsorted(cum, start_rows + CHUNK_ROWS)) + 1))
    streams = ss.spawn(len(bounds))[1:]  # the first spawn above was the sizes' stream
    tmp = path.with_suffix(path.suffix + ".tmp")
    writer = None
    csv_tmp = path.with_suffix(".csv.tmp") if csv else None
    csv_file = open(csv_tmp, "wb") if csv else None
    try:
        for i, (lo, hi) in enumerate(pairwise(bounds)):
            table = chunk_frame(sizes[lo:hi], lo, np.random.default_rng(streams[i]))
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="snappy")
            writer.write_table(table, row_group_size=len(table))
            if csv_file is not None:
                _write_csv(table, csv_file, header=(i == 0))
    finally:
        if writer is not None:
            writer.close()
        if csv_file is not None:
            csv_file.close()
    tmp.replace(path)
    if csv:
        csv_tmp.replace(path.with_suffix(".csv"))
    return path


USERS_TRUTH = {
    "beta": {"Intercept": 10.0, "x1": 2.0, "w1": 1.0, "x1:w1": 0.5, "x2": 0.8, "w2": -0.6},
    "tau": [[1.0, 0.3], [0.3, 0.25]],
    "sigma2": 4.0,
}
LEVELS = tuple(f"L{k:02d}" for k in range(1, 21))  # the factor f's levels (L01 is the reference)
LEVEL_EFFECTS = tuple(0.1 * (k - 10) for k in range(20))  # each level's effect on y
ID_KINDS = ("int", "text")
ORDERS = ("shuffled", "sorted")


def users_path(n: int, ids: str, order: str, suffix: str = "parquet") -> Path:
    return DATA_DIR / f"users_{size_label(n)}_{ids}_{order}.{suffix}"


def text_ids(codes: np.ndarray, n_groups: int):
    """Text ids "S0000000".. for the codes 0..J-1, as a pyarrow string array (labels made once per
    group, then taken per row: cheap at 10^7 rows)."""
    import pyarrow as pa

    labels = pa.array([f"S{j:07d}" for j in range(n_groups)], pa.string())
    return labels.take(pa.array(codes))


def users_table(n: int, ids: str = "int", order: str = "shuffled", seed: int = SEED):
    """The n rows of issue 13's model as a pyarrow Table (module doc). The same seed and n give
    the same rows whatever `ids` and `order`; "shuffled" applies one seeded permutation."""
    import pyarrow as pa

    if ids not in ID_KINDS or order not in ORDERS:
        raise ValueError(f"ids in {ID_KINDS}, order in {ORDERS}; not {ids!r}, {order!r}")
    ss = np.random.SeedSequence([seed, n, 13])
    rng_sizes, rng_data, rng_perm = (np.random.default_rng(s) for s in ss.spawn(3))
    sizes = group_sizes(n, rng_sizes)
    J = len(sizes)
    g = np.repeat(np.arange(J), sizes)
    w1, w2 = rng_data.standard_normal(J), rng_data.standard_normal(J)
    x_mean = 0.5 * rng_data.standard_normal(J)
    u = rng_data.standard_normal((J, 2)) @ np.linalg.cholesky(np.asarray(USERS_TRUTH["tau"])).T
    x1 = x_mean[g] + rng_data.standard_normal(n)
    x2 = rng_data.standard_normal(n)
    f = rng_data.integers(0, len(LEVELS), size=n)
    b = USERS_TRUTH["beta"]
    w1r, w2r = w1[g], w2[g]
    y = (b["Intercept"] + b["x1"] * x1 + b["w1"] * w1r + b["x1:w1"] * x1 * w1r + b["x2"] * x2 + b["w2"] * w2r
         + np.asarray(LEVEL_EFFECTS)[f] + u[g, 0] + u[g, 1] * x1
         + np.sqrt(USERS_TRUTH["sigma2"]) * rng_data.standard_normal(n))
    if order == "shuffled":
        perm = rng_perm.permutation(n)
        g, x1, w1r, x2, w2r, f, y = (a[perm] for a in (g, x1, w1r, x2, w2r, f, y))
    gcol = pa.array(g.astype(np.int64)) if ids == "int" else text_ids(g, J)
    fcol = pa.array(list(LEVELS), pa.string()).take(pa.array(f))
    return pa.table({"g": gcol, "y": pa.array(y), "x1": pa.array(x1), "w1": pa.array(w1r),
                     "x2": pa.array(x2), "w2": pa.array(w2r), "f": fcol})


def write_users(n: int, seed: int = SEED, kinds=None) -> list[Path]:
    """Write the (ids, order) files of n rows (default: all four), one Parquet row group per
    CHUNK_ROWS rows. The rows are made once in memory (10^7 rows: about 1 GB while writing)."""
    import pyarrow.parquet as pq

    kinds = kinds or [(i, o) for i in ID_KINDS for o in ORDERS]
    out = []
    for order in ORDERS:
        if not any(o == order for _, o in kinds):
            continue
        base = users_table(n, "int", order, seed)
        for ids in ID_KINDS:
            if (ids, order) not in kinds:
                continue
            table = base
            if ids == "text":
                J = int(pa_max(base.column("g"))) + 1
                table = base.set_column(0, "g", text_ids(base.column("g").to_numpy(), J))
            path = users_path(n, ids, order)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".parquet.tmp")
            pq.write_table(table, tmp, row_group_size=CHUNK_ROWS, compression="snappy")
            tmp.replace(path)
            out.append(path)
    return out


def pa_max(column) -> int:
    import pyarrow.compute as pc

    return int(pc.max(column).as_py())


def ensure_users(n: int, ids: str, order: str, seed: int = SEED) -> Path:
    """The users_<n>_<ids>_<order>.parquet file, written if missing."""
    path = users_path(n, ids, order)
    if not path.exists():
        write_users(n, seed, [(ids, order)])
    return path


def csv_copy_of(src: Path) -> Path:
    """The CSV copy next to a Parquet file (written if missing or older), row group by row group."""
    import pyarrow.parquet as pq

    src = Path(src)
    dst = src.with_suffix(".csv")
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    tmp = dst.with_suffix(".csv.tmp")
    pf = pq.ParquetFile(src)
    with open(tmp, "wb") as fh:
        for i in range(pf.num_row_groups):
            _write_csv(pf.read_row_group(i), fh, header=(i == 0))
    tmp.replace(dst)
    return dst


def _write_csv(table, f, header: bool) -> None:
    """Full-precision CSV (R reads it back to the same doubles: 17 significant digits)."""
    import pyarrow.csv as pc

    pc.write_csv(table, f, pc.WriteOptions(include_header=header))


def csv_copy(n: int) -> Path:
    """The CSV copy of the n-row Parquet file (written from the Parquet file if missing or older)."""
    dst = csv_copy_of(path_for(n))
    assert dst == path_for(n, "csv"), (dst, path_for(n, "csv"))
    return dst


def ensure(n: int, seed: int = SEED) -> Path:
    """The n-row file, generated if it is not there yet."""
    path = path_for(n)
    if not path.exists():
        generate(n, seed)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(size_label(n) for n in SIZES),
                    help="comma-separated row counts, e.g. 1e4,1e5 (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--csv", action="store_true", help="also write a CSV copy (R without the arrow package)")
    ap.add_argument("--force", action="store_true", help="regenerate existing files")
    ap.add_argument("--users", action="store_true",
                    help="write issue 13's files instead (users_<n>_{int,text}_{shuffled,sorted}.parquet)")
    args = ap.parse_args()
    if args.users:
        for n in (parse_size(s) for s in args.sizes.split(",")):
            kinds = [(i, o) for i in ID_KINDS for o in ORDERS
                     if args.force or args.seed != SEED or not users_path(n, i, o).exists()]
            for path in write_users(n, args.seed, kinds) if kinds else []:
                print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")
                if args.csv:
                    csv_copy_of(path)
        return
    for n in (parse_size(s) for s in args.sizes.split(",")):
        path = path_for(n)
        if path.exists() and not args.force and args.seed == SEED:
            print(f"{path} exists")
            if args.csv:
                csv_copy(n)
            continue
        generate(n, args.seed, csv=args.csv)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
