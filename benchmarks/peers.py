"""One runner per peer: fit  y ~ x * w + (x | g)  by REML from one Parquet file, in this process.

    python benchmarks/peers.py ours benchmarks/data/two_level_1e5.parquet
    python benchmarks/peers.py glmm benchmarks/data/two_level_1e5.parquet

Prints one JSON line (prefixed RESULT_MARK) with the estimates in a common layout

    beta:   [Intercept, x, w, x:w]
    tau:    [[tau00, tau01], [tau10, tau11]]   (random intercept, random slope of x)
    sigma2: level-1 variance
    remlcrit: the REML criterion (-2 REML log-likelihood, lme4's REMLcrit) where the peer gives it

and the times: fit_s (the fit call on data already in memory), read_s (pandas reading the Parquet
file) and total_s (reading and fitting); "ours-path" times ml.fit(formula, path) as one call.
Each runner first fits a small data set once (untimed), so that lazy imports and first-call set-up
are not counted. run.py starts one such process per run and takes its peak
memory (max RSS) from the operating system when the process ends; the process also reports its
own max RSS (maxrss_mb) as a check.

lme4 runs in R (lme4_fit.R), not here; `command("lme4", ...)` gives its command line.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT_MARK = "@@RESULT@@ "
FORMULA = "y ~ x * w + (x | g)"
COEFS = ["Intercept", "x", "w", "x:w"]
PYTHON_PEERS = ("ours", "statsmodels", "glmm", "mixedlm")
PEERS = PYTHON_PEERS + ("lme4",)


def _warmup_frame():
    """A small data set of the same shape (40 groups), for the untimed first fit."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    from generate import chunk_frame

    return chunk_frame(np.full(40, 50), 0, np.random.default_rng(1)).to_pandas()


def _read(path):
    import pandas as pd

    return pd.read_parquet(path)


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# --- the peers: each returns (estimates dict, fit_s, total_s, notes) -----------------------------

def _ours_estimates(f) -> dict:
    tau = f.tau.loc[["Intercept", "x"], ["Intercept", "x"]].to_numpy()
    return dict(beta=[float(f.beta[c]) for c in COEFS], tau=tau.tolist(), sigma2=float(f.sigma2),
                remlcrit=float(f.deviance), converged=bool(getattr(f.optimizer, "converged", True)))


def _measure(fit, path):
    """One untimed warm-up fit on small data, then the timed read and the timed fit."""
    fit(_warmup_frame())
    df, read_s = _timed(_read, path)
    r, fit_s = _timed(fit, df)
    return r, read_s, fit_s


def run_ours(path):
    """Ours by the peers' protocol: pandas reads the file, then ml.fit on the DataFrame."""
    import multilevel as ml

    ml.fit(FORMULA, _warmup_frame())
    df, read_s = _timed(_read, path)
    f, fit_s = _timed(ml.fit, FORMULA, df)
    return {**_ours_estimates(f), "read_s": read_s}, fit_s, read_s + fit_s, "pd.read_parquet, then ml.fit(formula, df)"


