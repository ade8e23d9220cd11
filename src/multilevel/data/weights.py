"""Weights: sampling weights (pseudo-maximum likelihood) and precision weights (lme4's `weights=`).

Two kinds, two arguments, so that neither can be taken for the other (`choose`):
  sampling_weights=   inverse selection probabilities (HLM's and Stata's pweights, WeMix): the
                      pseudo-likelihood below; method="ML"; sandwich SEs.
  precision_weights=  lme4's `lmer(weights=)`: Var(e_i) = sigma2 / w_i, an ordinary likelihood
                      (`PrecisionWeights`); REML or ML, model-based SEs.
A bare `weights="w"` is refused (`choose`): lme4 users mean the second, HLM/Stata users the first,
and the two give different variance components.

Sampling weights at level 1 and level 2: pseudo-maximum likelihood (docs/hlm-statistics.md section 13).

    l_w(gamma, T, sigma2) = sum_j w_j log  integral  exp{ sum_i w_i|j log phi(y_ij; x_ij'gamma + z_ij'u, sigma2) } phi_T(u) du

(Pfeffermann et al. 1998; Rabe-Hesketh & Skrondal 2006; Stata `mixed [pw=]`, R WeMix). w_j is the
level-2 (unit) weight, w_i|j the conditional level-1 weight. For a linear model the inner integral
is closed-form: the likelihood of the unweighted model with the cross-products weighted by w_i|j
and each unit's contribution multiplied by w_j (`objective`). It is an ML criterion: a weighted
REML is not defined, so weighted fits use method="ML".

Scaling of the level-1 weights (they change the variance components, not only the SEs):
    "size"       w_i|j * n_j / sum_i w_i|j            (sums to n_j in each unit; RH&S method 1,
                                                       Mplus "cluster"; the default with level-2 weights)
    "effective"  w_i|j * S1_j / S2_j                  (sums to the effective size S1_j^2/S2_j;
                                                       RH&S method 2, Mplus "ecluster")
    "global"     w_ij * N / sum_ij w_ij               (sums to N; the default for a single,
                                                       level-1-only weight, as HLM takes it)
    "raw"        as given
Level-2 weights: "normalize" (w_j * J / sum_j w_j, HLM's normalisation; the default) or "raw".

Standard errors: the model-based covariance is not valid under informative weights; the default
is the sandwich over units, A^-1 [sum_j w_j^2 t_j t_j'] A^-1 with t_j the unit's score (HLM's
robust, CR0); se="CR1" multiplies it by J/(J-1) as Stata and WeMix do.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from multilevel.errors import DataError, SpecificationError, preview

LEVEL1_SCALINGS = ("size", "effective", "global", "raw")
LEVEL2_SCALINGS = ("normalize", "raw")


@dataclass(frozen=True)
class SamplingWeights:
    """Which columns hold the sampling weights, and how they are scaled (module doc).
    `ml.Weights` is the same class (its older name)."""

    level1: str | None = None
    level2: str | None = None
    level1_scaling: str | None = None  # None: "size" with level-2 weights, "global" without
    level2_scaling: str = "normalize"

    def __post_init__(self):
        if self.level1 is None and self.level2 is None:
            raise SpecificationError("Weights need a level-1 column, a level-2 column, or both.")
        if self.level1_scaling is not None and self.level1_scaling not in LEVEL1_SCALINGS:
            raise SpecificationError(f"level1_scaling must be one of {', '.join(LEVEL1_SCALINGS)}, not {self.level1_scaling!r}.")
        if self.level2_scaling not in LEVEL2_SCALINGS:
            raise SpecificationError(f"level2_scaling must be one of {', '.join(LEVEL2_SCALINGS)}, not {self.level2_scaling!r}.")

    @classmethod
    def of(cls, weights) -> SamplingWeights | None:
        """sampling_weights= as given: a column name (level-1 weights), a dict of the fields, or
        the object itself."""
        if weights is None or isinstance(weights, SamplingWeights):
            return weights
        if isinstance(weights, str):
            return cls(level1=weights)
        if isinstance(weights, dict):
            try:
                return cls(**weights)
            except TypeError:
                raise SpecificationError(
                    f"A dict of sampling weights takes the keys level1, level2, level1_scaling, level2_scaling; "
                    f"not {', '.join(map(repr, weights))}."
                ) from None
        raise SpecificationError(
            "sampling_weights must be a column name (level-1 weights), a dict or ml.SamplingWeights(level1=..., level2=...)."
        )

    @property
    def columns(self) -> list[str]:
        return [c for c in (self.level1, self.level2) if c is not None]

    @property
    def scaling1(self) -> str:
        if self.level1_scaling is not None:
            return self.level1_scaling
        return "size" if self.level2 is not None else "global"


@dataclass(frozen=True, eq=False)
class ScaledWeights:
    """The weights of the rows and units used, after scaling; `spec` says how they were made."""

    spec: SamplingWeights
    row: np.ndarray | None  # (N,) conditional level-1 weights w_i|j
    unit: np.ndarray | None  # (J,) level-2 weights w_j

    def table(self) -> pd.DataFrame:
        """HLM's "Weighting Specification": weighting?, name, normalised?, per level."""
        s = self.spec
        return pd.DataFrame(
            {
                "weighting": [s.level1 is not None, s.level2 is not None],
                "name": [s.level1 or "", s.level2 or ""],
                "scaling": [s.scaling1 if s.level1 else "", s.level2_scaling if s.level2 else ""],
            },
            index=["Level 1", "Level 2"],
        )


