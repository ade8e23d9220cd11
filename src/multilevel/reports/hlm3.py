"""HLM3's report (the layout of HLM's HLM3 output file) for a model with two nested grouping
factors, from the fit's core record (`results.multi.MultiEstimates`) and its HLM3 statistics
(`diagnostics.hlm3_statistics.HLM3Statistics`). Formatting only: every number is given.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from multilevel.diagnostics.hlm3_statistics import INTERCEPT, HLM3Statistics, ThreeLevelStructure
from multilevel.diagnostics.level_structure import LevelNode, LevelStatistics, LevelStructure
from multilevel.reports import multi_sections as sections
from multilevel.reports.equations import level_form, mixed_form
from multilevel.results.multi import MultiEstimates


def _name1(a: str) -> str:
    return "INTRCPT1" if a == INTERCEPT else a


def _name2(x: str) -> str:
    return "INTRCPT2" if x == INTERCEPT else x


def _name3(w: str) -> str:
    return "INTRCPT3" if w == INTERCEPT else w


def p_label(s: ThreeLevelStructure, p: int, letter: str = "P") -> str:
    """'INTRCPT1, P0' / 'year slope, P1' (R instead of P for the level-2 random effect)."""
    a = s.coefficients[p]
    return f"INTRCPT1, {letter}{p}" if a == INTERCEPT else f"{a} slope, {letter}{p}"


def b_label(s: ThreeLevelStructure, p: int, q: int, letter: str = "B") -> str:
    """HLM3's 'INTRCPT1/INTRCPT2, B00', 'year/black, B11' (U instead of B for the random effect)."""
    return f"{_name1(s.coefficients[p])}/{_name2(s.predictors[p][q])}, {letter}{p}{q}"


def _specifications(est: MultiEstimates, units: list[tuple[int, str]], program: str = "HLM3") -> list[str]:
    """The run's specifications (`multi_sections.specifications`); `units`: (number, factor name) of
    levels 2, 3, ..., and HLM3's note that it fits by ML only, for a REML fit."""
    notes = [
        f"  ({program} fits by full maximum likelihood only: this REML fit's numbers are not {program}'s; its deviance",
        "   below is the REML criterion and its parameter count the covariance components only.",
        f"   fit.refit('ML').report() gives {program}'s.)",
    ] if est.reml else []
    return sections.specifications(est, f" Specifications for this {program} run",
                          [f"  Number of level-{k} units        = {n}   ({name})" for k, (n, name) in enumerate(units, 2)], notes)


def _fixed_spec(est: MultiEstimates, st: HLM3Statistics) -> list[str]:
    s = st.structure
    lines = [
        "  The model specified for the fixed effects was:",
        " ----------------------------------------------------",
        "",
        "   Level-1                Level-2           Level-3",
        "   Coefficients           Predictors        Predictors",
        " ---------------------  ---------------   ----------------",
    ]
    marked = False
    for p in range(len(s.coefficients)):
        first_p = True
        for q in range(len(s.predictors[p])):
            gs = s.gammas_of(p, q)
            if not gs and not s.random_at_3(p, q):
                continue
            first_q = True
            for g in gs or (None,):
                m1 = "#" if first_p and not s.random_at_2(p) else " "
                m2 = "#" if first_q and not s.random_at_3(p, q) else " "
                marked = marked or m1 == "#" or m2 == "#"
                left = f"{m1}{p_label(s, p):>21}" if first_p else " " * 22
                mid = f"{m2}{_name2(s.predictors[p][q]) + f', B{p}{q}':>16}" if first_q else " " * 17
                right = f"{_name3(g.level3)}, {g.label}" if g is not None else "(no fixed effect)"
                lines.append(f"{left}  {mid}   {right}")
                first_p = first_q = False
    if marked:
        lines += ["", " '#' - The residual parameter variance for the parameter has been set to zero"]
    lines += ["", " Summary of the model specified (in equation format)", " ---------------------------------------------------", ""]
    lines += model_forms(est, LevelStructure.of(est, st.frame))
    return lines


def level_forms(est: MultiEstimates, levels: LevelStructure) -> tuple[list[str], str]:
    """The model in HLM's level form (lines) and mixed form (one equation), HLM3 and HLM4: one
    renderer, `reports.equations` (`MultiFit.level_equations` and `mixed_equation` too)."""
    derived = est.design.spec.derived
    outcome = est.design.spec.outcome
    return level_form(outcome, levels, derived), mixed_form(outcome, levels, derived)


def model_forms(est: MultiEstimates, levels: LevelStructure) -> list[str]:
    """The report's lines of both forms (`level_forms`)."""
    level, mixed = level_forms(est, levels)
    return level + ["", "Mixed Model", f"    {mixed}", ""]


