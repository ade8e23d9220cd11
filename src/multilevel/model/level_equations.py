"""HLM-style level equations -> `ModelSpec`.

    Level-1:  mathach = B0 + B1*(ses - group mean) + R
    Level-2:  B0 = G00 + G01*sector + G02*meanses + U0
              B1 = G10 + G11*sector + G12*meanses + U1

is written

    multilevel.levels(
        level1="mathach ~ 1 + cwc(ses)",
        level2={"Intercept": "sector + meanses + u", "cwc(ses)": "sector + meanses + u"},
        group="school",
    )

- level-1: the outcome and the level-1 predictors, each with its centring: `cwc(x)` group-mean,
  `cgm(x)` grand-mean, plain `x` none; `0 + ...` for a model without intercept.
- level-2: one equation per level-1 coefficient, keyed "Intercept" or the coefficient's name
  (`cwc(ses)`; the variable's name `ses` also does when only one coefficient is made from it). Its
  right-hand side lists the level-2 predictors (an intercept G_q0 is implied; `0` removes it) and
  `u` makes the coefficient random. A coefficient that is random with no fixed effect is `"0 + u"`
  (HLM's `B1 = U1`). A coefficient left out of `level2` is fixed with only its G_q0 (`"1"`).
- centring a level-2 predictor: `cgm(w)` in a level-2 equation centres w at its mean over the
  units, each counted once (HLM's grand-mean centring of a level-2 variable: sum_j w_j / J);
  in `ml.fit`, `cgm(w)` is w minus its mean over the rows (an lme4 user's `w - mean(w)`), so
  the two differ when units have different sizes. The report marks such predictors '$'.

The fixed part is the cross-level product of each coefficient with its level-2 predictors, in the
order lme4 would list `(W1 + W2) * x`, so both ways of writing one model give the same spec.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from multilevel.errors import SpecificationError, close_matches
from multilevel.model.expressions import Derived
from multilevel.model.formula import RESERVED, read_terms, rhs_terms, split_formula, split_top_level
from multilevel.model.spec import ModelSpec, RandomTerm, term_factors

INTERCEPT_NAMES = ("Intercept", "intercept", "intrcpt1", "INTRCPT1", "1")


def coefficient_key(key: str, coefs: list[str], derived: dict[str, Derived]) -> str:
    """The level-1 coefficient an equation of `level2` is for: its name, or, when exactly one
    coefficient is a derived column of that variable, the variable's name ({"ses": ...} for
    cwc(ses))."""
    if key in INTERCEPT_NAMES:
        if "1" not in coefs:
            raise SpecificationError(
                "level2 has an equation for the intercept but the level-1 model has none "
                "('0 + ...'); remove that equation or the '0 +'."
            )
        return "1"
    if key in coefs:
        return key
    of_var = [c for c in coefs if c in derived and derived[c].variables == (key,)]
    if len(of_var) == 1:
        return of_var[0]
    shown = ", ".join("Intercept" if c == "1" else c for c in coefs)
    if len(of_var) > 1:
        raise SpecificationError(
            f"level2 has an equation for '{key}', which is in more than one level-1 coefficient ({', '.join(of_var)}); "
            "key the equation by the coefficient's full name, e.g. {'cwc(x)': ...}."
        )
    raise SpecificationError(
        f"level2 has an equation for '{key}', which is not a level-1 coefficient ({shown})." + close_matches(key, coefs)
    )


def check_level1_columns(coefs: list[str], derived: dict[str, Derived], columns) -> None:
    """Each variable of the level-1 formula is a column of the data (when the columns are known),
    refused here, before the level-2 equations' keys are matched to a misspelt coefficient."""
    if columns is None:
        return
    known = {str(c) for c in columns}
    for coef in coefs:
        for f in coef.split(":") if coef != "1" else ():
            d = derived.get(f)
            names = d.variables if d is not None else ((f[2:-1].strip().strip("`"),) if f.startswith("C(") and f.endswith(")") else (f,))
            for v in names:
                # (a plain name only: an expansion's columns, e.g. poly()'s, are named otherwise)
                if v.isidentifier() and v not in known:
                    raise SpecificationError(f"'{v}' in the level-1 formula is not a column of the data." + close_matches(v, sorted(known)))


