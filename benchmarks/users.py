"""Issue 13's comparison: the fit as users meet it, side by side with glmm, mixedlm and lme4, in one run.

    python benchmarks/users.py                                    # everything (about 20 minutes on 2 cores)
    python benchmarks/users.py --sizes 1e4,1e5 --repeat 3         # small sizes, every case and peer
    python benchmarks/users.py --cases int-shuffled,text-shuffled --peers ours,glmm,mixedlm
    python benchmarks/users.py --out /tmp/users.md --json /tmp/users.json

Model  y ~ x1*w1 + x2 + w2 + (1 + x1 | g)  by REML (the factor case adds a 20-level text predictor f),
on generate.py's issue-13 files (users_<n>_<ids>_<order>.parquet, made if missing). Cases (CASES):

    int-shuffled, text-shuffled   integer / text ids, rows in random order (the acceptance)
    int-sorted, text-sorted       the same rows sorted by group
    factor                        text ids, shuffled, plus the factor f
    csv                           text ids, shuffled, read from the CSV copy (pd.read_csv; ours also
                                  ml.fit(formula, "file.csv"))
    first                         the first fit of a new process (first_fit.py): HSB model 4 and 10^4 rows,
                                  ours with an empty and a warm cache, /usr/bin/time

Each run of each peer is a new process (peers.py; lme4: lme4_fit.R on the CSV copy), which first
reads and fits a small file of the same kind untimed, then times reading the file and the fit
(run.py's protocol). Ours also runs `ml.fit(formula, path)` on the Parquet file (text-shuffled) and
the CSV file (csv). The runs are interleaved (run r of every peer, then run r + 1); medians of
--repeat runs (default 3 at every size: the acceptance asks for a median of at least 3).

Every peer's estimates are checked against ours in the same case before any time is printed, and
ours against ours across the cases of one size (the same rows: the same estimates).

Skipped by default (--no-skip runs them): lme4 at 1e7 (~500 s), lme4 at 1e6 outside the two
acceptance cases (~35 s a run), statsmodels (not a default peer; beyond 1e5 rows when asked), and,
at 1e7, the cases other than the acceptance's (the default run's length).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import first_fit  # noqa: E402 (sibling scripts: importable once their folder is on sys.path, above)
import generate  # noqa: E402
import peers  # noqa: E402
import run  # noqa: E402

DEFAULT_SIZES = "1e4,1e5,1e6,1e7"
DEFAULT_PEERS = "ours,glmm,mixedlm,lme4"
ACCEPTANCE = ("int-shuffled", "text-shuffled")


@dataclass(frozen=True)
class Case:
    """One way users meet the fit: the id kind, the row order, the model and the file format."""

    ids: str
    order: str
    model: str = "users"
    fmt: str = "parquet"


CASES = {
    "int-shuffled": Case("int", "shuffled"),
    "text-shuffled": Case("text", "shuffled"),
    "int-sorted": Case("int", "sorted"),
    "text-sorted": Case("text", "sorted"),
    "factor": Case("text", "shuffled", model="factor"),
    "csv": Case("text", "shuffled", fmt="csv"),
}
ALL_CASES = (*CASES, "first")


def skip_reason(peer: str, case: str, n: int, have_r: str | None, no_skip: bool, explicit_cases: bool) -> str | None:
    """Why `peer` is not run on `case` at n rows (None: it is run); module doc."""
    if peer == "lme4" and have_r:
        return have_r
    if peer == "lme4" and case == "csv":
        return "lme4 reads the CSV copy in every case: see text-shuffled's incl. read"
    if no_skip:
        return None
    if n >= 10_000_000 and case not in ACCEPTANCE and not explicit_cases:
        return "skipped at 1e7 in the default run (its length); --cases or --no-skip runs it"
    if peer == "lme4" and n >= 10_000_000:
        return "skipped: ~40 s at 1e6 rows; ~500 s and gigabytes at 1e7"
    if peer == "lme4" and n >= 1_000_000 and case not in ACCEPTANCE:
        return "skipped at 1e6 outside the acceptance cases: ~35 s a run (--no-skip runs it)"
    if peer == "statsmodels" and n > 100_000:
        return "skipped: ~5 s at 1e5 rows, growing faster than linearly"
    return None


def data_file(n: int, case: Case) -> Path:
    path = generate.ensure_users(n, case.ids, case.order)
    if case.fmt == "csv":
        return generate.csv_copy_of(path)
    return path


def run_case(n: int, name: str, case: Case, wanted: list[str], repeat: int, timeout: float,
             skip: dict[str, str | None]) -> dict[str, dict]:
    """`repeat` interleaved runs of every peer (and ours from the path where the case reads a
    file as users give it); medians of the times, the largest peak memory."""
    path = data_file(n, case)
    runners = [p for p in wanted if not skip.get(p)]
    if "ours" in wanted and name in ("text-shuffled", "csv"):
        runners.append("ours-path")
    if "lme4" in runners:
        generate.csv_copy_of(path)
    runs: dict[str, list[dict]] = {p: [] for p in runners}
    out: dict[str, dict] = {p: {"skipped": r} for p, r in skip.items() if r}
    for r in range(repeat):
        for p in runners:
            if p in out:  # failed before
                continue
            print(f"  {generate.size_label(n)} {name:<13} {p:<10} run {r + 1}/{repeat}", file=sys.stderr, flush=True)
            res = run.run_process(peers.command(p, path, model=case.model), timeout)
            if "error" in res:
                out[p] = res
                continue
            if "coefs" in res:  # lme4's names are R's; the Python peers' are canonical already
                res["coefs"] = peers.canonical(res["coefs"])
            runs[p].append(res)
    for p, rs in runs.items():
        if p in out or not rs:
            continue
        best = dict(rs[0])
        for key in ("fit_s", "total_s", "read_s", "wall_s"):
            if all(x.get(key) is not None for x in rs):
                best[key] = statistics.median(x[key] for x in rs)
                best[key + "_runs"] = [x[key] for x in rs]
        best["peak_mb"] = max(x["peak_mb"] for x in rs)
        best["repeat"] = len(rs)
        out[p] = best
    return out


# --- agreement ------------------------------------------------------------------------------------

def agreement(ref: dict, other: dict) -> dict:
    """run.agreement over the coefficients by canonical name (a coefficient one side lacks: no
    agreement), the variance components and the REML criterion."""
    a, b = ref["coefs"], other["coefs"]
    names = sorted(a)
    if set(a) != set(b):
        return dict(beta_rel=float("inf"), vc_rel=float("inf"), remlcrit_diff=None, ok=False,
                    why=f"coefficients differ: {sorted(set(a) ^ set(b))}")
    return run.agreement({**ref, "beta": [a[k] for k in names]}, {**other, "beta": [b[k] for k in names]})


def check(results: dict, sizes: list[int]) -> list[str]:
    """The agreement table's lines; each result gets its verdict ("agree")."""
    lines = ["### Agreement (checked before any time is printed)", "",
             f"Each peer against ours in the same case; ours against ours in the first case of the size "
             f"(the same rows). Tolerances: fixed effects {run.BETA_TOL:g} relative, variance components "
             f"{run.VC_TOL:g} (tau / sqrt(tau_ii tau_jj), sigma2 relative).", "",
             "| size | case | peer | against | fixed effects | variance components | REMLcrit − ref | agrees |",
             "|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        label = generate.size_label(n)
        refs: dict[str, tuple[str, dict]] = {}  # model -> (case, ours' result): the first case of the model
        for name, res in results.get(n, {}).items():
            ours = res.get("ours")
            for peer, r in res.items():
                if "coefs" not in r:
                    r["agree"] = "–"
                    continue
                if peer == "ours":
                    if r["model"] not in refs:
                        refs[r["model"]] = (name, r)
                        r["agree"] = "reference"
                        continue
                    against, ref = f"ours, {refs[r['model']][0]}", refs[r["model"]][1]
                elif ours is None or "coefs" not in ours:
                    r["agree"] = "no reference"
                    continue
                else:
                    against, ref = "ours", ours
                a = agreement(ref, r)
                r["agreement"] = a
                r["agree"] = ("yes" if a["ok"] else "**NO**") + ("" if r.get("converged", True) else " (not converged)")
                crit = "–" if a["remlcrit_diff"] is None else f"{a['remlcrit_diff']:+.2e}"
                lines.append(f"| {label} | {name} | {peer} | {against} | {a['beta_rel']:.1e} | {a['vc_rel']:.1e} | "
                             f"{crit} | {r['agree']}{' (' + a['why'] + ')' if 'why' in a else ''} |")
                if peer == "ours" and a["ok"]:
                    r["agree"] = "reference"
    return [*lines, ""]


# --- the tables -----------------------------------------------------------------------------------

def cell(res: dict | None, key: str) -> float | None:
    return None if not res or key not in res or res[key] is None else float(res[key])


def why(res: dict | None) -> str:
    if not res:
        return "–"
    if "skipped" in res:
        return "skipped"
    if "error" in res:
        return "failed"
    if res.get("agree", "").startswith("**NO"):
        return "disagrees"
    return ""


def peer_cells(results: dict, peer: str, ours: float | None, key: str) -> list[str]:
    t = cell(results.get(peer), key)
    if t is None:
        return [why(results.get(peer)) or "–", "–"]
    flag = " (disagrees)" if why(results.get(peer)) == "disagrees" else ""
    return [run.fmt_s(t) + flag, run.fmt_ratio(t, ours)]


def table(title: str, note: str, rows: list[tuple[str, dict, str, str]], others: list[str]) -> list[str]:
    """rows: (row label, the case's results, ours' key in it, the peers' key)."""
    head = "| " + " | ".join(["rows, ids, order", "ours (s)"] + [f"{p} (s) | {p} / ours" for p in others]) + " |"
    lines = [f"### {title}", "", note, "", head, "|" + "---|" * (2 + 2 * len(others))]
    for label, res, ours_key, key in rows:
        ours_peer, ours_field = ours_key.split(":")
        ours = cell(res.get(ours_peer), ours_field)
        cells = [run.fmt_s(ours) if ours is not None else (why(res.get(ours_peer)) or "–")]
        for p in others:
            cells += peer_cells(res, p, ours, key)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def render(results: dict, sizes: list[int], wanted: list[str], cases: list[str], first: str | None,
           meta: dict) -> str:
    others = [p for p in wanted if p != "ours"]
    lines = [f"- Machine: {run.machine()}", f"- Versions: {run.versions()}", f"- multilevel at git {meta['git']}",
             f"- Model: y ~ x1*w1 + x2 + w2 + (1 + x1 | g), REML (factor: + f, 20 levels); ~50 rows per group; "
             f"date {meta['date']}; {meta['minutes']:.1f} minutes",
             f"- Load average (1 min / 5 min) at the start: {meta['load'][0][0]:.2f} / {meta['load'][0][1]:.2f}; "
             f"at the end: {meta['load'][1][0]:.2f} / {meta['load'][1][1]:.2f} (2 cores: well above 1 means "
             "other work shared them)", ""]
    lines += check(results, sizes)
    ratio_note = "Ratios peer / ours (above 1: ours is faster); medians of the runs."

    order_cases = [c for c in ("int-shuffled", "text-shuffled", "int-sorted", "text-sorted") if c in cases]
    if order_cases:
        rows = [(f"{generate.size_label(n)}, {CASES[c].ids}, {CASES[c].order}", results[n][c], "ours:fit_s", "fit_s")
                for n in sizes for c in order_cases if c in results[n]]
        lines += table("Ids and row order: the fit, data in memory",
                       "The fit call on a pandas DataFrame already read (R: a data.frame). " + ratio_note, rows, others)
        verdict = acceptance(results, sizes)
        if verdict:
            lines += ["Acceptance (faster than glmm and mixedlm, shuffled rows, text and integer ids): " + verdict, ""]
    if "factor" in cases:
        rows = [(f"{generate.size_label(n)}, text, shuffled, + f", results[n]["factor"], "ours:fit_s", "fit_s")
                for n in sizes if "factor" in results[n]]
        lines += table("A factor predictor (f: text, 20 levels): the fit, data in memory",
                       "`... + f + (1 + x1 | g)`; the fit call on a DataFrame already read. " + ratio_note, rows, others)
    file_rows = []
    for n in sizes:
        if "text-shuffled" in cases and "text-shuffled" in results[n]:
            file_rows.append((f"{generate.size_label(n)}, text, shuffled, Parquet", results[n]["text-shuffled"],
                              "ours-path:total_s", "total_s"))
        if "csv" in cases and "csv" in results[n]:
            res = dict(results[n]["csv"])
            if "lme4" in results[n].get("text-shuffled", {}):
                res["lme4"] = results[n]["text-shuffled"]["lme4"]
            file_rows.append((f"{generate.size_label(n)}, text, shuffled, CSV", res, "ours-path:total_s", "total_s"))
    if file_rows:
        lines += table("Files: from the file to the estimates",
                       "Ours: `ml.fit(formula, path)`, one call. The peers: `pd.read_parquet` / `pd.read_csv` of the "
                       "model's columns, then the fit (lme4 in both rows: `data.table::fread` of the CSV copy, R having "
                       "no Parquet reader here; so its Parquet row is its CSV time). " + ratio_note, file_rows, others)
        alt = [(lab, r, "ours:total_s", "total_s") for lab, r, _, _ in file_rows]
        lines += table("Files, ours read by pandas: read + fit",
                       "The same, ours as the peers: pandas reads the file, then `ml.fit(formula, df)`. " + ratio_note,
                       alt, others)
    if first:
        lines += ["### The first fit of a new process", "", first, ""]
    lines += details(results, sizes)
    return "\n".join(lines)


def acceptance(results: dict, sizes: list[int]) -> str:
    """'met' / what is not, over the sizes and the acceptance cases that ran."""
    misses, checked = [], 0
    for n in sizes:
        for c in ACCEPTANCE:
            res = results[n].get(c)
            if not res:
                continue
            ours = cell(res.get("ours"), "fit_s")
            for p in ("glmm", "mixedlm"):
                t = cell(res.get(p), "fit_s")
                if ours is None or t is None:
                    continue
                checked += 1
                if t <= ours:
                    misses.append(f"{generate.size_label(n)} {c} vs {p} ({run.fmt_ratio(t, ours)})")
    if not checked:
        return ""
    return f"met in all {checked} comparisons" if not misses else f"**not met** ({len(misses)} of {checked}): " + "; ".join(misses)


def details(results: dict, sizes: list[int]) -> list[str]:
    lines = ["### Every run", "",
             "Fit: data in memory; incl. read: the file read (as in the case) and the fit; peak memory: the process's "
             "max RSS (interpreter and imports included), the largest of the runs; runs: the fit times (or the "
             "incl.-read times of `ours-path`).", "",
             "| size | case | peer | runs | fit (s) | incl. read (s) | peak memory (MB) | agreement | each run (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        for name, res in results[n].items():
            for peer, r in res.items():
                label = generate.size_label(n)
                if "skipped" in r or "error" in r:
                    lines.append(f"| {label} | {name} | {peer} | – | – | – | – | {r.get('skipped') or 'failed: ' + r['error']} | – |")
                    continue
                each = r.get("fit_s_runs") or r.get("total_s_runs") or []
                lines.append(f"| {label} | {name} | {peer} | {r['repeat']} | {run.fmt_s(r.get('fit_s'))} | "
                             f"{run.fmt_s(r.get('total_s'))} | {r['peak_mb']:.0f} | {r.get('agree', '–')} | "
                             + ", ".join(f"{t:.3f}" for t in each) + " |")
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated row counts (default %(default)s)")
    ap.add_argument("--peers", default=DEFAULT_PEERS,
                    help=f"comma-separated, from {','.join(peers.PEERS)} (default %(default)s; ours is the reference)")
    ap.add_argument("--cases", default=",".join(ALL_CASES), help="comma-separated, from %(default)s")
    ap.add_argument("--repeat", type=int, default=3, help="runs per peer, case and size (default %(default)s)")
    ap.add_argument("--first-repeat", type=int, default=3, help="runs of each first-fit measurement (default %(default)s)")
    ap.add_argument("--install-step", help="first fit: a shell command run untimed with the empty cache before the "
                    "cold run (first_fit.py)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds before one run is stopped (default %(default)s)")
    ap.add_argument("--no-skip", action="store_true", help="run every peer and case at every size (module doc)")
    ap.add_argument("--out", type=Path, help="also write the markdown report to this file")
    ap.add_argument("--json", type=Path, help="also write the raw results to this file")
    args = ap.parse_args()

    sizes = [generate.parse_size(s) for s in args.sizes.split(",")]
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = (set(wanted) - set(peers.PEERS)) | (set(cases) - set(ALL_CASES))
    if bad:
        ap.error(f"unknown peer(s) or case(s) {sorted(bad)}; peers: {', '.join(peers.PEERS)}; cases: {', '.join(ALL_CASES)}")
    explicit = args.cases != ",".join(ALL_CASES)
    have_r = run.r_missing() if "lme4" in wanted else None

    t0, load0, git0 = time.time(), os.getloadavg(), run.git_state()
    results: dict[int, dict[str, dict]] = {}
    for n in sizes:
        results[n] = {}
        data_cases = [c for c in cases if c in CASES]
        if data_cases:
            print(f"size {generate.size_label(n)}: data", file=sys.stderr, flush=True)
            kinds = sorted({(CASES[c].ids, CASES[c].order) for c in data_cases})
            missing = [k for k in kinds if not generate.users_path(n, *k).exists()]
            if missing:
                generate.write_users(n, kinds=missing)
        for name in data_cases:
            skip = {p: skip_reason(p, name, n, have_r, args.no_skip, explicit) for p in wanted}
            if all(skip.values()):
                results[n][name] = {p: {"skipped": r} for p, r in skip.items()}
                continue
            results[n][name] = run_case(n, name, CASES[name], wanted, args.repeat, args.timeout, skip)
    first_times, first = None, None
    if "first" in cases:
        fpeers = [p for p in wanted if p in first_fit.PEERS]
        first_times = first_fit.measure([str(HERE.parent / "src")], fpeers, args.first_repeat,
                                        install_step=args.install_step)
        first = first_fit.render(first_times, [str(HERE.parent / "src")], fpeers, args.first_repeat)
        if "PYTHONPATH" not in os.environ:
            first += "\n(ours: the source tree next to benchmarks/.)"
    meta = dict(git=git0 if git0 == run.git_state() else f"{git0} at the start, {run.git_state()} at the end",
                date=time.strftime("%Y-%m-%d %H:%M"), minutes=(time.time() - t0) / 60, load=(load0, os.getloadavg()))
    report = render(results, sizes, wanted, cases, first, meta)
    print(report)
    if args.out:
        args.out.write_text(report)
    if args.json:
        args.json.write_text(json.dumps({"results": {str(k): v for k, v in results.items()}, "first_fit": first_times,
                                         "meta": meta}, indent=1, default=str))


if __name__ == "__main__":
    main()
