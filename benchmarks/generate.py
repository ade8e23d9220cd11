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


def _write_csv(table, f, header: bool) -> None:
    """Full-precision CSV (R reads it back to the same doubles: 17 significant digits)."""
    import pyarrow.csv as pc

    pc.write_csv(table, f, pc.WriteOptions(include_header=header))


def csv_copy(n: int) -> Path:
    """The CSV copy of the n-row Parquet file (written from the Parquet file if missing or older)."""
    import pyarrow.parquet as pq

    src = path_for(n)
    dst = path_for(n, "csv")
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    tmp = dst.with_suffix(".csv.tmp")
    pf = pq.ParquetFile(src)
    with open(tmp, "wb") as f:
        for i in range(pf.num_row_groups):
            _write_csv(pf.read_row_group(i), f, header=(i == 0))
    tmp.replace(dst)
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
    args = ap.parse_args()
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
