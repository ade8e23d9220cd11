"""How the grouping factors of a model relate in the data: nested or crossed.

Factor a is nested in factor b when every level of a lies in one level of b (each class in one
school): the pairs (a, b) present are as many as a's levels. Otherwise the two are crossed
(partly or fully: pupils in neighbourhoods and in schools). lme4 fits every model as written and
reads a grouping by its ids alone, so classes numbered 1, 2, ... within each school and written
`(1 | school) + (1 | class)` are crossed: class 1 of every school is one unit. HLM needs unique
ids at each level and so never meets this. We fit as lme4 does (its numbers), and say so in the
data report when the data look as if nesting was meant (`implicit_nesting_notes`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from multilevel.errors import SpecificationError
from multilevel.model.spec import group_variables


class Factor(Protocol):
    """What these facts read of a grouping factor (`builder.Grouping`, which imports this module)."""

    @property
    def name(self) -> str: ...
    @property
    def codes(self) -> np.ndarray: ...
    @property
    def n_levels(self) -> int: ...
    @property
    def columns(self) -> tuple[str, ...]: ...


#: (factor a, factor b) -> the (level of a, level of b) pairs present and the rows of each: what a
#: design without rows (`chunked`, streamed) counted chunk by chunk instead of the rows' codes
PairCounts = Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _pairs(a: Factor, b: Factor, known: PairCounts | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (level of a, level of b) pairs present and the rows of each (from `known` when given,
    either way round)."""
    if known is not None:
        if (a.name, b.name) in known:
            return known[(a.name, b.name)]
        ib, ia, counts = known[(b.name, a.name)]
        return ia, ib, counts
    key = a.codes.astype(np.int64) * b.n_levels + b.codes
    pairs, counts = np.unique(key, return_counts=True)
    return pairs // b.n_levels, pairs % b.n_levels, counts


def is_nested(inner: Factor, outer: Factor, pairs: PairCounts | None = None) -> bool:
    """Whether every level of `inner` lies in one level of `outer` (over the rows used)."""
    ia, _, _ = _pairs(inner, outer, pairs)
    return ia.size == inner.n_levels


def check_distinct(groupings: Sequence[Factor], pairs: PairCounts | None = None) -> None:
    """Refuse two grouping factors that group the rows the same way (each unit of one is one unit
    of the other: nested both ways). Their random intercepts are one effect written twice: the
    data cannot split its variance between them (lme4 fits such a model and splits it
    arbitrarily). The usual cause is ids given in the wrong order: group=(level-3 id, level-2 id)
    in HLM's level equations makes the factors child and child:school."""
    for i, a in enumerate(groupings):
        for b in groupings[i + 1 :]:
            if a.n_levels == b.n_levels and is_nested(a, b, pairs) and is_nested(b, a, pairs):
                raise SpecificationError(
                    f"The grouping factors '{a.name}' and '{b.name}' group the rows the same way: each of the "
                    f"{a.n_levels} units of one is one unit of the other, so their random effects are one effect "
                    "written twice and the data cannot tell them apart. Keep one of them. If they are a level-2 and a "
                    "level-3 id, check their order: group=(level-2 id, level-3 id) in level equations, (1 | school/child) "
                    "in a formula nests child in school."
                )


def nesting(groupings: Sequence[Factor], pairs: PairCounts | None = None) -> tuple[tuple[str, str], ...]:
    """The (inner, outer) pairs of factors with `inner` nested in `outer` (`is_nested`), in the
    order of `groupings`. Two factors in no pair, either way round, are crossed. A factor with
    the same levels as another (one level each in the other) is nested both ways."""
    return tuple(
        (a.name, b.name)
        for i, a in enumerate(groupings)
        for j, b in enumerate(groupings)
        if i != j and is_nested(a, b, pairs)
    )


def implicit_nesting_notes(groupings: Sequence[Factor], groups: Sequence[str] = (), pairs: PairCounts | None = None) -> tuple[str, ...]:
    """Data-report notes for two crossed factors that look as if one was meant to be nested in the
    other by ids that restart within each unit of it. The trigger (kept simple, so that it can be
    told): for factors A and B that are columns (not interactions) and that no factor of the model
    combines (`groups`: no 'B:A'), with B not nested in A nor A in B,

      * B has at most as many levels as A, and the unit of A with the most distinct B ids holds
        every id of B (ids numbered 1, 2, ... afresh in each unit of A), and
      * the (A, B) combinations have two rows or more on median (each class holds several pupils;
        a crossed design such as lme4's Penicillin, plates x samples, has one row per cell).

    The model is still fitted as written (crossed, lme4's reading); the note says how to write
    the nested model. A fully crossed design with replicated cells written without their
    interaction (lme4's Machines as (1 | Worker) + (1 | Machine)) meets the trigger too: the data
    cannot tell it from restarted ids, and the note's "if" leaves it to the reader. `pairs`: the
    pairs counted without the rows (`PairCounts`)."""
    combined = {frozenset(group_variables(g)) for g in groups if len(group_variables(g)) > 1}
    notes: list[str] = []
    for a in groupings:
        for b in groupings:
            if a is b or len(a.columns) > 1 or len(b.columns) > 1 or b.n_levels > a.n_levels:
                continue
            if b.n_levels == a.n_levels and groupings.index(b) < groupings.index(a):
                continue  # ties: the later factor taken as the inner one, once
            if any({a.name, b.name} <= c for c in combined):
                continue
            ia, ib, counts = _pairs(a, b, pairs)
            if ia.size == a.n_levels or np.unique(ib).size == ib.size:
                continue  # a nested in b, or b nested in a (each level of b with one level of a)
            per_a = np.bincount(ia, minlength=a.n_levels)  # distinct b ids in each unit of a
            if per_a.max() < b.n_levels or np.median(counts) < 2:
                continue
            notes.append(
                f"The ids of '{b.name}' repeat across the units of '{a.name}' ({b.n_levels} ids of '{b.name}' in "
                f"{a.n_levels} units of '{a.name}', {ia.size} combinations): '{b.name}' is taken as crossed with "
                f"'{a.name}', as lme4 does. If each unit of '{b.name}' lies within one unit of '{a.name}', write "
                f"(1 | {a.name}/{b.name}) (lme4's (1 | {a.name}) + (1 | {b.name}:{a.name})) or give the units of "
                f"'{b.name}' unique ids."
            )
    return tuple(notes)
