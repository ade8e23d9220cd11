"""Pooling fits to multiply imputed data sets (or plausible values): Rubin's rules.

The same model is fitted to each of m completed data sets; `pool(fits)` combines them as HLM does
("runs the model on each file and averages") and as mitml's `testEstimates` / `testConstraints`
do (names in brackets are mitml's, R/testEstimates.R and R/testConstraints.R):

Per fixed effect, with Q_i the estimate and U_i its squared SE in data set i (the SE method `se`):

    Qbar   = (1/m) sum_i Q_i                                   (Estimate)
    Ubar   = (1/m) sum_i U_i                                   (within-imputation variance)
    B      = 1/(m-1) sum_i (Q_i - Qbar)^2                      (between-imputation variance)
    T      = Ubar + (1 + 1/m) B                                (Std.Error = sqrt(T))
    r      = (1 + 1/m) B / Ubar                                (RIV, relative increase in variance)
    lambda = r / (r + 1)                                       (share of T due to missing data)
    nu     = (m - 1) (1 + 1/r)^2                               (Rubin's df; `df_rubin`)
    nu_obs = (1 - lambda) nu_com (nu_com + 1) / (nu_com + 3)
    nu_BR  = (1/nu + 1/nu_obs)^-1                              (df: Barnard & Rubin 1999)
    FMI    = (r + 2/(nu_BR + 3)) / (r + 1)                     (FMI, fraction of missing information)

nu_com is the complete-data df of the chosen df method (`Fit.coef_table(df=...)["df"]`, averaged
over the m fits; it is the same in every fit for "hlm", "residual" and "between-within"). With
df="infinite" (nu_com = inf) nu_BR is Rubin's nu and FMI uses it, as mitml without `df.com`.
Note FMI is not 0 when B = 0 and nu_com is finite: it is then 2/(nu_obs + 3) (mitml's definition).
t = Qbar/sqrt(T) is referred to t(nu_BR) for p and the confidence interval.

Several parameters at once, H0: L gamma = rhs (Li, Raghunathan & Rubin 1991, "D1"), on
Q_i = L gamma_i - rhs and U_i = L Var_i(gamma) L' (k rows):

    r1 = (1 + 1/m) tr(B Ubar^-1) / k                           (RIV, average relative increase)
    D1 = Qbar' Ubar^-1 Qbar / (k (1 + r1))                     (F.value), F(k, nu_D1)
    t = k (m - 1); nu_LRR = 4 + (t - 4) [1 + (1 - 2/t)/r1]^2 if t > 4, else t (1 + 1/k)(1 + 1/r1)^2 / 2
    with a finite complete-data df nu_com (mitml's `df.com`) and t > 4, nu_D1 is Reiter's (2007)
    small-sample df, as mitml:::.D1 computes it; otherwise nu_D1 = nu_LRR (both are reported).

Variance components (tau, sigma2), reliabilities, ICC and deviances are arithmetic means over the
m fits (HLM; mitml's `extra.pars` are `apply(..., mean)`), labelled "average over m"; they are
not pooled estimates with a standard error.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
import pandas as pd

from multilevel.display import ShownAsTables
from multilevel.errors import SpecificationError
from multilevel.inference import coefficients as inference
from multilevel.inference import distributions as dist
from multilevel.inference.coefficients import OneRowTable
from multilevel.interfaces.fit import Fit


# ----- the formulas ------------------------------------------------------------------------------
def _centre(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean over the rows (imputations) and the deviations from it, computed around the first
    row (so that identical rows give exactly that row and zero deviations)."""
    d = q - q[0]
    shift = d.mean(axis=0)
    return q[0] + shift, d - shift


