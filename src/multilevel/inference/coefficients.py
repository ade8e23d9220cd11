"""Tests and intervals for the fixed effects: one table for every df and SE method.

SE methods (`se=`):
  "model"  Var(gamma) = (sum_j X_j'V_j^-1 X_j)^-1 (HLM's first table; lme4 `vcov`)
  "CR0"    the sandwich without correction (HLM's "robust standard errors")
  "CR1"    CR0 * J/(J-1)
  "CR2"    Bell-McCaffrey bias-reduced sandwich (clubSandwich "CR2")
df methods (`df=`):
  "hlm"             HLM's Approx. d.f. (J - S_q - 1 for gammas of random coefficients, else N - F)
  "residual"        N - p
  "between-within"  SAS DDFM=BW: J - (number of between columns) for the columns of the intercept's
                    level-2 equation, N - J - (number of within columns) for the rest
  "satterthwaite"   lmerTest (model SEs only)
  "kenward-roger"   pbkrtest/lmerTest, with the KR-adjusted SEs (REML fits, model SEs only)
  "bell-mccaffrey"  Satterthwaite df of the sandwich (clubSandwich `test = "Satterthwaite"`;
                    robust SEs only; the default for CR2)
  "infinite"        z tests
For a combination of several coefficients the per-coefficient methods ("hlm", "between-within")
use the smallest df of the coefficients it involves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from multilevel.design.builder import INTERCEPT, Coefficient
from multilevel.display import ShownAsTables
from multilevel.errors import SpecificationError
from multilevel.inference import distributions as dist

SE_METHODS = ("model", "CR0", "CR1", "CR2")
DF_METHODS = ("hlm", "residual", "between-within", "satterthwaite", "kenward-roger", "bell-mccaffrey", "infinite")
_MODEL_ONLY = ("satterthwaite", "kenward-roger")


def check_level(level: float) -> None:
    if not 0 < level < 1:
        raise SpecificationError(f"level is a coverage probability between 0 and 1 (e.g. 0.95), not {level}.")


def hlm_fixed_df(coefficients: tuple[Coefficient, ...], n_obs: int, n_groups: int, p: int) -> np.ndarray:
    """HLM's "Approx. d.f." for each gamma (docs/hlm-statistics.md section 2b).

    gamma_qs of a random level-1 coefficient B_q: J - S_q - 1, i.e. J minus the number of gammas in
    B_q's level-2 equation (J counts all units); of a non-random coefficient: N - F.
    """
    df = np.full(p, float(n_obs - p))
    for c in coefficients:
        if c.random:
            df[list(c.columns)] = n_groups - len(c.columns)
    return df


# The functions below take the fit's `inference.view.Inference` (`inf`: its record is `inf.est`),
# which holds the pieces shared by the df and SE methods, each computed once.
def resolve(inf, df: str | None, se: str | None) -> tuple[str, str]:
    """(df, se) checked against each other and against the fit (its weights and method), the
    defaults filled in: se "model" ("CR0" under sampling weights), df "hlm" ("bell-mccaffrey" for CR2)."""
    fit = inf.est
    weighted = fit.weighted
    se = ("CR0" if weighted else "model") if se is None else {m.lower(): m for m in SE_METHODS}.get(str(se).lower(), se)
    if weighted and (se == "CR2" or (df is not None and df.lower() in (*_MODEL_ONLY, "bell-mccaffrey"))):
        raise SpecificationError(
            "Satterthwaite, Kenward-Roger, CR2 and Bell-McCaffrey are derived for the unweighted likelihood; "
            "with sampling weights use the sandwich (se='CR0' or 'CR1') with df='hlm', 'between-within', "
            "'residual' or 'infinite'."
        )
    if fit.design.precision_weights is not None and (se == "CR2" or (df is not None and df.lower() in ("kenward-roger", "bell-mccaffrey"))):
        # Satterthwaite, CR0 and CR1 follow from the weighted summaries and agree with lmerTest /
        # the dense sandwich (tests/test_precision_weights.py); KR and CR2 were not checked.
        raise SpecificationError(
            "Kenward-Roger, CR2 and Bell-McCaffrey are not verified for precision weights (lme4's weights=) in this "
            "package; use df='satterthwaite' (checked against lmerTest's weighted lmer) with the model-based SEs, or "
            "se='CR0'/'CR1' with df='hlm', 'between-within', 'residual' or 'infinite'."
        )
    if se not in SE_METHODS:
        raise SpecificationError(f"se={se!r} is not known; use one of {', '.join(SE_METHODS)}.")
    if df is None:
        df = "bell-mccaffrey" if se == "CR2" else "hlm"
    df = df.lower()
    if df not in DF_METHODS:
        raise SpecificationError(f"df={df!r} is not known; use one of {', '.join(DF_METHODS)}.")
    if df in _MODEL_ONLY and se != "model":
        # the advice lists only the df valid for this fit: Bell-McCaffrey is refused above for
        # precision weights (and for sampling weights, which never reach here with a model-only df)
        valid = "df='hlm', 'residual', 'between-within' or 'infinite'"
        if fit.design.precision_weights is None:
            valid = "df='bell-mccaffrey' (or 'hlm', 'residual', 'between-within', 'infinite')"
        raise SpecificationError(
            f"df={df!r} is derived for the model-based covariance; with se={se!r} use {valid}."
        )
    if df == "bell-mccaffrey" and se == "model":
        raise SpecificationError("df='bell-mccaffrey' belongs to the cluster-robust SEs: use se='CR2' (or 'CR0', 'CR1').")
    if df == "kenward-roger" and not fit.reml:
        raise SpecificationError(
            "Kenward-Roger df are defined for REML fits (as in pbkrtest and lmerTest); refit with "
            "method='REML' or use df='satterthwaite'."
        )
    return df, se


def vcov(inf, df: str, se: str) -> np.ndarray:
    """Var(gamma-hat) in the summaries' internal coordinates (`coordinates`): contrasts are mapped
    to them (`internal_contrast`) before they meet it."""
    if se == "model":
        return inf.kenward_roger.vcov_adjusted if df == "kenward-roger" else inf.est.vcov_internal
    if se == "CR0":
        return inf.vcov_robust_internal
    if se == "CR1":
        J = inf.est.n_groups
        return inf.vcov_robust_internal * J / (J - 1)
    return inf.cr2.vcov


def internal_contrast(inf, L: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """L gamma = rhs written in the summaries' coordinates: (L S) gamma' = rhs - m_y L e_i0
    (`coordinates.Coordinates.contrast`); df, SEs and tests are the same in both."""
    return inf.est.coordinates.contrast(L, rhs)


def per_column_df(inf, df: str) -> np.ndarray:
    if df == "hlm":
        return inf.hlm_df.to_numpy()
    fit = inf.est
    if df == "residual":
        return np.full(len(fit.beta), float(fit.n_obs - len(fit.beta)))
    if df == "between-within":
        p, J, N = len(fit.beta), fit.n_groups, fit.n_obs
        between = np.zeros(p, dtype=bool)
        for c in fit.design.coefficients:
            if c.name == INTERCEPT:
                between[list(c.columns)] = True
        return np.where(between, J - between.sum(), N - J - (~between).sum()).astype(float)
    raise AssertionError(df)


def combination_df(inf, l: np.ndarray, df: str, se: str) -> float:
    """Denominator df of the single contrast l'gamma (l in the data's coordinates: the per-column
    methods take the columns it involves; the derived ones work in the summaries' coordinates)."""
    if df == "infinite":
        return np.inf
    if df in ("satterthwaite", "kenward-roger", "bell-mccaffrey"):
        l = internal_contrast(inf, l[None, :], np.zeros(1))[0][0]
    if df == "satterthwaite":
        from multilevel.inference.satterthwaite import df_1d

        return df_1d(inf.variance_derivatives, l)
    if df == "kenward-roger":
        return inf.kenward_roger.ddf(l[None, :])
    if df == "bell-mccaffrey":
        return (inf.cr2 if se == "CR2" else inf.cr0_pieces).df(l)
    d = per_column_df(inf, df)
    return float(d[np.abs(l) > 0].min())


