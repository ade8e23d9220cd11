"""The statistics HCM2 prints for a cross-classified model (docs/hlm-statistics.md section 15): the
model's HCM2 structure read from the data (`CrossedStructure`: which predictor is a row predictor,
which a column predictor, and HCM2's name of each fixed and random effect), the numbers of rows,
columns and non-empty cells, the fixed effects with model-based SEs and approximate df, the
row-level and column-level variance components (tau_b, tau_c) with their correlations, sigma2,
and the deviance and parameter count.

Notation (R&B 2002 ch. 12): level-1 units i in the cell of row j and column k;
    level 1   y_ijk = sum_p pi_pjk a_pijk + e_ijk,                                  Var(e) = sigma2
    level 2   pi_pjk = theta_p + sum_q (gamma_pq + c_pqk) X_qj + sum_h (beta_ph + b_phj) W_hk + b_p0j + c_p0k,
              Var(b_j) = tau_b (b_p0j and b_phj), Var(c_k) = tau_c (c_p0k and c_pqk)
In mixed form y = X g + Z_b b + Z_c c + e, V = sigma2 I + Z_b (I_J x tau_b) Z_b' + Z_c (I_K x tau_c) Z_c'.
The estimates, their covariance (X'V^-1X)^-1 and the deviance are the fit's (`engine.blocked`);
this module names and counts them, and gives the df and p-values.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from multilevel.diagnostics.multi_statistics import VariableLevels, fixed_effects_table, hlm_n_params
from multilevel.engine.covariance import correlations
from multilevel.errors import SpecificationError
from multilevel.results.multi import MultiEstimates

INTERCEPT = "Intercept"
ROW, COLUMN, LEVEL1 = "row", "column", "level-1"


@dataclass(frozen=True)
class CrossedEffect:
    """One fixed effect as HCM2 names it: theta_p (the intercept of pi_p's equation), gamma_pq (row
    predictor X_q) or beta_ph (column predictor W_h), in the equation of pi_p, the coefficient of a_p."""

    column: int  # in X
    p: int
    kind: str  # "theta", "gamma" or "beta"
    index: int  # q for gamma, h for beta (from 1); 0 for theta
    coefficient: str  # a_p ("Intercept": pi_0)
    predictor: str  # X_q or W_h ("Intercept" for theta_p)

    @property
    def label(self) -> str:
        return f"theta{self.p}" if self.kind == "theta" else f"{self.kind}{self.p}{self.index}"


@dataclass(frozen=True)
class CrossedStructure:
    """Which factor is the rows and which the columns, and what each model part is, read from the
    fit and the data. The rows are the factor of the first random term as written (`fit_levels`'
    row=, or the first `( | )` of an lme4 formula), the columns the other factor. A variable
    constant within every row is a row predictor X, else one constant within every column is a
    column predictor W, else level-1 (a); each fixed-effect column is a_p, X_q*a_p or W_h*a_p."""

    row: str
    column: str
    f_row: int  # index in MultiEstimates.factors
    f_col: int
    coefficients: tuple[str, ...]  # a_p, pi_p in order (the intercept first)
    row_predictors: tuple[tuple[str, ...], ...]  # per p, its X_q, q = 1..Q_p
    column_predictors: tuple[tuple[str, ...], ...]  # per p, its W_h, h = 1..H_p
    effects: tuple[CrossedEffect, ...]  # in (p, theta, gammas, betas) order
    random_row: tuple[tuple[int, int], ...]  # per random row effect (Z_b column), its (p, h): b_phj (h = 0: b_p0j)
    random_col: tuple[tuple[int, int], ...]  # per random column effect (Z_c column), its (p, q): c_pqk
    level_of: dict[str, str]

    @classmethod
    def of(cls, est: MultiEstimates, frame: pd.DataFrame | None = None) -> CrossedStructure:
        design = est.design
        factors = est.factors
        names = [f.name for f in factors]
        if len(factors) != 2 or design.nested:
            raise SpecificationError(
                f"HCM2's report is of two crossed grouping factors (rows and columns); this model has {len(factors)} "
                f"factor(s) ({', '.join(names)}){', nested' if len(factors) == 2 else ''}. lme4's summary: fit.summary()."
            )
        groups = list(dict.fromkeys(t.group for t in design.spec.random))
        row, column = groups[0], next(g for g in groups if g != groups[0])
        f_row, f_col = names.index(row), names.index(column)
        g_row, g_col = design.groupings[factors[f_row].grouping], design.groupings[factors[f_col].grouping]
        frame = design.centred_frame() if frame is None else frame
        levels = VariableLevels(frame, ((ROW, g_row), (COLUMN, g_col)), LEVEL1)

        def split(name: str) -> tuple[str, str, str]:
            """(a part, X part, W part), each 'Intercept' when absent."""
            return levels.split(name, (LEVEL1, ROW, COLUMN))  # type: ignore[return-value]

        parts = [split(n) for n in design.x_names]
        for name, (_a, x, w) in zip(design.x_names, parts):
            if x != INTERCEPT and w != INTERCEPT:
                raise SpecificationError(
                    f"The fixed effect '{name}' is a product of a row predictor ({x}) and a column predictor ({w}): HCM2 has "
                    "no predictors of the cells. Make the product a column of its own (it is then a level-1 variable)."
                )
        zr = [split(n) for n in factors[f_row].z_names]
        zc = [split(n) for n in factors[f_col].z_names]
        # over the rows: a_p (b_p0j) or a column predictor's W_h a_p (b_phj); over the columns likewise. A row
        # predictor over the rows is refused by the builder first (not identified); this holds for any design.
        for fname, zs, znames, own in ((row, zr, factors[f_row].z_names, 1), (column, zc, factors[f_col].z_names, 2)):
            for name, z in zip(znames, zs):
                if z[own] != INTERCEPT:
                    raise SpecificationError(
                        f"The random effect of '{name}' over '{fname}' is of a variable constant within every unit of "
                        f"'{fname}' ({z[own]}): HCM2 has random effects over the rows of level-1 coefficients and of "
                        "column predictors (b_p0j, b_phj), and over the columns of level-1 coefficients and of row "
                        "predictors (c_p0k, c_pqk). lme4's summary: fit.summary()."
                    )
        coefs = list(dict.fromkeys([INTERCEPT] * any(a == INTERCEPT for a, _, _ in parts + zr + zc)
                                   + [a for a, _, _ in parts + zr + zc]))
        xs: dict[str, list[str]] = {c: [] for c in coefs}
        ws: dict[str, list[str]] = {c: [] for c in coefs}
        for a, x, w in parts + zr + zc:
            if x != INTERCEPT and x not in xs[a]:
                xs[a].append(x)
            if w != INTERCEPT and w not in ws[a]:
                ws[a].append(w)
        effects = []
        for col, (a, x, w) in enumerate(parts):
            p = coefs.index(a)
            if x != INTERCEPT:
                effects.append(CrossedEffect(col, p, "gamma", xs[a].index(x) + 1, a, x))
            elif w != INTERCEPT:
                effects.append(CrossedEffect(col, p, "beta", ws[a].index(w) + 1, a, w))
            else:
                effects.append(CrossedEffect(col, p, "theta", 0, a, INTERCEPT))
        order = {"theta": 0, "gamma": 1, "beta": 2}
        effects.sort(key=lambda e: (e.p, order[e.kind], e.index))
        return cls(
            row, column, f_row, f_col, tuple(coefs), tuple(tuple(xs[c]) for c in coefs), tuple(tuple(ws[c]) for c in coefs),
            tuple(effects),
            tuple((coefs.index(a), 0 if w == INTERCEPT else ws[a].index(w) + 1) for a, _, w in zr),
            tuple((coefs.index(a), 0 if x == INTERCEPT else xs[a].index(x) + 1) for a, x, _ in zc),
            levels.level_of,
        )

    def effects_of(self, p: int) -> tuple[CrossedEffect, ...]:
        return tuple(e for e in self.effects if e.p == p)

    def random_over_rows(self, p: int, h: int = 0) -> bool:
        """b_phj is in the model (h = 0: pi_p's random row effect b_p0j)."""
        return (p, h) in self.random_row

    def random_over_columns(self, p: int, q: int = 0) -> bool:
        return (p, q) in self.random_col

    @staticmethod
    def b_label(p: int, h: int = 0) -> str:
        """HCM2's name of a random row effect: b_phj ('b00j', 'b10j', 'b01j' of W_1 in pi_0)."""
        return f"b{p}{h}j"

    @staticmethod
    def c_label(p: int, q: int = 0) -> str:
        return f"c{p}{q}k"


@dataclass(frozen=True, eq=False)
class HCM2Statistics:
    """HCM2's statistics of a fit with two crossed grouping factors (module doc), each computed once."""

    est: MultiEstimates

    @cached_property
    def frame(self) -> pd.DataFrame:
        return self.est.design.centred_frame()

    @cached_property
    def structure(self) -> CrossedStructure:
        return CrossedStructure.of(self.est, self.frame)

    def _codes(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.structure
        d = self.est.design
        f = self.est.factors
        return d.groupings[f[s.f_row].grouping].codes, d.groupings[f[s.f_col].grouping].codes

    # ----- the data ------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        """J, the row units with data."""
        s = self.structure
        return self.est.design.groupings[self.est.factors[s.f_row].grouping].n_levels

    @property
    def n_columns(self) -> int:
        s = self.structure
        return self.est.design.groupings[self.est.factors[s.f_col].grouping].n_levels

    @cached_property
    def n_cells(self) -> int:
        """The non-empty cells: distinct (row, column) pairs among the rows used."""
        r, c = self._codes()
        return int(np.unique(r.astype(np.int64) * self.n_columns + c).size)

    # ----- variance components ---------------------------------------------------------------------
    @property
    def tau_b(self) -> pd.DataFrame:
        """Var(b_j): the covariance of the random row effects."""
        return self.est.tau[self.structure.row]

    @property
    def tau_c(self) -> pd.DataFrame:
        return self.est.tau[self.structure.column]

    @cached_property
    def tau_b_correlations(self) -> pd.DataFrame:
        return correlations(self.tau_b)

    @cached_property
    def tau_c_correlations(self) -> pd.DataFrame:
        return correlations(self.tau_c)

    @property
    def sigma2(self) -> float:
        return self.est.sigma2

    # ----- fixed effects ---------------------------------------------------------------------------
    @cached_property
    def df(self) -> pd.Series:
        """The approximate df of each fixed effect (section 15; our rule, INFERRED: HLM2's J - S_q - 1
        applied on the side each effect varies over). With Q_p row and H_p column predictors of pi_p:
        gamma_pq: J - Q_p - 1 when pi_p is random over the rows (b_p0j), K - 1 when gamma_pq's own
        effect varies over the columns (c_pqk); beta_ph: K - H_p - 1 when pi_p is random over the
        columns (c_p0k), J - 1 when b_phj; theta_p: J - Q_p - 1 and K - H_p - 1 as they apply; the
        smallest of those that apply; otherwise N - F."""
        s = self.structure
        J, K = self.n_rows, self.n_columns
        N, F = self.est.n_obs, len(self.est.design.x_names)
        out = np.empty(F)
        for e in s.effects:
            on_rows = J - len(s.row_predictors[e.p]) - 1 if s.random_over_rows(e.p) else None
            on_cols = K - len(s.column_predictors[e.p]) - 1 if s.random_over_columns(e.p) else None
            pick = {
                "gamma": [on_rows, K - 1 if s.random_over_columns(e.p, e.index) else None],
                "beta": [on_cols, J - 1 if s.random_over_rows(e.p, e.index) else None],
                "theta": [on_rows, on_cols],
            }[e.kind]
            given = [v for v in pick if v is not None]
            out[e.column] = min(given) if given else N - F
        return pd.Series(out, index=list(self.est.design.x_names), name="df")

    @cached_property
    def fixed_table(self) -> pd.DataFrame:
        """estimate, se (model-based: sqrt diag (X'V^-1X)^-1), t, df, p (two-sided, Student t(df)), in X's order
        (`multi_statistics.fixed_effects_table`)."""
        return fixed_effects_table(self.est, self.est.vcov, self.df.to_numpy())

    # ----- the likelihood --------------------------------------------------------------------------
    @property
    def deviance(self) -> float:
        """-2 log L (ML) or the REML criterion (REML)."""
        return self.est.deviance

    @property
    def n_params(self) -> int:
        """HLM's count (section 6): the covariance parameters (tau_b, tau_c, sigma2), plus the fixed
        effects under ML."""
        return hlm_n_params(self.est)
