"""The profiled deviance of a model with several grouping factors (nested, crossed or both), from
the blocked summaries of `design.summaries` (MixedModels.jl's blocked Cholesky factor).

Notation (lme4's). Factors f = 1..F (the summaries' terms: most levels first), factor f with J_f
levels and q_f random effects per level, Lambda_f = I_{J_f} (x) lambda_f (lambda_f lower
triangular, from theta), Lambda = blockdiag(Lambda_f); A = Z'Z (the blocks of the summaries; raw).
The profiled deviance needs, for each theta,

    M = Lambda' A Lambda + I,    log|M|,    X'V^-1 X = R_X'R_X,    r^2 (the penalised RSS),

with V = I + Z Lambda Lambda' Z' (sigma^2 factored out). They all come from the lower Cholesky
factor of the scaled system [Lambda'Z'Z Lambda + I, Lambda'Z'[X y]; [X y]'Z Lambda, [X y]'[X y]],
eliminated in blocks:

- the *chain*: factors 1..m, each nested in the next (every level of f lies in one level of f+1;
  found from the cross blocks: one pair per level). Level j of factor i is eliminated with a
  q_i x q_i Cholesky; it updates its ancestors (one level in each later chain factor), the
  *rest* and [X y]. Cost linear in the number of levels: nested models never fill in.
- the *rest*: the factors m+1..F (crossed with the chain), held with [X y] as one dense matrix
  of size n_R + p + 1, n_R = sum J_f q_f, which fills in (InstEval's 1128 lecturers). A chain
  level's links to the rest are sparse: the rest's levels that share rows with it ("entries", one
  per scalar random effect of the rest).

Deviance: `units.deviance` at `units.profiled_sigma2` (the one formula). Gradient, in theta
directly (E_i = d Lambda / d theta_i, lambda_f[r, c] = theta_i: E_i has a 1 at ((v, r), (v, c))
for every level v of f), with Sigma = M^-1, B = M^-1 Lambda'Z'X, K = Z'V^-1 X = Z'X - Z'Z Lambda B,
u the conditional modes (spherical), Z'e = Z'y - Z'X beta - Z'Z Lambda u:

    d log|M| / d theta_i        =  2 sum_v [Sigma Lambda' A]_{(v,c),(v,r)}
    d r^2 / d theta_i           = -2 sum_v (Z'e)_{(v,r)} u_{(v,c)}
    d log|X'V^-1X| / d theta_i  = -2 sum_v (K P)_{(v,r)} . B_{(v,c)},   P = (X'V^-1X)^-1

Sigma is needed only on the block pattern of A: Takahashi's recurrence over the blocked factor
(selected inversion: the rest's block is the inverse of its Schur complement; then chain levels in
reverse order, Sigma_{S,v} = -Sigma_{S,S} L_{S,v} L_vv^-1, Sigma_vv = L_vv^-T (L_vv^-1 - L_{S,v}'
Sigma_{S,v}), S the blocks below v). The same Sigma gives lme4's conditional variances,
sigma^2 lambda_f Sigma_vv lambda_f'.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dpotri

from multilevel.design.summaries import CrossBlock, GroupSummaries, TermBlock
from multilevel.engine.covariance import SINGULAR_TOL, LambdaTemplate
from multilevel.engine.objective import moment_start
from multilevel.engine.optimizer import Evaluations, OptimizerRecord, ZFrame, optimize
from multilevel.numerics.blocked import call_gather_rest, call_rest_update
from multilevel.numerics.units import deviance, profiled_sigma2


def _lt(a: np.ndarray) -> np.ndarray:
    """The transpose of the last two axes."""
    return np.swapaxes(a, -1, -2)


@dataclass(frozen=True, eq=False)
class ChainLink:
    """A chain factor's blocks with one later chain factor (its ancestor `k` steps up): the
    ancestor's level of each level (J,) and the raw blocks Z_a'Z_i (J, q_a, q_i)."""

    factor: int
    level: np.ndarray
    A: np.ndarray


@dataclass(frozen=True, eq=False)
class Entries:
    """A chain factor's links to the rest, one entry per (level, scalar random effect of the rest
    sharing rows with it), sorted by level: `level` (n,), `rest` (n,) the index in the rest,
    `start` (J+1,) each level's first entry; the raw values are made per pair of levels (`pairs`)."""

    level: np.ndarray
    rest: np.ndarray
    start: np.ndarray
    # per rest factor: (its index, pair levels in the chain factor, pair levels in the rest factor,
    # raw blocks (n_pairs, q_r, q_i), where the pair's q_r entries go in the sorted order)
    pairs: tuple[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]


