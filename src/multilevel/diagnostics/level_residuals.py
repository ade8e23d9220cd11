"""Residual files of models with several grouping factors (HLM3 writes a level-2 and a level-3
file beside the level-1 one): one table per level.

    level 1     one row per row used (the input's own index): each factor's id, the outcome, the
                fitted values X beta and X beta + sum_f Z_f b_f, the two residuals, sigma, the
                predictors
    a factor    one row per level of the factor: its id, the ids of the factors it is nested in,
                the rows in it, and per random effect the conditional mode b (lme4's ranef, HLM's
                EB residual) and its conditional SD (lme4's condVar; HLM's posterior SD without
                gamma's uncertainty)

For nested factors, HLM's numbering: level 2 is the innermost factor, level 3 the next, ...
(`level_factor`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from multilevel.design.builder import INTERCEPT
from multilevel.errors import SpecificationError
from multilevel.results.multi import MultiEstimates


def level_factor(est: MultiEstimates, level: int | str) -> str | None:
    """The factor of a residual file: a factor's name, or HLM's level number (1: the rows; 2, 3,
    ...: the nested factors from the innermost out); None for level 1."""
    names = [f.name for f in est.factors]
    if isinstance(level, str):
        if level not in names:
            raise SpecificationError(f"'{level}' is not a grouping factor of this model ({', '.join(names)}).")
        return level
    if level == 1:
        return None
    nested = set(est.design.nested)
    chain = sorted(names, key=lambda n: sum((n, o) in nested for o in names), reverse=True)
    is_chain = all((chain[i], chain[j]) in nested for i in range(len(chain)) for j in range(i + 1, len(chain)))
    if not is_chain:
        raise SpecificationError(
            f"Levels are numbered for nested factors; these ({', '.join(names)}) are crossed: name the factor, "
            "e.g. fit.residuals('" + names[0] + "')."
        )
    if not 2 <= level <= len(chain) + 1:
        raise SpecificationError(f"level must be 1 to {len(chain) + 1} for this model, not {level}.")
    return chain[level - 2]


def level1_table(est: MultiEstimates, extra=()) -> pd.DataFrame:
    """The level-1 file (module doc)."""
    d = est.design
    d.require_rows("The level-1 residual file")
    y, X, Z, frame = d.y, d.X, d.Z, d.frame
    assert y is not None and X is not None and Z is not None and frame is not None
    off = 0.0 if d.offset is None else d.offset
    fixed = X @ est.beta.to_numpy() + off
    fitted = fixed.copy()
    ranef = est.ranef()
    ids = {}
    for f in est.factors:
        g = d.groupings[f.grouping]
        b = ranef[f.name].to_numpy()
        fitted += np.einsum("ia,ia->i", Z[:, list(f.z_columns)], b[g.codes])
        ids[f.name] = np.asarray(g.labels)[g.codes]
    out = pd.DataFrame({**ids, d.spec.outcome: y + off, "fitted_fixed": fixed, "fitted": fitted,
                        "resid_fixed": y + off - fixed, "resid": y + off - fitted, "sigma": np.sqrt(est.sigma2)})
    predictors = pd.DataFrame(X, columns=list(d.x_names)).drop(columns=[INTERCEPT], errors="ignore")
    out = pd.concat([out, predictors], axis=1)
    if extra:
        missing = [c for c in extra if c not in frame.columns]
        if missing:
            raise SpecificationError(f"extra= names columns that are not in the data: {', '.join(missing)}.")
        out = pd.concat([out, frame[list(extra)].reset_index(drop=True)], axis=1)
    if d.row_index is not None:
        out.index = d.row_index
    return out


def factor_table(est: MultiEstimates, name: str) -> pd.DataFrame:
    """The file of one factor's levels (module doc)."""
    d = est.design
    (f,) = [f for f in est.factors if f.name == name]
    g = d.groupings[f.grouping]
    b = est.ranef()[name]
    sd = np.sqrt(np.maximum(np.diagonal(est.condvar()[name], axis1=1, axis2=2), 0.0))
    out = pd.DataFrame({name: list(g.labels), "n": np.bincount(g.codes, minlength=len(g.units)) if g.codes.size else np.nan})
    for outer_name, in [(o,) for (i, o) in d.nested if i == name]:
        (o,) = [h for h in d.groupings if h.name == outer_name]
        first = np.full(len(g.units), -1, dtype=np.intp)
        first[g.codes[::-1]] = np.arange(g.codes.size)[::-1]  # each level's first row
        out[outer_name] = np.asarray(o.labels)[o.codes[first]]
    for a, col in enumerate(b.columns):
        out[f"eb_{col}"] = b[col].to_numpy()
        out[f"condsd_{col}"] = sd[:, a]
    return out
