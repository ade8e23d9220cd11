"""The benchmark suite: this package against statsmodels, glmm, mixedlm and lme4 on the same data.

    python benchmarks/run.py                                  # 1e4 .. 1e7, every peer, default skips
    python benchmarks/run.py --sizes 1e4,1e5 --peers ours,glmm --repeat 3
    python benchmarks/run.py --out benchmarks/latest.md       # also write the report to a file

For each size the generator's Parquet file (benchmarks/data/two_level_<n>.parquet, made if missing)
is fitted with  y ~ x * w + (x | g)  by REML by each peer, each run in a fresh process
(peers.py; lme4 through Rscript and lme4_fit.R on a CSV copy). Per run: the fit time (data already
in memory), the time including reading the file, and the peak memory (the process's max RSS, from
wait4). The median of the repeated runs is reported (peak memory: the largest).

Before any time is printed, every peer's estimates are checked against ours: fixed effects to
1e-4 relative, variance components to 1e-3 (tau scaled by sqrt(tau_ii tau_jj), sigma2 relative).
The table then marks each peer's agreement. Also timed: the floor (pandas reads the Parquet file
and makes one pass over it, a group-by sum of x*y), the seminar's model 4 on the HSB data, and
the start of `python -c "import multilevel"`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402 (a sibling script: importable once its folder is on sys.path, above)
import peers  # noqa: E402 (the same)

BETA_TOL = 1e-4
VC_TOL = 1e-3
DEFAULT_SIZES = "1e4,1e5,1e6,1e7"


def default_repeat(n: int) -> int:
    return 3 if n <= 1_000_000 else 1


def skip_reason(peer: str, n: int, have_r: str | None) -> str | None:
    """Why `peer` is not run at n rows (None: it is run). --no-skip overrides the size rules."""
    if peer == "lme4" and have_r:
        return have_r
    if peer == "statsmodels" and n > 100_000:
        return "skipped: 26 s at 1e5 rows, growing faster than linearly (hours at 1e7)"
    if peer == "lme4" and n >= 10_000_000:
        return "skipped: ~40 s at 1e6 rows; ~500 s and gigabytes at 1e7"
    return None


def r_missing() -> str | None:
    """None when Rscript with lme4 (and data.table, jsonlite) is available, else the reason."""
    if shutil.which("Rscript") is None:
        return "skipped: Rscript not installed (apt-get install r-cran-lme4)"
    probe = subprocess.run(
        ["Rscript", "-e", "for (p in c('lme4','data.table','jsonlite')) if (!requireNamespace(p, quietly=TRUE)) cat(p, '')"],
        capture_output=True, text=True)
    if probe.stdout.strip():
        return f"skipped: R package(s) missing: {probe.stdout.strip()}"
    return None


# --- one run in a fresh process -----------------------------------------------------------------

def run_process(cmd: list[str], timeout: float) -> dict:
    """Run cmd, return its RESULT json plus peak_mb (max RSS of the process tree it waited for,
    from wait4) and wall_s; or {'error': ...} on failure or timeout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                return {"error": f"timeout after {timeout:.0f} s"}
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text, errtext = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    for line in text.splitlines():
        if line.startswith(peers.RESULT_MARK):
            res = json.loads(line[len(peers.RESULT_MARK):])
            res["peak_mb"] = usage.ru_maxrss / 1024  # Linux: KB
            res["wall_s"] = wall
            return res
    tail = (errtext.strip().splitlines() or text.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail[:200]}"}


def run_peer(peer: str, path: Path | None, repeat: int, timeout: float) -> dict:
    """`repeat` fresh-process runs; medians of the times, the largest peak memory."""
    runs = []
    for i in range(repeat):
        print(f"  {peer:<12} run {i + 1}/{repeat}", file=sys.stderr, flush=True)
        res = run_process(peers.command(peer, path), timeout)
        if "error" in res:
            return res
        runs.append(res)
    best = dict(runs[0])
    for key in ("fit_s", "total_s", "read_s", "wall_s"):
        if all(r.get(key) is not None for r in runs):
            best[key] = statistics.median(r[key] for r in runs)
    best["peak_mb"] = max(r["peak_mb"] for r in runs)
    best["repeat"] = repeat
    return best


# --- agreement ------------------------------------------------------------------------------------