def read_level1(outcome: str, rhs: str, columns=None) -> tuple[list[str], dict[str, Derived]]:
    """The level-1 coefficients a_p of a level-1 formula's right-hand side ('1' for the intercept, in
    the order written) and the derived columns read from it (cwc(x), cgm(x)), for every level-equation
    form (`parse_levels`, `parse_levels_n`, `cross_equations.parse_cross_levels`). Refused: an outcome
    named as the intercept's column, an interaction a_p (it would have no level-2 equation of its own),
    and, when the data's `columns` are known, a variable that is none of them (`check_level1_columns`)."""
    if outcome in RESERVED:
        raise SpecificationError(f"The outcome column is named '{outcome}', the name of the intercept's column; rename it.")
    derived: dict[str, Derived] = {}
    coefs = list(read_terms(rhs, derived, "the level-1 model", outcome=outcome))
    for c in coefs:
        if len(term_factors(c)) > 1:
            raise SpecificationError(
                f"The level-1 term '{c}' is an interaction; make it a column of its own so it has its own level-2 equation."
            )
    check_level1_columns(coefs, derived, columns)
    return coefs, derived


def lme4_order(outcome: str, derived: dict[str, Derived], terms: list[str]) -> tuple[str, ...]:
    """`terms` ('1' for the intercept) in the order formulaic gives `ml.fit`'s formula (the intercept,
    or '0', first; then by degree), so that the level equations and the formula of one model give
    the same spec."""
    spec0 = ModelSpec(outcome, (), (), derived=tuple(derived.values()))
    return rhs_terms(" + ".join(["1" if "1" in terms else "0", *[spec0.quote_term(t) for t in terms if t != "1"]]))


RANDOM_MARKERS = ("u", "random")
#: HLM's names of the random effects (U0, U1, ...; u0 as some texts write them): here the marker is `u`
HLM_RANDOM_NAME = re.compile(r"^[uU][0-9]+$")


def hlm_random_name_message(name: str, coefficient: str | None = None) -> str:
    """The message for HLM's U0/U1 notation written where this package reads the marker `u`."""
    where = f" in the level-2 equation of '{coefficient}'" if coefficient else " in a level-2 equation"
    return (
        f"'{name}'{where} is HLM's notation for a random effect (U0 for the intercept's, U1 for the first slope's, ...) "
        f"and is not a column of the data. Here every random effect is written 'u': e.g. "
        "{'Intercept': 'sector + u', 'cwc(ses)': 'u'} (the name U_q is given in the report). A data column of that "
        "name would be read as the column."
    )


def check_level2_form(level1: str, level2) -> None:
    """level2 is a dict {coefficient: equation}: one string cannot say which coefficient it is for."""
    if level2 is None or isinstance(level2, Mapping):
        if level2 is not None:
            bad = [k for k, v in level2.items() if not isinstance(k, str) or not isinstance(v, str)]
            if bad:
                raise SpecificationError(
                    f"level2 maps each level-1 coefficient's name to its equation as text, e.g. "
                    f"{{'Intercept': 'sector + u'}}; the entry {bad[0]!r}: {level2[bad[0]]!r} is not a name and a text."
                )
        return
    try:
        _, rhs = split_formula(level1) if "~" in level1 else ("", level1)
        coefs = ["Intercept"] + [t for t in split_top_level(rhs) if t and t.strip() not in ("1", "0", "-1")]
    except Exception:  # the level-1 formula is checked (with its own message) after this
        coefs = ["Intercept"]
    example = ", ".join(f"{c!r}: {str(level2)!r}" if isinstance(level2, str) else f"{c!r}: '...'" for c in coefs)
    raise SpecificationError(
        f"level2 must be a dict with one level-2 equation per level-1 coefficient, not a {type(level2).__name__}: "
        f"e.g. level2={{{example}}} (keys: 'Intercept' and the level-1 terms; 'u' in an equation makes that "
        "coefficient random; a coefficient left out is fixed, '1')."
    )


