"""The first fit of a new process, ours with an empty and a warm compile cache, side by side with
the peers' first fit in a new process; wall time from /usr/bin/time -f %e.

    python benchmarks/first_fit.py                              # this checkout and every peer, 3 runs each
    python benchmarks/first_fit.py --peers glmm --repeat 5
    python benchmarks/first_fit.py --src old/src --src src      # two source trees, interleaved

Each run is a new process, timed from outside by /usr/bin/time (wall clock: the interpreter's start,
the imports, reading the data and the fit):

- ours, "empty cache": `python -c "import multilevel as ml; ml.fit(<model>, <data>)"` with
  MULTILEVEL_CACHE_DIR a new empty folder of mode 700 (a fresh install: every compiled loop the fit
  needs is compiled, or run without compiling and compiled in the background for next time);
  "warm cache": the same command again with the folder the first run filled (after the background
  compilation it started, if any, has finished);
- glmm, mixedlm: `python -c "import pandas as pd, <peer>; <peer>.fit(..., pd.read_<fmt>(<file>))"`;
- lme4: `Rscript -e "library(lme4); lmer(<model>, read.csv(<file>))"`.
The peers keep no compile cache: each new process of theirs is their first fit.

Cases: the seminar's model 4 on HSB (ours: `ml.datasets.hsb()`, the acceptance's call; the peers
read the same columns from benchmarks/data/hsb_model4.csv, written from it), and issue 13's model
`y ~ x1*w1 + x2 + w2 + (1 + x1 | g)` on the 10^4-row file with text ids and shuffled rows (each
reads the Parquet file; lme4 its CSV copy).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402 (a sibling script: importable once its folder is on sys.path, above)

TIME = "/usr/bin/time"
PEERS = ("ours", "glmm", "mixedlm", "lme4")
M4_OURS = "mathach ~ (sector + meanses) * cses + (cses | school)"
# mixedlm's parser takes no parenthesised sums: the same model written out, for the peers
M4 = "mathach ~ sector + meanses + cses + sector:cses + meanses:cses + (1 + cses | school)"
USERS = "y ~ x1*w1 + x2 + w2 + (1 + x1 | g)"


def hsb_csv() -> Path:
    """benchmarks/data/hsb_model4.csv: model 4's columns of ml.datasets.hsb() (written once)."""
    path = generate.DATA_DIR / "hsb_model4.csv"
    if not path.exists():
        import multilevel as ml

        path.parent.mkdir(parents=True, exist_ok=True)
        ml.datasets.hsb()[["school", "mathach", "sector", "meanses", "cses"]].to_csv(path, index=False)
    return path


def cases() -> dict[str, dict[str, list[str] | str]]:
    """Per case: ours' code, and each peer's command line (the data files made if missing)."""
    hsb = hsb_csv()
    users = generate.ensure_users(10_000, "text", "shuffled")
    users_csv = generate.csv_copy_of(users)
    py = sys.executable

    def python_peer(peer: str, formula: str, path: Path) -> list[str]:
        read = f"pd.read_csv({str(path)!r})" if path.suffix == ".csv" else f"pd.read_parquet({str(path)!r})"
        call = {"glmm": f"glmm.fit({read}, {formula!r}, reml=True, satterthwaite=False)",
                "mixedlm": f"mixedlm.lmer({formula!r}, {read}, REML=True)"}[peer]
        return [py, "-c", f"import warnings; warnings.simplefilter('ignore'); import pandas as pd, {peer}; {call}"]

    def lme4(formula: str, path: Path) -> list[str]:
        return ["Rscript", "-e", f"suppressPackageStartupMessages(library(lme4)); "
                f"invisible(lmer({formula}, read.csv({str(path)!r})))"]

    return {
        "HSB model 4": {
            "ours": f"import multilevel as ml; ml.fit({M4_OURS!r}, ml.datasets.hsb())",
            "glmm": python_peer("glmm", M4, hsb), "mixedlm": python_peer("mixedlm", M4, hsb), "lme4": lme4(M4, hsb)},
        "10^4 rows, text ids, shuffled (Parquet file)": {
            "ours": f"import multilevel as ml; ml.fit({USERS!r}, {str(users)!r})",
            "glmm": python_peer("glmm", USERS, users), "mixedlm": python_peer("mixedlm", USERS, users),
            "lme4": lme4(USERS, users_csv)},
    }


def wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """The wall time of cmd in seconds, from /usr/bin/time -f %e (0.01 s resolution); from the
    clock around the process where /usr/bin/time is missing."""
    if not os.path.exists(TIME):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run([TIME, "-f", "%e", "-o", out.name, *cmd], env=env, check=True, stdout=subprocess.DEVNULL)
        return float(out.read().strip().splitlines()[-1])


