"""formulaic's terms of a right-hand side made only of column look-ups, without importing formulaic.

`import formulaic` takes about 0.14 s (it loads scipy.sparse, narwhals and its transforms), as long
as a small fit; most formulas (every numeric model, such as HSB's `(sector + meanses) * cses`) need
none of it. A right-hand side is *simple* when it holds only column names (bare or backticked), the
operators `+ - * :` and parentheses, and `0`, `1`, `-1` as summands of the whole formula; for it,
`simple_terms` gives the terms formulaic gives, in formulaic's order (tests/model/test_terms.py
checks them against formulaic on every operator and on random formulas):

- `a:b` is the product of the terms of a and b (each pair, left terms first; a factor present in
  both is kept once, where it first stands); `a*b` is `a + b + a:b`; `:` binds before `*`, `*`
  before `+ -`, and `+ -` go left to right;
- `a + b` keeps the terms of a, then those of b not in a; `a - b` drops from a the terms of b; two
  terms are the same when they have the same factors, in any order (`b:a` is `a:b`; the first
  written is kept);
- the intercept is there unless a summand `0` or `-1` removes it (a later `1` puts it back); the
  terms are ordered by degree (intercept, main effects, two-way products, ...), stably.

Anything else (`C(x)`, `**`, `/`, `%in%`, numbers, function calls) gives None: formulaic reads it.
`NumericSpec` stands for formulaic's ModelSpec of such a right-hand side over numeric columns,
made only when new data are put through it (model graphs, residuals of a Dask fit).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Term = tuple[str, ...]  # the factors of a term, in order; () is the intercept

_TOKEN = re.compile(r"\s*(?:`([^`]+)`|([A-Za-z_][A-Za-z0-9_]*)|([01])(?![\w.])|([-+*:()]))")


def _tokens(rhs: str) -> list[tuple[str, str]] | None:
    """(kind, text) pairs: ("name", column) or ("op", one of + - * : ( ) 0 1); None for any other text."""
    out: list[tuple[str, str]] = []
    pos = 0
    rhs = rhs.rstrip()
    while pos < len(rhs):
        m = _TOKEN.match(rhs, pos)
        if m is None:
            return None
        quoted, bare, digit, op = m.groups()
        if quoted is not None:
            if quoted != quoted.strip():
                return None  # formulaic's handling of padded names is not worth copying
            out.append(("name", quoted))
        elif bare is not None:
            out.append(("name", bare))
        else:
            out.append(("op", digit if digit is not None else op))
        pos = m.end()
    return out


class _NotSimple(Exception):
    pass


def _same(a: Term, b: Term) -> bool:
    return set(a) == set(b)


def _union(left: list[Term], right: list[Term]) -> list[Term]:
    out = list(left)
    for t in right:
        if not any(_same(t, u) for u in out):
            out.append(t)
    return out


def _product(left: list[Term], right: list[Term]) -> list[Term]:
    out: list[Term] = []
    for a in left:
        for b in right:
            out = _union(out, [a + tuple(f for f in b if f not in a)])
    return out


class _Parser:
    """Recursive descent over the tokens: sum := product (('+'|'-') product)*, with 0, 1 and -1
    only as summands of the whole formula; product := inter ('*' inter)*; inter := atom (':' atom)*;
    atom := name | '(' sum ')'."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens, self.i = tokens, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise _NotSimple
        self.i += 1
        return tok

    def formula(self) -> tuple[bool, list[Term]]:
        intercept = True
        terms: list[Term] = []
        sign = "+"
        first = True
        while True:
            tok = self.peek()
            if first and tok == ("op", "-"):  # a leading '-': '-1 + a'
                self.take()
                sign, tok = "-", self.peek()
            if tok in (("op", "0"), ("op", "1")):
                self.take()
                if (sign, tok[1]) == ("-", "0"):
                    raise _NotSimple  # '-0' (an intercept in R): not worth copying
                intercept = sign == "+" and tok[1] == "1"
            else:
                part = self.sum_operand()
                terms = _union(terms, part) if sign == "+" else [t for t in terms if not any(_same(t, u) for u in part)]
            tok = self.peek()
            if tok is None:
                return intercept, terms
            if tok not in (("op", "+"), ("op", "-")):
                raise _NotSimple
            sign = self.take()[1]
            first = False

    def sum_operand(self) -> list[Term]:
        out = self.inter()
        while self.peek() == ("op", "*"):
            self.take()
            right = self.inter()
            out = _union(_union(out, right), _product(out, right))
        return out

    def inter(self) -> list[Term]:
        out = self.atom()
        while self.peek() == ("op", ":"):
            self.take()
            out = _product(out, self.atom())
        return out

    def atom(self) -> list[Term]:
        kind, text = self.take()
        if kind == "name":
            return [(text,)]
        if text != "(":
            raise _NotSimple
        out = self.inner_sum()
        if self.take() != ("op", ")"):
            raise _NotSimple
        return out

    def inner_sum(self) -> list[Term]:
        out = self.sum_operand()
        while self.peek() in (("op", "+"), ("op", "-")):
            sign = self.take()[1]
            part = self.sum_operand()
            out = _union(out, part) if sign == "+" else [t for t in out if not any(_same(t, u) for u in part)]
        return out