@dataclass(frozen=True, eq=False)
class Structure:
    """How the factors of the summaries are eliminated (the module doc)."""

    q: tuple[int, ...]
    J: tuple[int, ...]
    m: int  # the chain: factors 0..m-1
    links: tuple[tuple[ChainLink, ...], ...]  # per chain factor, its later chain factors
    entries: tuple[Entries, ...]  # per chain factor, its links to the rest
    to_ancestor: tuple[tuple[np.ndarray, ...], ...]  # per chain factor i and link k: each entry's index in the ancestor's entries
    rest: tuple[int, ...]  # the factors of the rest
    offsets: tuple[int, ...]  # each rest factor's first index in the rest
    n_rest: int

    @classmethod
    def of(cls, s: GroupSummaries) -> Structure:
        terms = s.terms
        F = len(terms)
        q = tuple(t.q for t in terms)
        J = tuple(t.J for t in terms)
        m = 1
        while m < F:
            cross = terms[m].cross[m - 1]
            if not (cross.rows.size == J[m - 1] and np.array_equal(np.sort(cross.cols), np.arange(J[m - 1]))):
                break
            m += 1
        rest = tuple(range(m, F))
        offsets, n_rest = [], 0
        for f in rest:
            offsets.append(n_rest)
            n_rest += J[f] * q[f]
        links = []
        for i in range(m):
            mine = []
            for a in range(i + 1, m):
                cross = terms[a].cross[i]
                order = np.argsort(cross.cols, kind="stable")
                mine.append(ChainLink(a, cross.rows[order].astype(np.intp), cross.blocks[order]))
            links.append(tuple(mine))
        entries = []
        for i in range(m):
            lv, rs, pairs = [], [], []
            for r, off in zip(rest, offsets):
                cross = terms[r].cross[i]
                qr = q[r]
                lv.append(np.repeat(cross.cols, qr))
                rs.append((off + cross.rows[:, None] * qr + np.arange(qr)[None, :]).ravel())
                pairs.append((r, cross.cols.astype(np.intp), cross.rows.astype(np.intp), cross.blocks))
            level = np.concatenate(lv) if lv else np.zeros(0, dtype=np.intp)
            restix = np.concatenate(rs) if rs else np.zeros(0, dtype=np.intp)
            order = np.lexsort((restix, level))
            where = np.empty(order.size, dtype=np.intp)
            where[order] = np.arange(order.size)  # the pairs' entries' places in the sorted order
            placed, at = [], 0
            for r, cols, rows, blocks in pairs:
                n = cols.size * q[r]
                placed.append((r, cols, rows, blocks, where[at : at + n]))
                at += n
            start = np.searchsorted(level[order], np.arange(J[i] + 1)).astype(np.intp)
            entries.append(Entries(level[order].astype(np.intp), restix[order].astype(np.intp), start, tuple(placed)))
        to_ancestor = []
        for i in range(m):
            maps = []
            for link in links[i]:
                a = link.factor
                own, theirs = entries[i], entries[a]
                # the same rest index in the ancestor level of this entry's level
                key_mine = link.level[own.level].astype(np.int64) * max(n_rest, 1) + own.rest
                key_theirs = theirs.level.astype(np.int64) * max(n_rest, 1) + theirs.rest
                pos = np.searchsorted(key_theirs, key_mine)
                if key_mine.size and (pos.max() >= key_theirs.size or not np.array_equal(key_theirs[pos], key_mine)):
                    raise ValueError("A nested level is linked to a level of the rest that its ancestor is not.")
                maps.append(pos.astype(np.intp))
            to_ancestor.append(tuple(maps))
        return cls(q, J, m, tuple(links), tuple(entries), tuple(to_ancestor), rest, tuple(offsets), n_rest)


@dataclass(frozen=True, eq=False)
class Factor:
    """The blocked Cholesky factor at one theta (the module doc), and what the solution needs."""

    lams: tuple[np.ndarray, ...]
    L: tuple[np.ndarray, ...]  # chain factor i: (J_i, q_i, q_i)
    Linv: tuple[np.ndarray, ...]
    L_links: tuple[tuple[np.ndarray, ...], ...]  # chain i, link k: (J_i, q_a, q_i)
    L_ent: tuple[np.ndarray, ...]  # chain i: (n_entries, q_i)
    L_X: tuple[np.ndarray, ...]  # chain i: (J_i, p + 1, q_i)
    L_dense: np.ndarray  # (n_R + p + 1) square, lower
    logdet_M: float
    logdet_X: float
    pwrss: float


