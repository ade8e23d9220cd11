"""The statistics HLM prints that lme4 does not: reliabilities and chi-square tests of the variance
components from the units' own OLS (docs/hlm-statistics.md sections 1 and 6), and their view of
a fit (`HLMStatistics`). All from the per-group summaries. (HLM's approximate df of the fixed
effects are a df method, `inference.coefficients.hlm_fixed_df`; HLM's deviance convention is the
record's, `results.estimates.Estimates.hlm_deviance`.)
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from multilevel.design.builder import Coefficient
from multilevel.design.summaries import GroupSummaries
from multilevel.inference import distributions as dist
from multilevel.results.estimates import Estimates


@dataclass(frozen=True)
class UnitOLS:
    """Per-unit OLS of HLM's reliability and chi-square (R&B eq. 3.58 and 3.103).

    beta_hat_j = (Z_j'Z_j)^-1 Z_j'(y_j - A_j gamma_A),  v_j = sigma2 (Z_j'Z_j)^-1,
    over the units S whose Z_j has full column rank (A_j: the columns of non-random coefficients).
    """

    used: np.ndarray  # (J,) bool: units with sufficient data
    beta_hat: np.ndarray  # (J*, q)
    v_diag: np.ndarray  # (J*, q)
    fitted: np.ndarray  # (J*, q): W_j' gamma_q, the level-2 prediction of B_qj


def unit_ols(
    s: GroupSummaries, coefficients: tuple[Coefficient, ...], z_names: tuple[str, ...], beta: np.ndarray, sigma2: float,
    ZtX: np.ndarray | None = None, Zty: np.ndarray | None = None, ZtZ_data: np.ndarray | None = None,
    to_data=None,
) -> UnitOLS:
    """The UnitOLS of the class doc; `beta`, `ZtX`, `Zty` and `ZtZ_data` in the data's coordinates
    (the summaries' own blocks when not given), `to_data` maps an inverse of the summaries' Z'Z to
    the data's ((Z'Z)^-1 = S_z (Z'Z')^-1 S_z', `coordinates`): no ill-conditioned inverse is taken."""
    q = s.q
    ZtZ = s.ZtZ
    ZtX = s.ZtX if ZtX is None else ZtX
    Zty = s.Zty if Zty is None else Zty
    ZtZ_data = ZtZ if ZtZ_data is None else ZtZ_data
    rank = np.linalg.matrix_rank(ZtZ, hermitian=True)
    used = rank == q
    fixed_cols = [i for c in coefficients if not c.random for i in c.columns]
    Zty = Zty - (ZtX[:, :, fixed_cols] @ beta[fixed_cols] if fixed_cols else 0.0)
    S = ZtZ_data[used]
    S_inv = np.linalg.inv(ZtZ[used])
    if to_data is not None:
        S_inv = to_data(S_inv)
    beta_hat = np.einsum("jab,jb->ja", S_inv, Zty[used])
    v_diag = sigma2 * np.diagonal(S_inv, axis1=1, axis2=2)
    # W_cj for a column c = z_q * W_c of coefficient q: (Z'X)_j[q, c] / (Z'Z)_j[q, q] (exact, since
    # W_c is constant within the unit).
    fitted = np.zeros_like(beta_hat)
    for c in coefficients:
        if c.random and c.columns:
            k = z_names.index(c.name)
            W = ZtX[used][:, k, list(c.columns)] / S[:, k, k][:, None]
            fitted[:, k] = W @ beta[list(c.columns)]
    return UnitOLS(used, beta_hat, v_diag, fitted)


def reliability(ols: UnitOLS, tau_diag: np.ndarray) -> np.ndarray:
    """Reliability of each random coefficient: mean over S of tau_qq / (tau_qq + v_qqj)."""
    return (tau_diag / (tau_diag + ols.v_diag)).mean(axis=0)


def chi_square(ols: UnitOLS, coefficients: tuple[Coefficient, ...], z_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """chi2_q = sum_S (beta_hat_qj - W_j'gamma_q)^2 / v_qqj with df J* - S_q - 1 (J* minus the
    number of gammas in B_q's equation)."""
    chi = ((ols.beta_hat - ols.fitted) ** 2 / ols.v_diag).sum(axis=0)
    n_used = int(ols.used.sum())
    df = np.array([n_used - len(next(c for c in coefficients if c.name == z).columns) for z in z_names], dtype=float)
    return chi, df


@dataclass(frozen=True, eq=False)
class HLMStatistics:
    """HLM's statistics of a fit (its core record `est`): the units' OLS, reliabilities and the
    chi-square tests of the variance components, each computed once, on first use."""

    est: Estimates

    @cached_property
    def unit_ols(self) -> UnitOLS:
        """The per-unit OLS of `UnitOLS` at the record's gamma and sigma2."""
        e = self.est
        d = e.design
        return unit_ols(e.summaries, d.coefficients, d.z_names, e.beta.to_numpy(), e.sigma2, e.ZtX, e.Zty, e.ZtZ,
                        e.coordinates.ZtZ_inv)

    @property
    def n_units_sufficient(self) -> int:
        """J*: units whose random-coefficient design has full rank (enter reliability and chi-square)."""
        return int(self.unit_ols.used.sum())

    @cached_property
    def reliability(self) -> pd.Series:
        """HLM's reliability of each random level-1 coefficient (R&B eq. 3.58)."""
        r = reliability(self.unit_ols, np.diag(self.est.tau.to_numpy()))
        return pd.Series(r, index=list(self.est.design.z_names), name="reliability")

    @cached_property
    def variance_components(self) -> pd.DataFrame:
        """HLM's "Final estimation of variance components": sd, variance, df, chi-square, p per
        random coefficient, and the level-1 residual (sd and variance only)."""
        d = self.est.design
        s2 = self.est.sigma2
        chi, df = chi_square(self.unit_ols, d.coefficients, d.z_names)
        var = np.diag(self.est.tau.to_numpy())
        tab = pd.DataFrame(
            {"sd": np.sqrt(var), "variance": var, "df": df, "chisq": chi, "p": dist.chi2_sf(chi, df)},
            index=list(d.z_names),
        )
        resid = pd.DataFrame({"sd": [np.sqrt(s2)], "variance": [s2], "df": [np.nan], "chisq": [np.nan], "p": [np.nan]}, index=["level-1"])
        return pd.concat([tab, resid])

    def unit_ols_table(self) -> pd.DataFrame:
        """HLM's "Level-1 OLS regressions": each unit's OLS estimates of the random coefficients
        (with the fixed level-1 coefficients' part removed), its n, and whether it has sufficient data
        (Z_j of full rank); units without are NaN. Indexed by the unit ids (as `ranef`)."""
        ols = self.unit_ols
        d = self.est.design
        z = list(d.z_names)
        est = np.full((d.n_groups, len(z)), np.nan)
        est[ols.used] = ols.beta_hat
        out = pd.DataFrame(est, index=pd.Index(np.asarray(d.units), name=d.group), columns=z)
        out.insert(0, "n", self.est.summaries.n.astype(int))
        out["sufficient"] = ols.used
        return out
