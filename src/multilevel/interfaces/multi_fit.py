"""The fit a user holds for a model with several grouping factors (nested, crossed or both): a
facade over its core record (`results.multi.MultiEstimates`).

It answers what lme4 answers for such a model: fixed effects, their covariance and SEs, the
variance components (`varcorr`, lme4's `as.data.frame(VarCorr(fit))`), the conditional modes by
factor with their conditional variances (`ranef`, `ranef_table`), the criterion, logLik, AIC and
BIC, the optimizer's record, the data report, and lme4's summary; and beyond lme4: HLM3's, HLM4's
or HCM2's report and level equations, small-sample df (Satterthwaite, Kenward-Roger), robust SEs,
GLH tests, Wald, profile and bootstrap intervals, residual files per level, effect sizes per
level, plots and the HTML page. What the two-level `Fit` offers beyond that (`NOT_YET`: HLM2's
own statistics, such as its homogeneity test or unit OLS) is refused by name with a clear error.
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
    "model_based", "robust", "hlm_df",
    "reliability", "variance_components", "n_units_sufficient", "unit_ols",
    "eb_coefficients", "homogeneity_test", "at", "hlm_deviance", "hlm_n_params", "gamma_labels", "ranef_pev", "tau_correlations",
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

    def coef_table(self, df: str | None = None, L=None, se: str = "model", cluster: str | None = None,
                   level: float = 0.95) -> pd.DataFrame:
        """lmerTest's coefficient table: estimate, se, df, t, p for each fixed effect (or each row
        of the contrast matrix L), df by "satterthwaite" (lmerTest; the default) or "kenward-roger"
        (pbkrtest; REML fits), from the variance derivatives of several factors
        (`inference.multi_derivatives`). se="CR0" (HLM's robust SEs), "CR1" or "CR2" (clubSandwich):
        the cluster-robust sandwich clustered at the top level (the factor every other factor is
        nested in) or by `cluster` (a factor or a column every factor is nested in), with
        clubSandwich's Satterthwaite df (df "bell-mccaffrey", their default), "residual" or
        "infinite"; these tables add the confidence interval at `level` (`inference.multi_view`)."""
        from multilevel.inference.multi_derivatives import multi_df

        se_key = str(se)
        key = None if df is None else str(df).lower().replace("_", "-")
        if se_key.lower() == "model" and key in (None, "satterthwaite", "kenward-roger"):
            if cluster is not None:
                raise SpecificationError("cluster= goes with the cluster-robust SEs (se='CR0', 'CR1' or 'CR2').")
            key = key or "satterthwaite"
            if L is None and key in self._tables:
                return self._tables[key]
            table = multi_df(self.estimates, None if L is None else np.asarray(L, dtype=float), key)
            if L is None:
                self._tables[key] = table
            return table
        inf = self._inference(cluster)
        if L is None:
            return inf.coef_table(df, se, level)
        table = inf.estimate(np.atleast_2d(np.asarray(L, dtype=float)), None, df, se, level)
        table.index = [f"L{r + 1}" for r in range(len(table))]
        return table

    def test(self, contrast, rhs=None, df: str | None = None, se: str = "model", cluster: str | None = None,
             level: float = 0.95):
        """Joint test of L gamma = rhs (text as "black = 0, hispanic = 0", a list of such texts, or
        a matrix): HLM's Wald chi-square and the F with lmerTest's Satterthwaite ddf (the default
        for model-based SEs), pbkrtest's Kenward-Roger F ("kenward-roger"), or, with se="CR2"
        (CR0, CR1), clubSandwich's Wald_test (HTZ; one row: its Satterthwaite t); the one-factor
        fit's `HypothesisTest`."""
        return self._inference(cluster).test(contrast, rhs, df, se, level)

    def estimate(self, contrast, rhs=None, df: str | None = None, se: str = "model", cluster: str | None = None,
                 level: float = 0.95) -> pd.DataFrame:
        """Linear combinations of the fixed effects, one row each: estimate, se, df, t, p, interval."""
        return self._inference(cluster).estimate(contrast, rhs, df, se, level)

    def confint(self, method: str = "wald", level: float = 0.95, *, which: str | None = None, n_boot: int = 1000,
                nsim: int | None = None, seed: int | None = None, progress: bool = True) -> pd.DataFrame:
        """lme4's confint: "wald" (the fixed effects, lme4's method = "Wald"), "profile" (lme4's
        profile-likelihood intervals) or "bootstrap" (lme4's bootMer percentile intervals; n_boot
        samples, `nsim` lme4's name for it, `seed`), for the fixed effects and the variance
        parameters sd_<z>|<factor>, cor_<a>.<b>|<factor>, sigma (`inference.multi_intervals`);
        which: "all" (the default of profile and bootstrap), "fixed" or "variance". The profile
        is of the fit's own criterion: an ML fit's equals lme4's; for a REML fit the variance
        parameters are profiled on the REML criterion (its intervals contain its estimates),
        where lme4 profiles the ML refit: `fit.refit("ML").confint("profile")` gives lme4's."""
        from multilevel.inference.coefficients import check_level
        from multilevel.inference.intervals import check_which, warn_few_replicates
        from multilevel.inference.multi_intervals import confint

        m = method.lower() if isinstance(method, str) else method
        if m in ("profile", "bootstrap", "boot"):
            check_level(level)
            which = "all" if which is None else which
            check_which(which)
            if m != "profile":
                warn_few_replicates(_n_boot(n_boot, nsim))
            return confint(self.estimates, "profile" if m == "profile" else "bootstrap", level, which,
                           _n_boot(n_boot, nsim), seed, progress)
        return self._inference(None).confint(method, level, which="fixed" if which is None else which)

    def bootstrap(self, n_boot: int = 1000, seed: int | None = None, progress: bool = True, *,
                  nsim: int | None = None):
        """Parametric bootstrap (lme4's bootMer): refits on n_boot samples (`nsim`: lme4's name)
        from this fitted model, every factor's random effects drawn; `intervals.Bootstrap`."""
        from multilevel.inference.multi_intervals import bootstrap

        return bootstrap(self.estimates, _n_boot(n_boot, nsim), seed, progress)

    @property
    def vcov_robust(self) -> pd.DataFrame:
        """HLM's robust (CR0) covariance of the fixed effects, clustered at the top level."""
        inf = self._inference(None)
        names = list(self.design.x_names)
        return pd.DataFrame(self.design.coords.vcov(inf.vcov_robust_internal), index=names, columns=names)

    def _inference(self, cluster: str | None):
        from multilevel.inference.multi_view import MultiInference, MultiRecord

        if cluster not in self._views:
            self._views[cluster] = MultiInference(MultiRecord(self.estimates, cluster))  # type: ignore[arg-type]
        return self._views[cluster]

    @cached_property
    def _views(self) -> dict:
        return {}

    @cached_property
    def _tables(self) -> dict[str, pd.DataFrame]:
        return {}

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

    def residuals(self, level: int | str = 1, extra=()) -> pd.DataFrame:
        """Residual files (`diagnostics.level_residuals`): level=1 one row per row used; a factor's
        name, or HLM's level number for nested factors (2: the innermost, 3: the next, ...), one
        row per level with its conditional modes and SDs."""
        from multilevel.diagnostics.level_residuals import factor_table, level1_table, level_factor

        name = level_factor(self.estimates, level)
        return level1_table(self.estimates, extra) if name is None else factor_table(self.estimates, name)

    def save_residuals(self, path, level: int | str = 1, extra=()):
        """Write a residual file; the format follows the extension (.csv, .parquet, .sav, .dta)."""
        from multilevel.diagnostics.residual_files import save

        return save(self.residuals(level, extra), path)

    def effect_sizes(self) -> pd.DataFrame:
        """ICCs per factor (between levels, and within one level with the factors it is nested
        in), design effects and effective N (`effect_sizes.level_iccs`)."""
        from multilevel.diagnostics.effect_sizes import level_iccs

        return level_iccs(self.estimates)

    def refit(self, method: str) -> MultiFit:
        """The same model and data by another method ("REML" or "ML")."""
        from multilevel.results.estimates import check_method

        return MultiFit(MultiEstimates.fit(self.design, check_method(method)))

    # ----- reports ---------------------------------------------------------------------------------
    def summary(self, df: str | None = "auto") -> str:
        """lmerTest's summary(fit): with Satterthwaite df ("satterthwaite", or "kenward-roger"),
        or lme4's without df (None). "auto": Satterthwaite's where it is cheap (nested factors,
        or a crossed block of at most 1500 random effects; InstEval's 1156 lecturers and
        departments with 2972 students take ~20 s), else none (`coef_table` computes them)."""
        from multilevel.reports.lme4 import lme4_summary_multi

        if df == "auto":
            rest = sum(len(self.design.groupings[f.grouping].units) * len(f.z_names) for f in self.estimates.factors[1:])
            nested = len(self.design.nested) >= len(self.estimates.factors) - 1
            df = "satterthwaite" if nested or rest <= 1500 else None
        table = self.fixed if df is None else self.coef_table(df)
        return lme4_summary_multi(self.estimates, table, self.groups)

    @property
    def level_equations(self) -> list[str]:
        """The model in HLM's level form: HLM3's/HLM4's (pi, beta, gamma; nested factors) or HCM2's
        (theta, gamma, beta, b, c; two crossed factors), as the report prints it."""
        return self._forms()[0]

    @property
    def mixed_equation(self) -> str:
        """The model in HLM's mixed form (one equation), as the report prints it."""
        return self._forms()[1]

    @property
    def _crossed_pair(self) -> bool:
        """Two crossed grouping factors: HCM2's model (its report and forms); else HLM3's or HLM4's."""
        return len(self.estimates.factors) == 2 and not self.design.nested

    def _forms(self) -> tuple[list[str], str]:
        est = self.estimates
        if self._crossed_pair:
            from multilevel.diagnostics.hcm2_statistics import HCM2Statistics
            from multilevel.reports.hcm2 import hcm2_forms

            return hcm2_forms(est, HCM2Statistics(est))
        from multilevel.diagnostics.level_structure import LevelStructure
        from multilevel.reports.hlm3 import level_forms

        return level_forms(est, LevelStructure.of(est, est.design.centred_frame()))

    def report(self) -> str:
        """HLM3's report of a model with two nested grouping factors, HLM4's of three
        (`reports.hlm3`), HCM2's of two crossed ones (`reports.hcm2`); other structures are
        refused by name."""
        if self._crossed_pair:
            from multilevel.diagnostics.hcm2_statistics import HCM2Statistics
            from multilevel.reports.hcm2 import hcm2_report

            return hcm2_report(self.estimates, HCM2Statistics(self.estimates))
        from multilevel.diagnostics.hlm3_statistics import HLM3Statistics
        from multilevel.diagnostics.level_structure import LevelStatistics
        from multilevel.reports.hlm3 import hlm3_report, hlm4_report

        if len(self.estimates.factors) == 3:
            st = LevelStatistics(self.estimates)
            _ = st.structure  # refuses factors that are not one nested chain, before any table is computed
            return hlm4_report(self.estimates, st, self.coef_table(df="satterthwaite"),
                               self.coef_table(se="CR0", df="bell-mccaffrey"))
        return hlm3_report(self.estimates, HLM3Statistics(self.estimates))

    def plot(self, kind: str = "caterpillar", path=None, **options):
        """A matplotlib Figure (saved to `path` when given: .png, .svg, .pdf): "caterpillar" (the
        conditional modes of every factor with +/- z condsd bars, lme4's dotplot(ranef(fit,
        condVar = TRUE)); level=), "residuals-fitted", "qq" (the level-1 residuals)
        (`diagnostics.plots.plot_factors`)."""
        from multilevel.diagnostics.plots import plot_factors

        return plot_factors(self, kind, path, **options)

    def to_html(self, path=None, title: str | None = None, plots: bool = True) -> str:
        """One self-contained HTML page (`reports.html.multi_html_document`): the model, the data
        report, the estimates, effect sizes, HLM's report where the structure has one, lme4's
        summary and the plots. Written to `path` when given; the HTML is returned."""
        from multilevel.reports.html import multi_html_document, save_page

        page = multi_html_document(self, title, plots)
        if path is not None:
            save_page(page, path)
        return page

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"<MultiFit {self.formula} by {self.method}: {self.n_obs} rows, " + \
            ", ".join(f"{k} {v}" for k, v in self.groups.items()) + ">"


def _n_boot(n_boot: int, nsim: int | None) -> int:
    """n_boot, or lme4's nsim when given (not both)."""
    if nsim is None:
        return n_boot
    if n_boot != 1000:
        raise SpecificationError("Give the number of bootstrap samples once: n_boot= or nsim= (lme4's name), not both.")
    return nsim