def _rss_mb() -> float:
    """The process's resident size now (Linux /proc), in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_ours_path(path):
    """Ours as a user writes it: the file path given to ml.fit (one call, reading included).
    Also reports baseline_mb: the process's size after the imports and the warm-up fit, before
    the data (so that peak - baseline is what the data and the fit take)."""
    import multilevel as ml

    ml.fit(FORMULA, _warmup_frame())
    baseline = _rss_mb()
    f, total_s = _timed(ml.fit, FORMULA, str(path))
    return {**_ours_estimates(f), "baseline_mb": baseline}, None, total_s, "ml.fit(formula, path)"


def run_statsmodels(path):
    import statsmodels.formula.api as smf

    def fit(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return smf.mixedlm("y ~ x*w", data, groups="g", re_formula="~x").fit(reml=True)

    r, read_s, fit_s = _measure(fit, path)
    tau = r.cov_re.to_numpy()  # index Group, x; already on the data scale (not divided by scale)
    est = dict(beta=[float(r.fe_params[c]) for c in COEFS], tau=tau.tolist(), sigma2=float(r.scale),
               remlcrit=float(-2 * r.llf), converged=bool(r.converged))
    est["read_s"] = read_s
    return est, fit_s, read_s + fit_s, "smf.mixedlm(...).fit(reml=True), default optimizer"


def run_glmm(path):
    import glmm

    def fit(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return glmm.fit(data, "y ~ x * w + (1 + x | g)", reml=True, satterthwaite=False)

    r, read_s, fit_s = _measure(fit, path)
    names = list(r.names)
    b = dict(zip(names, map(float, r.beta)))
    b["Intercept"] = b.pop("(Intercept)")
    t00, t10, t11 = map(float, r.varcorr[0])  # lower triangle of the one block
    est = dict(beta=[b[c] for c in COEFS], tau=[[t00, t10], [t10, t11]], sigma2=float(r.dispersion),
               remlcrit=float(-2 * r.loglik), converged=bool(r.converged))
    est["read_s"] = read_s
    return est, fit_s, read_s + fit_s, "glmm.fit(..., reml=True, satterthwaite=False)"


def run_mixedlm(path):
    import mixedlm

    def fit(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mixedlm.lmer(FORMULA, data, REML=True)

    r, read_s, fit_s = _measure(fit, path)
    b = dict(r.fixef())
    b["Intercept"] = b.pop("(Intercept)")
    vc = r.VarCorr()
    est = dict(beta=[float(b[c]) for c in COEFS], tau=vc.get_cov("g").tolist(), sigma2=float(vc.residual),
               remlcrit=float(r.REMLcrit()), converged=bool(getattr(r, "converged", True)))
    est["read_s"] = read_s
    return est, fit_s, read_s + fit_s, "mixedlm.lmer(formula, df, REML=True), default control"


def run_floor(path):
    """The floor: read the Parquet file into pandas and make one pass over it (a group-by sum of
    x * y), the least any fit that reads the file and builds per-group summaries must do."""
    import pandas as pd

    def one_pass(df):
        return (df["x"] * df["y"]).groupby(df["g"]).sum()

    one_pass(_warmup_frame())
    t0 = time.perf_counter()
    df = pd.read_parquet(path)
    read_s = time.perf_counter() - t0
    one_pass(df)
    total_s = time.perf_counter() - t0
    return {"read_s": read_s}, total_s - read_s, total_s, "pd.read_parquet + groupby-sum of x*y"


def run_model4(_path=None, repeat: int = 20):
    """The seminar's model 4 on the shipped HSB data: median of `repeat` fits after one warm-up."""
    import statistics

    import multilevel as ml

    hsb = ml.datasets.hsb()
    formula = "mathach ~ (sector + meanses) * cses + (cses | school)"
    ml.fit(formula, hsb)
    times = [_timed(ml.fit, formula, hsb)[1] for _ in range(repeat)]
    return {}, statistics.median(times), min(times), f"median (fit_s) and min (total_s) of {repeat} fits"


RUNNERS = {"floor": run_floor, "model4": run_model4, "ours": run_ours, "ours-path": run_ours_path,
           "statsmodels": run_statsmodels, "glmm": run_glmm, "mixedlm": run_mixedlm}


def command(peer: str, path: Path | None, python: str = sys.executable) -> list[str]:
    """The command line that runs one timed fit of `peer` on `path` in a fresh process ("floor":
    read + one pass; "model4": the seminar's model 4, no path). lme4 reads the CSV copy next to
    the Parquet file (R's arrow package is not installed)."""
    if path is None:
        return [python, str(HERE / "peers.py"), peer]
    if peer == "lme4":
        return ["Rscript", str(HERE / "lme4_fit.R"), str(Path(path).with_suffix(".csv"))]
    return [python, str(HERE / "peers.py"), peer, str(path)]


def main() -> None:
    peer = sys.argv[1]
    path = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    est, fit_s, total_s, notes = RUNNERS[peer](path)
    out = dict(peer=peer, fit_s=fit_s, total_s=total_s, notes=notes,
               maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **est)
    print(RESULT_MARK + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
