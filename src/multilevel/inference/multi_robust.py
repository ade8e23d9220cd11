"""Cluster-robust (sandwich) covariance of the fixed effects of a model with several grouping
factors: CR0 (HLM3's robust SEs), CR1 and CR2 (clubSandwich's, with its Satterthwaite df).

Clusters must contain whole levels of every factor (clubSandwich refuses non-nested random effects
for the same reason): then V = sigma2 (I + Z Lambda Lambda' Z') is block diagonal by cluster, and
cluster c's block is V_c = sigma2 (I + Z_c D_c Z_c'), with Z_c the cluster's rows and the columns
of its own levels of every factor (few: a school's children and the school), D_c = blockdiag of
lambda_f lambda_f' over those levels. With U_c = [Z_c X_c y_c] every n_c x n_c matrix the sandwich
needs is alpha I + U_c C U_c' (`numerics.group_operators`), held through G_c = U_c'U_c, which is
built from the cluster's rows; nothing of size n x n (or n_c x n_c) is formed:

    W_c = V_c^-1 = (I - Z_c B_c Z_c') / sigma2,   B_c = L_c (L_c' Z_c'Z_c L_c + I)^-1 L_c'  (Woodbury,
          L_c = blockdiag of lambda_f, so a singular lambda is no problem)
    CR0:  V_R = M [sum_c X_c'W_c e_c e_c'W_c X_c] M,   M = (X'WX)^-1,  e = y - X beta
    CR1:  CR0 J / (J - 1)  (J clusters; Stata's and clubSandwich's CR1)
    CR2:  A_c = V_c^1/2 (V_c^1/2 (V_c - X_c M X_c') V_c^1/2)^-1/2 V_c^1/2 in the meat
          (clubSandwich's vcovCR for lmerMod: working model = target = the fitted V, `inverse_var`)

and the df of `robust.CR2` (clubSandwich `coef_test(test = "Satterthwaite")`, `Wald_test` HTZ).
The clusters' columns are padded to the widest cluster's (zero columns of U carry nothing).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from multilevel.errors import SpecificationError
from multilevel.inference.robust import CR2, cr2_pieces
from multilevel.numerics.group_operators import GroupSpace
from multilevel.results.multi import MultiEstimates


@dataclass(frozen=True, eq=False)
class ClusterRobust:
    """The sandwich pieces of one clustering: its name, the number of clusters, CR2's and CR0's
    pieces (`robust.CR2`, in the summaries' coordinates) and the model-based (X'WX)^-1 (relative)."""

    cluster: str
    n_clusters: int
    cr2: CR2
    cr0: CR2

    def vcov_internal(self, se: str) -> np.ndarray:
        """CR0, CR1 or CR2 in the summaries' coordinates."""
        if se == "CR0":
            return self.cr0.vcov
        if se == "CR1":
            J = self.n_clusters
            return self.cr0.vcov * J / (J - 1)
        if se == "CR2":
            return self.cr2.vcov
        raise SpecificationError(f"se={se!r} is not a cluster-robust method; use 'CR0', 'CR1' or 'CR2'.")

    def pieces(self, se: str) -> CR2:
        """The pieces whose df go with `se` (CR1 shares CR0's: the df are scale free)."""
        return self.cr2 if se == "CR2" else self.cr0