def measure(srcs: list[str], peers: list[str], repeat: int, only: list[str] | None = None,
            install_step: str | None = None) -> dict:
    """{case: {column: [seconds per run]}}; columns "ours <src> cold", "ours <src> warm" and the
    peers'. The runs are interleaved (run r of every column, then run r + 1). install_step: a
    shell command run (untimed) with the new cache folder before the cold run, for a package
    whose install does work ahead of the first fit (e.g. compiles into its cache)."""
    table = {name: spec for name, spec in cases().items() if not only or name in only}
    have_r = shutil.which("Rscript") is not None
    times: dict[str, dict[str, list[float]]] = {name: {} for name in table}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeat):
            for name, spec in table.items():
                print(f"  first fit: {name}, run {r + 1}/{repeat}", file=sys.stderr, flush=True)
                for i, src in enumerate(srcs if "ours" in peers else []):
                    cache = os.path.join(tmp, f"cache-{r}-{i}-{len(times[name])}-{abs(hash(name))}")
                    os.mkdir(cache, 0o700)
                    env = {**os.environ, "PYTHONPATH": src, "MULTILEVEL_CACHE_DIR": cache}
                    if install_step:
                        subprocess.run(install_step, shell=True, env=env, check=True, stdout=subprocess.DEVNULL)
                    cmd = [sys.executable, "-c", str(spec["ours"])]
                    times[name].setdefault(f"ours {src} cold", []).append(wall(cmd, env))
                    settled(cache)  # "warm": after what the first fit left compiling in the background
                    times[name].setdefault(f"ours {src} warm", []).append(wall(cmd, env))
                for peer in peers:
                    if peer == "ours" or (peer == "lme4" and not have_r):
                        continue
                    times[name].setdefault(peer, []).append(wall(list(spec[peer])))
    return times


def render(times: dict, srcs: list[str], peers: list[str], repeat: int) -> str:
    """One markdown table: rows case x (ours' cache), columns ours and each peer with peer / ours."""
    others = [p for p in peers if p != "ours"]
    head = "| case | ours: cache | ours (s) | " + " | ".join(f"{p} (s) | {p} / ours" for p in others) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(others))]
    for name, cols in times.items():
        for src in srcs:
            for state, label in (("cold", "empty (first fit of a fresh install)"), ("warm", "warm (new process)")):
                ours = cols.get(f"ours {src} {state}")
                ours_m = statistics.median(ours) if ours else None
                where = label if len(srcs) == 1 else f"{label}, {src}"
                cells = []
                for p in others:
                    m = statistics.median(cols[p]) if cols.get(p) else None
                    cells += ["–" if m is None else f"{m:.2f}",
                              "–" if m is None or not ours_m else f"{m / ours_m:.2f}"]
                lines.append(f"| {name} | {where} | {'–' if ours_m is None else f'{ours_m:.2f}'} | "
                             + " | ".join(cells) + " |")
    hsb = times.get("HSB model 4", {})
    for src in srcs:
        cold, warm = hsb.get(f"ours {src} cold"), hsb.get(f"ours {src} warm")
        if cold and warm:
            c, w = statistics.median(cold), statistics.median(warm)
            lines += ["", f"Acceptance{'' if len(srcs) == 1 else f' ({src})'}: HSB model 4, the first fit with an empty cache "
                      f"{c:.2f} s (target under 2 s: {'met' if c < 2 else '**not met**'}), a new process with a warm "
                      f"cache {w:.2f} s (target under 1 s: {'met' if w < 1 else '**not met**'})."]
    timer = "/usr/bin/time -f %e" if os.path.exists(TIME) else "the clock around the process (no /usr/bin/time)"
    lines += ["", f"Wall seconds of a new process ({timer}), median of {repeat} runs; ratios peer / ours "
              "(above 1: ours is faster). The peers keep no compile cache: their columns are the same in both rows."]
    return "\n".join(lines)


def settled(cache: str, timeout: float = 300.0) -> None:
    """Wait until no background compilation works in `cache` (its `.busy-<pid>` files, issue 13)."""
    folder = Path(cache) / "compiled"
    end = time.monotonic() + timeout
    while folder.is_dir() and any(p.name.startswith(".busy-") for p in folder.iterdir()) and time.monotonic() < end:
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", action="append", help="a source tree (the folder holding multilevel/); repeatable")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated, from %(default)s")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--install-step", help="a shell command run untimed with the empty cache before the cold run "
                    "(what an install does ahead of the first fit, if anything)")
    args = ap.parse_args()
    srcs = args.src or [str(HERE.parent / "src")]
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    print(render(measure(srcs, peers, args.repeat, install_step=args.install_step), srcs, peers, args.repeat))


if __name__ == "__main__":
    main()