def check_marker_columns(level2: Mapping[str, str] | None, columns) -> None:
    """A data column named u/U (or random) beside the random-effect marker `u`: which is meant
    cannot be told, so neither is guessed. A backticked `u` is the column; the word `random`
    marks a random coefficient when the data have a column u."""
    if not level2 or columns is None:
        return
    # the marker is read whatever its case (u, U, Random), so a column u or U is ambiguous either way
    names = {str(c).lower(): str(c) for c in columns}
    for key, rhs2 in level2.items():
        if not isinstance(rhs2, str):
            continue
        parts = [q for q in split_top_level(rhs2) if q]
        for p in parts:
            if p.lower() in RANDOM_MARKERS and p.lower() in names:
                col = names[p.lower()]
                other = "random" if p.lower() == "u" else "u"
                example = " + ".join(f"`{col}`" if q == p else q for q in parts)
                raise SpecificationError(
                    f"The level-2 equation of '{key}' ('{rhs2}') has '{p}', which marks a random coefficient, but the "
                    f"data also have a column named '{col}': which is meant cannot be told. Write `{col}` (in backticks) "
                    f"for the column and '{other}' to make the coefficient random (e.g. '{example} + {other}'), or "
                    "rename the column."
                )


def parse_levels(level1: str, level2: Mapping[str, str] | None, group: str, columns=None) -> ModelSpec:
    """Level-1 formula + level-2 equations + grouping column -> `ModelSpec` (see module doc).
    `columns`: the data's column names, when known (a column named u/U is checked against the
    marker `u`: `check_marker_columns`)."""
    check_level2_form(level1, level2)
    if not isinstance(level1, str):
        raise SpecificationError(f"level1 must be a formula as text, e.g. 'mathach ~ 1 + cwc(ses)', not a {type(level1).__name__}.")
    check_marker_columns(level2, columns)
    if "~" not in level1:
        raise SpecificationError(f"level1 '{level1}' needs the form 'outcome ~ predictors'.")
    outcome, rhs = split_formula(level1)
    if "|" in rhs:
        raise SpecificationError(
            "level1 takes no '(... | group)' terms: say which coefficients are random with 'u' "
            "in their level-2 equation."
        )
    coefs, derived = read_level1(outcome, rhs, columns)
    equations = {c: "1" for c in coefs}
    for key, rhs2 in (level2 or {}).items():
        equations[coefficient_key(key, coefs, derived)] = rhs2

    fixed: list[str] = []
    random_terms: list[str] = []
    level2_vars: set[str] = set()
    known = None if columns is None else {str(c) for c in columns}
    hlm_names: list[tuple[str, str]] = []
    for coef in coefs:
        parts = [p for p in split_top_level(equations[coef]) if p]
        for p in parts:
            if HLM_RANDOM_NAME.match(p.strip()) and (known is None or p.strip() not in known):
                shown = "Intercept" if coef == "1" else coef
                if known is not None:  # not a column: HLM's U_q, written where 'u' is meant
                    raise SpecificationError(hlm_random_name_message(p.strip(), shown))
                hlm_names.append((p.strip(), shown))
        is_random = any(p.lower() in RANDOM_MARKERS for p in parts)
        parts = [p for p in parts if p.lower() not in RANDOM_MARKERS]
        w_terms = read_terms(" + ".join(parts) if parts else "1", derived, f"the level-2 equation of '{coef}'", outcome=outcome)
        for w in w_terms:
            if w == "1":
                fixed.append(coef)
            else:
                level2_vars.update(term_factors(w))
                fixed.append(w if coef == "1" else f"{w}:{coef}")
        if is_random:
            random_terms.append(coef)
    # cgm() of a level-2 predictor: HLM's grand mean over the units, not over the rows (module doc)
    for name, d in list(derived.items()):
        if d.kind == "grand" and name in level2_vars and name not in coefs:
            derived[name] = dataclasses.replace(d, over_units=True)
    if not random_terms and hlm_names:
        raise SpecificationError(hlm_random_name_message(*hlm_names[0]))
    if not random_terms:
        raise SpecificationError(
            "No level-1 coefficient is random: add 'u' to at least one level-2 equation, "
            "e.g. level2={'Intercept': '1 + u'}."
        )
    for v in sorted(level2_vars):
        dv = derived.get(v)
        if dv is not None and dv.kind == "group":
            raise SpecificationError(
                f"'{dv.variables[0]}' is a level-2 predictor (in '{v}'); it is constant within groups, so group-mean "
                f"centring would make it zero. Use cgm({dv.variables[0]}) or {dv.variables[0]}."
            )
    return ModelSpec(
        outcome=outcome,
        fixed=lme4_order(outcome, derived, fixed),
        random=(RandomTerm(group, tuple(random_terms)),),
        derived=tuple(derived.values()),
        level2=frozenset(level2_vars),
    )


