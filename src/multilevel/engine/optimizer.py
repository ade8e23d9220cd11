"""Minimise the profiled deviance over theta, and keep a record of how it went.

From a start made of the units' own OLS fits (`moment_start`), a projected quasi-Newton method
(`_minimize`) with the analytic gradient (`objective.Objective`) and lme4's bounds
(variances >= 0): its Hessian starts as a forward difference of the gradient and is kept by BFGS
updates, so it converges in a few Newton-like steps, far tighter than lme4's defaults (8
evaluations of the deviance for the benchmarks' model at every size, against ~45 with L-BFGS-B
before). Projected Newton steps (`_polish`) finish what stops for another reason.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from types import SimpleNamespace
from typing import Protocol

import numpy as np

from multilevel.design.summaries import GroupSummaries
from multilevel.engine.covariance import LambdaTemplate
from multilevel.engine.objective import Objective


@dataclass(frozen=True)
class OptimizerRecord:
    """What the optimiser did: evaluations, convergence, return code, and the path it took.

    `converged` is a claim about the point returned, checked there (`check_optimum`, as lme4's
    convergence checks): the deviance is finite, no free parameter's gradient asks for a step
    (the Newton step's predicted decrease is below `DECREASE_TOL`), no parameter on its bound
    could move inwards, and the Hessian (forward differences of the analytic gradient) is
    positive semidefinite over the free parameters. `check` says what was found.
    """

    method: str
    n_evaluations: int
    n_iterations: int
    converged: bool
    return_code: int
    message: str
    history: tuple[tuple[tuple[float, ...], float], ...]  # (theta, deviance) per evaluation
    gradient_norm: float
    boundary: tuple[str, ...]  # theta names at their bound (variances estimated as zero)
    checked: bool = False  # the optimum was checked (gradient and Hessian) at the point returned
    check: str = ""  # what the check found, in words
    hessian_min_eigenvalue: float = float("nan")
    predicted_decrease: float = float("nan")  # g' H^-1 g / 2 over the free parameters at the end

    @property
    def singular(self) -> bool:
        return bool(self.boundary)

    @property
    def detail(self) -> str:
        """The message without its leading "converged: " (for a line that says so already)."""
        return self.message.removeprefix("converged: ")

    def __str__(self) -> str:
        """What the optimiser did, as lines of text; fields added later print as `name: value`."""
        from dataclasses import fields

        lines = [f"Optimizer: {self.method}"]
        lines.append(f"  converged: {'yes' if self.converged else 'NO'} ({self.message}; return code {self.return_code})")
        lines.append(f"  evaluations of the deviance: {self.n_evaluations}, iterations: {self.n_iterations}")
        lines.append(f"  gradient norm at the end: {self.gradient_norm:.3g}")
        lines.append("  at the boundary (variance estimated as 0): " + (", ".join(self.boundary) if self.boundary else "none"))
        shown = {"method", "converged", "message", "return_code", "n_evaluations", "n_iterations", "gradient_norm",
                 "boundary", "history"}
        for f in fields(self):
            if f.name not in shown:
                lines.append(f"  {f.name.replace('_', ' ')}: {getattr(self, f.name)}")
        if self.history:
            best = min(self.history, key=lambda h: h[1])
            lines.append(f"  history: {len(self.history)} evaluations (theta, deviance); lowest deviance "
                         f"{best[1]:.6f} at theta = ({', '.join(f'{t:.6g}' for t in best[0])})")
        return "\n".join(lines)

    __repr__ = __str__  # in a REPL or notebook too: the record, not its fields


#: a checked optimum whose Newton step is larger than this, relative to each element of theta (+
#: 1e-3), takes up to two Newton steps with the check's Hessian (one evaluation each): where the
#: deviance is flat (variances near 0) its rounding stops the search while the step is still
#: visible, and a small variance needs its theta to ~1e-7 of itself for its own 1e-6
POLISH_STEP = 1e-7

#: the largest predicted decrease of the deviance (g'H^-1 g / 2, deviance units) at a checked
#: optimum, or 1e-14 of the deviance when larger (its rounding, summed over the rows): where the
#: deviance is flat (variances near 0) a decrease of 1e-8 can still move the estimates by 1e-5
DECREASE_TOL = 1e-9


@dataclass(frozen=True)
class Check:
    ok: bool
    message: str
    min_eigenvalue: float
    decrease: float
    gradient_norm: float
    hessian: np.ndarray | None = None  # the difference Hessian (made positive) over `hessian_idx`
    hessian_idx: np.ndarray | None = None
    idx: np.ndarray | None = None  # the free (off-bound) parameters: where Newton steps may go


def check_optimum(fun, theta: np.ndarray, lower: np.ndarray) -> Check:
    """Is theta a minimum of the deviance within the bounds? (the checks of `OptimizerRecord`).

    A parameter on its bound whose gradient points out of the region (g > 0) is held there (KKT);
    one whose gradient is 0 there (a diagonal element of Lambda: the deviance is even in it) is
    checked by the curvature, with the free ones."""
    d, g = fun(theta)
    if not math.isfinite(d) or not np.isfinite(g).all():
        return Check(False, "the deviance is not finite at the point reached", np.nan, np.nan, np.inf)
    at_bound = (theta <= lower + 1e-10) & np.isfinite(lower)
    scale = max(1.0, abs(d))
    tol_g = 1e-6 * scale
    inward = at_bound & (g < -tol_g)
    if inward.any():
        return Check(False, f"a variance at zero could still lower the deviance (gradient {float(g[inward].min()):.3g})",
                     np.nan, np.nan, float(np.max(np.abs(g[inward]))))
    held = at_bound & (g > tol_g)
    idx = np.flatnonzero(~held)
    free = np.flatnonzero(~at_bound)
    gnorm = float(np.max(np.abs(g[free]), initial=0.0))
    if idx.size == 0:
        return Check(True, "every parameter is held at its bound by the gradient", np.nan, 0.0, gnorm)
    H = _fd_hessian(fun, theta, g, idx)
    if not np.isfinite(H).all():
        return Check(False, "the Hessian is not finite at the point reached", np.nan, np.nan, gnorm)
    # one eigendecomposition for the curvature test, the positive Hessian and the decrement (Hp's
    # eigenvalues are >= 1e-8 of the largest: none below lstsq's cutoff, so Hp^-1 gi is V w+^-1 V' gi)
    w, V = np.linalg.eigh(H)
    wmin = float(w[0])
    if wmin < -1e-6 * max(1.0, float(np.abs(w).max())):
        return Check(False, f"the Hessian is not positive semidefinite (smallest eigenvalue {wmin:.3g}): a saddle point",
                     wmin, np.nan, gnorm)
    gi = np.where(at_bound[idx], 0.0, g[idx])  # on the bound with zero gradient: curvature only
    Hp, wp = _positive(H, (w, V))  # (made once: the decrement's and the record's)
    Vg = V.T @ gi
    decrease = 0.5 * float(Vg @ (Vg / wp))
    if not decrease <= max(DECREASE_TOL, 1e-14 * scale):
        return Check(False, f"a Newton step would still lower the deviance by {decrease:.3g} (max |gradient| {gnorm:.3g})",
                     wmin, decrease, gnorm)
    return Check(True, f"max |gradient| {gnorm:.2g}, Newton decrement {decrease:.2g}, Hessian positive "
                 f"{'definite' if wmin > 0 else 'semidefinite'} (smallest eigenvalue {wmin:.3g})", wmin, decrease, gnorm,
                 Hp, idx, idx[~at_bound[idx]])


@dataclass(frozen=True, eq=False)
class ZFrame:
    """The random-effect columns in the optimiser's own coordinates, Z' = Z S.

    Within a correlated term that has a random intercept, each slope's column is shifted by its
    mean (S[i0, c] = -m_c s_c) and every column is scaled by a power of 2 near 1/SD (exact in
    floating point); terms without an intercept, or uncorrelated ones, are only scaled, because
    only then is the model the same (lme4's (x || g) is not invariant to shifting x). Then
    Lambda Lambda' = S Lambda' Lambda'' S' and the profiled deviance is the same function: the
    optimiser's steps, its difference Hessian and its start work on well-scaled parameters
    whatever the origin and unit of the data (an uncentred age 30..37 with a random slope stopped
    29.5 deviance units above the optimum before).
    """

    S: np.ndarray
    summaries: GroupSummaries
    template: LambdaTemplate

    @classmethod
    def of(cls, s: GroupSummaries, template: LambdaTemplate, reverse: bool = False) -> ZFrame:
        """The frame of the class doc; `reverse`: each correlated term's columns in reverse order
        as well (lme4's lower-triangular Lambda then is an upper-triangular one in the data's
        order: a second parameterisation whose boundary is elsewhere, see `optimize_theta`)."""
        q = s.q
        S = np.eye(q)
        tot = s._total
        i0 = template.intercept
        N = float(tot[i0, i0]) if i0 is not None else float(s.total_weight)
        correlated = _correlated_blocks(template)
        for block in template.blocks or (tuple(range(q)),):
            full = block in correlated
            for c in block:
                if c == i0:
                    continue
                shift = full and i0 in block and N > 0
                m = float(tot[c, i0]) / N if shift else 0.0
                var = float(tot[c, c]) / N - m * m if N > 0 else 0.0
                sd = np.sqrt(var) if var > 0 and np.isfinite(var) else 1.0
                if shift and abs(m) <= 0.1 * sd:
                    m = 0.0  # near enough to 0: the shift would cost a pass over the summaries for nothing
                    sd = np.sqrt(max(float(tot[c, c]) / N, 1e-300))
                scale = float(2.0 ** -np.round(np.log2(sd))) if sd > 0 else 1.0
                S[c, c] = scale
                if m:
                    S[i0, c] = -m * scale
        if reverse:
            for block in correlated:
                S[:, list(block)] = S[:, list(block[::-1])]
        if np.array_equal(S, np.eye(q)):
            frame = cls(S, s, template)
            frame.__dict__["identity"] = True  # (`identity`, known here: not asked again)
            return frame
        k = s.C.shape[1]
        T = np.eye(k)
        T[:q, :q] = S
        C = s.C.copy()
        C[:, :, :q] = C[:, :, :q] @ S
        C[:, :q, :] = np.swapaxes(S, 0, 1) @ C[:, :q, :]
        total = None if s.total is None else T.T @ s.total @ T
        return cls(S, dataclasses.replace(s, C=C, total=total), template)

    @cached_property
    def identity(self) -> bool:
        # (asked at every evaluation kept in the history: S is never changed after `of`)
        return bool(np.array_equal(self.S, np.eye(self.S.shape[0])))

    def to_original(self, theta_internal: np.ndarray) -> np.ndarray:
        if self.identity:
            return np.asarray(theta_internal, dtype=float)
        lam = self.S @ self.template.lam(theta_internal)
        return self.template.theta_from_tau(lam @ lam.T, 1.0)

    def to_internal(self, theta: np.ndarray) -> np.ndarray:
        if self.identity:
            return np.asarray(theta, dtype=float)
        lam = np.linalg.solve(self.S, self.template.lam(theta))
        return self.template.theta_from_tau(lam @ lam.T, 1.0)


class Problem(Protocol):
    """What `optimize` minimises: the LMM's profiled deviance over theta (`objective.Objective`)
    today; a GLMM's Laplace deviance over (theta, beta) or a heterogeneous-variance model over
    (theta, alpha) later, each with its own parameters, bounds and starts."""

    @property
    def lower(self) -> np.ndarray:
        """Lower bounds of the parameters (-inf where unbounded)."""
        ...

    @property
    def is_variance(self) -> np.ndarray:
        """The parameters bounded at 0 in which the value is even (a saddle can be left by a sign)."""
        ...

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """The value and its gradient at x; (inf, nan) where the value is not defined."""
        ...

    def start(self) -> tuple[np.ndarray, ...]:
        """Candidate starts: the search begins at the lowest."""
        ...

    def starts(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """Other starts, for a search that ended at x away from a checked optimum."""
        ...


_FLOAT = np.dtype(float)


class Evaluations:
    """An objective's value_and_grad, remembered per point (the line search and the polish ask for
    some points twice), with the history of (theta, value) of every evaluation."""

    def __init__(self, objective: Problem, history: list):
        self.objective = objective
        self.history = history
        self._seen: dict[tuple[float, ...], tuple[float, np.ndarray]] = {}

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        # (the floats of theta, as float(t) each; an array of floats already is used as it is)
        key = tuple((theta if type(theta) is np.ndarray and theta.dtype == _FLOAT else np.asarray(theta, dtype=float)).tolist())
        seen = self._seen.get(key)
        if seen is not None:
            return seen
        d, g = self.objective.value_and_grad(theta)
        out = (float(d), g) if math.isfinite(d) else (np.inf, np.full(np.shape(theta), np.nan))
        self.history.append((key, out[0]))
        self._seen[key] = out
        return out


@dataclass(frozen=True, eq=False)
class Optimum:
    """Where `optimize` ended: the point, the last search's result, and the check there."""

    x: np.ndarray
    search: SimpleNamespace
    check: Check | None
    polished: bool
    fun: Evaluations  # the evaluations made (value_and_grad remembered, and the history)


def optimize(objective: Problem, start: np.ndarray | None = None, check: bool = True, fun: Evaluations | None = None,
             restart: bool = True) -> Optimum:
    """Minimise any objective: value_and_grad(x) -> (value, gradient), lower bounds `lower`, start()
    (candidate starts: the search begins at the lowest), starts(x) (other starts, for a search that
    ended at x away from a checked optimum) and is_variance (the elements, bounded at 0, in which
    the value is even). The quasi-Newton search from `start` or the best of objective.start()
    (`_search`), the check of the optimum (`check_optimum`: finite, Newton decrement, PSD Hessian,
    KKT), when it fails (and `restart`) the other starts, the lowest checked point kept, and the
    Newton finish of the checked optimum (`_newton_finish`). `fun`: evaluations to go on with."""
    fun = Evaluations(objective, []) if fun is None else fun
    lower = objective.lower
    x, res, polished = _search(fun, objective, start)
    result = check_optimum(fun, x, lower) if check else None
    if result is not None and not result.ok and restart:
        # another start, and the best point found: a saddle or a stop far from the optimum
        tried = [(fun(x)[0], x, res, polished, result)]
        for alt in objective.starts(x):
            t2, r2, p2 = _search(fun, objective, alt)
            tried.append((fun(t2)[0], t2, r2, p2, check_optimum(fun, t2, lower)))
            if tried[-1][4].ok:
                break
        best = min(tried, key=lambda t: (not t[4].ok, t[0] if np.isfinite(t[0]) else np.inf))
        _, x, res, polished, result = best
    if result is not None and result.ok:
        # whichever start found it: a flat optimum is pinned down only by the Newton finish
        x = _newton_finish(fun, x, lower, result)
    return Optimum(x, res, result, polished, fun)


def _search(fun: Evaluations, objective: Problem, start: np.ndarray | None):
    lower = objective.lower
    if start is None:
        # the first candidate unless another is lower (lme4's start against the moments, which
        # can be poor for small or unbalanced units)
        candidates = objective.start()
        start = candidates[0]
        for c in candidates[1:]:
            if not fun(start)[0] <= fun(c)[0]:
                start = c
    start = np.asarray(start, dtype=float)
    res = _minimize_log(fun, start, lower, objective.is_variance) if getattr(objective, "log_search", False) else None
    if res is None:
        res = _minimize(fun, start, lower)
    theta = np.asarray(res.x, dtype=float)
    theta, res = _leave_saddles(fun, theta, objective.is_variance, lower, res)
    # the quasi-Newton steps already converge quadratically near the optimum; polish only what
    # stopped for another reason (an iteration limit, no decrease found)
    theta, polished = (theta, False) if res.success else _polish(fun, theta, lower)
    active = (theta <= lower + 1e-8) & np.isfinite(lower)
    return _snap_to_zero(fun, np.where(active, lower, theta)), res, polished


#: elements of theta below this (relative SDs, in the optimiser's scaled coordinates) are tried at 0
SNAP = 1e-6


def _snap_to_zero(fun, theta: np.ndarray) -> np.ndarray:
    """Set to 0 the elements of theta that are 0 to the optimiser's resolution, when that does not
    raise the deviance beyond rounding. At a boundary optimum (a variance at 0) the deviance is flat
    in the elements next to it (it is even in them), so the search stops at, say, 3e-9 instead of
    0: harmless in these coordinates, but a slope variable far from 0 multiplies it by its
    distance squared when tau is mapped to the data's coordinates (`coordinates`)."""
    small = np.flatnonzero((np.abs(theta) < SNAP) & (theta != 0))
    if small.size == 0:
        return theta
    d0 = fun(theta)[0]
    tol = 1e-10 * max(1.0, abs(d0))
    cand = theta.copy()
    cand[small] = 0.0
    if fun(cand)[0] <= d0 + tol:
        return cand
    for i in small:
        cand = theta.copy()
        cand[i] = 0.0
        if fun(cand)[0] <= d0 + tol:
            theta = cand
    return theta


def optimize_theta(
    s: GroupSummaries, template: LambdaTemplate, reml: bool, start: np.ndarray | None = None, check: bool = True
) -> tuple[np.ndarray, OptimizerRecord]:
    """Minimise the profiled deviance from the moment start (or lme4's, Lambda = I), or from
    `start` (warm starts for profiles and bootstrap refits), in the coordinates of `ZFrame`; then
    check the optimum (`check_optimum`) and, when the check fails, search again from the other
    starts and keep the lowest deviance. `converged` is True only at a checked optimum."""
    history: list[tuple[tuple[float, ...], float]] = []
    frame = ZFrame.of(s, template)
    objective = Objective(frame.summaries, template, reml)
    lower = template.lower_bounds
    given = None if start is None else frame.to_internal(np.asarray(start, dtype=float))
    opt = optimize(objective, given, check, Evaluations(objective, history))
    theta, res, result, polished, fun = opt.x, opt.search, opt.check, opt.polished, opt.fun
    if result is not None and result.ok and _on_boundary(theta, template) and _correlated_blocks(template):
        # A boundary point (a variance, or 1 - |correlation|, at 0) can be a local minimum of one
        # Cholesky parameterisation only: the map from theta to tau is singular there. Check it
        # in the reverse column order too, and search on from there when it is not a minimum.
        alt = ZFrame.of(s, template, reverse=True)
        alt_objective = Objective(alt.summaries, template, reml)
        alt_fun = Evaluations(alt_objective, history)
        alt_theta = alt.to_internal(frame.to_original(theta))
        if not check_optimum(alt_fun, alt_theta, lower).ok:
            o2 = optimize(alt_objective, alt_theta, True, alt_fun, restart=False)
            if o2.check is not None and o2.check.ok and alt_fun(o2.x)[0] < fun(theta)[0] - 1e-13 * max(1.0, abs(fun(theta)[0])):
                frame, fun, theta, res, polished, result = alt, alt_fun, o2.x, o2.search, o2.polished, o2.check
    d, g = fun(theta)
    at_bound = (theta <= lower + 1e-8) & np.isfinite(lower)
    free_g = np.where(at_bound, np.minimum(g, 0.0), g) if np.all(np.isfinite(g)) else np.full(g.shape, np.inf)
    theta_out = frame.to_original(theta) if np.all(np.isfinite(theta)) else theta
    converged = result.ok if result is not None else bool(res.success) and bool(np.isfinite(d))
    if result is not None:
        message = f"{res.message}; checked: {result.message}" if result.ok else f"NOT converged: {result.message} ({res.message})"
    else:
        message = str(res.message)
    record = OptimizerRecord(
        method="quasi-Newton + Newton polish" if polished else "quasi-Newton (BFGS from a difference Hessian)",
        n_evaluations=len(history),
        n_iterations=int(res.nit),
        converged=bool(converged),
        return_code=int(res.status) if converged else max(int(res.status), 3),
        message=message,
        history=tuple((tuple(frame.to_original(np.array(t)).tolist()) if not frame.identity and np.isfinite(dv) else t, dv) for t, dv in history),
        gradient_norm=float(np.max(np.abs(free_g), initial=0.0)),
        boundary=template.boundary(theta_out),
        checked=result is not None,
        check=result.message if result is not None else "not checked",
        hessian_min_eigenvalue=result.min_eigenvalue if result is not None else float("nan"),
        predicted_decrease=result.decrease if result is not None else float("nan"),
    )
    return theta_out, record


def _newton_finish(fun, theta: np.ndarray, lower: np.ndarray, check: Check, steps: int = 2) -> np.ndarray:
    """Newton steps over the checked point's free parameters with the check's Hessian (no new
    difference Hessian), each kept only if the deviance does not rise beyond its rounding; none
    when every element of the first step is below POLISH_STEP of its theta (+ 1e-3)."""
    idx = check.idx
    if idx is None or idx.size == 0 or check.hessian is None or check.hessian_idx is None:
        return theta
    d0, g0 = fun(theta)
    pos = np.searchsorted(check.hessian_idx, idx)  # both sorted: idx is a subset
    sub = check.hessian[np.ix_(pos, pos)]
    # (sub is a principal submatrix of the check's positive definite Hessian: a solve, ~3x cheaper
    # than lstsq on a small matrix; only compared with POLISH_STEP)
    try:
        first = np.linalg.solve(sub, g0[idx])
    except np.linalg.LinAlgError:
        first = np.linalg.lstsq(sub, g0[idx], rcond=None)[0]
    if not np.any(np.abs(first) > POLISH_STEP * (np.abs(theta[idx]) + 1e-3)):
        return theta  # pinned down already
    for _ in range(steps):
        taken = _newton_step(fun, theta, d0, g0, sub, idx, lower, 1e-13)
        if taken is None:
            break
        theta, d0, g0, moved = taken
        # Newton converges quadratically: after a step this small the next one (~its square,
        # plus the difference Hessian's ~1e-6 of it) is below the deviance's resolution
        if moved <= 1e-5 * max(1.0, float(np.max(np.abs(theta)))):
            break
    return theta


def _newton_step(fun, theta: np.ndarray, d0: float, g0: np.ndarray, H: np.ndarray, idx: np.ndarray, lower: np.ndarray,
                 rise: float):
    """One projected Newton step over the parameters `idx` with the Hessian H: (theta, d, g, how
    far it moved), or None when H is singular or the deviance rises by more than `rise` of itself."""
    try:
        step = np.linalg.solve(H, g0[idx])
    except np.linalg.LinAlgError:
        return None
    cand = theta.copy()
    cand[idx] -= step
    cand = np.maximum(cand, lower)
    d1, g1 = fun(cand)
    if not d1 <= d0 + rise * max(1.0, abs(d0)):
        return None
    return cand, d1, g1, float(np.max(np.abs(cand - theta)))


def _on_boundary(theta: np.ndarray, template: LambdaTemplate) -> bool:
    return bool(np.any(template.is_diagonal & (np.abs(theta) < 1e-6)))


def _correlated_blocks(template: LambdaTemplate) -> list[tuple[int, ...]]:
    """The terms with correlated random effects: more than one column, every covariance a parameter."""
    return [b for b in template.blocks
            if len(b) > 1 and sum(1 for r in template.rows if r in b) == len(b) * (len(b) + 1) // 2]


def _fd_hessian(fun, x: np.ndarray, g: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """Forward differences of the analytic gradient (one evaluation per parameter), symmetrised;
    over the parameters `idx` only when given (the free ones)."""
    every = idx is None  # (then g and each gradient as they are: the same as indexed by arange)
    idx = np.arange(x.size) if idx is None else idx
    H = np.empty((idx.size, idx.size))
    gi = g if every else g[idx]
    for k, i in enumerate(idx.tolist()):
        h = 1e-6 * max(1.0, abs(float(x[i])))
        xp = x.copy()
        xp[i] += h
        gp = fun(xp)[1]
        H[:, k] = ((gp if every else gp[idx]) - gi) / h
    return 0.5 * (H + H.T)


def _positive(H: np.ndarray, eig: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """H with its eigenvalues raised to a small positive floor (a descent direction always), and
    those eigenvalues (in the order of `eig`, H's eigendecomposition (w, V) when already made)."""
    w, V = np.linalg.eigh(H) if eig is None else eig
    floor = 1e-8 * max(1.0, float(np.abs(w).max()))
    wp = np.maximum(np.abs(w), floor)
    return (V * wp) @ V.T, wp


def _minimize(fun, start: np.ndarray, lower: np.ndarray, max_iter: int = 500, leave=None):
    """Projected quasi-Newton minimisation with lower bounds (lme4's: variances >= 0).

    The Hessian starts as a forward difference of the analytic gradient at the start (m
    evaluations) and is then kept by BFGS updates, so the steps are Newton-like from the first
    one; each iteration costs one evaluation when the full step is taken. Parameters at their
    bound with the gradient pointing out of the region are held there (active set). Stops when
    the predicted decrease g'H^-1 g falls below the deviance's rounding level, or the step below
    1e-10 relative, or when `leave(x)` (given) says the search should go on elsewhere. The
    gradient is analytic (`Objective.value_and_grad`)."""
    x = np.maximum(np.asarray(start, dtype=float), lower)
    f, g = fun(x)
    if not np.isfinite(f):
        return SimpleNamespace(x=x, nit=0, success=False, status=2, message="the deviance is not finite at the start")
    B = _positive(_fd_hessian(fun, x, g))[0]
    status, message, it = 1, "iteration limit reached", 0
    while it < max_iter:
        it += 1
        free = ~((x <= lower) & (g > 0))
        if not free.any():
            status, message = 0, "all parameters at their bounds"
            break
        if free.all():  # (the same solve as over B[np.ix_(idx, idx)], without the copies)
            d = -np.linalg.solve(B, g)
        else:
            idx = np.flatnonzero(free)
            d = np.zeros_like(x)
            d[idx] = -np.linalg.solve(B[np.ix_(idx, idx)], g[idx])
        decrease = float(-(g @ d))
        noise = 1e-13 * max(1.0, abs(f))  # the deviance's rounding level (sums over N rows)
        if decrease <= 1e-3 * noise:
            status, message = 0, "converged: predicted decrease below rounding"
            break
        alpha, accepted = 1.0, False
        # a trial step below 1e-10 of x moves nothing the deviance can resolve (its rounding at
        # 10^6 rows and more, ~1e-12 of itself, is above `noise`): no more halvings then
        tiny = 1e-10 * max(1.0, float(np.abs(x).max()))
        while alpha > 1e-12 and alpha * float(np.abs(d).max()) > tiny:
            xn = np.maximum(x + alpha * d, lower)
            fn, gn = fun(xn)
            if math.isfinite(fn) and fn <= f - 1e-4 * alpha * decrease + noise:
                accepted = True
                break
            alpha *= 0.5
        if not accepted:
            status, message = 0 if decrease < 1e-6 * max(1.0, abs(f)) else 2, "no further decrease found"
            break
        step, dg = xn - x, gn - g
        x, f, g = xn, fn, gn
        sy = float(step @ dg)
        # (np.linalg.norm of a vector of floats is sqrt(v.dot(v)), np.outer(a, b) a[:, None] * b[None, :]:
        # the same operations without their wrappers)
        if sy > 1e-12 * float(np.sqrt(step.dot(step)) * np.sqrt(dg.dot(dg))):
            Bs = B @ step
            B = B + (dg[:, None] * dg[None, :]) / sy - (Bs[:, None] * Bs[None, :]) / float(step @ Bs)
        if np.abs(step).max() <= 1e-10 * max(1.0, float(np.abs(x).max())):
            status, message = 0, "converged: step below 1e-10"
            break
        if leave is not None and leave(x):
            status, message = 1, "left for another search"
            break
    return SimpleNamespace(x=x, nit=it, success=status == 0, status=status, message=message)


#: a variance element of theta below this at the end of the search in logs goes on in theta itself
LOG_FLOOR = 1e-3
LOG_CEILING = 20.0


def _minimize_log(fun, start: np.ndarray, lower: np.ndarray, is_variance: np.ndarray):
    """`_minimize` over phi = log(theta) for the variance elements (the diagonal of Lambda),
    theta itself for the others; None when no variance element starts above 0.

    The profiled deviance of a factor with few units is far from quadratic in its theta (about
    J log(1 + theta^2 n_j), steep towards 0, flat above): quasi-Newton steps in theta overshoot
    towards the bound and take ~10 iterations on InstEval's 28 department-by-service units;
    in log(theta) it is near quadratic (5 iterations). log(theta) cannot reach a variance at 0,
    so a search that ends with a variance element below LOG_FLOOR (relative SDs, the optimiser's
    scaled coordinates) goes on in theta from there, where the bound, the snap to zero and the
    saddle probes work (the search in logs stops as soon as one is there: towards a variance at 0
    it would take a unit step in log(theta) per iteration). The evaluations are those of `fun` at theta = exp(phi) (remembered, as
    every other); the check of the optimum (`check_optimum`) is made in theta as always.
    gradient: d/dphi = theta d/dtheta."""
    v = is_variance & (start > 0)
    if not v.any():
        return None

    def theta_of(phi: np.ndarray) -> np.ndarray:
        x = phi.copy()
        x[v] = np.exp(phi[v])
        return x

    def logfun(phi: np.ndarray) -> tuple[float, np.ndarray]:
        if np.any(phi[v] > LOG_CEILING):
            # a trial step to relative SDs beyond e^20 (the line search halves it): not evaluated,
            # its Lambda'Z'Z Lambda would overflow
            return np.inf, np.full(phi.shape, np.nan)
        x = theta_of(phi)
        d, g = fun(x)
        return d, np.where(v, g * x, g)

    phi0 = start.copy()
    phi0[v] = np.log(start[v])
    floor = math.log(LOG_FLOOR)
    res = _minimize(logfun, phi0, np.where(v, -np.inf, lower), leave=lambda phi: bool(np.any(phi[v] < floor)))
    x = theta_of(np.asarray(res.x, dtype=float))
    if not res.success or np.any(x[v] < LOG_FLOOR):
        more = _minimize(fun, x, lower)
        more.nit += res.nit
        return more
    return SimpleNamespace(x=x, nit=res.nit, success=res.success, status=res.status, message=res.message + " (in log theta)")


def _leave_saddles(fun, theta: np.ndarray, is_variance: np.ndarray, lower, res, rounds: int = 5):
    """Move off a zero diagonal of Lambda when that lowers the deviance.

    The deviance is even in each diagonal element of Lambda (flipping the sign of a column of
    Lambda leaves Lambda Lambda' unchanged), so its gradient there is exactly zero and a
    gradient method that lands on the bound stays there, minimum or not. Probe each such
    element at a few positive values and restart from the best point when it is lower.
    """
    for _ in range(rounds):
        d0 = fun(theta)[0]
        zero = np.flatnonzero(is_variance & (theta < 1e-6))
        best, best_d = None, d0
        for i in zero:
            for delta in (1e-3, 1e-2, 1e-1, 0.5):
                cand = theta.copy()
                cand[i] = delta
                d = fun(cand)[0]
                if d < best_d - 1e-10 * max(1.0, abs(d0)):
                    best, best_d = cand, d
        if best is None:
            break
        res = _minimize(fun, best, lower)
        theta = np.asarray(res.x, dtype=float)
    return theta, res


def _polish(fun, theta: np.ndarray, lower: np.ndarray, steps: int = 4) -> tuple[np.ndarray, bool]:
    """Projected Newton steps on the free (off-bound) parameters, accepted only if they do not
    raise d. The Hessian is a forward difference of the analytic gradient (m evaluations, accurate
    to ~1e-6 relative, so the steps converge at least linearly at that rate), made once and reused."""
    polished = False
    d0, g0 = fun(theta)
    H = np.empty((0, 0))
    idx = np.empty(0, dtype=np.intp)
    for k in range(steps):
        free = ~((theta <= lower + 1e-8) & (g0 > 0))
        if not free.any():
            break
        if k == 0 or not np.array_equal(np.flatnonzero(free), idx):
            idx = np.flatnonzero(free)
            H = _fd_hessian(fun, theta, g0, idx)
            if not np.all(np.linalg.eigvalsh(H) > 0):
                break
        taken = _newton_step(fun, theta, d0, g0, H, idx, lower, 1e-12)
        if taken is None:
            break
        polished = True
        theta, d0, g0, moved = taken
        if moved < 1e-10 * max(1.0, float(np.max(np.abs(theta)))):
            break
    return theta, polished
