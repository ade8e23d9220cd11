"""Parse an lme4-style formula into a `ModelSpec`.

`y ~ fixed + (expr | g) + (expr || g) + offset(z)`: the bars are parsed here, and every term is
read by `multilevel.expressions`, which checks it against the whitelist (formula text is never
run as code; see that module for what a formula may say) and turns transforms, centring helpers
and polynomials into derived columns. formulaic then sees only backticked column look-ups and
`C(x)`, and decides interactions (`a*b`, `a:b`), the order of the terms and categorical coding.

Naming: a derived column is named by the call that makes it, as R names it: `cwc(ses)` (ses
centred within units, HLM's group-mean centring), `cgm(ses)` (grand-mean centring), `I(x^2)`,
`log(x)`, `scale(x)`, `poly(x, 2, raw = TRUE)1` and `...2`; interactions join names with ':'
(`sector:cwc(ses)`). `factor(x)` is `C(x)`. `offset(z)` is no coefficient: it is subtracted from
the outcome and added back to fitted values (`ModelSpec.offsets`).
"""
from __future__ import annotations

import keyword
import re
from functools import lru_cache
from itertools import pairwise

from multilevel.errors import SpecificationError, plain_message
from multilevel.model.expressions import ALLOWED, Derived, column_name, read_offset, tokenize, translate
from multilevel.model.spec import ModelSpec, RandomTerm, split_outside
from multilevel.model.terms import simple_terms, term_name

#: names a data column may not have: they are the names of the intercept's column
RESERVED = ("Intercept", "(Intercept)")


def split_top_level(text: str, sep: str = "+") -> list[str]:
    """Split on `sep` outside parentheses and backticks (`spec.split_outside`)."""
    parts = split_outside(text, sep)
    if parts is None:
        raise SpecificationError(f"Unbalanced parentheses in '{text}'.")
    return parts


@lru_cache(maxsize=512)
def rhs_terms(rhs: str) -> tuple[str, ...]:
    """The terms of a formulaic right-hand side (from `translate`), in formulaic's order ('1' for
    the intercept)."""
    simple = simple_terms(rhs)
    if simple is not None:  # column look-ups only: the same terms without importing formulaic (`terms`)
        return tuple(term_name(t) for t in simple)
    import formulaic  # here: it takes a tenth of a second, and only factors and the like need it

    try:
        terms = formulaic.Formula(rhs)
    except Exception as exc:  # formulaic raises several types; the message is what matters
        raise SpecificationError(f"Cannot read the terms '{rhs}': {plain_message(exc)}") from exc
    return tuple(str(t) for t in terms)


def read_terms(text: str, derived: dict[str, Derived], what: str, outcome: str | None = None) -> tuple[str, ...]:
    """Formula text -> its terms (formulaic term strings over column names and derived names),
    recording the derived columns in `derived` and checking the names used."""
    check_names(text, what)
    ftext, der, columns = translate(text)
    for d in der:
        derived.setdefault(d.name, d)
    for col in columns:
        if col in RESERVED:
            raise SpecificationError(
                f"The column '{col}' in {what} has the name of the intercept's column; rename the column "
                "(e.g. data.rename(columns={'Intercept': 'intercept_var'}))."
            )
        if outcome is not None and col == outcome:
            raise SpecificationError(
                f"The outcome '{outcome}' is also among the predictors ({what}: '{text}'). A variable cannot "
                "predict itself: remove it from the right-hand side."
            )
    return rhs_terms(ftext if ftext.strip() else "1")


