"""The Fit a user holds: a facade over the core record and its views.

    fit.estimates    the core record (`results.estimates.Estimates`): estimates, their covariance,
                     the optimizer record, and what is needed to recompute them
    fit.inference    df, SEs, tests and intervals (`inference.view.Inference`)
    fit.statistics   HLM's reliabilities and chi-square tests (`diagnostics.hlm_statistics.HLMStatistics`)
    fit.diagnostics  EB residuals, residual files, effect sizes, plots (`diagnostics.view.Diagnostics`)

Every other member is one of theirs under the same name (`fit.beta` is `fit.estimates.beta`,
`fit.coef_table` is `fit.inference.coef_table`, ...), or a report of them (`multilevel.reports`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd

from multilevel.design.builder import Design
from multilevel.design.summaries import GroupSummaries
from multilevel.diagnostics.hlm_statistics import HLMStatistics
from multilevel.diagnostics.view import Diagnostics
from multilevel.engine.covariance import LambdaTemplate
from multilevel.engine.optimizer import OptimizerRecord
from multilevel.errors import DataError
from multilevel.inference.view import Inference
from multilevel.reports import equations
from multilevel.results.estimates import Estimates


class _Member:
    """A member of the Fit that is the member of the same name of its record or of one of its
    views (`part`: "estimates", "inference", "statistics" or "diagnostics"), with its docstring."""

    def __init__(self, part: str, owner: type) -> None:
        self.part, self.owner = part, owner

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        member = getattr(self.owner, name, None)  # None: a field of the record's dataclass
        self.__doc__ = member.__doc__ if member is not None else f"The record's {name} (`{self.owner.__name__}`)."

    def __get__(self, fit: Any, kind: type | None = None) -> Any:
        if fit is None:
            return self
        return getattr(getattr(fit, self.part), self.name)


def _record() -> Any:
    return _Member("estimates", Estimates)


def _inference() -> Any:
    return _Member("inference", Inference)


def _statistics() -> Any:
    return _Member("statistics", HLMStatistics)


def _diagnostics() -> Any:
    return _Member("diagnostics", Diagnostics)


@dataclass(frozen=True, eq=False)
class Fit:
    """A fitted (or evaluated) two-level linear mixed model (module doc).

    Estimated by REML or ML at the optimum (`optimizer` holds the record), or evaluated at given
    variance components (`evaluated_at_given` is True and `optimizer` is None).
    """

    estimates: Estimates

    # ----- the views --------------------------------------------------------------------------
    @cached_property
    def inference(self) -> Inference:
        return Inference(self.estimates)

    @cached_property
    def statistics(self) -> HLMStatistics:
        return HLMStatistics(self.estimates)

    @cached_property
    def diagnostics(self) -> Diagnostics:
        return Diagnostics(self.estimates, self.inference, self.statistics)

    # ----- construction ---------------------------------------------------------------------
    @classmethod
    def at_theta(cls, design: Design, summaries: GroupSummaries, template: LambdaTemplate, method: str, theta,
                 optimizer: OptimizerRecord | None = None, sigma2: float | None = None) -> Fit:
        """The fit at theta (`Estimates.at_theta`)."""
        return cls(Estimates.at_theta(design, summaries, template, method, theta, optimizer, sigma2))

    @classmethod
    def at_variance_components(cls, design: Design, summaries: GroupSummaries, template: LambdaTemplate, method: str,
                               tau, sigma2: float) -> Fit:
        """The model evaluated (not optimised) at given tau and sigma2 (`Estimates.at_variance_components`)."""
        return cls(Estimates.at_variance_components(design, summaries, template, method, tau, sigma2))

    def at(self, tau, sigma2: float) -> Fit:
        """This model evaluated at given tau and sigma2 (see `at_variance_components`)."""
        return Fit(self.estimates.at(tau, sigma2))

    def refit(self, method: str) -> Fit:
        """The same model and data estimated by another method ("REML" or "ML"), reusing the
        summaries (no pass over the rows)."""
        return Fit(self.estimates.refit(method))

    # ----- the record: what was fitted, the estimates and the likelihood ----------------------
    design = _record()
    summaries = _record()
    template = _record()
    method = _record()
    theta_internal = _record()
    sigma2 = _record()
    solution = _record()
    optimizer = _record()
    evaluated_at_given = _record()
    spec = _record()
    reml = _record()
    n_obs = _record()
    n_groups = _record()
    data_report = _record()
    formula = _record()
    singular = _record()
    weighted = _record()
    weight_kind = _record()
    weights_description = _record()
    converged = _record()
    coordinates = _record()
    beta = _record()
    vcov = _record()
    tau = _record()
    theta = _record()
    tau_correlations = _record()
    deviance = _record()
    loglik = _record()
    n_params = _record()
    aic = _record()
    bic = _record()
    hlm_deviance = _record()
    hlm_n_params = _record()
    gamma_labels = _record()
    varcorr = _record()
    groups = _record()

    # ----- inference --------------------------------------------------------------------------
    vcov_robust = _inference()
    hlm_df = _inference()
    fixed = _inference()
    model_based = _inference()
    robust = _inference()
    coef_table = _inference()
    test = _inference()
    estimate = _inference()
    confint = _inference()
    bootstrap = _inference()

    # ----- HLM's statistics -------------------------------------------------------------------
    n_units_sufficient = _statistics()
    reliability = _statistics()
    variance_components = _statistics()

    def ranef_table(self) -> pd.DataFrame:
        """lme4's as.data.frame(ranef(fit, condVar = TRUE)) (`Diagnostics.ranef_table`)."""
        return self.diagnostics.ranef_table()

    def unit_ols(self) -> pd.DataFrame:
        """HLM's "Level-1 OLS regressions" (`HLMStatistics.unit_ols_table`)."""
        return self.statistics.unit_ols_table()

    # ----- diagnostics ------------------------------------------------------------------------
    ranef = _diagnostics()
    ranef_condvar = _diagnostics()
    ranef_pev = _diagnostics()
    eb_coefficients = _diagnostics()
    residuals = _diagnostics()
    save_residuals = _diagnostics()
    homogeneity_test = _diagnostics()
    effect_sizes = _diagnostics()
    plot = _diagnostics()

    # ----- the model in words ---------------------------------------------------------------
    @property
    def level_equations(self) -> list[str]:
        return equations.level_equations(self.estimates.spec.outcome, self.estimates.design.coefficients)

    @property
    def mixed_equation(self) -> str:
        return equations.mixed_equation(self.estimates.spec.outcome, self.estimates.design.coefficients)

    # ----- reports (formatting only) --------------------------------------------------------
    def report(self, tests=(), effect_sizes: bool = True, homogeneity: bool = False, min_df: int = 10) -> str:
        """HLM's report as text. `tests`: contrasts (text or matrices, tested with HLM's robust
        covariance as HLM does) or `fit.test(...)` results, printed as HLM's General Linear
        Hypothesis tests; an effect-size section closes the report. `homogeneity`: add HLM's test
        of homogeneous level-1 variance over the units with at least `min_df` residual df."""
        done = [t if hasattr(t, "chisq") else self.inference.test(t, se="CR0") for t in tests]
        h = self.diagnostics.homogeneity_test(min_df) if homogeneity else None
        es = self.diagnostics.effect_sizes() if effect_sizes and not self.estimates.design.streamed else None
        from multilevel.reports.hlm import hlm_report  # the reports load with their first use

        return hlm_report(self.estimates, self.statistics, self.inference, done, es, h)

    def summary(self, df: str | None = None) -> str:
        """An lme4/lmerTest-style summary as text (fixed-effect df by `df`: Satterthwaite by default,
        HLM's df with the robust SEs under sampling weights, for which Satterthwaite is not defined)."""
        df = df if df is not None else ("hlm" if self.estimates.weighted else "satterthwaite")
        from multilevel.reports.lme4 import lme4_summary

        return lme4_summary(self.estimates, self.inference.coef_table(df=df), df)

    def to_html(self, path=None, title: str | None = None, plots: bool = True) -> str:
        """One self-contained HTML page: the model in both forms, every table of the HLM report and
        the lme4-style summary, the data report, effect sizes and the plots embedded. Written to
        `path` when given; the HTML is returned."""
        from multilevel.output import output_path

        target = None if path is None else output_path(path, "The HTML page")
        from multilevel.reports.html import html_document

        page = html_document(self.diagnostics, title, plots)
        if target is not None:
            try:
                target.write_text(page, encoding="utf-8")
            except OSError as exc:
                raise DataError(f"Cannot write the HTML page to '{target}': {exc.strerror or exc}.") from None
        return page

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        # an evaluated fit (fit.at) optimised nothing: not "NOT converged"
        e = self.estimates
        state = "" if e.converged or e.evaluated_at_given else "; NOT converged (see fit.optimizer)"
        return f"<multilevel.Fit {e.method}: {e.formula}; N = {e.n_obs}, J = {e.n_groups}{state}>"

    def _repr_html_(self) -> str:
        e = self.estimates
        es = None if e.design.streamed else self.diagnostics.effect_sizes()  # effect sizes need the rows
        from multilevel.reports.html import html_report

        return html_report(e, self.statistics, self.inference, es)

