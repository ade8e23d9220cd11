"""The sections the reports of several grouping factors share: HLM3's and HLM4's (`reports.hlm3`)
and HCM2's (`reports.hcm2`), from the fit's core record (`results.multi.MultiEstimates`) and the
numbers their statistics give. Formatting only: every number is given.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from multilevel.results.multi import MultiEstimates

#: HLM's rule under a table's title and head
RULE = " " + "-" * 76


def matrix_lines(title: str, mat: np.ndarray, labels: Sequence[str], fmt: str) -> list[str]:
    """A labelled matrix as HLM prints tau: the title, then one row per label (right-aligned in
    24 characters), each value formatted by `fmt`, and a blank line."""
    lines = [f" {title}"]
    for lab, row in zip(labels, mat):
        lines.append(f" {lab:>24}" + "".join(format(v, fmt) for v in row))
    lines.append("")
    return lines


def fixed_effect_row(label: str, width: int, row: np.ndarray) -> str:
    """One row of HLM3's and HCM2's fixed-effect tables: the effect's label right-aligned in `width`,
    then `row`'s coefficient, standard error, t-ratio, approximate d.f. and p-value."""
    est, se, t, df, p = row
    return f"    {label:>{width}}{est:>14.6f}{se:>11.6f}{t:>10.3f}{df:>8.0f}{p:>9.3f}"


def specifications(est: MultiEstimates, title: str, units: Sequence[str], notes: Sequence[str] = ()) -> list[str]:
    """The run's specifications: `title`, the model in lme4's form, the level-1 units, `units` (a
    line each: the units of the other levels, or the rows, columns and cells), the method of
    estimation, `notes`, the optimizer, the data report and the outcome."""
    method = "restricted maximum likelihood" if est.reml else "full maximum likelihood"
    lines = [
        title,
        "",
        f"  Model (lme4 form)              = {est.design.spec.to_formula()}",
        f"  Number of level-1 units        = {est.n_obs}",
        *units,
        f"  Method of estimation: {method}",
        *notes,
    ]
    opt = est.optimizer
    if opt is not None:
        lines.append(f"  Optimizer: {opt.method}, {opt.n_evaluations} evaluations of the deviance")
    lines += ["  " + line for line in str(est.design.data_report).splitlines()]
    lines += ["", f"  The outcome variable is  {est.design.spec.outcome}", ""]
    return lines


def convergence(est: MultiEstimates) -> list[str]:
    """Whether the estimation converged (or that none was run), and HLM's warning of a singular fit."""
    opt = est.optimizer
    if opt is None:
        return [" Evaluated at given variance components (no estimation).", ""]
    state = "converged" if opt.converged else "did NOT converge"
    lines = [f" Estimation {state} ({opt.n_evaluations} evaluations): {opt.detail}"]
    if est.singular:
        lines.append(" WARNING: the fit is singular (a variance estimated as zero or a correlation as +/-1).")
    lines.append("")
    return lines


def deviance_statistics(est: MultiEstimates, deviance: float, n_params: int) -> list[str]:
    """HLM's "Statistics for current covariance components model" (the deviance and HLM's parameter
    count, as the statistics give them), what the deviance is, and lme4's logLik, AIC and BIC."""
    crit = "REML criterion (lme4 REMLcrit)" if est.reml else "-2 log-likelihood (lme4 deviance)"
    return [
        " Statistics for current covariance components model",
        " --------------------------------------------------",
        f" Deviance                       = {deviance:.6f}",
        f" Number of estimated parameters = {n_params}",
        "",
        f" The deviance is the {crit}.",
        f" lme4: logLik = {est.loglik:.4f} (df = {est.n_params}), AIC = {est.aic:.4f}, BIC = {est.bic:.4f}",
    ]
