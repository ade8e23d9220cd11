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

The chain's per-level work (the factor, L^-T, the selected inverse, A x and the gradient's sums) is
done by the compiled loops of `numerics.blocked` (or their numpy versions) on the chain's levels in
one flat, padded layout (`ChainArrays`); the dense rest is numpy and LAPACK.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dpotrf, dpotri

from multilevel.design.summaries import CrossBlock, GroupSummaries, TermBlock
from multilevel.engine.covariance import SINGULAR_TOL, LambdaTemplate
from multilevel.engine.objective import moment_start
from multilevel.engine.optimizer import Evaluations, OptimizerRecord, ZFrame, optimize
from multilevel.numerics.blocked import (
    call_chain_factor,
    call_chain_gradient,
    call_chain_inverse,
    call_chain_solve,
    call_mirror_lower,
    chain_seconds,
)
from multilevel.numerics.units import deviance, profiled_sigma2
from multilevel.parallel import dense_blas_threads


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
class ChainArrays:
    """The chain's blocks in the flat, padded layout of the compiled loops (`numerics.blocked`:
    the section on the chain): its levels one factor after another, `off` their first levels,
    q padded to the chain's largest (Qc), the links to the ancestors and the entries (the links
    to the rest) by level. Made once per model."""

    off: np.ndarray  # (m + 1,)
    qs: np.ndarray  # (m,) the chain factors' q
    Qc: int
    Q: int  # the largest q of all factors (the padded lambdas)
    n_links: int  # m - 1, at least 1 (the links' axis)
    Craw: np.ndarray  # (G, Qc, Qc + p + 1)
    anc: np.ndarray  # (G, n_links)
    Araw: np.ndarray  # (G, n_links, Qc, Qc)
    eoff: np.ndarray  # (m + 1,) each chain factor's first entry
    estart: np.ndarray  # (G + 1,)
    erest: np.ndarray  # (n_e,)
    eanc: np.ndarray  # (n_e, n_links)
    Eraw: np.ndarray  # (n_e, Qr, Qc)
    efac: np.ndarray  # (n_e,)
    erow: np.ndarray  # (n_e,)

    @property
    def G(self) -> int:
        return int(self.off[-1])

    @cached_property
    def seconds(self) -> float:
        """The estimated seconds of a chain loop's numpy version (`compile.run`'s rule)."""
        return chain_seconds(self.off, self.estart)

    @cached_property
    def qsize(self) -> tuple[int, ...]:
        """The chain's one q as the length of a tuple (`compile`'s size specialisation: the loops
        compiled for it), or () when the chain's factors differ in q."""
        return (0,) * self.Qc if bool(np.all(self.qs == self.Qc)) else ()

    @classmethod
    def of(cls, st: Structure, s: GroupSummaries) -> ChainArrays:
        terms = s.terms
        m = st.m
        k = s.p + 1
        qs = np.array(st.q[:m], dtype=np.intp)
        Qc = int(qs.max())
        Q = max(st.q)
        Qr = max((st.q[r] for r in st.rest), default=1)
        nl = max(m - 1, 1)
        off = np.concatenate([[0], np.cumsum(st.J[:m])]).astype(np.intp)
        G = int(off[-1])
        Craw = np.zeros((G, Qc, Qc + k))
        anc = np.full((G, nl), -1, dtype=np.intp)
        Araw = np.zeros((G, nl, Qc, Qc))
        sizes = [st.entries[i].level.size for i in range(m)]
        eoff = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
        nE = int(eoff[-1])
        estart = np.empty(G + 1, dtype=np.intp)
        erest = np.empty(nE, dtype=np.intp)
        eanc = np.full((nE, nl), -1, dtype=np.intp)
        Eraw = np.zeros((nE, Qr, Qc))
        efac = np.zeros(nE, dtype=np.intp)
        erow = np.zeros(nE, dtype=np.intp)
        for i in range(m):
            q = st.q[i]
            sl = slice(off[i], off[i + 1])
            C = terms[i].C
            Craw[sl, :q, :q] = C[:, :q, :q]
            Craw[sl, :q, Qc:] = C[:, :q, q:]
            for kk, link in enumerate(st.links[i]):
                a = link.factor
                anc[sl, kk] = off[a] + link.level
                Araw[sl, kk, : st.q[a], :q] = link.A
                eanc[eoff[i] : eoff[i + 1], kk] = eoff[a] + st.to_ancestor[i][kk]
            ent = st.entries[i]
            esl = slice(eoff[i], eoff[i + 1])
            estart[sl] = eoff[i] + ent.start[:-1]
            erest[esl] = ent.rest
            for r, cols, _rows, blocks, where in ent.pairs:
                qr = st.q[r]
                at = eoff[i] + where.reshape(cols.size, qr)  # (n_pairs, q_r): the pair's entries
                Eraw[at, :qr, :q] = blocks[:, None, :, :]
                efac[at] = r
                erow[at] = np.arange(qr)[None, :]
        estart[G] = nE
        return cls(off, qs, Qc, Q, nl, Craw, anc, Araw, eoff, estart, erest, eanc, Eraw, efac, erow)

    def lams(self, lams: tuple[np.ndarray, ...]) -> np.ndarray:
        """Every factor's lambda, padded to (F, Q, Q)."""
        out = np.zeros((len(lams), self.Q, self.Q))
        for f, lam in enumerate(lams):
            out[f, : lam.shape[0], : lam.shape[1]] = lam
        return out


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
    flat: tuple[np.ndarray, ...] = ()  # the chain's (L, Linv, LX, Llink, Lent) in `ChainArrays`' layout
    rest_L: np.ndarray | None = None  # L_dense[:n_R, :n_R] as a Fortran array (LAPACK's, no copy per call)


