"""The inference view of a fit: what `inference` derives from the core record (`results.estimates`).

Fixed-effect tables with HLM's df and the model-based or robust (CR0) SEs, the pieces the df and SE
methods share (variance derivatives for Satterthwaite, Kenward-Roger, CR2 and CR0 df), and the
tests, combinations and intervals of `coefficients` and `intervals`. Each piece is computed once,
on first use, and only reads the record.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from multilevel.errors import SpecificationError
from multilevel.inference import coefficients as inference
from multilevel.inference import distributions as dist
from multilevel.inference import intervals
from multilevel.inference.coefficients import HypothesisTest, check_level, hlm_fixed_df
from multilevel.inference.contrasts import parse_contrasts
from multilevel.inference.kenward_roger import KenwardRoger
from multilevel.inference.robust import CR2, cr0_vcov, cr2
from multilevel.inference.variance_derivatives import VarianceDerivatives, variance_derivatives
from multilevel.results.estimates import Estimates


@dataclass(frozen=True, eq=False)
class Inference:
    """df, SEs, tests and intervals of the fixed effects and the variance components of `est`."""

    est: Estimates

    # ----- covariances of gamma-hat ---------------------------------------------------------
    @cached_property
    def vcov_robust_internal(self) -> np.ndarray:
        """HLM's robust (CR0) Var(gamma-hat) in the summaries' coordinates (`robust.cr0_vcov`)."""
        return cr0_vcov(self.est.summaries, self.est.solution)

    @cached_property
    def vcov_robust(self) -> pd.DataFrame:
        """HLM's robust (CR0 sandwich) Var(gamma-hat); see `multilevel.robust`."""
        names = list(self.est.design.x_names)
        return pd.DataFrame(self.est.coordinates.vcov(self.vcov_robust_internal), index=names, columns=names)

    @cached_property
    def variance_derivatives(self) -> VarianceDerivatives:
        """The derivatives of Var(gamma-hat) and the deviance's Hessian in the variance parameters
        (Satterthwaite, Kenward-Roger, Wald intervals of the variance components)."""
        e = self.est
        return variance_derivatives(e.summaries, e.solution, e.template, e.sigma2, e.reml, e.design.z_names)

    @cached_property
    def kenward_roger(self) -> KenwardRoger:
        return KenwardRoger(self.variance_derivatives)

    @cached_property
    def cr2(self) -> CR2:
        """Bell-McCaffrey's bias-reduced sandwich and its df (`robust.CR2`)."""
        return cr2(self.est.summaries, self.est.solution)

    @cached_property
    def cr0_pieces(self) -> CR2:
        """The CR2 pieces without the adjustment: the Bell-McCaffrey df of CR0 and CR1."""
        return cr2(self.est.summaries, self.est.solution, adjust=False)

    @cached_property
    def psi_vcov(self) -> np.ndarray:
        """The asymptotic covariance of psi = (tau elements at theta's positions, sigma2) in the
        data's coordinates: tau = S_z tau' S_z' is linear in tau', so Var = K Var' K'."""
        V = self.variance_derivatives.asymptotic_vcov
        coords = self.est.coordinates
        if coords.z_identity:
            return V
        t = self.est.template
        m = len(t.rows)
        K = np.eye(V.shape[0])
        for i, (r, c) in enumerate(zip(t.rows, t.cols)):
            E = np.zeros((t.q, t.q))
            E[r, c] = E[c, r] = 1.0
            M = coords.tau(E)
            K[:m, i] = [M[a, b] for a, b in zip(t.rows, t.cols)]
        return K @ V @ K.T

    # ----- HLM's fixed-effect tables --------------------------------------------------------
    @cached_property
    def hlm_df(self) -> pd.Series:
        """HLM's "Approx. d.f." of each gamma (`coefficients.hlm_fixed_df`)."""
        d = self.est.design
        return pd.Series(hlm_fixed_df(d.coefficients, d.n_obs, d.n_groups, len(d.x_names)), index=list(d.x_names))

    def _table(self, se: np.ndarray) -> pd.DataFrame:
        est = self.est.beta.to_numpy()
        t = est / se
        df = self.hlm_df.to_numpy()
        p = 2 * dist.t_sf(np.abs(t), df)
        return pd.DataFrame({"estimate": est, "se": se, "df": df, "t": t, "p": p}, index=list(self.est.design.x_names))

    @cached_property
    def model_based(self) -> pd.DataFrame:
        """Fixed effects with the model-based SEs (lme4's vcov), HLM's df, t and p, for every fit
        (HLM's first fixed-effect table; under sampling weights these SEs are not valid, and HLM's
        report prints them with a note saying so)."""
        return self._table(np.sqrt(np.diag(self.est.vcov.to_numpy())))

    @cached_property
    def robust(self) -> pd.DataFrame:
        """Fixed effects with HLM's robust (CR0) SEs, the same df."""
        return self._table(np.sqrt(np.diag(self.vcov_robust.to_numpy())))

    @property
    def fixed(self) -> pd.DataFrame:
        """Fixed effects with HLM's approximate df, t and two-sided p, and the SEs of `coef_table()`'s
        default: model-based SEs (lme4's vcov), or, for a fit with sampling weights
        (pseudo-likelihood), the robust CR0 sandwich SEs, as the model-based ones are not valid
        there (the same numbers as `fit.robust` and `coef_table()`)."""
        return self.robust if self.est.weighted else self.model_based

    # ----- tests and combinations -----------------------------------------------------------
    def coef_table(self, df: str | None = None, se: str | None = None, level: float = 0.95) -> pd.DataFrame:
        """Fixed effects with estimate, se, df, t, p, ci_low, ci_high for a df method ("hlm" by
        default; "residual", "between-within", "satterthwaite", "kenward-roger", "bell-mccaffrey",
        "infinite") and an SE method ("model" by default, "CR0", "CR1", "CR2"; CR2 defaults to
        Bell-McCaffrey df). See `multilevel.inference`."""
        df, se = inference.resolve(self, df, se)
        p = len(self.est.beta)
        tab = inference.t_table(self, np.eye(p), np.zeros(p), list(self.est.design.x_names), df, se, level)
        tab.index.name = None
        return tab

    def contrast(self, contrast, rhs=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(L, rhs, labels) from text or a matrix; `rhs` (one value, or one per row) replaces the
        right-hand sides of the text (0 for a matrix)."""
        x_names = self.est.design.x_names
        if isinstance(contrast, (list, tuple)) and contrast and all(isinstance(c, str) for c in contrast):
            # a list of constraints (each one or more, comma-separated) is one joint contrast
            contrast = ", ".join(c.strip() for c in contrast)
        elif isinstance(contrast, (list, tuple)) and any(isinstance(c, str) for c in contrast):
            raise SpecificationError(
                "A contrast is text (\"sector = 0, meanses = 0\"), a list of such texts, or a matrix of numbers; "
                f"this list mixes text with {', '.join(sorted({type(c).__name__ for c in contrast if not isinstance(c, str)}))}."
            )
        if isinstance(contrast, str):
            L, r, labels = parse_contrasts(contrast, x_names, tuple(g.label for g in self.est.gamma_labels))
        else:
            L = np.atleast_2d(np.asarray(contrast, dtype=float))
            if L.ndim != 2 or L.shape[1] != len(x_names):
                raise SpecificationError(
                    f"The contrast matrix has {L.shape[-1]} columns; this model has {len(x_names)} fixed effects "
                    f"({', '.join(x_names)})."
                )
            labels = [" + ".join(f"{v:g}*{n}" for v, n in zip(row, x_names) if v) for row in L]
            r = np.zeros(L.shape[0])
        if rhs is not None:
            given = np.atleast_1d(np.asarray(rhs, dtype=float))
            if given.size not in (1, L.shape[0]):
                raise SpecificationError(f"rhs has {given.size} values for {L.shape[0]} contrast rows; give one value per row (or one for all).")
            r = np.broadcast_to(given, (L.shape[0],)).copy()
        return L, r, labels

    def test(self, contrast, rhs=None, df: str | None = None, se: str | None = None, level: float = 0.95) -> HypothesisTest:
        """Joint test of L gamma = rhs (a matrix, text such as "sector = 0, sector:cses = 0", or a list
        of such texts, tested jointly):
        Wald chi-square (HLM's General Linear Hypothesis test) and F with the chosen df."""
        df, se = inference.resolve(self, df, se)
        L, r, labels = self.contrast(contrast, rhs)
        return inference.hypothesis_test(self, L, r, labels, df, se, level)

    def estimate(self, contrast, rhs=None, df: str | None = None, se: str | None = None, level: float = 0.95) -> pd.DataFrame:
        """Linear combinations, one row each ("meanses - cses" is the contextual effect; text, a list
        of texts or a matrix):
        estimate, se, df, t, p and the confidence interval."""
        df, se = inference.resolve(self, df, se)
        L, r, labels = self.contrast(contrast, rhs)
        return inference.t_table(self, L, np.asarray(r, dtype=float), labels, df, se, level)

    # ----- intervals --------------------------------------------------------------------------
    def confint(self, method: str = "wald", level: float = 0.95, *, which: str = "all", n_boot: int = 1000,
                seed: int | None = None, progress: bool = True, n_jobs: int | None = None) -> pd.DataFrame:
        """Confidence intervals for the fixed effects and the variance components (sd/cor/sigma
        scale, as lme4): method "wald", "profile" or "bootstrap" (`multilevel.intervals`); which:
        "all", "fixed" (the fixed effects) or "variance" (the variance components), for every
        method. Bootstrap: n_boot samples (percentile intervals need many: a MultilevelWarning
        below 100), `seed`, `n_jobs` threads (`bootstrap`)."""
        check_level(level)
        if not isinstance(method, str):
            raise SpecificationError(f"method must be 'wald', 'profile' or 'bootstrap', not {method!r}.")
        intervals.check_which(which)
        m = method.lower()
        if m in ("profile", "bootstrap"):
            self.est.refuse_weighted(f"A {m} interval")
        if m == "wald":
            return intervals.select(self.est, intervals.wald(self, level), which)
        if m == "profile":
            return intervals.profile(self, level, which)
        if m == "bootstrap":
            intervals.warn_few_replicates(n_boot)
            return intervals.select(self.est, self.bootstrap(n_boot, seed, progress, n_jobs).intervals(level), which)
        raise SpecificationError(f"method={method!r} is not known; use 'wald', 'profile' or 'bootstrap'.")

    def bootstrap(self, n_boot: int = 1000, seed: int | None = None, progress: bool = True,
                  n_jobs: int | None = None) -> intervals.Bootstrap:
        """Parametric bootstrap: refits on n_boot samples from this fitted model, on `n_jobs`
        processes (1 by default); the same result for any n_jobs (`intervals.bootstrap`)."""
        self.est.refuse_weighted("The parametric bootstrap")
        return intervals.bootstrap(self.est, n_boot, seed, progress, n_jobs)
