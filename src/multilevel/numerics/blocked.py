"""The loops of the blocked Cholesky factor (`engine.blocked`), each with its numpy version
(`compile.run` chooses):

- over the chain (the nested factors), level by level (`chain_factor`: the factor and its Schur
  updates; `chain_solve`: L^-T; `chain_inverse`: the selected inverse; `chain_gradient`: A x and
  the gradient's sums), in the flat layout of the section "the chain" below. A level is a few
  dozen flops (q = 2), so batched numpy costs its temporaries and np.add.at's scatters: at 200,000
  children in 2,000 schools (10^6 rows, q = 2 at both) a value took 0.27 s and a value with its
  gradient 0.68 s in numpy; the loops stream the levels once per step. Compiled for the chain's one
  q when its factors share it (`qsize`, `compile`'s size specialisation), else for any q.
- over a chain level's links to the dense rest (the crossed factors): per level, a few entries of a
  dense matrix of thousands of rows (InstEval: 2972 students, each linked to ~25 of 1156 lecturers
  and departments). Each level touches |links|^2 elements of the dense matrix (1.9 million for
  InstEval); numpy needs one fancy-indexing call per level (0.19 s an evaluation for InstEval),
  the loop ~2 ms. Entries are sorted by level; `start[j]:start[j+1]` are level j's.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from multilevel.numerics.compile import Loops, run


def rest_update_numpy(dense, nR, start, rest, Lent, LX):
    """The Schur update of the rest and of its rows of [X y] by a chain factor's levels, in numpy
    (one fancy-indexed update per level): dense[rho_a, rho_b] -= L_a . L_b for the entries a, b
    of one level, dense[nR + x, rho_a] (and its mirror) -= LX[j, x] . L_a."""
    for j in range(start.shape[0] - 1):
        a, b = start[j], start[j + 1]
        if a == b:
            continue
        idx = rest[a:b]
        Lj = Lent[a:b]
        dense[np.ix_(idx, idx)] -= Lj @ Lj.T
        upd = LX[j] @ Lj.T
        dense[nR:, idx] -= upd
        dense[idx, nR:] -= upd.T


def gather_rest_numpy(S, start, rest, Lent, out):
    """out[a] = sum over the entries b of a's level of S[rho_a, rho_b] L_b (Takahashi's product of
    the rest's inverse with a level's links), in numpy."""
    for j in range(start.shape[0] - 1):
        a, b = start[j], start[j + 1]
        if a == b:
            continue
        idx = rest[a:b]
        out[a:b] = S[np.ix_(idx, idx)] @ Lent[a:b]


def scale_level(Craw, Araw, estart, Eraw, efac, erow, lams, L, LX, Llink, Lent, T, row, g, i, m, q, qs, nq):
    """Level g's (of chain factor i) scaled blocks (`chain_factor`): D = lam' Z'Z lam + I into L[g],
    Z'[X y] lam into LX[g], lam_a' Z_a'Z lam into Llink[g], lam_r' Z_r'Z lam into its entries' Lent."""
    Qc = Craw.shape[1]
    Qr = Eraw.shape[1]
    k = LX.shape[1]
    for a in range(q):
        for b in range(q):
            s = 0.0
            for c in range(q):
                s += lams[i, c, a] * Craw[g, c, b]
            T[a, b] = s
    for a in range(q):
        for b in range(q):
            s = 0.0
            for c in range(q):
                s += T[a, c] * lams[i, c, b]
            L[g, a, b] = s + 1.0 if a == b else s
    for x in range(k):
        for b in range(q):
            s = 0.0
            for c in range(q):
                s += Craw[g, c, Qc + x] * lams[i, c, b]
            LX[g, x, b] = s
    for kk in range(m - 1 - i):
        fa = i + 1 + kk
        qa = nq if nq else qs[fa]
        for a in range(qa):
            for d in range(q):
                s = 0.0
                for c in range(qa):
                    s += lams[fa, c, a] * Araw[g, kk, c, d]
                T[a, d] = s
        for a in range(qa):
            for b in range(q):
                s = 0.0
                for d in range(q):
                    s += T[a, d] * lams[i, d, b]
                Llink[g, kk, a, b] = s
    for e in range(estart[g], estart[g + 1]):
        r = efac[e]
        a = erow[e]
        for d in range(q):
            s = 0.0
            for c in range(Qr):
                s += lams[r, c, a] * Eraw[e, c, d]
            row[d] = s
        for b in range(q):
            s = 0.0
            for d in range(q):
                s += row[d] * lams[i, d, b]
            Lent[e, b] = s


def chain_factor(Craw, Araw, anc, estart, erest, eanc, Eraw, efac, erow, off, qs, lams, dense, nR, L, Linv, LX, Llink, Lent, XX, qsize):
    """The chain's part of the blocked Cholesky factor (engine.blocked's module doc): scale every
    level's blocks (D = lam' Z'Z lam + I, Z'[X y] lam, lam_a' Z_a'Z lam, lam_r' Z_r'Z lam), then per
    level in order: L L' = D, Linv = L^-1, the links times L^-T, and the Schur updates of its
    ancestors' blocks, of the rest (`rest_update_numpy`'s update) and of [X y]'[X y] (summed into XX). Returns
    log|D| summed over the chain, nan when a D is not positive definite."""
    nq = len(qsize)  # the chain's one q, a constant of the compiled code (0: the q differ)
    m = off.shape[0] - 1
    Qc = Craw.shape[1]
    k = LX.shape[1]
    T = np.empty((Qc, Qc))
    row = np.empty(Qc)
    # scale every level's blocks (the ancestors' first: the levels update them before their turn)
    for i in range(1, m):
        q = nq if nq else qs[i]
        for g in range(off[i], off[i + 1]):
            scale_level(Craw, Araw, estart, Eraw, efac, erow, lams, L, LX, Llink, Lent, T, row, g, i, m, q, qs, nq)
    # log|D| and XX are sums over all the levels, of which the deviance keeps a small difference
    # (X'V^-1X = X'X - XX): summed with Neumaier's compensation (error ~ eps, not ~ eps * levels,
    # as numpy's pairwise sums and BLAS's blocked ones of the numpy version)
    logdet = 0.0
    logdet_c = 0.0
    XXc = np.zeros((k, k))
    for x in range(k):
        for y in range(k):
            XX[x, y] = 0.0
    for i in range(m):
        q = nq if nq else qs[i]
        nl = m - 1 - i
        for g in range(off[i], off[i + 1]):
            if i == 0:  # scaled as it is eliminated (one pass over the most levels)
                scale_level(Craw, Araw, estart, Eraw, efac, erow, lams, L, LX, Llink, Lent, T, row, g, i, m, q, qs, nq)
            for a in range(q):
                for b in range(a + 1):
                    s = L[g, a, b]
                    for c in range(b):
                        s -= L[g, a, c] * L[g, b, c]
                    if a == b:
                        if not s > 0.0:
                            return np.nan
                        L[g, a, a] = np.sqrt(s)
                        v = 2.0 * np.log(L[g, a, a])
                        t = logdet + v
                        if abs(logdet) >= abs(v):
                            logdet_c += (logdet - t) + v
                        else:
                            logdet_c += (v - t) + logdet
                        logdet = t
                    else:
                        L[g, a, b] = s / L[g, b, b]
                for b in range(a + 1, q):
                    L[g, a, b] = 0.0
            for b in range(q):
                for a in range(q):
                    if a < b:
                        Linv[g, a, b] = 0.0
                    elif a == b:
                        Linv[g, a, a] = 1.0 / L[g, a, a]
                    else:
                        s = 0.0
                        for c in range(b, a):
                            s -= L[g, a, c] * Linv[g, c, b]
                        Linv[g, a, b] = s / L[g, a, a]
            # the links times L^-T (in place, row by row)
            for x in range(k):
                for b in range(q):
                    s = 0.0
                    for c in range(b + 1):
                        s += LX[g, x, c] * Linv[g, b, c]
                    row[b] = s
                for b in range(q):
                    LX[g, x, b] = row[b]
            for kk in range(nl):
                for a in range(nq if nq else qs[i + 1 + kk]):
                    for b in range(q):
                        s = 0.0
                        for c in range(b + 1):
                            s += Llink[g, kk, a, c] * Linv[g, b, c]
                        row[b] = s
                    for b in range(q):
                        Llink[g, kk, a, b] = row[b]
            e0 = estart[g]
            e1 = estart[g + 1]
            for e in range(e0, e1):
                for b in range(q):
                    s = 0.0
                    for c in range(b + 1):
                        s += Lent[e, c] * Linv[g, b, c]
                    row[b] = s
                for b in range(q):
                    Lent[e, b] = row[b]
            # the Schur updates of the ancestors (their blocks not factored yet)
            for kk in range(nl):
                an = anc[g, kk]
                qa = nq if nq else qs[i + 1 + kk]
                for a in range(qa):
                    for b in range(qa):
                        s = 0.0
                        for d in range(q):
                            s += Llink[g, kk, a, d] * Llink[g, kk, b, d]
                        L[an, a, b] -= s
                for x in range(k):
                    for b in range(qa):
                        s = 0.0
                        for d in range(q):
                            s += LX[g, x, d] * Llink[g, kk, b, d]
                        LX[an, x, b] -= s
                for k2 in range(kk + 1, nl):
                    for a in range(nq if nq else qs[i + 1 + k2]):
                        for b in range(qa):
                            s = 0.0
                            for d in range(q):
                                s += Llink[g, k2, a, d] * Llink[g, kk, b, d]
                            Llink[an, k2 - kk - 1, a, b] -= s
                for e in range(e0, e1):
                    ea = eanc[e, kk]
                    for b in range(qa):
                        s = 0.0
                        for d in range(q):
                            s += Lent[e, d] * Llink[g, kk, b, d]
                        Lent[ea, b] -= s
            # the rest and its rows of [X y] (`rest_update_numpy`'s update), and [X y]'[X y]:
            # the lower triangle only (the dense factor reads no other; a level's entries are
            # distinct rest columns, so each pair is one element of it)
            for ea in range(e0, e1):
                ra = erest[ea]
                for eb in range(e0, ea + 1):
                    s = 0.0
                    for c in range(q):
                        s += Lent[ea, c] * Lent[eb, c]
                    rb = erest[eb]
                    if ra >= rb:
                        dense[ra, rb] -= s
                    else:
                        dense[rb, ra] -= s
                for x in range(k):
                    s = 0.0
                    for c in range(q):
                        s += LX[g, x, c] * Lent[ea, c]
                    dense[nR + x, ra] -= s
            for x in range(k):
                for y in range(k):
                    s = 0.0
                    for c in range(q):
                        s += LX[g, x, c] * LX[g, y, c]
                    t = XX[x, y] + s
                    if abs(XX[x, y]) >= abs(s):
                        XXc[x, y] += (XX[x, y] - t) + s
                    else:
                        XXc[x, y] += (s - t) + XX[x, y]
                    XX[x, y] = t
    for x in range(k):
        for y in range(k):
            XX[x, y] += XXc[x, y]
    return logdet + logdet_c


def chain_solve(Linv, Llink, Lent, anc, estart, erest, off, qs, x_rest, rhs, x, qsize):
    """x = L^-T rhs through the chain (after the rest: x_rest solved; rhs (G, c, Qc), x (G, Qc, c),
    rhs as LX is laid out): levels of the last chain factor first; per level r = rhs_g' - sum_links
    Llink' x_anc - sum_entries Lent' x_rest[rho], x_g = Linv' r."""
    nq = len(qsize)  # the chain's one q, a constant of the compiled code (0: the q differ)
    m = off.shape[0] - 1
    Qc = x.shape[1]
    nc = x.shape[2]
    r = np.empty((Qc, nc))
    acc = np.empty((Qc, nc))
    for i in range(m - 1, -1, -1):
        q = nq if nq else qs[i]
        nl = m - 1 - i
        for g in range(off[i], off[i + 1]):
            for a in range(q):
                for t in range(nc):
                    r[a, t] = rhs[g, t, a]
            for kk in range(nl):
                an = anc[g, kk]
                for a in range(q):
                    for t in range(nc):
                        s = 0.0
                        for b in range(nq if nq else qs[i + 1 + kk]):
                            s += Llink[g, kk, b, a] * x[an, b, t]
                        r[a, t] -= s
            e0 = estart[g]
            e1 = estart[g + 1]
            if e1 > e0:
                for a in range(q):
                    for t in range(nc):
                        acc[a, t] = 0.0
                for e in range(e0, e1):
                    re = erest[e]
                    for a in range(q):
                        for t in range(nc):
                            acc[a, t] += Lent[e, a] * x_rest[re, t]
                for a in range(q):
                    for t in range(nc):
                        r[a, t] -= acc[a, t]
            for a in range(q):
                for t in range(nc):
                    s = 0.0
                    for b in range(a, q):
                        s += Linv[g, b, a] * r[b, t]
                    x[g, a, t] = s