# ----- three and four levels (HLM3, HLM4) ----------------------------------------------------------
THREE_LEVEL_DOC = """HLM3's and HLM4's level equations -> `ModelSpec` (`parse_levels3`, `parse_levels_n`;
`multilevel.levels(..., level3=..., level4=...)`).

HLM3 writes (R&B 2002 ch. 8; the HLM manual's EG example):

    Level-1:  MATH = P0 + P1*(YEAR) + E
    Level-2:  P0 = B00 + B01*(BLACK) + B02*(HISPANIC) + R0
              P1 = B10 + B11*(BLACK) + B12*(HISPANIC) + R1
    Level-3:  B00 = G000 + G001*(LOWINC) + U00
              B01 = G010,  B02 = G020
              B10 = G100 + G101*(LOWINC) + U10
              B11 = G110,  B12 = G120

which is written

    multilevel.levels(
        level1="math ~ 1 + year",
        level2={"Intercept": "black + hispanic + random", "year": "black + hispanic + random"},
        level3={"Intercept": {"Intercept": "lowinc + random"}, "year": {"Intercept": "lowinc + random"}},
        group=("childid", "schoolid"),
    )

- `group`: the ids of level 2 and level 3, innermost first (HLM3's level-2 and level-3 ids).
  Level-2 ids are read WITHIN level-3 units, as HLM3 reads them (its level-1 file is sorted by
  the level-3 id and then the level-2 id; child 1 of school A and child 1 of school B are two
  children): the level-2 factor is lme4's `childid:schoolid`, so the model is lme4's
  `(... | schoolid) + (... | childid:schoolid)`, i.e. `(... | schoolid/childid)`. When the level-2
  ids are unique across level-3 units already, this is the same factor as `(... | childid)`.
- `level1` and `level2` as for two levels (`parse_levels`): level-2 equations keyed by the
  level-1 coefficient (P_p), listing its level-2 predictors (B_pq, q >= 1; an intercept B_p0 is
  implied, `0` removes it); `random` (or `u`) adds R_p, the level-2 random effect.
- `level3`: per level-1 coefficient, a dict of level-3 equations keyed by the level-2
  coefficient: "Intercept" for B_p0, the level-2 predictor's name for B_pq. Each lists the
  level-3 predictors (G_pqs; G_pq0 implied, `0` removes it) and `random` (or `u`) adds U_pq.
  A B_pq left out (or given as "") is fixed with only its G_pq0, HLM3's default.
- centring, at every level as HLM3 centres (`,1` group mean, `,2` grand mean in its command file):
  - level 1: `cwc(x)` x minus the mean of x over the rows of its level-2 unit; `cgm(x)` x minus
    its mean over all rows;
  - level 2 (in a level-2 equation): `cwc(w)` w minus the mean of w over the level-2 units of its
    level-3 unit, each level-2 unit counted once (HLM3 centres a level-2 variable in its level-2
    file: sum_j w_jk / J_k); `cgm(w)` w minus its mean over all level-2 units, each counted once;
  - level 3: `cgm(s)` s minus its mean over the level-3 units, each counted once (the top level has
    no unit above it, so `cwc` there is refused).
  A centred predictor must be constant within the units of its level (refused otherwise, naming a
  unit), and one centred column is written at one level only (cgm(x) at level 1 and at level 2
  would be two different columns of one name: refused). The report prints HLM's notes ("x has
  been centered around the group mean.", `reports.equations.centring_notes`).
- four levels (HLM4): `level4=`, per level-1 coefficient, per level-2 coefficient, a dict of
  level-4 equations keyed by the level-3 coefficient ("Intercept" or the level-3 predictor); and
  `group=(level-2 id, level-3 id, level-4 id)`. The random effects at level k are on the
  coefficients of level k-1; the fixed effects are the level-4 equations' terms. The factors are
  lme4's names of `(... | l4/l3/l2)`: `l4`, `l3:l4`, `l2:(l3:l4)`. Centring as above, one level up
  (cwc at level 3 is within the level-4 unit; cgm at level 4 over the level-4 units).

The fixed part is every product G_pqs: W_s * X_q * a_p; the random part R_p on a_p and U_pq on
X_q * a_p. The report names them as HLM3 does (`reports.hlm3`).
"""

