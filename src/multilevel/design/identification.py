"""Is the model identified by these data? Checks on the summaries, before and after the optimiser.

Two degenerate outcomes give no finite likelihood, and the optimiser would otherwise return
numbers (sigma2 = -1e-15, "converged") or a raw error from the linear algebra:

  * y an exact linear function of the fixed-effect columns: the OLS residual sum of squares
    y'y - y'X (X'X)^-1 X'y is 0 (to rounding), so sigma2 and tau are not estimable;
  * no level-1 variation left once the random effects are fitted (y constant within units, or an
    exact function of Z within every unit): sigma2 -> 0 with the deviance -> -infinity.

Both are computed in the summaries' internal coordinates (`coordinates`), where they are exact.
"""
from __future__ import annotations

import numpy as np

from multilevel.design.summaries import GroupSummaries
from multilevel.errors import DataError

#: a residual sum of squares below this share of the outcome's total is 0 to rounding
EXACT = 1e-10


def _total_ss(s: GroupSummaries, intercept: int | None) -> float:
    """sum (y - ybar)^2 (about 0 without an intercept), from the totals."""
    yty = s.yty_total
    if intercept is None:
        return yty
    n = s.XtX_total[intercept, intercept]
    sy = s.Xty_total[intercept]
    return float(yty - sy * sy / n) if n > 0 else yty


def check_enough_rows(n_obs: int, n_groups: int, q: int, group: str, term: str) -> None:
    """lme4's check.nobs.vs.nRE: with no more rows than random effects (N <= J q), the random
    effects and the level-1 variance cannot be told apart."""
    if n_obs <= n_groups * q:
        raise DataError(
            f"The data have {n_obs} rows for {n_groups * q} random effects ({q} per unit of '{group}', {n_groups} units, "
            f"from {term}): with no more rows than random effects, the random-effects variances and the level-1 "
            "residual variance cannot be told apart (lme4 refuses this too). Use a simpler random-effects part "
            "(e.g. a random intercept only) or data with more rows per unit."
        )


def check_between_units(coefficients, n_groups: int, group: str, reml: bool) -> None:
    """Under REML, a random coefficient needs more units than the fixed effects of its level-2
    equation (gamma_q0 ... gamma_qS): with J <= S_q + 1 the unit-level coefficients are fitted
    exactly by the fixed effects, the REML criterion is flat in that variance (HLM's chi-square has
    J - S_q - 1 <= 0 df), and any value of it would be returned as an estimate."""
    if not reml:
        return  # ML's estimate is then 0, on the boundary (a singular fit, reported as such)
    for c in coefficients:
        if c.random and len(c.columns) >= n_groups:
            raise DataError(
                f"The random coefficient '{c.name}' has {len(c.columns)} fixed effects in its level-2 equation "
                f"({', '.join(c.predictors)}) for {n_groups} units of '{group}': with no more units than these, "
                "the units' coefficients are fitted exactly and its variance is not identified under REML (the "
                "REML criterion does not change with it). Use fewer level-2 predictors, more units, or method='ML'."
            )


def check_not_exact(s: GroupSummaries, x_names: tuple[str, ...], outcome: str, intercept: int | None) -> None:
    """Refuse an outcome that the fixed effects reproduce exactly (module doc)."""
    tss = _total_ss(s, intercept)
    if not tss > 0:
        return  # a constant outcome is named by data_checks.check_outcome
    XtX, Xty = s.XtX_total, s.Xty_total
    try:
        b = np.linalg.lstsq(XtX, Xty, rcond=None)[0]
    except np.linalg.LinAlgError:
        return
    rss = float(s.yty_total - Xty @ b)
    if rss <= EXACT * tss:
        raise DataError(
            f"The outcome '{outcome}' is an exact linear function of the fixed-effect predictors "
            f"({', '.join(n for n in x_names)}): their least-squares fit leaves no residual (residual sum of squares "
            f"{max(rss, 0.0):.3g} of a total {tss:.6g}), so there is no variance left for the random effects or the "
            "level-1 residual. Check that the outcome is not computed from the predictors (or among them)."
        )


def check_level1_variance(s: GroupSummaries, sigma2: float, outcome: str, group: str, intercept: int | None) -> None:
    """Refuse a fit whose level-1 residual variance is 0 to rounding (module doc)."""
    n = s.total_weight if s.weighted else s.n_obs
    var_y = _total_ss(s, intercept) / max(n, 1.0)
    if not np.isfinite(sigma2) or (var_y > 0 and sigma2 <= EXACT * var_y):
        raise DataError(
            f"The outcome '{outcome}' has no variation left within the units of '{group}' once the random effects "
            f"are fitted (level-1 residual variance {sigma2:.3g}, against the outcome's variance {var_y:.6g}): the "
            "level-1 variance is not identified and the likelihood has no maximum. Check whether the outcome is "
            "constant within units (a level-2 variable) or an exact function of the random-effect terms."
        )