def chain_inverse(Linv, Llink, Lent, anc, estart, erest, eanc, off, qs, S_rest, S_diag, S_link, S_ent, qsize):
    """Sigma = M^-1 on the chain's blocks (Takahashi's recurrence, engine.blocked's module doc),
    levels of the last chain factor first, given the rest's block S_rest: per level
    T_S = Sigma_{S,S} L_{S,v} (S: its ancestors and entries), Sigma_{S,v} = -T_S L_vv^-1 (S_link,
    S_ent), Sigma_vv = L_vv^-T (L_vv^-1 - L_{S,v}' Sigma_{S,v}) (S_diag)."""
    nq = len(qsize)  # the chain's one q, a constant of the compiled code (0: the q differ)
    m = off.shape[0] - 1
    Qc = Linv.shape[1]
    nlmax = Llink.shape[1]
    most = 1
    for g in range(off[m]):
        most = max(most, estart[g + 1] - estart[g])
    T = np.empty((nlmax, Qc, Qc))
    Te = np.empty((most, Qc))
    W = np.empty((Qc, Qc))
    inner = np.empty((Qc, Qc))
    for i in range(m - 1, -1, -1):
        q = nq if nq else qs[i]
        nl = m - 1 - i
        for g in range(off[i], off[i + 1]):
            e0 = estart[g]
            e1 = estart[g + 1]
            for kk in range(nl):
                an = anc[g, kk]
                qa = nq if nq else qs[i + 1 + kk]
                for a in range(qa):
                    for c in range(q):
                        s = 0.0
                        for b in range(qa):
                            s += S_diag[an, a, b] * Llink[g, kk, b, c]
                        T[kk, a, c] = s
                for k2 in range(nl):
                    if k2 == kk:
                        continue
                    q2 = (nq if nq else qs[i + 1 + k2])
                    a2 = anc[g, k2]
                    for a in range(qa):
                        for c in range(q):
                            s = 0.0
                            if k2 > kk:  # Sigma_{a, a2}: a's block with its ancestor a2, transposed
                                for b in range(q2):
                                    s += S_link[an, k2 - kk - 1, b, a] * Llink[g, k2, b, c]
                            else:  # a2 nearer: a2's block with a
                                for b in range(q2):
                                    s += S_link[a2, kk - k2 - 1, a, b] * Llink[g, k2, b, c]
                            W[a, c] = s
                    for a in range(qa):
                        for c in range(q):
                            T[kk, a, c] += W[a, c]
                if e1 > e0:
                    for a in range(qa):
                        for c in range(q):
                            W[a, c] = 0.0
                    for e in range(e0, e1):
                        ea = eanc[e, kk]
                        for a in range(qa):
                            for c in range(q):
                                W[a, c] += S_ent[ea, a] * Lent[e, c]
                    for a in range(qa):
                        for c in range(q):
                            T[kk, a, c] += W[a, c]
            for e in range(e0, e1):
                for c in range(q):
                    Te[e - e0, c] = 0.0
            # (S_rest is symmetric: each pair of the level's entries read once, for both)
            for e in range(e0, e1):
                ra = erest[e]
                for e2 in range(e0, e):
                    s = S_rest[ra, erest[e2]]
                    for c in range(q):
                        Te[e - e0, c] += s * Lent[e2, c]
                        Te[e2 - e0, c] += s * Lent[e, c]
                s = S_rest[ra, ra]
                for c in range(q):
                    Te[e - e0, c] += s * Lent[e, c]
            for e in range(e0, e1):
                for kk in range(nl):
                    ea = eanc[e, kk]
                    for c in range(q):
                        s = 0.0
                        for b in range(nq if nq else qs[i + 1 + kk]):
                            s += S_ent[ea, b] * Llink[g, kk, b, c]
                        Te[e - e0, c] += s
            for kk in range(nl):
                for a in range(nq if nq else qs[i + 1 + kk]):
                    for d in range(q):
                        s = 0.0
                        for c in range(q):
                            s += T[kk, a, c] * Linv[g, c, d]
                        S_link[g, kk, a, d] = -s
            for e in range(e0, e1):
                for d in range(q):
                    s = 0.0
                    for c in range(q):
                        s += Te[e - e0, c] * Linv[g, c, d]
                    S_ent[e, d] = -s
            for a in range(q):
                for b in range(q):
                    inner[a, b] = Linv[g, a, b]
            for kk in range(nl):
                for a in range(q):
                    for b in range(q):
                        s = 0.0
                        for c in range(nq if nq else qs[i + 1 + kk]):
                            s += Llink[g, kk, c, a] * S_link[g, kk, c, b]
                        inner[a, b] -= s
            if e1 > e0:
                for a in range(q):
                    for b in range(q):
                        W[a, b] = 0.0
                for e in range(e0, e1):
                    for a in range(q):
                        for b in range(q):
                            W[a, b] += Lent[e, a] * S_ent[e, b]
                for a in range(q):
                    for b in range(q):
                        inner[a, b] -= W[a, b]
            for a in range(q):
                for b in range(q):
                    s = 0.0
                    for c in range(q):
                        s += Linv[g, c, a] * inner[c, b]
                    S_diag[g, a, b] = s