def check_names(text: str, what: str) -> None:
    """Two names in a row ('my x': a column name with a space, not backticked) and backticked names
    holding ':' or '|' (which the model's own names use for interactions and random-effect bars,
    so that 'a:b' could not be told from the interaction of a and b) get a message that says what
    to write."""
    tokens = tokenize(text)
    for tok in tokens:
        if tok.kind == "quoted" and (":" in tok.text or "|" in tok.text):
            ch = ":" if ":" in tok.text else "|"
            use = "interactions (a:b)" if ch == ":" else "random-effect terms ((1 | g))"
            safe = tok.text.replace(":", "_").replace("|", "_")
            raise SpecificationError(
                f"The column name '{tok.text}' in {what} holds '{ch}', which the model's names use for {use}: its "
                f"coefficient could not be told from them. Rename the column, e.g. "
                f"df = df.rename(columns={{'{tok.text}': '{safe}'}}), and write '{safe}'."
            )
    for a, b in pairwise(tokens):
        if keyword.iskeyword(a.text) or keyword.iskeyword(b.text):
            continue  # 'x or y', 'lambda': the whitelist (`expressions`) refuses them with its own message
        if a.kind in ("name", "quoted", "number") and b.kind in ("name", "quoted"):
            both = f"{a.text} {b.text}"
            raise SpecificationError(
                f"{what[0].upper() + what[1:]} ('{text.strip()}') has two names in a row, '{a.text}' and '{b.text}', with "
                f"no operator between them. A column name with a space is written in backticks: `{both}`; otherwise "
                "join them with + (both), * (both and their interaction) or : (the interaction)."
            )


def grouping_factors(text: str, part: str) -> tuple[str, ...]:
    """The grouping factors `(... | text)` stands for, named as lme4 names them (`findbars`):

    - `g` -> ('g',); `a:b` -> ('a:b',): one factor whose levels are the combinations of a and b
      present in the data (R's `a:b` of two factors);
    - `a/b` -> ('a', 'b:a'), `a/b/c` -> ('a', 'b:a', 'c:(b:a)'), `a/(b:c)` -> ('a', '(b:c):a'):
      lme4's expansion of nesting, `(t | a/b)` = `(t | a) + (t | b:a)`. lme4's findbars lists the
      innermost factor first; here the outer factor comes first, so that `ModelSpec.groups[0]`
      is the top level (the names and the model are lme4's; only the order of the terms differs).

    A name holding ':' reads the data columns named in it (`spec.group_variables`)."""
    plus = split_outside(text, "+")
    if plus is not None and len(plus) > 1:
        raise SpecificationError(
            f"The grouping factor '{text}' in '{part}' holds '+': a random-effect term has one grouping factor. "
            f"Write one term per factor, e.g. (1 | {plus[0]}) + (1 | {plus[1]})."
        )
    levels = split_outside(text, "/")
    if levels is None:
        raise SpecificationError(f"Unbalanced parentheses in the grouping factor '{text}' of '{part}'.")
    if len(levels) == 1:
        return (_interaction(text, part),)
    out: list[str] = []
    for lv in levels:
        name = _interaction(lv, part)
        out.append(name if not out else f"{_wrap(name)}:{_wrap(out[-1])}")
    return tuple(out)


def _wrap(name: str) -> str:
    return f"({name})" if ":" in name else name


def _interaction(text: str, part: str) -> str:
    """'a' -> 'a', 'a:b' or '(a:b)' -> 'a:b', 'a:(b:c)' -> 'a:(b:c)': one grouping factor's name,
    its columns checked as names (`column_name`)."""
    t = text.strip()
    while t.startswith("(") and t.endswith(")") and split_outside(t[1:-1], ":") is not None:
        t = t[1:-1].strip()
    pieces = split_outside(t, ":")
    if pieces is None:
        raise SpecificationError(f"Unbalanced parentheses in the grouping factor '{text}' of '{part}'.")
    if len(pieces) == 1:
        return column_name(t, f"The grouping factor in '{part}'")
    names = []
    for piece in pieces:
        if piece.startswith("(") and piece.endswith(")"):
            names.append(_wrap(_interaction(piece, part)))
            continue
        name = column_name(piece, f"The grouping factor in '{part}'")
        if "(" in name or ")" in name:
            raise SpecificationError(
                f"The column '{name}' in the grouping factor '{text}' of '{part}' holds parentheses, which the "
                "names of nested and interaction factors use; rename the column."
            )
        names.append(name)
    return ":".join(names)


_BAR_RE = re.compile(r"^\((.*?)(\|\|?)(.*)\)$", re.S)


