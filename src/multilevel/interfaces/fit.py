"""The result of a fit: numbers first (numeric tidy tables), reports in `multilevel.report`."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.stats

from multilevel.design.builder import Design
from multilevel.design.summaries import GroupSummaries
from multilevel.diagnostics import hlm_statistics as hs
from multilevel.engine.covariance import LambdaTemplate
from multilevel.engine.objective import Solution, deviance, solve_at
from multilevel.engine.optimizer import OptimizerRecord
from multilevel.engine.ranef import conditional_modes, conditional_variances
from multilevel.errors import DataError, SpecificationError
from multilevel.inference.robust import cr0_vcov
from multilevel.reports.equations import gamma_labels, level_equations, mixed_equation


@dataclass(frozen=True, eq=False)
class Fit:
    """A fitted (or evaluated) two-level linear mixed model.

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
    def at_theta(cls, design, summaries, template, method, theta, optimizer=None, sigma2=None) -> Fit:
        sol = solve_at(summaries, template.lam(theta))
        s2 = sol.sigma2_hat(method == "REML") if sigma2 is None else float(sigma2)
        return cls(design, summaries, template, method, np.asarray(theta, float), s2, sol, optimizer)

    @classmethod
    def at_variance_components(cls, design, summaries, template, method, tau, sigma2: float) -> Fit:
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

    def at(self, tau, sigma2: float) -> Fit:
        """This model evaluated at given tau and sigma2 (see `at_variance_components`)."""
        return Fit.at_variance_components(self.design, self.summaries, self.template, self.method, tau, sigma2)

    def refit(self, method: str) -> Fit:
        """The same model and data estimated by another method ("REML" or "ML"), reusing the
        summaries (no pass over the rows)."""
        from multilevel.engine.optimizer import optimize_theta
        from multilevel.interfaces.api import _method

        method = _method(method)
        if self.weighted and method == "REML":
            raise SpecificationError("A fit with sampling weights cannot be refitted by REML: the pseudo-likelihood is an ML criterion.")
        from multilevel.interfaces.api import warn_if_not_converged

        theta, record = optimize_theta(self.summaries, self.template, method == "REML")
        fit = Fit.at_theta(self.design, self.summaries, self.template, method, theta, record)
        warn_if_not_converged(fit)
        return fit

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

    def _refuse_weighted(self, what: str) -> None:
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
    # The summaries and the solution are in the internal coordinates of `multilevel.coordinates`
    # (X and y shifted); what is expressed in X's terms is mapped back here and in `inference`.
    @property
    def coordinates(self):
        return self.design.coords

    @cached_property
    def beta(self) -> pd.Series:
        """gamma-hat (HLM) / beta-hat (lme4): the GLS estimate at the variance components."""
        return pd.Series(self.coordinates.beta(self.solution.beta), index=list(self.design.x_names), name="estimate")

    @cached_property
    def _vcov_internal(self) -> np.ndarray:
        return self.sigma2 * self.solution.A_inv

    @cached_property
    def _vcov_robust_internal(self) -> np.ndarray:
        return cr0_vcov(self.summaries, self.solution)

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Model-based Var(gamma-hat) = (sum_j X_j'V_j^-1X_j)^-1 = sigma2 A^-1 (lme4 `vcov`)."""
        names = list(self.design.x_names)
        return pd.DataFrame(self.coordinates.vcov(self._vcov_internal), index=names, columns=names)

    @cached_property
    def vcov_robust(self) -> pd.DataFrame:
        """HLM's robust (CR0 sandwich) Var(gamma-hat); see `multilevel.robust`."""
        names = list(self.design.x_names)
        return pd.DataFrame(self.coordinates.vcov(self._vcov_robust_internal), index=names, columns=names)

    @cached_property
    def _ZtX(self) -> np.ndarray:
        """Z_j'X_j per unit in the data's coordinates (`coordinates.Coordinates.ZtX`)."""
        return self.coordinates.ZtX(self.summaries)

    @cached_property
    def _Zty(self) -> np.ndarray:
        """Z_j'y_j per unit in the data's coordinates."""
        return self.coordinates.Zty(self.summaries)

    @cached_property
    def hlm_df(self) -> pd.Series:
        d = self.design
        return pd.Series(hs.hlm_fixed_df(d.coefficients, d.n_obs, d.n_groups, len(d.x_names)), index=list(d.x_names))

    def _table(self, se: np.ndarray) -> pd.DataFrame:
        est = self.beta.to_numpy()
        t = est / se
        df = self.hlm_df.to_numpy()
        p = 2 * scipy.stats.t.sf(np.abs(t), df)
        return pd.DataFrame({"estimate": est, "se": se, "df": df, "t": t, "p": p}, index=list(self.design.x_names))

    @cached_property
    def fixed(self) -> pd.DataFrame:
        """Fixed effects with HLM's approximate df, t and two-sided p, and the SEs of `coef_table()`'s
        default: model-based SEs (lme4's vcov), or, for a fit with sampling weights
        (pseudo-likelihood), the robust CR0 sandwich SEs, as the model-based ones are not valid
        there (the same numbers as `fit.robust` and `coef_table()`)."""
        return self.robust if self.weighted else self.model_based

    @cached_property
    def model_based(self) -> pd.DataFrame:
        """Fixed effects with the model-based SEs (lme4's vcov), HLM's df, t and p, for every fit
        (HLM's first fixed-effect table; under sampling weights these SEs are not valid, and HLM's
        report prints them with a note saying so)."""
        return self._table(np.sqrt(np.diag(self.vcov.to_numpy())))

    @cached_property
    def robust(self) -> pd.DataFrame:
        """Fixed effects with HLM's robust (CR0) SEs, the same df."""
        return self._table(np.sqrt(np.diag(self.vcov_robust.to_numpy())))

    # ----- inference (multilevel.inference) ----------------------------------------------------
    @cached_property
    def _variance_derivatives(self):
        from multilevel.inference.variance_derivatives import variance_derivatives

        return variance_derivatives(self.summaries, self.solution, self.template, self.sigma2, self.reml, self.design.z_names)

    @cached_property
    def _kenward_roger(self):
        from multilevel.inference.kenward_roger import KenwardRoger

        return KenwardRoger(self._variance_derivatives)

    @cached_property
    def _cr2(self):
        from multilevel.inference.robust import cr2

        return cr2(self.summaries, self.solution)

    @cached_property
    def _cr0_pieces(self):
        from multilevel.inference.robust import cr2

        return cr2(self.summaries, self.solution, adjust=False)

    def coef_table(self, df: str | None = None, se: str | None = None, level: float = 0.95) -> pd.DataFrame:
        """Fixed effects with estimate, se, df, t, p, ci_low, ci_high for a df method ("hlm" by
        default; "residual", "between-within", "satterthwaite", "kenward-roger", "bell-mccaffrey",
        "infinite") and an SE method ("model" by default, "CR0", "CR1", "CR2"; CR2 defaults to
        Bell-McCaffrey df). See `multilevel.inference`."""
        from multilevel.inference import coefficients as inference

        df, se = inference.resolve(self, df, se)
        p = len(self.beta)
        tab = inference.t_table(self, np.eye(p), np.zeros(p), list(self.design.x_names), df, se, level)
        tab.index.name = None
        return tab

    def _contrast(self, contrast, rhs):
        """(L, rhs, labels) from text or a matrix; `rhs` (one value, or one per row) replaces the
        right-hand sides of the text (0 for a matrix)."""
        from multilevel.inference.contrasts import parse_contrasts

        if isinstance(contrast, (list, tuple)) and contrast and all(isinstance(c, str) for c in contrast):
            # a list of constraints (each one or more, comma-separated) is one joint contrast
            contrast = ", ".join(c.strip() for c in contrast)
        elif isinstance(contrast, (list, tuple)) and any(isinstance(c, str) for c in contrast):
            raise SpecificationError(
                "A contrast is text (\"sector = 0, meanses = 0\"), a list of such texts, or a matrix of numbers; "
                f"this list mixes text with {', '.join(sorted({type(c).__name__ for c in contrast if not isinstance(c, str)}))}."
            )
        if isinstance(contrast, str):
            L, r, labels = parse_contrasts(contrast, self.design.x_names, tuple(g.label for g in self.gamma_labels))
        else:
            L = np.atleast_2d(np.asarray(contrast, dtype=float))
            if L.ndim != 2 or L.shape[1] != len(self.design.x_names):
                raise SpecificationError(
                    f"The contrast matrix has {L.shape[-1]} columns; this model has {len(self.design.x_names)} fixed effects "
                    f"({', '.join(self.design.x_names)})."
                )
            labels = [" + ".join(f"{v:g}*{n}" for v, n in zip(row, self.design.x_names) if v) for row in L]
            r = np.zeros(L.shape[0])
        if rhs is not None:
            given = np.atleast_1d(np.asarray(rhs, dtype=float))
            if given.size not in (1, L.shape[0]):
                raise SpecificationError(f"rhs has {given.size} values for {L.shape[0]} contrast rows; give one value per row (or one for all).")
            r = np.broadcast_to(given, (L.shape[0],)).copy()
        return L, r, labels

    def test(self, contrast, rhs=None, df: str | None = None, se: str | None = None, level: float = 0.95):
        """Joint test of L gamma = rhs (a matrix, text such as "sector = 0, sector:cses = 0", or a list
        of such texts, tested jointly):
        Wald chi-square (HLM's General Linear Hypothesis test) and F with the chosen df."""
        from multilevel.inference import coefficients as inference

        df, se = inference.resolve(self, df, se)
        L, r, labels = self._contrast(contrast, rhs)
        return inference.hypothesis_test(self, L, r, labels, df, se, level)

    def estimate(self, contrast, rhs=None, df: str | None = None, se: str | None = None, level: float = 0.95) -> pd.DataFrame:
        """Linear combinations, one row each ("meanses - cses" is the contextual effect; text, a list
        of texts or a matrix):
        estimate, se, df, t, p and the confidence interval."""
        from multilevel.inference import coefficients as inference

        df, se = inference.resolve(self, df, se)
        L, r, labels = self._contrast(contrast, rhs)
        return inference.t_table(self, L, np.asarray(r, dtype=float), labels, df, se, level)

    def effect_sizes(self, df: str | None = None, level: float = 0.95):
        """ICCs, design effects and effective N, total and Rights-Sterba R2, d and r of each fixed
        effect (from t and its df), plausible-value ranges and the lecture's "true" intercept
        variance (`multilevel.effect_sizes`)."""
        from multilevel.diagnostics.effect_sizes import effect_sizes

        return effect_sizes(self, df, level)

    def confint(self, method: str = "wald", level: float = 0.95, *, which: str = "all", n_boot: int = 1000,
                seed: int | None = None, progress: bool = True, n_jobs: int | None = None) -> pd.DataFrame:
        """Confidence intervals for the fixed effects and the variance components (sd/cor/sigma
        scale, as lme4): method "wald", "profile" or "bootstrap" (`multilevel.intervals`); which:
        "all", "fixed" (the fixed effects) or "variance" (the variance components), for every
        method. Bootstrap: n_boot samples (percentile intervals need many: a MultilevelWarning
        below 100), `seed`, `n_jobs` threads (`bootstrap`)."""
        from multilevel.inference import intervals
        from multilevel.inference.coefficients import check_level

        check_level(level)
        if not isinstance(method, str):
            raise SpecificationError(f"method must be 'wald', 'profile' or 'bootstrap', not {method!r}.")
        intervals.check_which(which)
        m = method.lower()
        if m in ("profile", "bootstrap"):
            self._refuse_weighted(f"A {m} interval")
        if m == "wald":
            return intervals.select(self, intervals.wald(self, level), which)
        if m == "profile":
            return intervals.profile(self, level, which)
        if m == "bootstrap":
            intervals.warn_few_replicates(n_boot)
            return intervals.select(self, self.bootstrap(n_boot, seed, progress, n_jobs).intervals(level), which)
        raise SpecificationError(f"method={method!r} is not known; use 'wald', 'profile' or 'bootstrap'.")

    def bootstrap(self, n_boot: int = 1000, seed: int | None = None, progress: bool = True, n_jobs: int | None = None):
        """Parametric bootstrap: refits on n_boot samples from this fitted model, on `n_jobs`
        processes (1 by default); the same result for any n_jobs (`intervals.bootstrap`)."""
        from multilevel.inference.intervals import bootstrap

        self._refuse_weighted("The parametric bootstrap")
        return bootstrap(self, n_boot, seed, progress, n_jobs)

    # ----- variance components --------------------------------------------------------------
    @cached_property
    def tau(self) -> pd.DataFrame:
        """Covariance matrix of the random effects (HLM's Tau; lme4's VarCorr): sigma2 Lambda Lambda'."""
        lam = self.solution.lam
        names = list(self.design.z_names)
        return pd.DataFrame(self.coordinates.tau(self.sigma2 * lam @ lam.T), index=names, columns=names)

    @cached_property
    def theta(self) -> np.ndarray:
        """lme4's theta: the lower-triangular factor of tau / sigma2, term by term, in the data's
        coordinates (`covariance.LambdaTemplate`)."""
        if self.coordinates.z_identity:
            return self.theta_internal
        return self.template.theta_from_tau(self.tau.to_numpy(), self.sigma2)

    @cached_property
    def _ZtZ(self) -> np.ndarray:
        """Z_j'Z_j per unit in the data's coordinates (`coordinates.Coordinates.ZtZ`)."""
        return self.coordinates.ZtZ(self.summaries)

    @cached_property
    def _psi_vcov(self) -> np.ndarray:
        """The asymptotic covariance of psi = (tau elements at theta's positions, sigma2) in the
        data's coordinates: tau = S_z tau' S_z' is linear in tau', so Var = K Var' K'."""
        vd = self._variance_derivatives
        V = vd.asymptotic_vcov
        if self.coordinates.z_identity:
            return V
        t = self.template
        m = len(t.rows)
        K = np.eye(V.shape[0])
        for i, (r, c) in enumerate(zip(t.rows, t.cols)):
            E = np.zeros((t.q, t.q))
            E[r, c] = E[c, r] = 1.0
            M = self.coordinates.tau(E)
            K[:m, i] = [M[a, b] for a, b in zip(t.rows, t.cols)]
        return K @ V @ K.T

    @property
    def tau_correlations(self) -> pd.DataFrame:
        """Tau as correlations (HLM's "Tau (as correlations)")."""
        from multilevel.engine.covariance import correlations

        return correlations(self.tau)

    @cached_property
    def _unit_ols(self) -> hs.UnitOLS:
        d = self.design
        return hs.unit_ols(self.summaries, d.coefficients, d.z_names, self.beta.to_numpy(), self.sigma2, self._ZtX, self._Zty,
                           self._ZtZ, self.coordinates.ZtZ_inv)

    @property
    def n_units_sufficient(self) -> int:
        """J*: units whose random-coefficient design has full rank (enter reliability and chi-square)."""
        return int(self._unit_ols.used.sum())

    @cached_property
    def reliability(self) -> pd.Series:
        """HLM's reliability of each random level-1 coefficient (R&B eq. 3.58)."""
        r = hs.reliability(self._unit_ols, np.diag(self.tau.to_numpy()))
        return pd.Series(r, index=list(self.design.z_names), name="reliability")

    @cached_property
    def variance_components(self) -> pd.DataFrame:
        """HLM's "Final estimation of variance components": sd, variance, df, chi-square, p per
        random coefficient, and the level-1 residual (sd and variance only)."""
        d = self.design
        chi, df = hs.chi_square(self._unit_ols, d.coefficients, d.z_names)
        var = np.diag(self.tau.to_numpy())
        tab = pd.DataFrame(
            {"sd": np.sqrt(var), "variance": var, "df": df, "chisq": chi, "p": scipy.stats.chi2.sf(chi, df)},
            index=list(d.z_names),
        )
        resid = pd.DataFrame({"sd": [np.sqrt(self.sigma2)], "variance": [self.sigma2], "df": [np.nan], "chisq": [np.nan], "p": [np.nan]}, index=["level-1"])
        return pd.concat([tab, resid])

    # ----- empirical Bayes ------------------------------------------------------------------
    @cached_property
    def ranef(self) -> pd.DataFrame:
        """Empirical Bayes residuals u*_j (lme4 `ranef`), units by random coefficient."""
        from multilevel.diagnostics.residual_files import unit_ids

        u = self.coordinates.ranef(conditional_modes(self.summaries, self.solution))
        # indexed by the unit ids with their own type (`design.units`): df[g].map(fit.ranef[...]) works
        return pd.DataFrame(u, index=pd.Index(unit_ids(self), name=self.design.group), columns=list(self.design.z_names))

    @cached_property
    def ranef_condvar(self) -> np.ndarray:
        """Var(u_j | y, gamma-hat) per unit (J, q, q) (lme4 condVar; HLM's D_j)."""
        return self.coordinates.tau(conditional_variances(self.solution, self.sigma2))

    @cached_property
    def _eb(self) -> dict:
        from multilevel.diagnostics.residual_files import eb_quantities

        return eb_quantities(self)

    @property
    def ranef_pev(self) -> np.ndarray:
        """Var(u_j - u*_j) per unit (J, q, q): condVar plus the uncertainty of gamma-hat (Henderson's
        prediction error variance; HLM's posterior variance of the EB residuals)."""
        return self._eb["PV"]

    @property
    def eb_coefficients(self) -> pd.DataFrame:
        """HLM's EB coefficients beta*_j = W_j gamma + u*_j, units by random coefficient."""
        return pd.DataFrame(self._eb["EC"], index=self.ranef.index, columns=self.ranef.columns)

    def unit_ols(self) -> pd.DataFrame:
        """HLM's "Level-1 OLS regressions": each unit's OLS estimates of the random coefficients
        (with the fixed level-1 coefficients' part removed), its n, and whether it has sufficient data
        (Z_j of full rank); units without are NaN."""
        ols = self._unit_ols
        z = list(self.design.z_names)
        est = np.full((self.n_groups, len(z)), np.nan)
        est[ols.used] = ols.beta_hat
        out = pd.DataFrame(est, index=self.ranef.index, columns=z)
        out.insert(0, "n", self.summaries.n.astype(int))
        out["sufficient"] = ols.used
        return out

    def residuals(self, level: int = 2, extra=()) -> pd.DataFrame:
        """HLM's residual files as tables: level=2 (one row per unit: EB and OLS residuals, fitted
        values, EB coefficients, posterior variances, MDIST, CHIPCT, log residual SDs, level-2
        predictors, `extra` columns) or level=1 (one row per row used). See `residual_files`."""
        from multilevel.diagnostics import residual_files as rf

        if level == 2:
            return rf.level2_table(self, tuple(extra))
        if level == 1:
            return rf.level1_table(self, tuple(extra))
        raise SpecificationError(f"level must be 1 or 2, not {level!r}.")

    def save_residuals(self, path, level: int = 2, extra=()):
        """Write a residual file; the format follows the extension (.csv, .parquet, .sav, .dta)."""
        from multilevel.diagnostics.residual_files import save

        return save(self.residuals(level, extra), path)

    def homogeneity_test(self, min_df: int = 10) -> dict:
        """HLM's "Test of homogeneity of level-1 variance" (R&B eq. 9.5-9.6), over the units with
        at least `min_df` residual df in their own OLS (`residual_files.homogeneity_test`)."""
        from multilevel.diagnostics.residual_files import homogeneity_test

        return homogeneity_test(self, min_df)

    def plot(self, kind: str, path=None, **options):
        """A diagnostic plot or model graph as a matplotlib Figure (saved to `path` when given):
        "caterpillar", "qq", "residual-sd", "eb" (variable=...), "model" (x=..., lines={...}),
        "residuals-fitted". See `multilevel.plots`."""
        from multilevel.diagnostics.plots import plot

        return plot(self, kind, path, **options)

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
        return self.deviance + np.log(self.n_obs) * self.n_params

    @property
    def hlm_deviance(self) -> float:
        """The deviance as HLM prints it (see hlm_statistics.hlm_deviance)."""
        return hs.hlm_deviance(self.deviance, self.reml, len(self.design.x_names))

    @property
    def hlm_n_params(self) -> int:
        """HLM's "Number of estimated parameters": covariance parameters (REML), plus gammas (ML)."""
        k = self.template.size + 1
        return k if self.reml else k + len(self.design.x_names)

    # ----- the model in words ---------------------------------------------------------------
    @property
    def level_equations(self) -> list[str]:
        return level_equations(self.spec.outcome, self.design.coefficients)

    @property
    def mixed_equation(self) -> str:
        return mixed_equation(self.spec.outcome, self.design.coefficients)

    @property
    def gamma_labels(self):
        return gamma_labels(self.design.coefficients)

    # ----- reports (formatting only) --------------------------------------------------------
    def report(self, tests=(), effect_sizes: bool = True, homogeneity: bool = False, min_df: int = 10) -> str:
        """HLM's report as text. `tests`: contrasts (text or matrices, tested with HLM's robust
        covariance as HLM does) or `fit.test(...)` results, printed as HLM's General Linear
        Hypothesis tests; an effect-size section closes the report. `homogeneity`: add HLM's test
        of homogeneous level-1 variance over the units with at least `min_df` residual df."""
        from multilevel.reports.hlm import hlm_report

        done = [t if hasattr(t, "chisq") else self.test(t, se="CR0") for t in tests]
        return hlm_report(self, done, effect_sizes, self.homogeneity_test(min_df) if homogeneity else None)

    def summary(self, df: str | None = None) -> str:
        """An lme4/lmerTest-style summary as text (fixed-effect df by `df`: Satterthwaite by default,
        HLM's df with the robust SEs under sampling weights, for which Satterthwaite is not defined)."""
        from multilevel.reports.lme4 import lme4_summary

        return lme4_summary(self, df if df is not None else ("hlm" if self.weighted else "satterthwaite"))

    def to_html(self, path=None, title: str | None = None, plots: bool = True) -> str:
        """One self-contained HTML page: the model in both forms, every table of the HLM report and
        the lme4-style summary, the data report, effect sizes and the plots embedded. Written to
        `path` when given; the HTML is returned."""

        from multilevel.output import output_path
        from multilevel.reports.html import html_document

        target = None if path is None else output_path(path, "The HTML page")
        page = html_document(self, title, plots)
        if target is not None:
            try:
                target.write_text(page, encoding="utf-8")
            except OSError as exc:
                raise DataError(f"Cannot write the HTML page to '{target}': {exc.strerror or exc}.") from None
        return page

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        # an evaluated fit (fit.at) optimised nothing: not "NOT converged"
        state = "" if self.converged or self.evaluated_at_given else "; NOT converged (see fit.optimizer)"
        return f"<multilevel.Fit {self.method}: {self.formula}; N = {self.n_obs}, J = {self.n_groups}{state}>"

    def _repr_html_(self) -> str:
        from multilevel.reports.html import html_report

        return html_report(self)


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
