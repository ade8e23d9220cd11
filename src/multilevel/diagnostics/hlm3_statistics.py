"""The statistics HLM3 prints for a three-level model (docs/hlm-statistics.md sections 14a, 14b, 14c and 14d): the
model's HLM3 structure read from the data (`ThreeLevelStructure`), the reliabilities of the
random level-1 coefficients (level 2) and of the random level-2 coefficients (level 3), the
chi-square tests of the variance components at both levels, the fixed effects with model-based
and robust (CR0 at level 3) SEs and HLM3's approximate df, and the deviance and parameter count.

Notation (R&B 2002 ch. 8): level-1 rows i in level-2 units j in level-3 units k;
    level 1   y_ijk = sum_p pi_pjk a_pijk + e_ijk,              Var(e) = sigma2
    level 2   pi_pjk = sum_q beta_pqk X_qjk + r_pjk,            Var(r_jk) = T_pi
    level 3   beta_pqk = sum_s gamma_pqs W_sk + u_pqk,          Var(u_k) = T_beta
In mixed form y_k = X_k gamma + Z3_k u_k + sum_j Z2_jk r_jk + e_k with Z2 the columns a_p of the
coefficients random at level 2 and Z3 the columns X_q a_p of those random at level 3;
W_jk = sigma2 I + Z2_jk T_pi Z2_jk' (one level-2 unit), V_k = blockdiag_j(W_jk) + Z3_k T_beta Z3_k'.

Everything is computed from the per-level-2-unit cross-products of [Z2 Z3 X y] (no matrix of a
unit's rows is formed): a'W_jk^-1 b = (a'b - a'Z2 (sigma2 I + T_pi Z2'Z2)^-1 T_pi Z2'b) / sigma2
(Woodbury, valid for a singular T_pi) and the same step once more for V_k.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from multilevel.diagnostics.multi_statistics import VariableLevels, fixed_effects_table, hlm_n_params
from multilevel.engine.covariance import correlations
from multilevel.errors import SpecificationError
from multilevel.inference import distributions as dist
from multilevel.model.spec import term_factors
from multilevel.results.multi import MultiEstimates

INTERCEPT = "Intercept"


@dataclass(frozen=True)
class Gamma3:
    """One fixed effect as HLM3 names it: G_pqs, the coefficient of W_s (level 3) in the equation of
    B_pq, the coefficient of X_q (level 2) in the equation of P_p, the coefficient of a_p (level 1)."""

    column: int  # in X
    p: int
    q: int
    s: int
    coefficient: str  # a_p ("Intercept": P0)
    level2: str  # X_q ("Intercept": INTRCPT2)
    level3: str  # W_s ("Intercept": INTRCPT3)

    @property
    def label(self) -> str:
        return f"G{self.p}{self.q}{self.s}"


@dataclass(frozen=True)
class ThreeLevelStructure:
    """Which level each part of the model is at, read from the data: a variable constant within
    every level-3 unit is level-3, else one constant within every level-2 unit is level-2, else
    level-1; each fixed-effect column is a product W_s * X_q * a_p of one part at each level."""

    level2: str  # the level-2 grouping factor's name (lme4's: 'childid:schoolid')
    level3: str
    f2: int  # index in MultiEstimates.factors
    f3: int
    coefficients: tuple[str, ...]  # a_p, P_p in order (the intercept first)
    predictors: tuple[tuple[str, ...], ...]  # per p, its X_q (Intercept first when present)
    gammas: tuple[Gamma3, ...]  # in (p, q, s) order
    random2: tuple[int, ...]  # per Z2 column, its p
    random3: tuple[tuple[int, int], ...]  # per Z3 column, its (p, q)
    level_of: dict[str, int]

    @classmethod
    def of(cls, est: MultiEstimates, frame: pd.DataFrame | None = None) -> ThreeLevelStructure:
        design = est.design
        factors = est.factors
        nested = design.nested
        if len(factors) != 2 or not nested:
            names = ", ".join(f.name for f in factors)
            raise SpecificationError(
                f"HLM3's report is of two nested grouping factors (level-2 units within level-3 units); this model has "
                f"{len(factors)} factor(s) ({names}){'' if len(factors) != 2 else ', crossed'}. lme4's summary: fit.summary()."
            )
        inner, outer = nested[0]
        f2 = next(i for i, f in enumerate(factors) if f.name == inner)
        f3 = next(i for i, f in enumerate(factors) if f.name == outer)
        g2, g3 = design.groupings[factors[f2].grouping], design.groupings[factors[f3].grouping]
        frame = design.centred_frame() if frame is None else frame
        levels = VariableLevels(frame, ((3, g3), (2, g2)), 1)

        def split(name: str) -> tuple[str, str, str]:
            return levels.split(name, (1, 2, 3))  # type: ignore[return-value]

        parts = [split(n) for n in design.x_names]
        z2 = [split(n) for n in factors[f2].z_names]
        z3 = [split(n) for n in factors[f3].z_names]
        for name, (_a, x, w) in zip(factors[f2].z_names, z2):
            if x != INTERCEPT or w != INTERCEPT:
                raise SpecificationError(
                    f"The random effect of '{name}' over the level-2 units ({inner}) is of a variable constant within them: "
                    "HLM3 has level-2 random effects on level-1 coefficients only."
                )
        for name, (_a, _x, w) in zip(factors[f3].z_names, z3):
            if w != INTERCEPT:
                raise SpecificationError(
                    f"The random effect of '{name}' over the level-3 units ({outer}) is of a variable constant within them: "
                    "HLM3 has level-3 random effects on level-2 coefficients only."
                )
        coefs = list(dict.fromkeys([INTERCEPT] * any(a == INTERCEPT for a, _, _ in parts + z2 + z3)
                                   + [a for a, _, _ in parts + z2 + z3]))
        preds: dict[str, list[str]] = {c: [] for c in coefs}
        for a, x, _ in parts + z3:
            if x not in preds[a]:
                preds[a].append(x)
        for c in coefs:  # INTRCPT2 first, then the level-2 predictors as they come
            preds[c].sort(key=lambda x: x != INTERCEPT)
        lvl3: dict[tuple[str, str], list[str]] = {}
        for a, x, w in parts:
            lvl3.setdefault((a, x), [])
            if w not in lvl3[(a, x)]:
                lvl3[(a, x)].append(w)
        for key in lvl3:
            lvl3[key].sort(key=lambda w: w != INTERCEPT)
        gammas = []
        for col, (a, x, w) in enumerate(parts):
            p = coefs.index(a)
            gammas.append(Gamma3(col, p, preds[a].index(x), lvl3[(a, x)].index(w), a, x, w))
        gammas.sort(key=lambda g: (g.p, g.q, g.s))
        return cls(
            inner, outer, f2, f3, tuple(coefs), tuple(tuple(preds[c]) for c in coefs), tuple(gammas),
            tuple(coefs.index(a) for a, _, _ in z2),
            tuple((coefs.index(a), preds[a].index(x)) for a, x, _ in z3),
            levels.level_of,
        )

    def gammas_of(self, p: int, q: int) -> tuple[Gamma3, ...]:
        return tuple(g for g in self.gammas if g.p == p and g.q == q)

    def random_at_2(self, p: int) -> bool:
        return p in self.random2

    def random_at_3(self, p: int, q: int) -> bool:
        return (p, q) in self.random3


def unit_crossproducts(B: np.ndarray, codes: np.ndarray, n_units: int) -> np.ndarray:
    """(n_units, m, m): sum over each unit's rows of B_i B_i' (one bincount per pair of columns)."""
    m = B.shape[1]
    out = np.empty((n_units, m, m))
    for a in range(m):
        for b in range(a, m):
            v = np.bincount(codes, weights=B[:, a] * B[:, b], minlength=n_units)
            out[:, a, b] = v
            out[:, b, a] = v
    return out


def _unit_values(frame: pd.DataFrame, name: str, first_row: np.ndarray) -> np.ndarray:
    """A predictor's value in each unit (its first row; the predictor is constant within it)."""
    if name == INTERCEPT:
        return np.ones(len(first_row))
    v = np.ones(len(first_row))
    for piece in term_factors(name):
        v = v * frame[piece].to_numpy(dtype=float)[first_row]
    return v


