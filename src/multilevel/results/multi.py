"""The core record of a fit with several grouping factors (nested, crossed or both): the estimates,
their covariance, the variance components by factor, the conditional modes and their conditional
variances, and the optimizer's record (`engine.blocked`).

    beta     the GLS estimate at the variance components (lme4's fixef)
    vcov     sigma2 (X'V^-1X)^-1 (lme4's vcov)
    tau_f    sigma2 lambda_f lambda_f' for each factor f (lme4's VarCorr)
    ranef_f  Lambda_f u (lme4's ranef: the conditional modes of each level's random effects)
    condvar  sigma2 lambda_f Sigma_vv lambda_f', Sigma = M^-1 (lme4's condVar)
    deviance REMLcrit (REML) or -2 log L (ML), as lme4 reports them
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from multilevel.design.builder import Design, check_rank
from multilevel.design.summaries import GroupSummaries
from multilevel.engine.blocked import BlockedObjective, factor_frames, frame_theta, in_frames, optimize_blocked
from multilevel.engine.covariance import LambdaTemplate
from multilevel.engine.optimizer import OptimizerRecord
from multilevel.errors import SpecificationError
from multilevel.parallel import one_blas_thread

LOG_2PI = float(np.log(2.0 * np.pi))


def lme4_name(z_name: str) -> str:
    """A column's name as lme4 prints it: "Intercept" -> "(Intercept)", formulaic's treatment
    contrast "Machine[T.B]" -> "MachineB" (R's), in each factor of an interaction."""
    if z_name == "Intercept":
        return "(Intercept)"
    return re.sub(r"\[T\.([^\]]*)\]", r"\1", z_name)


@dataclass(frozen=True)
class FactorTerms:
    """One grouping factor's random effects, in the engine's order (most levels first, lme4's):
    its name (lme4's, e.g. `cask:batch`), its grouping in `Design.groupings`, its columns of Z and
    their names, and its covariance template (one block per term on the factor)."""

    name: str
    grouping: int
    z_columns: tuple[int, ...]
    z_names: tuple[str, ...]
    template: LambdaTemplate

    @classmethod
    def of_design(cls, design: Design, order: tuple[int, ...]) -> tuple[FactorTerms, ...]:
        out = []
        for g in order:
            blocks = [b for b, t in zip(design.blocks, design.term_grouping) if t == g]
            columns = tuple(c for b in blocks for c in b)
            local = {c: i for i, c in enumerate(columns)}
            names = tuple(design.z_names[c] for c in columns)
            name = design.groupings[g].name
            template = LambdaTemplate.from_blocks(tuple(tuple(local[c] for c in b) for b in blocks), names, name)
            out.append(cls(name, g, columns, names, template))
        return tuple(out)


@dataclass(frozen=True, eq=False)
class MultiEstimates:
    """A fitted linear mixed model with several grouping factors (module doc).

    The engine works in each factor's own frame (`engine.blocked.factor_frames`: Z_f S_f, a
    slope far from 0 shifted, columns scaled), on `internal` summaries; `theta` and everything
    expressed in Z's terms (tau, ranef, condvar) are mapped back: b = S_f b', tau = S_f tau' S_f'."""

    design: Design
    summaries: GroupSummaries
    factors: tuple[FactorTerms, ...]
    method: str
    theta: np.ndarray  # lme4's theta, factor after factor in `factors`' order, in the data's columns
    sigma2: float
    beta_internal: np.ndarray
    P_internal: np.ndarray  # (X'V^-1X)^-1 at sigma2 = 1: vcov = sigma2 P
    ranef_spherical: tuple[np.ndarray, ...]  # u per factor (J, q), in the factors' frames
    sigma_blocks: tuple[np.ndarray, ...]  # Sigma_vv per factor (J, q, q), in the factors' frames
    deviance: float
    optimizer: OptimizerRecord | None
    frames: tuple[np.ndarray, ...] = ()  # S_f per factor (identity when empty)
    theta_internal: np.ndarray | None = None

    @classmethod
    def fit(cls, design: Design, method: str) -> MultiEstimates:
        """The REML or ML fit (`engine.blocked`), with one BLAS thread (`one_blas_thread`)."""
        with one_blas_thread():
            return cls._fit(design, method)

    @classmethod
    def _fit(cls, design: Design, method: str) -> MultiEstimates:
        summaries, order = design.factor_summaries()
        # collinear fixed effects named before the search (X'X singular would otherwise surface as
        # a deviance that cannot be evaluated)
        check_rank(summaries.XtX_total, design.x_names, design.coordinates)
        factors = FactorTerms.of_design(design, order)
        templates = tuple(f.template for f in factors)
        frames = factor_frames(summaries, templates)
        internal = in_frames(summaries, frames)
        theta_int, record, objective = optimize_blocked(internal, templates, method == "REML")
        record = dataclasses.replace(record, history=tuple(
            (tuple(frame_theta(templates, frames, np.array(t), False).tolist()) if np.isfinite(d) else t, d)
            for t, d in record.history))
        return cls.in_frame(design, summaries, factors, method, theta_int, record, frames, objective)

    @classmethod
    def at_theta(cls, design: Design, summaries: GroupSummaries, factors: tuple[FactorTerms, ...], method: str,
                 theta: np.ndarray, record: OptimizerRecord | None) -> MultiEstimates:
        """The record at lme4's theta (in the data's columns), computed in the factors' frames."""
        templates = tuple(f.template for f in factors)
        frames = factor_frames(summaries, templates)
        theta_int = frame_theta(templates, frames, np.asarray(theta, dtype=float), True)
        return cls.in_frame(design, summaries, factors, method, theta_int, record, frames)

    @classmethod
    def in_frame(cls, design: Design, summaries: GroupSummaries, factors: tuple[FactorTerms, ...], method: str,
                 theta_int: np.ndarray, record: OptimizerRecord | None, frames: tuple[np.ndarray, ...],
                 objective: BlockedObjective | None = None) -> MultiEstimates:
        templates = tuple(f.template for f in factors)
        objective = objective or BlockedObjective(in_frames(summaries, frames), templates, method == "REML")
        f = objective.factor(np.asarray(theta_int, dtype=float))
        if f is None:
            raise SpecificationError("The model cannot be evaluated at these variance components (not positive definite).")
        beta, u_rest, u_chain, _B_rest, _B_chain, P = objective.solution(f)
        S_rest, S_diag, _S_link, _S_ent = objective.selected_inverse(f)
        st = objective.st
        us: list[np.ndarray] = []
        sig: list[np.ndarray] = []
        for t in range(len(factors)):
            q, J = st.q[t], st.J[t]
            if t < st.m:
                us.append(u_chain[t])
                sig.append(S_diag[t])
            else:
                off = st.offsets[st.rest.index(t)]
                us.append(u_rest[off : off + J * q].reshape(J, q))
                blk = S_rest[off : off + J * q, off : off + J * q].reshape(J, q, J, q)
                sig.append(np.einsum("jajb->jab", blk))
        n, p = float(summaries.n.sum()), summaries.p
        sigma2 = f.pwrss / (n - p if method == "REML" else n)
        d = objective._value(f)
        theta = frame_theta(templates, frames, np.asarray(theta_int, dtype=float), False)
        return cls(design, summaries, factors, method, theta, float(sigma2), beta, P, tuple(us), tuple(sig), float(d),
                   record, frames, np.asarray(theta_int, dtype=float))

    # ----- basic facts ----------------------------------------------------------------------
    @property
    def reml(self) -> bool:
        return self.method == "REML"

    @property
    def n_obs(self) -> int:
        return int(self.summaries.n.sum())

    @property
    def converged(self) -> bool:
        return self.optimizer is None or self.optimizer.converged

    @property
    def singular(self) -> bool:
        return bool(self.optimizer is not None and self.optimizer.boundary)

    @cached_property
    def lams(self) -> tuple[np.ndarray, ...]:
        """S_f Lambda_f' per factor: Lambda in the data's columns (not triangular when S_f shifts)."""
        theta = self.theta if self.theta_internal is None else self.theta_internal
        out, at = [], 0
        for i, f in enumerate(self.factors):
            size = f.template.size
            lam = f.template.lam(theta[at : at + size])
            out.append(self.frames[i] @ lam if self.frames else lam)
            at += size
        return tuple(out)

    @property
    def theta_names(self) -> tuple[str, ...]:
        """lme4's names: `factor.(Intercept)`, `factor.x.(Intercept)` (a covariance: row.column)."""
        out = []
        for f in self.factors:
            t = f.template
            for r, c in zip(t.rows, t.cols):
                a, b = lme4_name(f.z_names[r]), lme4_name(f.z_names[c])
                out.append(f"{f.name}.{a}" if r == c else f"{f.name}.{a}.{b}")
        return tuple(out)

    # ----- fixed effects ----------------------------------------------------------------------
    @cached_property
    def beta(self) -> pd.Series:
        b = self.design.coords.beta(self.beta_internal)
        return pd.Series(b, index=list(self.design.x_names), name="beta")

    @cached_property
    def vcov(self) -> pd.DataFrame:
        V = self.design.coords.vcov(self.sigma2 * self.P_internal)
        names = list(self.design.x_names)
        return pd.DataFrame(V, index=names, columns=names)

    # ----- variance components ----------------------------------------------------------------
    @cached_property
    def tau(self) -> dict[str, pd.DataFrame]:
        """Each factor's covariance of its random effects, sigma2 lambda lambda'."""
        out = {}
        for f, lam in zip(self.factors, self.lams):
            names = list(f.z_names)
            out[f.name] = pd.DataFrame(self.sigma2 * lam @ lam.T, index=names, columns=names)
        return out

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """lme4's `as.data.frame(VarCorr(fit))` (`varcorr_table`)."""
        parts = [(f.name, f.z_names, f.template.blocks, self.sigma2 * lam @ lam.T) for f, lam in zip(self.factors, self.lams)]
        return varcorr_table(parts, self.sigma2)

    # ----- the likelihood ---------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """lme4's df of logLik: the fixed effects, theta and sigma."""
        return len(self.design.x_names) + len(self.theta) + 1

    @property
    def loglik(self) -> float:
        return -0.5 * self.deviance

    @property
    def aic(self) -> float:
        return self.deviance + 2 * self.n_params

    @property
    def bic(self) -> float:
        return self.deviance + np.log(self.n_obs) * self.n_params

    # ----- conditional modes --------------------------------------------------------------------
    def ranef(self) -> dict[str, pd.DataFrame]:
        """lme4's `ranef(fit)`: per factor, one row per level (its label), one column per random
        effect: Lambda u."""
        out = {}
        for f, lam, u in zip(self.factors, self.lams, self.ranef_spherical):
            b = u @ lam.T
            labels = self.design.groupings[f.grouping].labels
            out[f.name] = pd.DataFrame(b, index=pd.Index(labels, name=f.name), columns=[lme4_name(n) for n in f.z_names])
        return out

    def condvar(self) -> dict[str, np.ndarray]:
        """lme4's `condVar`: per factor (J, q, q), sigma2 lambda Sigma_vv lambda'."""
        return {f.name: self.sigma2 * (lam @ S @ lam.T) for f, lam, S in zip(self.factors, self.lams, self.sigma_blocks)}

    def ranef_table(self) -> pd.DataFrame:
        """lme4's `as.data.frame(ranef(fit, condVar = TRUE))`: grpvar, term, grp, condval, condsd."""
        parts = []
        cv = self.condvar()
        for f, table in zip(self.factors, self.ranef().values()):
            sd = np.sqrt(np.maximum(np.diagonal(cv[f.name], axis1=1, axis2=2), 0.0))
            for a, term in enumerate(table.columns):
                parts.append(pd.DataFrame({"grpvar": f.name, "term": term, "grp": table.index.astype(str),
                                           "condval": table[term].to_numpy(), "condsd": sd[:, a]}))
        return pd.concat(parts, ignore_index=True)


def varcorr_table(factors, sigma2: float) -> pd.DataFrame:
    """lme4's `as.data.frame(VarCorr(fit))`: columns grp, var1, var2, vcov, sdcor; per factor
    (name, random-effect names, uncorrelated blocks, covariance T) its variances, then the
    covariances within each correlated block (sdcor: their correlations), then the residual."""
    rows: list[tuple] = []
    for name, z_names, blocks, T in factors:
        T = np.asarray(T, dtype=float)
        sd = np.sqrt(np.maximum(np.diag(T), 0.0))
        for a in range(T.shape[0]):
            rows.append((name, lme4_name(z_names[a]), None, T[a, a], sd[a]))
        for block in blocks:
            for i, a in enumerate(block):
                for b in block[i + 1 :]:
                    cor = T[b, a] / (sd[a] * sd[b]) if sd[a] > 0 and sd[b] > 0 else np.nan
                    rows.append((name, lme4_name(z_names[a]), lme4_name(z_names[b]), T[b, a], cor))
    rows.append(("Residual", None, None, sigma2, np.sqrt(sigma2)))
    return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])
