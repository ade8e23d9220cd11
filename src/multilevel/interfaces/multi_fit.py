"""The fit a user holds for a model with several grouping factors (nested, crossed or both): a
facade over its core record (`results.multi.MultiEstimates`).

It answers what lme4 answers for such a model: fixed effects, their covariance and SEs, the
variance components (`varcorr`, lme4's `as.data.frame(VarCorr(fit))`), the conditional modes by
factor with their conditional variances (`ranef`, `ranef_table`), the criterion, logLik, AIC and
BIC, the optimizer's record, the data report, and lme4's summary. What the two-level `Fit` offers
beyond that (HLM's report, small-sample df, robust SEs, tests, intervals, residual files, effect
sizes, plots) is refused by name with a clear error until it is built for several factors.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from multilevel.errors import SpecificationError
from multilevel.results.multi import MultiEstimates

#: members of the two-level Fit that a fit with several grouping factors does not offer yet
NOT_YET = frozenset({
    "to_html", "coef_table", "model_based", "robust", "vcov_robust", "hlm_df", "test", "estimate",
    "confint", "bootstrap", "reliability", "variance_components", "n_units_sufficient", "unit_ols",
    "eb_coefficients", "residuals", "save_residuals", "homogeneity_test", "effect_sizes", "plot", "level_equations",
    "mixed_equation", "at", "hlm_deviance", "hlm_n_params", "gamma_labels", "ranef_pev", "tau_correlations",
    "statistics", "inference", "diagnostics", "template", "solution", "theta_internal", "coordinates",
})


@dataclass(frozen=True, eq=False)
class MultiFit:
    """A fitted linear mixed model with several grouping factors (module doc)."""

    estimates: MultiEstimates

    def __getattr__(self, name: str) -> Any:
        if name in NOT_YET:
            raise SpecificationError(
                f"fit.{name} is not available yet for models with several grouping factors "
                f"({', '.join(f.name for f in self.estimates.factors)}); it is for models with one."
            )
        raise AttributeError(name)

    # ----- the record ---------------------------------------------------------------------------
    @property
    def design(self):
        return self.estimates.design

    @property
    def spec(self):
        return self.estimates.design.spec

    @property
    def formula(self) -> str:
        return self.spec.to_formula()

    @property
    def method(self) -> str:
        return self.estimates.method

    @property
    def reml(self) -> bool:
        return self.estimates.reml

    @property
    def n_obs(self) -> int:
        return self.estimates.n_obs

    @property
    def groups(self) -> dict[str, int]:
        """The number of levels of each grouping factor (lme4's ngrps), in lme4's order."""
        return {f.name: len(self.design.groupings[f.grouping].units) for f in self.estimates.factors}

    @property
    def data_report(self):
        return self.design.data_report

    @property
    def optimizer(self):
        return self.estimates.optimizer

    @property
    def converged(self) -> bool:
        return self.estimates.converged

    @property
    def singular(self) -> bool:
        return self.estimates.singular

    @property
    def beta(self) -> pd.Series:
        return self.estimates.beta

    @property
    def vcov(self) -> pd.DataFrame:
        return self.estimates.vcov

    @property
    def sigma2(self) -> float:
        return self.estimates.sigma2

    @property
    def theta(self) -> pd.Series:
        """lme4's theta (getME(fit, "theta")), with lme4's names."""
        return pd.Series(self.estimates.theta, index=list(self.estimates.theta_names), name="theta")

    @property
    def tau(self) -> dict[str, pd.DataFrame]:
        """Each factor's covariance matrix of its random effects."""
        return self.estimates.tau

    @property
    def varcorr(self) -> pd.DataFrame:
        return self.estimates.varcorr

    @property
    def deviance(self) -> float:
        return self.estimates.deviance

    @property
    def loglik(self) -> float:
        return self.estimates.loglik

    @property
    def n_params(self) -> int:
        return self.estimates.n_params

    @property
    def aic(self) -> float:
        return self.estimates.aic

    @property
    def bic(self) -> float:
        return self.estimates.bic

    # ----- fixed effects --------------------------------------------------------------------------
    @cached_property
    def fixed(self) -> pd.DataFrame:
        """estimate, se (model-based, lme4's), t, one row per fixed effect."""
        b = self.beta
        se = np.sqrt(np.diag(self.vcov.to_numpy()))
        return pd.DataFrame({"estimate": b.to_numpy(), "se": se, "t": b.to_numpy() / se}, index=b.index)

    # ----- conditional modes ----------------------------------------------------------------------
    @property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """lme4's ranef(fit): per factor, a table of the levels' conditional modes."""
        return self.estimates.ranef()

    @property
    def ranef_condvar(self) -> dict[str, np.ndarray]:
        """lme4's condVar: per factor, (levels, q, q) conditional covariances."""
        return self.estimates.condvar()

    def ranef_table(self) -> pd.DataFrame:
        """lme4's as.data.frame(ranef(fit, condVar = TRUE))."""
        return self.estimates.ranef_table()

    def refit(self, method: str) -> MultiFit:
        """The same model and data by another method ("REML" or "ML")."""
        from multilevel.results.estimates import check_method

        return MultiFit(MultiEstimates.fit(self.design, check_method(method)))

    # ----- reports ---------------------------------------------------------------------------------
    def summary(self) -> str:
        """lme4's summary(fit)."""
        from multilevel.reports.lme4 import lme4_summary_multi

        return lme4_summary_multi(self.estimates, self.fixed, self.groups)

    def report(self) -> str:
        """HLM3's report of a model with two nested grouping factors (`reports.hlm3`); other
        structures are refused by name."""
        from multilevel.diagnostics.hlm3_statistics import HLM3Statistics
        from multilevel.reports.hlm3 import hlm3_report

        return hlm3_report(self.estimates, HLM3Statistics(self.estimates))

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"<MultiFit {self.formula} by {self.method}: {self.n_obs} rows, " + \
            ", ".join(f"{k} {v}" for k, v in self.groups.items()) + ">"
