"""Profile-likelihood and parametric-bootstrap intervals of a fit with several grouping factors
(lme4's `confint(fit, method = "profile")` and `bootMer`), on the blocked engine (`engine.blocked`).

The variance parameters are named as the one-factor fit names them (`inference.intervals`): the
SD of each random effect `sd_<z>|<factor>`, the correlations `cor_<a>.<b>|<factor>` within a
correlated term, and the residual SD `sigma` (lme4's oldNames = FALSE names, with lme4's factor
names, e.g. `sd_Intercept|Worker:Machine`; lme4's default names are .sig01, .sig02, ..., .sigma in
the same order).

* Profile: {phi_k : D_k(phi_k) - D_min <= chi2_1(level)}, D_k the criterion minimised over every
  other parameter with phi_k held. Variance parameters phi = (sd, cor per factor, sigma) use the
  fit's own criterion (REML or ML) with beta profiled out,

      D(theta, sigma2) = log|M| [+ log|X'V^-1X|] + nu log(2 pi sigma2) + r^2(theta) / sigma2,

  nu = N (ML) or N - p (REML), the pieces of the blocked factor at theta (`BlockedObjective`);
  its gradient in theta is the engine's with 1/sigma2 for nu/r^2 (the profiled sigma2's place),
  mapped to phi by the chain rule (d theta/d phi: differences of the algebraic map phi -> theta).
  Each profiled value is one bounded quasi-Newton search (L-BFGS-B) from its neighbour's optimum.
  As in the one-factor fit, lme4 profiles a REML fit's variance parameters on its ML refit; ours
  profile the REML criterion (the intervals of a REML fit contain its estimates).
  Fixed effects: the ML deviance with gamma_k held at b (the summaries of [Z, X without x_k,
  y - b x_k], `fixed_factor_summaries`) minimised over theta by the fit's optimiser from the
  neighbour's theta; for a REML fit, on its ML refit, as lme4 does.
* Parametric bootstrap: B samples y* = X beta + sum_f Z_f b_f* + e*, b_f* ~ N(0, tau_f) for every
  level of every factor, e* ~ N(0, sigma2); each refit reuses the design (only the outcome
  changes) and starts at the fit's theta; percentile intervals (`intervals.Bootstrap`).
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from multilevel.design.summaries import GroupSummaries, TermBlock
from multilevel.engine.blocked import BlockedObjective, in_frames, optimize_blocked
from multilevel.errors import MultilevelWarning, SpecificationError
from multilevel.inference import distributions as dist
from multilevel.inference.intervals import Bootstrap, _frame, _search, check_which
from multilevel.numerics.units import deviance
from multilevel.parallel import one_blas_thread
from multilevel.results.multi import MultiEstimates


# ----- the sd/cor/sigma parameters of every factor ----------------------------------------------
@dataclass(frozen=True)
class MultiScale:
    """The variance parameters phi: per factor (in `MultiEstimates.factors`' order) the SD of each
    random effect and the correlations within its correlated terms, in the template's order, then
    sigma."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]  # "sd", "cor", "sigma"
    factor: tuple[int, ...]  # the factor of each (not sigma)
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @classmethod
    def of(cls, est: MultiEstimates) -> MultiScale:
        names, kinds, factor, rows, cols = [], [], [], [], []
        for i, f in enumerate(est.factors):
            z = f.z_names
            for r, c in zip(f.template.rows, f.template.cols):
                names.append(f"sd_{z[r]}|{f.name}" if r == c else f"cor_{z[r]}.{z[c]}|{f.name}")
                kinds.append("sd" if r == c else "cor")
                factor.append(i)
                rows.append(r)
                cols.append(c)
        return cls(tuple(names) + ("sigma",), tuple(kinds) + ("sigma",), tuple(factor), tuple(rows), tuple(cols))

    def values(self, taus: list[np.ndarray], sigma2: float) -> np.ndarray:
        """phi from each factor's tau (in the data's columns) and sigma2."""
        out = []
        for f, r, c in zip(self.factor, self.rows, self.cols):
            T = taus[f]
            sd = np.sqrt(max(T[r, r], 0.0)), np.sqrt(max(T[c, c], 0.0))
            out.append(sd[0] if r == c else (T[r, c] / (sd[0] * sd[1]) if sd[0] * sd[1] > 0 else 0.0))
        return np.array(out + [np.sqrt(sigma2)])

    def taus(self, phi: np.ndarray, qs: tuple[int, ...]) -> list[np.ndarray]:
        """Each factor's tau from phi (the inverse of `values`)."""
        sds = [np.zeros(q) for q in qs]
        for v, f, r, c in zip(phi, self.factor, self.rows, self.cols):
            if r == c:
                sds[f][r] = v
        taus = [np.diag(sd**2) for sd in sds]
        for v, f, r, c in zip(phi, self.factor, self.rows, self.cols):
            if r != c:
                taus[f][r, c] = taus[f][c, r] = v * sds[f][r] * sds[f][c]
        return taus

    def bounds(self, sigma: float) -> list[tuple[float, float]]:
        # sigma kept off 0, where the criterion is not defined
        return [(0.0, np.inf) if k == "sd" else (-1.0, 1.0) if k == "cor" else (1e-8 * sigma, np.inf) for k in self.kinds]


@dataclass(frozen=True, eq=False)
class Criterion:
    """D(phi) of a fit (the module doc), with its gradient, on the fit's internal summaries."""

    est: MultiEstimates
    scale: MultiScale
    objective: BlockedObjective

    @classmethod
    def of(cls, est: MultiEstimates, reml: bool | None = None) -> Criterion:
        templates = tuple(f.template for f in est.factors)
        objective = BlockedObjective(in_frames(est.summaries, est.frames), templates, est.reml if reml is None else reml)
        return cls(est, MultiScale.of(est), objective)

    def theta(self, phi: np.ndarray) -> np.ndarray:
        """theta in the factors' frames (`MultiEstimates`: tau' = S^-1 tau S^-T) at phi."""
        sigma2 = float(phi[-1]) ** 2
        out = []
        for i, (f, T) in enumerate(zip(self.est.factors, self.scale.taus(phi, tuple(f.template.q for f in self.est.factors)))):
            if self.est.frames:
                S = self.est.frames[i]
                T = np.linalg.solve(S, np.linalg.solve(S, T).T).T
            out.append(f.template.theta_from_tau(T, sigma2))
        return np.concatenate(out)

    def value_theta(self, theta: np.ndarray, sigma2: float, gradient: bool = False):
        o = self.objective
        f = o.factor(theta)
        if f is None:
            return (np.inf, None) if gradient else np.inf
        d = float(deviance(o.n, o.p, o.reml, f.logdet_M, f.logdet_X, f.pwrss, sigma2, 0.0))
        if not gradient:
            return d
        nu = o.n - o.p if o.reml else o.n
        # the engine's gradient is of the profiled criterion, whose d r^2 term carries nu / r^2 =
        # 1 / sigma2_hat: with pwrss = nu sigma2 it carries 1 / sigma2, the gradient of D here
        g_theta = o._gradient(dataclasses.replace(f, pwrss=nu * sigma2))
        dsigma2 = nu / sigma2 - f.pwrss / sigma2**2
        return d, (g_theta, dsigma2)

    def curvature_scale(self, phi: np.ndarray) -> np.ndarray:
        """1 / sqrt(d^2 D / d phi_i^2) at phi (differences of the gradient; the parameter's own
        size where the curvature is not positive)."""
        n = len(phi)
        everything = np.ones(n, dtype=bool)
        lower = np.array([b[0] for b in self.scale.bounds(float(phi[-1]))])
        upper = np.array([b[1] for b in self.scale.bounds(float(phi[-1]))])
        out = np.empty(n)
        for i in range(n):
            h = 1e-4 * max(abs(phi[i]), 1e-2 * phi[-1])
            up, down = phi.copy(), phi.copy()
            up[i] = min(phi[i] + h, upper[i])
            down[i] = max(phi[i] - h, lower[i])
            curv = (self.value_and_grad(up, everything, lower, upper)[1][i]
                    - self.value_and_grad(down, everything, lower, upper)[1][i]) / (up[i] - down[i])
            out[i] = 1.0 / np.sqrt(curv) if np.isfinite(curv) and curv > 0 else max(abs(phi[i]), 1e-2 * phi[-1])
        return out

    def value(self, phi: np.ndarray) -> float:
        try:
            return float(self.value_theta(self.theta(phi), float(phi[-1]) ** 2))
        except (ValueError, np.linalg.LinAlgError, ZeroDivisionError, FloatingPointError):
            return np.inf  # correlations that form no covariance matrix: as if infinitely bad

    def value_and_grad(self, phi: np.ndarray, free: np.ndarray, lower: np.ndarray, upper: np.ndarray):
        """D and its gradient in phi[free] (d theta / d phi by differences of the map, one-sided
        at a bound)."""
        try:
            theta = self.theta(phi)
            d, parts = self.value_theta(theta, float(phi[-1]) ** 2, gradient=True)
        except (ValueError, np.linalg.LinAlgError, ZeroDivisionError, FloatingPointError):
            return np.inf, np.zeros(int(free.sum()))
        if not np.isfinite(d) or parts is None:
            return np.inf, np.zeros(int(free.sum()))
        g_theta, dsigma2 = parts
        grad = []
        for k in np.flatnonzero(free):
            h = 1e-6 * max(abs(phi[k]), 1e-2 * phi[-1] if self.scale.kinds[k] == "sd" else 1e-2)
            up, down = phi.copy(), phi.copy()
            up[k] = min(phi[k] + h, upper[k])
            down[k] = max(phi[k] - h, lower[k])
            try:
                dtheta = (self.theta(up) - self.theta(down)) / (up[k] - down[k])
            except (ValueError, np.linalg.LinAlgError):
                dtheta = (self.theta(up) - theta) / (up[k] - phi[k])
            g = float(g_theta @ dtheta)
            if self.scale.kinds[k] == "sigma":
                g += dsigma2 * 2.0 * phi[-1]
            grad.append(g)
        return d, np.array(grad)


# ----- profile ----------------------------------------------------------------------------------
#: searches per profiled value (each from where the last stopped) at most
MAX_RESTARTS = 20


def _profile_variance(crit: Criterion, k: int, phi_hat: np.ndarray, dmin: float, cut: float):
    """g(v) = D_k(v) - D_min - cut, each v one L-BFGS-B search over the others from the last
    optimum (the neighbour's)."""
    from scipy import optimize

    bounds = crit.scale.bounds(float(phi_hat[-1]))
    lower = np.array([b[0] for b in bounds])
    upper = np.array([b[1] for b in bounds])
    free = np.ones(len(phi_hat), dtype=bool)
    free[k] = False
    # the search runs on x = phi / s, s = 1 / sqrt(the criterion's curvature in phi_i at the
    # estimate): sigma's curvature (~2N / sigma^2) dwarfs an SD's, and L-BFGS-B's first step along
    # an unscaled gradient stops it at once
    s = crit.curvature_scale(phi_hat)[free]
    start = {"x": phi_hat[free] / s}
    xbounds = [(lo / si, hi / si) for (lo, hi), si in zip([bounds[i] for i in np.flatnonzero(free)], s)]

    def g(v: float) -> float:
        def fun(x):
            phi = phi_hat.copy()
            phi[free] = x * s
            phi[k] = v
            d, grad = crit.value_and_grad(phi, free, lower, upper)
            return d, grad * s

        if not free.any():
            phi = phi_hat.copy()
            phi[k] = v
            value = crit.value(phi)
        else:
            # L-BFGS-B stops on a small relative decrease of one step, which a first step along
            # a badly scaled gradient (sigma's is ~1e4 times an SD's) can be: searched again from
            # where it stopped (a fresh Hessian) until a search no longer lowers D
            x, value = start["x"], np.inf
            for _ in range(MAX_RESTARTS):
                res = optimize.minimize(fun, x, jac=True, method="L-BFGS-B", bounds=xbounds,
                                        options={"ftol": 1e-15, "gtol": 1e-9, "maxiter": 1000})
                done = not (float(res.fun) < value - 1e-11)
                if float(res.fun) <= value:
                    x, value = res.x, float(res.fun)
                if done:
                    break
            if np.isfinite(value):
                start["x"] = x
        return value - dmin - cut if np.isfinite(value) else np.inf

    return g


def fixed_factor_summaries(s: GroupSummaries, coords, k: int, b: float) -> GroupSummaries:
    """The blocked summaries of [Z, X without x_k, y - b x_k] in the data's coordinates of X and y
    (gamma_k held at b as the data have x_k): per term C' = T'CT with T = diag(I_q, T_xy), T_xy the
    internal-to-data map of [X y] (`coordinates.original_C`) then the column map; the cross blocks
    (Z'Z only) unchanged."""
    p = s.p
    back = np.eye(p + 1)
    back[:p, :p] = coords.S_inv
    if coords.intercept is not None:
        back[coords.intercept, -1] = coords.y_shift
    keep = [i for i in range(p + 1) if i != k]
    M = np.zeros((p + 1, p))
    for new, old in enumerate(keep):
        M[old, new] = 1.0
    M[k, -1] = -b
    Txy = back @ M

    def mapped(C: np.ndarray, q: int) -> np.ndarray:
        T = np.zeros((q + p + 1, q + p))
        T[:q, :q] = np.eye(q)
        T[q:, q:] = Txy
        return np.einsum("ab,jbc,cd->jad", T.T, C, T)

    terms = tuple(TermBlock(mapped(t.C, t.q), t.n, t.q, t.factor, cross=t.cross) for t in s.terms)
    q0 = s.terms[0].q
    total = mapped(s._total[None], q0)[0]
    return GroupSummaries.of_terms(terms, total=total)


def _profile_fixed(ml: MultiEstimates, k: int, dmin: float, cut: float):
    templates = tuple(f.template for f in ml.factors)
    start = {"theta": np.asarray(ml.theta_internal, dtype=float).copy()}

    def g(b: float) -> float:
        s = in_frames(fixed_factor_summaries(ml.summaries, ml.design.coords, k, b), ml.frames)
        try:
            theta, _record, objective = optimize_blocked(s, templates, False, start=start["theta"])
            value = objective.value(theta)
        except (ValueError, np.linalg.LinAlgError, ZeroDivisionError, FloatingPointError):
            return np.inf
        if not np.isfinite(value):
            return np.inf
        start["theta"] = theta
        return value - dmin - cut

    return g


def profile(est: MultiEstimates, level: float = 0.95, which: str = "all") -> pd.DataFrame:
    """Profile-likelihood intervals (module doc); columns estimate, ci_low, ci_high as the
    one-factor fit's. A bound the search cannot locate is NaN, with a MultilevelWarning."""
    check_which(which)
    with one_blas_thread(), np.errstate(all="ignore"):  # the profile walks into singular regions on purpose
        return _profile(est, level, which)


def _profile(est: MultiEstimates, level: float, which: str) -> pd.DataFrame:
    cut = float(dist.chi2_ppf(level, 1))
    rows: dict[str, tuple[float, float, float]] = {}
    notes: list[str] = []
    if which in ("all", "fixed"):
        ml = est if not est.reml else MultiEstimates.fit(est.design, "ML")
        se = np.sqrt(np.diag(ml.vcov.to_numpy()))
        for k, name in enumerate(est.design.x_names):
            b_hat = float(ml.beta.iloc[k])
            step = 1.5 * se[k] if np.isfinite(se[k]) and se[k] > 0 else 1e-3 * max(abs(b_hat), 1.0)
            found = []
            for direction in (-1, 1):
                bound, why = _search(_profile_fixed(ml, k, ml.deviance, cut), b_hat, step, -np.inf, np.inf, direction)
                if why:
                    notes.append(f"{name}: {why}")
                found.append(bound)
            rows[name] = (float(est.beta.iloc[k]), found[0], found[1])
    if which in ("all", "variance"):
        crit = Criterion.of(est)
        scale = crit.scale
        phi_hat = scale.values([t.to_numpy() for t in est.tau.values()], est.sigma2)
        dmin = crit.value(phi_hat)
        for k, name in enumerate(scale.names):
            lo_lim, hi_lim = scale.bounds(float(phi_hat[-1]))[k]
            kind = scale.kinds[k]
            step = 0.2 if kind == "cor" else 0.25 * max(phi_hat[k], 0.1 * phi_hat[-1])
            found = []
            for direction in (-1, 1):
                bound, why = _search(_profile_variance(crit, k, phi_hat, dmin, cut), float(phi_hat[k]), step,
                                     lo_lim if kind != "sigma" else 0.0, hi_lim, direction)
                if why:
                    notes.append(f"{name}: {why}")
                found.append(bound)
            rows[name] = (float(phi_hat[k]), found[0], found[1])
    out = _frame(rows, level)
    if notes:
        import warnings

        warnings.warn(MultilevelWarning("Profile intervals: some bounds are NaN: " + "; ".join(notes) + "."), stacklevel=4)
        out.attrs["notes"] = notes
    return out


# ----- parametric bootstrap ---------------------------------------------------------------------
def bootstrap(est: MultiEstimates, n_boot: int = 1000, seed: int | None = None, progress: bool = True) -> Bootstrap:
    """Parametric bootstrap (module doc). Replicate b draws from its own seed (SeedSequence(seed)
    child b): the first B' replicates of a longer run with the same seed are those of B'."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise SpecificationError(f"n_boot must be a whole number of bootstrap samples, 1 or more (e.g. 1000), not {n_boot!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise SpecificationError(f"seed must be a whole number, 0 or more (or None), not {seed!r}.")
    d = est.design
    d.require_rows("The parametric bootstrap")
    scale = MultiScale.of(est)
    taus = [t.to_numpy() for t in est.tau.values()]
    names = list(d.x_names) + list(scale.names)
    estimate = pd.Series(np.concatenate([est.beta.to_numpy(), scale.values(taus, est.sigma2)]), index=names)
    Z, X = d.Z, d.X
    assert Z is not None and X is not None  # (require_rows)
    mean = X @ est.beta.to_numpy()
    parts = []
    for f, T in zip(est.factors, taus):
        w, V = np.linalg.eigh(T)  # tau = F F', also when tau is singular
        g = d.groupings[f.grouping]
        parts.append((Z[:, list(f.z_columns)], np.asarray(g.codes), int(g.n_levels), V * np.sqrt(np.clip(w, 0, None))))
    sigma = float(np.sqrt(est.sigma2))
    templates = tuple(f.template for f in est.factors)
    order = tuple(f.grouping for f in est.factors)
    seeds = np.random.SeedSequence(seed).spawn(n_boot)
    out = np.full((n_boot, len(names)), np.nan)
    failed = 0
    with one_blas_thread():
        for i, ss in enumerate(seeds):
            rng = np.random.default_rng(ss)
            y = mean.copy()
            for Zf, codes, J, F in parts:
                b = rng.standard_normal((J, F.shape[0])) @ F.T
                y += np.einsum("ia,ia->i", Zf, b[codes])
            y += sigma * rng.standard_normal(y.size)
            try:
                refit = _refit(est, y, templates, order)
            except (np.linalg.LinAlgError, ValueError, SpecificationError):
                failed += 1
                continue
            rt = [t.to_numpy() for t in refit.tau.values()]
            out[i] = np.concatenate([refit.beta.to_numpy(), scale.values(rt, refit.sigma2)])
            if progress:
                print(f"\rbootstrap {i + 1}/{n_boot}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return Bootstrap(pd.DataFrame(out, columns=names).dropna(), estimate, seed, failed)


def _refit(est: MultiEstimates, y: np.ndarray, templates, order) -> MultiEstimates:
    """The fit of outcome y on the fit's design, from the fit's theta (the same frames: Z is
    unchanged)."""
    d = est.design
    assert d.columns is not None  # (require_rows)
    columns = d.columns.with_outcome(y)
    Zi = columns.internal_matrix(range(columns.q))
    Xi = columns.internal_matrix(range(columns.q, columns.q + columns.p))
    yi = columns.internal_column(columns.k - 1)
    n = d.n_factors
    s, again = GroupSummaries.of_factors(
        tuple(Zi[:, list(d.factor_blocks(g))] for g in range(n)), Xi, yi,
        tuple(g.codes for g in d.groupings), tuple(g.n_levels for g in d.groupings), tuple(g.name for g in d.groupings))
    assert tuple(again) == tuple(order)  # the same terms in the same order (sorted by levels)
    theta, record, objective = optimize_blocked(in_frames(s, est.frames), templates, est.reml,
                                                start=np.asarray(est.theta_internal, dtype=float))
    return MultiEstimates.in_frame(d, s, est.factors, est.method, theta, record, est.frames, objective)


def confint(est: MultiEstimates, method: str, level: float, which: str, n_boot: int, seed: int | None,
            progress: bool) -> pd.DataFrame:
    """`MultiFit.confint`'s profile and bootstrap intervals."""
    if method == "profile":
        return profile(est, level, which)
    table = bootstrap(est, n_boot, seed, progress).intervals(level)
    if which == "all":
        return table
    fixed = table.index.isin(list(est.design.x_names))
    return table[fixed] if which == "fixed" else table[~fixed]
