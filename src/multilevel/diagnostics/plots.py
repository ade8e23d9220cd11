"""Diagnostic plots and model graphs (matplotlib, an optional extra: pip install matplotlib,
or the package's [plots] extra).

`fit.plot(kind, ...)` returns a matplotlib Figure; with `path=` it is also saved (PNG, SVG or PDF
by the extension). The kinds:

    "caterpillar"       EB residuals of each random coefficient, sorted, with z * posterior SD bars
    "qq"                CHIPCT against MDIST: the Q-Q plot of the Mahalanobis distances (R&B ch. 9)
    "residual-sd"       histogram and normal Q-Q of the standardized log residual SDs (MDRSVAR)
    "eb"                EB residuals of a coefficient against a level-2 variable (default: the
                        model's first level-2 predictor)
    "model"             HLM's model graph: predicted outcome against a level-1 predictor, one line per
                        chosen value (or quartile) of level-2 predictors (default: the first level-1
                        predictor, lines at the quartiles of the first level-2 predictor)
    "residuals-fitted"  level-1 residuals against fitted values (fixed + EB)

Plots only draw: every number comes from the fit's diagnostics view (`diagnostics.view.Diagnostics`:
`residuals`, `ranef_pev`) and its record (the fixed effects); `diag` below is that view.
"""
from __future__ import annotations

import inspect
import itertools
import re

import numpy as np
import pandas as pd

from multilevel.errors import DataError, SpecificationError, close_matches, preview
from multilevel.inference import distributions as dist

KINDS = ("caterpillar", "qq", "residual-sd", "eb", "model", "residuals-fitted")


def _figure(width: float = 6.4, height: float = 4.8):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise SpecificationError("Plots need matplotlib, which is not installed. Install it with: pip install matplotlib (or install "
            "multilevel with its 'plots' extra: pip install -e '/path/to/multilevel[plots]', the path of your clone)") from exc
    return Figure(figsize=(width, height), layout="constrained")


def _dots(ax, est: np.ndarray, sd: np.ndarray, z: float, labels: list[str] | None, xlabel: str, ylabel: str, title: str) -> None:
    """One caterpillar panel: the estimates sorted, with +/- z sd bars, a line at 0; the units
    named on the axis when `labels` are given."""
    order = np.argsort(est, kind="stable")
    ax.errorbar(est[order], np.arange(len(est)), xerr=z * sd[order], fmt="o", ms=2.5, lw=0.6, color="tab:blue", ecolor="0.6")
    ax.axvline(0, color="tab:red", lw=0.8)
    if labels is not None:
        ax.set_yticks(np.arange(len(est)), [labels[i] for i in order], fontsize=7)
    else:
        ax.set_yticks([])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def caterpillar(diag, level: float = 0.95, variance: str = "full"):
    """variance "full": posterior SD with gamma's uncertainty (HLM's PV); "unit": lme4's condVar."""
    z = dist.norm_ppf(0.5 + level / 2)
    u = diag.ranef
    V = diag.ranef_pev if variance == "full" else diag.ranef_condvar
    q = u.shape[1]
    fig = _figure(4.0 * q + 1.0, 5.0)
    axes = fig.subplots(1, q, squeeze=False)[0]
    for k, name in enumerate(u.columns):
        ax = axes[k]
        est = u[name].to_numpy()
        _dots(ax, est, np.sqrt(V[:, k, k]), z, None, f"EB residual of {name} ({level:.0%} interval)",
              f"{diag.est.design.group} (sorted, {len(est)} units)" if k == 0 else "", f"{name}")
    fig.suptitle("Empirical Bayes residuals")
    return fig


def qq(diag):
    r = diag.residuals(2)
    ok = r["mdist"].notna()
    fig = _figure(5.2, 5.0)
    ax = fig.subplots()
    x, y = r.loc[ok, "chipct"], r.loc[ok, "mdist"]
    ax.scatter(x, y, s=12, alpha=0.8)
    top = float(max(x.max(), y.max()))
    ax.plot([0, top], [0, top], color="tab:red", lw=0.8, label="45-degree line")
    ax.set_xlabel(f"Expected chi-square({len(diag.est.design.z_names)}) quantile (CHIPCT)")
    ax.set_ylabel("Mahalanobis distance of the OLS residuals (MDIST)")
    ax.set_title(f"Q-Q plot of MDIST ({int(ok.sum())} units with sufficient data)")
    ax.legend(loc="upper left")
    return fig