def rubin_scalar(q: np.ndarray, u: np.ndarray, df_com: np.ndarray | float) -> dict[str, np.ndarray]:
    """Rubin's rules for each column: q and u are (m, p) estimates and squared SEs; df_com the
    complete-data df of each column (np.inf for none). Returns qbar, ubar, b, t, riv, lambda,
    df_rubin (Rubin's nu), df_obs, df (Barnard-Rubin) and fmi (see the module docstring)."""
    q = np.asarray(q, dtype=float)
    u = np.asarray(u, dtype=float)
    m = q.shape[0]
    qbar, dev = _centre(q)
    ubar = u.mean(axis=0)
    b = (dev**2).sum(axis=0) / (m - 1)
    total = ubar + (1 + 1 / m) * b
    riv = (1 + 1 / m) * b / ubar
    lam = riv / (riv + 1)
    nu_com = np.broadcast_to(np.asarray(df_com, dtype=float), qbar.shape)
    with np.errstate(divide="ignore"):
        df_rubin = (m - 1) * (1 + 1 / riv) ** 2
        finite = np.isfinite(nu_com)
        df_obs = np.full(qbar.shape, np.inf)
        c = nu_com[finite]
        df_obs[finite] = (1 - lam[finite]) * c * (c + 1) / (c + 3)
        df = 1 / (1 / df_rubin + 1 / df_obs)
    fmi = (riv + 2 / (df + 3)) / (riv + 1)
    return {"qbar": qbar, "ubar": ubar, "b": b, "t": total, "riv": riv, "lambda": lam,
            "df_rubin": df_rubin, "df_obs": df_obs, "df": df, "fmi": fmi}


def d1_df_lrr(r1: float, k: int, m: int) -> float:
    """Li, Raghunathan & Rubin's (1991) denominator df of D1 (mitml:::.D1 without df.com)."""
    t = k * (m - 1)
    r1 = np.float64(r1)  # r1 = 0 (no between-imputation variance) gives an infinite df
    with np.errstate(divide="ignore"):
        if t > 4:
            return float(4 + (t - 4) * (1 + (1 - 2 / t) / r1) ** 2)
        return float(t * (1 + 1 / k) * (1 + 1 / r1) ** 2 / 2)


def d1_df_reiter(r1: float, k: int, m: int, df_com: float) -> float:
    """Reiter's (2007) small-sample denominator df of D1, as mitml:::.D1 computes it with df.com
    (defined for t = k(m-1) > 4)."""
    t = k * (m - 1)
    a = r1 * t / (t - 2)
    vstar = (df_com + 1) / (df_com + 3) * df_com
    c0 = 1 / (t - 4)
    c1 = vstar - 2 * (1 + a)
    c2 = vstar - 4 * (1 + a)
    z = (
        1 / c2
        + c0 * (a**2 * c1 / ((1 + a) ** 2 * c2))
        + c0 * (8 * a**2 * c1 / ((1 + a) * c2**2) + 4 * a**2 / ((1 + a) * c2))
        + c0 * (4 * a**2 / (c2 * c1) + 16 * a**2 * c1 / c2**3)
        + c0 * (8 * a**2 / c2**2)
    )
    return float(4 + 1 / z)


# ----- the results -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class PooledTest(OneRowTable, ShownAsTables):
    """H0: L gamma = rhs tested on m imputations by D1 (Li, Raghunathan & Rubin 1991; mitml
    `testConstraints(method = "D1")`). `table` has F (D1), num_df (k), den_df (Reiter's df when
    the complete-data df is finite, as mitml with df.com; else nu_LRR), p, riv (r1), den_df_lrr,
    df_com; `estimates` the pooled rows of L gamma (estimate) beside rhs, with se, df and
    t = (estimate - rhs)/se by Rubin's rules."""

    L: np.ndarray
    rhs: np.ndarray
    _scalars: ClassVar[tuple[str, ...]] = ("F", "num_df", "den_df", "p", "riv", "den_df_lrr", "df_com")
    qbar: np.ndarray
    ubar: np.ndarray
    b: np.ndarray
    estimates: pd.DataFrame
    table: pd.DataFrame
    m: int
    df_method: str
    se_method: str

    def _parts(self) -> tuple[str, list[object]]:
        from multilevel.display import p_text

        k = len(self.estimates)
        title = (f"D1 test of H0: {', '.join(map(str, self.estimates.index))}, pooled over m = {self.m} imputations "
                 f"({k} constraint{'s' * (k > 1)}; df: {self.df_method}, SE: {self.se_method})")
        lines = [
            self.estimates,
            f"F (D1) = {self.F:.4f} on {self.num_df:g} and {self.den_df:.4g} df, p = {p_text(self.p)}",
            f"average relative increase in variance r1 = {self.riv:.4f}; complete-data df {self.df_com:g}; "
            f"Li-Raghunathan-Rubin df {self.den_df_lrr:.4g}",
        ]
        return title, lines