def mirror_lower(S):
    """S's upper triangle := its lower triangle (a symmetric matrix of which LAPACK made one half)."""
    n = S.shape[0]
    for i in range(n):
        for j in range(i):
            S[j, i] = S[i, j]


def mirror_lower_numpy(S):
    """`mirror_lower` in numpy."""
    iu = np.triu_indices(S.shape[0], 1)
    S[iu] = S.T[iu]


def level_x(sol, beta, lams, x, g, i, q, p):
    """Level g's [B u] (sol[g]: u = the y column - B beta, in place) and x[g] = lam_i [B u]."""
    for a in range(q):
        s = 0.0
        for t in range(p):
            s += sol[g, a, t] * beta[t]
        sol[g, a, p] = sol[g, a, p] - s
    for a in range(q):
        for t in range(p + 1):
            s = 0.0
            for b in range(q):
                s += lams[i, a, b] * sol[g, b, t]
            x[g, a, t] = s


def chain_gradient(Craw, Araw, anc, estart, erest, Eraw, efac, erow, off, qs, lams, sol, beta, P, x_rest,
                   S_diag, S_link, S_ent, x, acc, out_rest, Gz, Gk, Qs, qsize):
    """The chain's sums of the gradient (engine.blocked's module doc). sol (G, Qc, p + 1) = L^-T of
    [X y]'s rows (B and, before beta is taken off, u; made [B u] in place); x = lam [B u] and acc
    (G, Qc, p + 1) scratch. Per level: A x (its own block, its ancestors', its entries' and, in acc,
    its descendants'; out_rest += the rest's part), K = Z'X - A x_B, Z'e = Z'y - Z'X beta - A x_u,
    Gz_i += Z'e u', Gk_i += (K P) B', and Qs_f += the terms of [Sigma Lambda' A] of the chain's
    blocks (the rest's own block is left to the caller)."""
    nq = len(qsize)  # the chain's one q, a constant of the compiled code (0: the q differ)
    m = off.shape[0] - 1
    Qc = Craw.shape[1]
    Qr = Eraw.shape[1]
    nc = sol.shape[2]
    p = nc - 1
    # the ancestors' [B u] and x first (the first factor's are made as its levels come)
    for i in range(1, m):
        q = nq if nq else qs[i]
        for g in range(off[i], off[i + 1]):
            level_x(sol, beta, lams, x, g, i, q, p)
            for a in range(q):
                for t in range(nc):
                    acc[g, a, t] = 0.0
    out = np.empty((Qc, nc))
    KP = np.empty((Qc, p))
    ze = np.empty(Qc)
    T = np.empty((Qc, Qc))
    w = np.empty(Qc)
    for i in range(m):
        q = nq if nq else qs[i]
        nl = m - 1 - i
        for g in range(off[i], off[i + 1]):
            if i == 0:
                level_x(sol, beta, lams, x, g, i, q, p)
            for a in range(q):
                for t in range(nc):
                    s = 0.0
                    for b in range(q):
                        s += Craw[g, a, b] * x[g, b, t]
                    out[a, t] = s if i == 0 else s + acc[g, a, t]
            for kk in range(nl):
                an = anc[g, kk]
                qa = nq if nq else qs[i + 1 + kk]
                for a in range(q):
                    for t in range(nc):
                        s = 0.0
                        for b in range(qa):
                            s += Araw[g, kk, b, a] * x[an, b, t]
                        out[a, t] += s
                for a in range(qa):
                    for t in range(nc):
                        s = 0.0
                        for b in range(q):
                            s += Araw[g, kk, a, b] * x[g, b, t]
                        acc[an, a, t] += s
            for e in range(estart[g], estart[g + 1]):
                re = erest[e]
                rw = erow[e]
                for a in range(q):
                    v = Eraw[e, rw, a]
                    for t in range(nc):
                        out[a, t] += v * x_rest[re, t]
                for t in range(nc):
                    s = 0.0
                    for a in range(q):
                        s += Eraw[e, rw, a] * x[g, a, t]
                    out_rest[re, t] += s
            # K = Z'X - A Lambda B; Z'e = Z'y - Z'X beta - A Lambda u
            for a in range(q):
                s = 0.0
                for t in range(p):
                    s += Craw[g, a, Qc + t] * beta[t]
                ze[a] = (Craw[g, a, Qc + p] - s) - out[a, p]
                for t in range(p):
                    s = 0.0
                    for t2 in range(p):
                        s += (Craw[g, a, Qc + t2] - out[a, t2]) * P[t2, t]
                    KP[a, t] = s
            for a in range(q):
                for b in range(q):
                    Gz[i, a, b] += ze[a] * sol[g, b, p]
                    s = 0.0
                    for t in range(p):
                        s += KP[a, t] * sol[g, b, t]
                    Gk[i, a, b] += s
            # [Sigma Lambda' A]'s diagonal blocks: Sigma_vv lam' A_vv, and through the links
            for a in range(q):
                for c in range(q):
                    s = 0.0
                    for d in range(q):
                        s += lams[i, d, a] * Craw[g, d, c]
                    T[a, c] = s
            for a in range(q):
                for c in range(q):
                    s = 0.0
                    for b in range(q):
                        s += S_diag[g, a, b] * T[b, c]
                    Qs[i, a, c] += s
            for kk in range(nl):
                fa = i + 1 + kk
                qa = nq if nq else qs[fa]
                for b in range(qa):
                    for c in range(q):
                        s = 0.0
                        for d in range(qa):
                            s += lams[fa, d, b] * Araw[g, kk, d, c]
                        T[b, c] = s
                for a in range(q):
                    for c in range(q):
                        s = 0.0
                        for b in range(qa):
                            s += S_link[g, kk, b, a] * T[b, c]
                        Qs[i, a, c] += s
                for b in range(q):
                    for c in range(qa):
                        s = 0.0
                        for d in range(q):
                            s += lams[i, d, b] * Araw[g, kk, c, d]
                        T[b, c] = s
                for a in range(qa):
                    for c in range(qa):
                        s = 0.0
                        for b in range(q):
                            s += S_link[g, kk, a, b] * T[b, c]
                        Qs[fa, a, c] += s
            for e in range(estart[g], estart[g + 1]):
                r = efac[e]
                rw = erow[e]
                for j in range(q):
                    s = 0.0
                    for b in range(Qr):
                        s += lams[r, b, rw] * Eraw[e, b, j]
                    w[j] = s
                for a in range(q):
                    for j in range(q):
                        Qs[i, a, j] += S_ent[e, a] * w[j]
                for b in range(Qr):
                    s = 0.0
                    for d in range(q):
                        s2 = 0.0
                        for c in range(q):
                            s2 += Eraw[e, b, c] * lams[i, c, d]
                        s += S_ent[e, d] * s2
                    Qs[r, rw, b] += s