def residual_sd(diag, which: str = "mdrsvar"):
    r = diag.residuals(2)
    v = r[which].dropna()
    zs = (v - v.mean()) / v.std(ddof=1)
    fig = _figure(9.0, 4.0)
    a, b = fig.subplots(1, 2)
    a.hist(zs, bins=20, color="tab:blue", alpha=0.8, edgecolor="white")
    a.set_xlabel(f"standardized {which.upper()} (log residual SD)")
    a.set_ylabel("number of units")
    a.set_title("Histogram")
    import scipy.stats  # here, not at import: it costs a third of a second, more than a small fit

    (osm, osr), (slope, intercept, _) = scipy.stats.probplot(zs.to_numpy())
    b.scatter(osm, osr, s=10)
    b.plot(osm, slope * osm + intercept, color="tab:red", lw=0.8)
    b.set_xlabel("normal quantile")
    b.set_ylabel(f"standardized {which.upper()}")
    b.set_title("Normal Q-Q plot")
    return fig


_CENTRED = re.compile(r"^\s*(?:cwc|cgm)\(\s*([^()]+?)\s*\)\s*$")


def _column(diag, name: str) -> str | None:
    """The data column behind a predictor's name (`cwc(ses)` -> `ses`), or None if it is none."""
    frame = diag.est.design.frame
    m = _CENTRED.match(name)
    name = m.group(1) if m else name
    return name if frame is not None and name in frame.columns else None


def first_level2_predictor(diag) -> str | None:
    """The first level-2 predictor of the model (in the order of the formula) that is a column."""
    for c in diag.est.design.coefficients:
        for p in c.predictors:
            if p != "Intercept" and _column(diag, p):
                return _column(diag, p)
    return None


def first_level1_predictor(diag) -> str | None:
    """The first level-1 predictor (a coefficient other than the intercept) that is a column."""
    for c in diag.est.design.coefficients:
        if c.name != "Intercept" and _column(diag, c.name):
            return _column(diag, c.name)
    return None


def eb_against(diag, variable: str | None = None, coefficient: str | None = None):
    """EB residuals of `coefficient` (default: the first random one) against the level-2 variable
    `variable` (default: the model's first level-2 predictor)."""
    d = diag.est.design
    if variable is None:
        variable = first_level2_predictor(diag)
        if variable is None:
            raise SpecificationError(
                "The model has no level-2 predictor to plot the EB residuals against: name one, e.g. "
                "fit.plot('eb', variable='meanses') (any column of the data, constant within units)."
            )
    coefficient = coefficient or d.z_names[0]
    if coefficient not in d.z_names:
        raise SpecificationError(f"{coefficient!r} is not a random coefficient; those are {', '.join(d.z_names)}.")
    r = diag.residuals(2, extra=[variable])
    fig = _figure(5.6, 4.4)
    ax = fig.subplots()
    ax.scatter(r[variable], r[f"eb_{coefficient}"], s=12, alpha=0.8)
    ax.axhline(0, color="tab:red", lw=0.8)
    ax.set_xlabel(f"{variable} (level 2)")
    ax.set_ylabel(f"EB residual of {coefficient}")
    ax.set_title(f"EB residuals of {coefficient} against {variable}")
    return fig


def _is_factor(col: pd.Series) -> bool:
    """A text, categorical or bool column: its lines are its levels, not numbers."""
    return not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)


def _line_values(name: str, values: pd.Series, spec) -> list:
    """The values of the line variable `name` (its unit-level values `values`) that get a line:
    `spec` is a list of values, or "quartiles" (25th and 75th percentiles) / "terciles" for a
    number; for a factor (text, categorical, bool) a list of its levels or "levels" (all)."""
    factor = _is_factor(values)
    if factor:
        levels = list(pd.unique(values.dropna()))
        if isinstance(values.dtype, pd.CategoricalDtype):
            levels = [c for c in values.cat.categories if c in set(levels)]
        if isinstance(spec, str) and spec == "levels":
            return levels
        if isinstance(spec, str) or not isinstance(spec, (list, tuple, np.ndarray, pd.Series, pd.Index)):
            raise SpecificationError(
                f"lines={{{name!r}: {spec!r}}}: {name!r} is a factor (levels {preview(map(repr, levels))}); give a list of "
                f"its levels, e.g. lines={{{name!r}: {[lv for lv in levels[:2]]!r}}}, or 'levels' for all of them."
            )
        known = {str(lv): lv for lv in levels}
        out = []
        for v in spec:
            if v in levels:
                out.append(v)
            elif str(v) in known:
                out.append(known[str(v)])
            else:
                raise SpecificationError(
                    f"lines={{{name!r}: ...}}: {v!r} is not a level of {name!r}; its levels are "
                    f"{preview(map(repr, levels))}.{close_matches(str(v), known)}"
                )
        return out
    if isinstance(spec, str):
        if spec == "quartiles":
            return [float(v) for v in values.quantile([0.25, 0.75])]
        if spec == "terciles":
            return [float(v) for v in values.quantile([1 / 6, 0.5, 5 / 6])]
        raise SpecificationError(
            f"lines={{{name!r}: {spec!r}}}: give a list of values of {name!r}, 'quartiles' or 'terciles'."
        )
    if not isinstance(spec, (list, tuple, np.ndarray, pd.Series, pd.Index)):
        raise SpecificationError(
            f"lines={{{name!r}: {spec!r}}}: give a list of values of {name!r} (e.g. [{spec!r}] for one line), "
            "'quartiles' or 'terciles'."
        )
    out = []
    for v in spec:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise SpecificationError(
                f"lines={{{name!r}: ...}}: {v!r} is not a number, and {name!r} is numeric; give numbers, "
                "'quartiles' or 'terciles'."
            ) from None
    return out


