"""The core record of a fit: the estimates, their covariance, the optimizer's record, and what is
needed to recompute them (the design, the summaries, the covariance template, the method, theta).

`Estimates` is what every later stage reads: the views of `inference` (df, SEs, tests, intervals),
of `diagnostics` (HLM's statistics, EB residuals, residual files, effect sizes, plots) and the
reports. The numbers here are the estimates themselves and the likelihood at them:

    beta   gamma-hat (HLM) / beta-hat (lme4), the GLS estimate at the variance components
    vcov   Var(gamma-hat) = (sum_j X_j'V_j^-1 X_j)^-1 = sigma2 A^-1 (lme4 `vcov`; HLM's model-based)
    tau    sigma2 Lambda Lambda' (HLM's Tau; lme4's VarCorr), sigma2 the level-1 variance
    deviance  REMLcrit (REML) or -2 log L (ML), as lme4 reports them; HLM's convention beside it

The summaries and the solution are in the internal coordinates of `design.coordinates` (X and y
shifted); what is expressed in X's or Z's terms is mapped back here.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from multilevel.design.builder import Design
from multilevel.design.coordinates import Coordinates
from multilevel.design.summaries import GroupSummaries
from multilevel.engine.covariance import LambdaTemplate, correlations
from multilevel.engine.objective import LOG_2PI, Solution, deviance, solve_at
from multilevel.engine.optimizer import OptimizerRecord, optimize_theta
from multilevel.errors import ConvergenceWarning, SpecificationError
from multilevel.results.labels import GammaLabel, gamma_labels
from multilevel.results.multi import varcorr_table

METHODS = ("REML", "ML")


def check_method(method: str) -> str:
    """"REML" or "ML" (any case), or a SpecificationError."""
    m = str(method).upper()
    if m not in METHODS:
        raise SpecificationError(f"method must be 'REML' or 'ML', not {method!r}.")
    return m


@dataclass(frozen=True, eq=False)
class Estimates:
    """A fitted (or evaluated) two-level linear mixed model: the core record (module doc).

    Estimated by REML or ML at the optimum (`optimizer` holds the record), or evaluated at given
    variance components (`evaluated_at_given` is True and `optimizer` is None).
    """

    design: Design
    summaries: GroupSummaries
    template: LambdaTemplate
    method: str
    theta_internal: np.ndarray  # lme4's theta in the summaries' coordinates (`coordinates`); `theta`: the data's
    sigma2: float
    solution: Solution
    optimizer: OptimizerRecord | None

    # ----- construction ---------------------------------------------------------------------
    @classmethod
    def at_theta(cls, design: Design, summaries: GroupSummaries, template: LambdaTemplate, method: str, theta,
                 optimizer: OptimizerRecord | None = None, sigma2: float | None = None) -> Estimates:
        """The record at theta: the solution there, and sigma2 profiled out (REML: pwrss/(N-p), ML:
        pwrss/N) unless given."""
        sol = solve_at(summaries, template.lam(theta))
        s2 = sol.sigma2_hat(method == "REML") if sigma2 is None else float(sigma2)
        return cls(design, summaries, template, method, np.asarray(theta, float), s2, sol, optimizer)

    @classmethod
    def at_variance_components(cls, design: Design, summaries: GroupSummaries, template: LambdaTemplate, method: str,
                               tau, sigma2: float) -> Estimates:
        """The model evaluated (not optimised) at given tau and sigma2: GLS fixed effects, SEs,
        robust SEs, HLM statistics and the non-profiled deviance at those values. tau must be a
        q x q symmetric positive semidefinite matrix of finite numbers (rows and columns in the
        order of the random effects), with zeros between uncorrelated terms ((x || g)); sigma2 a
        positive finite number (`check_variance_components`)."""
        tau, s2 = check_variance_components(tau, sigma2, template, design.z_names)
        try:
            theta = template.theta_from_tau(design.coords.tau_internal(tau), s2)
        except ValueError as exc:  # left after the checks: rounding of a near-singular tau
            raise SpecificationError(f"tau cannot be evaluated for the random effects {', '.join(design.z_names)}: {exc}") from exc
        return cls.at_theta(design, summaries, template, method, theta, None, s2)

    def at(self, tau, sigma2: float) -> Estimates:
        """This model evaluated at given tau and sigma2 (see `at_variance_components`)."""
        return Estimates.at_variance_components(self.design, self.summaries, self.template, self.method, tau, sigma2)

    def refit(self, method: str) -> Estimates:
        """The same model and data estimated by another method ("REML" or "ML"), reusing the
        summaries (no pass over the rows); a ConvergenceWarning when its optimum is not checked."""
        method = check_method(method)
        if self.weighted and method == "REML":
            raise SpecificationError("A fit with sampling weights cannot be refitted by REML: the pseudo-likelihood is an ML criterion.")
        theta, record = optimize_theta(self.summaries, self.template, method == "REML")
        est = Estimates.at_theta(self.design, self.summaries, self.template, method, theta, record)
        warn_if_not_converged(est, stacklevel=4)
        return est

    @property
    def evaluated_at_given(self) -> bool:
        return self.optimizer is None

    # ----- basic facts ----------------------------------------------------------------------
    @property
    def spec(self):
        return self.design.spec

    @property
    def reml(self) -> bool:
        return self.method == "REML"

    @property
    def n_obs(self) -> int:
        return self.design.n_obs

    @property
    def n_groups(self) -> int:
        return self.design.n_groups

    @property
    def data_report(self):
        return self.design.data_report

    @property
    def formula(self) -> str:
        return self.spec.to_formula()

    @property
    def singular(self) -> bool:
        """lme4's isSingular: a diagonal element of Lambda below 1e-4 (a variance at, or a
        correlation of, the boundary)."""
        return bool(self.template.boundary(self.theta_internal))

    @property
    def weighted(self) -> bool:
        """Fitted with sampling weights (pseudo-maximum likelihood; `multilevel.weights`)."""
        return self.design.weights is not None

    @property
    def weight_kind(self) -> str | None:
        """"sampling" (pseudo-likelihood, sampling_weights=), "precision" (lme4's weights=,
        precision_weights=) or None."""
        if self.design.precision_weights is not None:
            return "precision"
        return "sampling" if self.design.weights is not None else None

    @property
    def weights_description(self) -> str:
        """Which weights the fit used, in words, with their column(s) ("" for none)."""
        return self.design.weights_description

    def refuse_weighted(self, what: str) -> None:
        """A SpecificationError saying that `what` is not defined under sampling weights."""
        if self.weighted:
            raise SpecificationError(
                f"{what} is not defined for a pseudo-likelihood fit with sampling weights; use the robust "
                "(sandwich) standard errors and Wald tests and intervals."
            )

    @property
    def converged(self) -> bool:
        """True only at a checked optimum (`optimizer.check_optimum`). False for a fit evaluated at
        given variance components (`fit.at(...)`, `ml.fit(..., tau=, sigma2=)`): nothing was
        optimised (`evaluated_at_given` is True; its reports say "evaluated at given variance
        components" and no ConvergenceWarning is raised for it)."""
        return False if self.optimizer is None else bool(self.optimizer.converged)

    # ----- fixed effects --------------------------------------------------------------------
    @property
    def coordinates(self) -> Coordinates:
        return self.design.coords

    @cached_property
    def beta(self) -> pd.Series:
        """gamma-hat (HLM) / beta-hat (lme4): the GLS estimate at the variance components."""
        return pd.Series(self.coordinates.beta(self.solution.beta), index=list(self.design.x_names), name="estimate")

    @cached_property
    def vcov_internal(self) -> np.ndarray:
        """sigma2 A^-1 in the summaries' coordinates (`coordinates`); `vcov` in the data's."""
        return self.sigma2 * self.solution.A_inv

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Model-based Var(gamma-hat) = (sum_j X_j'V_j^-1X_j)^-1 = sigma2 A^-1 (lme4 `vcov`)."""
        names = list(self.design.x_names)
        return pd.DataFrame(self.coordinates.vcov(self.vcov_internal), index=names, columns=names)

    @property
    def gamma_labels(self) -> list[GammaLabel]:
        """HLM's names of the fixed effects (G00, G01, ...), one per column (`labels`)."""
        return gamma_labels(self.design.coefficients)

    # ----- per-unit cross-products in the data's coordinates ----------------------------------
    @cached_property
    def ZtX(self) -> np.ndarray:
        """Z_j'X_j per unit in the data's coordinates (`coordinates.Coordinates.ZtX`)."""
        return self.coordinates.ZtX(self.summaries)

    @cached_property
    def Zty(self) -> np.ndarray:
        """Z_j'y_j per unit in the data's coordinates."""
        return self.coordinates.Zty(self.summaries)

    @cached_property
    def ZtZ(self) -> np.ndarray:
        """Z_j'Z_j per unit in the data's coordinates (`coordinates.Coordinates.ZtZ`)."""
        return self.coordinates.ZtZ(self.summaries)

    # ----- variance components --------------------------------------------------------------
    @cached_property
    def tau_internal(self) -> np.ndarray:
        """sigma2 Lambda Lambda' in the summaries' coordinates (`coordinates`), where a random
        slope's variable far from 0 leaves it well conditioned; `tau` in the data's."""
        lam = self.solution.lam
        return self.sigma2 * lam @ lam.T

    @cached_property
    def tau(self) -> pd.DataFrame:
        """Covariance matrix of the random effects (HLM's Tau; lme4's VarCorr): sigma2 Lambda Lambda'."""
        names = list(self.design.z_names)
        return pd.DataFrame(self.coordinates.tau(self.tau_internal), index=names, columns=names)

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """lme4's `as.data.frame(VarCorr(fit))`: grp, var1, var2, vcov, sdcor (`multi.varcorr_table`)."""
        blocks = self.template.blocks or (tuple(range(self.template.q)),)
        return varcorr_table([(self.design.group, self.design.z_names, blocks, self.tau.to_numpy())], self.sigma2)

    @property
    def groups(self) -> dict[str, int]:
        """The number of levels of the grouping factor (lme4's ngrps)."""
        return {self.design.group: self.n_groups}

    @cached_property
    def theta(self) -> np.ndarray:
        """lme4's theta: the lower-triangular factor of tau / sigma2, term by term, in the data's
        coordinates (`covariance.LambdaTemplate`)."""
        if self.coordinates.z_identity:
            return self.theta_internal
        return self.template.theta_from_tau(self.tau.to_numpy(), self.sigma2)

    @property
    def tau_correlations(self) -> pd.DataFrame:
        """Tau as correlations (HLM's "Tau (as correlations)")."""
        return correlations(self.tau)

    @cached_property
    def random_effects(self) -> pd.DataFrame:
        """lme4's VarCorr as a table: variance and sd of each random effect, then the residual's
        ("Residual": sigma2 and sigma)."""
        var = list(np.diag(self.tau.to_numpy())) + [self.sigma2]
        return pd.DataFrame({"variance": var, "sd": np.sqrt(var)}, index=[*self.design.z_names, "Residual"])

    # ----- likelihood -----------------------------------------------------------------------
    @cached_property
    def deviance(self) -> float:
        """REML criterion for REML fits, -2 log-likelihood for ML (as lme4 reports them)."""
        return float(deviance(self.solution, self.reml, self.sigma2))

    @property
    def loglik(self) -> float:
        return -0.5 * self.deviance

    @property
    def n_params(self) -> int:
        """lme4's count (the df of logLik): covariance parameters + sigma2 + fixed effects."""
        return self.template.size + 1 + len(self.design.x_names)

    @property
    def aic(self) -> float:
        return self.deviance + 2 * self.n_params

    @property
    def bic(self) -> float:
        return self.deviance + float(np.log(self.n_obs)) * self.n_params

    @property
    def hlm_deviance(self) -> float:
        """The deviance as HLM prints it (empirical, ../refs/README.md): lme4's REMLcrit - log(2 pi)
        under REML when p >= 2 (REMLcrit itself when p = 1); under ML, -2 logL - log(2 pi) (checked
        only for p = 1 in a published HLM output)."""
        if self.reml:
            return self.deviance - (LOG_2PI if len(self.design.x_names) >= 2 else 0.0)
        return self.deviance - LOG_2PI

    @property
    def hlm_loglik(self) -> float:
        """HLM's "value of the log-likelihood function": -hlm_deviance / 2."""
        return -0.5 * self.hlm_deviance

    @property
    def hlm_n_params(self) -> int:
        """HLM's "Number of estimated parameters": covariance parameters (REML), plus gammas (ML)."""
        k = self.template.size + 1
        return k if self.reml else k + len(self.design.x_names)


def estimates_of(x: object) -> Estimates | None:
    """The record of a fit: `x` itself when it is one, else its `estimates` (the public `Fit`
    holds one), else None. Lets a lower stage take a user's fit without naming its type."""
    if isinstance(x, Estimates):
        return x
    est = getattr(x, "estimates", None)
    return est if isinstance(est, Estimates) else None


def warn_if_not_converged(est: Estimates, stacklevel: int = 3) -> None:
    """A ConvergenceWarning naming what the check found, when the optimum was not checked."""
    if est.optimizer is not None and not est.optimizer.converged:
        warnings.warn(
            ConvergenceWarning(
                f"The fit of {est.formula} did not reach a checked optimum: {est.optimizer.check}. fit.converged is "
                "False; its estimates are where the optimiser stopped, not maximum-likelihood estimates. "
                "Try centring or rescaling the predictors, or a simpler random-effects structure."
            ),
            stacklevel=stacklevel,
        )


def check_variance_components(tau, sigma2, template: LambdaTemplate, z_names) -> tuple[np.ndarray, float]:
    """(tau, sigma2) as numbers, or a SpecificationError saying which is wrong: tau a q x q
    symmetric positive semidefinite matrix of finite numbers (a DataFrame is taken in the order
    of its labels when they are the random effects), zero between uncorrelated terms; sigma2 a
    positive finite number."""
    z = list(z_names)
    q = template.q
    names = ", ".join(z)
    if isinstance(sigma2, (bool, np.bool_)) or (not isinstance(sigma2, (int, float, np.integer, np.floating)) and not (
        isinstance(sigma2, np.ndarray) and sigma2.ndim == 0 and sigma2.dtype.kind in "iuf"
    )):
        raise SpecificationError(f"sigma2 must be a positive finite number (the level-1 variance), not {sigma2!r}.")
    s2 = float(sigma2)
    if not (np.isfinite(s2) and s2 > 0):
        raise SpecificationError(f"sigma2 must be a positive finite number (the level-1 variance), not {s2!r}.")
    if isinstance(tau, pd.DataFrame) and set(map(str, tau.index)) == set(z) == set(map(str, tau.columns)):
        tau = tau.rename(index=str, columns=str).loc[z, z]
    try:
        t = np.atleast_2d(np.asarray(tau, dtype=float))
    except (TypeError, ValueError) as exc:
        raise SpecificationError(f"tau must be a {q} x {q} matrix of numbers (random effects {names}): {exc}.") from None
    if t.shape != (q, q):
        raise SpecificationError(f"tau must be {q} x {q} (random effects {names}), not {' x '.join(map(str, t.shape))}.")
    if not np.all(np.isfinite(t)):
        raise SpecificationError(f"tau must hold finite numbers (random effects {names}); it has NaN or infinite entries.")
    scale = max(float(np.abs(t).max()), 1e-300)
    if not np.allclose(t, t.T, rtol=0, atol=1e-10 * scale):
        raise SpecificationError(f"tau must be symmetric (random effects {names}): tau[i, j] = tau[j, i].")
    eig = np.linalg.eigvalsh((t + t.T) / 2)
    if eig.min() < -1e-10 * scale:
        raise SpecificationError(
            f"tau must be positive semidefinite (a covariance matrix of the random effects {names}); its smallest "
            f"eigenvalue is {eig.min():.4g} (variances must be >= 0 and each correlation within [-1, 1])."
        )
    block = {c: b for b, cols in enumerate(template.blocks) for c in cols} if template.blocks else {c: 0 for c in range(q)}
    for a in range(q):
        for b in range(a):
            if block.get(a) != block.get(b) and abs(t[a, b]) > 1e-12 * scale:
                raise SpecificationError(
                    f"tau[{z[a]}, {z[b]}] must be 0: the model has uncorrelated random effects {z[a]} and {z[b]} "
                    "((x || g) or separate terms), so their covariance is not a parameter."
                )
    return (t + t.T) / 2, s2
