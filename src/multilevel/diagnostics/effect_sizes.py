"""Effect sizes of a two-level model: the lecture's (Hoffman) and R&B's, and Rights & Sterba's R2.

Planning helpers (no fit needed):
    design effect   deff = 1 + (n - 1) ICC                     (Kish; the lecture's "Design Effect")
    effective N     N_eff = N / deff
    "true" intercept variance = observed variance of cluster means - sigma2 / n   (the lecture)
For unequal cluster sizes n is one of (docs/hlm-statistics.md section 9):
    "mean"    N / J                      (the lecture, misty)
    "median"  median n_j                 (mlmhelpr option)
    "kish"    n_w = sum n_j^2 / N        (Kish's design effect of the pooled mean)
    "anova"   n~ = (N - sum n_j^2 / N) / (J - 1)   (Snijders & Bosker's ANOVA n)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from multilevel.display import ShownAsTables
from multilevel.errors import SpecificationError
from multilevel.inference import distributions as dist

if TYPE_CHECKING:
    from multilevel.results.estimates import Estimates

CLUSTER_SIZES = ("mean", "median", "kish", "anova")


def representative_size(sizes, kind: str = "mean") -> float:
    """One number for the cluster size: a scalar is returned as is; a list by `kind` (module doc)."""
    try:
        n = np.asarray(sizes, dtype=float)
    except (TypeError, ValueError):
        raise SpecificationError(f"cluster_size must be a number of rows per cluster (1 or more) or a list of them, not {sizes!r}.") from None
    if n.size == 0 or not np.all(np.isfinite(n)) or np.any(n < 1):
        # a cluster has at least one member: a size of 0 would give a design effect below 1 - ICC
        raise SpecificationError(
            f"Cluster sizes must be finite numbers of 1 or more (rows per cluster), or a non-empty list of them; got {sizes!r}."
        )
    if n.ndim == 0:
        return float(n)
    N, J = n.sum(), n.size
    if kind == "mean":
        return float(N / J)
    if kind == "median":
        return float(np.median(n))
    if kind == "kish":
        return float(np.sum(n**2) / N)
    if kind == "anova":
        if J < 2:
            raise SpecificationError("The ANOVA cluster size needs at least two clusters.")
        return float((N - np.sum(n**2) / N) / (J - 1))
    raise SpecificationError(f"size={kind!r} is not known; use one of {', '.join(CLUSTER_SIZES)}.")


def design_effect(icc: float, cluster_size: float | Sequence[float], size: str = "mean") -> float:
    """deff = 1 + (n - 1) ICC. `n=5, ICC=.30` gives 2.20 (the lecture's first example)."""
    if isinstance(icc, bool) or not isinstance(icc, (int, float, np.integer, np.floating)) or not 0 <= icc < 1:
        raise SpecificationError(f"icc is an intraclass correlation in [0, 1), not {icc!r}.")
    n = representative_size(cluster_size, size)
    return 1.0 + (n - 1.0) * icc


def effective_n(n_total: float | None = None, icc: float = 0.0, cluster_size: float | Sequence[float] = 1.0, size: str = "mean") -> float:
    """N / deff. With a list of cluster sizes n_total defaults to their sum.
    `n_total=500, icc=.30, cluster_size=5` gives 227 (the lecture)."""
    if n_total is None:
        if np.ndim(cluster_size) == 0:
            raise SpecificationError("Give n_total, or cluster_size as the list of cluster sizes.")
        n_total = float(np.sum(cluster_size))
    if isinstance(n_total, bool) or not isinstance(n_total, (int, float, np.integer, np.floating)) or not (0 < n_total < np.inf):
        raise SpecificationError(f"n_total is the total number of rows, a positive finite number, not {n_total!r}.")
    return float(n_total) / design_effect(icc, cluster_size, size)


def true_intercept_variance(observed: float, sigma2: float, cluster_size: float | Sequence[float], size: str = "mean") -> float:
    """The lecture's "true" between-cluster variance: observed variance of cluster means - sigma2/n
    (4.65 - 7.06/4 = 2.88)."""
    return float(observed) - float(sigma2) / representative_size(cluster_size, size)


def d_and_r(t, df) -> tuple[np.ndarray, np.ndarray]:
    """Effect sizes from a t-ratio and its denominator df (the lecture): d = 2t/sqrt(df),
    r = t / sqrt(t^2 + df)."""
    t, df = np.asarray(t, dtype=float), np.asarray(df, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * t / np.sqrt(df), t / np.sqrt(t**2 + df)


def pseudo_r2(base, fit) -> pd.DataFrame:
    """Proportion reduction in each variance component from `base` to `fit` (R&B's "proportion
    of variance explained", the lecture's pseudo-R2): (V_base - V_fit) / V_base, for sigma2 and
    every tau_qq present in both. Negative values are reported as they are and flagged."""
    # (imported here: `import multilevel` and the functions above do not load the fitting stages)
    from multilevel.inference.compare import check_same_basis
    from multilevel.results.estimates import estimates_of

    if any(len(getattr(f, "groups", None) or ()) > 1 for f in (base, fit)):
        return multi_pseudo_r2(base, fit)
    base_est, fit_est = estimates_of(base), estimates_of(fit)
    if base_est is None or fit_est is None:
        raise SpecificationError("pseudo_r2(base, fit) takes two fits (ml.fit(...)): the model with fewer predictors first.")
    base, fit = base_est, fit_est
    # variance components of different rows, weights or estimators differ for reasons other than the
    # predictors added: the same refusals as compare()'s
    check_same_basis([base, fit], "a proportion reduction in variance (pseudo-R2)")
    rows = {"level-1 (sigma2)": (base.sigma2, fit.sigma2)}
    tb, tf = base.tau, fit.tau
    for name in tb.index:
        if name in tf.index:
            rows[f"tau {name}"] = (float(tb.loc[name, name]), float(tf.loc[name, name]))
    out = pd.DataFrame(rows, index=["base", "fit"]).T
    out["pseudo_r2"] = (out["base"] - out["fit"]) / out["base"]
    out["negative"] = out["pseudo_r2"] < 0
    return out


# ----- from a fit ---------------------------------------------------------------------------
def _group_means(x: np.ndarray, codes: np.ndarray, J: int, n: np.ndarray) -> np.ndarray:
    return np.stack([np.bincount(codes, weights=x[:, k], minlength=J) for k in range(x.shape[1])], axis=1) / n[:, None]


def column_levels(X: np.ndarray, codes: np.ndarray, J: int, tol: float = 1e-9) -> np.ndarray:
    """Per column: "within" (cluster means all 0: cluster-mean centred), "between" (constant
    within clusters), "constant" (the intercept) or "mixed"."""
    n = np.bincount(codes, minlength=J).astype(float)
    means = _group_means(X, codes, J, n)
    dev = X - means[codes]
    scale = np.maximum(np.abs(X).max(axis=0), 1e-300)
    within_var = np.abs(dev).max(axis=0) / scale
    out = []
    for k in range(X.shape[1]):
        if np.ptp(X[:, k]) <= tol * scale[k]:
            out.append("constant")
        elif within_var[k] <= tol:
            out.append("between")
        elif np.abs(means[:, k]).max() <= tol * scale[k]:
            out.append("within")
        else:
            out.append("mixed")
    return np.array(out)


@dataclass(frozen=True)
class RightsSterba:
    """Rights & Sterba (2019) decomposition of the model-implied outcome variance (docs/hlm-statistics.md section 10):
    f1 (within fixed), f2 (between fixed), v (random slopes), m (random intercept/means), sigma2."""

    f1: float
    f2: float
    v: float
    m: float
    sigma2: float
    cmc: bool  # every non-constant column is within or between: within/between measures defined

    def table(self) -> pd.DataFrame:
        f1, f2, v, m, s2 = self.f1, self.f2, self.v, self.m, self.sigma2
        total = f1 + f2 + v + m + s2
        rows = {
            "total": {"f1": f1 / total, "f2": f2 / total, "v": v / total, "m": m / total,
                      "f": (f1 + f2) / total, "fv": (f1 + f2 + v) / total, "fvm": (f1 + f2 + v + m) / total},
        }
        if self.cmc:
            within, between = f1 + v + s2, f2 + m
            rows["within"] = {"f1": f1 / within, "v": v / within, "f1v": (f1 + v) / within}
            rows["between"] = {"f2": f2 / between, "m": m / between}
        else:
            rows["total"]["f1"] = rows["total"]["f2"] = np.nan
        out = pd.DataFrame(rows).T
        return out[[c for c in ["f1", "f2", "f", "v", "m", "fv", "f1v", "fvm"] if c in out]]


def rights_sterba(beta: np.ndarray, tau: np.ndarray, sigma2: float, X: np.ndarray, Z: np.ndarray, levels: np.ndarray) -> RightsSterba:
    """f = gamma' Phi gamma with Phi the sample covariance (divisor N-1, as r2mlm) of the columns;
    v = tr(tau Sigma_Z), m = mu_Z' tau mu_Z (Sigma_Z, mu_Z: covariance and means of Z's columns)."""
    w = levels == "within"
    b = levels == "between"
    mixed = levels == "mixed"
    cov = np.atleast_2d(np.cov(X, rowvar=False))
    covZ = np.atleast_2d(np.cov(Z, rowvar=False))
    muZ = Z.mean(axis=0)
    v = float(np.trace(tau @ covZ))
    m = float(muZ @ tau @ muZ)
    if mixed.any():
        nz = ~(levels == "constant")
        f = float(beta[nz] @ cov[np.ix_(nz, nz)] @ beta[nz])
        return RightsSterba(f, 0.0, v, m, sigma2, cmc=False)
    f1 = float(beta[w] @ cov[np.ix_(w, w)] @ beta[w])
    f2 = float(beta[b] @ cov[np.ix_(b, b)] @ beta[b])
    return RightsSterba(f1, f2, v, m, sigma2, cmc=True)


@dataclass(frozen=True, eq=False, repr=False)
class EffectSizes(ShownAsTables):
    """Everything `fit.effect_sizes()` returns, as numeric tables."""

    icc: pd.DataFrame
    design_effects: pd.DataFrame
    r2: pd.DataFrame
    rights_sterba: pd.DataFrame
    fixed: pd.DataFrame
    plausible_values: pd.DataFrame
    intercept_variance: pd.DataFrame
    notes: tuple[str, ...]

    def _parts(self) -> tuple[str, list[object]]:
        parts: list[object] = []
        for name in ("icc", "design_effects", "r2", "rights_sterba", "fixed", "plausible_values", "intercept_variance"):
            parts += [f"\n{name}:", getattr(self, name)]
        parts += [f"* {n}" for n in self.notes]
        return "Effect sizes (each table is an attribute: es.icc, es.r2, ...)", parts



def effect_sizes(fit: Estimates, tab: pd.DataFrame, level: float = 0.95) -> EffectSizes:
    """Everything of `EffectSizes` for the fit whose record is `fit`; `tab` its coefficient table
    (`Inference.coef_table`) with the df method asked for, whose t and df give d and r."""
    from multilevel.design.builder import INTERCEPT
    from multilevel.diagnostics.residual_files import rows as kept_rows
    from multilevel.diagnostics.residual_files import unit_W

    d = fit.design
    r = kept_rows(fit, "Effect sizes")
    J, N = fit.n_groups, fit.n_obs
    sizes = fit.summaries.n
    tau = fit.tau.to_numpy()
    s2 = fit.sigma2
    z = list(d.z_names)
    notes = []

    if fit.weighted:
        notes.append("The fit has sampling weights; these effect sizes use the unweighted rows (descriptive).")
    if d.precision_weights is not None:
        notes.append(
            f"The fit has precision weights '{d.precision_weights.column}': sigma2 is the residual variance of a row "
            "of weight 1, and these effect sizes use it and the unweighted rows as they are."
        )
    has_intercept = INTERCEPT in d.x_names
    if not has_intercept:
        notes.append(
            "The model has no fixed intercept: the random intercept then carries the outcome's mean, so the "
            "Nakagawa ICCs and the Rights-Sterba shares are not defined (NaN)."
        )

    # ICCs
    # z'Tz and the variance of X beta are the same in the summaries' coordinates (`coordinates`:
    # Z S_z, tau', X S, beta'), where a variable far from 0 makes no cancellation
    coords = fit.coordinates
    Zmat = r.Z if coords.z_identity else r.Z @ coords.S_z
    tau_int = fit.tau_internal
    ran = float(np.mean(np.einsum("ia,ab,ib->i", Zmat, tau_int, Zmat)))  # mean z_i' T z_i (Johnson 2014)
    X_int = r.X @ coords.S
    beta_int = fit.solution.beta
    beta = fit.beta.to_numpy()
    yhat = X_int @ beta_int  # X beta up to a constant (the outcome's shift): same variance and correlation
    fixed_var = float(np.var(yhat, ddof=1))
    icc_rows = {}
    if INTERCEPT in z:
        t00 = tau[z.index(INTERCEPT), z.index(INTERCEPT)]
        empty = len(d.x_names) == 1 and z == [INTERCEPT]
        icc_rows["unconditional" if empty else "conditional (residual)"] = t00 / (t00 + s2)
    icc_rows["adjusted (Nakagawa)"] = ran / (ran + s2) if has_intercept else np.nan
    icc_rows["conditional (Nakagawa)"] = ran / (fixed_var + ran + s2) if has_intercept else np.nan
    icc = pd.DataFrame({"icc": icc_rows})
    notes.append(
        "ICC: 'unconditional' is tau00/(tau00+sigma2) of the empty model; 'conditional (residual)' the same ratio "
        "with predictors (R&B); the Nakagawa versions use the mean random-effect variance z'Tz over rows."
    )

    # design effects from the intercept ICC
    rho = icc_rows.get("unconditional", icc_rows.get("conditional (residual)", np.nan))
    de = {}
    for kind in CLUSTER_SIZES:
        n = representative_size(sizes, kind)
        deff = 1 + (n - 1) * rho
        de[kind] = {"cluster_size": n, "design_effect": deff, "effective_n": N / deff}
    design_effects = pd.DataFrame(de).T
    design_effects.index.name = "cluster size"

    # R2
    y = r.y
    total_r2 = float(np.corrcoef(y, yhat)[0, 1] ** 2) if np.ptp(yhat) > 0 else 0.0
    levels = column_levels(r.X, d.codes, J)
    rs = rights_sterba(beta_int, tau_int, s2, X_int, Zmat, levels)
    r2 = pd.DataFrame({"r2": {"total R2 (corr(y, fixed-only prediction)^2)": total_r2}})
    if not rs.cmc:
        notes.append(
            "Rights-Sterba: some predictors are neither cluster-mean centred nor level-2 ("
            + ", ".join(n for n, l in zip(d.x_names, levels) if l == "mixed")
            + "), so only the total-variance measures are defined."
        )

    # fixed effects: d and r
    dd, rr = d_and_r(tab["t"], tab["df"])
    fixed = pd.DataFrame({"t": tab["t"], "df": tab["df"], "d": dd, "r": rr})

    # plausible-value ranges of the random coefficients, at the mean of the level-2 predictors
    zc = dist.norm_ppf(0.5 + level / 2)
    pv = {}
    for c in d.coefficients:
        if not c.random:
            continue
        k = z.index(c.name)
        cols = list(c.columns)
        if cols:
            # W_j'gamma_q at the mean over units of each level-2 predictor, over the units where z_q
            # is not all 0 (e.g. a group-mean-centred z in a unit of one row: W_j is NaN there)
            Wmean = np.nanmean(unit_W(fit)[:, k, cols], axis=0)
            centre = float(Wmean @ beta[cols])
        else:
            centre = 0.0
        sd = float(np.sqrt(tau[k, k]))
        pv[c.name] = {"centre": centre, "sd": sd, "low": centre - zc * sd, "high": centre + zc * sd}
    plausible = pd.DataFrame(pv).T
    notes.append(f"Plausible values: {level:.0%} of units' coefficients lie in centre +/- {zc:.2f} sd (R&B p. 71), centre at the mean of the level-2 predictors.")

    # the lecture's observed vs "true" intercept variance
    iv = pd.DataFrame()
    if INTERCEPT in z:
        k = z.index(INTERCEPT)
        means = fit.Zty[:, k] / sizes
        observed = float(np.var(means, ddof=1))
        rows = {}
        for kind in CLUSTER_SIZES:
            n = representative_size(sizes, kind)
            rows[kind] = {"observed_var_of_means": observed, "sigma2_over_n": s2 / n, "true_tau00": observed - s2 / n, "model_tau00": tau[k, k]}
        iv = pd.DataFrame(rows).T
        iv.index.name = "cluster size"
    rs_table = rs.table() if has_intercept else rs.table() * np.nan
    return EffectSizes(icc, design_effects, r2, rs_table, fixed, plausible, iv, tuple(notes))


# ----- several grouping factors ---------------------------------------------------------------
def level_iccs(est) -> pd.DataFrame:
    """ICCs and design effects of a model with several grouping factors (`results.multi`), from
    the random intercepts' variances tau_f and sigma2 (the lecture's ICC = between / (between +
    within), generalised to levels):

        icc_f       = tau_f / (sum_g tau_g + sigma2)              the share of the variance between
                                                                  the levels of f
        same_unit_f = (tau_f + sum of tau_g of the factors f is nested in) / total
                                                                  the correlation of two rows in
                                                                  one level of f (HLM3's: children
                                                                  in one school share the school's
                                                                  part too)
        design_effect_f = 1 + (n_f - 1) same_unit_f,  n_f the mean rows per level of f;
        effective_n_f   = N / design_effect_f

    At x = 0 for models with random slopes (the intercepts' variances), as HLM and the lecture
    report them. A factor without a random intercept has no row."""
    d = est.design
    tau = {}
    for f in est.factors:
        if "Intercept" in f.z_names:
            i = f.z_names.index("Intercept")
            tau[f.name] = float(est.tau[f.name].iloc[i, i])
    total = sum(tau.values()) + est.sigma2
    nested = set(d.nested)  # (inner, outer)
    rows = []
    for f in est.factors:
        if f.name not in tau:
            continue
        same = tau[f.name] + sum(t for g, t in tau.items() if (f.name, g) in nested)
        n_levels = len(d.groupings[f.grouping].units)
        mean_rows = est.n_obs / n_levels
        icc_same = same / total
        deff = 1.0 + (mean_rows - 1.0) * icc_same
        rows.append({"factor": f.name, "tau00": tau[f.name], "icc": tau[f.name] / total, "icc_same_unit": icc_same,
                     "levels": n_levels, "mean_rows": mean_rows, "design_effect": deff, "effective_n": est.n_obs / deff})
    return pd.DataFrame(rows).set_index("factor")


def multi_pseudo_r2(base, fit) -> pd.DataFrame:
    """`pseudo_r2` for models with several grouping factors: the proportion reduction of sigma2
    and of every variance in `varcorr` present in both fits, (V_base - V_fit) / V_base."""
    if base.n_obs != fit.n_obs or base.method != fit.method:
        raise SpecificationError(
            "pseudo_r2(base, fit) compares fits of the same rows by the same method "
            f"({base.n_obs} rows by {base.method} against {fit.n_obs} by {fit.method})."
        )
    def variances(f) -> dict[str, float]:
        vc = f.varcorr
        out = {}
        for row in vc.itertuples(index=False):
            if pd.isna(row.var2):
                out["level-1 (sigma2)" if row.grp == "Residual" else f"{row.grp}: {row.var1}"] = float(row.vcov)
        return out
    b, f_ = variances(base), variances(fit)
    rows = {k: (b[k], f_[k]) for k in b if k in f_}
    out = pd.DataFrame(rows, index=["base", "fit"]).T
    out["pseudo_r2"] = (out["base"] - out["fit"]) / out["base"]
    out["negative"] = out["pseudo_r2"] < 0
    return out