def _reliabilities(title: str, labels: list[str], values: np.ndarray, used: int, total: int, units: str) -> list[str]:
    lines = [
        " ----------------------------------------------------",
        f"  {title:<29}Reliability estimate",
        " ----------------------------------------------------",
    ]
    lines += [f"  {lab:<36}{r:>7.3f}" for lab, r in zip(labels, values)]
    lines.append(" ----------------------------------------------------")
    if used < total:
        lines.append(f" Note: The reliability estimates reported above are based on only {used} of {total} {units}")
        lines.append(" that had sufficient data for computation.")
    lines.append("")
    return lines


def _fixed_table(est: MultiEstimates, st: HLM3Statistics, robust: bool) -> list[str]:
    s = st.structure
    table = st.fixed_table(robust).to_numpy()
    lines = [
        f" The outcome variable is  {est.design.spec.outcome}",
        "",
        " Final estimation of fixed effects" + (":" if not robust else ""),
    ]
    if robust:
        lines.append(" (with robust standard errors, clustered at level 3)")
    lines += [
        sections.RULE,
        "                                        Standard             Approx.",
        "    Fixed Effect         Coefficient    Error      T-ratio   d.f.     P-value",
        sections.RULE,
    ]
    for p in range(len(s.coefficients)):
        gp = [g for g in s.gammas if g.p == p]
        if not gp:
            continue
        lines.append(f" For {p_label(s, p):>22}")
        for q in range(len(s.predictors[p])):
            gs = s.gammas_of(p, q)
            if not gs:
                continue
            lines.append(f"    For {_name2(s.predictors[p][q]) + f', B{p}{q}':>18}")
            for g in gs:
                lines.append(sections.fixed_effect_row(_name3(g.level3) + ", " + g.label, 20, table[g.column]))
    lines += [sections.RULE, ""]
    return lines


def _components(title: str, labels: list[str], T: pd.DataFrame, chi: pd.DataFrame, extra: list[str], note: str) -> list[str]:
    lines = [
        f" {title}",
        sections.RULE,
        " Random Effect                 Standard     Variance     df    Chi-square  P-value",
        "                               Deviation    Component",
        sections.RULE,
    ]
    var = np.diag(T.to_numpy())
    for lab, v, (c, df, pv) in zip(labels, var, chi[["chisq", "df", "p"]].to_numpy()):
        lines.append(f" {lab:<28}{np.sqrt(max(v, 0.0)):>11.5f}{v:>13.5f}{df:>7.0f}{c:>13.5f}{pv:>9.3f}")
    lines += extra
    lines.append(sections.RULE)
    if note:
        lines.append(note)
    lines.append("")
    return lines


def hlm3_report(est: MultiEstimates, st: HLM3Statistics) -> str:
    """The report HLM3 prints for a three-level run, section by section."""
    s = st.structure
    r_labels = [p_label(s, p) for p in s.random2]
    b_labels = [b_label(s, p, q) for p, q in s.random3]
    r_rows = [lab.replace(", ", ",") for lab in r_labels]  # the tau matrices' rows: 'INTRCPT1,P0'
    b_rows = [lab.replace(", ", ",") for lab in b_labels]
    units = [(st.n_level2, s.level2), (st.n_level3, s.level3)]
    lines = _specifications(est, units) + _fixed_spec(est, st) + sections.convergence(est)
    lines += [f" sigma^2 = {est.sigma2:>12.5f}", ""]
    lines += sections.matrix_lines("tau(pi)", st.tau_pi.to_numpy(), r_rows, ">12.5f")
    lines += sections.matrix_lines("tau(pi) (as correlations)", st.tau_pi_correlations.to_numpy(), r_rows, ">8.3f")
    lines += _reliabilities("Random level-1 coefficient", r_labels, st.reliability2.to_numpy(), st.n_level2_sufficient,
                            st.n_level2, "level-2 units")
    lines += sections.matrix_lines("tau(beta)", st.tau_beta.to_numpy(), b_rows, ">12.5f")
    lines += sections.matrix_lines("tau(beta) (as correlations)", st.tau_beta_correlations.to_numpy(), b_rows, ">8.3f")
    lines += _reliabilities("Random level-2 coefficient", b_labels, st.reliability3.to_numpy(), st.n_level3_sufficient,
                            st.n_level3, "level-3 units")
    lines += [f" The value of the log-likelihood function = {-0.5 * st.deviance:.6E}", ""]
    lines += _fixed_table(est, st, robust=False)
    lines += _fixed_table(est, st, robust=True)
    n2, j2 = st.n_level2_sufficient, st.n_level2
    note2 = (f" Note: The chi-square statistics reported above are based on only {n2} of {j2} level-2 units that had\n"
             " sufficient data for computation. Fixed effects and variance components are based on all the data.") if n2 < j2 else ""
    lines += _components(
        "Final estimation of level-1 and level-2 variance components:", [p_label(s, p, "R") for p in s.random2],
        st.tau_pi, st.chi_square2, [f" {'level-1, E':<28}{np.sqrt(est.sigma2):>11.5f}{est.sigma2:>13.5f}"], note2,
    )
    n3, k3 = st.n_level3_sufficient, st.n_level3
    note3 = (f" Note: The chi-square statistics reported above are based on only {n3} of {k3} level-3 units that had\n"
             " sufficient data for computation. Fixed effects and variance components are based on all the data.") if n3 < k3 else ""
    lines += _components(
        "Final estimation of level-3 variance components:", [b_label(s, p, q, "U") for p, q in s.random3],
        st.tau_beta, st.chi_square3, [], note3,
    )
    lines += sections.deviance_statistics(est, st.deviance, st.n_params)
    return "\n".join(lines) + "\n"


