"""HLM's report (the layout of HLM 6's output file), from a fit's core record (`results.estimates`)
and the tables of its views (`diagnostics.hlm_statistics.HLMStatistics`, `inference.view.Inference`,
`diagnostics.effect_sizes.EffectSizes`). Formatting only: every number is given.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from multilevel.design.builder import INTERCEPT
from multilevel.diagnostics.effect_sizes import EffectSizes
from multilevel.diagnostics.hlm_statistics import HLMStatistics
from multilevel.inference.coefficients import HypothesisTest
from multilevel.inference.view import Inference
from multilevel.reports.equations import level_equations, mixed_equation
from multilevel.results.estimates import Estimates

RULE = " " + "-" * 76
CENTRE_MARK = {"group": "*", "grand": "$"}
CENTRE_NOTE = {
    "group": "'*' - This level-1 predictor has been centered around its group mean.",
    "grand": "'$' - This level-1 predictor has been centered around its grand mean.",
    "level2-units": "'$' - This level-2 predictor has been centered around its grand mean (over the units, each counted once).",
    "level2-grand": "'$' - This level-2 predictor has been centered around its grand mean over the rows (cgm() in a formula).",
}


def coef_label(name: str, q: int, random_part: bool = False) -> str:
    """HLM's row labels: 'INTRCPT1, B0' / 'ses slope, B1' (U instead of B for random parts)."""
    letter = "U" if random_part else "B"
    return f"INTRCPT1, {letter}{q}" if name == INTERCEPT else f"{name} slope, {letter}{q}"


def _predictor_label(predictor: str) -> str:
    """HLM calls the level-2 intercept INTRCPT2."""
    return "INTRCPT2" if predictor == INTERCEPT else predictor


def coefficient_index(fit: Estimates) -> dict[str, int]:
    """q of each level-1 coefficient B_q, by name."""
    return {c.name: q for q, c in enumerate(fit.design.coefficients)}


def tau_label(name: str, q: int) -> str:
    return f"INTRCPT1,B{q}" if name == INTERCEPT else f"{name},B{q}"


def _weighting_rows(fit: Estimates) -> list[str]:
    w = fit.design.weights
    if w is None:
        return [f" {'Level 1':<11}no", f" {'Level 2':<11}no"]
    rows = []
    for level, r in w.table().iterrows():
        if r["weighting"]:
            norm = "no" if r["scaling"] == "raw" else f"yes ({r['scaling']})"
            rows.append(f" {level:<11}{'yes':<13}{r['name']:<12}{norm}")
        else:
            rows.append(f" {level:<11}no")
    return rows


def _precision_row(fit: Estimates) -> str:
    """HLM's "Precision" weighting row: lme4's weights= (Var(e_i) = sigma2 / w_i), as given."""
    pw = fit.design.precision_weights
    if pw is None:
        return f" {'Precision':<11}no"
    return f" {'Precision':<11}{'yes':<13}{pw.column:<12}no"


def _specifications(fit: Estimates) -> list[str]:
    dr = fit.data_report
    opt = fit.optimizer
    method = "restricted maximum likelihood" if fit.reml else "full maximum likelihood"
    lines = [
        " SPECIFICATIONS FOR THIS HLM2 RUN",
        "",
        f"  Model (lme4 form)              = {fit.formula}",
        f"  Number of level-1 units        = {fit.n_obs}",
        f"  Number of level-2 units        = {fit.n_groups}",
        f"  Method of estimation: {method}",
    ]
    if fit.weight_kind:
        lines.append(f"  Weights: {fit.weights_description}")
    if opt is not None:
        lines.append(f"  Optimizer: {opt.method}, {opt.n_evaluations} evaluations of the deviance")
    for line in str(dr).splitlines():
        lines.append("  " + line)
    lines += [
        "",
        " Weighting Specification",
        " -----------------------",
        f" {'':<11}{'Weighting?':<13}{'Name':<12}Normalized?",
        *_weighting_rows(fit),
        _precision_row(fit),
        "",
        f"  The outcome variable is  {fit.spec.outcome}",
        "",
    ]
    return lines


