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


def _coefficient_key(key: str, coefs: list[str], derived: dict[str, Derived]) -> str:
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


def _check_level2_form(level1: str, level2) -> None:
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
    _check_level2_form(level1, level2)
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
    if outcome in RESERVED:
        raise SpecificationError(f"The outcome column is named '{outcome}', the name of the intercept's column; rename it.")
    derived: dict[str, Derived] = {}
    coefs = list(read_terms(rhs, derived, "the level-1 model", outcome=outcome))
    for c in coefs:
        if len(term_factors(c)) > 1:
            raise SpecificationError(
                f"The level-1 term '{c}' is an interaction; make it a column of its own so it has "
                "its own level-2 equation."
            )
    equations = {c: "1" for c in coefs}
    for key, rhs2 in (level2 or {}).items():
        equations[_coefficient_key(key, coefs, derived)] = rhs2

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
    # formulaic orders terms by degree, as the formula route does.
    spec0 = ModelSpec(outcome, (), (), derived=tuple(derived.values()))
    ordered = rhs_terms(" + ".join(["1" if "1" in fixed else "0", *[spec0.quote_term(t) for t in fixed if t != "1"]]))
    return ModelSpec(
        outcome=outcome,
        fixed=ordered,
        random=(RandomTerm(group, tuple(random_terms)),),
        derived=tuple(derived.values()),
        level2=frozenset(level2_vars),
    )


# ----- three levels (HLM3) --------------------------------------------------------------------
THREE_LEVEL_DOC = """HLM3's level equations -> `ModelSpec` (`parse_levels3`; `multilevel.levels(..., level3=...)`).

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
- centring: `cgm(x)` of a level-1 variable (grand mean over the level-1 rows, HLM's grand mean of
  a level-1 variable). Group-mean centring at a level's own unit and grand-mean centring of
  level-2 and level-3 predictors over their units (HLM3's `,1`/`,2` at levels 2 and 3) are
  refused for now: compute the centred column first (e.g. x - mean of x within the child).
- four levels (HLM4) are not taken yet (refused: there is no `level4`).

The fixed part is every product G_pqs: W_s * X_q * a_p; the random part R_p on a_p and U_pq on
X_q * a_p. The report names them as HLM3 does (`reports.hlm3`).
"""


def _check_level3_form(level3) -> None:
    if not isinstance(level3, Mapping):
        raise SpecificationError(
            "level3 must be a dict with, per level-1 coefficient, a dict of level-3 equations keyed by the level-2 "
            "coefficient, e.g. level3={'Intercept': {'Intercept': 'lowinc + random'}, 'year': {'Intercept': 'lowinc'}}; "
            f"not a {type(level3).__name__}."
        )
    for key, eqs in level3.items():
        if not isinstance(key, str) or not isinstance(eqs, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in eqs.items()
        ):
            raise SpecificationError(
                f"level3[{key!r}] must be a dict {{level-2 coefficient: equation}}, e.g. {{'Intercept': 'lowinc + random', "
                f"'black': ''}} (the level-2 coefficients of '{key}': 'Intercept' and its level-2 predictors); got {eqs!r}."
            )


def _centring_refusal(d: Derived, level: str) -> SpecificationError:
    var = d.variables[0]
    if d.kind == "group":
        what = "group-mean centring (cwc)"
        hlm = "the mean of the unit one level up (a level-1 variable within its level-2 unit, a level-2 one within its level-3 unit)"
        example = f"df['{var}_c'] = df['{var}'] - df.groupby(<that unit's ids>)['{var}'].transform('mean')"
    else:
        what = "grand-mean centring (cgm)"
        hlm = "its mean over the units of its own level, each counted once"
        example = f"df['{var}_c'] = df['{var}'] - df.groupby(<its level's ids>)['{var}'].first().mean()"
    return SpecificationError(
        f"{d.source}: {what} of a {level} variable in a three-level model is not implemented yet (HLM3 centres it at "
        f"{hlm}). Compute the centred column first ({example}) and use it by name."
    )


