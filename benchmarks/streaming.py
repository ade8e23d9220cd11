"""Data beyond memory: the streamed fit of a large Parquet file against the in-memory fit.

    python benchmarks/streaming.py --size 1e8        # generates the file first if needed

Runs, each in a fresh process (peak memory = the process's max RSS, from wait4):
  * streamed:  ml.fit(formula, path, stream=True)   (row groups of 1e6 rows, two passes)
  * in memory: ml.fit(formula, path)                (the whole file read into memory)
and prints the times, the peak memory, the size of the model's numeric columns, and the largest
differences between the two fits' estimates (fixed effects, tau, sigma2, deviance).
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
import multilevel as ml
t = time.perf_counter()
f = ml.fit({formula!r}, {path!r}{extra})
s = time.perf_counter() - t
print({mark!r} + json.dumps(dict(seconds=s, beta=f.beta.tolist(), tau=f.tau.to_numpy().tolist(),
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1e8")
    ap.add_argument("--no-memory-fit", action="store_true", help="only the streamed fit")
    args = ap.parse_args()
    n = int(float(args.size))
    path = HERE / "data" / f"two_level_{args.size}.parquet"
    if not path.exists():
        subprocess.run([sys.executable, str(HERE / "generate.py"), "--sizes", args.size], check=True)
    t0 = time.strftime("%Y-%m-%d %H:%M")
    streamed = run_measured(path, True)
    print(f"streamed: {streamed['seconds']:.1f} s, peak {streamed['peak_mb']:.0f} MB", flush=True)
    results = {"streamed": streamed}
    if not args.no_memory_fit:
        memory = run_measured(path, False)
        print(f"in memory: {memory['seconds']:.1f} s, peak {memory['peak_mb']:.0f} MB", flush=True)
        results["in memory"] = memory
    numeric_mb = 4 * 8 * n / 2**20
    print(f"\n## Streaming run ({t0}): {n:,} rows, {streamed['n_groups']:,} units, file {path.stat().st_size / 2**20:.0f} MB")
    print(f"Numeric columns the model uses (g, y, x, w as 8-byte numbers): {numeric_mb:,.0f} MB\n")
    print("| fit | time (s) | peak memory (MB) | peak / numeric columns | objective evaluations |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['seconds']:.1f} | {r['peak_mb']:,.0f} | {r['peak_mb'] / numeric_mb:.2f} | {r['evaluations']} |")
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