@dataclass(frozen=True, eq=False, repr=False)
class PooledFit(ShownAsTables):
    """The same model fitted to m imputed data sets, pooled by Rubin's rules (module docstring).

    fits: the m Fits. q, u: (m, p) estimates and squared SEs; vcovs: (m, p, p) covariance
    matrices of the chosen SE method; df_com: complete-data df per coefficient (mean over fits).
    `fixed` is the pooled table; tau, sigma2, reliability, deviance, icc are averages over m.
    """

    fits: tuple[Fit, ...]
    df_method: str
    se_method: str
    level: float
    vcovs: np.ndarray
    df_com: pd.Series

    # ----- basic facts ---------------------------------------------------------------------------
    @property
    def m(self) -> int:
        return len(self.fits)

    @property
    def first(self) -> Fit:
        return self.fits[0]

    @property
    def method(self) -> str:
        return self.first.method

    @property
    def formula(self) -> str:
        return self.first.formula

    @property
    def x_names(self) -> list[str]:
        return list(self.first.design.x_names)

    @property
    def n_obs(self) -> pd.Series:
        """N of each imputed data set."""
        return pd.Series([f.n_obs for f in self.fits], index=range(1, self.m + 1), name="n_obs")

    @property
    def n_groups(self) -> pd.Series:
        return pd.Series([f.n_groups for f in self.fits], index=range(1, self.m + 1), name="n_groups")

    # ----- Rubin's rules per fixed effect ----------------------------------------------------
    @cached_property
    def q(self) -> pd.DataFrame:
        """Q_i: the estimates, one row per imputation."""
        return pd.DataFrame([f.beta.to_numpy() for f in self.fits], index=range(1, self.m + 1), columns=self.x_names)

    @cached_property
    def u(self) -> pd.DataFrame:
        """U_i: the squared SEs of the chosen method, one row per imputation."""
        return pd.DataFrame([np.diag(v) for v in self.vcovs], index=range(1, self.m + 1), columns=self.x_names)

    @cached_property
    def _rubin(self) -> dict[str, np.ndarray]:
        return rubin_scalar(self.q.to_numpy(), self.u.to_numpy(), self.df_com.to_numpy())

    @property
    def beta(self) -> pd.Series:
        """Qbar, the pooled fixed effects."""
        return pd.Series(self._rubin["qbar"], index=self.x_names, name="estimate")

    @cached_property
    def ubar(self) -> pd.DataFrame:
        """Ubar: the mean of the m covariance matrices (its diagonal: mean squared SE)."""
        return pd.DataFrame(self.vcovs.mean(axis=0), index=self.x_names, columns=self.x_names)

    @cached_property
    def b(self) -> pd.DataFrame:
        """B: the between-imputation covariance of the estimates (divisor m - 1)."""
        d = _centre(self.q.to_numpy())[1]
        return pd.DataFrame(d.T @ d / (self.m - 1), index=self.x_names, columns=self.x_names)

    @property
    def vcov(self) -> pd.DataFrame:
        """T = Ubar + (1 + 1/m) B, the total covariance of the pooled estimates."""
        return self.ubar + (1 + 1 / self.m) * self.b

    @cached_property
    def fixed(self) -> pd.DataFrame:
        """estimate (Qbar), se (sqrt T), df (Barnard-Rubin with nu_com), t, p, ci_low, ci_high,
        riv, lambda, fmi, df_rubin (Rubin's nu), df_com (nu_com) per fixed effect."""
        r = self._rubin
        se = np.sqrt(r["t"])
        t = r["qbar"] / se
        df = r["df"]
        p = 2 * dist.t_sf(np.abs(t), df)
        crit = dist.t_ppf(0.5 + self.level / 2, df)
        return pd.DataFrame(
            {
                "estimate": r["qbar"], "se": se, "df": df, "t": t, "p": p,
                "ci_low": r["qbar"] - crit * se, "ci_high": r["qbar"] + crit * se,
                "riv": r["riv"], "lambda": r["lambda"], "fmi": r["fmi"],
                "df_rubin": r["df_rubin"], "df_com": self.df_com.to_numpy(),
            },
            index=self.x_names,
        )

    def coef_table(self, df: str | None = None, se: str | None = None, level: float | None = None) -> pd.DataFrame:
        """The pooled table with another df / SE method (re-pools `fits`)."""
        return pool(self.fits, df, se, self.level if level is None else level).fixed

    @cached_property
    def robust(self) -> pd.DataFrame | None:
        """The pooled table with HLM's robust (CR0) SEs and the same df method (None when the
        df method belongs to model-based SEs only)."""
        if self.se_method == "CR0":
            return self.fixed
        if self.df_method in ("satterthwaite", "kenward-roger"):
            return None
        return self.coef_table(self.df_method, "CR0")

    # ----- averages over m -------------------------------------------------------------------
    @cached_property
    def tau(self) -> pd.DataFrame:
        """Tau averaged over the m fits (element by element)."""
        return sum(f.tau for f in self.fits) / self.m

    @cached_property
    def sigma2(self) -> float:
        """sigma2 averaged over the m fits."""
        return float(np.mean([f.sigma2 for f in self.fits]))

    @property
    def tau_correlations(self) -> pd.DataFrame:
        """Correlations of the averaged Tau."""
        from multilevel.engine.covariance import correlations

        return correlations(self.tau)

    @cached_property
    def variance_components(self) -> pd.DataFrame:
        """Each variance (random coefficients, then level-1): its average over m, sd = sqrt of the
        average, and the smallest and largest of the m values."""
        names = list(self.first.design.z_names)
        vals = np.array([list(np.diag(f.tau.to_numpy())) + [f.sigma2] for f in self.fits])
        mean = vals.mean(axis=0)
        return pd.DataFrame(
            {"variance": mean, "sd": np.sqrt(mean), "min": vals.min(axis=0), "max": vals.max(axis=0)},
            index=names + ["level-1"],
        )

    @cached_property
    def reliability(self) -> pd.Series:
        """HLM's reliabilities averaged over m."""
        return sum(f.reliability for f in self.fits) / self.m

    @cached_property
    def icc(self) -> float | None:
        """tau00/(tau00 + sigma2) averaged over m (mitml's "ICC|group"; None without a random
        intercept)."""
        z = list(self.first.design.z_names)
        if "Intercept" not in z:
            return None
        vals = [f.tau.loc["Intercept", "Intercept"] / (f.tau.loc["Intercept", "Intercept"] + f.sigma2) for f in self.fits]
        return float(np.mean(vals))

    @cached_property
    def deviance(self) -> float:
        """The deviance (lme4's REMLcrit / -2logL) averaged over m."""
        return float(np.mean([f.deviance for f in self.fits]))

    @cached_property
    def hlm_deviance(self) -> float:
        """HLM's deviance averaged over m."""
        return float(np.mean([f.hlm_deviance for f in self.fits]))

    @cached_property
    def per_imputation(self) -> pd.DataFrame:
        """One row per imputation: the estimates, the variance components and the deviance."""
        rows = []
        for f in self.fits:
            row = dict(zip(self.x_names, f.beta.to_numpy()))
            tau = f.tau
            for i, a in enumerate(tau.index):
                for bname in tau.columns[i:]:
                    row[f"tau[{a},{bname}]"] = tau.loc[a, bname]
            row["sigma2"] = f.sigma2
            row["deviance"] = f.deviance
            rows.append(row)
        return pd.DataFrame(rows, index=pd.Index(range(1, self.m + 1), name="imputation"))

    @property
    def data_report(self) -> pd.DataFrame:
        """What went into each imputation's fit: rows and units used and left out (each fit's own
        `data_report` has the details)."""
        rows = []
        for f in self.fits:
            r = f.data_report
            rows.append({"rows_in": r.n_rows_in, "rows_used": r.n_rows_used, "rows_dropped": r.n_rows_dropped,
                         "units_in": r.n_units_in, "units_used": r.n_units_used})
        return pd.DataFrame(rows, index=pd.Index(range(1, self.m + 1), name="imputation"))

    # ----- tests -----------------------------------------------------------------------------
    def test(self, contrast, rhs=None, df: str | None = None, se: str | None = None) -> PooledTest:
        """D1 test of L gamma = rhs ("sector = 0, sector:cses = 0", a list of such texts, or a
        matrix) with the pooled Qbar, Ubar and B of L gamma - rhs (module docstring). The
        complete-data df is the mean over the fits of each fit's own F-test df under this df/SE
        method: this pooled fit's, or `df=` / `se=` as in `Fit.test` (the fits are re-pooled with
        them; without df=, a new se= takes its own default df, e.g. Bell-McCaffrey for CR2)."""
        if se is not None or df is not None:
            se_new = self.se_method if se is None else se
            df_new = self.df_method if df is None and se is None else df
            other = pool(self.fits, df_new, se_new, self.level)
            if (other.df_method, other.se_method) != (self.df_method, self.se_method):
                return other.test(contrast, rhs)
        L, r, labels = self.first.inference.contrast(contrast, rhs)
        L = np.atleast_2d(np.asarray(L, dtype=float))
        k = L.shape[0]
        if np.linalg.matrix_rank(L) < k:
            raise SpecificationError("The rows of the contrast are linearly dependent; drop the redundant ones.")
        r = np.broadcast_to(np.asarray(r, dtype=float), (k,))
        m = self.m
        qs = self.q.to_numpy() @ L.T - r                      # (m, k)
        us = np.einsum("ka,iab,lb->ikl", L, self.vcovs, L)    # (m, k, k)
        qbar, d = _centre(qs)
        ubar = us.mean(axis=0)
        b = d.T @ d / (m - 1)
        r1 = float((1 + 1 / m) * np.trace(b @ np.linalg.inv(ubar)) / k)
        F = float(qbar @ np.linalg.solve(ubar, qbar) / (k * (1 + r1)))
        df_com = float(np.mean([f.test(L, r, df=self.df_method, se=self.se_method).den_df for f in self.fits]))
        den_lrr = d1_df_lrr(r1, k, m)
        den = d1_df_reiter(r1, k, m, df_com) if np.isfinite(df_com) and k * (m - 1) > 4 else den_lrr
        p = float(dist.chi2_sf(F * k, k) if np.isinf(den) else dist.f_sf(F, k, den))
        table = pd.DataFrame({"F": [F], "num_df": [float(k)], "den_df": [den], "p": [p], "riv": [r1],
                              "den_df_lrr": [den_lrr], "df_com": [df_com]})
        est = rubin_scalar(qs, np.einsum("ikk->ik", us), _row_df_com(self, L))
        se = np.sqrt(est["t"])
        tt = est["qbar"] / se
        crit = dist.t_ppf(0.5 + self.level / 2, est["df"])
        value = est["qbar"] + r  # L Qbar: the estimate; rhs the hypothesised value, beside it
        estimates = pd.DataFrame(
            {"estimate": value, "rhs": r.copy(), "se": se, "df": est["df"], "t": tt, "p": 2 * dist.t_sf(np.abs(tt), est["df"]),
             "ci_low": value - crit * se, "ci_high": value + crit * se, "riv": est["riv"], "fmi": est["fmi"]},
            index=pd.Index(labels, name="contrast"),
        )
        return PooledTest(L, r.copy(), qbar, ubar, b, estimates, table, m, self.df_method, self.se_method)

    # ----- reports (formatting only) ---------------------------------------------------------
    def report(self, tests=()) -> str:
        """The pooled results as text: fixed effects by Rubin's rules (model-based and robust SEs),
        averaged variance components, reliabilities and deviance; `tests` are contrasts (text or
        matrices) or `PooledFit.test(...)` results, printed as D1 tests."""
        from multilevel.reports.pooled import pooled_report

        done = [t if isinstance(t, PooledTest) else self.test(t) for t in tests]
        return pooled_report(self, done)

    def __str__(self) -> str:
        return self.report()

    def _parts(self) -> tuple[str, list[object]]:
        title = f"Pooled fit ({self.method}) of {self.formula} over m = {self.m} imputed data sets"
        return title, [
            f"Fixed effects by Rubin's rules (df: Barnard-Rubin, complete-data df '{self.df_method}'; SE: {self.se_method}):",
            self.fixed,
            f"Variance components, averages over the m fits: sigma2 = {self.sigma2:.5g}; tau =",
            self.tau,
            "print(pooled.report()) for the full report; pooled.per_imputation for each fit.",
        ]



