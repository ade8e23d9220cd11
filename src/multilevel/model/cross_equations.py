"""HCM2's level equations (a cross-classified model: level-1 units in cells of a row factor
crossed with a column factor) -> `ModelSpec`.

HCM2 writes (R&B 2002 ch. 12; the HLM manual's cross-classified chapter), for pupils i in the cell
of neighbourhood j (row) and school k (column):

    Level-1 (within cells):   Y_ijk = pi_0jk + pi_1jk a_1ijk + ... + e_ijk,          Var(e) = sigma2
    Level-2 (rows and columns):
        pi_pjk = theta_p + sum_q (gamma_pq + c_pqk) X_qj + sum_h (beta_ph + b_phj) W_hk + b_p0j + c_p0k
    with X_qj the row predictors (constant within a row), W_hk the column predictors (constant
    within a column), b_p0j the random row effects and b_phj the random effects of column predictors
    over the rows (Var(b_j) = tau_b), c_p0k and c_pqk likewise over the columns (Var(c_k) = tau_c),
    b and c independent of each other and of e.

which is written

    multilevel.levels(
        level1="y ~ 1 + ses",
        level2={"Intercept": "dep + sfree + b + c", "ses": "dep + sfree + b"},
        row="nbhd", column="school",
    )

- `level1`: the outcome and the level-1 predictors a_p (`cgm(x)`: grand-mean centred over the
  rows of the data; group-mean centring is refused, since a cell has two "groups").
- `level2`: one equation per level-1 coefficient, keyed "Intercept" or the coefficient's name, as
  in the two-level `levels`. The right-hand side lists the row and column predictors (which is which
  is read from the data: the report's structure) with theta_p implied (`0` removes it); `b` adds
  the random row effect b_p0j and `c` the random column effect c_p0k; `b:sfree` adds b_phj, the
  random effect of the column predictor sfree over the rows, and `c:dep` adds c_pqk, that of the
  row predictor dep over the columns (HCM2's (beta_ph + b_phj) W_hk). A coefficient left out is
  fixed with only theta_p.
- The lme4 model is `fixed + (a_p's with b | row) + (a_p's with c | column)`, the row term first:
  `ml.fit` of that formula is the same spec, and its report reads the first random term as the
  rows (`diagnostics.hcm2_statistics`).

Not taken yet (refused by name): a row-by-column interaction random effect (d_jk), and centring of
row or column predictors.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from multilevel.errors import SpecificationError
from multilevel.model.expressions import Derived
from multilevel.model.formula import read_terms, split_formula, split_top_level
from multilevel.model.level_equations import check_level2_form, coefficient_key, lme4_order, read_level1
from multilevel.model.spec import ModelSpec, RandomTerm, term_factors

#: the markers of HCM2's random effects: b_p0j over the rows, c_p0k over the columns
ROW_MARKER, COLUMN_MARKER = "b", "c"
#: HCM2's own names of the random effects (b00, b00j, c10k, ...) or other packages' (u0): not columns
#: `b:w` / `c:x`: the random effect of a predictor over the rows / columns (b_phj, c_pqk)
RANDOM_SLOPE = re.compile(r"^([bc])\s*:\s*(.+)$")
HCM2_RANDOM_NAME = re.compile(r"^[bBcC][0-9]+[jJkK]?$|^[uU][0-9]*$|^random$", re.IGNORECASE)


def _marker_message(text: str, coef: str) -> str:
    return (
        f"'{text}' in the level-2 equation of '{coef}' does not say over which factor the coefficient is random. "
        "In a cross-classified (HCM2) model write 'b' for the random row effect (b_p0j) and 'c' for the random "
        "column effect (c_p0k), e.g. {'Intercept': 'dep + sfree + b + c', 'ses': 'b'}."
    )


def _check_markers(level2: Mapping[str, str] | None, columns) -> None:
    """A data column named b or c beside the markers: which is meant cannot be told."""
    if not level2 or columns is None:
        return
    names = {str(c) for c in columns}
    for key, rhs2 in level2.items():
        for p in (q for q in split_top_level(rhs2) if q):
            m = RANDOM_SLOPE.match(p)
            p = m.group(1) if m else p
            if p in (ROW_MARKER, COLUMN_MARKER) and p in names:
                raise SpecificationError(
                    f"The level-2 equation of '{key}' ('{rhs2}') has '{p}', which marks a random "
                    f"{'row' if p == ROW_MARKER else 'column'} effect, but the data also have a column named '{p}': "
                    f"write `{p}` (in backticks) for the column, or rename it."
                )


def _equation(text: str, derived: dict[str, Derived], coef: str, outcome: str,
              known: set[str] | None) -> tuple[list[str], list[str], list[str]]:
    """An equation's predictor terms ('1' for theta_p), and the terms random over the rows ('1':
    b_p0j; a column predictor w of `b:w`: b_phj) and over the columns ('1': c_p0k; `c:x`: c_pqk)."""
    parts = [p.strip() for p in split_top_level(text.strip() or "1") if p.strip()]
    what = f"the level-2 equation of '{coef}'"
    on_row: list[str] = []
    on_col: list[str] = []
    rest: list[str] = []
    for p in parts:
        m = RANDOM_SLOPE.match(p)
        if p in (ROW_MARKER, COLUMN_MARKER):
            (on_row if p == ROW_MARKER else on_col).append("1")
        elif m and (known is None or p not in known):
            slope = [t for t in read_terms(m.group(2), derived, what, outcome=outcome) if t != "1"]
            if len(slope) != 1 or len(term_factors(slope[0])) > 1:
                raise SpecificationError(
                    f"'{p}' in {what}: after '{m.group(1)}:' name one predictor, e.g. 'b:sfree' (the random effect of the "
                    "column predictor sfree over the rows) or 'c:dep' (of the row predictor dep over the columns)."
                )
            (on_row if m.group(1) == ROW_MARKER else on_col).append(slope[0])
        else:
            rest.append(p)
    for p in rest:
        if HCM2_RANDOM_NAME.match(p) and (known is None or p not in known):
            raise SpecificationError(_marker_message(p, coef))
    before = set(derived)
    terms = list(read_terms(" + ".join(rest) if rest else "1", derived, what, outcome=outcome))
    for name in set(derived) - before:
        d = derived[name]
        if d.kind in ("group", "grand"):
            raise SpecificationError(
                f"{d.source} in {what}: centring a row or column predictor is not implemented yet for cross-classified "
                f"models (HCM2 centres it at its mean over the rows or the columns). Compute the centred column first, "
                f"e.g. df['{d.variables[0]}_c'] = df['{d.variables[0]}'] - df.groupby(<its factor>)['{d.variables[0]}']"
                ".first().mean(), and use it by name."
            )
    for t in terms:
        if t != "1" and len(term_factors(t)) > 1:
            raise SpecificationError(f"The term '{t}' in {what} is an interaction; make it a column of its own.")
    return terms, on_row, on_col


def parse_cross_levels(level1: str, level2: Mapping[str, str] | None, row: str, column: str,
                       columns=None) -> ModelSpec:
    """Level-1 formula + HCM2's level-2 equations + the row and column ids -> `ModelSpec` (module
    doc): fixed effects theta_p (a_p), gamma_pq (X_q:a_p), beta_ph (W_h:a_p); random terms
    `(a_p with b, W_h:a_p with b:W_h | row) + (a_p with c, X_q:a_p with c:X_q | column)`. `columns`: the data's column names, when known."""
    check_level2_form(level1, level2)
    for name, what in ((row, "row"), (column, "column")):
        if not isinstance(name, str) or not name:
            raise SpecificationError(
                f"A cross-classified model needs the {what} factor's id column as text, e.g. row='nbhd', column='school'; got {name!r}."
            )
    if row == column:
        raise SpecificationError(f"The row and column ids are both '{row}': give the two crossed id columns.")
    if not isinstance(level1, str) or "~" not in level1:
        raise SpecificationError(f"level1 must be a formula as text, 'outcome ~ predictors', e.g. 'y ~ 1 + ses'; got {level1!r}.")
    _check_markers(level2, columns)
    outcome, rhs = split_formula(level1)
    if "|" in rhs:
        raise SpecificationError("level1 takes no '(... | group)' terms: say which coefficients are random with 'b' (over the "
                                 "rows) and 'c' (over the columns) in their level-2 equations.")
    coefs, derived = read_level1(outcome, rhs, columns)
    for d in derived.values():
        if d.kind == "group":
            raise SpecificationError(
                f"{d.source}: group-mean centring in a cross-classified model is ambiguous (a cell's rows belong to a row "
                f"unit and a column unit). Compute the centred column first, e.g. df['{d.variables[0]}_c'] = "
                f"df['{d.variables[0]}'] - df.groupby('{row}')['{d.variables[0]}'].transform('mean'), and use it by name."
            )
    equations = {c: "1" for c in coefs}
    for key, text in (level2 or {}).items():
        equations[coefficient_key(key, coefs, derived)] = text

    known = None if columns is None else {str(c) for c in columns}
    fixed: list[str] = []
    on_rows: list[str] = []
    on_cols: list[str] = []
    written: list[str] = []  # the row and column predictors (each constant within rows or within columns)
    for coef in coefs:
        shown = "Intercept" if coef == "1" else coef
        terms, by_row, by_col = _equation(equations[coef], derived, shown, outcome, known)

        def times(w: str, coef: str = coef) -> str:
            return coef if w == "1" else (w if coef == "1" else f"{w}:{coef}")

        fixed.extend(times(w) for w in terms)
        written.extend(w for w in (*terms, *by_row, *by_col) if w != "1" and w not in derived and w not in written)
        on_rows.extend(times(w) for w in by_row)
        on_cols.extend(times(w) for w in by_col)
    if not on_rows or not on_cols:  # (b:w alone is a random row effect too)
        missing = "row ('b')" if not on_rows else "column ('c')"
        raise SpecificationError(
            f"No level-1 coefficient has a random {missing} effect: a cross-classified model has both, e.g. "
            "level2={'Intercept': 'b + c'}. With one factor only it is a two-level model (ml.fit_levels(level1, "
            "level2, group=...))."
        )
    return ModelSpec(
        outcome=outcome,
        fixed=lme4_order(outcome, derived, fixed),
        random=(RandomTerm(row, lme4_order(outcome, derived, on_rows)), RandomTerm(column, lme4_order(outcome, derived, on_cols))),
        derived=tuple(derived.values()),
        unit_predictors=tuple((w, (row, column)) for w in written),
    )