def _equation_terms(text: str, derived: dict[str, Derived], what: str, outcome: str, level: str,
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
    before = set(derived)
    terms = list(read_terms(" + ".join(parts) if parts else "1", derived, what, outcome=outcome))
    for name in set(derived) - before:
        d = derived[name]
        if d.kind in ("group", "grand"):
            raise _centring_refusal(d, level)
    for t in terms:
        if t != "1" and len(term_factors(t)) > 1:
            raise SpecificationError(f"The term '{t}' in {what} is an interaction; make it a column of its own.")
    return terms, is_random


def parse_levels3(level1: str, level2: Mapping[str, str] | None, level3: Mapping[str, Mapping[str, str]],
                  group: tuple[str, str], columns=None) -> ModelSpec:
    """Level-1 formula + level-2 and level-3 equations + (level-2 id, level-3 id) -> `ModelSpec`
    (the model of `THREE_LEVEL_DOC`): fixed effects G_pqs = W_s:X_q:a_p, random terms
    `(U_pq's columns | level3) + (R_p's columns | level2:level3)`."""
    _check_level2_form(level1, level2)
    _check_level3_form(level3)
    if isinstance(group, str) or len(group) != 2 or not all(isinstance(g, str) and g for g in group):
        raise SpecificationError(
            f"A three-level model needs group=(level-2 id, level-3 id), innermost first, e.g. group=('childid', 'schoolid'); got {group!r}."
        )
    l2_id, l3_id = group
    if l2_id == l3_id:
        raise SpecificationError(f"The level-2 and level-3 ids are both '{l2_id}': give the two id columns.")
    if not isinstance(level1, str) or "~" not in level1:
        raise SpecificationError(f"level1 must be a formula as text, 'outcome ~ predictors', e.g. 'math ~ 1 + year'; got {level1!r}.")
    check_marker_columns(level2, columns)
    for eqs in level3.values():
        check_marker_columns(eqs, columns)
    outcome, rhs = split_formula(level1)
    if "|" in rhs:
        raise SpecificationError("level1 takes no '(... | group)' terms: say which coefficients are random with 'random' in "
                                 "their level-2 equation (R_p) or level-3 equations (U_pq).")
    if outcome in RESERVED:
        raise SpecificationError(f"The outcome column is named '{outcome}', the name of the intercept's column; rename it.")
    derived: dict[str, Derived] = {}
    coefs = list(read_terms(rhs, derived, "the level-1 model", outcome=outcome))
    for d in derived.values():
        if d.kind == "group":
            raise _centring_refusal(d, "level-1")
    for c in coefs:
        if len(term_factors(c)) > 1:
            raise SpecificationError(f"The level-1 term '{c}' is an interaction; make it a column of its own so it has its own level-2 equation.")
    eq2 = {c: "1" for c in coefs}
    for key, text in (level2 or {}).items():
        eq2[_coefficient_key(key, coefs, derived)] = text
    eq3: dict[str, Mapping[str, str]] = {}
    for key, eqs in level3.items():
        eq3[_coefficient_key(key, coefs, derived)] = eqs

    known = None if columns is None else {str(c) for c in columns}
    fixed: list[str] = []
    random2: list[str] = []
    random3: list[str] = []
    for coef in coefs:
        shown = "Intercept" if coef == "1" else coef
        x_terms, r_random = _equation_terms(eq2[coef], derived, f"the level-2 equation of '{shown}'", outcome, "level-2", known)
        if r_random:
            random2.append(coef)
        given = dict(eq3.get(coef, {}))
        by_term: dict[str, str] = {}
        for key, text in given.items():
            if key in INTERCEPT_NAMES:
                if "1" not in x_terms:
                    raise SpecificationError(
                        f"level3['{shown}'] has an equation for the intercept B_{shown}0, but the level-2 equation of '{shown}' has none ('0 + ...')."
                    )
                by_term["1"] = text
            elif key in x_terms:
                by_term[key] = text
            else:
                named = ", ".join("Intercept" if t == "1" else t for t in x_terms)
                raise SpecificationError(
                    f"level3['{shown}'] has an equation for '{key}', which is not a level-2 coefficient of '{shown}' "
                    f"({named})." + close_matches(key, [t for t in x_terms if t != "1"])
                )
        for x in x_terms:
            where = f"the level-3 equation of '{shown}'" + ("" if x == "1" else f" / '{x}'")
            w_terms, u_random = _equation_terms(by_term.get(x, "1"), derived, where, outcome, "level-3", known)
            base = [f for f in (x, coef) if f != "1"]
            for w in w_terms:
                parts = ([] if w == "1" else [w]) + base
                fixed.append(":".join(parts) if parts else "1")
            if u_random:
                random3.append(":".join(base) if base else "1")
    if not random2:
        raise SpecificationError(
            "No level-1 coefficient is random at level 2: add 'random' to a level-2 equation (e.g. level2={'Intercept': "
            "'random'}); a model without level-2 random effects is a two-level model of the level-3 units "
            f"(ml.levels(level1, level2, group='{l3_id}'))."
        )
    if not random3:
        raise SpecificationError(
            "No level-2 coefficient is random at level 3: add 'random' to a level-3 equation (e.g. level3={'Intercept': "
            "{'Intercept': 'random'}}); without one this is a two-level model of the level-2 units."
        )
    spec0 = ModelSpec(outcome, (), (), derived=tuple(derived.values()))
    ordered = rhs_terms(" + ".join(["1" if "1" in fixed else "0", *[spec0.quote_term(t) for t in fixed if t != "1"]]))

    def ordered_random(terms: list[str]) -> tuple[str, ...]:
        return rhs_terms(" + ".join(["1" if "1" in terms else "0", *[spec0.quote_term(t) for t in terms if t != "1"]]))

    return ModelSpec(
        outcome=outcome,
        fixed=ordered,
        random=(RandomTerm(l3_id, ordered_random(random3)), RandomTerm(f"{l2_id}:{l3_id}", ordered_random(random2))),
        derived=tuple(derived.values()),
    )


parse_levels3.__doc__ = (parse_levels3.__doc__ or "") + "\n" + THREE_LEVEL_DOC