LOOPS = Loops(globals(), ("mirror_lower", "scale_level", "level_x", "chain_factor", "chain_solve", "chain_inverse", "chain_gradient"))

#: estimated seconds of the numpy versions (`compile.run`'s rule): per level, and per pair of links
LEVEL_SECONDS = 30e-6
PAIR_SECONDS = 2e-9


def _seconds(start: np.ndarray) -> float:
    sizes = np.diff(start)
    return LEVEL_SECONDS * float(np.count_nonzero(sizes)) + PAIR_SECONDS * float(sizes @ sizes)


#: estimated seconds of the chain's numpy versions (`compile.run`'s rule): per chain factor (a few
#: dozen numpy calls), per level (the old numpy path: ~0.17 s a call at 200,000 levels) and per entry;
#: the levels with entries also run a per-level numpy loop over their links (`_seconds`)
CHAIN_FACTOR_SECONDS = 1e-3
CHAIN_LEVEL_SECONDS = 1e-6
CHAIN_ENTRY_SECONDS = 1e-6


def chain_seconds(off: np.ndarray, estart: np.ndarray) -> float:
    """The estimated seconds of a chain loop's numpy version (`compile.run`; the callers keep it)."""
    return (CHAIN_FACTOR_SECONDS * float(off.size - 1) + CHAIN_LEVEL_SECONDS * float(off[-1])
            + CHAIN_ENTRY_SECONDS * float(estart[-1]) + _seconds(estart))