#: the number words of the models' levels, for messages
_LEVELS = {3: "three", 4: "four"}


def _check_nested_form(eqs, depth: int, level: int) -> None:
    """level3 is {p: {q: text}}, level4 {p: {q: {s: text}}}: dicts `depth` deep with text at the bottom."""
    example = {3: "level3={'Intercept': {'Intercept': 'lowinc + random'}, 'year': {'Intercept': 'lowinc'}}",
               4: "level4={'Intercept': {'Intercept': {'Intercept': 'w4 + random'}}}"}[level]
    if not isinstance(eqs, Mapping):
        raise SpecificationError(
            f"level{level} must be a dict with, per level-1 coefficient, " + ("a dict of level-3 equations keyed by the level-2 coefficient"
            if level == 3 else "per level-2 coefficient, a dict of level-4 equations keyed by the level-3 coefficient")
            + f", e.g. {example}; not a {type(eqs).__name__}."
        )

    def leaves_ok(v, d: int) -> bool:
        if d == 0:
            return isinstance(v, str)
        return isinstance(v, Mapping) and all(isinstance(k, str) and leaves_ok(x, d - 1) for k, x in v.items())

    for key, sub in eqs.items():
        if not isinstance(key, str) or not leaves_ok(sub, depth - 1):
            inner = "{level-2 coefficient: equation}" if level == 3 else "{level-2 coefficient: {level-3 coefficient: equation}}"
            raise SpecificationError(
                f"level{level}[{key!r}] must be a dict {inner}, e.g. "
                + ("{'Intercept': 'lowinc + random', 'black': ''}" if level == 3 else "{'Intercept': {'Intercept': 'w4 + random'}}")
                + f" (keys: 'Intercept' and the predictors of the level below); got {sub!r}."
            )


def _check_level3_form(level3) -> None:
    _check_nested_form(level3, 2, 3)


def factor_names(ids: tuple[str, ...]) -> tuple[str, ...]:
    """lme4's names of the grouping factors of levels 2..L from the ids (innermost first), as
    `(... | l_L/.../l_2)` names them: ('childid', 'schoolid') -> ('childid:schoolid', 'schoolid');
    ('c', 'b', 'a') -> ('c:(b:a)', 'b:a', 'a')."""
    names = [ids[-1]]
    for i in reversed(ids[:-1]):
        outer = names[0]
        names.insert(0, f"{i}:({outer})" if ":" in outer else f"{i}:{outer}")
    return tuple(names)


