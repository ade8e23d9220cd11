"""HCM2's report (the layout of HLM's output for a cross-classified model) for a model with two
crossed grouping factors, from the fit's core record (`results.multi.MultiEstimates`) and its HCM2
statistics (`diagnostics.hcm2_statistics.HCM2Statistics`). Formatting only: every number is given.

The model in HCM2's two forms (R&B 2002 ch. 12 notation, ASCII):
    Level-1 Model        y = P0 + P1*(ses) + E
    Level-2 Model        P0 = theta0 + gamma01*(dep) + beta01*(sfree) + b00j + c00k
    (row and column)     P1 = theta1 + gamma11*(dep) + beta11*(sfree) + b10j
    Mixed Model          y = theta0 + gamma01*dep + beta01*sfree + theta1*ses + ... + b00j + b10j*ses + c00k + E
"""
from __future__ import annotations

import numpy as np

from multilevel.diagnostics.hcm2_statistics import INTERCEPT, CrossedStructure, HCM2Statistics
from multilevel.reports import multi_sections as sections
from multilevel.results.multi import MultiEstimates

#: HLM3's rule, as long as HCM2's fixed-effect table (its effect names are longer: 'sfree (column), beta01')
WIDE_RULE = sections.RULE + "-" * 6


def _w(name: str) -> str:
    return name.replace(":", "*")


def _times(label: str, name: str) -> str:
    return label if name == INTERCEPT else f"{label}*({_w(name)})"


def p_label(s: CrossedStructure, p: int) -> str:
    """'INTRCPT1, P0' / 'ses slope, P1'."""
    a = s.coefficients[p]
    return f"INTRCPT1, P{p}" if a == INTERCEPT else f"{a} slope, P{p}"


def effect_label(s: CrossedStructure, e) -> str:
    """'INTRCPT, theta0', 'dep (row), gamma01', 'sfree (column), beta01'."""
    if e.kind == "theta":
        return f"INTRCPT, {e.label}"
    return f"{_w(e.predictor)} ({'row' if e.kind == 'gamma' else 'column'}), {e.label}"


def level_equations_hcm2(outcome: str, s: CrossedStructure, centring: dict[str, str] | None = None) -> list[str]:
    """HCM2's level form: level 1 (within cells) and the row-and-column level."""
    l1 = " + ".join(_times(f"P{p}", a) for p, a in enumerate(s.coefficients))
    lines = ["Level-1 Model (within cells)", f"    {outcome} = {l1} + E", "",
             f"Level-2 Model (rows: {s.row}, j; columns: {s.column}, k)"]
    for p in range(len(s.coefficients)):
        fixed = {(e.kind, e.index): e.label for e in s.effects_of(p)}
        parts = [fixed[("theta", 0)]] if ("theta", 0) in fixed else []
        # HCM2's (gamma_pq + c_pqk)*(X_q) and (beta_ph + b_phj)*(W_h)
        for kind, preds, rand, label in (("gamma", s.row_predictors[p], s.random_over_columns, s.c_label),
                                         ("beta", s.column_predictors[p], s.random_over_rows, s.b_label)):
            for i, x in enumerate(preds, start=1):
                terms = ([fixed[(kind, i)]] if (kind, i) in fixed else []) + ([label(p, i)] if rand(p, i) else [])
                coef = terms[0] if len(terms) == 1 else "(" + " + ".join(terms) + ")"
                parts.append(f"{coef}*({_w(x)})")
        if s.random_over_rows(p):
            parts.append(s.b_label(p))
        if s.random_over_columns(p):
            parts.append(s.c_label(p))
        lines.append(f"    P{p} = " + (" + ".join(parts) if parts else "0"))
    notes = [f"    {n} is {n[4:-1] if n[3:4] == '(' else n} centred around the grand mean." for n, how in (centring or {}).items()
             if how == "grand"]
    roles = [f"{v} ({where} predictor)" for v, where in s.level_of.items() if where in ("row", "column")]
    if roles:
        notes.append("    Read from the data: " + ", ".join(roles) + ".")
    return lines + ([""] + notes if notes else [])


def mixed_equation_hcm2(outcome: str, s: CrossedStructure, zr: tuple[str, ...], zc: tuple[str, ...]) -> str:
    """HCM2's mixed form: 'y = theta0 + gamma01*dep + ... + b00j + b10j*ses + c00k + E'."""
    fixed = []
    for e in s.effects:
        factors = [f for f in (e.predictor, e.coefficient) if f != INTERCEPT]
        fixed.append("*".join([e.label, *map(_w, factors)]))
    rand = [s.b_label(*ph) if n == INTERCEPT else f"{s.b_label(*ph)}*{_w(n)}" for ph, n in zip(s.random_row, zr)]
    rand += [s.c_label(*pq) if n == INTERCEPT else f"{s.c_label(*pq)}*{_w(n)}" for pq, n in zip(s.random_col, zc)]
    return f"{outcome} = " + " + ".join(fixed + rand + ["E"])