def t_table(inf, L: np.ndarray, rhs: np.ndarray, labels, df: str, se: str, level: float, show_rhs: bool | None = None) -> pd.DataFrame:
    """estimate (L gamma), rhs (the hypothesised value, shown when `show_rhs` or, by default, when
    one is not 0), se, df, t = (L gamma - rhs)/se, its p, and the confidence interval of L gamma,
    one row per row of L. (The estimate is never L gamma - rhs: "sector = 1" estimates sector.)"""
    check_level(level)
    V = vcov(inf, df, se)
    d = np.array([combination_df(inf, row, df, se) for row in L])
    rhs = np.broadcast_to(np.asarray(rhs, dtype=float), (L.shape[0],))
    Li, rhs_i = internal_contrast(inf, L, rhs)
    diff = Li @ inf.est.solution.beta - rhs_i
    est = diff + rhs  # L gamma in the data's coordinates (internal_contrast moves the shift into rhs_i)
    s = np.sqrt(np.einsum("ka,ab,kb->k", Li, V, Li))
    t = diff / s
    p = 2 * dist.t_sf(np.abs(t), d)
    crit = dist.t_ppf(0.5 + level / 2, d)
    cols = {"estimate": est}
    if show_rhs or (show_rhs is None and np.any(rhs != 0)):
        cols["rhs"] = rhs.copy()
    cols.update({"se": s, "df": d, "t": t, "p": p, "ci_low": est - crit * s, "ci_high": est + crit * s})
    return pd.DataFrame(cols, index=pd.Index(labels, name="contrast"))


