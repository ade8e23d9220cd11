"""The level structure of a nested model of any depth (HLM3, HLM4) read from the data, and the
statistics of the HLM4 report built on it (docs/hlm-statistics.md section 14e).

Levels: rows (1) in units of the level-2 factor, in units of the level-3 factor, ... up to the top
factor L, each factor nested in the next (`Design.nested`). A variable constant within every unit
of level k (and not of level k+1) is a level-k variable; each fixed-effect column is a product of
one piece per level, its coefficient path (a_p, X_q, W_s, ...), HLM's

    level 1   y = sum_p P_p a_p + E
    level 2   P_p = sum_q B_pq X_q + R_p
    level 3   B_pq = sum_s G_pqs W_s + U_pq
    level 4   G_pqs = sum_t D_pqst V_t + V_pqs     (HLM4; D and V are our letters for delta and v)

A random effect of level k is on a coefficient of level k-1 (its path's product of pieces).
`LevelNode` is one coefficient (P_p, B_pq, ...) with its equation's terms as children; the one
renderer of the level and mixed forms (`reports.equations.level_form`) reads it for HLM3 and HLM4.

Reliabilities at every level k >= 2 (`LevelStatistics.reliability`), HLM3's rule at levels 2 and 3
(section 14) carried one level up: per level-k unit u with full-rank C_u,

    C_u = Z_k,u' V_<k,u^-1 Z_k,u,   v_u = diag(C_u^-1),   reliability_k = mean_u tau_k / (tau_k + v_u),

V_<k,u the covariance of u's rows from the levels below k (sigma2 I plus the random effects of
levels 2..k-1). Level 2: v = sigma2 diag((Z2'Z2)^-1) (HLM2's and HLM3's unit OLS); level 3: HLM3's
per-school GLS. The cross-products B'V^-1 B (B = [Z_2 ... Z_L]) of a unit of level k+1 are the sums
over its level-k units of the Woodbury step

    B'(A + Z T Z')^-1 B = M - M_{.z} (I + T M_zz)^-1 T M_{z.},   M = B'A^-1 B,

starting from G_j / sigma2 per level-2 unit (G_j = sum_i B_i B_i'). At level 4 this is our
generalisation (INFERRED: no HLM4 output with its data was found to check it against). HLM4's
chi-square tests and approximate df are not given: their HLM4 rules are not known to us.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise

import numpy as np
import pandas as pd

from multilevel.diagnostics.multi_statistics import VariableLevels, hlm_n_params
from multilevel.engine.covariance import correlations
from multilevel.errors import SpecificationError
from multilevel.results.multi import MultiEstimates

INTERCEPT = "Intercept"
#: HLM's letters of the coefficients at levels 1..4 (pi, beta, gamma, delta)
COEFFICIENT_LETTERS = ("P", "B", "G", "D")
#: HLM's letters of the random effects at levels 1..4 (e, r, u, v)
RANDOM_LETTERS = ("E", "R", "U", "V")


@dataclass(frozen=True)
class LevelNode:
    """One coefficient of HLM's level form: `label` (P0, B01, G010, ...), the variable it multiplies
    at its own level (`name`, 'Intercept' for INTRCPTk), its `level` (1 for P_p), whether it has a
    random effect at the next level (`random`), its X column when it is a fixed effect (a top-level
    term), its equation's terms (`children`) and its path of variables from level 1."""

    label: str
    name: str
    level: int
    random: bool
    column: int | None
    children: tuple[LevelNode, ...]
    path: tuple[str, ...]

    @property
    def random_label(self) -> str:
        """R0 for P0, U01 for B01, V010 for G010: the random effect of this coefficient."""
        return RANDOM_LETTERS[self.level] + self.label[1:]


@dataclass(frozen=True, eq=False)
class LevelStructure:
    """The levels of a nested model (module doc): `factors[k]` the index in `MultiEstimates.factors`
    of level k+2's factor (level 2 first), `roots` the level-1 coefficients."""

    names: tuple[str, ...]  # the factors' names, level 2 first (lme4's: 'childid:schoolid', 'schoolid')
    factors: tuple[int, ...]
    roots: tuple[LevelNode, ...]
    level_of: dict[str, int]

    @property
    def n_levels(self) -> int:
        return len(self.names) + 1

    def nodes(self, level: int) -> tuple[LevelNode, ...]:
        """The coefficients of `level` (1: P_p), in HLM's order."""
        out = list(self.roots)
        for _ in range(level - 1):
            out = [c for n in out for c in n.children]
        return tuple(out)

    @classmethod
    def of(cls, est: MultiEstimates, frame: pd.DataFrame | None = None) -> LevelStructure:
        design = est.design
        factors = est.factors
        nested = set(design.nested)
        by_size = sorted(range(len(factors)), key=lambda i: -design.groupings[factors[i].grouping].n_levels)
        chain = [factors[i].name for i in by_size]
        if len(factors) < 2 or any(pair not in nested for pair in pairwise(chain)):
            names = ", ".join(f.name for f in factors)
            raise SpecificationError(
                f"HLM's level report is of nested grouping factors (level-2 units within level-3 units within ...); this "
                f"model's factors ({names}) are not one chain of nested factors. lme4's summary: fit.summary()."
            )
        groupings = [design.groupings[factors[i].grouping] for i in by_size]
        frame = design.centred_frame() if frame is None else frame
        L = len(chain) + 1
        levels = VariableLevels(frame, tuple((k, groupings[k - 2]) for k in range(L, 1, -1)), 1)

        def split(name: str) -> tuple[str, ...]:
            return levels.split(name, tuple(range(1, L + 1)))

        fixed = [(split(n), c) for c, n in enumerate(design.x_names)]
        randoms: list[tuple[str, ...]] = []
        for k in range(2, L + 1):
            f = factors[by_size[k - 2]]
            for zname in f.z_names:
                parts = split(zname)
                if any(p != INTERCEPT for p in parts[k - 1:]):
                    raise SpecificationError(
                        f"The random effect of '{zname}' over the level-{k} units ({f.name}) is of a variable constant "
                        f"within them: HLM has level-{k} random effects on level-{k - 1} coefficients only."
                    )
                randoms.append(parts[: k - 1])
        # the tree: every path prefix is a node; order: first appearance, intercepts first
        order: dict[tuple[str, ...], list[str]] = {}
        for path in [p for p, _ in fixed] + randoms:
            for k in range(len(path)):
                kids = order.setdefault(path[:k], [])
                if path[k] not in kids:
                    kids.append(path[k])
        for kids in order.values():
            kids.sort(key=lambda x: x != INTERCEPT)
        random_paths = set(randoms)
        column = {p: c for p, c in fixed}

        def build(prefix: tuple[str, ...], label: str) -> tuple[LevelNode, ...]:
            k = len(prefix) + 1
            out = []
            for i, name in enumerate(order.get(prefix, [])):
                path = prefix + (name,)
                lab = COEFFICIENT_LETTERS[k - 1] + label + str(i)
                out.append(LevelNode(lab, name, k, path in random_paths, column.get(path), build(path, label + str(i)), path))
            return tuple(out)

        return cls(tuple(chain), tuple(by_size), build((), ""), levels.level_of)


