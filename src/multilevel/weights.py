"""Sampling weights at level 1 and level 2: pseudo-maximum likelihood (hlm-statistics.md section 13).

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

from .errors import DataError, SpecificationError, preview

LEVEL1_SCALINGS = ("size", "effective", "global", "raw")
LEVEL2_SCALINGS = ("normalize", "raw")


@dataclass(frozen=True)
class Weights:
    """Which columns hold the sampling weights, and how they are scaled (module doc)."""

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
    def of(cls, weights) -> Weights | None:
        if weights is None or isinstance(weights, Weights):
            return weights
        if isinstance(weights, str):
            return cls(level1=weights)
        if isinstance(weights, dict):
            return cls(**weights)
        raise SpecificationError("weights must be a column name (level-1 weights), a dict or ml.Weights(level1=..., level2=...).")

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

    spec: Weights
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


def check_weight_column(values: pd.Series, name: str) -> None:
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        shown = ", ".join(repr(x) for x in pd.unique(values.dropna())[:3])
        raise DataError(
            f"The weight '{name}' is not a column of numbers (dtype {values.dtype}; values like {shown}). Sampling "
            f"weights are positive numbers: convert the column, e.g. df['{name}'] = pd.to_numeric(df['{name}'])."
        )
    v = values.to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(np.isinf(v) | (v < 0))  # missing weights are dropped listwise, not here
    if bad.size:
        raise DataError(
            f"The weight '{name}' has negative or infinite values (rows {preview(bad.tolist())}). Sampling weights "
            "are positive numbers: correct them."
        )


def scale(spec: Weights, used: pd.DataFrame, codes: np.ndarray, n_groups: int, labels: tuple[str, ...]) -> ScaledWeights:
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