def agreement(ref: dict, other: dict) -> dict:
    """Max differences of `other` from `ref`: fixed effects (relative), variance components
    (tau / sqrt(tau_ii tau_jj) of ref, sigma2 relative), REML criterion (absolute)."""
    b0, b1 = np.asarray(ref["beta"]), np.asarray(other["beta"])
    t0, t1 = np.asarray(ref["tau"]), np.asarray(other["tau"])
    d = np.sqrt(np.diag(t0))
    beta_rel = float(np.max(np.abs(b1 - b0) / np.abs(b0)))
    tau_rel = float(np.max(np.abs(t1 - t0) / np.outer(d, d)))
    s2_rel = abs(other["sigma2"] - ref["sigma2"]) / ref["sigma2"]
    vc_rel = max(tau_rel, s2_rel)
    crit = None
    if ref.get("remlcrit") is not None and other.get("remlcrit") is not None:
        crit = other["remlcrit"] - ref["remlcrit"]
    return dict(beta_rel=beta_rel, vc_rel=vc_rel, remlcrit_diff=crit,
                ok=beta_rel <= BETA_TOL and vc_rel <= VC_TOL)


# --- formatting -----------------------------------------------------------------------------------

def fmt_s(t: float | None) -> str:
    if t is None:
        return "–"
    return f"{t:.3f}" if t < 10 else f"{t:.1f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    r = a / b
    return f"{r:.2f}" if r < 10 else f"{r:.0f}"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}"]
    for pkg in ("multilevel", "numpy", "scipy", "pandas", "pyarrow", "statsmodels", "glmm", "mixedlm"):
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    if shutil.which("Rscript"):
        r = subprocess.run(["Rscript", "-e", "cat(R.version$major, R.version$minor, as.character(packageVersion('lme4')))"],
                           capture_output=True, text=True).stdout.split()
        if len(r) == 3:
            parts.append(f"R {r[0]}.{r[1]}, lme4 {r[2]}")
    return ", ".join(parts)


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def git_state() -> str:
    root = HERE.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True,
                               text=True).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' + uncommitted changes in src/' if dirty else ''}"


def start_time(python: str, repeat: int = 10) -> dict:
    """Median wall time of `python -c "import multilevel"` and of `python -c pass`, and which
    heavy modules the import loads."""
    def median_run(code: str) -> float:
        subprocess.run([python, "-c", code], check=True)  # warm the file cache
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([python, "-c", code], check=True)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    heavy = ("pandas", "scipy", "formulaic", "pyarrow", "matplotlib", "dask", "statsmodels")
    probe = subprocess.run(
        [python, "-c", f"import sys, multilevel; print(' '.join(m for m in {heavy!r} if m in sys.modules))"],
        capture_output=True, text=True).stdout.strip()
    return dict(import_s=median_run("import multilevel"), bare_s=median_run("pass"), loaded=probe,
                first_use_s=median_run("import multilevel; multilevel.fit"))


