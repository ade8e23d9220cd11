"""The entry points: lme4-style `fit`, HLM-style `fit_levels`, and the stages they compose.

    spec    = parse_formula(...) | levels(...)          (ModelSpec, no data)
    design  = build_design(spec, data)                   (the only stage that sees the DataFrame)
    summ    = GroupSummaries.from_arrays(...)            (one pass over the rows)
    theta   = optimize_theta(summ, template, reml)      (never touches the rows)
    Fit     = Fit.at_theta(...)                          (numbers; reports format them)
"""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from .covariance import LambdaTemplate
from .design import build_design
from .errors import SpecificationError
from .formula import parse_formula
from .level_equations import parse_levels
from .optimizer import optimize_theta
from .results import Fit
from .spec import ModelSpec
from .summaries import GroupSummaries

METHODS = ("REML", "ML")


def levels(level1: str, level2: Mapping[str, str] | None = None, *, group: str) -> ModelSpec:
    """HLM-style level equations -> ModelSpec (see `multilevel.level_equations`)."""
    return parse_levels(level1, level2, group)


def _method(method: str) -> str:
    m = str(method).upper()
    if m not in METHODS:
        raise SpecificationError(f"method must be 'REML' or 'ML', not {method!r}.")
    return m


def fit_spec(spec: ModelSpec, data: pd.DataFrame, method: str = "REML", tau=None, sigma2: float | None = None) -> Fit:
    """Fit a ModelSpec to data; with `tau` and `sigma2`, evaluate at them instead of optimising."""
    method = _method(method)
    design = build_design(spec, data)
    summ = GroupSummaries.from_arrays(design.Z, design.X, design.y, design.codes, design.n_groups)
    template = LambdaTemplate.from_blocks(design.blocks, design.z_names, design.group)
    if (tau is None) != (sigma2 is None):
        raise SpecificationError("Give both tau and sigma2 to evaluate at given variance components, or neither.")
    if tau is not None:
        return Fit.at_variance_components(design, summ, template, method, tau, sigma2)
    theta, record = optimize_theta(summ, template, method == "REML")
    return Fit.at_theta(design, summ, template, method, theta, record)


def fit(formula: str | ModelSpec, data: pd.DataFrame, method: str = "REML", *, tau=None, sigma2: float | None = None) -> Fit:
    """Fit a two-level model written as an lme4-style formula.

    `ml.fit("mathach ~ (sector + meanses) * cses + (cses | school)", hsb)`; `(x || g)` for
    uncorrelated random effects; `cwc(x)` / `cgm(x)` centre x within groups / at the grand mean.
    method: "REML" (default) or "ML". With `tau` and `sigma2` the model is evaluated there, not fitted.
    """
    spec = formula if isinstance(formula, ModelSpec) else parse_formula(formula)
    return fit_spec(spec, data, method, tau, sigma2)


def fit_levels(
    level1: str,
    level2: Mapping[str, str] | None = None,
    *,
    group: str,
    data: pd.DataFrame,
    method: str = "REML",
    tau=None,
    sigma2: float | None = None,
) -> Fit:
    """Fit a two-level model written as HLM's level equations (see `multilevel.level_equations`).

    fit_levels("mathach ~ 1 + cwc(ses)",
               {"Intercept": "sector + meanses + u", "ses": "sector + meanses + u"},
               group="school", data=hsb)
    """
    return fit_spec(parse_levels(level1, level2, group), data, method, tau, sigma2)