def _woodbury(M: np.ndarray, z: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(n, m, m): B'(A + Z T Z')^-1 B from M = B'A^-1 B per unit, Z = B's columns z (module doc)."""
    Mz = M[:, :, z]
    Mzz = M[:, z][:, :, z]
    S = np.linalg.solve(np.eye(len(z)) + T @ Mzz, np.broadcast_to(T, Mzz.shape))
    return M - Mz @ S @ np.swapaxes(Mz, 1, 2)


@dataclass(frozen=True, eq=False)
class LevelStatistics:
    """What the HLM4 report prints beside the fit's own numbers (module doc), each computed once."""

    est: MultiEstimates

    @cached_property
    def structure(self) -> LevelStructure:
        return LevelStructure.of(self.est)

    @property
    def n_units(self) -> tuple[int, ...]:
        """The units at levels 2..L."""
        d = self.est.design
        return tuple(d.groupings[self.est.factors[f].grouping].n_levels for f in self.structure.factors)

    def tau(self, level: int) -> pd.DataFrame:
        """The covariance of the random effects of `level` (2..L)."""
        return self.est.tau[self.structure.names[level - 2]]

    def tau_correlations(self, level: int) -> pd.DataFrame:
        """`tau(level)` as correlations (`engine.covariance.correlations`)."""
        return correlations(self.tau(level))

    @cached_property
    def _reliabilities(self) -> tuple[tuple[pd.Series, int], ...]:
        s = self.structure
        d = self.est.design
        fs = [self.est.factors[f] for f in s.factors]
        gs = [d.groupings[f.grouping] for f in fs]
        Z = d.Z
        if Z is None:
            raise SpecificationError("HLM's level report needs the rows of the fit (a streamed fit keeps none): fit in memory.")
        cols = [list(f.z_columns) for f in fs]
        B = np.column_stack([Z[:, c] for c in cols])
        starts = np.cumsum([0] + [len(c) for c in cols])
        idx = [np.arange(starts[i], starts[i + 1]) for i in range(len(cols))]
        rows = np.arange(len(gs[0].codes))
        m = B.shape[1]
        J = gs[0].n_levels
        M = np.empty((J, m, m))
        for a in range(m):
            for b in range(a, m):
                v = np.bincount(gs[0].codes, weights=B[:, a] * B[:, b], minlength=J)
                M[:, a, b] = v
                M[:, b, a] = v
        M /= self.est.sigma2
        out = []
        for k in range(len(gs)):
            z = idx[k]
            C = M[:, z][:, :, z]
            used = np.linalg.matrix_rank(C, hermitian=True) == len(z)
            v = np.diagonal(np.linalg.inv(C[used]), axis1=1, axis2=2)
            T = self.tau(k + 2).to_numpy()
            t = np.diag(T)
            out.append((pd.Series((t / (t + v)).mean(axis=0), index=list(self.tau(k + 2).index), name="reliability"),
                        int(used.sum())))
            if k + 1 < len(gs):  # the units of level k+2 add up the Woodbury step of theirs at level k+2
                first = np.full(gs[k].n_levels, -1)
                first[gs[k].codes[::-1]] = rows[::-1]
                parent = gs[k + 1].codes[first]
                nxt = np.zeros((gs[k + 1].n_levels, m, m))
                np.add.at(nxt, parent, _woodbury(M, z, T))
                M = nxt
        return tuple(out)

    def reliability(self, level: int) -> pd.Series:
        """Reliability of each random coefficient of level `level` - 1 at `level` (module doc)."""
        return self._reliabilities[level - 2][0]

    def n_sufficient(self, level: int) -> int:
        """The level-`level` units with enough data for their reliability (full-rank C_u)."""
        return self._reliabilities[level - 2][1]

    @property
    def deviance(self) -> float:
        return self.est.deviance

    @property
    def n_params(self) -> int:
        """HLM's count (section 6): the covariance parameters (the taus and sigma2), plus the fixed
        effects under ML (`multi_statistics.hlm_n_params`)."""
        return hlm_n_params(self.est)
