"""One runner per peer: fit a model by REML from one data file, in this process.

    python benchmarks/peers.py ours benchmarks/data/two_level_1e5.parquet
    python benchmarks/peers.py glmm benchmarks/data/two_level_1e5.parquet
    python benchmarks/peers.py glmm benchmarks/data/users_1e5_text_shuffled.parquet users
    python benchmarks/peers.py ours-path benchmarks/data/users_1e5_text_shuffled.csv factor

The third argument names the model (MODELS): "old" (the default, run.py's  y ~ x * w + (x | g)),
"users" (issue 13's  y ~ x1*w1 + x2 + w2 + (1 + x1 | g)) or "factor" (the same plus a 20-level
text predictor f). Prints one JSON line (prefixed RESULT_MARK) with the estimates in a common layout

    coefs:  {canonical name: estimate}  (canonical_name: "Intercept", "x1:w1", "f=L02", ...)
    beta:   [Intercept, x, w, x:w]       (the old model only, as run.py reads it)
    tau:    [[tau00, tau01], [tau10, tau11]]   (random intercept, random slope)
    sigma2: level-1 variance
    remlcrit: the REML criterion (-2 REML log-likelihood, lme4's REMLcrit) where the peer gives it

and the times: fit_s (the fit call on data already in memory), read_s (pandas reading the file:
pd.read_parquet, or pd.read_csv for a .csv) and total_s (reading and fitting); "ours-path" times
ml.fit(formula, path) as one call. Each runner first does the same once on small data, untimed
(the old model: fits a small frame; the others: reads and fits a small file of the same format,
id kind and columns), so that lazy imports and first-call set-up are not counted. run.py and
users.py start one such process per run and take its peak memory (max RSS) from the operating
system when the process ends; the process also reports its own max RSS (maxrss_mb) as a check.

lme4 runs in R (lme4_fit.R), not here; `command("lme4", ...)` gives its command line.
"""
from __future__ import annotations

import json
import os
import re
import resource
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT_MARK = "@@RESULT@@ "
COEFS = ["Intercept", "x", "w", "x:w"]
PYTHON_PEERS = ("ours", "statsmodels", "glmm", "mixedlm")
PEERS = PYTHON_PEERS + ("lme4",)


@dataclass(frozen=True)
class Model:
    """One benchmark model, spelled for each peer (the random part is always (1 + slope | g))."""

    formula: str      # ours, mixedlm and lme4
    glmm: str         # glmm (the random intercept written out)
    fixed: str        # statsmodels' fixed part (its random part: groups="g", re_formula="~slope")
    slope: str
    columns: tuple[str, ...]


MODELS = {
    "old": Model("y ~ x * w + (x | g)", "y ~ x * w + (1 + x | g)", "y ~ x*w", "x", ("g", "y", "x", "w")),
    "users": Model("y ~ x1*w1 + x2 + w2 + (1 + x1 | g)", "y ~ x1*w1 + x2 + w2 + (1 + x1 | g)",
                   "y ~ x1*w1 + x2 + w2", "x1", ("g", "y", "x1", "w1", "x2", "w2")),
    "factor": Model("y ~ x1*w1 + x2 + w2 + f + (1 + x1 | g)", "y ~ x1*w1 + x2 + w2 + f + (1 + x1 | g)",
                    "y ~ x1*w1 + x2 + w2 + f", "x1", ("g", "y", "x1", "w1", "x2", "w2", "f")),
}
FORMULA = MODELS["old"].formula
LEVELS = tuple(f"L{k:02d}" for k in range(1, 21))  # generate.LEVELS (not imported: pyarrow-free here)
_FACTOR = re.compile(r"(?:C\()?f\)?(?:\[T\.(?P<bracket>[^\]]+)\]|\.(?P<number>\d+)|(?P<plain>L\d+))")


def canonical_name(name: str) -> str:
    """One spelling of a coefficient's name across the peers: "(Intercept)" -> "Intercept";
    the factor's levels "f[T.L02]" (ours, statsmodels), "fL02" (glmm, lme4), "f.1" (mixedlm: the
    first level after the reference) -> "f=L02"; an interaction's terms sorted ("w1:x1" -> "w1:x1")."""
    name = name.strip()
    if name in ("(Intercept)", "Intercept"):
        return "Intercept"
    m = _FACTOR.fullmatch(name)
    if m:
        level = m["bracket"] or m["plain"] or LEVELS[int(m["number"])]
        return f"f={level}"
    return ":".join(sorted(name.split(":"))) if ":" in name else name


