"""The model specification: what to fit, without data.

Both ways of writing a model (an lme4-style formula, `multilevel.formula`, and HLM-style level
equations, `multilevel.levels`) produce one frozen `ModelSpec`. It renders back to the lme4 formula;
the level form needs to know which variables are level-2, which the data tell (see `equations`).

Terms are formulaic term strings over column names: data columns (`ses`) and derived columns
named by the call that makes them (`cwc(ses)`, `I(x^2)`, `poly(x, 2, raw = TRUE)1`), joined by ':'
in interactions (`sector:cwc(ses)`); `C(x)` is a categorical factor. `derived` says how each
derived column is made (`expressions.Derived`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from multilevel.model.expressions import Centering, Derived, quote


def split_outside(text: str, sep: str) -> list[str] | None:
    """`text` split on `sep` where it stands outside parentheses and backticks, each part stripped;
    None when the parentheses do not balance."""
    parts: list[str] = []
    cur: list[str] = []
    depth, quoted = 0, False
    for ch in text:
        if ch == "`":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth < 0:
                return None
        if ch == sep and depth == 0 and not quoted:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        return None
    parts.append("".join(cur).strip())
    return parts


def term_factors(term: str) -> tuple[str, ...]:
    """'sector:cwc(ses)' -> ('sector', 'cwc(ses)'): the factors of a term string ('1': none)."""
    if term == "1":
        return ()
    parts = split_outside(term, ":")
    return tuple(parts) if parts is not None else (term,)


def group_variables(group: str) -> tuple[str, ...]:
    """The data columns a grouping factor reads: 'school' -> ('school',); an interaction named as
    lme4 names it, 'b:a' -> ('b', 'a'), 'c:(b:a)' -> ('c', 'b', 'a') (`formula.grouping_factors`;
    a column of such a factor holds neither ':' nor parentheses)."""
    if ":" not in group:
        return (group,)
    return tuple(p.strip().lstrip("(").rstrip(")").strip() for p in group.split(":"))


def render_group(group: str) -> str:
    """A grouping factor's name as formula text: each column backticked where it needs it."""
    if ":" not in group:
        return quote(group)
    return re.sub(r"[^:()]+", lambda m: quote(m.group(0).strip()), group)


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
    """A two-level linear mixed model, `y = X beta + Z b + offset + e` (lme4), with derived columns.

    - `outcome`: the response column.
    - `fixed`: the fixed-effect terms in formulaic's order ("1" is the intercept).
    - `random`: the random-effect terms, on one or several grouping factors (`groups`).
    - `derived`: the columns computed before the design is built (centring `cwc(x)`/`cgm(x)`,
      transforms `I(...)`, `log(...)`, `scale(x)`, `poly(...)`), by their column names.
    - `offsets`: lme4's `offset(z)`: known parts of the linear predictor (coefficient 1).
    - `level2`: factors declared level-2 by level equations (checked constant within groups);
      empty for a formula, where the data decide.
    - `unit_predictors`: with several grouping factors, the predictors level equations write for
      the units of a factor (HLM3/HLM4: a level-k equation's, for the level-k factor; HCM2: the
      row-and-column equations', for the rows or the columns), each with the factors within one of
      whose units it must be constant (checked by the design builder); empty for a formula.
    """

    outcome: str
    fixed: tuple[str, ...]
    random: tuple[RandomTerm, ...]
    derived: tuple[Derived, ...] = ()
    offsets: tuple[Derived, ...] = ()
    level2: frozenset[str] = field(default_factory=frozenset, compare=False)
    unit_predictors: tuple[tuple[str, tuple[str, ...]], ...] = field(default=(), compare=False)

    @property
    def groups(self) -> tuple[str, ...]:
        """The grouping factors, in order of first appearance (lme4's names: 'school', 'class:school')."""
        return tuple(dict.fromkeys(t.group for t in self.random))

    @property
    def grouping_columns(self) -> tuple[str, ...]:
        """The data columns the grouping factors read, in order of first appearance."""
        return tuple(dict.fromkeys(v for g in self.groups for v in group_variables(g)))

    @cached_property
    def derived_columns(self) -> dict[str, Derived]:
        """Each derived column's name -> how it is made (poly: each of its columns)."""
        return {c: d for d in self.derived for c in d.columns}

    @property
    def centering(self) -> tuple[tuple[str, Centering], ...]:
        """(centred column, "group" | "grand"), e.g. ("cwc(ses)", "group")."""
        return tuple((d.name, d.kind) for d in self.derived if d.kind == "group" or d.kind == "grand")

    @property
    def centering_map(self) -> dict[str, Centering]:
        """Centred column name -> its centring: {"cwc(ses)": "group"}."""
        return dict(self.centering)

    def factor_variables(self, factor: str) -> frozenset[str]:
        """The data columns one factor of a term reads: 'cwc(ses)' -> {'ses'}, 'C(x)' -> {'x'}."""
        if factor in ("1", ""):
            return frozenset()
        d = self.derived_columns.get(factor)
        if d is not None:
            return frozenset(d.variables)
        if factor.startswith("C(") and factor.endswith(")"):
            return frozenset([factor[2:-1].strip().strip("`")])
        return frozenset([factor])

    def term_variables(self, term: str) -> frozenset[str]:
        """The data columns a term reads."""
        return frozenset(v for f in term_factors(term) for v in self.factor_variables(f))

    def variables(self) -> tuple[str, ...]:
        """Every data column the model reads: outcome, grouping columns (`grouping_columns`), predictors,
        offsets (in that order)."""
        out = [self.outcome, *self.grouping_columns]
        for t in [*self.fixed, *(t for r in self.random for t in r.terms)]:
            out.extend(sorted(self.term_variables(t)))
        for o in self.offsets:
            out.extend(o.variables)
        return tuple(dict.fromkeys(out))

    @staticmethod
    def quote_term(term: str) -> str:
        """A term string as formulaic text: each column factor a backticked look-up."""
        if term in ("1", "0"):
            return term
        return ":".join(f if f.startswith("C(") else f"`{f}`" for f in term_factors(term))

    def fixed_formula(self) -> str:
        """The fixed part as a formulaic right-hand side."""
        terms = [self.quote_term(t) for t in self.fixed if t != "1"]
        head = "1" if "1" in self.fixed else "0"
        return " + ".join([head, *terms])

    def random_formula(self, term: RandomTerm) -> str:
        """One random-effect term's columns as a formulaic right-hand side."""
        return " + ".join(["1" if term.intercept else "0", *[self.quote_term(x) for x in term.terms if x != "1"]])

    def _wrap(self, term: str) -> str:
        # Writes derived columns back as the calls that make them, so the formula refits the same model.
        parts = []
        for f in term_factors(term):
            d = self.derived_columns.get(f)
            parts.append(d.source if d is not None else f if f.startswith("C(") else quote(f))
        return ":".join(parts)

    def _render(self, terms) -> list[str]:
        return list(dict.fromkeys(self._wrap(t) for t in terms if t != "1"))  # a poly's columns: one call

    def to_formula(self) -> str:
        """The lme4-style formula, e.g. `mathach ~ 1 + sector + cwc(ses) + (cwc(ses) | school)`."""
        fixed = self._render(self.fixed)
        head = ["1"] if "1" in self.fixed else ["0"]
        rand = []
        for r in self.random:
            slopes = self._render(r.terms)
            if r.intercept:
                inside = " + ".join(slopes) if slopes else "1"
            else:
                inside = " + ".join(["0", *slopes])
            rand.append(f"({inside} | {render_group(r.group)})")
        offsets = [o.source for o in self.offsets]
        return f"{quote(self.outcome)} ~ " + " + ".join(head + fixed + offsets + rand)

    def __str__(self) -> str:
        return self.to_formula()