def _numeric_weight(values: pd.Series, name: str, kind: str) -> np.ndarray:
    """The weight column as floats, or a DataError naming it (text, dates, booleans)."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise DataError(
            f"The {kind} weight column '{name}' is not numeric (dtype {values.dtype}). Weights are positive "
            f"numbers: convert the column (e.g. pd.to_numeric(data['{name}'])) or name another one."
        )
    return values.to_numpy(dtype=float, na_value=np.nan)


def check_weight_column(values: pd.Series, name: str) -> None:
    """Sampling weights: numbers, none negative or infinite (0 drops a row: `design.build_design`).
    Rows are named by the input's index."""
    v = _numeric_weight(values, name, "sampling")
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(np.isinf(v) | (v < 0))  # missing weights are dropped listwise, not here
    if bad.size:
        raise DataError(
            f"The weight '{name}' has negative or infinite values (rows {preview(values.index[bad].tolist())}). "
            "Sampling weights are positive numbers: correct them."
        )


def check_precision_column(values: pd.Series, name: str) -> None:
    """Precision weights: numbers, each positive and finite (a missing weight drops its row
    listwise, as lme4's na.omit does). A zero is refused: lme4 accepts it but its criterion is then
    infinite (log 0 in sum log w_i; refs/hsb/precision_weights.json, "zero_weight"), and a row of
    weight 0 carries no information."""
    v = _numeric_weight(values, name, "precision")
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(np.isinf(v) | (v <= 0))
    if bad.size:
        rows = values.index[bad].tolist()
        zero = bool(np.all(v[bad] == 0))
        raise DataError(
            f"The precision weight '{name}' is {'0' if zero else 'zero, negative or infinite'} in {bad.size} row{'s' if bad.size != 1 else ''} "
            f"(row{'s' if bad.size != 1 else ''} {preview(rows)}). Precision weights (lme4's weights=: Var(e_i) = sigma2 / w_i) must be "
            "positive and finite. "
            + ("lme4 fits such rows without a word but its REML criterion/deviance is then infinite (log 0); "
               f"a row of weight 0 carries no information: drop those rows (data[data['{name}'] > 0])."
               if zero else "Correct them.")
        )


@dataclass(frozen=True, eq=False)
class PrecisionWeights:
    """lme4's prior weights (`lmer(weights=)`): Var(e_i) = sigma2 / w_i for the rows used.

    The likelihood is the unweighted one with the per-unit cross-products weighted,
    C_j = [Z X y]_j' diag(w) [Z X y]_j, N still the number of rows, and the deviance lowered by
    lme4's ldW = sum_i log w_i (`objective`): ML  log|L|^2 - ldW + N (1 + log(2 pi pwrss / N)),
    REML  log|L|^2 + log|R_X|^2 - ldW + (N-p)(1 + log(2 pi pwrss / (N-p))). sigma2 is the residual
    variance of a row of weight 1.
    """

    column: str
    values: np.ndarray  # (N,) the weights of the rows used, in the design's row order

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"weighting": [True], "name": [self.column], "scaling": ["raw"]}, index=["Precision"])


def describe(sampling: ScaledWeights | None, precision: PrecisionWeights | None) -> str:
    """One line for reports: which kind of weights, which columns ("" without weights)."""
    if precision is not None:
        return f"precision weights '{precision.column}' (lme4's weights=: Var(e_i) = sigma2 / w_i)"
    if sampling is not None:
        s = sampling.spec
        parts = [f"level 1 '{s.level1}' ({s.scaling1})" if s.level1 else "", f"level 2 '{s.level2}' ({s.level2_scaling})" if s.level2 else ""]
        return "sampling weights " + ", ".join(p for p in parts if p) + " (pseudo-maximum likelihood)"
    return ""


