"""The statistics HLM prints that lme4 does not: approximate df, reliabilities, chi-square tests
of the variance components, and HLM's deviance convention (../docs: hlm-statistics.md sections 1,
2, 6). All from the per-group summaries.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from multilevel.design.builder import Coefficient
from multilevel.design.summaries import GroupSummaries
from multilevel.engine.objective import LOG_2PI


def hlm_fixed_df(coefficients: tuple[Coefficient, ...], n_obs: int, n_groups: int, p: int) -> np.ndarray:
    """HLM's "Approx. d.f." for each gamma (hlm-statistics.md section 2b).

    gamma_qs of a random level-1 coefficient B_q: J - S_q - 1, i.e. J minus the number of gammas in
    B_q's level-2 equation (J counts all units); of a non-random coefficient: N - F.
    """
    df = np.full(p, float(n_obs - p))
    for c in coefficients:
        if c.random:
            df[list(c.columns)] = n_groups - len(c.columns)
    return df


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


def hlm_deviance(deviance: float, reml: bool, p: int) -> float:
    """HLM's printed deviance (empirical, ../refs/README.md): lme4's REMLcrit - log(2 pi) under
    REML when p >= 2 (REMLcrit itself when p = 1); under ML, -2 logL - log(2 pi) (checked only for
    p = 1 in a published HLM output)."""
    if reml:
        return deviance - (LOG_2PI if p >= 2 else 0.0)
    return deviance - LOG_2PI