def _f_sf(F: float, q: int, den: float) -> float:
    # F(q, inf) is chi-square(q)/q; scipy's F distribution gives nan there.
    return float(dist.chi2_sf(F * q, q) if np.isinf(den) else dist.f_sf(F, q, den))


class OneRowTable:
    """Results whose `table` has one row: the columns named in `_scalars` read as attributes
    (t.F, t.den_df)."""

    _scalars: ClassVar[tuple[str, ...]] = ()

    def __getattr__(self, name):
        if name in type(self)._scalars:
            return float(self.__dict__["table"][name].iloc[0])
        raise AttributeError(name)


@dataclass(frozen=True, eq=False, repr=False)
class HypothesisTest(OneRowTable, ShownAsTables):
    """H0: L gamma = rhs. `table` has the Wald chi-square (HLM's "General Linear Hypothesis
    Testing") and the F test with the chosen df; `estimates` each row of L gamma (its estimate),
    the hypothesised value (rhs), se, df, t = (estimate - rhs)/se, p and the interval of L gamma."""

    _scalars: ClassVar[tuple[str, ...]] = ("chisq", "chisq_df", "chisq_p", "F", "num_df", "den_df", "F_p")
    L: np.ndarray
    rhs: np.ndarray
    estimates: pd.DataFrame
    table: pd.DataFrame
    df_method: str
    se_method: str

    def _parts(self) -> tuple[str, list[object]]:
        from multilevel.display import p_text

        k = len(self.estimates)
        title = (f"Wald test of H0: {', '.join(map(str, self.estimates.index))}  ({k} constraint{'s' * (k > 1)}; "
                 f"df: {self.df_method}, SE: {self.se_method})")
        lines = [
            self.estimates,
            f"chi-square = {self.chisq:.4f} on {self.chisq_df:g} df, p = {p_text(self.chisq_p)}   (HLM's GLH test)",
            f"F = {self.F:.4f} on {self.num_df:g} and {self.den_df:.4g} df, p = {p_text(self.F_p)}",
        ]
        return title, lines



def hypothesis_test(inf, L: np.ndarray, rhs: np.ndarray, labels, df: str, se: str, level: float) -> HypothesisTest:
    """The test of `HypothesisTest`; L and rhs as `Inference.contrast` makes them (checked there)."""
    if np.linalg.matrix_rank(L) < L.shape[0]:
        raise SpecificationError("The rows of the contrast are linearly dependent; drop the redundant ones.")
    V = vcov(inf, df, se)
    given = (L, rhs)
    L, rhs = internal_contrast(inf, L, rhs)
    beta = inf.est.solution.beta
    diff = L @ beta - rhs
    q = L.shape[0]
    chisq = float(diff @ np.linalg.solve(L @ V @ L.T, diff))
    if df == "satterthwaite":
        from multilevel.inference.satterthwaite import f_test

        F, _, den = f_test(inf.variance_derivatives, L, beta, rhs)
    elif df == "kenward-roger":
        F, _, den, _ = inf.kenward_roger.f_test(L, beta, rhs)
    elif df == "bell-mccaffrey":
        # CR1 shares CR0's df (the df is scale free); the statistic uses the chosen covariance.
        pieces = inf.cr2 if se == "CR2" else inf.cr0_pieces
        if q == 1:
            F, den = chisq, pieces.df(L[0])
        else:  # Pustejovsky-Tipton HTZ (clubSandwich's default joint test)
            F, den, _ = pieces.htz(L, chisq)
    else:
        F = chisq / q
        den = np.inf if df == "infinite" else min(combination_df(inf, row, df, se) for row in given[0])
    table = pd.DataFrame(
        {
            "chisq": [chisq], "chisq_df": [float(q)], "chisq_p": [float(dist.chi2_sf(chisq, q))],
            "F": [F], "num_df": [float(q)], "den_df": [float(den)], "F_p": [_f_sf(F, q, den)],
        }
    )
    return HypothesisTest(given[0], given[1], t_table(inf, given[0], given[1], labels, df, se, level, show_rhs=True), table, df, se)
