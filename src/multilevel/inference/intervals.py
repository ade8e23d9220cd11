"""Confidence intervals: Wald, profile likelihood and parametric bootstrap (lme4's `confint`).

Variance components are reported as lme4 does: the SD of each random effect
("sd_<name>|<group>"), the correlations ("cor_<a>.<b>|<group>") and the residual SD ("sigma").

* Wald: fixed effects from `coef_table`; variance components on a scale without bounds, then
  back-transformed, so that an interval never leaves the parameter's range: log(sd) and log(sigma)
  +/- z SE (the interval sd * exp(+/- z SE(sd)/sd), always > 0) and Fisher's z = atanh(cor) +/- z SE
  (the interval tanh(atanh(cor) +/- z SE(cor)/(1 - cor^2)), always inside (-1, 1)); SE(sd), SE(cor)
  from the inverse Hessian of the deviance by the delta method. An interval of estimate +/- z SE on
  the sd/cor scale itself runs below 0 or beyond +/-1 whenever the SE is large (HSB's model 4: an
  SD from -0.34, a correlation to 1.46); lme4's confint(method="Wald") prints NA for these
  parameters, and truncating at the bound would claim a boundary value the data do not support.
  These intervals are still poor near a boundary (use "profile" or "bootstrap" there).
* Profile: the set {phi_k : D_k(phi_k) - D_min <= chi2_1(level)}, D_k the deviance minimised over
  all other parameters with phi_k held fixed. Variance components use the fit's own criterion
  (REML or ML; lme4's `profile` silently refits a REML fit by ML, so its intervals equal ours for
  ML fits only); fixed effects use the ML deviance, with the other fixed effects and the variance
  components profiled out (for a REML fit, on its ML refit, as lme4 does).
* Parametric bootstrap: B samples y* = X beta + Z u* + e* from the fitted model; each refit reuses
  the design (only the y-parts of the summaries change: one bincount per column), percentile
  intervals, a seed, and a progress line.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from multilevel.design.columns import Columns
from multilevel.design.coordinates import Coordinates
from multilevel.design.summaries import GroupSummaries
from multilevel.display import ShownAsTables
from multilevel.engine.covariance import LambdaTemplate
from multilevel.engine.objective import deviance, solve_at
from multilevel.engine.optimizer import optimize_theta
from multilevel.errors import MultilevelWarning, SpecificationError, close_matches
from multilevel.inference import distributions as dist
from multilevel.parallel import default_jobs


# ----- the sd/cor/sigma parameterisation -----------------------------------------------------
@dataclass(frozen=True)
class VarianceScale:
    names: tuple[str, ...]
    kinds: tuple[str, ...]  # "sd", "cor", "sigma"
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @classmethod
    def of(cls, fit) -> VarianceScale:
        z, g = fit.design.z_names, fit.design.group
        names, kinds, rows, cols = [], [], [], []
        for r, c in zip(fit.template.rows, fit.template.cols):
            if r == c:
                names.append(f"sd_{z[r]}|{g}")
                kinds.append("sd")
            else:
                names.append(f"cor_{z[r]}.{z[c]}|{g}")
                kinds.append("cor")
            rows.append(r)
            cols.append(c)
        return cls(tuple(names) + ("sigma",), tuple(kinds) + ("sigma",), tuple(rows), tuple(cols))

    def values(self, tau: np.ndarray, sigma2: float) -> np.ndarray:
        sd = np.sqrt(np.diag(tau))
        out = []
        for r, c in zip(self.rows, self.cols):
            out.append(sd[r] if r == c else (tau[r, c] / (sd[r] * sd[c]) if sd[r] * sd[c] > 0 else 0.0))
        return np.array(out + [np.sqrt(sigma2)])

    def tau_sigma2(self, phi: np.ndarray, q: int) -> tuple[np.ndarray, float]:
        sd = np.zeros(q)
        for v, r, c in zip(phi, self.rows, self.cols):
            if r == c:
                sd[r] = v
        tau = np.diag(sd**2)
        for v, r, c in zip(phi, self.rows, self.cols):
            if r != c:
                tau[r, c] = tau[c, r] = v * sd[r] * sd[c]
        return tau, float(phi[-1] ** 2)

    def bounds(self) -> list[tuple[float, float]]:
        return [(0.0, np.inf) if k in ("sd", "sigma") else (-1.0, 1.0) for k in self.kinds]


def _deviance_at_phi(fit, scale: VarianceScale, phi: np.ndarray) -> float:
    tau, s2 = scale.tau_sigma2(phi, fit.template.q)
    if s2 <= 0:
        return np.inf
    try:
        theta = fit.template.theta_from_tau(fit.coordinates.tau_internal(tau), s2)
        value = float(deviance(solve_at(fit.summaries, fit.template.lam(theta)), fit.reml, s2))
    except (ValueError, np.linalg.LinAlgError, ZeroDivisionError, FloatingPointError):
        # correlations that do not form a covariance matrix, or a system too ill-conditioned to
        # factor (variances far beyond the data's): no deviance there, as if infinitely bad
        return np.inf
    return value if np.isfinite(value) else np.inf


# ----- Wald --------------------------------------------------------------------------------
def wald(inf, level: float = 0.95) -> pd.DataFrame:
    """Wald intervals (module doc) from the fit's `inference.view.Inference`."""
    fit = inf.est
    z = dist.norm_ppf(0.5 + level / 2)
    fx = inf.coef_table(df="infinite", level=level)
    if fit.weighted:  # the observed information of a pseudo-likelihood does not give variances
        return _frame({n: (e, lo, hi) for n, e, lo, hi in zip(fx.index, fx["estimate"], fx["ci_low"], fx["ci_high"])}, level)
    rows = {n: (e, lo, hi) for n, e, lo, hi in zip(fx.index, fx["estimate"], fx["ci_low"], fx["ci_high"])}
    scale = VarianceScale.of(fit)
    phi = scale.values(fit.tau.to_numpy(), fit.sigma2)
    vd = inf.variance_derivatives
    # delta method from psi = (tau elements, sigma2) to (sd, cor, sigma):
    # d sd_a/d tau_aa = 1/(2 sd_a); d cor_ab/d tau_ab = 1/(sd_a sd_b), d cor_ab/d tau_aa = -cor_ab/(2 tau_aa);
    # d sigma/d sigma2 = 1/(2 sigma). Undefined (NaN) at a zero SD.
    tau = fit.tau.to_numpy()
    sd = np.sqrt(np.diag(tau))
    index = {(r, c): i for i, (r, c) in enumerate(zip(fit.template.rows, fit.template.cols))}
    Jac = np.zeros((len(phi), len(vd.psi)))
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, (r, c) in enumerate(zip(scale.rows, scale.cols)):
            if r == c:
                Jac[i, index[(r, r)]] = 1 / (2 * sd[r])
            else:
                Jac[i, index[(r, c)]] = 1 / (sd[r] * sd[c])
                Jac[i, index[(r, r)]] = -phi[i] / (2 * tau[r, r])
                Jac[i, index[(c, c)]] = -phi[i] / (2 * tau[c, c])
        Jac[-1, -1] = 1 / (2 * np.sqrt(fit.sigma2))
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.clip(np.diag(Jac @ inf.psi_vcov @ Jac.T), 0, None))
    if not vd.identified:
        se = np.full_like(se, np.nan)  # no Wald interval for parameters the data do not identify
    for n, kind, e, s in zip(scale.names, scale.kinds, phi, se):
        rows[n] = (e, *_bounded_wald(kind, e, s, z))
    return _frame(rows, level)