def _equation_terms(text: str, derived: dict[str, Derived], what: str, outcome: str,
                    known: set[str] | None = None) -> tuple[list[str], bool]:
    """An equation's predictor terms ('1' for its intercept) and whether it has the random marker.
    HLM's names of random effects (R0, U00) are refused unless the data (`known`) have such a column."""
    parts = [p for p in split_top_level(text.strip() or "1") if p]
    for p in parts:
        if (HLM_RANDOM_NAME.match(p.strip()) or re.match(r"^[rR][0-9]+$", p.strip())) and (known is None or p.strip() not in known):
            raise SpecificationError(
                f"'{p.strip()}' in {what} is HLM's name of a random effect (R_p at level 2, U_pq at level 3), not a column; "
                "write 'random' (or 'u') to make the coefficient random."
            )
    is_random = any(p.lower() in RANDOM_MARKERS for p in parts)
    parts = [p for p in parts if p.lower() not in RANDOM_MARKERS]
    terms = list(read_terms(" + ".join(parts) if parts else "1", derived, what, outcome=outcome))
    for t in terms:
        if t != "1" and len(term_factors(t)) > 1:
            raise SpecificationError(f"The term '{t}' in {what} is an interaction; make it a column of its own.")
    return terms, is_random


def _place_centring(terms: list[str], level: int, top: int, factors: Mapping[int, str],
                    derived: dict[str, Derived], placed: dict[str, int]) -> None:
    """Give the centred columns among `terms`, written at `level`, the units HLM centres them at
    (`Derived.within`, `Derived.counted`; module doc THREE_LEVEL_DOC): cwc at level L is within the
    level L+1 unit, counting level-L units once (L >= 2); cgm at level L >= 2 counts level-L units once."""
    for t in terms:
        d = derived.get(t)
        if d is None or d.kind not in ("group", "grand"):
            continue
        var = d.variables[0]
        prior = placed.get(t)
        if prior is not None and prior != level:
            raise SpecificationError(
                f"{d.source} is written at level {prior} and at level {level}: HLM centres a variable at the units of "
                f"the level where it is a predictor, so these would be two different columns of one name. Write it at "
                f"one level, or make a centred column for the other yourself (e.g. df['{var}_c'] = ...) and use it by name."
            )
        placed[t] = level
        if d.kind == "group":
            if level == top:
                raise SpecificationError(
                    f"{d.source}: group-mean centring of a level-{level} variable, but level {level} is the top level: "
                    f"there is no unit above it whose mean could be subtracted. Use cgm({var}) (its grand mean over the "
                    f"level-{level} units, HLM's grand-mean centring) or {var}."
                )
            derived[t] = dataclasses.replace(d, within=factors[level + 1], counted=factors[level] if level >= 2 else "")
        elif level >= 2:
            derived[t] = dataclasses.replace(d, counted=factors[level])


def _shown(t: str) -> str:
    return "Intercept" if t == "1" else t


def _product(path: tuple[str, ...]) -> str:
    """The column of a coefficient path (a_p, X_q, W_s, ...): the top level's factor first, as
    `(W1 + W2) * X * a` lists it; '1' for the intercepts."""
    return ":".join(p for p in reversed(path) if p != "1") or "1"


def _canon(mapping: Mapping, terms: list[str], level: int, path: tuple[str, ...], derived: dict[str, Derived]) -> dict:
    """A level-k dict's keys (at `path`) as the terms of the equation below ('1' for 'Intercept'):
    level-1 coefficients by `coefficient_key`, the others by name (a centred one also by its
    variable's, {'w2': ...} for cwc(w2), when only one term is made from it); unknown keys refused."""
    out: dict = {}
    for key, value in mapping.items():
        if not path:
            out[coefficient_key(key, terms, derived)] = value
            continue
        of_var = [t for t in terms if t in derived and derived[t].variables == (key,)]
        if key not in terms and len(of_var) == 1:
            key = of_var[0]
        shown = "/".join(f"'{_shown(p)}'" for p in path)
        where = f"level{level}[" + "][".join(repr(_shown(p)) for p in path) + "]"
        below = level - 1
        if key in INTERCEPT_NAMES:
            if "1" not in terms:
                raise SpecificationError(
                    f"{where} has an equation for the intercept of {shown}, but the level-{below} equation of {shown} has none ('0 + ...')."
                )
            out["1"] = value
        elif key in terms:
            out[key] = value
        else:
            named = ", ".join(_shown(t) for t in terms)
            raise SpecificationError(
                f"{where} has an equation for '{key}', which is not a level-{below} coefficient of {shown} ({named})."
                + close_matches(key, [t for t in terms if t != "1"])
            )
    return out


