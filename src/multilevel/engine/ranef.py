"""Empirical Bayes estimates of the random effects (lme4's conditional modes, HLM's EB residuals).

    u*_j = T Z_j' V_j^-1 (y_j - X_j gamma) = Lambda M_j^-1 Lambda' Z_j'(y_j - X_j gamma)
    Var(u_j | y, gamma) = sigma2 Lambda M_j^-1 Lambda'       (lme4's condVar; HLM's D_j)

with M_j = L_j L_j' from the objective; nothing beyond the summaries is needed.
"""
from __future__ import annotations

import numpy as np

from multilevel.design.summaries import GroupSummaries
from multilevel.engine.objective import Solution


def conditional_modes(s: GroupSummaries, sol: Solution) -> np.ndarray:
    """u*_j for every group (J, q)."""
    Zte = s.Zty - s.ZtX @ sol.beta
    w = np.einsum("jab,jb->ja", sol.LtLam, Zte)  # L^-1 Lambda' Z'e
    return np.einsum("jba,jb->ja", sol.LtLam, w)  # Lambda L^-T (.)


def conditional_variances(sol: Solution, sigma2: float) -> np.ndarray:
    """sigma2 Lambda M_j^-1 Lambda' for every group (J, q, q)."""
    return sigma2 * sol.relative_condvar
