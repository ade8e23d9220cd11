"""The diagnostics view of a fit: empirical Bayes residuals, HLM's residual files, the homogeneity
test, effect sizes and plots, read from the core record (`results.estimates`), the inference view
(for the effect sizes' t and df) and HLM's statistics (the units' OLS of the residual files).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from multilevel.diagnostics import plots
from multilevel.diagnostics import residual_files as rf
from multilevel.diagnostics.effect_sizes import EffectSizes, effect_sizes
from multilevel.diagnostics.hlm_statistics import HLMStatistics
from multilevel.engine.ranef import conditional_modes, conditional_variances
from multilevel.errors import SpecificationError
from multilevel.inference.view import Inference
from multilevel.results.estimates import Estimates
from multilevel.results.multi import lme4_name


@dataclass(frozen=True, eq=False)
class Diagnostics:
    """EB residuals, residual files, effect sizes and plots of the fit whose record is `est`."""

    est: Estimates
    inference: Inference
    statistics: HLMStatistics

    # ----- empirical Bayes ------------------------------------------------------------------
    @cached_property
    def ranef(self) -> pd.DataFrame:
        """Empirical Bayes residuals u*_j (lme4 `ranef`), units by random coefficient."""
        e = self.est
        u = e.coordinates.ranef(conditional_modes(e.summaries, e.solution))
        # indexed by the unit ids with their own type (`design.units`): df[g].map(fit.ranef[...]) works
        return pd.DataFrame(u, index=pd.Index(rf.unit_ids(e), name=e.design.group), columns=list(e.design.z_names))

    @cached_property
    def ranef_condvar(self) -> np.ndarray:
        """Var(u_j | y, gamma-hat) per unit (J, q, q) (lme4 condVar; HLM's D_j)."""
        return self.est.coordinates.tau(conditional_variances(self.est.solution, self.est.sigma2))

    @cached_property
    def eb(self) -> dict[str, np.ndarray]:
        """The EB quantities of `residual_files` (u, D, PV, FV, EC, PVC, W), for every unit."""
        return rf.eb_quantities(self.est, self.ranef.to_numpy(), self.ranef_condvar)

    def ranef_table(self) -> pd.DataFrame:
        """lme4's as.data.frame(ranef(fit, condVar = TRUE)): grpvar, term, grp, condval, condsd."""
        u, cv = self.ranef, self.ranef_condvar
        sd = np.sqrt(np.maximum(np.diagonal(cv, axis1=1, axis2=2), 0.0))
        grp = self.est.design.group_labels
        parts = [pd.DataFrame({"grpvar": self.est.design.group, "term": lme4_name(z),
                               "grp": list(grp), "condval": u[z].to_numpy(), "condsd": sd[:, a]})
                 for a, z in enumerate(u.columns)]
        return pd.concat(parts, ignore_index=True)

    @property
    def ranef_pev(self) -> np.ndarray:
        """Var(u_j - u*_j) per unit (J, q, q): condVar plus the uncertainty of gamma-hat (Henderson's
        prediction error variance; HLM's posterior variance of the EB residuals)."""
        return self.eb["PV"]

    @property
    def eb_coefficients(self) -> pd.DataFrame:
        """HLM's EB coefficients beta*_j = W_j gamma + u*_j, units by random coefficient."""
        return pd.DataFrame(self.eb["EC"], index=self.ranef.index, columns=self.ranef.columns)

    # ----- residual files and tests ---------------------------------------------------------
    def residuals(self, level: int = 2, extra=()) -> pd.DataFrame:
        """HLM's residual files as tables: level=2 (one row per unit: EB and OLS residuals, fitted
        values, EB coefficients, posterior variances, MDIST, CHIPCT, log residual SDs, level-2
        predictors, `extra` columns) or level=1 (one row per row used). See `residual_files`."""
        if level == 2:
            self.est.design.require_rows("The level-2 residual file")
            return rf.level2_table(self.est, self.eb, self.statistics.unit_ols, tuple(extra))
        if level == 1:
            self.est.design.require_rows("The level-1 residual file (for Dask data: ml.dask_residuals)")
            return rf.level1_table(self.est, self.ranef.to_numpy(), tuple(extra))
        raise SpecificationError(f"level must be 1 or 2, not {level!r}.")

    def save_residuals(self, path, level: int = 2, extra=()):
        """Write a residual file; the format follows the extension (.csv, .parquet, .sav, .dta)."""
        return rf.save(self.residuals(level, extra), path)

    def homogeneity_test(self, min_df: int = 10) -> dict:
        """HLM's "Test of homogeneity of level-1 variance" (R&B eq. 9.5-9.6), over the units with
        at least `min_df` residual df in their own OLS (`residual_files.homogeneity_test`)."""
        return rf.homogeneity_test(self.est, min_df)

    def effect_sizes(self, df: str | None = None, level: float = 0.95) -> EffectSizes:
        """ICCs, design effects and effective N, total and Rights-Sterba R2, d and r of each fixed
        effect (from t and its df), plausible-value ranges and the lecture's "true" intercept
        variance (`multilevel.effect_sizes`)."""
        self.est.design.require_rows("Effect sizes")
        return effect_sizes(self.est, self.inference.coef_table(df=df), level)

    def plot(self, kind: str, path=None, **options):
        """A diagnostic plot or model graph as a matplotlib Figure (saved to `path` when given):
        "caterpillar", "qq", "residual-sd", "eb" (variable=...), "model" (x=..., lines={...}),
        "residuals-fitted". See `multilevel.plots`."""
        return plots.plot(self, kind, path, **options)