def cluster_codes(est: MultiEstimates, cluster: str | None) -> tuple[str, np.ndarray]:
    """(name, code of each row used) of the clustering: by default the factor every other factor
    is nested in (the top level); a named grouping factor, or a column of the data, that every
    factor is nested in. Refuses clusters that split a level of some factor (crossed designs)."""
    d = est.design
    names = [g.name for g in d.groupings]
    factors = [d.groupings[f.grouping] for f in est.factors]
    if cluster is None:
        nested = set(d.nested)
        tops = [g for g in factors if all(h is g or (h.name, g.name) in nested for h in factors)]
        if not tops:
            raise SpecificationError(
                "Cluster-robust SEs need clusters that contain whole levels of every factor: no factor of "
                f"this model ({', '.join(names)}) has every other factor nested in it (crossed factors). "
                "Name a coarser grouping in which every factor is nested (cluster='...'), or use the model-based SEs."
            )
        g = tops[0]
        return g.name, np.asarray(g.codes)
    if cluster in names:
        g = d.groupings[names.index(cluster)]
        codes = np.asarray(g.codes)
    else:
        frame = d.rows_frame("Clustering by a column of the data")
        if cluster not in frame.columns:
            raise SpecificationError(
                f"cluster={cluster!r} is neither a grouping factor of this model ({', '.join(names)}) nor a column of its data."
            )
        values = frame[cluster]
        if values.isna().any():
            raise SpecificationError(f"The cluster column {cluster!r} has missing values in the rows the model used.")
        codes = pd.factorize(values, sort=True)[0]
    n_c = int(codes.max()) + 1
    split = []
    for g in factors:
        pairs = np.unique(np.asarray(g.codes, dtype=np.int64) * n_c + codes)
        if pairs.size != g.n_levels:
            n_split = int(np.sum(np.bincount(pairs // n_c, minlength=g.n_levels) > 1))
            split.append(f"{n_split} of the {g.n_levels} levels of {g.name} lie in several {cluster} clusters")
    if split:
        raise SpecificationError(
            f"Cluster-robust SEs need clusters that contain whole levels of every factor: {'; '.join(split)}. "
            "Cluster by a factor every other factor is nested in (the top level of a nested model)."
        )
    return cluster, codes


def cluster_robust(est: MultiEstimates, cluster: str | None = None) -> ClusterRobust:
    """CR0 and CR2 pieces of the fit clustered by `cluster` (`cluster_codes`; module doc)."""
    name, ccodes = cluster_codes(est, cluster)
    d = est.design
    columns = d.rows_columns("Cluster-robust SEs")
    q_all, p = columns.q, columns.p
    Zall = columns.internal_matrix(range(q_all))  # the summaries' coordinates (`Design.factor_summaries`)
    X = columns.internal_matrix(range(q_all, q_all + p))
    y = columns.internal_column(columns.k - 1)
    lams = est.lams  # lambda_f in the summaries' (= the data's) columns of Z
    beta = np.asarray(est.beta_internal, dtype=float)
    # each row's cluster; per factor, each level's cluster and its rank among the cluster's levels
    order = np.argsort(ccodes, kind="stable")
    n_c = int(ccodes.max()) + 1
    starts = np.searchsorted(ccodes[order], np.arange(n_c + 1))
    n_rows = np.diff(starts).astype(float)
    width = np.zeros(n_c, dtype=np.intp)
    level_clusters = []  # per factor: each level's cluster
    place = []  # per factor: each level's first column in its cluster's U
    for f in est.factors:
        g = d.groupings[f.grouping]
        level_cluster = np.full(g.n_levels, -1, dtype=np.intp)
        level_cluster[g.codes] = ccodes
        ranks = np.zeros(g.n_levels, dtype=np.intp)
        by = np.argsort(level_cluster, kind="stable")
        counts = np.bincount(level_cluster, minlength=n_c)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        ranks[by] = np.arange(g.n_levels) - first[level_cluster[by]]
        q = len(f.z_columns)
        place.append(width[level_cluster] + ranks * q)
        level_clusters.append(level_cluster)
        width = width + counts * q
    # clusters of similar width together (padded to the bucket's widest): the cubic work is about
    # sum_c r_c^3, not J r_max^3 (egsingle: a school of 89 children beside a median of 24)
    by_width = np.argsort(width, kind="stable")
    buckets, at = [], 0
    while at < n_c:
        end = int(np.searchsorted(width[by_width], 1.25 * width[by_width[at]] + 4, side="right"))
        end = max(end, at + 1)
        buckets.append(by_width[at:end])
        at = end
    parts = []
    XWX = np.zeros((p, p))
    for members in buckets:
        R = int(width[members].max())
        r = R + p + 1
        k = members.size
        G = np.zeros((k, r, r))
        Dc = np.zeros((k, R, R))
        Lc = np.zeros((k, R, R))
        for i, c in enumerate(members):
            rows = order[starts[c] : starts[c + 1]]
            U = np.zeros((rows.size, r))
            for t, f in enumerate(est.factors):
                codes = d.groupings[f.grouping].codes[rows]
                at_ = place[t][codes]
                for a, col in enumerate(f.z_columns):
                    U[np.arange(rows.size), at_ + a] = Zall[rows, col]
            U[:, R : R + p] = X[rows]
            U[:, -1] = y[rows]
            G[i] = U.T @ U
        slot = np.full(n_c, -1, dtype=np.intp)
        slot[members] = np.arange(k)
        for t, f in enumerate(est.factors):
            q = len(f.z_columns)
            lam = lams[t]
            D = lam @ lam.T
            mine = slot[level_clusters[t]] >= 0
            lc, pl = slot[level_clusters[t][mine]], place[t][mine]
            for a in range(q):
                for b in range(q):
                    Dc[lc, pl + a, pl + b] = D[a, b]
                    Lc[lc, pl + a, pl + b] = lam[a, b]
        A = G[:, :R, :R]
        Mc = np.swapaxes(Lc, 1, 2) @ A @ Lc + np.eye(R)
        B = Lc @ np.linalg.solve(Mc, np.swapaxes(Lc, 1, 2))
        B = 0.5 * (B + np.swapaxes(B, 1, 2))
        XX = G[:, R : R + p, R : R + p]
        ZX = G[:, :R, R : R + p]
        XWX += (XX - np.swapaxes(ZX, 1, 2) @ B @ ZX).sum(axis=0)
        parts.append((members, GroupSpace(G, n_rows[members]), Dc, B, R))
    # the model-based (X'V^-1X)^-1 at sigma2 = 1, from the clusters
    M = np.linalg.inv(XWX)
    M = 0.5 * (M + M.T)
    out = []
    for adjust in (True, False):
        pieces = [(members, cr2_pieces(space, Dc, B, M, beta, R, adjust)) for members, space, Dc, B, R in parts]
        scores = np.zeros((n_c, p))
        F = np.zeros((n_c, p, p))
        H = np.zeros((n_c, p, p))
        for members, pc in pieces:
            scores[members], F[members], H[members] = pc.scores, pc.F, pc.H
        out.append(CR2(M, scores, F, H))
    return ClusterRobust(name, n_c, out[0], out[1])