def _fixed_spec(fit: Estimates) -> list[str]:
    lines = [
        "  The model specified for the fixed effects was:",
        " ----------------------------------------------------",
        "",
        "   Level-1                  Level-2",
        "   Coefficients             Predictors",
        " ----------------------   ---------------",
    ]
    labels = {g.column: g for g in fit.gamma_labels}
    marks: set[str] = set()
    for q, c in enumerate(fit.design.coefficients):
        mark = CENTRE_MARK.get(c.centering or "", " ")
        if c.centering:
            marks.add(c.centering)
        first = True
        if not c.columns:
            lines.append(f" {mark}{coef_label(c.name, q):>22}      (no fixed effect)")
        for col in c.columns:
            g = labels[col]
            left = f" {mark}{coef_label(c.name, q):>22}" if first else " " * 24
            pc = dict(zip(c.predictors, c.predictor_centering)).get(g.predictor, "")
            if pc:
                marks.add("level2-" + pc)  # HLM marks a grand-mean-centred level-2 predictor '$'
            lines.append(f"{left}   {('$' if pc else '') + _predictor_label(g.predictor):>12}, {g.label}")
            first = False
    if marks:
        lines.append("")
        lines.extend(CENTRE_NOTE[m] for m in sorted(marks))
    lines += [
        "",
        " The model specified for the covariance components was:",
        " ---------------------------------------------------------",
        "",
        "         Sigma squared (constant across level-2 units)",
        "",
        "         Tau dimensions",
    ]
    lines += [f"               {('INTRCPT1' if z == INTERCEPT else z + ' slope')}" for z in fit.design.z_names]
    lines += ["", " Summary of the model specified (in equation format)", " ---------------------------------------------------", ""]
    lines += level_equations(fit.spec.outcome, fit.design.coefficients)
    lines += ["", "Mixed Model", f"    {mixed_equation(fit.spec.outcome, fit.design.coefficients)}", ""]
    return lines


def _convergence(fit: Estimates) -> list[str]:
    opt = fit.optimizer
    if opt is None:
        return [" Evaluated at given variance components (tau and sigma_squared supplied; no estimation).", ""]
    state = "converged" if opt.converged else "did NOT converge"
    lines = [f" Estimation {state} ({opt.n_evaluations} evaluations, return code {opt.return_code}): "
             f"{opt.detail}"]
    lines += _optimum_check(fit)
    if fit.singular:
        lines.append(
            " WARNING: the fit is singular (on the boundary): the estimated covariance matrix of the random"
        )
        lines.append(
            "   effects is not of full rank, i.e. a variance is estimated as zero or a correlation as +/-1."
        )
        lines.append("   The data do not support this random part; consider removing a random effect.")
    lines.append("")
    return lines


def _optimum_check(fit: Estimates) -> list[str]:
    """Whether the optimum was checked (`optimizer.check_optimum`: the gradient, the Newton
    decrement and the Hessian at the estimates) and what the check found. Said plainly because HLM 6
    stops when the deviance changes little between iterations and may print values short of the
    optimum: a reader comparing the two needs to know which was checked."""
    opt = fit.optimizer
    if opt is None:  # evaluated at given variance components: no optimum (`_convergence` says so)
        return []
    if not opt.checked:
        return [f" Optimum not checked (gradient norm {opt.gradient_norm:.2g})."]
    if not opt.converged:
        return [f" Optimum NOT verified: {opt.check}. Do not rely on these estimates; see fit.optimizer."]
    return [
        f" Optimum checked: {opt.check}.",
        " (HLM 6 stops iterating when the deviance changes little and may print estimates short of the",
        "  optimum; if its deviance is higher than this one, HLM stopped early: compare fit.hlm_deviance.)",
    ]


def _matrix(title: str, mat: np.ndarray, labels: list[str], fmt: str) -> list[str]:
    lines = [f" {title}"]
    for lab, row in zip(labels, mat):
        lines.append(f" {lab:>16}" + "".join(format(v, fmt) for v in row))
    lines.append("")
    return lines


def _fixed_table(fit: Estimates, table, robust: bool) -> list[str]:
    head = [
        f" The outcome variable is  {fit.spec.outcome}",
        "",
        " Final estimation of fixed effects" + (":" if not robust else ""),
    ]
    if robust:
        head.append(" (with robust standard errors)")
    head += [
        RULE,
        "                                       Standard             Approx.",
        "    Fixed Effect         Coefficient   Error      T-ratio   d.f.     P-value",
        RULE,
    ]
    rows = table.to_numpy()

    def row(col: int) -> str:
        est, se, df, t, p = rows[col]
        return f"{est:>14.6f}{se:>11.6f}{t:>10.3f}{df:>10.0f}{p:>9.3f}"

    head += gamma_rows(fit, row)
    head += [RULE, ""]
    if fit.weighted and not robust:
        head[-1:-1] = [" With sampling weights these model-based SEs are not valid: use the robust ones below."]
    return head