def canonical(coefs) -> dict[str, float]:
    """{canonical_name(k): float(v)} of a mapping or of (name, value) pairs."""
    items = coefs.items() if hasattr(coefs, "items") else coefs
    return {canonical_name(str(k)): float(v) for k, v in items}


def _warmup_frame():
    """A small data set of the old model's shape (40 groups), for the untimed first fit."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    from generate import chunk_frame

    return chunk_frame(np.full(40, 50), 0, np.random.default_rng(1)).to_pandas()


def _read_as(path, columns=None):
    """The file as users read it: pd.read_csv for .csv, pd.read_parquet otherwise; only the
    model's columns when given (the issue-13 files hold the factor f for every model)."""
    import pandas as pd

    if Path(path).suffix == ".csv":
        return pd.read_csv(path, usecols=list(columns) if columns else None)
    return pd.read_parquet(path, columns=list(columns) if columns else None)


def _text_ids(path) -> bool:
    """Whether the file's id column g holds text (Parquet: its schema; CSV: the first value)."""
    if Path(path).suffix == ".csv":
        with open(path) as fh:
            header = fh.readline().strip().split(",")
            first = fh.readline().strip().split(",")
        value = first[header.index('"g"' if '"g"' in header else "g")].strip('"')
        return not value.lstrip("-").isdigit()
    import pyarrow.parquet as pq

    return not str(pq.read_schema(path).field("g").type).startswith("int")


class _Setup:
    """How one run reads and warms up: the model, and a small file of the data's kind (format, id
    kind, columns) in a temporary folder, for the untimed warm-up. The old model keeps the old
    protocol (pd.read_parquet of the whole file; a warm-up fit on a small frame)."""

    def __init__(self, path, model: str):
        self.path, self.name, self.model = Path(path), model, MODELS[model]
        self.columns = None if model == "old" else self.model.columns
        self._tmp = None

    def read(self, path=None):
        return _read_as(path or self.path, self.columns)

    def small_file(self) -> Path:
        """A 2,000-row file of the same format and id kind (made once per process)."""
        if self._tmp is None:
            sys.path.insert(0, str(HERE))
            import pyarrow.csv as pcsv
            import pyarrow.parquet as pq

            from generate import users_table

            table = users_table(2000, "text" if _text_ids(self.path) else "int", "shuffled", seed=1)
            self._tmp = Path(tempfile.mkdtemp(prefix="bench-warmup-")) / f"small{self.path.suffix}"
            if self.path.suffix == ".csv":
                pcsv.write_csv(table, self._tmp)
            else:
                pq.write_table(table, self._tmp)
        return self._tmp

    def warmup(self, fit) -> None:
        """Read the small file and fit it (the old model: fit the small frame)."""
        if self.name == "old":
            fit(_warmup_frame())
        else:
            fit(self.read(self.small_file()))


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _layout(coefs: dict[str, float], tau, sigma2, remlcrit, converged, model: str) -> dict:
    """The common layout (module doc); `beta` for the old model, which run.py reads."""
    out = dict(coefs=coefs, tau=[[float(v) for v in row] for row in tau], sigma2=float(sigma2),
               remlcrit=None if remlcrit is None else float(remlcrit), converged=bool(converged))
    if model == "old":
        out["beta"] = [coefs[canonical_name(c)] for c in COEFS]
    return out


# --- the peers: each returns (estimates dict, fit_s, total_s, notes) -----------------------------

def _ours_estimates(f, setup: _Setup) -> dict:
    names = ["Intercept", setup.model.slope]
    tau = f.tau.loc[names, names].to_numpy()
    return _layout(canonical(f.beta), tau, f.sigma2, f.deviance, getattr(f.optimizer, "converged", True), setup.name)


def _measure(fit, setup: _Setup):
    """One untimed warm-up (module doc), then the timed read and the timed fit."""
    setup.warmup(fit)
    df, read_s = _timed(setup.read)
    r, fit_s = _timed(fit, df)
    return r, read_s, fit_s


def _reader_note(setup: _Setup) -> str:
    return "pd.read_csv" if setup.path.suffix == ".csv" else "pd.read_parquet"


def run_ours(setup: _Setup):
    """Ours by the peers' protocol: pandas reads the file, then ml.fit on the DataFrame."""
    import multilevel as ml

    formula = setup.model.formula
    f, read_s, fit_s = _measure(lambda d: ml.fit(formula, d), setup)
    return ({**_ours_estimates(f, setup), "read_s": read_s}, fit_s, read_s + fit_s,
            f"{_reader_note(setup)}, then ml.fit(formula, df)")


