"""The model in HLM's two forms: Level-1/Level-2 equations and the single mixed equation (HLM2),
and HLM3's Level-1/Level-2/Level-3 equations (P, B, G) and its mixed equation.

Reads only the design's classification of columns (design.Coefficient) and HLM's names of the
fixed effects (`results.labels`); computes nothing.
"""
from __future__ import annotations

from collections.abc import Mapping

from multilevel.design.builder import INTERCEPT, Coefficient
from multilevel.diagnostics.hlm3_statistics import ThreeLevelStructure
from multilevel.results.labels import gamma_labels

CENTERING_WORDS = {"group": "centred around its group mean", "grand": "centred around the grand mean"}
#: a level-2 predictor's centring (`Coefficient.predictor_centering`)
PREDICTOR_CENTERING_WORDS = {
    "grand": "centred around its grand mean over the rows",
    "units": "centred around its grand mean over the units (each unit counted once, as HLM centres a level-2 predictor)",
}


def _w(name: str) -> str:
    return name.replace(":", "*")


def level_equations(outcome: str, coefficients: tuple[Coefficient, ...]) -> list[str]:
    """['Level-1 Model', '    mathach = B0 + B1*(ses) + R', '', 'Level-2 Model', '    B0 = G00 + U0', ...]."""
    labels = gamma_labels(coefficients)
    l1 = " + ".join(f"B{q}" if c.name == INTERCEPT else f"B{q}*({_w(c.name)})" for q, c in enumerate(coefficients))
    lines = ["Level-1 Model", f"    {outcome} = {l1} + R", "", "Level-2 Model"]
    for q, c in enumerate(coefficients):
        parts = [g.label if g.predictor == INTERCEPT else f"{g.label}*({_w(g.predictor)})" for g in labels if g.coefficient == c.name]
        if c.random:
            parts.append(f"U{q}")
        lines.append(f"    B{q} = " + (" + ".join(parts) if parts else "0"))
    centred = [(c.name, c.centering) for c in coefficients if c.centering]
    if centred:
        lines.append("")
        # the column is named by its helper ("cwc(ses)"): say which variable it centres
        lines.extend(f"    {name} is {name[4:-1] if name[3:4] == '(' else name} {CENTERING_WORDS[how]}." for name, how in centred)
    # the level-2 predictors written cgm(w): HLM marks them too ('$'); which mean says the word
    l2 = dict.fromkeys((w, k) for c in coefficients for w, k in zip(c.predictors, c.predictor_centering) if k)
    if l2:
        if not centred:
            lines.append("")
        lines.extend(f"    {w} is {w[4:-1] if w[3:4] == '(' else w} {PREDICTOR_CENTERING_WORDS[k]}." for w, k in l2)
    return lines


def mixed_equation(outcome: str, coefficients: tuple[Coefficient, ...]) -> str:
    """'mathach = G00 + G01*sector + G10*ses + G11*sector*ses + U0 + U1*ses + R' (HLM's mixed form)."""
    labels = gamma_labels(coefficients)
    fixed = []
    for g in labels:
        factors = [f for f in (g.predictor, g.coefficient) if f != INTERCEPT]
        fixed.append("*".join([g.label, *map(_w, factors)]))
    rand = [f"U{q}" if c.name == INTERCEPT else f"U{q}*{_w(c.name)}" for q, c in enumerate(coefficients) if c.random]
    return f"{outcome} = " + " + ".join(fixed + rand + ["R"])


# ----- three levels (HLM3's P/B/G notation) ---------------------------------------------------------
def _times(label: str, name: str, shown: Mapping[str, str] | None = None) -> str:
    if name == INTERCEPT:
        return label
    return f"{label}*({_w(':'.join((shown or {}).get(f, f) for f in name.split(':')))})"


