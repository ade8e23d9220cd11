"""The report of a PooledFit (multiple imputation / plausible values), from its tables.

Formatting only: every number comes from `interfaces.imputation.PooledFit` and `PooledTest`, read
through the protocols below (what the report needs of them; the pooling itself is at the interfaces
stage, above the reports).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from multilevel.reports.hlm import RULE, coef_label, coefficient_index, gamma_rows, tau_label
from multilevel.results.estimates import Estimates


class _HasEstimates(Protocol):
    @property
    def estimates(self) -> Estimates: ...


class PooledResults(Protocol):
    """What the pooled report reads of a pooled fit (`interfaces.imputation.PooledFit`)."""

    @property
    def first(self) -> _HasEstimates: ...  # the fit to the first data set: the model's labels
    @property
    def method(self) -> str: ...
    @property
    def formula(self) -> str: ...
    @property
    def m(self) -> int: ...
    @property
    def n_obs(self) -> pd.Series: ...
    @property
    def n_groups(self) -> pd.Series: ...
    @property
    def df_method(self) -> str: ...
    @property
    def se_method(self) -> str: ...
    @property
    def fixed(self) -> pd.DataFrame: ...
    @property
    def robust(self) -> pd.DataFrame | None: ...
    @property
    def beta(self) -> pd.Series: ...
    @property
    def sigma2(self) -> float: ...
    @property
    def tau(self) -> pd.DataFrame: ...
    @property
    def tau_correlations(self) -> pd.DataFrame: ...
    @property
    def reliability(self) -> pd.Series: ...
    @property
    def variance_components(self) -> pd.DataFrame: ...
    @property
    def icc(self) -> float | None: ...
    @property
    def deviance(self) -> float: ...
    @property
    def hlm_deviance(self) -> float: ...


class PooledTestResults(Protocol):
    """What the pooled report reads of a D1 test (`interfaces.imputation.PooledTest`): its contrast
    and its one-row `table` (F, num_df, den_df, p, riv, den_df_lrr, df_com)."""

    @property
    def L(self) -> np.ndarray: ...
    @property
    def table(self) -> pd.DataFrame: ...
    @property
    def df_method(self) -> str: ...
    @property
    def se_method(self) -> str: ...

SE_NAMES = {"model": "model-based", "CR0": "robust (CR0)", "CR1": "robust (CR1)", "CR2": "robust (CR2)"}


def _counts(values) -> str:
    vals = sorted(set(int(v) for v in values))
    return str(vals[0]) if len(vals) == 1 else f"{vals[0]} to {vals[-1]}"


def _header(pf: PooledResults) -> list[str]:
    method = "restricted maximum likelihood" if pf.method == "REML" else "full maximum likelihood"
    return [
        " MULTIPLE IMPUTATION: RESULTS POOLED OVER IMPUTED DATA SETS",
        "",
        f"  Model (lme4 form)              = {pf.formula}",
        f"  Number of imputed data sets m  = {pf.m}",
        f"  Number of level-1 units        = {_counts(pf.n_obs)}",
        f"  Number of level-2 units        = {_counts(pf.n_groups)}",
        f"  Method of estimation: {method}",
        "  Fixed effects: Rubin's rules (Qbar, T = Ubar + (1 + 1/m)B); df by Barnard & Rubin with the",
        f"  complete-data df of method '{pf.df_method}'; variance components, reliabilities and deviance are",
        f"  averages over the m = {pf.m} fits.",
        "",
    ]


def _fixed_table(pf: PooledResults, table, se_method: str) -> list[str]:
    lines = [
        f" Final estimation of fixed effects, pooled over m = {pf.m} ({SE_NAMES[se_method]} standard errors)",
        RULE,
        "                                       Standard            Approx.",
        "    Fixed Effect         Coefficient   Error      T-ratio  d.f.     P-value   RIV    FMI",
        RULE,
    ]
    rows = table[["estimate", "se", "t", "df", "p", "riv", "fmi"]].to_numpy()

    def row(col: int) -> str:
        est, se, t, df, p, riv, fmi = rows[col]
        return f"{est:>14.6f}{se:>11.6f}{t:>9.3f}{df:>9.1f}{p:>9.3f}{riv:>7.3f}{fmi:>7.3f}"

    lines += gamma_rows(pf.first.estimates, row)
    com = table["df_com"].to_numpy()
    com_txt = f"{com[0]:g}" if np.all(com == com[0]) else f"{com.min():g} to {com.max():g}"
    lines += [
        RULE,
        f" d.f.: Barnard-Rubin, complete-data d.f. {com_txt} ({pf.df_method}); RIV = (1+1/m)B/Ubar; FMI as mitml.",
        "",
    ]
    return lines


def _averages(pf: PooledResults) -> list[str]:
    zq = coefficient_index(pf.first.estimates)
    z = list(pf.first.estimates.design.z_names)
    labels = [tau_label(n, zq[n]) for n in z]
    lines = [f" Sigma_squared (average over m = {pf.m}) = {pf.sigma2:>12.5f}", "", f" Tau (average over m = {pf.m})"]
    for lab, r in zip(labels, pf.tau.to_numpy()):
        lines.append(f" {lab:>16}" + "".join(f"{v:>14.5f}" for v in r))
    lines += ["", " Tau (as correlations, of the average)"]
    for lab, r in zip(labels, pf.tau_correlations.to_numpy()):
        lines.append(f" {lab:>16}" + "".join(f"{v:>7.3f}" for v in r))
    lines += [
        "",
        " ----------------------------------------------------",
        f"  Random level-1 coefficient   Reliability (average over m = {pf.m})",
        " ----------------------------------------------------",
    ]
    for n, r in pf.reliability.items():
        lines.append(f"  {coef_label(n, zq[n]):<28}{r:>13.3f}")
    lines += [
        " ----------------------------------------------------",
        "",
        f" Final estimation of variance components (average over m = {pf.m})",
        " -----------------------------------------------------------------------------",
        " Random Effect           Standard      Variance     Smallest      Largest",
        "                         Deviation     Component    of the m      of the m",
        " -----------------------------------------------------------------------------",
    ]
    vc = pf.variance_components
    for n in z:
        sd, var, lo, hi = vc.loc[n, ["sd", "variance", "min", "max"]]
        lines.append(f" {coef_label(n, zq[n], random_part=True):<22}{sd:>11.5f}{var:>14.5f}{lo:>13.5f}{hi:>13.5f}")
    sd, var, lo, hi = vc.loc["level-1", ["sd", "variance", "min", "max"]]
    lines.append(f" {'level-1, R':<22}{sd:>11.5f}{var:>14.5f}{lo:>13.5f}{hi:>13.5f}")
    lines += [" -----------------------------------------------------------------------------", " (sd = square root of the average variance)", ""]
    if pf.icc is not None:
        lines.append(f" ICC tau00/(tau00 + sigma2) (average over m = {pf.m}) = {pf.icc:.4f}")
    crit = "REML criterion" if pf.method == "REML" else "-2 log-likelihood"
    lines += [
        f" Deviance (HLM's convention; average over m = {pf.m}) = {pf.hlm_deviance:.6f}",
        f" lme4 {crit} (average over m = {pf.m})       = {pf.deviance:.6f}",
        "   (averages are descriptive: no pooled likelihood-ratio test is implied)",
        "",
    ]
    return lines


def d1_block(pf: PooledResults, test: PooledTestResults, number: int = 1) -> list[str]:
    """One D1 test: the contrast, the pooled rows and F."""
    beta = pf.beta.to_numpy()
    t = test.table.iloc[0]
    lines = [
        "",
        f"        Results of General Linear Hypothesis Testing, pooled (D1) - Test {number}",
        RULE,
        "                                   Coefficients      Contrast",
        RULE,
    ]
    lines += gamma_rows(pf.first.estimates, lambda col: f"{beta[col]:>21.6f}" + "".join(f"{v:>8.3f}" for v in test.L[:, col]))
    lines += [
        "",
        f"D1 statistic (F)     = {float(t['F']):.6f}",
        f"Degrees of freedom   = {int(t['num_df'])} and {float(t['den_df']):.2f}",
        f"P-value              = {float(t['p']):.6f}",
        f"  (average relative increase in variance r1 = {float(t['riv']):.4f}; {SE_NAMES[test.se_method]} covariance;",
        f"   complete-data d.f. {float(t['df_com']):g} ({test.df_method}); Li-Raghunathan-Rubin d.f. {float(t['den_df_lrr']):.2f})",
    ]
    return lines


def pooled_report(pf: PooledResults, tests: Sequence[PooledTestResults] = ()) -> str:
    """The pooled report: header, pooled fixed effects (model-based and robust), the averages over
    m, and D1 tests."""
    lines = _header(pf)
    lines += _fixed_table(pf, pf.fixed, pf.se_method)
    robust = pf.robust
    if robust is not None and pf.se_method == "model":
        lines += _fixed_table(pf, robust, "CR0")
    lines += _averages(pf)
    for i, t in enumerate(tests, start=1):
        lines += d1_block(pf, t, i)
    return "\n".join(lines) + "\n"
