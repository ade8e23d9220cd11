"""An lme4-style summary (`summary(lmer(...))`), from a fit's core record (`results.estimates`) and
its coefficient table (`inference.view.Inference.coef_table`). Formatting only: every number is given.
"""
from __future__ import annotations

import pandas as pd

from multilevel.results.estimates import Estimates
from multilevel.results.multi import MultiEstimates


def _lme4_name(n: str) -> str:
    return "(Intercept)" if n == "Intercept" else n


def lme4_summary(fit: Estimates, table: pd.DataFrame, df: str = "satterthwaite") -> str:
    """lmerTest's summary of the fit whose record is `fit`: fixed effects from `table`, the
    coefficient table with df and p of the method `df` (Satterthwaite by default)."""
    crit = "REML criterion at convergence" if fit.reml else "Deviance"
    how = "REML" if fit.reml else "maximum likelihood"
    lines = [
        f"Linear mixed model fit by {how} ['multilevel']",
        f"Formula: {fit.formula}",
    ]
    pw = fit.design.precision_weights
    if pw is not None:
        lines.append(f"Weights: {pw.column}  (precision weights, as lmer's weights=)")
    elif fit.weight_kind:
        lines.append(f"Weights: {fit.weights_description}")
    lines.append("")
    if fit.reml:
        lines.append(f"{crit}: {fit.deviance:.4f}")
    else:
        lines.append(f"     AIC      BIC   logLik deviance\n{fit.aic:9.1f}{fit.bic:9.1f}{fit.loglik:9.1f}{fit.deviance:9.1f}")
    if fit.evaluated_at_given:
        lines.append("(evaluated at given variance components, not estimated)")
    lines += ["", "Random effects:", f" {'Groups':<9}{'Name':<14}{'Variance':>10}{'Std.Dev.':>10}  Corr"]
    vc = fit.random_effects
    cor = fit.tau_correlations.to_numpy()
    for i, z in enumerate(fit.design.z_names):
        grp = fit.design.group if i == 0 else ""
        corr = " ".join(f"{cor[i, k]:6.2f}" for k in range(i))
        lines.append(f" {grp:<9}{_lme4_name(z):<14}{vc['variance'].iloc[i]:>10.4f}{vc['sd'].iloc[i]:>10.4f}  {corr}".rstrip())
    lines.append(f" {'Residual':<9}{'':<14}{vc['variance'].iloc[-1]:>10.4f}{vc['sd'].iloc[-1]:>10.4f}")
    lines.append(f"Number of obs: {fit.n_obs}, groups:  {fit.design.group}, {fit.n_groups}")
    lines += ["", f"Fixed effects ({df} df):", f"{'':<16}{'Estimate':>11}{'Std. Error':>12}{'df':>10}{'t value':>9}{'Pr(>|t|)':>11}"]
    for name, row in table.iterrows():
        lines.append(
            f"{_lme4_name(name):<16}{row['estimate']:>11.5f}{row['se']:>12.5f}{row['df']:>10.2f}{row['t']:>9.3f}{row['p']:>11.3g}"
        )
    if fit.singular:
        lines += ["", "boundary (singular) fit: see help('isSingular')"]
    if fit.optimizer is not None and not fit.converged:  # an evaluated fit (fit.at) optimised nothing
        lines += ["", f"Model failed to converge: {fit.optimizer.check} (the estimates are where the optimizer stopped)"]
    elif fit.optimizer is not None:
        lines += ["", f"Optimum checked: {fit.optimizer.check}"]
    dr = fit.data_report
    if dr.n_rows_dropped:
        lines += ["", f"{dr.n_rows_dropped} rows dropped for missing values ({dr.n_rows_used} of {dr.n_rows_in} used)"]
    return "\n".join(lines) + "\n"


def lme4_summary_multi(fit: MultiEstimates, table: pd.DataFrame, ngrps: dict[str, int]) -> str:
    """lme4's summary of a fit with several grouping factors: the random effects from
    `fit.varcorr`, the fixed effects from `table` (estimate, se, t; and df, p when given)."""
    how = "REML" if fit.reml else "maximum likelihood"
    lines = [f"Linear mixed model fit by {how} ['multilevel']", f"Formula: {fit.design.spec.to_formula()}", ""]
    if fit.reml:
        lines.append(f"REML criterion at convergence: {fit.deviance:.4f}")
    else:
        lines.append(f"     AIC      BIC   logLik deviance\n{fit.aic:9.1f}{fit.bic:9.1f}{fit.loglik:9.1f}{fit.deviance:9.1f}")
    vc = fit.varcorr
    w = max(9, *(len(str(g)) + 1 for g in vc.grp))
    lines += ["", "Random effects:", f" {'Groups':<{w}}{'Name':<14}{'Variance':>10}{'Std.Dev.':>10}  Corr"]
    last = None
    for row in vc.itertuples(index=False):
        if not pd.isna(row.var2):
            continue  # the correlations follow their variances, as lme4 prints them
        grp = row.grp if row.grp != last else ""
        last = row.grp
        corr = vc[(vc.grp == row.grp) & (vc.var2 == row.var1)]
        text = " ".join(f"{c:6.2f}" for c in corr.sdcor)
        name = "" if pd.isna(row.var1) else row.var1
        lines.append(f" {grp:<{w}}{name:<14}{row.vcov:>10.4f}{row.sdcor:>10.4f}  {text}".rstrip())
    groups = "; ".join(f"{name}, {n}" for name, n in ngrps.items())
    lines += [f"Number of obs: {fit.n_obs}, groups:  {groups}", "", "Fixed effects:"]
    has_df = "df" in table.columns
    head = f"{'':<16}{'Estimate':>11}{'Std. Error':>12}" + (f"{'df':>10}" if has_df else "") + f"{'t value':>9}"
    lines.append(head + (f"{'Pr(>|t|)':>11}" if has_df else ""))
    for name, row in table.iterrows():
        text = f"{_lme4_name(str(name)):<16}{row['estimate']:>11.5f}{row['se']:>12.5f}"
        if has_df:
            text += f"{row['df']:>10.2f}"
        text += f"{row['t']:>9.3f}"
        if has_df:
            text += f"{row['p']:>11.3g}"
        lines.append(text)
    if fit.singular:
        lines += ["", "boundary (singular) fit: see help('isSingular')"]
    if fit.optimizer is not None and not fit.converged:
        lines += ["", f"Model failed to converge: {fit.optimizer.check} (the estimates are where the optimizer stopped)"]
    elif fit.optimizer is not None:
        lines += ["", f"Optimum checked: {fit.optimizer.check}"]
    dr = fit.design.data_report
    if dr.n_rows_dropped:
        lines += ["", f"{dr.n_rows_dropped} rows dropped for missing values ({dr.n_rows_used} of {dr.n_rows_in} used)"]
    return "\n".join(lines) + "\n"