def call_chain_factor(Craw, Araw, anc, estart, erest, eanc, Eraw, efac, erow, off, qs, lams, dense, nR, L, Linv, LX, Llink, Lent,
                      XX, qsize, seconds) -> float:
    """`chain_factor`, compiled or in numpy (`compile.run`): log|D| of the chain (nan: not positive definite)."""
    args: tuple[Any, ...] = (Craw, Araw, anc, estart, erest, eanc, Eraw, efac, erow, off, qs, lams, dense, int(nR), L, Linv, LX,
                             Llink, Lent, XX, qsize)
    return float(run(LOOPS, "chain_factor", args, chain_factor_numpy, seconds))


def call_mirror_lower(S: np.ndarray) -> None:
    """`mirror_lower`, compiled or in numpy (`compile.run`)."""
    run(LOOPS, "mirror_lower", (S,), mirror_lower_numpy, 2e-8 * S.size)


def call_chain_solve(Linv, Llink, Lent, anc, estart, erest, off, qs, x_rest, rhs, x, qsize, seconds) -> None:
    """`chain_solve`, compiled or in numpy (`compile.run`)."""
    run(LOOPS, "chain_solve", (Linv, Llink, Lent, anc, estart, erest, off, qs, x_rest, rhs, x, qsize), chain_solve_numpy,
        seconds)


