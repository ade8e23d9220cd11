"""The model in HLM's two forms: Level-1/Level-2 equations and the single mixed equation (HLM2),
and HLM3's Level-1/Level-2/Level-3 equations (P, B, G) and its mixed equation.

Reads only the design's classification of columns (design.Coefficient) and HLM's names of the
fixed effects (`results.labels`); computes nothing.
"""
from __future__ import annotations

from collections.abc import Mapping

from multilevel.design.builder import INTERCEPT, Coefficient
from multilevel.diagnostics.level_structure import LevelStructure
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


def level_form(outcome: str, s: LevelStructure, derived=()) -> list[str]:
    """HLM3's (HLM4's) level form, one equation per coefficient and level: ['Level-1 Model',
    '    math = P0 + P1*(year) + E', '', 'Level-2 Model', '    P0 = B00 + B01*(black) + R0', ...,
    'Level-3 Model', '    B00 = G000 + G001*(lowinc) + U00', ...]; a level-k coefficient with no
    term and no random effect at level k+1 >= 3 is not written (HLM3's layout). A centred variable is
    written by its name, as HLM writes it, with HLM's notes (`centring_notes`)."""
    shown = centred_names(derived)
    l1 = " + ".join(_times(n.label, n.name, shown) for n in s.roots)
    lines = ["Level-1 Model", f"    {outcome} = {l1} + E"]
    for k in range(2, s.n_levels + 1):
        lines += ["", f"Level-{k} Model"]
        for n in s.nodes(k - 1):
            parts = [_times(c.label, c.name, shown) for c in n.children]
            if n.random:
                parts.append(n.random_label)
            if parts or k == 2:
                lines.append(f"    {n.label} = " + (" + ".join(parts) if parts else "0"))
    notes = centring_notes(derived, {name: k for k, name in enumerate(s.names, 2)})
    if notes:
        lines += ["", *notes]
    return lines


def centred_names(derived) -> dict[str, str]:
    """A centred column's name -> its variable's ('cwc(x)' -> 'x'): HLM writes the variable in its
    equations and says how it is centred in a note."""
    return {d.name: d.variables[0] for d in derived if d.kind in ("group", "grand")}


def mixed_form(outcome: str, s: LevelStructure, derived=()) -> str:
    """HLM3's (HLM4's) mixed form: 'math = G000 + G001*lowinc + G010*black + ... + R0 + R1*year +
    U00 + U10*year + E': each fixed effect times its path's variables (top level first), then the
    random effects level by level."""
    shown = centred_names(derived)

    def product(path: tuple[str, ...]) -> list[str]:
        return [_w(":".join(shown.get(f, f) for f in x.split(":"))) for x in reversed(path) if x != INTERCEPT]

    fixed = ["*".join([n.label, *product(n.path)]) for n in s.nodes(s.n_levels)]
    rand = ["*".join([n.random_label, *product(n.path)]) for k in range(1, s.n_levels) for n in s.nodes(k) if n.random]
    return f"{outcome} = " + " + ".join(fixed + rand + ["E"])
