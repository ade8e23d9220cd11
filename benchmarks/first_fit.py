"""The first fit of a process: with an empty compile cache (a fresh machine) and with a warm one.

    python benchmarks/first_fit.py                              # this checkout, 3 runs each
    python benchmarks/first_fit.py --src old/src --src src      # two source trees, interleaved

Each run is a new process `python -c "import multilevel as ml; ml.fit(<model>, <data>)"`, timed
from outside (wall clock, the interpreter's start included). "cold": MULTILEVEL_CACHE_DIR is a new
empty folder of mode 700, so every compiled loop the fit needs is compiled; "warm": the same
command again with the folder the cold run filled (after the background compilation the cold run
started, if any, has finished). Models: the seminar's model 4 on HSB, and the
benchmark model `y ~ x * w + (x | g)` on the 10^4-row file of generate.py (if present).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = {
    "HSB model 4": "import multilevel as ml; ml.fit('mathach ~ (sector + meanses) * cses + (cses | school)', ml.datasets.hsb())",
    "1e4 rows": f"import multilevel as ml; ml.fit('y ~ x * w + (x | g)', {str(HERE / 'data' / 'two_level_1e4.parquet')!r})",
}


def timed(code: str, src: str, cache: str) -> float:
    env = {**os.environ, "PYTHONPATH": src, "MULTILEVEL_CACHE_DIR": cache}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - t0


def settled(cache: str, timeout: float = 300.0) -> None:
    """Wait until no background compilation works in `cache` (its `.busy-<pid>` files, issue 13)."""
    folder = Path(cache) / "compiled"
    end = time.monotonic() + timeout
    while folder.is_dir() and any(p.name.startswith(".busy-") for p in folder.iterdir()) and time.monotonic() < end:
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", action="append", help="a source tree (the folder holding multilevel/); repeatable")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    srcs = args.src or [str(HERE.parent / "src")]
    cases = {k: v for k, v in CASES.items() if "1e4" not in k or (HERE / "data" / "two_level_1e4.parquet").exists()}
    times: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for s in srcs:  # interleaved, so that both trees meet the same machine
                for name, code in cases.items():
                    cache = os.path.join(tmp, f"cache-{r}-{srcs.index(s)}-{len(name)}")
                    os.mkdir(cache, 0o700)
                    times.setdefault((s, name, "cold"), []).append(timed(code, s, cache))
                    settled(cache)  # "warm": after what the first fit left compiling in the background
                    times.setdefault((s, name, "warm"), []).append(timed(code, s, cache))
    print("| source | case | cold cache: first fit (s) | warm cache: new process (s) |\n|---|---|---|---|")
    for s in srcs:
        for name in cases:
            cold, warm = (statistics.median(times[(s, name, c)]) for c in ("cold", "warm"))
            print(f"| {s} | {name} | {cold:.2f} | {warm:.2f} |")
    print(f"\nmedians of {args.repeat} runs each")


if __name__ == "__main__":
    main()
