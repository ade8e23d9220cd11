"""The inference view of a fit with several grouping factors: the one-factor view
(`inference.view.Inference`: its coefficient tables, tests of L gamma = rhs, combinations and Wald
intervals, `inference.coefficients`) over the pieces of several factors: the variance derivatives
of `multi_derivatives` (Satterthwaite: lmerTest; Kenward-Roger: pbkrtest) and the cluster-robust
sandwich of `multi_robust` (CR0, CR1, CR2 with clubSandwich's df). HLM's per-coefficient df
("hlm", "between-within") are of one grouping factor and are refused here.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from multilevel.errors import SpecificationError
from multilevel.inference.multi_derivatives import variance_derivatives_multi
from multilevel.inference.multi_robust import ClusterRobust, cluster_codes, cluster_robust
from multilevel.inference.robust import CR2
from multilevel.inference.variance_derivatives import VarianceDerivatives
from multilevel.inference.view import Inference
from multilevel.results.multi import MultiEstimates

#: df methods of a fit with several grouping factors
MULTI_DF = ("satterthwaite", "kenward-roger", "bell-mccaffrey", "residual", "infinite")


@dataclass(frozen=True)
class _Solution:
    beta: np.ndarray


@dataclass(frozen=True, eq=False)
class MultiRecord:
    """What `inference.coefficients` reads of a record (`results.estimates.Estimates`' names),
    from a `MultiEstimates` and a clustering (`n_groups`: the clusters, CR1's J)."""

    multi: MultiEstimates
    cluster: str | None = None

    weighted = False
    gamma_labels = ()

    @property
    def design(self):
        return self.multi.design

    @property
    def reml(self) -> bool:
        return self.multi.reml

    @property
    def beta(self) -> pd.Series:
        return self.multi.beta

    @property
    def n_obs(self) -> int:
        return self.multi.n_obs

    @property
    def coordinates(self):
        return self.multi.design.coords

    @cached_property
    def solution(self) -> _Solution:
        return _Solution(np.asarray(self.multi.beta_internal, dtype=float))

    @property
    def vcov_internal(self) -> np.ndarray:
        return self.multi.sigma2 * self.multi.P_internal

    @cached_property
    def n_groups(self) -> int:
        return int(cluster_codes(self.multi, self.cluster)[1].max()) + 1


@dataclass(frozen=True, eq=False)
class MultiInference(Inference):
    """`Inference` of a fit with several grouping factors (module doc); `est` is a `MultiRecord`."""

    @cached_property
    def record(self) -> MultiRecord:
        assert isinstance(self.est, MultiRecord)
        return self.est

    @cached_property
    def multi(self) -> MultiEstimates:
        return self.record.multi

    @cached_property
    def variance_derivatives(self) -> VarianceDerivatives:
        from multilevel.engine.blocked import BlockedObjective

        m = self.multi
        objective = BlockedObjective(m.summaries, tuple(f.template for f in m.factors), m.reml)
        return variance_derivatives_multi(objective, m.theta, m.sigma2)

    @cached_property
    def clustered(self) -> ClusterRobust:
        return cluster_robust(self.multi, self.record.cluster)

    @cached_property
    def vcov_robust_internal(self) -> np.ndarray:
        return self.clustered.cr0.vcov

    @cached_property
    def cr2(self) -> CR2:
        return self.clustered.cr2

    @cached_property
    def cr0_pieces(self) -> CR2:
        return self.clustered.cr0

    @cached_property
    def hlm_df(self) -> pd.Series:
        raise SpecificationError(_HLM_DF)

    def resolve(self, df: str | None, se: str | None) -> tuple[str | None, str | None]:
        """The defaults of several factors: Satterthwaite's df for the model-based SEs, clubSandwich's
        (Bell-McCaffrey) for the robust ones; HLM's per-coefficient df refused."""
        se_key = None if se is None else str(se)
        robust = se_key is not None and se_key.lower() != "model"
        if df is None:
            df = "bell-mccaffrey" if robust else "satterthwaite"
        key = str(df).lower().replace("_", "-")
        if key not in MULTI_DF:
            raise SpecificationError(_HLM_DF if key in ("hlm", "between-within") else
                                     f"df={df!r} is not known; use one of {', '.join(MULTI_DF)}.")
        if robust and key in ("satterthwaite", "kenward-roger"):
            raise SpecificationError(
                f"df={df!r} is derived for the model-based covariance; with se={se!r} use df='bell-mccaffrey' "
                "(clubSandwich's Satterthwaite df, the default), 'residual' or 'infinite'."
            )
        return key, se_key

    def coef_table(self, df: str | None = None, se: str | None = None, level: float = 0.95) -> pd.DataFrame:
        return super().coef_table(*self.resolve(df, se), level=level)

    def test(self, contrast, rhs=None, df: str | None = None, se: str | None = None, level: float = 0.95):
        return super().test(contrast, rhs, *self.resolve(df, se), level=level)

    def estimate(self, contrast, rhs=None, df: str | None = None, se: str | None = None, level: float = 0.95) -> pd.DataFrame:
        return super().estimate(contrast, rhs, *self.resolve(df, se), level=level)

    def confint(self, method: str = "wald", level: float = 0.95, *, which: str = "fixed",
                **_bootstrap) -> pd.DataFrame:
        """Wald intervals of the fixed effects, estimate -/+ z SE with the model-based SEs (lme4's
        confint(fit, method = "Wald")); columns estimate, ci_low, ci_high as the one-factor fit's."""
        from multilevel.inference.coefficients import check_level

        check_level(level)
        m = str(method).lower()
        if m in ("profile", "bootstrap", "boot"):
            raise SpecificationError(
                f"{m} intervals are not available yet for models with several grouping factors; "
                "use method='wald' (the fixed effects)."
            )
        if m != "wald":
            raise SpecificationError(f"method={method!r} is not known; use 'wald' (profile and bootstrap: not yet).")
        if which != "fixed":
            raise SpecificationError(
                "Wald intervals of the variance components are not available yet for several grouping factors "
                "(lme4 gives none either); use which='fixed'."
            )
        tab = self.coef_table(df="infinite", level=level)
        return tab[["estimate", "ci_low", "ci_high"]]


_HLM_DF = ("HLM's approximate df ('hlm', 'between-within') are of one grouping factor; with several use "
           "df='satterthwaite' or 'kenward-roger' (model-based SEs), 'bell-mccaffrey' (cluster-robust SEs), "
           "'residual' or 'infinite'.")
