"""Data beyond memory: the streamed fit of a large Parquet file against the in-memory fit.

    python benchmarks/streaming.py --size 1e8        # generates the file first if needed

Runs, each in a fresh process (peak memory = the process's max RSS, from wait4), --repeat times,
alternating (the medians are printed):
  * streamed:  ml.fit(formula, path, stream=True)   (batches of 1e6 rows, two passes)
  * in memory: ml.fit(formula, path)                (the whole file read into memory)
and prints the times of the fit (the package's imports are timed apart: both fits pay them alike),
its CPU time (all threads), the peak memory, the size of the model's numeric columns, and the
largest differences between the two fits' estimates (fixed effects, tau, sigma2, deviance).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORMULA = "y ~ x * w + (x | g)"
MARK = "@@RESULT@@ "

CHILD = """
import json, sys, time, resource
t = time.perf_counter()
import multilevel as ml
import multilevel.interfaces.api  # the imports apart: both fits pay them alike
imports = time.perf_counter() - t
t, c = time.perf_counter(), time.process_time()
f = ml.fit({formula!r}, {path!r}{extra})
s, cpu = time.perf_counter() - t, time.process_time() - c
print({mark!r} + json.dumps(dict(seconds=s, cpu=cpu, imports=imports, beta=f.beta.tolist(), tau=f.tau.to_numpy().tolist(),
      sigma2=float(f.sigma2), deviance=float(f.deviance), n_obs=int(f.n_obs), n_groups=int(f.n_groups),
      evaluations=int(f.optimizer.n_evaluations))), flush=True)
"""


def run_measured(path: Path, stream: bool) -> dict:
    code = CHILD.format(formula=FORMULA, path=str(path), extra=", stream=True" if stream else "", mark=MARK)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 1)
        os.execv(sys.executable, [sys.executable, "-c", code])
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        raise SystemExit(f"the {'streamed' if stream else 'in-memory'} fit failed (status {status})")
    line = next(x for x in out.splitlines() if x.startswith(MARK))
    res = json.loads(line[len(MARK):])
    res["peak_mb"] = usage.ru_maxrss / 1024
    return res


def median_run(runs: list[dict]) -> dict:
    """The first run's estimates with the medians of the times and peaks of all runs."""
    import statistics

    out = dict(runs[0])
    for key in ("seconds", "cpu", "imports", "peak_mb"):
        out[key] = statistics.median(r[key] for r in runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1e8")
    ap.add_argument("--no-memory-fit", action="store_true", help="only the streamed fit")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per fit (medians)")
    args = ap.parse_args()
    n = int(float(args.size))
    path = HERE / "data" / f"two_level_{args.size}.parquet"
    if not path.exists():
        subprocess.run([sys.executable, str(HERE / "generate.py"), "--sizes", args.size], check=True)
    t0 = time.strftime("%Y-%m-%d %H:%M")
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeat):
        for name, stream in [("streamed", True)] + ([] if args.no_memory_fit else [("in memory", False)]):
            r = run_measured(path, stream)
            runs.setdefault(name, []).append(r)
            print(f"{name}: {r['seconds']:.2f} s (cpu {r['cpu']:.2f} s; imports {r['imports']:.2f} s), "
                  f"peak {r['peak_mb']:.0f} MB", flush=True)
    results = {name: median_run(rs) for name, rs in runs.items()}
    numeric_mb = 4 * 8 * n / 2**20
    print(f"\n## Streaming run ({t0}): {n:,} rows, {results['streamed']['n_groups']:,} units, file {path.stat().st_size / 2**20:.0f} MB")
    print(f"Numeric columns the model uses (g, y, x, w as 8-byte numbers): {numeric_mb:,.0f} MB\n")
    print(f"Medians of {args.repeat} run(s) each, alternating; load average {os.getloadavg()[0]:.1f} (2 cores shared)\n")
    print("| fit | time (s) | CPU time (s) | peak memory (MB) | peak / numeric columns | objective evaluations |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['seconds']:.2f} | {r['cpu']:.2f} | {r['peak_mb']:,.0f} | {r['peak_mb'] / numeric_mb:.2f} | {r['evaluations']} |")
    if "in memory" in results:
        print(f"\nStreamed / in memory: {results['streamed']['seconds'] / results['in memory']['seconds']:.2f}x the time.")
    if "in memory" in results:
        a, b = results["streamed"], results["in memory"]

        def rel(x, y):
            import numpy as np

            x, y = np.asarray(x, float), np.asarray(y, float)
            return float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300)))

        print(f"\nStreamed vs in memory, largest relative difference: fixed effects {rel(a['beta'], b['beta']):.1e}, "
              f"tau {rel(a['tau'], b['tau']):.1e}, sigma2 {rel(a['sigma2'], b['sigma2']):.1e}, "
              f"deviance {rel(a['deviance'], b['deviance']):.1e}; rows {a['n_obs']:,} / {b['n_obs']:,}, "
              f"units {a['n_groups']:,} / {b['n_groups']:,}.")
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
