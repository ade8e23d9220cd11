"""The model specification: what to fit, without data.

Both ways of writing a model (an lme4-style formula, `multilevel.formula`, and HLM-style level
equations, `multilevel.levels`) produce one frozen `ModelSpec`. It renders back to the lme4 formula;
the level form needs to know which variables are level-2, which the data tell (see `equations`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Centering = Literal["group", "grand"]

#: formula helpers for centering: `cwc(x)` centres within cluster (HLM's group-mean centring),
#: `cgm(x)` centres at the grand mean (HLM's grand-mean centring).
CENTERING_FUNCTIONS: dict[str, Centering] = {"cwc": "group", "cgm": "grand"}


@dataclass(frozen=True)
class RandomTerm:
    """One random-effect term `(terms | group)`: correlated random effects of `terms` over `group`.

    `terms` are formulaic term strings; "1" is the intercept. lme4's `(x || g)` is written as the
    terms `(1 | g)` and `(0 + x | g)`, uncorrelated with each other.
    """

    group: str
    terms: tuple[str, ...]

    @property
    def intercept(self) -> bool:
        return "1" in self.terms


@dataclass(frozen=True)
class ModelSpec:
    """A two-level linear mixed model, `y = X beta + Z b + e` (lme4), with optional centring.

    - `outcome`: the response column.
    - `fixed`: the fixed-effect terms in formulaic's order ("1" is the intercept).
    - `random`: the random-effect terms (a list, so that nested and crossed groupings fit later).
    - `centering`: variables centred before the design is built, as (variable, "group" | "grand").
    - `level2`: variables declared level-2 by level equations (checked constant within groups);
      empty for a formula, where the data decide.
    """

    outcome: str
    fixed: tuple[str, ...]
    random: tuple[RandomTerm, ...]
    centering: tuple[tuple[str, Centering], ...] = ()
    level2: frozenset[str] = field(default_factory=frozenset, compare=False)

    @property
    def groups(self) -> tuple[str, ...]:
        """The grouping factors, in order of first appearance."""
        return tuple(dict.fromkeys(t.group for t in self.random))

    @property
    def centering_map(self) -> dict[str, Centering]:
        return dict(self.centering)

    def fixed_formula(self) -> str:
        """The fixed part as a formulaic right-hand side."""
        terms = [t for t in self.fixed if t != "1"]
        head = "1" if "1" in self.fixed else "0"
        return " + ".join([head, *terms])

    def _wrap(self, term: str) -> str:
        # Writes centred variables back with their helper so the formula refits the same model.
        centre = self.centering_map
        inv = {v: k for k, v in CENTERING_FUNCTIONS.items()}
        parts = term.split(":")
        return ":".join(f"{inv[centre[p]]}({p})" if p in centre else p for p in parts)

    def to_formula(self) -> str:
        """The lme4-style formula, e.g. `mathach ~ 1 + sector + cwc(ses) + (cwc(ses) | school)`."""
        fixed = [self._wrap(t) for t in self.fixed if t != "1"]
        head = ["1"] if "1" in self.fixed else ["0"]
        rand = []
        for r in self.random:
            slopes = [self._wrap(t) for t in r.terms if t != "1"]
            if r.intercept:
                inside = " + ".join(slopes) if slopes else "1"
            else:
                inside = " + ".join(["0", *slopes])
            rand.append(f"({inside} | {r.group})")
        return f"{self.outcome} ~ " + " + ".join(head + fixed + rand)

    def __str__(self) -> str:
        return self.to_formula()