# --- main -----------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated row counts (default %(default)s)")
    ap.add_argument("--peers", default=",".join(peers.PEERS),
                    help="comma-separated, from %(default)s (ours is the reference of the agreement check)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="runs per peer and size (default: 3 up to 1e6 rows, 1 beyond)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds before one run is stopped (default %(default)s)")
    ap.add_argument("--no-skip", action="store_true", help="run statsmodels and lme4 at every size too")
    ap.add_argument("--no-extras", action="store_true", help="leave out the floor, model 4 and the start time")
    ap.add_argument("--out", type=Path, help="also write the markdown report to this file")
    ap.add_argument("--json", type=Path, help="also write the raw results to this file")
    args = ap.parse_args()

    sizes = [generate.parse_size(s) for s in args.sizes.split(",")]
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(wanted) - set(peers.PEERS)
    if unknown:
        ap.error(f"unknown peer(s) {sorted(unknown)}; choose from {', '.join(peers.PEERS)}")
    have_r = r_missing() if "lme4" in wanted else None
    python = sys.executable

    load_before, git_before = os.getloadavg(), git_state()
    results: dict[int, dict[str, dict]] = {}
    for n in sizes:
        label = generate.size_label(n)
        print(f"size {label}: data", file=sys.stderr, flush=True)
        path = generate.ensure(n)
        repeat = args.repeat or default_repeat(n)
        results[n] = {}
        for peer in wanted:
            reason = skip_reason(peer, n, have_r)
            if reason and (not args.no_skip or (peer == "lme4" and have_r)):
                results[n][peer] = {"skipped": reason}
                continue
            if peer == "lme4":
                generate.csv_copy(n)
            results[n][peer] = run_peer(peer, path, repeat, args.timeout)
            if peer == "ours":
                results[n]["ours-path"] = run_peer("ours-path", path, repeat, args.timeout)
        if not args.no_extras:
            results[n]["floor"] = run_peer("floor", path, repeat, args.timeout)
    extras = {}
    if not args.no_extras:
        print("model 4 and start time", file=sys.stderr, flush=True)
        extras["model4"] = run_peer("model4", None, 1, args.timeout)
        extras["start"] = start_time(python)

    extras["load"] = (load_before, os.getloadavg())
    extras["git"] = (git_before, git_state())
    report = render(sizes, wanted, results, extras)
    print(report)
    if args.out:
        args.out.write_text(report)
    if args.json:
        args.json.write_text(json.dumps({"results": {str(k): v for k, v in results.items()}, "extras": extras},
                                        indent=1))


def render(sizes, wanted, results, extras) -> str:
    g0, g1 = extras.get("git", (git_state(), git_state()))
    gits = g0 if g0 == g1 else f"{g0} at the start, {g1} at the end (src/ changed during the run)"
    lines = [f"- Machine: {machine()}", f"- Versions: {versions()}", f"- multilevel at git {gits}",
             f"- Model: y ~ x * w + (x | g), REML; ~50 rows per group; date {time.strftime('%Y-%m-%d %H:%M')}"]
    if "load" in extras:
        (b1, b5, _), (e1, e5, _) = extras["load"]
        lines.append(f"- Load average (1 min / 5 min) at the start: {b1:.2f} / {b5:.2f}; at the end: {e1:.2f} / {e5:.2f} "
                     "(the runs themselves keep about one core busy; well above 1 means other work shared the 2 cores "
                     "and inflated the times)")
    lines.append("")

    # 1. the agreement check, before any time
    lines += ["### Agreement with ours (checked before any time is printed)", "",
              f"Tolerances: fixed effects {BETA_TOL:g} relative; variance components {VC_TOL:g} "
              "(tau / sqrt(tau_ii tau_jj), sigma2 relative).", "",
              "| size | peer | max rel. diff fixed effects | max rel. diff variance components | REMLcrit − ours | agrees |",
              "|---|---|---|---|---|---|"]
    verdict: dict[tuple[int, str], str] = {}
    for n in sizes:
        label = generate.size_label(n)
        ref = results[n].get("ours")
        for peer in wanted:
            res = results[n][peer]
            if "skipped" in res or "error" in res:
                verdict[n, peer] = "–"
                continue
            if peer == "ours":
                verdict[n, peer] = "reference"
                continue
            if ref is None or "beta" not in ref:
                verdict[n, peer] = "no reference"
                continue
            a = agreement(ref, res)
            res["agreement"] = a
            verdict[n, peer] = ("yes" if a["ok"] else "**NO**") + (
                "" if res.get("converged", True) else " (not converged)")
            crit = "–" if a["remlcrit_diff"] is None else f"{a['remlcrit_diff']:+.2e}"
            lines.append(f"| {label} | {peer} | {a['beta_rel']:.1e} | {a['vc_rel']:.1e} | {crit} | {verdict[n, peer]} |")
    lines.append("")

    # 2. the times
    lines += ["### Times and memory", "",
              "Fit: the fit call on data already in memory. Incl. read: reading the Parquet file with "
              "`pd.read_parquet` (lme4: the CSV copy with `data.table::fread`) and fitting; the row "
              "\"ours, `ml.fit(formula, path)`\" gives the file path to ml.fit in one call (its own process). "
              "Median of the runs; peak memory: max RSS of the run's process (interpreter, imports and data "
              "included), the largest over the runs. Ratios: peer / ours (above 1: ours is faster).", "",
              "| size | peer | runs | fit (s) | incl. read (s) | peak memory (MB) | peer / ours, fit | peer / ours, incl. read | agreement |",
              "|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        label = generate.size_label(n)
        ref = results[n].get("ours")
        ok_ref = ref is not None and "fit_s" in ref
        for peer in wanted:
            res = results[n][peer]
            if "skipped" in res or "error" in res:
                why = res.get("skipped") or "failed: " + res["error"]
                lines.append(f"| {label} | {peer} | – | – | – | – | – | – | {why} |")
                continue
            rf = fmt_ratio(res["fit_s"], ref["fit_s"]) if ok_ref and peer != "ours" else ("1" if peer == "ours" else "–")
            rt = fmt_ratio(res["total_s"], ref["total_s"]) if ok_ref and peer != "ours" else ("1" if peer == "ours" else "–")
            lines.append(f"| {label} | {peer} | {res['repeat']} | {fmt_s(res['fit_s'])} | {fmt_s(res['total_s'])} | "
                         f"{res['peak_mb']:.0f} | {rf} | {rt} | {verdict[n, peer]} |")
            op = results[n].get("ours-path") if peer == "ours" else None
            if op:
                if "error" in op:
                    lines.append(f"| {label} | ours, `ml.fit(formula, path)` | – | – | – | – | – | – | failed: {op['error']} |")
                else:
                    same = agreement(res, op)["ok"] if "beta" in res else False
                    lines.append(f"| {label} | ours, `ml.fit(formula, path)` | {op['repeat']} | – | {fmt_s(op['total_s'])} | "
                                 f"{op['peak_mb']:.0f} | – | – | {'same estimates' if same else '**differs from ours**'} |")
        fl = results[n].get("floor")
        if fl and "total_s" in fl:
            ratio = fmt_ratio(ref["total_s"], fl["total_s"]) if ok_ref else "–"
            op = results[n].get("ours-path", {})
            if "total_s" in op:
                ratio += f"; `ml.fit(path)` / floor = {fmt_ratio(op['total_s'], fl['total_s'])}"
            lines.append(f"| {label} | floor (read + one pass) | {fl['repeat']} | – | {fmt_s(fl['total_s'])} | "
                         f"{fl['peak_mb']:.0f} | – | ours / floor = {ratio} | – |")
    lines.append("")
    lines.append("Numeric columns the model uses (g, y, x, w as 8-byte numbers): "
                 + ", ".join(f"{generate.size_label(n)}: {32 * n / 2**20:.1f} MB" for n in sizes) + ".")
    paths = [(n, results[n]["ours-path"]) for n in sizes if "baseline_mb" in results[n].get("ours-path", {})]
    if paths:
        lines.append("Ours, `ml.fit(formula, path)`: peak memory above the process's size after the imports and a "
                     "warm-up fit (the interpreter, numpy, pandas, scipy, pyarrow and numba: the baseline), i.e. "
                     "what the data and the fit take, and its ratio to the numeric columns: "
                     + ", ".join(f"{generate.size_label(n)}: {op['peak_mb'] - op['baseline_mb']:.0f} MB "
                                 f"({(op['peak_mb'] - op['baseline_mb']) / (32 * n / 2**20):.2f}x; baseline "
                                 f"{op['baseline_mb']:.0f} MB)" for n, op in paths) + ".")
    floors = [(n, results[n]["floor"]) for n in sizes if "fit_s" in results[n].get("floor", {})]
    if floors:
        lines.append("Floor (pd.read_parquet + a group-by sum of x*y), of which reading: "
                     + ", ".join(f"{generate.size_label(n)}: {f['read_s']:.3f} s" for n, f in floors) + ".")
    lines.append("")

    if extras.get("model4") or extras.get("start"):
        lines += ["### Small things", ""]
        m4 = extras.get("model4", {})
        if "fit_s" in m4:
            lines.append(f"- Seminar's model 4 (`mathach ~ (sector + meanses) * cses + (cses | school)`, HSB, "
                         f"7185 rows, 160 schools): median {1000 * m4['fit_s']:.0f} ms, fastest "
                         f"{1000 * m4['total_s']:.0f} ms (20 fits after a warm-up).")
        elif m4:
            lines.append(f"- Seminar's model 4: failed: {m4.get('error')}")
        st = extras.get("start")
        if st:
            lines.append(f"- `python -c \"import multilevel\"`: {1000 * st['import_s']:.0f} ms "
                         f"(bare interpreter `python -c pass`: {1000 * st['bare_s']:.0f} ms; median of 10); "
                         f"heavy modules loaded by the import: {st['loaded'] or 'none'}. The names load on first "
                         f"use: `import multilevel; multilevel.fit` (pandas, scipy, formulaic) takes "
                         f"{1000 * st.get('first_use_s', float('nan')):.0f} ms; numba loads at the first fit.")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