AMBIGUOUS = (
    "weights={given} is ambiguous: say which kind of weights '{name}' holds.\n"
    "  precision_weights={name!r}  lme4's lmer(weights=): Var(e_i) = sigma2 / w_i (frequency-like, known "
    "precisions or aggregated rows); REML or ML; the same numbers as lmer.\n"
    "  sampling_weights={name!r}   inverse selection probabilities (HLM's and Stata's pweights, WeMix): "
    "pseudo-maximum likelihood, method='ML', robust SEs; ml.SamplingWeights(level1=, level2=) for both levels.\n"
    "They give different variance components (sigma2 differs by about the mean weight), so the package "
    "does not guess."
)


def choose(weights, sampling_weights, precision_weights) -> tuple[SamplingWeights | None, str | None]:
    """(sampling, precision column) from the three arguments of `ml.fit`.

    `weights=` is accepted only as an `ml.SamplingWeights` object (unambiguous); a column name there
    is refused with both meanings spelled out (`AMBIGUOUS`). The two kinds cannot be combined."""
    if weights is not None:
        if isinstance(weights, SamplingWeights):
            if sampling_weights is not None:
                raise SpecificationError("Give the sampling weights once: sampling_weights= (weights= is its old name).")
            sampling_weights = weights
        else:
            name = weights if isinstance(weights, str) else "w"
            raise SpecificationError(AMBIGUOUS.format(given=repr(weights) if isinstance(weights, str) else "...", name=name))
    if precision_weights is not None and sampling_weights is not None:
        raise SpecificationError(
            "Give either sampling_weights= (pseudo-likelihood) or precision_weights= (lme4's weights=), not both: "
            "a model with both kinds is not implemented."
        )
    if precision_weights is not None and not isinstance(precision_weights, str):
        raise SpecificationError(
            "precision_weights must be the name of a column of the data (lme4's weights=), not a "
            f"{type(precision_weights).__name__}: add the weights to the data as a column."
        )
    return SamplingWeights.of(sampling_weights), precision_weights


Weights = SamplingWeights  # the older name, kept


def scale(spec: SamplingWeights, used: pd.DataFrame, codes: np.ndarray, n_groups: int, labels: tuple[str, ...]) -> ScaledWeights:
    """Scale the weights of the rows used (module doc). Their values were checked on the input rows
    (`check_weight_column`, called by the design); here: constancy within units and zero sums."""
    row = unit = None
    if spec.level2 is not None:
        w2 = used[spec.level2].to_numpy(dtype=float)
        lo = np.full(n_groups, np.inf)
        hi = np.full(n_groups, -np.inf)
        np.minimum.at(lo, codes, w2)
        np.maximum.at(hi, codes, w2)
        varying = np.flatnonzero(hi - lo > 1e-12 * np.maximum(np.abs(hi), 1.0))
        if varying.size:
            raise DataError(
                f"The level-2 weight '{spec.level2}' varies within {varying.size} units "
                f"({preview([labels[i] for i in varying])}); a unit's weight is one number per unit."
            )
        unit = lo.copy()
        if np.any(unit == 0):
            zero = [labels[i] for i in np.flatnonzero(unit == 0)]
            raise DataError(
                f"The level-2 weight '{spec.level2}' is 0 for {len(zero)} units ({preview(zero)}). Drop those units "
                "from the data instead (a unit with weight 0 carries no information)."
            )
        if spec.level2_scaling == "normalize":
            unit = unit * n_groups / unit.sum()
    if spec.level1 is not None:
        w1 = used[spec.level1].to_numpy(dtype=float)
        s1 = np.bincount(codes, weights=w1, minlength=n_groups)
        if np.any(s1 == 0):
            zero = [labels[i] for i in np.flatnonzero(s1 == 0)]
            raise DataError(
                f"The level-1 weights '{spec.level1}' are all 0 in {len(zero)} units ({preview(zero)}); drop those units."
            )
        kind = spec.scaling1
        if kind == "size":
            n = np.bincount(codes, minlength=n_groups)
            w1 = w1 * (n / s1)[codes]
        elif kind == "effective":
            s2 = np.bincount(codes, weights=w1**2, minlength=n_groups)
            w1 = w1 * (s1 / s2)[codes]
        elif kind == "global":
            w1 = w1 * len(w1) / w1.sum()
        row = w1
    return ScaledWeights(spec, row, unit)
