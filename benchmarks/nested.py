"""Issue 14's comparison: models with several grouping factors, side by side with lme4, glmm and
mixedlm in one run.

    python benchmarks/nested.py                                   # InstEval and growth at 1e5, 1e6
    python benchmarks/nested.py --cases insteval --repeat 3
    python benchmarks/nested.py --cases growth --sizes 1e5,1e6,1e7 --peers ours,lme4,glmm
    python benchmarks/nested.py --out /tmp/nested.md --json /tmp/nested.json

Cases:
    insteval   lme4's InstEval (73,421 ratings), crossed: y ~ 1 + service + (1 | s) + (1 | d) +
               (1 | dept:service), REML (refs/multi/data/insteval.csv.gz, written here as Parquet
               and CSV; warm-up on a 5,000-row sample)
    growth     a three-level growth model, n rows: 5 yearly scores per child, 100 children per
               school, y ~ year + (year | school) + (year | child), REML, text ids (child ids
               unique across schools), rows shuffled; warm-up on the 10^4-row file

Each run of each peer is a new process that reads and fits the warm-up file untimed, then times
reading the file (Parquet with pandas; lme4: data.table::fread of the CSV copy) and the fit.
Runs are interleaved (run r of every peer, then r + 1); medians of --repeat runs. Every peer's
REML criterion is compared with ours before its time is printed. Peak memory: the process's
maximum RSS (interpreter, imports and the warm-up included). A peer that exceeds --timeout at a
size is not run at larger sizes of that case.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
REFS = HERE.parent / "refs" / "multi" / "data"
MARK = "@@RESULT@@ "

FORMULAS = {
    "insteval": "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)",
    "growth": "y ~ year + (year | school) + (year | child)",
}
IDS = {"insteval": ["s", "d", "dept", "service"], "growth": ["school", "child"]}


# --- data ---------------------------------------------------------------------------------------

def insteval_files() -> tuple[Path, Path]:
    """InstEval as Parquet and CSV, and its 5,000-row warm-up sample (made once)."""
    import pandas as pd

    path, warm = DATA / "insteval.parquet", DATA / "insteval_warm.parquet"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        with gzip.open(REFS / "insteval.csv.gz", "rt") as fh:
            d = pd.read_csv(fh, dtype={c: str for c in IDS["insteval"]})
        d.to_parquet(path, index=False)
        d.to_csv(path.with_suffix(".csv"), index=False)
        w = d.sample(5000, random_state=1)
        w.to_parquet(warm, index=False)
        w.to_csv(warm.with_suffix(".csv"), index=False)
    return path, warm


def growth_table(n: int, seed: int = 1):
    """n rows of the growth case (module doc)."""
    import pandas as pd

    per, per_school = 5, 100
    K = n // per
    S = max(K // per_school, 2)
    rng = np.random.default_rng(seed)
    child = np.repeat(np.arange(K), per)
    school_of = np.concatenate([np.arange(S), rng.integers(0, S, K - S)])
    school = school_of[child]
    year = np.tile(np.arange(per), K).astype(float)
    u = rng.normal(size=(K, 2)) * [0.8, 0.15]
    v = rng.normal(size=(S, 2)) * [0.4, 0.08]
    y = 0.5 + 0.7 * year + u[child, 0] + u[child, 1] * year + v[school, 0] + v[school, 1] * year + rng.normal(0, 0.55, n)
    order = rng.permutation(n)
    return pd.DataFrame({"y": y[order], "year": year[order],
                         "school": np.char.add("s", school[order].astype(str)),
                         "child": np.char.add("c", child[order].astype(str))})


def growth_files(n: int) -> tuple[Path, Path]:
    path, warm = DATA / f"growth_{n:.0e}.parquet".replace("+0", ""), DATA / "growth_1e4.parquet"
    for p, size in ((path, n), (warm, 10_000)):
        if not p.exists():
            DATA.mkdir(exist_ok=True)
            t = growth_table(size)
            t.to_parquet(p, index=False)
            t.to_csv(p.with_suffix(".csv"), index=False)
    return path, warm


# --- one timed run, in its own process ----------------------------------------------------------

def _read(path: str, case: str):
    import pandas as pd

    d = pd.read_parquet(path)
    for c in IDS[case]:
        d[c] = d[c].astype(str)
    return d


def worker(peer: str, case: str, path: str, warm: str) -> None:
    formula = FORMULAS[case]
    if peer == "ours":
        import multilevel as ml

        def fit(d):
            f = ml.fit(formula, d)
            return f.deviance, dict(f.beta), bool(f.converged)
    elif peer == "glmm":
        import glmm

        def fit(d):
            r = glmm.fit(d, formula, reml=True, satterthwaite=False)
            return -2 * r.loglik, dict(zip(r.names, r.beta)), bool(r.converged)
    elif peer == "mixedlm":
        import warnings

        import mixedlm

        def fit(d):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = mixedlm.lmer(formula, d, REML=True)
            return m.REMLcrit(), dict(m.fixef()), bool(getattr(m, "converged", True))
    else:
        raise SystemExit(f"unknown peer {peer}")
    fit(_read(warm, case))
    t0 = time.perf_counter()
    d = _read(path, case)
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    crit, beta, conv = fit(d)
    fit_s = time.perf_counter() - t0
    out = dict(peer=peer, fit_s=fit_s, read_s=read_s, total_s=read_s + fit_s, crit=float(crit),
               beta={str(k): float(v) for k, v in beta.items()}, converged=conv,
               maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(MARK + json.dumps(out), flush=True)


def command(peer: str, case: str, path: Path, warm: Path) -> list[str]:
    if peer == "lme4":
        return ["Rscript", str(HERE / "lme4_multi.R"), str(path.with_suffix(".csv")), FORMULAS[case],
                ",".join(IDS[case]), str(warm.with_suffix(".csv"))]
    return [sys.executable, str(Path(__file__).resolve()), "--worker", peer, case, str(path), str(warm)]


def run_once(peer: str, case: str, path: Path, warm: Path, timeout: float) -> dict:
    try:
        p = subprocess.run(command(peer, case, path, warm), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"peer": peer, "timeout": True}
    for line in p.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    return {"peer": peer, "error": (p.stderr or p.stdout)[-500:]}


# --- the comparison -----------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="insteval,growth")
    ap.add_argument("--sizes", default="1e5,1e6", help="growth sizes")
    ap.add_argument("--peers", default="ours,lme4,glmm,mixedlm")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--out")
    ap.add_argument("--json")
    a = ap.parse_args()
    peers = a.peers.split(",")
    if "lme4" in peers and shutil.which("Rscript") is None:
        peers.remove("lme4")
    jobs: list[tuple[str, str, Path, Path]] = []
    for case in a.cases.split(","):
        if case == "insteval":
            jobs.append(("insteval", "InstEval (73,421 rows)", *insteval_files()))
        elif case == "growth":
            for s in a.sizes.split(","):
                n = int(float(s))
                jobs.append(("growth", f"growth, {s} rows", *growth_files(n)))
    results: dict[tuple[str, str], list[dict]] = {}
    gave_up: set[tuple[str, str]] = set()
    load0 = os.getloadavg()
    for case, label, path, warm in jobs:
        for r in range(a.repeat):
            for peer in peers:
                if (case, peer) in gave_up:
                    continue
                res = run_once(peer, case, path, warm, a.timeout)
                results.setdefault((label, peer), []).append(res)
                if res.get("timeout"):
                    gave_up.add((case, peer))
                print(f"{label:<24} {peer:<8} run {r + 1}: " + (f"{res['fit_s']:.3f} s" if "fit_s" in res else
                      ("timeout" if res.get("timeout") else "error " + res.get("error", "")[-200:])), file=sys.stderr, flush=True)
    lines = ["| case | peer | runs | fit (s), median | incl. read (s) | peer / ours | peak memory (MB) | REML criterion vs ours |",
             "|---|---|---|---|---|---|---|---|"]
    for _case, label, _path, _warm in jobs:
        ours = [x for x in results.get((label, "ours"), []) if "fit_s" in x]
        ours_t = statistics.median(x["fit_s"] for x in ours) if ours else float("nan")
        ours_c = ours[0]["crit"] if ours else float("nan")
        for peer in peers:
            runs = results.get((label, peer), [])
            ok = [x for x in runs if "fit_s" in x]
            if not ok:
                why = "timeout" if any(x.get("timeout") for x in runs) else ("not run" if not runs else "error")
                lines.append(f"| {label} | {peer} | 0 | {why} | | | | |")
                continue
            t = statistics.median(x["fit_s"] for x in ok)
            tot = statistics.median(x["total_s"] for x in ok)
            mem = max(x["maxrss_mb"] for x in ok)
            diff = ok[0]["crit"] - ours_c
            agree = "reference" if peer == "ours" else f"{diff:+.2e}" + ("" if abs(diff) <= 1e-6 * abs(ours_c) else " (differs)")
            ratio = "" if peer == "ours" else f"{t / ours_t:.2f}"
            lines.append(f"| {label} | {peer} | {len(ok)} | {t:.3f} | {tot:.3f} | {ratio} | {mem:.0f} | {agree} |")
    load1 = os.getloadavg()
    text = "\n".join(lines) + f"\n\nLoad average at start {load0[0]:.2f}, at end {load1[0]:.2f} (2 cores).\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    if a.json:
        Path(a.json).write_text(json.dumps({f"{k[0]} | {k[1]}": v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:6])
    else:
        main()