def _row_df_com(pooled: PooledFit, L: np.ndarray) -> np.ndarray:
    """Complete-data df of each row of L (mean over the fits)."""
    return np.array([
        np.mean([inference.combination_df(f.inference, row, pooled.df_method, pooled.se_method) for f in pooled.fits]) for row in L
    ])


# ----- the entry point ---------------------------------------------------------------------------
def _check_same_model(fits: Sequence[Fit]) -> None:
    first = fits[0]
    facts = {
        "fixed effects": lambda f: tuple(f.design.x_names),
        "random effects": lambda f: tuple(f.design.z_names),
        "estimation method": lambda f: f.method,
        "outcome": lambda f: f.spec.outcome,
        "grouping factor": lambda f: f.design.group,
    }
    for i, f in enumerate(fits[1:], start=2):
        for what, get in facts.items():
            a, b = get(first), get(f)
            if a != b:
                show = (lambda v: ", ".join(v)) if isinstance(a, tuple) else str
                raise SpecificationError(
                    f"The fits are not the same model: fit {i} has {what} {show(b)}, fit 1 has {show(a)}. "
                    "Pool fits of one model (one formula and method) to the m imputed data sets."
                )


def _check_same_rows(fits: Sequence[Fit]) -> None:
    """Rubin's rules combine estimates of one quantity on m completions of the same data: the fits
    must use the same rows and units. An imputed set of fewer rows, or one with missing values
    left (dropped listwise in that set only), is refused with the rows and units each set used."""
    def rows_of(f):
        idx = f.design.row_index
        return None if idx is None else idx

    first = fits[0]
    differ = False
    for f in fits[1:]:
        if f.n_obs != first.n_obs or f.design.group_labels != first.design.group_labels:
            differ = True
        else:
            a, b = rows_of(first), rows_of(f)
            if a is not None and b is not None and not a.equals(b):
                try:  # the same rows in another order are the same data
                    differ = not a.sort_values().equals(b.sort_values())
                except TypeError:
                    differ = True
        if differ:
            break
    if not differ:
        return
    lines = []
    for i, f in enumerate(fits, start=1):
        r = f.data_report
        dropped = ", ".join(f"{n} missing in '{v}'" for v, n in r.dropped_by_variable)
        lines.append(f"set {i}: {r.n_rows_used} rows of {r.n_rows_in} used, {f.n_groups} units" + (f" ({dropped})" if dropped else ""))
    raise SpecificationError(
        "The imputed data sets do not use the same rows and units, so their estimates are not of the same quantity "
        "and Rubin's rules do not apply: " + "; ".join(lines) + ". Each imputed set must hold the same rows, completely "
        "filled in (check that every set is complete and that none was cut or filtered)."
    )


