"""HLM's names of the fixed effects: G_qs of level-1 coefficient B_q and level-2 predictor W_s.

Read from the design's classification of columns (`design.builder.Coefficient`); used to parse
contrasts written with them (`inference.contrasts`) and to print the model (`reports.equations`).
"""
from __future__ import annotations

from dataclasses import dataclass

from multilevel.design.builder import INTERCEPT, Coefficient


@dataclass(frozen=True)
class GammaLabel:
    """HLM's name of a fixed effect: G_qs of level-1 coefficient B_q and level-2 predictor W_s."""

    column: int
    label: str  # "G01"
    coefficient: str  # "Intercept" / "ses"
    predictor: str  # "Intercept" / "sector"
    b_label: str  # "B0"


def gamma_labels(coefficients: tuple[Coefficient, ...]) -> list[GammaLabel]:
    """One label per fixed-effect column, in column order; G_q0 is the level-2 intercept (without
    one, numbering starts at 1)."""
    out = []
    for qi, c in enumerate(coefficients):
        offset = 0 if INTERCEPT in c.predictors else 1
        for si, (col, w) in enumerate(zip(c.columns, c.predictors)):
            s = si + offset
            out.append(GammaLabel(col, f"G{qi}{s}", c.name, w, f"B{qi}"))
    return sorted(out, key=lambda g: g.column)
