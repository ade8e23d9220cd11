"""Derivatives with respect to the variance parameters of a model with several grouping factors
(nested, crossed or both), for Satterthwaite's (lmerTest) and Kenward-Roger's (pbkrtest) df.

The same `VarianceDerivatives` as the one-factor code (`variance_derivatives`: P_i, Q_ij, T_ij,
e'W G_i W G_j W e, ...), so that `satterthwaite` and `kenward_roger` work unchanged. Here

    psi = (every factor's tau elements, factor after factor in the summaries' order, each in its
           template's order; sigma2),
    V   = sigma2 (I + Z Lambda Lambda' Z') = sum_i psi_i G_i,
    G_i = Z E_i Z' (E_i = E_ab + E_ba, or E_aa, in every level of the factor of tau_ab), G = I for sigma2,
    W   = V^-1 = (I - Z B Z') / sigma2,   B = Lambda M^-1 Lambda',   M = Lambda'Z'Z Lambda + I.

Nothing of size n is formed: with A = Z'Z (the summaries' blocks), K = I - A B and the columns
Xa = [X e] (e = y - X beta, the GLS residuals),

    S    = Z'W Z   = K A / sigma2                  Y  = Z'W Xa   = K Z'Xa / sigma2
    S2   = Z'W^2 Z = K S / sigma2                  Y2 = Z'W^2 Xa = K Y / sigma2
    Xa'W Xa   = (Xa'Xa - Xa'Z B Z'Xa) / sigma2
    Xa'W^2 Xa = (Xa'Xa - 2 Xa'Z B Z'Xa + Xa'Z B A B Z'Xa) / sigma2^2
    Xa'W^3 Xa = (Xa'W^2 Xa - Y'B Y) / sigma2
    tr W = (n - tr BA) / sigma2,   tr W^2 = (n - 2 tr BA + tr BABA) / sigma2^2

and for tau parameters i, j (sigma2: replace E_i S E_j by I, Y by Y2, S by S2 as the product asks)

    Xa'W G_i W Xa         = Y'E_i Y                (P_i, e'W G_i W X, e'W G_i W e)
    Xa'W G_i W G_j W Xa   = Y'E_i S E_j Y          (Q_ij, e'W G_i W G_j W e)
    tr(W G_i) = tr(E_i S),   tr(W G_i W G_j) = tr(E_i S E_j S),   tr(W G_i W) = tr(E_i S2).

M, M^-1, B and S are block diagonal by the connected components of A (the levels linked through
shared rows: a nested model's top-level units; crossed factors make one component), so every piece
is a sum over them: the algebra is dense within a component (chunks of components of about `CHUNK`
effects) and never across. A nested model costs O(units x (effects per unit)^3), whatever its size
(egsingle: 60 schools of at most 180 effects); a component beyond `MAX_DENSE_Q` effects (crossed
factors with that many levels) is refused (InstEval's Kenward-Roger is out of pbkrtest's reach
too). Within a chunk a factor's effects are held component-major (all its levels' effect a, then
effect b), so that each E_i touches contiguous ranges.

theta_map: d psi / d phi for phi = (lme4's theta, sigma2), block-diagonal by factor (each factor's
block is the one-factor map of its template), the scale on which lmerTest's Satterthwaite is
defined (lmerTest differentiates on (theta, sigma); at an interior optimum the df do not depend on
the scale, and the one-factor code's sigma2 is kept).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.linalg.lapack import dpotrf, dpotri
from scipy.sparse.csgraph import connected_components

from multilevel.engine.blocked import BlockedObjective
from multilevel.errors import SpecificationError
from multilevel.inference import distributions as dist
from multilevel.inference.kenward_roger import KenwardRoger
from multilevel.inference.satterthwaite import df_1d
from multilevel.inference.variance_derivatives import VarianceDerivatives, _theta_jacobian
from multilevel.numerics.units import profiled_sigma2
from multilevel.results.multi import MultiEstimates

#: the largest number of random effects (sum of J_f q_f) for which the dense computation is done
#: (q_tot^2 doubles, a few times over: ~0.3 GB each at 6000)
MAX_DENSE_Q = 6000

#: the connected components of Z'Z are handled in chunks of about this many random effects (dense
#: algebra per chunk: few numpy calls for many small units, little cubic waste)
CHUNK = 128


@dataclass(frozen=True)
class _Layout:
    """Where each factor's random effects are in the component-major order: factor t, effect a,
    all levels: the range off[t] + a J_t ... off[t] + (a+1) J_t."""

    q: tuple[int, ...]
    J: tuple[int, ...]
    off: tuple[int, ...]
    total: int

    def rng(self, t: int, a: int) -> slice:
        start = self.off[t] + a * self.J[t]
        return slice(start, start + self.J[t])

    def index(self, t: int, levels: np.ndarray, a: int) -> np.ndarray:
        return self.off[t] + a * self.J[t] + np.asarray(levels, dtype=np.intp)


def _layout(objective: BlockedObjective) -> _Layout:
    terms = objective.s.terms
    q = tuple(t.q for t in terms)
    J = tuple(t.J for t in terms)
    off = tuple(int(x) for x in np.cumsum((0,) + tuple(a * b for a, b in zip(q, J)))[:-1])
    return _Layout(q, J, off, int(sum(a * b for a, b in zip(q, J))))


def _sparse_blocks(objective: BlockedObjective, lay: _Layout, lams: tuple[np.ndarray, ...] | None = None):
    """(A = Z'Z, Lambda) as sparse matrices in the component-major order (`lams` None: A only)."""
    terms = objective.s.terms
    rows, cols, vals = [], [], []
    lrows, lcols, lvals = [], [], []
    for t, term in enumerate(terms):
        qt, Jt = term.q, term.J
        lv = np.arange(Jt)
        for a in range(qt):
            for b in range(qt):
                rows.append(lay.index(t, lv, a))
                cols.append(lay.index(t, lv, b))
                vals.append(term.C[:, a, b])
                if lams is not None and lams[t][a, b] != 0.0:
                    lrows.append(lay.index(t, lv, a))
                    lcols.append(lay.index(t, lv, b))
                    lvals.append(np.full(Jt, lams[t][a, b]))
        for cross in term.cross:
            s_ = cross.term
            for a in range(qt):
                for b in range(terms[s_].q):
                    r, c, v = lay.index(t, cross.rows, a), lay.index(s_, cross.cols, b), cross.blocks[:, a, b]
                    rows += [r, c]
                    cols += [c, r]
                    vals += [v, v]
    n = lay.total
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    if lams is None:
        return A, None
    if lrows:
        Lam = sp.csr_matrix((np.concatenate(lvals), (np.concatenate(lrows), np.concatenate(lcols))), shape=(n, n))
    else:
        Lam = sp.csr_matrix((n, n))
    return A, Lam


def _z_cross(objective: BlockedObjective, lay: _Layout) -> np.ndarray:
    """Z'[X y] (q_tot, p + 1) in the component-major order."""
    p = objective.p
    out = np.empty((lay.total, p + 1))
    for t, term in enumerate(objective.s.terms):
        for a in range(term.q):
            out[lay.rng(t, a)] = term.C[:, a, term.q :]
    return out


def psi_names_multi(objective: BlockedObjective) -> tuple[str, ...]:
    """var(<factor>.<effect>) and cov(<factor>.<effect>.<effect>) in the templates' order, then sigma2."""
    out = []
    for t in objective.templates:
        for r, c, name in zip(t.rows, t.cols, t.names):
            out.append(f"var({name})" if r == c else f"cov({name})")
    return tuple(out) + ("sigma2",)


@dataclass
class _Sums:
    """The pieces of the module doc, summed over the chunks of random effects (M, S, B are block
    diagonal by the connected components of A, so every piece is a sum over them)."""

    m: int
    p1: int

    def __post_init__(self) -> None:
        m, p1 = self.m, self.p1
        self.F1 = np.zeros((m, p1, p1))  # Y'E_i Y
        self.F12 = np.zeros((m, p1, p1))  # Y'E_i Y2
        self.F = np.zeros((m, m, p1, p1))  # Y'E_i S E_j Y
        self.T = np.zeros((m, m))  # tr(E_i S E_j S)
        self.trES = np.zeros(m)
        self.trES2 = np.zeros(m)
        self.ZBZ = np.zeros((p1, p1))  # Xa'Z B Z'Xa
        self.BZABZ = np.zeros((p1, p1))  # Xa'Z B A B Z'Xa
        self.YBY = np.zeros((p1, p1))
        self.trBA = 0.0
        self.trBABA = 0.0


def _components(A: sp.csr_matrix, max_q: int, chunk: int | None = None) -> list[np.ndarray]:
    """The random effects in chunks of whole connected components of A = Z'Z (a nested model's
    top-level units; one component for a crossed design), each chunk sorted (so that a factor's
    effect a is a contiguous range in it) and about `chunk` long. Refuses a component beyond max_q."""
    chunk = CHUNK if chunk is None else chunk
    ncomp, labels = connected_components(A, directed=False)
    sizes = np.bincount(labels, minlength=ncomp)
    if sizes.max() > max_q:
        raise SpecificationError(
            f"Satterthwaite and Kenward-Roger df of this model are not available yet: {int(sizes.max())} random "
            f"effects are linked to each other through shared rows (crossed factors; at most {max_q}), and the "
            "df take dense matrices of that size. Use df='infinite' (Wald) or a likelihood-ratio test."
        )
    order = np.argsort(labels, kind="stable")
    ends = np.cumsum(sizes)
    out, start, at = [], 0, 0
    for c in range(ncomp):
        at = int(ends[c])
        if at - start >= chunk or c == ncomp - 1:
            out.append(np.sort(order[start:at]))
            start = at
    return out


def _add_chunk(acc: _Sums, idx: np.ndarray, A: sp.csr_matrix, Lam: sp.csr_matrix, ZXa: np.ndarray, s2: float,
               lay: _Layout, params: list[tuple[int, tuple[tuple[int, int], ...]]]) -> None:
    """Add one chunk's share of every piece (module doc), by dense algebra in the chunk."""
    Ac = A[idx][:, idx].toarray()
    Lc = Lam[idx][:, idx].toarray()
    Z = ZXa[idx]
    # each factor's effect a within the chunk: a contiguous range (idx is sorted)
    local = {}
    for t in range(len(lay.q)):
        for a in range(lay.q[t]):
            r = lay.rng(t, a)
            local[t, a] = slice(int(np.searchsorted(idx, r.start)), int(np.searchsorted(idx, r.stop)))
    M = Lc.T @ Ac @ Lc
    M[np.diag_indices_from(M)] += 1.0
    c, info = dpotrf(M, lower=1, overwrite_a=1)
    if info != 0:
        raise SpecificationError("M = Lambda'Z'Z Lambda + I is not positive definite to rounding.")
    Minv, info = dpotri(c, lower=1, overwrite_c=1)
    if info != 0:
        raise SpecificationError("M = Lambda'Z'Z Lambda + I could not be inverted.")
    Minv = np.tril(Minv) + np.tril(Minv, -1).T
    B = Lc @ Minv @ Lc.T  # Lambda M^-1 Lambda'
    AB = Ac @ B
    S = (Ac - AB @ Ac) / s2  # Z'W Z
    S = 0.5 * (S + S.T)
    BZ = B @ Z
    Y = (Z - AB @ Z) / s2  # Z'W Xa
    Y2 = (Y - AB @ Y) / s2  # Z'W^2 Xa
    acc.ZBZ += Z.T @ BZ
    acc.BZABZ += BZ.T @ Ac @ BZ
    acc.YBY += Y.T @ B @ Y
    acc.trBA += float(np.sum(B * Ac))
    acc.trBABA += float(np.sum(AB * AB.T))

    def form(Lm: np.ndarray, Rm: np.ndarray, i: int) -> np.ndarray:
        """Lm' E_i Rm."""
        t, pairs = params[i]
        out = np.zeros((Lm.shape[1], Rm.shape[1]))
        for al, be in pairs:
            out += Lm[local[t, al]].T @ Rm[local[t, be]]
        return out

    SEY = []
    for g, pairs in params:  # S E_j Y
        v = np.zeros_like(Y)
        for ga, de in pairs:
            v += S[:, local[g, ga]] @ Y[local[g, de]]
        SEY.append(v)
    for i, (t, pi) in enumerate(params):
        acc.F1[i] += form(Y, Y, i)
        acc.F12[i] += form(Y, Y2, i)
        for al, be in pi:
            rb, ra = local[t, be], local[t, al]
            acc.trES[i] += float(np.trace(S[rb, ra]))
            # S2 = (S - A B S) / sigma2 = Z'W^2 Z: only the levels' own entries
            acc.trES2[i] += float(np.trace(S[rb, ra]) - np.einsum("ij,ji->", AB[rb], S[:, ra])) / s2
        for j, (g, pj) in enumerate(params):
            acc.F[i, j] += form(Y, SEY[j], i)
            if j < i:
                continue
            for al, be in pi:
                for ga, de in pj:
                    acc.T[i, j] += float(np.sum(S[local[t, be], local[g, ga]] * S[local[t, al], local[g, de]]))


def variance_derivatives_multi(objective: BlockedObjective, theta: np.ndarray, sigma2: float | None = None,
                               max_q: int = MAX_DENSE_Q) -> VarianceDerivatives:
    """`VarianceDerivatives` of the model of `objective` at theta (module doc); `sigma2` None: the
    profiled sigma2 at theta (lme4's sigma^2, REML or ML as the objective). Dense algebra within
    each connected component of Z'Z (chunks of them), none across: a nested model costs O(top-level
    units x their random effects^3); crossed factors make one component of up to `max_q` effects."""
    lay = _layout(objective)
    theta = np.asarray(theta, dtype=float)
    f = objective.factor(theta)
    if f is None:
        raise SpecificationError("The model cannot be evaluated at these variance components (not positive definite).")
    beta, *_rest, Pmat = objective.solution(f)
    p, n = objective.p, objective.n
    s2 = profiled_sigma2(f.pwrss, n, p, objective.reml) if sigma2 is None else float(sigma2)
    lams = f.lams
    A, Lam = _sparse_blocks(objective, lay, lams)
    assert Lam is not None
    chunks = _components(A, max_q)
    # [X e]: Z'Xa, Xa'Xa
    Zxy = _z_cross(objective, lay)
    Zx, Zy = Zxy[:, :p], Zxy[:, p]
    XX, Xy, yy = objective.s.XtX_total, objective.s.Xty_total, objective.s.yty_total
    ZXa = np.column_stack([Zx, Zy - Zx @ beta])
    Xe = Xy - XX @ beta
    XaXa = np.empty((p + 1, p + 1))
    XaXa[:p, :p] = XX
    XaXa[:p, p] = XaXa[p, :p] = Xe
    XaXa[p, p] = yy - 2 * beta @ Xy + beta @ XX @ beta
    # the tau parameters: (factor, its (alpha, beta) pairs of effects: E_ab + E_ba, or E_aa)
    params: list[tuple[int, tuple[tuple[int, int], ...]]] = []
    for t, tp in enumerate(objective.templates):
        for a, b in zip(tp.rows, tp.cols):
            params.append((t, ((a, b),) if a == b else ((a, b), (b, a))))
    m = len(params)
    k = m + 1
    acc = _Sums(m, p + 1)
    for idx in chunks:
        _add_chunk(acc, idx, A, Lam, ZXa, s2, lay, params)
    F2 = (XaXa - 2 * acc.ZBZ + acc.BZABZ) / s2**2  # Xa'W^2 Xa
    F3 = (F2 - acc.YBY) / s2  # Xa'W^3 Xa
    trW = (n - acc.trBA) / s2
    trW2 = (n - 2 * acc.trBA + acc.trBABA) / s2**2

    F1 = np.concatenate([acc.F1, F2[None]])  # Xa'W G_i W Xa
    trWG = np.append(acc.trES, trW)
    F = np.empty((k, k, p + 1, p + 1))  # Xa'W G_i W G_j W Xa
    F[:m, :m] = acc.F
    F[:m, m] = acc.F12  # Xa'W G_i W W Xa
    F[m, :m] = np.swapaxes(acc.F12, 1, 2)
    F[m, m] = F3
    T = np.empty((k, k))
    T[:m, :m] = np.triu(acc.T) + np.triu(acc.T, 1).T
    T[:m, m] = T[m, :m] = acc.trES2
    T[m, m] = trW2

    P = -F1[:, :p, :p]
    eGX = F1[:, p, :p]
    eGe = F1[:, p, p]
    Q = np.ascontiguousarray(F[:, :, :p, :p])
    eGGe = 0.5 * (F[:, :, p, p] + F[:, :, p, p].T)
    Phi = s2 * Pmat
    psi = []
    for t, tp in enumerate(objective.templates):
        tau = s2 * lams[t] @ lams[t].T
        psi += [tau[a, b] for a, b in zip(tp.rows, tp.cols)]
    psi.append(s2)
    return VarianceDerivatives(
        psi_names_multi(objective), np.array(psi), Phi, P, Q, T, eGGe, eGX,
        objective.reml, trWG, eGe, theta_map_multi(objective, lams, s2),
    )


def theta_map_multi(objective: BlockedObjective, lams: tuple[np.ndarray, ...], sigma2: float) -> tuple[np.ndarray, np.ndarray]:
    """d psi / d phi and d2 psi / d phi2 for phi = (theta, sigma2): each factor's block is the
    one-factor map of its template (`variance_derivatives._theta_jacobian`); tau of one factor does
    not depend on another factor's theta."""
    sizes = [tp.size for tp in objective.templates]
    m = int(sum(sizes))
    k = m + 1
    J = np.zeros((k, k))
    H2 = np.zeros((k, k, k))
    at = 0
    for tp, lam, size in zip(objective.templates, lams, sizes):
        Jf, Hf = _theta_jacobian(tp, lam, sigma2)
        blk = slice(at, at + size)
        idx = np.r_[at : at + size, m]  # the factor's parameters and sigma2
        J[blk, blk] = Jf[:size, :size]
        J[blk, m] = Jf[:size, size]
        H2[np.ix_(np.arange(at, at + size), idx, idx)] = Hf[:size]
        at += size
    J[m, m] = 1.0
    return J, H2


@dataclass(frozen=True, eq=False)
class MultiParts:
    """What the df need when no `MultiEstimates` is at hand: the objective, theta and the names of
    the fixed effects (the summaries' coordinates are the data's)."""

    objective: BlockedObjective
    theta: np.ndarray
    names: tuple[str, ...] | None = None


def multi_df(fit: MultiEstimates | MultiParts, L: np.ndarray | None = None, method: str = "satterthwaite",
             vd: VarianceDerivatives | None = None) -> pd.DataFrame:
    """lmerTest's coefficient table (`summary(fit, ddf = ...)`) for the rows of L (default: each
    fixed effect): estimate, se, df, t, p. Satterthwaite: lmerTest's `contest1D` (model-based SE);
    Kenward-Roger: pbkrtest's adjusted SE sqrt(l'Phi_A l) and df (REML fits only)."""
    if method not in ("satterthwaite", "kenward-roger"):
        raise SpecificationError(f"method must be 'satterthwaite' or 'kenward-roger', not {method!r}.")
    if isinstance(fit, MultiEstimates):
        objective = BlockedObjective(fit.summaries, tuple(f.template for f in fit.factors), fit.reml)
        theta, sigma2 = fit.theta, fit.sigma2
        names = list(fit.design.x_names)
        S = fit.design.coords.S  # beta = S beta' + shift: a contrast l is l'S in the summaries' coordinates
        beta_data = fit.beta.to_numpy()
    else:
        objective, theta, sigma2 = fit.objective, np.asarray(fit.theta, float), None
        names = list(fit.names) if fit.names is not None else [f"x{c}" for c in range(objective.p)]
        S = np.eye(objective.p)
        beta_data = None
    if method == "kenward-roger" and not objective.reml:
        raise SpecificationError("Kenward-Roger df are defined for REML fits only (as pbkrtest and lmerTest).")
    vd = vd if vd is not None else variance_derivatives_multi(objective, theta, sigma2)
    if beta_data is None:
        f = objective.factor(np.asarray(theta, float))
        assert f is not None
        beta_data = objective.solution(f)[0]
    p = objective.p
    L = np.eye(p) if L is None else np.atleast_2d(np.asarray(L, dtype=float))
    labels = names if L.shape[0] == p and np.array_equal(L, np.eye(p)) else [f"L{r + 1}" for r in range(L.shape[0])]
    Li = L @ S
    est = L @ beta_data
    if method == "satterthwaite":
        se = np.sqrt(np.einsum("ra,ab,rb->r", Li, vd.Phi, Li))
        df = np.array([df_1d(vd, row) for row in Li])
    else:
        kr = KenwardRoger(vd)
        se = np.sqrt(np.einsum("ra,ab,rb->r", Li, kr.vcov_adjusted, Li))
        df = np.array([kr.ddf(row[None, :]) for row in Li])
    t = est / se
    pval = 2.0 * dist.t_sf(np.abs(t), df)
    return pd.DataFrame({"estimate": est, "se": se, "df": df, "t": t, "p": pval}, index=labels)