def _label(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def model_graph(diag, x: str | None = None, lines: dict | None = None, n_points: int = 50):
    """HLM's "Graph Equations": the fixed-part prediction against the level-1 predictor `x` (on the
    scale the model uses: centred if centred; `cwc(ses)` or `ses`), one line per combination of
    the `lines` values (a list, or "quartiles": the 25th and 75th percentiles over units); every
    other variable at its mean over the rows used (categorical ones at their first level).
    Defaults: x the model's first level-1 predictor; lines the quartiles of its first level-2
    predictor (none if it has none; lines={} for one line)."""
    d = diag.est.design
    d.require_rows("A model graph")
    data = d.centred_frame()
    if x is None:
        x = first_level1_predictor(diag)
        if x is None:
            raise SpecificationError(
                "The model has no level-1 predictor to put on the x axis: name a column, e.g. "
                "fit.plot('model', x='ses')."
            )
    spec = d.spec
    if not any(x in t.split(":") for t in spec.fixed):  # 'ses' for a model of cwc(ses): plot against cwc(ses)
        made = [n for n, dv in spec.derived_columns.items() if dv.variables == (x,)]
        x = made[0] if len(made) == 1 else x
    if x not in data.columns:
        raise DataError(f"'{x}' is not a variable of this fit.{close_matches(x, data.columns)}")
    if lines is None:
        w = first_level2_predictor(diag)
        lines = {w: "quartiles"} if w is not None and pd.api.types.is_numeric_dtype(data[w]) else {}
    if not isinstance(lines, dict):
        example = f"{{{lines[0]!r}: 'quartiles'}}" if isinstance(lines, (list, tuple)) and lines and isinstance(lines[0], str) else "{'meanses': 'quartiles'}"
        raise SpecificationError(
            f"lines= must be a dict of variable -> values, e.g. lines={example} or "
            "lines={'sector': [0, 1]} (lines={} for one line), not a " + type(lines).__name__ + "."
        )
    for v in lines:
        if v not in data.columns:
            raise DataError(f"'{v}' (a line variable) is not a variable of this fit.{close_matches(str(v), data.columns)}")
    units = data.groupby(d.codes).first()
    lo, hi = np.nanpercentile(data[x].to_numpy(dtype=float), [5, 95])
    grid_x = np.linspace(float(lo), float(hi), n_points)
    base = {}
    for c in data.columns:
        col = data[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            base[c] = float(col.mean())
        else:
            base[c] = col.iloc[0]
    combos = list(itertools.product(*[[(v, val) for val in _line_values(v, units[v], spec)] for v, spec in lines.items()]))
    fig = _figure(6.4, 4.6)
    ax = fig.subplots()
    beta = diag.est.beta.to_numpy()
    for combo in combos or [()]:
        row = dict(base)
        row.update(dict(combo))
        grid = pd.DataFrame({k: [v] * n_points for k, v in row.items()})
        grid[x] = grid_x
        Xg = np.asarray(d.x_model_spec.get_model_matrix(grid).to_numpy(dtype=float))
        label = ", ".join(f"{v} = {_label(val)}" for v, val in combo) or "all at their means"
        ax.plot(grid_x, Xg @ beta, label=label)
    centred = d.spec.centering_map.get(x)
    # a centred column is named by its helper (cwc(ses)); the axis says it in words
    shown = d.spec.derived_columns[x].variables[0] if centred and x in d.spec.derived_columns else x
    ax.set_xlabel(shown + ({"group": " (centred on the unit mean)", "grand": " (centred on the grand mean)"}.get(centred, "") if centred else ""))
    ax.set_ylabel(f"predicted {d.spec.outcome} (fixed part)")
    ax.set_title("Model graph")
    ax.legend(fontsize="small", loc="best")
    return fig


def residuals_fitted(diag):
    r = diag.residuals(1)
    fig = _figure(6.0, 4.4)
    ax = fig.subplots()
    ax.scatter(r["fitted"], r["resid"], s=4, alpha=0.3)
    ax.axhline(0, color="tab:red", lw=0.8)
    ax.set_xlabel("fitted value (fixed part + EB)")
    ax.set_ylabel("level-1 residual")
    ax.set_title("Level-1 residuals against fitted values")
    return fig


def plot(diag, kind: str, path=None, **options):
    makers = {
        "caterpillar": caterpillar,
        "qq": qq,
        "residual-sd": residual_sd,
        "eb": eb_against,
        "model": model_graph,
        "residuals-fitted": residuals_fitted,
    }
    return draw(makers, diag, kind, path, **options)


# ----- several grouping factors (`interfaces.multi_fit.MultiFit`) ----------------------------------
#: the plots of a fit with several grouping factors
MULTI_KINDS = ("caterpillar", "residuals-fitted", "qq")
#: a caterpillar panel names its levels up to this many
LABELLED_LEVELS = 40


def caterpillar_factors(fit, level: float = 0.95):
    """lme4's dotplot(ranef(fit, condVar = TRUE)): per factor (one row of panels) and random effect
    (one panel), the conditional modes sorted, with +/- z condsd bars (`fit.ranef`,
    `fit.ranef_condvar`)."""
    z = dist.norm_ppf(0.5 + level / 2)
    modes, condvar = fit.ranef, fit.ranef_condvar
    n_rows = len(modes)
    n_cols = max(table.shape[1] for table in modes.values())
    fig = _figure(4.0 * n_cols + 1.0, 3.6 * n_rows + 0.6)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, (factor, table) in enumerate(modes.items()):
        for k in range(n_cols):
            ax = axes[i, k]
            if k >= table.shape[1]:
                ax.set_axis_off()  # a factor with fewer random effects than the widest
                continue
            name = table.columns[k]
            est = table[name].to_numpy()
            # few levels: named, as lme4's dotplot names them
            labels = [str(v) for v in table.index] if len(est) <= LABELLED_LEVELS else None
            _dots(ax, est, np.sqrt(np.maximum(condvar[factor][:, k, k], 0.0)), z, labels,
                  f"conditional mode ({level:.0%} interval)", f"{factor} (sorted, {len(est)} levels)" if k == 0 else "",
                  f"{name} | {factor}")
    fig.suptitle("Conditional modes of the random effects")
    return fig


def qq_residuals(fit):
    """Normal Q-Q plot of the level-1 residuals over sigma (`fit.residuals(1)`)."""
    r = fit.residuals(1)
    e = np.sort((r["resid"] / r["sigma"]).to_numpy())
    n = len(e)
    expected = np.asarray(dist.norm_ppf((np.arange(n) + 0.5) / n))
    fig = _figure(5.2, 5.0)
    ax = fig.subplots()
    ax.scatter(expected, e, s=4, alpha=0.5)
    lim = float(max(abs(expected).max(), abs(e).max()))
    ax.plot([-lim, lim], [-lim, lim], color="tab:red", lw=0.8, label="45-degree line")
    ax.set_xlabel("normal quantile")
    ax.set_ylabel("level-1 residual / sigma")
    ax.set_title(f"Normal Q-Q plot of the level-1 residuals ({n} rows)")
    ax.legend(loc="upper left")
    return fig


def plot_factors(fit, kind: str, path=None, **options):
    """`MultiFit.plot`: "caterpillar" (`caterpillar_factors`), "residuals-fitted" (the one-factor
    fit's, from `fit.residuals(1)`), "qq" (`qq_residuals`)."""
    makers = {"caterpillar": caterpillar_factors, "residuals-fitted": residuals_fitted, "qq": qq_residuals}
    return draw(makers, fit, kind, path, **options)


def draw(makers: dict, diag, kind: str, path=None, **options):
    """The figure of `kind` from `makers` (kind -> function of the fit's view and its options),
    saved to `path` when given (.png, .svg or .pdf)."""
    if kind not in makers:
        raise SpecificationError(f"kind={kind!r} is not known; the plots are: {', '.join(makers)}.")
    maker = makers[kind]
    # the options each kind takes are its keyword parameters (after the fit): an unknown one is
    # named with the accepted ones, rather than a TypeError from inside the kind's function
    accepted = [p for p in list(inspect.signature(maker).parameters)[1:]]
    unknown = [o for o in options if o not in accepted]
    if unknown:
        hint = close_matches(unknown[0], accepted)
        raise SpecificationError(
            f"fit.plot({kind!r}) has no option {', '.join(map(repr, unknown))}.{hint} Its options are: "
            + (", ".join(accepted) if accepted else "none")
            + " (and path= to save the figure)."
        )
    p = None
    if path is not None:
        from multilevel.output import output_path

        p = output_path(path, "The plot")
        if p.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise SpecificationError(f"Save plots as .png, .svg or .pdf, not {p.suffix or p.name!r}.")
    fig = maker(diag, **options)
    if p is not None:
        fig.savefig(p, dpi=150)
    return fig