def simple_terms(rhs: str) -> tuple[Term, ...] | None:
    """formulaic's terms of a simple right-hand side (module doc), in its order, the intercept as
    (); None when the right-hand side is not simple."""
    tokens = _tokens(rhs)
    if not tokens:
        return None
    parser = _Parser(tokens)
    try:
        intercept, terms = parser.formula()
    except _NotSimple:
        return None
    if parser.i != len(tokens):
        return None
    ordered = sorted(terms, key=len)  # stable: by degree, then as written
    return ((),) + tuple(ordered) if intercept else tuple(ordered)


def term_name(term: Term) -> str:
    """formulaic's name of a term: '1' for the intercept, the factors joined by ':'."""
    return ":".join(term) if term else "1"


@dataclass(frozen=True)
class StructureEntry:
    """One term and its columns, as formulaic's ModelSpec.structure lists them."""

    term: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class NumericSpec:
    """formulaic's ModelSpec of a simple right-hand side whose variables are numeric: its structure
    (each term one column, named as formulaic names it: 'Intercept', 'a', 'a:b'), and formulaic's
    own spec, made from three rows of stand-in numbers when new data are first put through it
    (`get_model_matrix`)."""

    rhs: str
    variables: tuple[str, ...]
    structure: tuple[StructureEntry, ...]
    _made: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def formulaic_spec(self) -> Any:
        if "spec" not in self._made:
            self._made["spec"] = formulaic_numeric_spec(self.rhs, self.variables)
        return self._made["spec"]

    def get_model_matrix(self, data, **kwargs):
        """The model matrix of `data` (formulaic's ModelSpec.get_model_matrix)."""
        return self.formulaic_spec.get_model_matrix(data, **kwargs)


def formulaic_numeric_spec(rhs: str, variables: tuple[str, ...]) -> Any:
    """formulaic's ModelSpec of `rhs` from three rows of stand-in numbers for `variables` (that of
    any numeric data: the terms, their order and names do not depend on the values)."""
    import formulaic  # here: only new data through a numeric model, or a model formulaic must read, need it
    import numpy as np
    import pandas as pd

    dummy = pd.DataFrame({v: np.arange(1.0, 4.0) * (i + 2) for i, v in enumerate(variables)})
    return formulaic.model_matrix(rhs, dummy, na_action="raise", context={}).model_spec


def numeric_spec(rhs: str, intercept_name: str = "Intercept") -> NumericSpec | None:
    """The `NumericSpec` of a simple right-hand side over numeric variables; None when it is not
    simple (formulaic reads it)."""
    terms = simple_terms(rhs)
    if terms is None:
        return None
    variables = tuple(sorted({f for t in terms for f in t}))
    structure = tuple(StructureEntry(term_name(t), (term_name(t) if t else intercept_name,)) for t in terms)
    return NumericSpec(rhs, variables, structure)