def call_chain_inverse(Linv, Llink, Lent, anc, estart, erest, eanc, off, qs, S_rest, S_diag, S_link, S_ent, qsize, seconds) -> None:
    """`chain_inverse`, compiled or in numpy (`compile.run`)."""
    run(LOOPS, "chain_inverse", (Linv, Llink, Lent, anc, estart, erest, eanc, off, qs, S_rest, S_diag, S_link, S_ent, qsize),
        chain_inverse_numpy, seconds)


def call_chain_gradient(Craw, Araw, anc, estart, erest, Eraw, efac, erow, off, qs, lams, sol, beta, P, x_rest, S_diag, S_link,
                        S_ent, out_rest, Gz, Gk, Qs, qsize, seconds) -> None:
    """`chain_gradient`, compiled or in numpy (`compile.run`); its scratch made here."""
    x = np.empty_like(sol)
    acc = np.empty_like(sol)
    args: tuple[Any, ...] = (Craw, Araw, anc, estart, erest, Eraw, efac, erow, off, qs, lams, sol, np.ascontiguousarray(beta),
                             np.ascontiguousarray(P), x_rest, S_diag, S_link, S_ent, x, acc, out_rest, Gz, Gk, Qs, qsize)
    run(LOOPS, "chain_gradient", args, chain_gradient_numpy, seconds)


# ----- the chain's loops in numpy: batched over the levels of one factor at a time ------------------


def _lt(a: np.ndarray) -> np.ndarray:
    """The transpose of the last two axes."""
    return np.swapaxes(a, -1, -2)


def _sum_by(level: np.ndarray, values: np.ndarray, J: int) -> np.ndarray:
    """sum of values (n, ...) by level (n,) into (J, ...)."""
    out = np.zeros((J,) + values.shape[1:])
    np.add.at(out, level, values)
    return out


def _entry_levels(estart: np.ndarray) -> np.ndarray:
    """Each entry's (global) level."""
    return np.repeat(np.arange(estart.size - 1), np.diff(estart))


