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