def pool(fits: Sequence[Fit], df: str | None = None, se: str | None = None, level: float = 0.95) -> PooledFit:
    """Pool fits of one model to m >= 2 imputed data sets by Rubin's rules (module docstring).

    df: the complete-data df method of `Fit.coef_table` ("hlm" by default; "infinite" gives
    Rubin's classic df), its df enter the Barnard-Rubin df as nu_com. se: the SE method ("model"
    by default, "CR0", "CR1", "CR2"). level: of the confidence intervals.
    """
    if isinstance(fits, Fit):
        raise SpecificationError("pool() takes a list of fits, one per imputed data set, not a single fit.")
    fits = tuple(fits)
    bad = [i for i, f in enumerate(fits, start=1) if not isinstance(f, Fit)]
    if bad:
        raise SpecificationError(f"pool() takes fitted models (multilevel Fit); item {bad[0]} is a {type(fits[bad[0] - 1]).__name__}.")
    if len(fits) < 2:
        raise SpecificationError(
            f"Pooling needs the fits to at least 2 imputed data sets; got {len(fits)}. "
            "(With one data set use the fit itself.)"
        )
    inference.check_level(level)
    _check_same_model(fits)
    _check_same_rows(fits)
    df, se = inference.resolve(fits[0].inference, df, se)
    vcovs = np.array([f.coordinates.vcov(inference.vcov(f.inference, df, se)) for f in fits])  # in the data's coordinates
    df_com = np.mean([f.coef_table(df=df, se=se, level=level)["df"].to_numpy() for f in fits], axis=0)
    return PooledFit(fits, df, se, level, vcovs, pd.Series(df_com, index=list(fits[0].design.x_names), name="df_com"))