def _bounded_wald(kind: str, estimate: float, se: float, z: float) -> tuple[float, float]:
    """The Wald interval of an SD (kind "sd", "sigma": on the log scale) or a correlation ("cor":
    on Fisher's z scale), back-transformed; NaN where the transform is undefined (an SD of 0, a
    correlation of +/-1: the estimate is on the boundary, where Wald intervals do not apply)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "cor":
            if not abs(estimate) < 1:
                return np.nan, np.nan
            centre, half = np.arctanh(estimate), z * se / (1 - estimate**2)  # d atanh(r)/dr = 1/(1 - r^2)
            return float(np.tanh(centre - half)), float(np.tanh(centre + half))
        if not estimate > 0:
            return np.nan, np.nan
        centre, half = np.log(estimate), z * se / estimate  # d log(s)/ds = 1/s
        return float(np.exp(centre - half)), float(np.exp(centre + half))


def _frame(rows: dict, level: float) -> pd.DataFrame:
    a = (1 - level) / 2
    out = pd.DataFrame(rows, index=["estimate", f"{a:.1%}", f"{1 - a:.1%}"]).T
    out.columns = ["estimate", "ci_low", "ci_high"]
    return out


# ----- profile -----------------------------------------------------------------------------
def _profile_vc(fit, scale: VarianceScale, k: int, target: float, dmin: float, phi_hat: np.ndarray, level_crit: float):
    from scipy import optimize  # here, not at import: it costs a quarter of a second, more than a small fit

    bounds = scale.bounds()
    others = [i for i in range(len(phi_hat)) if i != k]
    start = {"x": phi_hat[others].copy()}

    def prof(v: float) -> float:
        def obj(x):
            phi = phi_hat.copy()
            phi[others] = x
            phi[k] = v
            return _deviance_at_phi(fit, scale, phi)

        res = optimize.minimize(obj, start["x"], method="L-BFGS-B", bounds=[bounds[i] for i in others],
                                options={"ftol": 1e-14, "gtol": 1e-9, "maxiter": 500})
        if np.isfinite(res.fun):
            start["x"] = res.x
        return res.fun - dmin - level_crit

    return prof


def _search(g, est: float, step: float, lo_lim: float, hi_lim: float, direction: int) -> tuple[float, str]:
    """(bound, why it is NaN or ''): where g (negative at est) crosses 0, walking away from est in
    `direction`; the limit of the parameter's range if it never does (e.g. an SD whose profile
    stays below the cut at 0). Where g cannot be computed (+inf or NaN: no deviance there) the step
    is halved back towards the last point computed; a bound not located is NaN, with the reason."""
    if (direction < 0 and est <= lo_lim) or (direction > 0 and est >= hi_lim):
        return float(est), ""  # the estimate is on the boundary: so is this bound
    from scipy import optimize  # here, not at import (`_profile_vc`)

    a = est
    for _ in range(200):
        b = min(max(a + direction * step, lo_lim), hi_lim)
        if b == a:
            break
        gb = g(b)
        if not np.isfinite(gb) and step > 1e-8 * max(abs(a), 1.0):
            step /= 2  # no deviance at b: come back towards a
            continue
        if np.isfinite(gb) and gb > 0:
            lo, hi = sorted((a, b))
            try:
                return float(optimize.brentq(g, lo, hi, xtol=1e-10, rtol=1e-10)), ""
            except (ValueError, RuntimeError):
                return np.nan, (f"the profile is not monotone between {lo:.6g} and {hi:.6g} (the deviance could not "
                                "be minimised reliably over the other parameters there)")
        if not np.isfinite(gb):
            return np.nan, f"the deviance cannot be computed beyond {a:.6g}"
        if b in (lo_lim, hi_lim):
            return b, ""
        a = b
        step *= 1.6
    return np.nan, f"the profile does not reach the cut within the parameter's range (searched to {a:.6g})"


WHICH = ("all", "variance", "fixed")


def check_which(which) -> None:
    """which= of confint: "all", "variance" (the variance components) or "fixed" (the fixed effects)."""
    if not isinstance(which, str) or which not in WHICH:
        raise SpecificationError(
            f"which={which!r} is not known: use 'all', 'variance' (the variance components) or 'fixed' (the fixed effects)."
            + close_matches(str(which), WHICH)
        )


def select(fit, table: pd.DataFrame, which: str) -> pd.DataFrame:
    """The rows of an interval table that `which` asks for (fixed effects: the design's x_names)."""
    check_which(which)
    if which == "all":
        return table
    fixed = table.index.isin(list(fit.design.x_names))
    return table[fixed] if which == "fixed" else table[~fixed]


def profile(inf, level: float = 0.95, which: str = "all") -> pd.DataFrame:
    """Profile-likelihood intervals (module doc); which: "all", "variance" or "fixed". A deviance
    that cannot be computed (a tau that is not a covariance matrix, a singular system) counts as
    +inf; a bound the profile does not locate (it does not reach the cut within the parameter's
    range, or the search fails) is NaN, with a MultilevelWarning saying which and why."""
    check_which(which)
    with np.errstate(all="ignore"):  # the profile walks into singular regions on purpose
        return _profile(inf, level, which)


def _profile(inf, level: float, which: str) -> pd.DataFrame:
    fit = inf.est
    crit = float(dist.chi2_ppf(level, 1))
    rows: dict[str, tuple[float, float, float]] = {}
    notes: list[str] = []

    def note(name: str, side: str, why: str) -> None:
        if why:
            notes.append(f"{name} ({side} bound): {why}")

    far_slope = _slope_far_from_zero(fit)
    far_fixed = _far_from_zero(fit)
    if which in ("all", "variance"):
        scale = VarianceScale.of(fit)
        phi_hat = scale.values(fit.tau.to_numpy(), fit.sigma2)
        dmin = _deviance_at_phi(fit, scale, phi_hat)
        wald_tab = wald(inf, level)
        for k, name in enumerate(scale.names):
            if far_slope:
                # the random slope's variable lies far from 0 (`coordinates`): in the data's sd/cor
                # the intercept's variance at 0 and its correlation with the slope are near-singular
                # (|cor| ~ 1), and the profile's searches there are not reliable
                rows[name] = (phi_hat[k], np.nan, np.nan)
                note(name, "both", "not profiled: a random slope's variable lies far from 0, where the sd/cor "
                     "parameters are near-singular; centre it (cgm()) to profile them, or use Wald or bootstrap intervals")
                continue
            lo_lim, hi_lim = scale.bounds()[k]
            width = wald_tab.loc[name, "ci_high"] - wald_tab.loc[name, "estimate"]
            step = max(width / 2, 1e-3 * max(abs(phi_hat[k]), 1.0)) if np.isfinite(width) and width > 0 else 0.1
            # a Wald SE near the boundary can be astronomically wide (1e258): start on the
            # parameter's own scale (the search grows the step by 1.6 each time anyway)
            step = min(step, 0.5 if scale.kinds[k] == "cor" else max(abs(phi_hat[k]), 0.1 * phi_hat[-1]))
            g = _profile_vc(fit, scale, k, phi_hat[k], dmin, phi_hat, crit)
            lo, why = _search(g, phi_hat[k], step, lo_lim, hi_lim, -1)
            note(name, "lower", why)
            g = _profile_vc(fit, scale, k, phi_hat[k], dmin, phi_hat, crit)
            hi, why = _search(g, phi_hat[k], step, lo_lim, hi_lim, +1)
            note(name, "upper", why)
            rows[name] = (phi_hat[k], lo, hi)
    if which in ("all", "fixed"):
        ml_fit = fit if not fit.reml else fit.refit("ML")
        dmin = ml_fit.deviance
        se = np.sqrt(np.diag(ml_fit.vcov.to_numpy()))
        theta0 = ml_fit.theta
        for k, name in enumerate(fit.design.x_names):
            b_hat = float(ml_fit.beta.iloc[k])
            if far_fixed:
                rows[name] = (float(fit.beta.iloc[k]), np.nan, np.nan)
                note(name, "both", f"not profiled: {far_fixed} lies so far from 0 that the data's own sums lose more than "
                     "8 digits; centre it (cgm()) to profile, or use Wald or bootstrap intervals")
                continue
            step = 1.5 * se[k] if np.isfinite(se[k]) and se[k] > 0 else 1e-3 * max(abs(b_hat), 1.0)
            g = _fixed_profile(ml_fit, k, dmin, crit, theta0)
            lo, why = _search(g, b_hat, step, -np.inf, np.inf, -1)
            note(name, "lower", why)
            hi, why = _search(g, b_hat, step, -np.inf, np.inf, +1)
            note(name, "upper", why)
            rows[name] = (float(fit.beta.iloc[k]), lo, hi)
    out = _frame(rows, level)
    if notes:
        import warnings

        warnings.warn(MultilevelWarning("Profile intervals: some bounds are NaN: " + "; ".join(notes) + "."), stacklevel=4)
        out.attrs["notes"] = notes
    return out


#: the fixed-effect profile holds gamma_k in the data's own sums (`coordinates.original_C`); they
#: lose (mean / SD)^2 ulps of a column, more than 8 digits beyond this ratio
FAR = 1e4


def _offset_in_sds(total: np.ndarray, i0: int, c: int, shift: float) -> float:
    """|mean| / SD of column c of the data, from totals of the shifted columns (column c shifted
    by `shift`; i0 the column of ones): 0 when it does not vary."""
    n = total[i0, i0]
    if n <= 0:
        return 0.0
    m_int = total[c, i0] / n  # the shifted column's mean (about 0)
    var = total[c, c] / n - m_int * m_int
    return abs(shift + m_int) / np.sqrt(var) if var > 0 else 0.0


def _far_from_zero(fit) -> str:
    """The first fixed-effect column whose mean exceeds FAR of its SD ('' if none)."""
    coords, XtX = fit.coordinates, fit.summaries.XtX_total
    i0 = coords.intercept
    if i0 is None:
        return ""
    for c, name in enumerate(fit.design.x_names):
        if c != i0 and _offset_in_sds(XtX, i0, c, coords.shift[c]) > FAR:
            return f"'{name}'"
    return ""


#: a random slope's variable whose mean exceeds this many SDs: the data's sd/cor parameters are
#: near-singular there (measured: fine at 60 SDs, wrong at 1.5e4)
FAR_SLOPE = 1e3


def _slope_far_from_zero(fit) -> bool:
    coords, s = fit.coordinates, fit.summaries
    if coords.z_identity:
        return False
    i0 = coords.z_intercept
    return any(c != i0 and coords.z_shift[c] != 0 and _offset_in_sds(s._total, i0, c, coords.z_shift[c]) > FAR_SLOPE
               for c in range(s.q))


def fixed_summaries(s: GroupSummaries, k: int, b: float) -> GroupSummaries:
    """Summaries of [Z, X without column k, y - b x_k]: a linear map T of the columns, C' = T'CT."""
    q, p = s.q, s.p
    r = q + p + 1
    keep = [i for i in range(r) if i != q + k]
    T = np.zeros((r, r - 1))
    for new, old in enumerate(keep):
        T[old, new] = 1.0
    T[q + k, -1] = -b
    C = np.einsum("ab,jbc,cd->jad", T.T, s.C, T)
    return dataclasses.replace(s, C=C, p=p - 1, total=None)  # the same units and weights (precision weights keep their ldW)


def _fixed_profile(ml_fit, k: int, dmin: float, crit: float, theta0: np.ndarray):
    start = {"theta": theta0.copy()}

    # gamma_k is held in the data's own coordinates (`coordinates`: the summaries are shifted)
    base = ml_fit.summaries
    original = dataclasses.replace(base, C=ml_fit.design.coords.original_C(base), total=None)

    def g(b: float) -> float:
        s = fixed_summaries(original, k, b)
        try:
            theta, _ = optimize_theta(s, ml_fit.template, False, start=start["theta"], check=False)
            value = float(deviance(solve_at(s, ml_fit.template.lam(theta)), False))
        except (ValueError, np.linalg.LinAlgError, ZeroDivisionError, FloatingPointError):
            return np.inf  # no deviance there (`_search` steps back)
        start["theta"] = theta
        return value - dmin - crit if np.isfinite(value) else np.inf

    return g


# ----- parametric bootstrap ------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class Bootstrap(ShownAsTables):
    """B refits on samples from the fitted model; `replicates` has one row per sample."""

    replicates: pd.DataFrame
    estimate: pd.Series
    seed: int | None
    n_failed: int

    def intervals(self, level: float = 0.95) -> pd.DataFrame:
        a = (1 - level) / 2
        rows = {n: (self.estimate[n], self.replicates[n].quantile(a), self.replicates[n].quantile(1 - a)) for n in self.replicates}
        return _frame(rows, level)

    def _parts(self) -> tuple[str, list[object]]:
        title = (f"Parametric bootstrap: {len(self.replicates)} replicates (seed {self.seed}"
                 + (f"; {self.n_failed} refits failed and are left out" if self.n_failed else "") + ")")
        return title, ["Percentile intervals (95%; .intervals(level) for others, .replicates for the draws):",
                       self.intervals()]



@dataclass(frozen=True, eq=False)
class _BootTask:
    """What the refits share: the design's columns and the fitted model."""

    Z: np.ndarray
    columns: Columns
    codes: np.ndarray
    mean: np.ndarray
    factor: np.ndarray  # tau = factor factor'
    sigma: float
    summaries: GroupSummaries
    template: LambdaTemplate
    reml: bool
    theta: np.ndarray
    scale: VarianceScale
    coords: Coordinates  # the columns' internal coordinates: refits' beta mapped back (`coordinates`)
    precision: np.ndarray | None = None  # precision weights w_i (lme4's weights=): e_i ~ N(0, sigma2 / w_i)


def _refit(task: _BootTask, seeds: list) -> tuple[np.ndarray, int]:
    """Refits for the given per-replicate seeds (each replicate has its own seed, so the draws do
    not depend on how replicates are shared among workers)."""
    s = task.summaries
    J, q, p = s.n_groups, s.q, s.p
    out = np.full((len(seeds), p + len(task.scale.names)), np.nan)
    failed = 0
    for i, ss in enumerate(seeds):
        rng = np.random.default_rng(ss)
        u = rng.standard_normal((J, q)) @ task.factor.T
        e = rng.standard_normal(task.mean.size) * task.sigma
        if task.precision is not None:
            e /= np.sqrt(task.precision)
        y = task.mean + np.einsum("ia,ia->i", task.Z, u[task.codes]) + e
        sb = task.columns.with_outcome(y).summaries(task.codes, J, precision_weights=task.precision)
        try:
            theta, _ = optimize_theta(sb, task.template, task.reml, start=task.theta, check=False)
        except (np.linalg.LinAlgError, ValueError):
            failed += 1
            continue
        sol = solve_at(sb, task.template.lam(theta))
        s2 = sol.sigma2_hat(task.reml)
        out[i] = np.concatenate([task.coords.beta(sol.beta), task.scale.values(task.coords.tau(s2 * sol.lam @ sol.lam.T), s2)])
    return out, failed


#: fewer bootstrap samples than this get a MultilevelWarning (percentile intervals need many)
MIN_BOOT = 100

def warn_few_replicates(n_boot: int) -> None:
    """A MultilevelWarning when percentile intervals are asked of fewer than MIN_BOOT samples."""
    if isinstance(n_boot, (int, np.integer)) and not isinstance(n_boot, bool) and 0 < n_boot < MIN_BOOT:
        import warnings

        warnings.warn(MultilevelWarning(
            f"n_boot={n_boot}: percentile intervals from fewer than {MIN_BOOT} bootstrap samples are unreliable (with "
            "very few, both ends are the same draw); use n_boot=1000 or more for intervals."), stacklevel=3)


#: from this many rows on, bootstrap refits use all cores by default
BOOTSTRAP_PARALLEL_ROWS = 20_000


def bootstrap(fit, n_boot: int = 1000, seed: int | None = None, progress: bool = True, n_jobs: int | None = None) -> Bootstrap:
    """Parametric bootstrap (module doc). Replicate b draws from its own seed (SeedSequence(seed)
    child b), so the result is the same for any `n_jobs` (threads). Default: the available cores
    (`parallel.default_jobs`) from BOOTSTRAP_PARALLEL_ROWS rows on, one thread below (measured on
    2 cores, benchmarks/parallel.py: 1.5-1.7x faster with two threads at 10^5 rows; 0.84-1.15x on
    HSB's 7,185 rows, where each refit is milliseconds of Python holding the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise SpecificationError(f"n_boot must be a whole number of bootstrap samples, 1 or more (e.g. 1000), not {n_boot!r}.")
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1):
        raise SpecificationError(f"n_jobs must be a whole number of threads, 1 or more (or None for the default), not {n_jobs!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise SpecificationError(f"seed must be a whole number, 0 or more (or None), not {seed!r}.")
    d, s = fit.design, fit.summaries
    d.require_rows("The parametric bootstrap")
    scale = VarianceScale.of(fit)
    names = list(d.x_names) + list(scale.names)
    estimate = pd.Series(np.concatenate([fit.beta.to_numpy(), scale.values(fit.tau.to_numpy(), fit.sigma2)]), index=names)
    # u drawn in the summaries' coordinates (`coordinates`: Z u = (Z S_z) u'), where tau' is well
    # conditioned, so that a shifted slope variable gives the same replicates for the same seed
    w, V = np.linalg.eigh(fit.tau_internal)  # tau = F F', also when tau is singular
    Z = d.Z if fit.coordinates.z_identity else d.Z @ fit.coordinates.S_z
    task = _BootTask(Z, d.columns, d.codes, d.X @ fit.beta.to_numpy(), V * np.sqrt(np.clip(w, 0, None)),
                     float(np.sqrt(fit.sigma2)), s, fit.template, fit.reml, fit.theta_internal, scale, d.coords,
                     None if d.precision_weights is None else d.precision_weights.values)
    seeds = np.random.SeedSequence(seed).spawn(n_boot)
    if n_jobs is None:
        n_jobs = default_jobs() if fit.n_obs >= BOOTSTRAP_PARALLEL_ROWS else 1
    n_jobs = max(1, min(n_jobs, n_boot))
    n_chunks = max(1, min(n_boot, 50 if n_jobs == 1 else 4 * n_jobs))
    chunks = [seeds[i::n_chunks] for i in range(n_chunks)]
    order = [list(range(n_boot))[i::n_chunks] for i in range(n_chunks)]
    out = np.full((n_boot, len(names)), np.nan)
    failed = 0
    done = 0

    def record(k, result):
        nonlocal failed, done
        rows, f = result
        out[order[k]] = rows
        failed += f
        done += len(order[k])
        if progress:
            print(f"\rbootstrap {done}/{n_boot}", end="", file=sys.stderr, flush=True)

    if n_jobs == 1:
        for k, c in enumerate(chunks):
            record(k, _refit(task, c))
    else:
        # threads: the compiled loops release the GIL, and the task is shared, not copied
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            futures = [pool.submit(_refit, task, c) for c in chunks]
            for k, fut in enumerate(futures):
                record(k, fut.result())
    if progress:
        print(file=sys.stderr)
    reps = pd.DataFrame(out, columns=names).dropna()
    return Bootstrap(reps, estimate, seed, failed)