def parse_levels_n(level1: str, upper: Mapping[int, Mapping | None], group: tuple[str, ...], columns=None) -> ModelSpec:
    """Level-1 formula + the equations of levels 2..L (`upper[k]`, k = 2..L) + the ids of levels
    2..L (innermost first) -> `ModelSpec` (HLM3 for L = 3, HLM4 for L = 4; THREE_LEVEL_DOC). The
    fixed effects are the top level's terms times their coefficient paths; level k's random effects
    (k >= 2) are on the coefficients of level k-1: `(... | l_L) + (... | l_{L-1}:l_L) + ...`."""
    top = max(upper)
    level2 = upper.get(2)
    check_level2_form(level1, level2)
    for k in range(3, top + 1):
        _check_nested_form(upper.get(k) or {}, k - 1, k)
    n_ids = top - 1
    if isinstance(group, str) or len(group) != n_ids or not all(isinstance(g, str) and g for g in group):
        if top == 3:
            raise SpecificationError(
                f"A three-level model needs group=(level-2 id, level-3 id), innermost first, e.g. group=('childid', 'schoolid'); got {group!r}."
            )
        raise SpecificationError(
            f"A {_LEVELS.get(top, str(top))}-level model needs group=(" + ", ".join(f"level-{k} id" for k in range(2, top + 1))
            + f"), innermost first, e.g. group=('class', 'school', 'district'); got {group!r}."
        )
    if len(set(group)) < len(group):
        dup = next(g for g in group if group.count(g) > 1)
        if top == 3:
            raise SpecificationError(f"The level-2 and level-3 ids are both '{dup}': give the two id columns.")
        raise SpecificationError(f"Two levels' ids are both '{dup}': give one id column per level.")
    if not isinstance(level1, str) or "~" not in level1:
        raise SpecificationError(f"level1 must be a formula as text, 'outcome ~ predictors', e.g. 'math ~ 1 + year'; got {level1!r}.")
    check_marker_columns(level2, columns)

    def marker_check(eqs, depth: int) -> None:
        for v in (eqs or {}).values():
            if depth == 1:
                check_marker_columns(v, columns)
            else:
                marker_check(v, depth - 1)

    for k in range(3, top + 1):
        marker_check(upper.get(k), k - 2)
    outcome, rhs = split_formula(level1)
    if "|" in rhs:
        raise SpecificationError("level1 takes no '(... | group)' terms: say which coefficients are random with 'random' in "
                                 "their level-2 equation (R_p) or level-3 equations (U_pq).")
    coefs, derived = read_level1(outcome, rhs, columns)
    names = factor_names(tuple(group))
    factors = {k: names[k - 2] for k in range(2, top + 1)}
    placed: dict[str, int] = {}
    _place_centring(coefs, 1, top, factors, derived, placed)
    known = None if columns is None else {str(c) for c in columns}
    fixed: list[str] = []
    random: dict[int, list[str]] = {k: [] for k in range(2, top + 1)}
    written: dict[str, int] = {}  # each plain predictor: the highest level whose equations name it

    def walk(path: tuple[str, ...], terms: list[str], level: int, subs: dict[int, Mapping]) -> None:
        """The node of `path` (its coefficients' `terms`, read at `level`), with the equations of the
        levels above resolved to it (`subs`)."""
        canon = {k: _canon(m, terms, k, path, derived) for k, m in subs.items()}
        for t in terms:
            p = path + (t,)
            if level == top:
                fixed.append(_product(p))
                continue
            child = {k: c[t] for k, c in canon.items() if t in c}
            text = child.pop(level + 1, "1")
            chain = " / ".join(f"'{_shown(x)}'" for x in p)
            what = f"the level-{level + 1} equation of {chain}"
            if level + 1 == 2:
                what = f"the level-2 equation of '{_shown(t)}'"
            x_terms, is_random = _equation_terms(text, derived, what, outcome, known)
            _place_centring([x for x in x_terms if x != "1"], level + 1, top, factors, derived, placed)
            for x in x_terms:
                if x != "1" and x not in derived:  # (a centred one is checked with its centring)
                    written[x] = max(written.get(x, 0), level + 1)
            if is_random:
                random[level + 1].append(_product(p))
            walk(p, x_terms, level + 1, child)

    walk((), coefs, 1, {k: upper.get(k) or {} for k in range(2, top + 1)})
    if known is not None:
        # a name that is no column (a typo, 'rand' for 'random') said before what it leaves missing
        for x in written:
            for v in x.split(":"):
                if v.isidentifier() and v not in known:
                    raise SpecificationError(f"'{v}' in a level equation is not a column of the data."
                                             + close_matches(v, sorted(known | {"random"})))
    if not random[2]:
        raise SpecificationError(
            "No level-1 coefficient is random at level 2: add 'random' to a level-2 equation (e.g. level2={'Intercept': "
            "'random'}); a model without level-2 random effects is a model of one level fewer"
            + (f" (ml.levels(level1, level2, group='{group[1]}'))." if top == 3 else ".")
        )
    for k in range(3, top + 1):
        if not random[k]:
            example = {3: "level3={'Intercept': {'Intercept': 'random'}}", 4: "level4={'Intercept': {'Intercept': {'Intercept': 'random'}}}"}[k]
            raise SpecificationError(
                f"No level-{k - 1} coefficient is random at level {k}: add 'random' to a level-{k} equation (e.g. {example}); "
                f"without one this is a model of one level fewer."
            )
    return ModelSpec(
        outcome=outcome,
        fixed=lme4_order(outcome, derived, fixed),
        random=tuple(RandomTerm(factors[k], lme4_order(outcome, derived, random[k])) for k in range(top, 1, -1)),
        derived=tuple(derived.values()),
        unit_predictors=tuple((x, (factors[k],)) for x, k in written.items()),
    )