def gamma_rows(fit: Estimates, cells) -> list[str]:
    """HLM's fixed-effect rows, grouped under "For <B_q>": label, then cells(column)."""
    labels = {g.column: g for g in fit.gamma_labels}
    lines = []
    for q, c in enumerate(fit.design.coefficients):
        if not c.columns:
            continue
        lines.append(f" For {coef_label(c.name, q):>18}")
        for col in c.columns:
            g = labels[col]
            lines.append(f"  {_predictor_label(g.predictor):>12}, {g.label:<6}" + cells(col))
    return lines


def _variance_components(fit: Estimates, stats: HLMStatistics) -> list[str]:
    vc = stats.variance_components
    lines = [
        " Final estimation of variance components:",
        " -----------------------------------------------------------------------------",
        " Random Effect           Standard      Variance     df    Chi-square  P-value",
        "                         Deviation     Component",
        " -----------------------------------------------------------------------------",
    ]
    zq = coefficient_index(fit)
    for z in fit.design.z_names:
        sd, var, df, chi, p = vc.loc[z]
        lab = coef_label(z, zq[z], random_part=True)
        lines.append(f" {lab:<22}{sd:>11.5f}{var:>14.5f}{df:>6.0f}{chi:>14.5f}{p:>9.3f}")
    sd, var = vc.loc["level-1", ["sd", "variance"]]
    lines.append(f" {'level-1, R':<22}{sd:>11.5f}{var:>14.5f}")
    lines.append(" -----------------------------------------------------------------------------")
    lines += _sufficient_note(stats, "chi-square statistics")
    return lines


def _sufficient_note(stats: HLMStatistics, what: str) -> list[str]:
    js, j = stats.n_units_sufficient, stats.est.n_groups
    if js == j:
        return [""]
    return [
        f"Note: The {what} reported above are based on only {js} of {j}",
        "units that had sufficient data for computation.  Fixed effects and variance",
        "components are based on all the data.",
        "",
    ]


def glh_block(fit: Estimates, test: HypothesisTest, number: int = 1) -> list[str]:
    """HLM's "Results of General Linear Hypothesis Testing" for one test (its chi-square uses the
    covariance the test was made with: HLM's is the robust one when robust SEs are printed)."""
    beta = fit.beta.to_numpy()
    lines = [
        "",
        f"                Results of General Linear Hypothesis Testing - Test {number}",
        RULE,
        "                                   Coefficients      Contrast",
        RULE,
    ]
    lines += gamma_rows(fit, lambda col: f"{beta[col]:>21.6f}" + "".join(f"{v:>8.3f}" for v in test.L[:, col]))
    rhs = np.broadcast_to(np.asarray(test.rhs, dtype=float), (test.L.shape[0],))
    if np.any(rhs != 0):  # H0: contrast = value (HLM's own tests are against 0)
        lines.append(f"{'  Hypothesised value (H0: contrast = value)':<43}" + "".join(f"{v:>8.3f}" for v in rhs))
    se = {"model": "model-based", "CR0": "robust (CR0)", "CR1": "robust (CR1)", "CR2": "robust (CR2)"}[test.se_method]
    lines += [
        "",
        f"Chi-square statistic = {test.chisq:.6f}",
        f"Degrees of freedom   = {int(test.chisq_df)}",
        f"P-value              = {test.chisq_p:.6f}",
        f"  ({se} covariance; F = {test.F:.4f} on {int(test.num_df)} and {test.den_df:.2f} df ({test.df_method}), p = {test.F_p:.6f})",
    ]
    return lines