def centring_notes(derived, level_of: Mapping[str, int]) -> list[str]:
    """HLM's centring notes under the level form ("X has been centered around the group mean.", HLM 7's
    sentence), each followed by which mean, as the fit computed it (`Derived.within`/`counted`):
    `derived` are the spec's derived columns, `level_of` the level of each grouping factor's units."""
    lines = []
    for d in derived:
        if d.kind not in ("group", "grand"):
            continue
        var = d.variables[0]
        word = "group" if d.kind == "group" else "grand"
        if d.counted:
            lv = level_of.get(d.counted, 0)
            if d.kind == "group":
                how = (f"{var} minus its mean over the level-{lv} units of its level-{level_of.get(d.within, lv + 1)} unit "
                       f"({d.within}), each level-{lv} unit counted once")
            else:
                how = f"{var} minus its mean over the level-{lv} units, each counted once"
        elif d.kind == "group":
            how = f"{var} minus its mean over the rows of its level-{level_of.get(d.within, 2)} unit ({d.within})"
        else:
            how = f"{var} minus its mean over all level-1 rows"
        lines += [f"    {var} has been centered around the {word} mean.", f"      ({how})"]
    return lines


def level_equations3(outcome: str, s: ThreeLevelStructure, derived=()) -> list[str]:
    """HLM3's level form: ['Level-1 Model', '    math = P0 + P1*(year) + E', '', 'Level-2 Model',
    '    P0 = B00 + B01*(black) + R0', ..., 'Level-3 Model', '    B00 = G000 + G001*(lowinc) + U00', ...];
    a centred variable is written by its name, as HLM writes it, with HLM's notes (`centring_notes`)."""
    shown = centred_names(derived)
    l1 = " + ".join(_times(f"P{p}", a, shown) for p, a in enumerate(s.coefficients))
    lines = ["Level-1 Model", f"    {outcome} = {l1} + E", "", "Level-2 Model"]
    for p, _a in enumerate(s.coefficients):
        parts = [_times(f"B{p}{q}", x, shown) for q, x in enumerate(s.predictors[p]) if s.gammas_of(p, q) or s.random_at_3(p, q)]
        if s.random_at_2(p):
            parts.append(f"R{p}")
        lines.append(f"    P{p} = " + (" + ".join(parts) if parts else "0"))
    lines += ["", "Level-3 Model"]
    for p, _a in enumerate(s.coefficients):
        for q, _x in enumerate(s.predictors[p]):
            parts = [_times(g.label, g.level3, shown) for g in s.gammas_of(p, q)]
            if s.random_at_3(p, q):
                parts.append(f"U{p}{q}")
            if parts:
                lines.append(f"    B{p}{q} = " + " + ".join(parts))
    notes = centring_notes(derived, {s.level2: 2, s.level3: 3})
    if notes:
        lines += ["", *notes]
    return lines


def centred_names(derived) -> dict[str, str]:
    """A centred column's name -> its variable's ('cwc(x)' -> 'x'): HLM writes the variable in its
    equations and says how it is centred in a note."""
    return {d.name: d.variables[0] for d in derived if d.kind in ("group", "grand")}


def mixed_equation3(outcome: str, s: ThreeLevelStructure, z2_names: tuple[str, ...], z3_names: tuple[str, ...], derived=()) -> str:
    """HLM3's mixed form: 'math = G000 + G001*lowinc + G010*black + ... + R0 + R1*year + U00 + U10*year + E'."""
    shown = centred_names(derived)

    def name(n: str) -> str:
        return _w(":".join(shown.get(f, f) for f in n.split(":")))

    fixed = []
    for g in s.gammas:
        factors = [f for f in (g.level3, g.level2, g.coefficient) if f != INTERCEPT]
        fixed.append("*".join([g.label, *map(name, factors)]))
    rand = [f"R{p}" if n == INTERCEPT else f"R{p}*{name(n)}" for p, n in zip(s.random2, z2_names)]
    rand += [f"U{p}{q}" if n == INTERCEPT else f"U{p}{q}*{name(n)}" for (p, q), n in zip(s.random3, z3_names)]
    return f"{outcome} = " + " + ".join(fixed + rand + ["E"])