class BlockedObjective:
    """The profiled deviance (REML or ML) of a model with several grouping factors, as a function
    of theta (the templates' thetas one factor after another, in the summaries' order), with its
    gradient; the `optimizer.Problem` of such a model. Its search runs in log(theta) for the
    variances (`optimizer._minimize_log`)."""

    log_search = True

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

    @cached_property
    def chain(self) -> ChainArrays:
        return ChainArrays.of(self.st, self.s)

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
        dense = np.zeros((nR + k, nR + k))
        total = s._total
        q0 = terms[0].q
        dense[nR:, nR:] = total[q0:, q0:]
        self._fill_rest(dense, lams)  # Lambda_R' Z_R'Z_R Lambda_R
        for r, off in zip(st.rest, st.offsets):
            qr, Jr = st.q[r], st.J[r]
            xz = (terms[r].C[:, qr:, :qr] @ lams[r]).transpose(1, 0, 2).reshape(k, Jr * qr)
            dense[nR:, off : off + Jr * qr] = xz
            dense[off : off + Jr * qr, nR:] = xz.T
        dense[np.arange(nR), np.arange(nR)] += 1.0
        # the chain, level by level (`numerics.blocked.chain_factor`), into the flat layout
        ch = self.chain
        G, Qc, nE = ch.G, ch.Qc, int(ch.erest.size)
        L = np.empty((G, Qc, Qc))
        Linv = np.empty((G, Qc, Qc))
        LX = np.empty((G, k, Qc))
        Llink = np.empty((G, ch.n_links, Qc, Qc))
        Lent = np.empty((nE, Qc))
        XX = np.empty((k, k))
        logdet = call_chain_factor(ch.Craw, ch.Araw, ch.anc, ch.estart, ch.erest, ch.eanc, ch.Eraw, ch.efac, ch.erow,
                                   ch.off, ch.qs, ch.lams(lams), dense, nR, L, Linv, LX, Llink, Lent, XX, ch.qsize, ch.seconds)
        if not np.isfinite(logdet):
            return None
        dense[nR:, nR:] -= XX
        Ls, Linvs, Llinks, Lents, LXs = [], [], [], [], []
        for i in range(st.m):
            q = st.q[i]
            sl = slice(ch.off[i], ch.off[i + 1])
            Ls.append(L[sl, :q, :q])
            Linvs.append(Linv[sl, :q, :q])
            Llinks.append(tuple(Llink[sl, kk, : st.q[link.factor], :q] for kk, link in enumerate(st.links[i])))
            Lents.append(Lent[ch.eoff[i] : ch.eoff[i + 1], :q])
            LXs.append(LX[sl, :, :q])
        # LAPACK's potrf in place on the lower triangle (the chain's updates wrote no other):
        # dense is C-ordered, so its transpose is the Fortran array whose upper triangle that is,
        # and U (A = U'U) there is L in dense. (numpy's cholesky copies twice and, through its own
        # BLAS, took 16 ms against 10 ms on InstEval's 1159 rows.)
        with dense_blas_threads(nR):
            _c, info = dpotrf(dense.T, lower=0, overwrite_a=1, clean=0)
        if info != 0:
            return None
        Ld = dense
        dg = np.diagonal(Ld)
        if not np.all(dg[: nR + self.p] > 0):
            return None
        logdet += 2.0 * float(np.log(dg[:nR]).sum())
        logdet_X = 2.0 * float(np.log(dg[nR : nR + self.p]).sum())
        pwrss = float(Ld[-1, -1]) ** 2
        return Factor(lams, tuple(Ls), tuple(Linvs), tuple(Llinks), tuple(Lents), tuple(LXs), Ld, logdet, logdet_X, pwrss,
                      (L, Linv, LX, Llink, Lent), np.asfortranarray(Ld[:nR, :nR]))

    def _value(self, f: Factor) -> float:
        sigma2 = profiled_sigma2(f.pwrss, self.n, self.p, self.reml)
        return float(deviance(self.n, self.p, self.reml, f.logdet_M, f.logdet_X, f.pwrss, sigma2, 0.0))

    # --- solutions ------------------------------------------------------------------------------

    def _flat_solve(self, f: Factor, rest_rhs: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x = L_M^-T rhs through the blocks (the rest first, then the chain in reverse): rest_rhs
        (n_R, c), the chain's rhs (G, c, Qc) in the flat layout (as LX). Returns (x_rest, x (G, Qc, c))."""
        st, ch = self.st, self.chain
        nR = st.n_rest
        x_rest = solve_triangular(f.rest_L, rest_rhs, lower=True, trans="T", check_finite=False) if nR else rest_rhs
        _L, Linv, _LX, Llink, Lent = f.flat
        x = np.empty((ch.G, ch.Qc, rhs.shape[1]))
        call_chain_solve(Linv, Llink, Lent, ch.anc, ch.estart, ch.erest, ch.off, ch.qs, np.ascontiguousarray(x_rest), rhs, x,
                         ch.qsize, ch.seconds)
        return x_rest, x

    def _flat_solution(self, f: Factor):
        """(beta, P, x_rest, x): the fixed effects, P = (X'V^-1X)^-1 (sigma^2 = 1), and L_M^-T of the
        X and y rows of L (the rest's (n_R, p + 1); the chain's (G, Qc, p + 1), flat)."""
        st, p = self.st, self.p
        nR = st.n_rest
        Ld = f.L_dense
        LXX = Ld[nR : nR + p, nR : nR + p]
        ly = Ld[-1, :]
        beta = solve_triangular(LXX, ly[nR : nR + p], lower=True, trans="T", check_finite=False)
        LXXinv = solve_triangular(LXX, np.eye(p), lower=True, check_finite=False)
        P = LXXinv.T @ LXXinv
        # B: the X rows of L in the random-effect columns, back-substituted; u: the y row minus B beta
        rest_rhs = np.column_stack([Ld[nR : nR + p, :nR].T, ly[:nR]]) if nR else np.zeros((0, p + 1))
        x_rest, x = self._flat_solve(f, rest_rhs, f.flat[2])  # LX (G, p + 1, Qc): X columns then y
        return beta, P, x_rest, x

    def solution(self, f: Factor):
        """(beta, u_rest, u_chain, B_rest, B_chain, P) at the factor: the fixed effects, the
        spherical conditional modes, B = M^-1 Lambda'Z'X and P = (X'V^-1X)^-1 (sigma^2 = 1)."""
        st, ch, p = self.st, self.chain, self.p
        beta, P, x_rest, x = self._flat_solution(f)
        xs = [x[ch.off[i] : ch.off[i + 1], : st.q[i]] for i in range(st.m)]
        B_rest = x_rest[:, :p]
        u_rest = x_rest[:, p] - B_rest @ beta
        B_chain = [xi[:, :, :p] for xi in xs]
        u_chain = [xi[:, :, p] - xi[:, :, :p] @ beta for xi in xs]
        return beta, u_rest, u_chain, B_rest, B_chain, P

    # --- the selected inverse and the gradient ---------------------------------------------------

    def _flat_inverse(self, f: Factor, last: bool = False):
        """Sigma = M^-1 on the blocks of the factor: Sigma_rest (n_R, n_R) dense, and the chain's
        diagonal blocks (G, Qc, Qc), blocks with the ancestors (G, n_links, Qc, Qc) and with the
        entries (n_e, Qc), flat (`numerics.blocked.chain_inverse`). `last`: the factor's rest is
        not used after this (its L is overwritten by its inverse: no copy)."""
        st, ch = self.st, self.chain
        nR = st.n_rest
        if nR:
            # (L L')^-1 from the factor (LAPACK's potri: the lower triangle, then mirrored)
            # (the upper triangle of L_dense is not zero: potri reads the lower one only)
            with dense_blas_threads(nR):
                S_rest, info = dpotri(f.rest_L, lower=1, overwrite_c=int(last))
            if info != 0:
                raise np.linalg.LinAlgError("the rest's factor is singular")
            call_mirror_lower(S_rest)
            S_rest = S_rest.T  # (symmetric: its C-ordered view, which the compiled loops take as it is)
        else:
            S_rest = np.zeros((0, 0))
        _L, Linv, _LX, Llink, Lent = f.flat
        S_diag = np.empty_like(Linv)
        S_link = np.empty_like(Llink)
        S_ent = np.empty_like(Lent)
        call_chain_inverse(Linv, Llink, Lent, ch.anc, ch.estart, ch.erest, ch.eanc, ch.off, ch.qs, np.ascontiguousarray(S_rest),
                           S_diag, S_link, S_ent, ch.qsize, ch.seconds)
        return S_rest, S_diag, S_link, S_ent

    def selected_inverse(self, f: Factor):
        """Sigma = M^-1 on the blocks of the factor: (Sigma_rest (n_R, n_R) dense, per chain factor
        the diagonal blocks (J, q, q), the blocks with each ancestor (J, q_a, q_i) and with its
        entries (n_e, q_i))."""
        st, ch = self.st, self.chain
        S_rest, S_diag, S_link, S_ent = self._flat_inverse(f)
        diag, link, ent = [], [], []
        for i in range(st.m):
            q = st.q[i]
            sl = slice(ch.off[i], ch.off[i + 1])
            diag.append(S_diag[sl, :q, :q])
            link.append([S_link[sl, kk, : st.q[lk.factor], :q] for kk, lk in enumerate(st.links[i])])
            ent.append(S_ent[ch.eoff[i] : ch.eoff[i + 1], :q])
        return S_rest, diag, link, ent

    @cached_property
    def _rest_places(self):
        """Where the rest's blocks go in its dense matrix (made once per model): per rest factor
        its diagonal blocks' (rows, cols), (J, q, q) each; per pair of rest factors its cross
        blocks' (rows, cols), (n_pairs, q_r, q_e) each."""
        st, terms = self.st, self.s.terms
        diag, cross = [], []
        for r, off in zip(st.rest, st.offsets):
            qr, Jr = st.q[r], st.J[r]
            idx = off + np.arange(Jr)[:, None] * qr + np.arange(qr)[None, :]
            diag.append((r, *np.broadcast_arrays(idx[:, :, None], idx[:, None, :])))
            for e_r, e_off in zip(st.rest, st.offsets):
                if e_r >= r:
                    break
                cb = terms[r].cross[e_r]
                rows = off + cb.rows[:, None, None] * qr + np.arange(qr)[None, :, None]
                cols = e_off + cb.cols[:, None, None] * st.q[e_r] + np.arange(st.q[e_r])[None, None, :]
                cross.append((r, e_r, *np.broadcast_arrays(rows, cols)))
        return diag, cross

    def _fill_rest(self, out: np.ndarray, lams: tuple[np.ndarray, ...] | None) -> None:
        """The rest's Z'Z blocks into out[:n_R, :n_R]: raw (lams None, both triangles), or scaled,
        lambda_r' B lambda_e (the lower triangle and the diagonal blocks: what the factor reads)."""
        terms = self.s.terms
        diag, cross = self._rest_places
        for r, rows, cols in diag:
            q = self.st.q[r]
            blk = terms[r].C[:, :q, :q]
            out[rows, cols] = blk if lams is None else lams[r].T @ blk @ lams[r]
        for r, e_r, rows, cols in cross:
            blk = terms[r].cross[e_r].blocks
            scaled = blk if lams is None else lams[r].T @ blk @ lams[e_r]
            out[rows, cols] = scaled  # (a later factor's rows: the lower triangle, all the factor reads)
            if lams is None:
                out[cols, rows] = scaled

    @cached_property
    def _rest_A(self) -> sparse.csr_matrix:
        """The rest's raw Z'Z, sparse (its factors' diagonal blocks and their units' pairs: most
        of it is zero, as the rest's units are crossed, not nested)."""
        A = np.zeros((self.st.n_rest, self.st.n_rest))
        self._fill_rest(A, None)
        return sparse.csr_matrix(A)

    def _rest_lambda_sparse(self, lams: tuple[np.ndarray, ...]) -> sparse.csr_matrix:
        """Lambda_R, block diagonal, sparse."""
        return sparse.block_diag([sparse.kron(sparse.identity(self.st.J[r], format="csr"), sparse.csr_matrix(lams[r]))
                                  for r in self.st.rest], format="csr")

    def _rest_lambda(self, lams: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
        """Lambda_R x for x (n_R, c)."""
        out = np.empty_like(x)
        for r, off in zip(self.st.rest, self.st.offsets):
            qr, Jr = self.st.q[r], self.st.J[r]
            seg = x[off : off + Jr * qr].reshape(Jr, qr, -1)
            out[off : off + Jr * qr] = (lams[r] @ seg).reshape(Jr * qr, -1)
        return out

    def _gradient(self, f: Factor) -> np.ndarray:
        st, ch, s, p = self.st, self.chain, self.s, self.p
        terms = s.terms
        nR = st.n_rest
        lams = f.lams
        beta, P, x_rest, sol = self._flat_solution(f)
        S_rest, S_diag, S_link, S_ent = self._flat_inverse(f, last=True)
        # Lambda [B u] in the original coordinates, and A Lambda [B u]: the chain's part in the loop
        B_rest = x_rest[:, :p]
        u_rest = x_rest[:, p] - B_rest @ beta
        x_rest = self._rest_lambda(lams, np.column_stack([B_rest, u_rest])) if nR else np.zeros((0, p + 1))
        F = len(terms)
        out_rest = np.zeros((nR, p + 1))
        Gz = np.zeros((F, ch.Q, ch.Q))
        Gk = np.zeros((F, ch.Q, ch.Q))
        Qs = np.zeros((F, ch.Q, ch.Q))
        call_chain_gradient(ch.Craw, ch.Araw, ch.anc, ch.estart, ch.erest, ch.Eraw, ch.efac, ch.erow, ch.off, ch.qs,
                            ch.lams(lams), sol, beta, P, np.ascontiguousarray(x_rest), S_diag, S_link, S_ent,
                            out_rest, Gz, Gk, Qs, ch.qsize, ch.seconds)
        A_rest = self._rest_A @ x_rest + out_rest if nR else out_rest
        # K = Z'X - A Lambda B; Z'e = Z'y - Z'X beta - A Lambda u
        nu = self.n - p if self.reml else self.n
        r2 = f.pwrss
        grads = []
        for g in range(F):
            q = st.q[g]
            # d r^2 = -2 sum (Z'e)_r u_c; d log|X'V^-1X| = -2 sum (K P)_r . B_c
            G = -2.0 * (nu / r2) * Gz[g, :q, :q]
            if self.reml:
                G = G - 2.0 * Gk[g, :q, :q]
            grads.append(G)
        for r, off in zip(st.rest, st.offsets):
            qr, Jr = st.q[r], st.J[r]
            sl = slice(off, off + Jr * qr)
            ZX = terms[r].C[:, :qr, qr:]
            Ax = A_rest[sl].reshape(Jr, qr, p + 1)
            B = B_rest[sl].reshape(Jr, qr, p)
            K = ZX[..., :p] - Ax[..., :p]
            ze = ZX[..., p] - ZX[..., :p] @ beta - Ax[..., p]
            G = -2.0 * (nu / r2) * np.einsum("jr,jc->rc", ze, u_rest[sl].reshape(Jr, qr))
            if self.reml:
                G = G - 2.0 * np.einsum("jrp,jcp->rc", K @ P, B)
            grads[r] = G
        # d log|M| = 2 sum_v [Sigma Lambda' A]_{(v,c),(v,r)}: Q_f = sum_v sum_u Sigma_vu lambda_u' A_uv
        Q = [Qs[g, : st.q[g], : st.q[g]].copy() for g in range(F)]
        if nR:
            # the diagonal blocks of Sigma_RR Lambda_R' A_RR: Q_r[a, b] = sum_v sum_u Sigma[(v,a), u]
            # H[(v,b), u] with H = A_RR Lambda_R (= (Lambda_R' A_RR)'), summed over H's nonzeros
            H = (self._rest_A @ self._rest_lambda_sparse(lams)).tocoo()
            for r, off in zip(st.rest, st.offsets):
                qr, Jr = st.q[r], st.J[r]
                mine = (H.row >= off) & (H.row < off + Jr * qr)
                rows, cols, vals = H.row[mine] - off, H.col[mine], H.data[mine]
                v, b = np.divmod(rows, qr)
                for a in range(qr):
                    Q[r][a] += np.bincount(b, weights=vals * S_rest[off + v * qr + a, cols], minlength=qr)
        out = np.empty(int(self.bounds[-1]))
        for g, t in enumerate(self.templates):
            Gf = grads[g] + 2.0 * Q[g].T  # d log|M| / d lambda[r, c] = 2 Q[c, r]
            out[self.bounds[g] : self.bounds[g + 1]] = Gf[np.array(t.rows), np.array(t.cols)]
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
    S_f Lambda_f' and theta from Lambda Lambda' (`LambdaTemplate.theta_from_tau`). No frames: the
    identity."""
    if not frames:
        return np.asarray(theta, dtype=float)
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