def chain_factor_numpy(Craw, Araw, anc, estart, erest, eanc, Eraw, efac, erow, off, qs, lams, dense, nR, L, Linv, LX, Llink, Lent,
                       XX, qsize):
    """`chain_factor` in numpy: each factor's levels at once (they do not update each other)."""
    m = off.size - 1
    Qc = Craw.shape[1]
    Qr = Eraw.shape[1]
    level = _entry_levels(estart)
    for i in range(m):
        q = qs[i]
        sl = slice(off[i], off[i + 1])
        es = slice(estart[off[i]], estart[off[i + 1]])
        lam = lams[i, :q, :q]
        C = Craw[sl]
        L[sl, :q, :q] = lam.T @ C[:, :q, :q] @ lam + np.eye(q)
        LX[sl, :, :q] = _lt(C[:, :q, Qc:]) @ lam
        for kk in range(m - 1 - i):
            qa = qs[i + 1 + kk]
            Llink[sl, kk, :qa, :q] = lams[i + 1 + kk, :qa, :qa].T @ Araw[sl, kk, :qa, :q] @ lam
        if es.stop > es.start:
            rows = lams[efac[es], :Qr, erow[es]]  # (n_e, Qr): lam_r[:, a] of each entry
            Lent[es, :q] = np.einsum("ec,ecd->ed", rows, Eraw[es][:, :, :q]) @ lam
    logdet = 0.0
    XX[:] = 0.0
    for i in range(m):
        q = qs[i]
        sl = slice(off[i], off[i + 1])
        es = slice(estart[off[i]], estart[off[i + 1]])
        try:
            Lc = np.linalg.cholesky(L[sl, :q, :q])
        except np.linalg.LinAlgError:
            return np.nan
        Li = np.linalg.inv(Lc)
        L[sl, :q, :q] = Lc
        Linv[sl, :q, :q] = Li
        logdet += 2.0 * float(np.log(np.diagonal(Lc, axis1=1, axis2=2)).sum())
        LiT = _lt(Li)
        LX[sl, :, :q] = LX[sl, :, :q] @ LiT
        for kk in range(m - 1 - i):
            qa = qs[i + 1 + kk]
            Llink[sl, kk, :qa, :q] = Llink[sl, kk, :qa, :q] @ LiT
        lev = level[es]
        if lev.size:
            Lent[es, :q] = np.einsum("ec,edc->ed", Lent[es, :q], Linv[lev, :q, :q])
        # Schur updates of the later blocks
        for kk in range(m - 1 - i):
            qa = qs[i + 1 + kk]
            an = anc[sl, kk]
            Lk = Llink[sl, kk, :qa, :q]
            np.add.at(L[:, :qa, :qa], an, -(Lk @ _lt(Lk)))
            np.add.at(LX[:, :, :qa], an, -(LX[sl, :, :q] @ _lt(Lk)))
            for k2 in range(kk + 1, m - 1 - i):
                q2 = qs[i + 1 + k2]
                # the block of the later ancestor with the nearer one (a's own link to it)
                np.add.at(Llink[:, k2 - kk - 1, :q2, :qa], an, -(Llink[sl, k2, :q2, :q] @ _lt(Lk)))
            if lev.size:
                upd = np.einsum("ed,ead->ea", Lent[es, :q], Llink[lev, kk, :qa, :q])  # (n_e, q_a): L_e L_{a,v}'
                np.add.at(Lent[:, :qa], eanc[es, kk], -upd)
        if lev.size:
            start = estart[off[i] : off[i + 1] + 1] - estart[off[i]]
            rest_update_numpy(dense, nR, start, erest[es], Lent[es, :q], LX[sl, :, :q])
        XX += np.einsum("jac,jbc->ab", LX[sl, :, :q], LX[sl, :, :q])
    return logdet


def chain_solve_numpy(Linv, Llink, Lent, anc, estart, erest, off, qs, x_rest, rhs, x, qsize):
    """`chain_solve` in numpy."""
    m = off.size - 1
    level = _entry_levels(estart)
    for i in reversed(range(m)):
        q = qs[i]
        sl = slice(off[i], off[i + 1])
        es = slice(estart[off[i]], estart[off[i + 1]])
        r = _lt(rhs[sl, :, :q]).copy()
        for kk in range(m - 1 - i):
            qa = qs[i + 1 + kk]
            r -= _lt(Llink[sl, kk, :qa, :q]) @ x[anc[sl, kk], :qa]
        if es.stop > es.start:
            contrib = Lent[es, :q, None] * x_rest[erest[es]][:, None, :]  # (n_e, q_i, c)
            r -= _sum_by(level[es] - off[i], contrib, off[i + 1] - off[i])
        x[sl, :q] = _lt(Linv[sl, :q, :q]) @ r


def chain_inverse_numpy(Linv, Llink, Lent, anc, estart, erest, eanc, off, qs, S_rest, S_diag, S_link, S_ent, qsize):
    """`chain_inverse` in numpy."""
    m = off.size - 1
    level = _entry_levels(estart)
    for i in reversed(range(m)):
        q = qs[i]
        nl = m - 1 - i
        sl = slice(off[i], off[i + 1])
        J = off[i + 1] - off[i]
        es = slice(estart[off[i]], estart[off[i + 1]])
        lev = level[es] - off[i]
        Li = Linv[sl, :q, :q]
        # T_S = Sigma_{S,S} L_{S,v} for S = (ancestors, entries); then Sigma_{S,v} = -T_S L_vv^-1
        T_link = []
        for kk in range(nl):
            qa = qs[i + 1 + kk]
            an = anc[sl, kk]
            acc = S_diag[an, :qa, :qa] @ Llink[sl, kk, :qa, :q]
            for k2 in range(nl):
                if k2 == kk:
                    continue
                q2 = qs[i + 1 + k2]
                if k2 > kk:  # Sigma_{a_kk, a_k2}: a_kk's block with its ancestor a_k2, transposed
                    blk = _lt(S_link[an, k2 - kk - 1, :q2, :qa])
                else:  # Sigma_{a_kk, a_k2} with a_k2 nearer: a_k2's block with a_kk
                    blk = S_link[anc[sl, k2], kk - k2 - 1, :qa, :q2]
                acc = acc + blk @ Llink[sl, k2, :q2, :q]
            if lev.size:
                Sa = S_ent[eanc[es, kk], :qa]  # Sigma_{a, rho} for the entries of v
                acc = acc + _sum_by(lev, Sa[:, :, None] * Lent[es, None, :q], J)
            T_link.append(acc)
        if lev.size:
            T_ent = np.zeros((lev.size, q))
            start = estart[off[i] : off[i + 1] + 1] - estart[off[i]]
            gather_rest_numpy(S_rest, start, erest[es], np.ascontiguousarray(Lent[es, :q]), T_ent)
            for kk in range(nl):
                qa = qs[i + 1 + kk]
                Sa = S_ent[eanc[es, kk], :qa]  # (n_e, q_a): Sigma_{rho_e, a}
                T_ent = T_ent + np.einsum("ea,eac->ec", Sa, Llink[sl, kk, :qa, :q][lev])
        for kk in range(nl):
            S_link[sl, kk, : qs[i + 1 + kk], :q] = -(T_link[kk] @ Li)
        if lev.size:
            S_ent[es, :q] = -np.einsum("ec,ecd->ed", T_ent, Li[lev])
        # Sigma_vv = L^-T (L^-1 - L_S' Sigma_{S,v})
        inner = Li.copy()
        for kk in range(nl):
            qa = qs[i + 1 + kk]
            inner = inner - _lt(Llink[sl, kk, :qa, :q]) @ S_link[sl, kk, :qa, :q]
        if lev.size:
            inner = inner - _sum_by(lev, Lent[es, :q, None] * S_ent[es, None, :q], J)
        S_diag[sl, :q, :q] = _lt(Li) @ inner