def hlm4_report(est: MultiEstimates, st: LevelStatistics, fixed: pd.DataFrame, robust: pd.DataFrame) -> str:
    """The report of a four-level (HLM4) run, in HLM3's layout (`hlm3_report`), from the level
    statistics (`diagnostics.level_structure`) and the fit's coefficient tables: `fixed` (model-based
    SEs, Satterthwaite df) and `robust` (CR0 at the top level, clubSandwich's df), as
    `MultiFit.coef_table` gives them. HLM4's chi-square tests and approximate df are not printed:
    their HLM4 rules are not known to us (docs/hlm-statistics.md section 14e)."""
    s = st.structure
    L = s.n_levels
    lines = _specifications(est, list(zip(st.n_units, s.names)), f"HLM{L}")
    lines += [" Summary of the model specified (in equation format)", " ---------------------------------------------------", ""]
    lines += model_forms(est, s) + sections.convergence(est)
    lines += [f" sigma^2 = {est.sigma2:>12.5f}", ""]
    what = {2: "level-1", 3: "level-2", 4: "level-3"}
    for k in range(2, L + 1):
        nodes = [n for n in s.nodes(k - 1) if n.random]
        labels = [f"{_path_name(s, n)},{n.label}" for n in nodes]
        T = st.tau(k)
        lines += sections.matrix_lines(f"tau (level {k})", T.to_numpy(), labels, ">12.5f")
        lines += sections.matrix_lines(f"tau (level {k}) (as correlations)", st.tau_correlations(k).to_numpy(), labels, ">8.3f")
        lines += _reliabilities(f"Random {what[k]} coefficient", [f"{_path_name(s, n)}, {n.label}" for n in nodes],
                                st.reliability(k).to_numpy(), st.n_sufficient(k), st.n_units[k - 2], f"level-{k} units")
        if k == 4:
            lines += [" (Level-4 reliabilities: HLM3's level-3 rule carried one level up; docs/hlm-statistics.md 14e.)", ""]
    lines += [f" The value of the log-likelihood function = {-0.5 * st.deviance:.6E}", ""]
    for table, title in ((fixed, "Final estimation of fixed effects:"),
                         (robust, f"Final estimation of fixed effects\n (with robust standard errors, CR0 clustered at level {L})")):
        lines += [f" The outcome variable is  {est.design.spec.outcome}", "", f" {title}", sections.RULE,
                  "                                              Standard",
                  " Fixed Effect                       Coefficient    Error     T-ratio   d.f.   P-value", sections.RULE]
        for n in s.nodes(L):
            est_, se, t, df, pv = table.iloc[n.column][["estimate", "se", "t", "df", "p"]]
            lines.append(f" {_path_name(s, n) + ', ' + n.label:<34}{est_:>12.6f}{se:>11.6f}{t:>10.3f}{df:>8.1f}{pv:>9.3f}")
        lines += [sections.RULE, " d.f.: Satterthwaite's (model-based SEs) and clubSandwich's (robust); HLM4's approximate d.f. rule is",
                  " not known to us.", ""]
    lines += [" Final estimation of variance components:", sections.RULE,
              " Random Effect                        Standard     Variance", "                                     Deviation    Component", sections.RULE]
    for k in range(2, L + 1):
        nodes = [n for n in s.nodes(k - 1) if n.random]
        for n, v in zip(nodes, np.diag(st.tau(k).to_numpy())):
            lines.append(f" {_path_name(s, n) + ', ' + n.random_label:<34}{np.sqrt(max(v, 0.0)):>11.5f}{v:>13.5f}")
    lines.append(f" {'level-1, E':<34}{np.sqrt(est.sigma2):>11.5f}{est.sigma2:>13.5f}")
    lines += [sections.RULE, f" Chi-square tests of the variance components are not given: HLM{L}'s rule for them is not known to us.", ""]
    lines += sections.deviance_statistics(est, st.deviance, st.n_params)
    return "\n".join(lines) + "\n"


def _coef_name(n: LevelNode) -> str:
    """INTRCPT<k> for an intercept of level k, else the variable ('year')."""
    return f"INTRCPT{n.level}" if n.name == INTERCEPT else n.name


def _path_name(s: LevelStructure, node: LevelNode) -> str:
    """HLM3's name of a coefficient by its path: 'INTRCPT1', 'year/black', 'INTRCPT1/INTRCPT2/w'."""
    out, nodes = [], s.roots
    for name in node.path:
        x = next(x for x in nodes if x.name == name)
        out.append(_coef_name(x))
        nodes = x.children
    return "/".join(out)
