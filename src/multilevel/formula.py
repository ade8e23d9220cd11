"""Parse an lme4-style formula into a `ModelSpec`.

`y ~ fixed + (expr | g) + (expr || g)`: the bars are parsed here, everything inside them and the
fixed part by formulaic, so that interactions (`a*b`, `a:b`) and categorical predictors (`C(x)`,
string columns) mean what they mean in formulaic. `cwc(x)` and `cgm(x)` centre x within groups and
at the grand mean (HLM's group-mean and grand-mean centring).
"""
from __future__ import annotations

import re
from functools import lru_cache

import formulaic

from .errors import SpecificationError
from .spec import CENTERING_FUNCTIONS, Centering, ModelSpec, RandomTerm

_CENTER_RE = re.compile(r"\b(" + "|".join(CENTERING_FUNCTIONS) + r")\(\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\)")


def strip_centering(text: str, centering: dict[str, Centering]) -> str:
    """Replace `cwc(x)`/`cgm(x)` by `x`, recording the centring of x in `centering`."""

    def repl(m: re.Match[str]) -> str:
        kind = CENTERING_FUNCTIONS[m.group(1)]
        var = m.group(2)
        if centering.get(var, kind) != kind:
            raise SpecificationError(
                f"'{var}' is centred two ways ({centering[var]}-mean and {kind}-mean) in one model; "
                "make a copy of the column under another name for the second one."
            )
        centering[var] = kind
        return var

    return _CENTER_RE.sub(repl, text)


def split_top_level(text: str, sep: str = "+") -> list[str]:
    """Split on `sep` outside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SpecificationError(f"Unbalanced parentheses in '{text}'.")
        if ch == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise SpecificationError(f"Unbalanced parentheses in '{text}'.")
    parts.append("".join(cur).strip())
    return parts


@lru_cache(maxsize=512)
def rhs_terms(rhs: str) -> tuple[str, ...]:
    """The terms of a right-hand side, in formulaic's order ('1' for the intercept)."""
    try:
        terms = formulaic.Formula(rhs)
    except Exception as exc:  # formulaic raises several types; the message is what matters
        raise SpecificationError(f"Cannot read the terms '{rhs}': {exc}") from exc
    return tuple(str(t) for t in terms)


_BAR_RE = re.compile(r"^\((.*?)(\|\|?)(.*)\)$", re.S)


def parse_formula(formula: str) -> ModelSpec:
    """`"mathach ~ (sector + meanses) * cses + (cses | school)"` -> `ModelSpec`. The spec is frozen,
    so the parse of a formula is kept (refits and repeated fits parse it once)."""
    return _parse_formula(str(formula))


@lru_cache(maxsize=256)
def _parse_formula(formula: str) -> ModelSpec:
    if "~" not in formula:
        raise SpecificationError(
            f"The formula '{formula}' has no '~'. Write it as 'outcome ~ predictors + (terms | group)'."
        )
    lhs, rhs = (s.strip() for s in formula.split("~", 1))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", lhs):
        raise SpecificationError(
            f"The outcome '{lhs}' must be one column name; transform it into a new column first."
        )
    centering: dict[str, Centering] = {}
    rhs = strip_centering(rhs, centering)
    fixed_parts, random = [], []
    for part in split_top_level(rhs):
        m = _BAR_RE.match(part)
        if m is None:
            if "|" in part:
                raise SpecificationError(
                    f"The term '{part}' has a bar but is not '(terms | group)'; put random-effect "
                    "terms in their own parentheses."
                )
            fixed_parts.append(part)
            continue
        inside, bar, group = m.group(1).strip(), m.group(2), m.group(3).strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", group):
            raise SpecificationError(
                f"The grouping factor '{group}' in '{part}' must be one column name "
                "(nested and crossed groupings are not supported yet)."
            )
        terms = rhs_terms(inside or "1")
        if bar == "||":
            # lme4: (x || g) == (1 | g) + (0 + x | g): each term its own uncorrelated block.
            random.extend(RandomTerm(group, (t,)) for t in terms)
        else:
            random.append(RandomTerm(group, terms))
    if not random:
        raise SpecificationError(
            f"The formula '{formula}' has no random-effect term such as '(1 | group)'. "
            "A multilevel model needs at least one; for a one-level model use OLS."
        )
    fixed = rhs_terms(" + ".join(fixed_parts) if fixed_parts else "1")
    return ModelSpec(
        outcome=lhs,
        fixed=fixed,
        random=tuple(random),
        centering=tuple(sorted(centering.items())),
    )