def _rss_mb() -> float:
    """The process's resident size now (Linux /proc), in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_ours_path(setup: _Setup):
    """Ours as a user writes it: the file path given to ml.fit (one call, reading included).
    Also reports baseline_mb: the process's size after the imports and the warm-up fit, before
    the data (so that peak - baseline is what the data and the fit take)."""
    import multilevel as ml

    formula = setup.model.formula
    if setup.name == "old":
        ml.fit(formula, _warmup_frame())
    else:
        ml.fit(formula, str(setup.small_file()))
    baseline = _rss_mb()
    f, total_s = _timed(ml.fit, formula, str(setup.path))
    return {**_ours_estimates(f, setup), "baseline_mb": baseline}, None, total_s, "ml.fit(formula, path)"


def run_statsmodels(setup: _Setup):
    import statsmodels.formula.api as smf

    model = setup.model

    def fit(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return smf.mixedlm(model.fixed, data, groups="g", re_formula=f"~{model.slope}").fit(reml=True)

    r, read_s, fit_s = _measure(fit, setup)
    tau = r.cov_re.to_numpy()  # index Group, slope; already on the data scale (not divided by scale)
    est = _layout(canonical(r.fe_params), tau, r.scale, -2 * r.llf, r.converged, setup.name)
    est["read_s"] = read_s
    return est, fit_s, read_s + fit_s, "smf.mixedlm(...).fit(reml=True), default optimizer"


def run_glmm(setup: _Setup):
    import glmm

    formula = setup.model.glmm

    def fit(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return glmm.fit(data, formula, reml=True, satterthwaite=False)

    r, read_s, fit_s = _measure(fit, setup)
    t00, t10, t11 = map(float, r.varcorr[0])  # lower triangle of the one block
    est = _layout(canonical(zip(r.names, r.beta, strict=True)), [[t00, t10], [t10, t11]], r.dispersion,
                  -2 * r.loglik, r.converged, setup.name)
    est["read_s"] = read_s
    return est, fit_s, read_s + fit_s, "glmm.fit(..., reml=True, satterthwaite=False)"


def run_mixedlm(setup: _Setup):
    import mixedlm

    formula = setup.model.formula

    def fit(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mixedlm.lmer(formula, data, REML=True)

    r, read_s, fit_s = _measure(fit, setup)
    vc = r.VarCorr()
    est = _layout(canonical(dict(r.fixef())), vc.get_cov("g"), vc.residual, r.REMLcrit(),
                  getattr(r, "converged", True), setup.name)
    est["read_s"] = read_s
    return est, fit_s, read_s + fit_s, "mixedlm.lmer(formula, df, REML=True), default control"


def run_floor(setup: _Setup):
    """The floor: read the Parquet file into pandas and make one pass over it (a group-by sum of
    x * y), the least any fit that reads the file and builds per-group summaries must do."""
    import pandas as pd

    def one_pass(df):
        return (df["x"] * df["y"]).groupby(df["g"]).sum()

    one_pass(_warmup_frame())
    t0 = time.perf_counter()
    df = pd.read_parquet(setup.path)
    read_s = time.perf_counter() - t0
    one_pass(df)
    total_s = time.perf_counter() - t0
    return {"read_s": read_s}, total_s - read_s, total_s, "pd.read_parquet + groupby-sum of x*y"


def run_model4(_setup=None, repeat: int = 20):
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


def command(peer: str, path: Path | None, python: str = sys.executable, model: str = "old") -> list[str]:
    """The command line that runs one timed fit of `peer` on `path` in a fresh process ("floor":
    read + one pass; "model4": the seminar's model 4, no path). lme4 reads the CSV copy next to
    the Parquet file (R's arrow package is not installed); for the issue-13 models it is given
    the formula and the id column's class too."""
    if path is None:
        return [python, str(HERE / "peers.py"), peer]
    if peer == "lme4":
        csv = str(Path(path).with_suffix(".csv"))
        if model == "old":
            return ["Rscript", str(HERE / "lme4_fit.R"), csv]
        gclass = "character" if _text_ids(path) else "integer"
        return ["Rscript", str(HERE / "lme4_fit.R"), csv, MODELS[model].formula, gclass, MODELS[model].slope]
    return [python, str(HERE / "peers.py"), peer, str(path)] + ([] if model == "old" else [model])


def main() -> None:
    peer = sys.argv[1]
    path = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    model = sys.argv[3] if len(sys.argv) > 3 else "old"
    setup = _Setup(path, model) if path is not None else None
    est, fit_s, total_s, notes = RUNNERS[peer](setup)
    out = dict(peer=peer, model=model, fit_s=fit_s, total_s=total_s, notes=notes,
               maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **est)
    print(RESULT_MARK + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