def parse_levels3(level1: str, level2: Mapping[str, str] | None, level3: Mapping[str, Mapping[str, str]],
                  group: tuple[str, str], columns=None) -> ModelSpec:
    """Level-1 formula + level-2 and level-3 equations + (level-2 id, level-3 id) -> `ModelSpec`
    (the model of `THREE_LEVEL_DOC`): fixed effects G_pqs = W_s:X_q:a_p, random terms
    `(U_pq's columns | level3) + (R_p's columns | level2:level3)`."""
    check_level2_form(level1, level2)
    _check_level3_form(level3)
    return parse_levels_n(level1, {2: level2, 3: level3}, group, columns)


def parse_levels4(level1: str, level2: Mapping[str, str] | None, level3: Mapping[str, Mapping[str, str]] | None,
                  level4: Mapping[str, Mapping[str, Mapping[str, str]]], group: tuple[str, str, str], columns=None) -> ModelSpec:
    """HLM4: level-1 formula + level-2, level-3 and level-4 equations + (level-2, level-3, level-4 ids)
    -> `ModelSpec` (`THREE_LEVEL_DOC`, four levels): random terms `(... | l4) + (... | l3:l4) + (... | l2:(l3:l4))`."""
    check_level2_form(level1, level2)
    _check_nested_form(level3 or {}, 2, 3)
    _check_nested_form(level4, 3, 4)
    return parse_levels_n(level1, {2: level2, 3: level3, 4: level4}, group, columns)


parse_levels3.__doc__ = (parse_levels3.__doc__ or "") + "\n" + THREE_LEVEL_DOC
