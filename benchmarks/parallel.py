"""Refits on the available cores: the parametric bootstrap and multiply imputed data sets, one
thread against all (threads: the compiled loops release the GIL; `multilevel.parallel`).

    python benchmarks/parallel.py

Prints, for each case, the time with one thread and with `parallel.default_jobs()` threads (2 on
the benchmark machine) and the speed-up; the results of the two are checked to be identical.
"""
from __future__ import annotations

import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

import multilevel as ml
import multilevel.interfaces.api as api
from multilevel.parallel import default_jobs

HERE = Path(__file__).resolve().parent
M4 = "mathach ~ (sector + meanses) * cses + (cses | school)"
BENCH = "y ~ x * w + (x | g)"


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bootstrap_case(name: str, fit, n_boot: int, jobs: int) -> str:
    fit.bootstrap(4, seed=0, progress=False, n_jobs=1)  # warm-up
    one, t1 = timed(lambda: fit.bootstrap(n_boot, seed=1, progress=False, n_jobs=1))
    many, tn = timed(lambda: fit.bootstrap(n_boot, seed=1, progress=False, n_jobs=jobs))
    same = np.array_equal(one.replicates.to_numpy(), many.replicates.to_numpy())
    return f"| bootstrap, {n_boot} refits | {name} | {t1:.2f} | {tn:.2f} | {t1 / tn:.2f} | {'yes' if same else 'NO'} |"


def imputation_case(name: str, sets: list, jobs: int) -> str:
    ml.fit(BENCH, sets[:2])  # warm-up
    with mock.patch.object(api, "PARALLEL_ROWS", None):
        one, t1 = timed(lambda: ml.fit(BENCH, sets))
    with mock.patch.object(api, "PARALLEL_ROWS", 0):
        many, tn = timed(lambda: ml.fit(BENCH, sets))
    same = all(np.array_equal(a.beta.to_numpy(), b.beta.to_numpy()) for a, b in zip(one.fits, many.fits))
    return f"| {len(sets)} imputed data sets | {name} | {t1:.2f} | {tn:.2f} | {t1 / tn:.2f} | {'yes' if same else 'NO'} |"


def main() -> None:
    jobs = default_jobs()
    rows = []
    hsb = ml.datasets.hsb()
    rows.append(bootstrap_case("HSB, model 4 (7,185 rows)", ml.fit(M4, hsb), 200, jobs))
    big = pd.read_parquet(HERE / "data" / "two_level_1e5.parquet")
    rows.append(bootstrap_case("benchmark data, 1e5 rows", ml.fit(BENCH, big), 50, jobs))
    mid = pd.read_parquet(HERE / "data" / "two_level_1e6.parquet")
    rng = np.random.default_rng(0)
    sets = [mid.assign(y=mid["y"] + rng.normal(scale=0.1, size=len(mid))) for _ in range(5)]
    rows.append(imputation_case("benchmark data, 1e6 rows each", sets, jobs))
    small = [hsb.assign(mathach=hsb["mathach"] + rng.normal(scale=0.1, size=len(hsb))) for _ in range(5)]
    rows.append(imputation_case("HSB (7,185 rows each)", [s.rename(columns={"mathach": "y", "cses": "x", "meanses": "w", "school": "g"}) for s in small], jobs))
    print(f"Threads: 1 against {jobs} (parallel.default_jobs()); seconds; speed-up = one / {jobs}.\n")
    print(f"| refits | data | 1 thread (s) | {jobs} threads (s) | speed-up | same results |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