class BlockedObjective:
    """The profiled deviance (REML or ML) of a model with several grouping factors, as a function
    of theta (the templates' thetas one factor after another, in the summaries' order), with its
    gradient; the `optimizer.Problem` of such a model."""

    def __init__(self, s: GroupSummaries, templates: tuple[LambdaTemplate, ...], reml: bool):
        if s.weighted or s.precision:
            raise ValueError("Weights are not taken by models with several grouping factors yet.")
        self.s = s
        self.templates = templates
        self.reml = reml
        self.st = Structure.of(s)
        self.p = s.p
        self.n = float(s.n.sum())
        self.sizes = tuple(t.size for t in templates)
        self.bounds = np.cumsum((0,) + self.sizes)

    # --- the Problem protocol -------------------------------------------------------------------

    @cached_property
    def lower(self) -> np.ndarray:
        return np.concatenate([t.lower_bounds for t in self.templates])

    @cached_property
    def is_variance(self) -> np.ndarray:
        return np.concatenate([t.is_diagonal for t in self.templates])

    def start(self) -> tuple[np.ndarray, ...]:
        """The moment start (`moment_start`)."""
        return (self.moment_start(),)

    def starts(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """Other starts: lme4's (Lambda = I), and the variances one tenth and ten times as large."""
        base = np.concatenate([t.start() for t in self.templates])
        return (base, 0.3 * base, 3.0 * base)

    def moment_start(self) -> np.ndarray:
        """A start from each factor's own units' OLS fits (`objective.moment_start` of the factor's
        blocks alone: T_f = cov of the units' coefficients - the mean sampling variance, and its
        sigma2_f), put on a common sigma2 = min_f sigma2_f (the other factors' variance inflates a
        factor's within-unit sigma2_f). Only a start: lme4's (Lambda = I) is the fall-back."""
        parts, sig = [], []
        for term, template in zip(self.s.terms, self.templates):
            one = GroupSummaries(term.C, term.n, term.q, self.p)
            theta = moment_start(one, template)
            lam = template.lam(theta)
            # sigma2_f as moment_start took it: pooled within-unit residuals of the units' OLS fits
            ok = term.n > term.q
            try:
                b = np.linalg.solve(term.ZtZ[ok], term.Zty[ok][:, :, None])[:, :, 0]
                rss = term.yty_j[ok] - np.einsum("ja,ja->j", term.Zty[ok], b)
                s2 = float(rss.sum() / (term.n[ok].sum() - term.q * int(ok.sum())))
            except np.linalg.LinAlgError:
                s2 = np.nan
            parts.append(lam)
            sig.append(s2 if np.isfinite(s2) and s2 > 0 else np.nan)
        if not np.isfinite(sig).any():
            return np.concatenate([t.start() for t in self.templates])
        common = float(np.nanmin(sig))
        out = []
        for lam, s2, template in zip(parts, sig, self.templates):
            scale = np.sqrt(s2 / common) if np.isfinite(s2) else 1.0
            out.append((scale * lam)[np.array(template.rows), np.array(template.cols)])
        return np.concatenate(out)

    def value_and_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        f = self.factor(np.asarray(theta, dtype=float))
        if f is None:
            return np.inf, np.full(len(theta), np.nan)
        return self._value(f), self._gradient(f)

    def value(self, theta: np.ndarray) -> float:
        f = self.factor(np.asarray(theta, dtype=float))
        return np.inf if f is None else self._value(f)

    # --- the factorisation ----------------------------------------------------------------------

    def lams(self, theta: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(t.lam(theta[self.bounds[f] : self.bounds[f + 1]]) for f, t in enumerate(self.templates))

    def factor(self, theta: np.ndarray) -> Factor | None:
        """The blocked Cholesky factor at theta (None where the scaled system is not positive
        definite to rounding)."""
        st, s = self.st, self.s
        terms = s.terms
        lams = self.lams(theta)
        k = self.p + 1
        nR = st.n_rest
        # scaled blocks: Lambda' A Lambda + I and the rest
        D = []
        XZ = []
        LK = []
        E = []
        for i in range(st.m):
            lam = lams[i]
            qi = st.q[i]
            C = terms[i].C
            D.append(lam.T @ C[:, :qi, :qi] @ lam + np.eye(qi))
            XZ.append(C[:, qi:, :qi] @ lam)
            LK.append([lams[link.factor].T @ link.A @ lam for link in st.links[i]])
            values = np.empty((st.entries[i].level.size, qi))
            for r, _cols, _rows, blocks, where in st.entries[i].pairs:
                values[where] = (lams[r].T @ blocks @ lam).reshape(-1, qi)  # (n_pairs, q_r, q_i) by entry
            E.append(values)
        dense = np.zeros((nR + k, nR + k))
        total = s._total
        q0 = terms[0].q
        dense[nR:, nR:] = total[q0:, q0:]
        for r, off in zip(st.rest, st.offsets):
            qr, Jr = st.q[r], st.J[r]
            lam = lams[r]
            C = terms[r].C
            blk = lam.T @ C[:, :qr, :qr] @ lam
            for j in range(qr):
                for c in range(qr):
                    dense[off + j : off + Jr * qr : qr, off + c : off + Jr * qr : qr][np.diag_indices(Jr)] = blk[:, j, c]
            xz = (C[:, qr:, :qr] @ lam).transpose(1, 0, 2).reshape(k, Jr * qr)
            dense[nR:, off : off + Jr * qr] = xz
            dense[off : off + Jr * qr, nR:] = xz.T
            for e_r, e_off in zip(st.rest, st.offsets):
                if e_r >= r:
                    break
                cross = terms[r].cross[e_r]
                qe = st.q[e_r]
                sc = lam.T @ cross.blocks @ lams[e_r]  # (n_pairs, q_r, q_e)
                rows = off + cross.rows[:, None, None] * qr + np.arange(qr)[None, :, None]
                cols = e_off + cross.cols[:, None, None] * qe + np.arange(qe)[None, None, :]
                rows, cols = np.broadcast_arrays(rows, cols)
                dense[rows, cols] = sc
                dense[cols, rows] = sc
        dense[np.arange(nR), np.arange(nR)] += 1.0
        # the chain, level by level (vectorised over the levels of a factor)
        Ls, Linvs, Llinks, Lents, LXs = [], [], [], [], []
        logdet = 0.0
        for i in range(st.m):
            try:
                L = np.linalg.cholesky(D[i])
            except np.linalg.LinAlgError:
                return None
            Linv = np.linalg.inv(L)
            logdet += 2.0 * float(np.log(np.diagonal(L, axis1=1, axis2=2)).sum())
            LinvT = _lt(Linv)
            Llink = [blk @ LinvT for blk in LK[i]]
            ent = st.entries[i]
            Lent = np.einsum("ec,edc->ed", E[i], Linv[ent.level]) if ent.level.size else E[i]
            LX = XZ[i] @ LinvT
            # Schur updates of the later blocks
            for kk, link in enumerate(st.links[i]):
                a = link.factor
                np.add.at(D[a], link.level, -(Llink[kk] @ _lt(Llink[kk])))
                np.add.at(XZ[a], link.level, -(LX @ _lt(Llink[kk])))
                for k2, link2 in enumerate(st.links[i][kk + 1 :], start=kk + 1):
                    # the block of the later ancestor with the nearer one (a's own link to it)
                    k_in_a = link2.factor - a - 1
                    np.add.at(LK[a][k_in_a], link.level, -(Llink[k2] @ _lt(Llink[kk])))
                if ent.level.size:
                    upd = np.einsum("ed,ead->ea", Lent, Llink[kk][ent.level])  # (n_e, q_a): L_e L_{a,v}'
                    np.add.at(E[a], st.to_ancestor[i][kk], -upd)
            if ent.level.size:
                call_rest_update(dense, nR, ent.start, ent.rest, Lent, LX)
            # sum_j LX_j LX_j' as one matrix product: BLAS's blocked sums keep the rounding of
            # the 10^5 terms near sqrt(J) ulps; einsum's running sum made pwrss jump by ~1e-11 of
            # itself between neighbouring thetas at 10^6 rows, above the optimiser's resolution
            flat = np.ascontiguousarray(LX.transpose(1, 0, 2)).reshape(LX.shape[1], -1)
            dense[nR:, nR:] -= flat @ flat.T
            Ls.append(L)
            Linvs.append(Linv)
            Llinks.append(tuple(Llink))
            Lents.append(Lent)
            LXs.append(LX)
        try:
            Ld = np.linalg.cholesky(dense)
        except np.linalg.LinAlgError:
            return None
        dg = np.diagonal(Ld)
        if not np.all(dg[: nR + self.p] > 0):
            return None
        logdet += 2.0 * float(np.log(dg[:nR]).sum())
        logdet_X = 2.0 * float(np.log(dg[nR : nR + self.p]).sum())
        pwrss = float(Ld[-1, -1]) ** 2
        return Factor(lams, tuple(Ls), tuple(Linvs), tuple(Llinks), tuple(Lents), tuple(LXs), Ld, logdet, logdet_X, pwrss)

    def _value(self, f: Factor) -> float:
        sigma2 = profiled_sigma2(f.pwrss, self.n, self.p, self.reml)
        return float(deviance(self.n, self.p, self.reml, f.logdet_M, f.logdet_X, f.pwrss, sigma2, 0.0))

    # --- solutions ------------------------------------------------------------------------------

    def back_solve(self, f: Factor, rest_rhs: np.ndarray, chain_rhs: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """x = L_M^-T rhs through the blocks (the rest first, then the chain in reverse): `rest_rhs`
        (n_R, c), `chain_rhs[i]` (J_i, q_i, c). Returns (x_rest, [x_i])."""
        st = self.st
        nR = st.n_rest
        x_rest = solve_triangular(f.L_dense[:nR, :nR], rest_rhs, lower=True, trans="T") if nR else rest_rhs
        xs: list[np.ndarray] = [np.empty(0)] * st.m
        for i in reversed(range(st.m)):
            r = chain_rhs[i].copy()
            for kk, link in enumerate(st.links[i]):
                r -= _lt(f.L_links[i][kk]) @ xs[link.factor][link.level]
            ent = st.entries[i]
            if ent.level.size:
                contrib = f.L_ent[i][:, :, None] * x_rest[ent.rest][:, None, :]  # (n_e, q_i, c)
                r -= _sum_by(ent.level, contrib, st.J[i])
            xs[i] = _lt(f.Linv[i]) @ r
        return x_rest, xs

    def solution(self, f: Factor):
        """(beta, u_rest, u_chain, B_rest, B_chain, P) at the factor: the fixed effects, the
        spherical conditional modes, B = M^-1 Lambda'Z'X and P = (X'V^-1X)^-1 (sigma^2 = 1)."""
        st, p = self.st, self.p
        nR = st.n_rest
        Ld = f.L_dense
        LXX = Ld[nR : nR + p, nR : nR + p]
        ly = Ld[-1, :]
        beta = solve_triangular(LXX, ly[nR : nR + p], lower=True, trans="T")
        LXXinv = solve_triangular(LXX, np.eye(p), lower=True)
        P = LXXinv.T @ LXXinv
        # B: the X rows of L in the random-effect columns, back-substituted; u: the y row minus B beta
        rest_rhs = np.column_stack([Ld[nR : nR + p, :nR].T, ly[:nR]]) if nR else np.zeros((0, p + 1))
        chain_rhs = [_lt(f.L_X[i]) for i in range(st.m)]  # (J, q_i, p + 1): X columns then y
        x_rest, xs = self.back_solve(f, rest_rhs, chain_rhs)
        B_rest = x_rest[:, :p]
        u_rest = x_rest[:, p] - B_rest @ beta
        B_chain = [x[:, :, :p] for x in xs]
        u_chain = [x[:, :, p] - x[:, :, :p] @ beta for x in xs]
        return beta, u_rest, u_chain, B_rest, B_chain, P

    # --- the selected inverse and the gradient ---------------------------------------------------

    def selected_inverse(self, f: Factor):
        """Sigma = M^-1 on the blocks of the factor: (Sigma_rest (n_R, n_R) dense, per chain factor
        the diagonal blocks (J, q, q), the blocks with each ancestor (J, q_a, q_i) and with its
        entries (n_e, q_i))."""
        st = self.st
        nR = st.n_rest
        if nR:
            # (L L')^-1 from the factor (LAPACK's potri: the lower triangle, then mirrored)
            S_rest, info = dpotri(f.L_dense[:nR, :nR], lower=1)
            if info != 0:
                raise np.linalg.LinAlgError("the rest's factor is singular")
            S_rest = np.tril(S_rest) + np.tril(S_rest, -1).T
        else:
            S_rest = np.zeros((0, 0))
        S_diag: list[np.ndarray] = [np.empty(0)] * st.m
        S_link: list[list[np.ndarray]] = [[] for _ in range(st.m)]
        S_ent: list[np.ndarray] = [np.empty(0)] * st.m
        for i in reversed(range(st.m)):
            ent = st.entries[i]
            links = st.links[i]
            Li = f.Linv[i]  # L_vv^-1
            # T_S = Sigma_{S,S} L_{S,v} for S = (ancestors, entries); then Sigma_{S,v} = -T_S L_vv^-1
            T_link = []
            for kk, link in enumerate(links):
                a = link.factor
                acc = S_diag[a][link.level] @ f.L_links[i][kk]
                for k2, link2 in enumerate(links):
                    if k2 == kk:
                        continue
                    if k2 > kk:  # Sigma_{a_kk, a_k2}: a_kk's block with its ancestor a_k2, transposed
                        blk = _lt(S_link[a][link2.factor - a - 1][link.level])
                    else:  # Sigma_{a_kk, a_k2} with a_k2 nearer: a_k2's block with a_kk
                        b = link2.factor
                        blk = S_link[b][a - b - 1][link2.level]
                    acc = acc + blk @ f.L_links[i][k2]
                if ent.level.size:
                    # Sigma_{a, rho} for the entries of v: the ancestor's entry blocks (n_e, q_a)
                    Sa = S_ent[a][st.to_ancestor[i][kk]]
                    acc = acc + _sum_by(ent.level, Sa[:, :, None] * f.L_ent[i][:, None, :], st.J[i])
                T_link.append(acc)
            if ent.level.size:
                T_ent = call_gather_rest(S_rest, ent.start, ent.rest, f.L_ent[i])  # sum_e' Sigma_R[rho_e, rho_e'] L_e'
                for kk, link in enumerate(links):
                    Sa = S_ent[link.factor][st.to_ancestor[i][kk]]  # (n_e, q_a): Sigma_{rho_e, a}
                    T_ent = T_ent + np.einsum("ea,eac->ec", Sa, f.L_links[i][kk][ent.level])
            S_link[i] = [-(T @ Li) for T in T_link]
            if ent.level.size:
                S_ent[i] = -np.einsum("ec,ecd->ed", T_ent, Li[ent.level])
            else:
                S_ent[i] = np.zeros((0, st.q[i]))
            # Sigma_vv = L^-T (L^-1 - L_S' Sigma_{S,v})
            inner = Li.copy()
            for kk in range(len(links)):
                inner = inner - _lt(f.L_links[i][kk]) @ S_link[i][kk]
            if ent.level.size:
                inner = inner - _sum_by(ent.level, f.L_ent[i][:, :, None] * S_ent[i][:, None, :], st.J[i])
            S_diag[i] = _lt(Li) @ inner
        return S_rest, S_diag, S_link, S_ent

    def _zz_times(self, x_rest: np.ndarray, xs: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """A x for A = Z'Z (raw blocks) and x in the original (unscaled) coordinates, by blocks:
        x_rest (n_R, c), xs[i] (J_i, q_i, c). Returns (rest part, [chain parts])."""
        st, terms = self.st, self.s.terms
        nR = st.n_rest
        out_rest = self._rest_A @ x_rest if nR else x_rest
        outs = []
        for i in range(st.m):
            qi = st.q[i]
            outs.append(terms[i].C[:, :qi, :qi] @ xs[i])
        for i in range(st.m):
            for link in st.links[i]:
                a = link.factor
                outs[i] = outs[i] + _lt(link.A) @ xs[a][link.level]
                outs[a] = outs[a] + _sum_by(link.level, link.A @ xs[i], st.J[a])
            ent = st.entries[i]
            if ent.level.size:
                vals = self._raw_entries[i]  # (n_e, q_i)
                outs[i] = outs[i] + _sum_by(ent.level, vals[:, :, None] * x_rest[ent.rest][:, None, :], st.J[i])
                contrib = np.einsum("ec,ecd->ed", vals, xs[i][ent.level])  # (n_e, c)
                out_rest = out_rest + _sum_rows(ent.rest, contrib, nR)
        return out_rest, outs

    @cached_property
    def _raw_entries(self) -> list[np.ndarray]:
        out = []
        for i in range(self.st.m):
            ent = self.st.entries[i]
            vals = np.empty((ent.level.size, self.st.q[i]))
            for _r, _cols, _rows, blocks, where in ent.pairs:
                vals[where] = blocks.reshape(-1, self.st.q[i])
            out.append(vals)
        return out

    @cached_property
    def _rest_A(self) -> np.ndarray:
        """The rest's raw Z'Z (dense)."""
        st, terms = self.st, self.s.terms
        ident = tuple(np.eye(q) for q in st.q)
        nR = st.n_rest
        A = np.zeros((nR, nR))
        for r, off in zip(st.rest, st.offsets):
            qr, Jr = st.q[r], st.J[r]
            blk = terms[r].C[:, :qr, :qr]
            for j in range(qr):
                for c in range(qr):
                    A[off + j : off + Jr * qr : qr, off + c : off + Jr * qr : qr][np.diag_indices(Jr)] = blk[:, j, c]
            for e_r, e_off in zip(st.rest, st.offsets):
                if e_r >= r:
                    break
                cross = terms[r].cross[e_r]
                qe = st.q[e_r]
                rows = off + cross.rows[:, None, None] * qr + np.arange(qr)[None, :, None]
                cols = e_off + cross.cols[:, None, None] * qe + np.arange(qe)[None, None, :]
                rows, cols = np.broadcast_arrays(rows, cols)
                A[rows, cols] = cross.blocks
                A[cols, rows] = cross.blocks
        del ident
        return A

    def _rest_lambda(self, lams: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
        """Lambda_R x for x (n_R, c)."""
        out = np.empty_like(x)
        for r, off in zip(self.st.rest, self.st.offsets):
            qr, Jr = self.st.q[r], self.st.J[r]
            seg = x[off : off + Jr * qr].reshape(Jr, qr, -1)
            out[off : off + Jr * qr] = (lams[r] @ seg).reshape(Jr * qr, -1)
        return out

    def _gradient(self, f: Factor) -> np.ndarray:
        st, s, p = self.st, self.s, self.p
        terms = s.terms
        nR = st.n_rest
        lams = f.lams
        beta, u_rest, u_chain, B_rest, B_chain, P = self.solution(f)
        S_rest, S_diag, S_link, S_ent = self.selected_inverse(f)
        # Lambda [B u] in the original coordinates, and A Lambda [B u]
        x_rest = self._rest_lambda(lams, np.column_stack([B_rest, u_rest])) if nR else np.zeros((0, p + 1))
        xs = [lams[i] @ np.concatenate([B_chain[i], u_chain[i][:, :, None]], axis=2) for i in range(st.m)]
        A_rest, A_chain = self._zz_times(x_rest, xs)
        # K = Z'X - A Lambda B; Z'e = Z'y - Z'X beta - A Lambda u
        grads = [np.zeros((st.q[g], st.q[g])) for g in range(len(terms))]  # per factor: d/d lambda_f[r, c]
        nu = self.n - p if self.reml else self.n
        r2 = f.pwrss

        def add(g: int, ZX: np.ndarray, Ax: np.ndarray, B: np.ndarray, u: np.ndarray) -> None:
            # ZX (..., q, p+1) raw Z'[X y]; Ax (..., q, p+1) A Lambda [B u]; B (..., q, p); u (..., q)
            K = ZX[..., :p] - Ax[..., :p]
            ze = ZX[..., p] - ZX[..., :p] @ beta - Ax[..., p]
            # d r^2 = -2 sum (Z'e)_r u_c; d log|X'V^-1X| = -2 sum (K P)_r . B_c
            G = -2.0 * (nu / r2) * np.einsum("jr,jc->rc", ze, u)
            if self.reml:
                G = G - 2.0 * np.einsum("jrp,jcp->rc", K @ P, B)
            grads[g] += G

        for i in range(st.m):
            qi = st.q[i]
            add(i, terms[i].C[:, :qi, qi:], A_chain[i], B_chain[i], u_chain[i])
        for r, off in zip(st.rest, st.offsets):
            qr, Jr = st.q[r], st.J[r]
            sl = slice(off, off + Jr * qr)
            ZX = terms[r].C[:, :qr, qr:]
            add(r, ZX, A_rest[sl].reshape(Jr, qr, p + 1), B_rest[sl].reshape(Jr, qr, p), u_rest[sl].reshape(Jr, qr))
        # d log|M| = 2 sum_v [Sigma Lambda' A]_{(v,c),(v,r)}: Q_f = sum_v sum_u Sigma_vu lambda_u' A_uv
        Q = [np.zeros((st.q[g], st.q[g])) for g in range(len(terms))]
        for i in range(st.m):
            qi = st.q[i]
            lam = lams[i]
            Q[i] += np.einsum("jab,jbc->ac", S_diag[i], lam.T @ terms[i].C[:, :qi, :qi])
            for kk, link in enumerate(st.links[i]):
                a = link.factor
                Sav = S_link[i][kk]  # (J_i, q_a, q_i): Sigma_{a, v}
                # v's row: Sigma_{v,a} lambda_a' A_{a,v}; a's row: Sigma_{a,v} lambda_i' A_{v,a}
                Q[i] += np.einsum("jba,jbc->ac", Sav, lams[a].T @ link.A)
                Q[a] += np.einsum("jab,jbc->ac", Sav, lam.T @ _lt(link.A))
            ent = st.entries[i]
            if ent.level.size:
                Se = S_ent[i]  # (n_e, q_i): the rows Sigma_{rho_e, v}
                for r, cols, _rows, blocks, where in ent.pairs:
                    qr, n = st.q[r], cols.size
                    Sp = Se[where].reshape(n, qr, qi)  # Sigma_{rho, v} of each pair of levels
                    # v's row: Sigma_{v,rho} lambda_r' A_{rho,v}; rho's row: Sigma_{rho,v} lambda_i' A_{v,rho}
                    Q[i] += np.einsum("nai,naj->ij", Sp, lams[r].T @ blocks)
                    Q[r] += np.einsum("nad,nbd->ab", Sp, blocks @ lam)
        if nR:
            G_rest = self._rest_lambdaT(lams, self._rest_A)  # Lambda_R' A_RR
            for r, off in zip(st.rest, st.offsets):
                qr, Jr = st.q[r], st.J[r]
                sl = slice(off, off + Jr * qr)
                # the diagonal blocks of Sigma_RR Lambda_R' A_RR: sum_u Sigma[(v,a), u] G[u, (v,b)]
                Sv = S_rest[sl].reshape(Jr, qr, nR)
                Gv = G_rest[:, sl].T.reshape(Jr, qr, nR)
                Q[r] += np.einsum("jan,jbn->ab", Sv, Gv)
        out = np.empty(int(self.bounds[-1]))
        for g, t in enumerate(self.templates):
            Gf = grads[g] + 2.0 * Q[g].T  # d log|M| / d lambda[r, c] = 2 Q[c, r]
            out[self.bounds[g] : self.bounds[g + 1]] = Gf[np.array(t.rows), np.array(t.cols)]
        return out

    def _rest_lambdaT(self, lams, A: np.ndarray) -> np.ndarray:
        """Lambda_R' A for A (n_R, c)."""
        out = np.empty_like(A)
        for r, off in zip(self.st.rest, self.st.offsets):
            qr, Jr = self.st.q[r], self.st.J[r]
            seg = A[off : off + Jr * qr].reshape(Jr, qr, -1)
            out[off : off + Jr * qr] = (lams[r].T @ seg).reshape(Jr * qr, -1)
        return out


def _sum_by(level: np.ndarray, values: np.ndarray, J: int) -> np.ndarray:
    """sum of values (n, ...) by level (n,) into (J, ...)."""
    out = np.zeros((J,) + values.shape[1:])
    np.add.at(out, level, values)
    return out


def _sum_rows(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n,) + values.shape[1:])
    np.add.at(out, index, values)
    return out


def factor_frames(s: GroupSummaries, templates: tuple[LambdaTemplate, ...]) -> tuple[np.ndarray, ...]:
    """Each factor's own coordinates for the optimiser, Z_f' = Z_f S_f (`optimizer.ZFrame` of the
    factor's blocks alone: within a correlated term with a random intercept, a slope far from 0
    shifted by its mean, every column scaled by a power of 2 near 1/SD). The model is the same
    (Lambda_f Lambda_f' = S_f Lambda_f' Lambda_f'' S_f'), but the steps, the difference Hessian
    and the start work on well-scaled parameters whatever the origin and unit of a slope's
    variable (year + 1000 stopped 142 deviance units above the optimum, claimed converged,
    without them)."""
    return tuple(ZFrame.of(GroupSummaries(t.C, t.n, t.q, s.p), tp).S for t, tp in zip(s.terms, templates))


def in_frames(s: GroupSummaries, frames: tuple[np.ndarray, ...]) -> GroupSummaries:
    """The summaries of Z_f S_f (`factor_frames`): C_f -> T' C_f T with T = diag(S_f, I), the
    cross blocks Z_t'Z_s -> S_t' Z_t'Z_s S_s."""
    if all(np.array_equal(S, np.eye(S.shape[0])) for S in frames):
        return s
    terms = []
    for t, (term, S) in enumerate(zip(s.terms, frames)):
        q = term.q
        C = term.C.copy()
        C[:, :, :q] = C[:, :, :q] @ S
        C[:, :q, :] = S.T @ C[:, :q, :]
        cross = tuple(CrossBlock(cb.term, cb.rows, cb.cols, S.T @ cb.blocks @ frames[cb.term], cb.shape) for cb in term.cross)
        terms.append(TermBlock(C, term.n, q, term.factor, cross=cross))
        del t
    total = s._total.copy()
    q0 = s.terms[0].q
    T = np.eye(total.shape[0])
    T[:q0, :q0] = frames[0]
    return GroupSummaries.of_terms(tuple(terms), total=T.T @ total @ T)


def frame_theta(templates: tuple[LambdaTemplate, ...], frames: tuple[np.ndarray, ...], theta: np.ndarray,
                to_internal: bool) -> np.ndarray:
    """theta in the factors' frames from lme4's (to_internal) or back: per factor, Lambda_f =
    S_f Lambda_f' and theta from Lambda Lambda' (`LambdaTemplate.theta_from_tau`)."""
    out, at = [], 0
    for tp, S in zip(templates, frames):
        th = np.asarray(theta[at : at + tp.size], dtype=float)
        at += tp.size
        if np.array_equal(S, np.eye(S.shape[0])):
            out.append(th)
            continue
        lam = np.linalg.solve(S, tp.lam(th)) if to_internal else S @ tp.lam(th)
        out.append(tp.theta_from_tau(lam @ lam.T, 1.0))
    return np.concatenate(out) if out else np.zeros(0)


def optimize_blocked(s: GroupSummaries, templates: tuple[LambdaTemplate, ...], reml: bool,
                     start: np.ndarray | None = None) -> tuple[np.ndarray, OptimizerRecord, BlockedObjective]:
    """Minimise the blocked profiled deviance over theta (`optimizer.optimize`: the quasi-Newton
    search from lme4's start, the check of the optimum, other starts when it fails, the Newton
    finish). `converged` is True only at a checked optimum."""
    objective = BlockedObjective(s, templates, reml)
    history: list[tuple[tuple[float, ...], float]] = []
    opt = optimize(objective, start, True, Evaluations(objective, history))
    theta, res, result = opt.x, opt.search, opt.check
    _d, g = opt.fun(theta)
    lower = objective.lower
    at_bound = (theta <= lower + 1e-8) & np.isfinite(lower)
    free_g = np.where(at_bound, np.minimum(g, 0.0), g) if np.all(np.isfinite(g)) else np.full(g.shape, np.inf)
    converged = bool(result is not None and result.ok)
    if result is not None:
        message = f"{res.message}; checked: {result.message}" if result.ok else f"NOT converged: {result.message} ({res.message})"
    else:
        message = str(res.message)
    names = tuple(n for t in templates for n in t.names)
    boundary = tuple(n for n, b in zip(names, objective.is_variance & (np.abs(theta) < SINGULAR_TOL)) if b)
    record = OptimizerRecord(
        method="quasi-Newton + Newton polish" if opt.polished else "quasi-Newton (BFGS from a difference Hessian)",
        n_evaluations=len(history),
        n_iterations=int(res.nit),
        converged=converged,
        return_code=int(res.status) if converged else max(int(res.status), 3),
        message=message,
        history=tuple(history),
        gradient_norm=float(np.max(np.abs(free_g), initial=0.0)),
        boundary=boundary,
        checked=result is not None,
        check=result.message if result is not None else "not checked",
        hessian_min_eigenvalue=result.min_eigenvalue if result is not None else float("nan"),
        predicted_decrease=result.decrease if result is not None else float("nan"),
    )
    return theta, record, objective