def chain_gradient_numpy(Craw, Araw, anc, estart, erest, Eraw, efac, erow, off, qs, lams, sol, beta, P, x_rest, S_diag, S_link,
                         S_ent, x, acc, out_rest, Gz, Gk, Qs, qsize):
    """`chain_gradient` in numpy (acc holds A x)."""
    m = off.size - 1
    Qc = Craw.shape[1]
    Qr = Eraw.shape[1]
    p = sol.shape[2] - 1
    level = _entry_levels(estart)
    for i in range(m):
        q = qs[i]
        sl = slice(off[i], off[i + 1])
        sol[sl, :q, p] = sol[sl, :q, p] - sol[sl, :q, :p] @ beta
        x[sl, :q] = lams[i, :q, :q] @ sol[sl, :q]
        acc[sl, :q] = Craw[sl, :q, :q] @ x[sl, :q]
    for i in range(m):
        q = qs[i]
        sl = slice(off[i], off[i + 1])
        es = slice(estart[off[i]], estart[off[i + 1]])
        for kk in range(m - 1 - i):
            qa = qs[i + 1 + kk]
            an = anc[sl, kk]
            A = Araw[sl, kk, :qa, :q]
            acc[sl, :q] += _lt(A) @ x[an, :qa]
            np.add.at(acc[:, :qa], an, A @ x[sl, :q])
        if es.stop > es.start:
            n = es.stop - es.start
            vals = Eraw[es][np.arange(n), erow[es], :q]  # the raw entries (n_e, q_i)
            acc[sl, :q] += _sum_by(level[es] - off[i], vals[:, :, None] * x_rest[erest[es]][:, None, :], off[i + 1] - off[i])
            np.add.at(out_rest, erest[es], np.einsum("ec,ecd->ed", vals, x[level[es], :q]))
    for i in range(m):
        q = qs[i]
        sl = slice(off[i], off[i + 1])
        es = slice(estart[off[i]], estart[off[i + 1]])
        lam = lams[i, :q, :q]
        ZX = Craw[sl, :q, Qc:]
        Ax = acc[sl, :q]
        K = ZX[..., :p] - Ax[..., :p]
        ze = ZX[..., p] - ZX[..., :p] @ beta - Ax[..., p]
        Gz[i, :q, :q] += np.einsum("jr,jc->rc", ze, sol[sl, :q, p])
        Gk[i, :q, :q] += np.einsum("jrp,jcp->rc", K @ P, sol[sl, :q, :p])
        Qs[i, :q, :q] += np.einsum("jab,jbc->ac", S_diag[sl, :q, :q], lam.T @ Craw[sl, :q, :q])
        for kk in range(m - 1 - i):
            a = i + 1 + kk
            qa = qs[a]
            Sav = S_link[sl, kk, :qa, :q]  # Sigma_{a, v}
            A = Araw[sl, kk, :qa, :q]
            # v's row: Sigma_{v,a} lambda_a' A_{a,v}; a's row: Sigma_{a,v} lambda_i' A_{v,a}
            Qs[i, :q, :q] += np.einsum("jba,jbc->ac", Sav, lams[a, :qa, :qa].T @ A)
            Qs[a, :qa, :qa] += np.einsum("jab,jbc->ac", Sav, lam.T @ _lt(A))
        if es.stop > es.start:
            Se = S_ent[es, :q]  # the rows Sigma_{rho_e, v}
            E = Eraw[es][:, :, :q]
            rows = lams[efac[es], :Qr, erow[es]]
            # v's row: Sigma_{v,rho} lambda_r' A_{rho,v}; rho's row: Sigma_{rho,v} lambda_i' A_{v,rho}
            Qs[i, :q, :q] += np.einsum("ei,ej->ij", Se, np.einsum("eb,ebj->ej", rows, E))
            np.add.at(Qs[:, :, :Qr], (efac[es], erow[es]), np.einsum("ed,ebd->eb", Se, E @ lam))