def parse_formula(formula: str) -> ModelSpec:
    """`"mathach ~ (sector + meanses) * cwc(ses) + (cwc(ses) | school)"` -> `ModelSpec`. The spec
    is frozen, so the parse of a formula is kept (refits and repeated fits parse it once)."""
    return _parse_formula(str(formula))


def split_formula(formula: str) -> tuple[str, str]:
    """'y ~ rhs' -> ('y' as a column name, 'rhs'); exactly one '~'."""
    tokens = tokenize(formula)
    tildes = sum(1 for t in tokens if t.text == "~" and t.kind == "op")
    for tok in tokens:  # before the bars are looked for: `a|b` is a name, not a bar
        if tok.kind == "quoted" and (":" in tok.text or "|" in tok.text):
            check_names(f"`{tok.text}`", "the formula")
    if tildes == 0:
        raise SpecificationError(
            f"The formula '{formula}' has no '~'. Write it as 'outcome ~ predictors + (terms | group)'."
        )
    if tildes > 1:
        raise SpecificationError(
            f"The formula '{formula}' has {tildes} '~'; write one: 'outcome ~ predictors + (terms | group)'."
        )
    lhs, rhs = formula.split("~", 1) if "`" not in formula.split("~", 1)[0] else _split_quoted(formula)
    if not rhs.strip():
        raise SpecificationError(f"The formula '{formula}' has nothing after '~'; write '1' for an intercept only.")
    return column_name(lhs.strip(), "The outcome"), rhs.strip()


def _split_quoted(formula: str) -> tuple[str, str]:
    quoted = False
    for i, ch in enumerate(formula):
        quoted ^= ch == "`"
        if ch == "~" and not quoted:
            return formula[:i], formula[i + 1 :]
    raise AssertionError(formula)


@lru_cache(maxsize=256)
def _parse_formula(formula: str) -> ModelSpec:
    lhs, rhs = split_formula(formula)
    if lhs in RESERVED:
        raise SpecificationError(f"The outcome column is named '{lhs}', the name of the intercept's column; rename it.")
    derived: dict[str, Derived] = {}
    offsets: list[Derived] = []
    fixed_parts: list[str] = []
    random: list[RandomTerm] = []
    for part in split_top_level(rhs):
        m = _BAR_RE.match(part)
        if m is None:
            if "|" in part:
                raise SpecificationError(
                    f"The term '{part}' has a bar but is not '(terms | group)'; put random-effect "
                    "terms in their own parentheses."
                )
            off = read_offset(part) if part.startswith("offset") else None
            if off is not None:
                if lhs in off.variables:
                    raise SpecificationError(f"The offset '{part}' uses the outcome '{lhs}'; an offset must be another column.")
                offsets.append(off)
            elif not part:
                raise SpecificationError(f"The formula '{formula}' has an empty term (two '+' in a row, or a '+' at an end).")
            else:
                fixed_parts.append(part)
            continue
        inside, bar, group_text = m.group(1).strip(), m.group(2), m.group(3).strip()
        factors = grouping_factors(group_text, part)
        if not inside:
            raise SpecificationError(
                f"The random-effect term '{part}' has nothing before the bar; write '(1 | {group_text})' for a "
                "random intercept or '(1 + x | g)' for a random intercept and slope."
            )
        terms = read_terms(inside, derived, f"the random-effect term '{part}'", outcome=lhs)
        if not terms:
            raise SpecificationError(
                f"The random-effect term '{part}' has no random effect at all (no intercept, no slope); "
                f"write '(1 | {group_text})' for a random intercept or '(0 + x | {group_text})' for a slope alone, or remove it."
            )
        for group in factors:  # a/b: the outer factor first, then b:a (`grouping_factors`)
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
    fixed = read_terms(" + ".join(fixed_parts) if fixed_parts else "1", derived, "the fixed part", outcome=lhs)
    if not fixed_parts and offsets:
        fixed = ("1",)
    return ModelSpec(
        outcome=lhs,
        fixed=fixed,
        random=tuple(random),
        derived=tuple(derived.values()),
        offsets=tuple(offsets),
    )


__all__ = ["ALLOWED", "grouping_factors", "parse_formula", "read_terms", "rhs_terms", "split_formula", "split_top_level"]
