"""What the statistics of the reports of several grouping factors share: HLM3 and HLM4
(`hlm3_statistics`, `level_structure`) and HCM2 (`hcm2_statistics`).

- The level of a variable, read from the data (`VariableLevels`): a variable constant within every
  unit of a factor (`constant_within`) is a predictor of that factor's level; a fixed or random
  column of the model is split into its pieces by level (`VariableLevels.split`), HLM's
  W_s * X_q * a_p (HLM3) or X_q * a_p / W_h * a_p (HCM2).
- The fixed-effect table with given SEs and df (`fixed_effects_table`): t = b / se, p two-sided
  Student t(df).
- HLM's parameter count (`hlm_n_params`, docs/hlm-statistics.md section 6).
"""
from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import pandas as pd

from multilevel.design.builder import Grouping
from multilevel.inference import distributions as dist
from multilevel.model.spec import term_factors
from multilevel.results.multi import MultiEstimates

INTERCEPT = "Intercept"

K = TypeVar("K", bound=Hashable)


def constant_within(v: np.ndarray, codes: np.ndarray, n_units: int) -> bool:
    """Whether `v` is constant within every one of the `n_units` units (`codes`: each row's unit):
    max_u - min_u <= 1e-12 max|v| in every unit u (relative, so that a centred column's rounding
    does not make it vary)."""
    lo = np.full(n_units, np.inf)
    hi = np.full(n_units, -np.inf)
    np.minimum.at(lo, codes, v)
    np.maximum.at(hi, codes, v)
    scale = max(float(np.max(np.abs(v), initial=0.0)), 1e-300)
    return bool(np.all(hi - lo <= 1e-12 * scale))


@dataclass(frozen=True, eq=False)
class VariableLevels(Generic[K]):
    """The level of each variable of `frame` (the rows used, with the derived columns): the first
    of `levels` (a level and its factor's grouping, the level read first first) within every unit
    of which the variable is constant, else `default` (level 1). A name that is not a numeric
    column (a factor's dummy) is read as `default`: its level is not told here. Each variable is
    read once; `level_of` holds what was read."""

    frame: pd.DataFrame
    levels: tuple[tuple[K, Grouping], ...]
    default: K
    level_of: dict[str, K] = field(default_factory=dict)

    def __call__(self, piece: str) -> K:
        if piece not in self.level_of:
            frame = self.frame
            if piece not in frame.columns or not pd.api.types.is_numeric_dtype(frame[piece]):
                self.level_of[piece] = self.default
            else:
                v = frame[piece].to_numpy(dtype=float)
                self.level_of[piece] = next((k for k, g in self.levels if constant_within(v, g.codes, g.n_levels)),
                                            self.default)
        return self.level_of[piece]

    def split(self, name: str, order: tuple[K, ...]) -> tuple[str, ...]:
        """A model column's name ('w:x:a') split into its pieces by level: per level of `order`, the
        product of its pieces there ('x'), 'Intercept' where it has none."""
        by: dict[K, list[str]] = {k: [] for k in order}
        if name != INTERCEPT:
            for piece in term_factors(name):
                by[self(piece)].append(piece)
        return tuple(":".join(by[k]) or INTERCEPT for k in order)


def fixed_effects_table(est: MultiEstimates, vcov: pd.DataFrame, df: np.ndarray) -> pd.DataFrame:
    """estimate b, se = sqrt(diag vcov), t = b / se, df, p = 2 P(T_df > |t|) (two-sided), in X's order."""
    b = est.beta.to_numpy()
    se = np.sqrt(np.diag(vcov.to_numpy()))
    t = b / se
    return pd.DataFrame({"estimate": b, "se": se, "t": t, "df": df, "p": 2.0 * dist.t_sf(np.abs(t), df)},
                        index=list(est.design.x_names))


def hlm_n_params(est: MultiEstimates) -> int:
    """HLM's "Number of estimated parameters" (section 6): the covariance parameters (theta and
    sigma2), plus the fixed effects under ML (a REML fit counts the covariance parameters only)."""
    n_cov = len(est.theta) + 1
    return n_cov + (0 if est.reml else len(est.design.x_names))
