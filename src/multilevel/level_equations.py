"""HLM-style level equations -> `ModelSpec`.

    Level-1:  mathach = B0 + B1*(ses - group mean) + R
    Level-2:  B0 = G00 + G01*sector + G02*meanses + U0
              B1 = G10 + G11*sector + G12*meanses + U1

is written

    multilevel.levels(
        level1="mathach ~ 1 + cwc(ses)",
        level2={"Intercept": "sector + meanses + u", "ses": "sector + meanses + u"},
        group="school",
    )

- level-1: the outcome and the level-1 predictors, each with its centring: `cwc(x)` group-mean,
  `cgm(x)` grand-mean, plain `x` none; `0 + ...` for a model without intercept.
- level-2: one equation per level-1 coefficient (keyed "Intercept" or the predictor's name). Its
  right-hand side lists the level-2 predictors (an intercept G_q0 is implied; `0` removes it) and
  `u` makes the coefficient random. A coefficient that is random with no fixed effect is `"0 + u"`
  (HLM's `B1 = U1`). A coefficient left out of `level2` is fixed with only its G_q0 (`"1"`).

The fixed part is the cross-level product of each coefficient with its level-2 predictors, in the
order lme4 would list `(W1 + W2) * x`, so both ways of writing one model give the same spec.
"""
from __future__ import annotations

from collections.abc import Mapping

from .errors import SpecificationError, close_matches
from .formula import rhs_terms, split_top_level, strip_centering
from .spec import Centering, ModelSpec, RandomTerm

INTERCEPT_NAMES = ("Intercept", "intercept", "intrcpt1", "INTRCPT1", "1")


def _coefficient_key(key: str, coefs: list[str]) -> str:
    if key in INTERCEPT_NAMES:
        if "1" not in coefs:
            raise SpecificationError(
                "level2 has an equation for the intercept but the level-1 model has none "
                "('0 + ...'); remove that equation or the '0 +'."
            )
        return "1"
    if key not in coefs:
        raise SpecificationError(
            f"level2 has an equation for '{key}', which is not a level-1 coefficient "
            f"({', '.join('Intercept' if c == '1' else c for c in coefs)})." + close_matches(key, coefs)
        )
    return key


def parse_levels(level1: str, level2: Mapping[str, str] | None, group: str) -> ModelSpec:
    """Level-1 formula + level-2 equations + grouping column -> `ModelSpec` (see module doc)."""
    if "~" not in level1:
        raise SpecificationError(f"level1 '{level1}' needs the form 'outcome ~ predictors'.")
    outcome, rhs = (s.strip() for s in level1.split("~", 1))
    if "|" in rhs:
        raise SpecificationError(
            "level1 takes no '(... | group)' terms: say which coefficients are random with 'u' "
            "in their level-2 equation."
        )
    centering: dict[str, Centering] = {}
    coefs = list(rhs_terms(strip_centering(rhs, centering)))
    for c in coefs:
        if ":" in c:
            raise SpecificationError(
                f"The level-1 term '{c}' is an interaction; make it a column of its own so it has "
                "its own level-2 equation."
            )
    equations = {c: "1" for c in coefs}
    for key, rhs2 in (level2 or {}).items():
        equations[_coefficient_key(key, coefs)] = rhs2

    fixed: list[str] = []
    random_terms: list[str] = []
    level2_vars: set[str] = set()
    for coef in coefs:
        parts = [p for p in split_top_level(strip_centering(equations[coef], centering)) if p]
        is_random = any(p.lower() in ("u", "random") for p in parts)
        parts = [p for p in parts if p.lower() not in ("u", "random")]
        w_terms = rhs_terms(" + ".join(parts) if parts else "1")
        for w in w_terms:
            if w == "1":
                fixed.append(coef)
            else:
                level2_vars.update(w.split(":"))
                fixed.append(w if coef == "1" else f"{w}:{coef}")
        if is_random:
            random_terms.append(coef)
    if not random_terms:
        raise SpecificationError(
            "No level-1 coefficient is random: add 'u' to at least one level-2 equation, "
            "e.g. level2={'Intercept': '1 + u'}."
        )
    for v in level2_vars & set(centering):
        if centering[v] == "group":
            raise SpecificationError(
                f"'{v}' is a level-2 predictor; it is constant within groups, so group-mean "
                "centring would make it zero. Use cgm() or no centring."
            )
    # formulaic orders terms by degree, as the formula route does.
    ordered = rhs_terms(" + ".join(["1" if "1" in fixed else "0", *[t for t in fixed if t != "1"]]))
    return ModelSpec(
        outcome=outcome,
        fixed=ordered,
        random=(RandomTerm(group, tuple(random_terms)),),
        centering=tuple(sorted(centering.items())),
        level2=frozenset(level2_vars),
    )