def _specifications(est: MultiEstimates, st: HCM2Statistics) -> list[str]:
    s = st.structure
    return sections.specifications(est, " Specifications for this HCM2 run (a cross-classified random effects model)", [
        f"  Number of rows                 = {st.n_rows}   ({s.row})",
        f"  Number of columns              = {st.n_columns}   ({s.column})",
        f"  Number of non-empty cells      = {st.n_cells}   (of {st.n_rows * st.n_columns})",
    ])


def hcm2_forms(est: MultiEstimates, st: HCM2Statistics) -> tuple[list[str], str]:
    """HCM2's level form (lines) and mixed form (one equation) of the fit (the report's, and
    `MultiFit.level_equations` and `mixed_equation`)."""
    s = st.structure
    zr, zc = est.factors[s.f_row].z_names, est.factors[s.f_col].z_names
    return (level_equations_hcm2(est.design.spec.outcome, s, dict(est.design.spec.centering)),
            mixed_equation_hcm2(est.design.spec.outcome, s, zr, zc))


def _model(est: MultiEstimates, st: HCM2Statistics) -> list[str]:
    level, mixed = hcm2_forms(est, st)
    lines = [" Summary of the model specified (in equation format)", " ---------------------------------------------------", ""]
    return lines + level + ["", "Mixed Model", f"    {mixed}", ""]


def _fixed_table(est: MultiEstimates, st: HCM2Statistics) -> list[str]:
    s = st.structure
    table = st.fixed_table.to_numpy()
    lines = [
        f" The outcome variable is  {est.design.spec.outcome}",
        "",
        " Final estimation of fixed effects (model-based standard errors):",
        WIDE_RULE,
        "                                              Standard             Approx.",
        "    Fixed Effect               Coefficient    Error      T-ratio   d.f.     P-value",
        WIDE_RULE,
    ]
    for p in range(len(s.coefficients)):
        es = s.effects_of(p)
        if not es:
            continue
        lines.append(f" For {p_label(s, p):>28}")
        for e in es:
            lines.append(sections.fixed_effect_row(effect_label(s, e), 26, table[e.column]))
    lines += [WIDE_RULE, " (HCM2 prints model-based SEs only: rows and columns are crossed, so no one factor clusters the data.)", ""]
    return lines


def _components(st: HCM2Statistics) -> list[str]:
    s = st.structure
    lines = [
        " Final estimation of row and column level variance components:",
        sections.RULE,
        " Random Effect                       Standard      Variance",
        "                                     Deviation     Component",
        sections.RULE,
    ]
    for where, labels, T in (("row", random_labels(s, "row"), st.tau_b), ("column", random_labels(s, "column"), st.tau_c)):
        for a, lab in enumerate(labels):
            v = float(T.to_numpy()[a, a])
            name, label = lab.split(",")
            lines.append(f" {name + f' ({where}), ' + label:<34}{np.sqrt(max(v, 0.0)):>11.5f}{v:>14.5f}")
    lines.append(f" {'level-1, E':<34}{np.sqrt(st.sigma2):>11.5f}{st.sigma2:>14.5f}")
    lines += [sections.RULE, ""]
    return lines


def random_labels(s: CrossedStructure, side: str) -> list[str]:
    """'INTRCPT1,b00j', 'ses slope,b10j', 'INTRCPT1/sfree,b01j' (a column predictor's random effect over the rows)."""
    pairs, label, preds = ((s.random_row, s.b_label, s.column_predictors) if side == "row"
                           else (s.random_col, s.c_label, s.row_predictors))
    out = []
    for p, i in pairs:
        name = p_label(s, p).split(",")[0]
        out.append(f"{name if i == 0 else f'{name}/{_w(preds[p][i - 1])}'},{label(p, i)}")
    return out


def hcm2_report(est: MultiEstimates, st: HCM2Statistics) -> str:
    """The report HCM2 prints for a cross-classified run, section by section."""
    s = st.structure
    b_labels, c_labels = random_labels(s, "row"), random_labels(s, "column")
    lines = _specifications(est, st) + _model(est, st) + sections.convergence(est)
    lines += [f" sigma^2 = {st.sigma2:>12.5f}", ""]
    lines += sections.matrix_lines(f"tau_b (rows, {s.row})", st.tau_b.to_numpy(), b_labels, ">12.5f")
    lines += sections.matrix_lines("tau_b (as correlations)", st.tau_b_correlations.to_numpy(), b_labels, ">8.3f")
    lines += sections.matrix_lines(f"tau_c (columns, {s.column})", st.tau_c.to_numpy(), c_labels, ">12.5f")
    lines += sections.matrix_lines("tau_c (as correlations)", st.tau_c_correlations.to_numpy(), c_labels, ">8.3f")
    lines += [f" The value of the log-likelihood function = {-0.5 * st.deviance:.6E}", ""]
    lines += _fixed_table(est, st)
    lines += _components(st)
    lines += sections.deviance_statistics(est, st.deviance, st.n_params)
    return "\n".join(lines) + "\n"