@dataclass(frozen=True, eq=False)
class HLM3Statistics:
    """HLM3's statistics of a fit with two nested grouping factors (module doc), each computed once."""

    est: MultiEstimates

    # ----- the data, by unit ------------------------------------------------------------------
    @cached_property
    def frame(self) -> pd.DataFrame:
        """The rows used with the derived columns (made once: the structure and the unit values read it)."""
        return self.est.design.centred_frame()

    @cached_property
    def structure(self) -> ThreeLevelStructure:
        return ThreeLevelStructure.of(self.est, self.frame)

    @cached_property
    def _units(self):
        d = self.est.design
        s = self.structure
        f2, f3 = self.est.factors[s.f2], self.est.factors[s.f3]
        g2, g3 = d.groupings[f2.grouping], d.groupings[f3.grouping]
        J, K = g2.n_levels, g3.n_levels
        first = np.full(J, -1)
        rows = np.arange(len(g2.codes))
        first[g2.codes[::-1]] = rows[::-1]  # the first row of each level-2 unit
        k_of_j = g3.codes[first]
        first3 = np.full(K, -1)
        first3[g3.codes[::-1]] = rows[::-1]
        Z = d.Z
        B = np.column_stack([Z[:, list(f2.z_columns)], Z[:, list(f3.z_columns)], d.X, d.y])
        G = unit_crossproducts(B, g2.codes, J)
        return g2, g3, J, K, first, first3, k_of_j, G

    @property
    def n_level2(self) -> int:
        return self._units[2]

    @property
    def n_level3(self) -> int:
        return self._units[3]

    def _index(self):
        q2 = len(self.est.factors[self.structure.f2].z_columns)
        q3 = len(self.est.factors[self.structure.f3].z_columns)
        p = len(self.est.design.x_names)
        z2 = np.arange(q2)
        z3 = q2 + np.arange(q3)
        x = q2 + q3 + np.arange(p)
        return z2, z3, x, q2 + q3 + p

    @property
    def tau_pi(self) -> pd.DataFrame:
        return self.est.tau[self.structure.level2]

    @property
    def tau_beta(self) -> pd.DataFrame:
        return self.est.tau[self.structure.level3]

    @cached_property
    def tau_pi_correlations(self) -> pd.DataFrame:
        """tau_pi as correlations (HLM3's "tau(pi) (as correlations)"; `engine.covariance.correlations`)."""
        return correlations(self.tau_pi)

    @cached_property
    def tau_beta_correlations(self) -> pd.DataFrame:
        return correlations(self.tau_beta)

    # ----- level 2: each unit's OLS -------------------------------------------------------------
    @cached_property
    def level2_ols(self) -> dict[str, np.ndarray]:
        """Per level-2 unit with sufficient data (Z2_jk of full column rank):
        pi_hat_jk = (Z2'Z2)^-1 Z2'(y - A_jk gamma_A),  v_jk = sigma2 diag((Z2'Z2)^-1),
        A: the columns of the coefficients not random at level 2 (HLM2's rule, section 1, per level-2 unit)."""
        s = self.structure
        G = self._units[7]
        z2, _z3, x, yi = self._index()
        gamma = self.est.beta.to_numpy()
        fixed = [g.column for g in s.gammas if not s.random_at_2(g.p)]
        Zr = G[:, z2, yi] - (G[:, z2][:, :, x[fixed]] @ gamma[fixed] if fixed else 0.0)
        ZZ = G[:, z2][:, :, z2]
        used = np.linalg.matrix_rank(ZZ, hermitian=True) == len(z2)
        inv = np.linalg.inv(ZZ[used])
        pi_hat = np.einsum("jab,jb->ja", inv, Zr[used])
        v = self.est.sigma2 * np.diagonal(inv, axis1=1, axis2=2)
        return {"used": used, "pi_hat": pi_hat, "v": v}

    @cached_property
    def reliability2(self) -> pd.Series:
        """Reliability of each random level-1 coefficient P_p (R&B eq. 3.58 per level-2 unit):
        mean over the level-2 units used of tau_pi,pp / (tau_pi,pp + v_pjk)."""
        o = self.level2_ols
        t = np.diag(self.tau_pi.to_numpy())
        return pd.Series((t / (t + o["v"])).mean(axis=0), index=list(self.tau_pi.index), name="reliability")

    @cached_property
    def chi_square2(self) -> pd.DataFrame:
        """chi2_p = sum_k sum_{j in k, used} (pi_hat_pjk - X_jk' b_pk)^2 / v_pjk, with b_pk the
        weighted (1/v_pjk) least-squares fit of pi_hat_p.k on P_p's level-2 predictors within level-3
        unit k (each level-3 unit's own B_pq), df = sum_k (J*_k - rank_k): the level-2 test of
        H0 tau_pi,pp = 0 given the level-3 units (section 14)."""
        s = self.structure
        o = self.level2_ols
        first, k_of_j = self._units[4], self._units[6]
        frame = self.frame
        used = o["used"]
        k_used = k_of_j[used]
        chis, dfs = [], []
        order = np.argsort(k_used, kind="stable")
        bounds = np.flatnonzero(np.diff(k_used[order])) + 1
        groups = np.split(order, bounds) if order.size else []
        for a, p in enumerate(s.random2):
            Xq = np.column_stack([_unit_values(frame, x, first) for x in s.predictors[p]])[used]
            pi, v = o["pi_hat"][:, a], o["v"][:, a]
            chi, df = 0.0, 0
            for m in groups:  # the level-2 units used of one level-3 unit
                w = 1.0 / np.sqrt(v[m])
                D, t = Xq[m] * w[:, None], pi[m] * w
                coef, _, rank, _ = np.linalg.lstsq(D, t, rcond=None)
                chi += float(np.sum((t - D @ coef) ** 2))
                df += m.size - int(rank)
            chis.append(chi)
            dfs.append(df)
        chi_a, df_a = np.array(chis), np.array(dfs, dtype=float)
        return pd.DataFrame({"chisq": chi_a, "df": df_a, "p": dist.chi2_sf(chi_a, df_a)}, index=list(self.tau_pi.index))

    # ----- level 3: each unit's GLS given the level-2 covariance --------------------------------
    @cached_property
    def _level3_blocks(self) -> np.ndarray:
        """(K, m', m'): [Z3 X y]' W_k^-1 [Z3 X y] summed over the level-2 units of each level-3 unit."""
        G = self._units[7]
        K, k_of_j = self._units[3], self._units[6]
        z2, z3, x, yi = self._index()
        b = np.concatenate([z3, x, [yi]])
        s2 = self.est.sigma2
        T = self.tau_pi.to_numpy()
        ZZ = G[:, z2][:, :, z2]
        A = s2 * np.eye(len(z2)) + T @ ZZ
        M = np.linalg.solve(A, np.broadcast_to(T, A.shape))
        Gb2 = G[:, b][:, :, z2]
        Q = (G[:, b][:, :, b] - Gb2 @ M @ np.swapaxes(Gb2, 1, 2)) / s2
        out = np.zeros((K, len(b), len(b)))
        np.add.at(out, k_of_j, Q)
        return out

    @cached_property
    def level3_gls(self) -> dict[str, np.ndarray]:
        """Per level-3 unit with sufficient data (C_k = Z3_k' W_k^-1 Z3_k of full rank):
        beta_hat_k = C_k^-1 Z3_k' W_k^-1 (y_k - A_k gamma_A),  v_k = diag(C_k^-1),
        A: the columns of the level-2 coefficients not random at level 3 (section 14)."""
        s = self.structure
        Q = self._level3_blocks
        q3 = len(s.random3)
        gamma = self.est.beta.to_numpy()
        fixed = [g.column for g in s.gammas if not s.random_at_3(g.p, g.q)]
        C = Q[:, :q3, :q3]
        c = Q[:, :q3, -1] - (Q[:, :q3, q3:-1][:, :, fixed] @ gamma[fixed] if fixed else 0.0)
        used = np.linalg.matrix_rank(C, hermitian=True) == q3
        inv = np.linalg.inv(C[used])
        beta_hat = np.einsum("kab,kb->ka", inv, c[used])
        v = np.diagonal(inv, axis1=1, axis2=2)
        frame = self.frame
        first3 = self._units[5]
        fitted = np.zeros_like(beta_hat)
        for a, (p, q) in enumerate(s.random3):
            for g in s.gammas_of(p, q):
                fitted[:, a] += gamma[g.column] * _unit_values(frame, g.level3, first3)[used]
        return {"used": used, "beta_hat": beta_hat, "v": v, "fitted": fitted}

    @cached_property
    def reliability3(self) -> pd.Series:
        """Reliability of each random level-2 coefficient B_pq: mean over the level-3 units used of
        tau_beta / (tau_beta + v_k) (R&B ch. 8; the empty model: v_k = [sum_j (tau_pi + sigma2/n_jk)^-1]^-1)."""
        o = self.level3_gls
        t = np.diag(self.tau_beta.to_numpy())
        return pd.Series((t / (t + o["v"])).mean(axis=0), index=list(self.tau_beta.index), name="reliability")

    @cached_property
    def chi_square3(self) -> pd.DataFrame:
        """chi2_pq = sum_{k used} (beta_hat_pqk - W_k' gamma_pq)^2 / v_pqk, df = K* - (number of
        gammas in B_pq's equation) (R&B eq. 3.103 at level 3, section 14)."""
        s = self.structure
        o = self.level3_gls
        chi = ((o["beta_hat"] - o["fitted"]) ** 2 / o["v"]).sum(axis=0)
        n = int(o["used"].sum())
        df = np.array([n - len(s.gammas_of(p, q)) for p, q in s.random3], dtype=float)
        return pd.DataFrame({"chisq": chi, "df": df, "p": dist.chi2_sf(chi, df)}, index=list(self.tau_beta.index))

    @property
    def n_level2_sufficient(self) -> int:
        return int(self.level2_ols["used"].sum())

    @property
    def n_level3_sufficient(self) -> int:
        return int(self.level3_gls["used"].sum())

    # ----- fixed effects --------------------------------------------------------------------------
    @cached_property
    def _marginal(self) -> tuple[np.ndarray, np.ndarray]:
        """Per level-3 unit, X_k'V_k^-1 X_k and X_k'V_k^-1 e_k (e = y - X gamma), from the W^-1 blocks:
        V^-1 = W^-1 - W^-1 Z3 (I + T_beta C)^-1 T_beta Z3' W^-1."""
        Q = self._level3_blocks
        q3 = len(self.structure.random3)
        Tb = self.tau_beta.to_numpy()
        C = Q[:, :q3, :q3]
        S = np.linalg.solve(np.eye(q3) + Tb @ C, np.broadcast_to(Tb, C.shape))
        R = Q[:, q3:, q3:] - Q[:, q3:, :q3] @ S @ Q[:, :q3, q3:]
        XVX = R[:, :-1, :-1]
        gamma = self.est.beta.to_numpy()
        XVe = R[:, :-1, -1] - XVX @ gamma
        return XVX, XVe

    @cached_property
    def vcov_robust(self) -> pd.DataFrame:
        """HLM's robust covariance, clustered at level 3 with no small-sample factor (CR0; section 3):
        M^-1 [sum_k X_k'V_k^-1 e_k e_k' V_k^-1 X_k] M^-1, M = sum_k X_k'V_k^-1 X_k."""
        XVX, XVe = self._marginal
        Minv = np.linalg.inv(XVX.sum(axis=0))
        V = Minv @ (XVe.T @ XVe) @ Minv
        names = list(self.est.design.x_names)
        return pd.DataFrame(V, index=names, columns=names)

    @cached_property
    def df(self) -> pd.Series:
        """HLM3's approximate df of each gamma_pqs (section 14): K - (gammas of B_pq) when B_pq is random
        at level 3; else J - (gammas of P_p's coefficients not random at level 3) when P_p is random at
        level 2; else N - F."""
        s = self.structure
        J, K = self.n_level2, self.n_level3
        N, F = self.est.n_obs, len(self.est.design.x_names)
        out = np.empty(F)
        for g in s.gammas:
            if s.random_at_3(g.p, g.q):
                out[g.column] = K - len(s.gammas_of(g.p, g.q))
            elif s.random_at_2(g.p):
                out[g.column] = J - sum(len(s.gammas_of(g.p, q)) for q in range(len(s.predictors[g.p])) if not s.random_at_3(g.p, q))
            else:
                out[g.column] = N - F
        return pd.Series(out, index=list(self.est.design.x_names), name="df")

    def fixed_table(self, robust: bool) -> pd.DataFrame:
        """estimate, se, t, df, p (two-sided, Student t(df)), in X's order (`multi_statistics.fixed_effects_table`)."""
        return fixed_effects_table(self.est, self.vcov_robust if robust else self.est.vcov, self.df.to_numpy())

    # ----- the likelihood ------------------------------------------------------------------------
    @property
    def deviance(self) -> float:
        """-2 log L (ML, HLM3's method) or the REML criterion (a REML fit; HLM3 has no REML)."""
        return self.est.deviance

    @property
    def n_params(self) -> int:
        """HLM's count (section 6): the covariance parameters (tau_pi, tau_beta, sigma2), plus the
        fixed effects under ML."""
        return hlm_n_params(self.est)