def effect_size_block(es: EffectSizes) -> list[str]:
    """The effect sizes of `fit.effect_sizes()`, formatted."""
    lines = ["", " Effect sizes", " ------------"]
    for name, v in es.icc["icc"].items():
        lines.append(f"  ICC, {name:<34}= {v:.4f}")
    de = es.design_effects
    for kind in de.index:
        row = de.loc[kind]
        lines.append(
            f"  Design effect (cluster size {kind} {row['cluster_size']:.2f}) = {row['design_effect']:.3f}; effective N = {row['effective_n']:.1f}"
        )
    for name, v in es.r2["r2"].items():
        lines.append(f"  {name} = {v:.4f}")
    lines.append("  Rights & Sterba R2 (share of the outcome variance)")
    rs = es.rights_sterba
    for idx in rs.index:
        parts = [f"{c} {rs.loc[idx, c]:.4f}" for c in rs.columns if np.isfinite(rs.loc[idx, c])]
        lines.append(f"    {idx:<8} " + ", ".join(parts))
    lines.append("  Plausible-value ranges (95%) of the random coefficients")
    for name, row in es.plausible_values.iterrows():
        lines.append(f"    {name:<20} {row['low']:.3f} to {row['high']:.3f}")
    lines += [f"  Note: {n}" for n in es.notes]
    return lines


def hlm_report(fit: Estimates, stats: HLMStatistics, inf: Inference, tests: Sequence[HypothesisTest] = (),
               effect_sizes: EffectSizes | None = None, homogeneity: dict | None = None) -> str:
    """The report HLM 6 prints for a two-level run, section by section, for the fit whose record is
    `fit`; `tests` are `HypothesisTest`s (fit.test(...)) printed as HLM's General Linear Hypothesis
    tests, and the effect sizes, when given, close the report."""
    zq = coefficient_index(fit)
    tau_labels = [tau_label(n, zq[n]) for n in fit.design.z_names]
    lines = _specifications(fit) + _fixed_spec(fit) + _convergence(fit)
    lines += [f" Sigma_squared = {fit.sigma2:>12.5f}", ""]
    lines += _matrix("Tau", fit.tau.to_numpy(), tau_labels, ">14.5f")
    lines += _matrix("Tau (as correlations)", fit.tau_correlations.to_numpy(), tau_labels, ">7.3f")
    lines += [
        " ----------------------------------------------------",
        "  Random level-1 coefficient   Reliability estimate",
        " ----------------------------------------------------",
    ]
    for n, r in stats.reliability.items():
        lines.append(f"  {coef_label(n, zq[n]):<28}{r:>13.3f}")
    lines.append(" ----------------------------------------------------")
    lines += _sufficient_note(stats, "reliability estimates")
    lines.append(f"The value of the log-likelihood function = {fit.hlm_loglik:.6E}")
    lines.append("")
    lines += _fixed_table(fit, inf.model_based, robust=False)
    lines += _fixed_table(fit, inf.robust, robust=True)
    lines += _variance_components(fit, stats)
    crit = "REML criterion (lme4 REMLcrit)" if fit.reml else "-2 log-likelihood (lme4 deviance)"
    lines += [
        " Statistics for current covariance components model",
        " --------------------------------------------------",
        f" Deviance                       = {fit.hlm_deviance:.6f}",
        f" Number of estimated parameters = {fit.hlm_n_params}",
        "",
        f" Deviance in HLM's convention; the {crit} is {fit.deviance:.6f}",
        "   (HLM's REML deviance is lme4's minus log(2*pi) when there are two or more fixed effects).",
        f" lme4: logLik = {fit.loglik:.4f} (df = {fit.n_params}), AIC = {fit.aic:.4f}, BIC = {fit.bic:.4f}"
        if not fit.weighted
        else f" Pseudo-log-likelihood = {fit.loglik:.4f} (sampling weights: AIC, BIC and likelihood-ratio tests do not apply)",
    ]
    if fit.weighted:
        lines.append(" With sampling weights, reliabilities and chi-squares use the level-1-weighted unit OLS.")
    if homogeneity is not None:
        h = homogeneity
        lines += [
            "",
            " Test of homogeneity of level-1 variance",
            " ----------------------------------------",
            f" Chi-square statistic         = {h['chisq']:>12.5f}",
            f" Number of degrees of freedom = {h['df']:>4d}",
            f" P-value                      = {h['p']:.3f}" if h["p"] >= 0.001 else " P-value                      = 0.000",
        ]
        if h["units_left_out"]:
            lines.append(f" ({h['units_left_out']} units with fewer than {h['min_df']} residual df left out)")
    for i, t in enumerate(tests, start=1):
        lines += glh_block(fit, t, i)
    if effect_sizes is not None:
        lines += effect_size_block(effect_sizes)
    return "\n".join(lines) + "\n"
