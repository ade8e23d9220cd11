"""Cluster-robust (sandwich) covariance of the fixed effects, from the summaries.

HLM's "robust standard errors" (R&B 2002 ch. 9; Liang & Zeger 1986) are CR0:

    V_R = M^-1 [ sum_j X_j'V_j^-1 e_j e_j'V_j^-1 X_j ] M^-1,   M = sum_j X_j'V_j^-1 X_j,  e_j = y_j - X_j gamma

(clubSandwich::vcovCR(type = "CR0")). With V_j = sigma2 W_j^-1, sigma2 cancels:
V_R = A^-1 [sum_j t_j t_j'] A^-1 with t_j = X_j'W_j e_j, and by Woodbury
t_j = X_j'e_j - R_ZX_j' L_j^-1 Lambda' Z_j'e_j, all from per-group cross-products.
"""
from __future__ import annotations

import numpy as np

from .objective import Solution
from .summaries import GroupSummaries


def cluster_scores(s: GroupSummaries, sol: Solution) -> np.ndarray:
    """t_j = X_j' W_j e_j for every group (J, p): the unit's contribution to the GLS score."""
    Xte = s.Xty_j - s.XtX_j @ sol.beta
    Zte = s.Zty - s.ZtX @ sol.beta
    u = np.einsum("jab,jb->ja", sol.LtLam, Zte)
    return Xte - np.einsum("jqp,jq->jp", sol.RZX, u)


def cr0_vcov(s: GroupSummaries, sol: Solution) -> np.ndarray:
    """HLM's robust covariance of gamma-hat (CR0, no small-sample factor)."""
    t = cluster_scores(s, sol)
    meat = t.T @ t
    return sol.A_inv @ meat @ sol.A_inv
