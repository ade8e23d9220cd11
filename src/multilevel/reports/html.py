"""The Fit in HTML: a compact view for Jupyter (`_repr_html_`) and a self-contained document to share
(`fit.to_html(path)`): the model in both forms, every table of the HLM report and of the
lme4-style summary, the data report, effect sizes and the plots embedded as PNG. Formatting only:
every number comes from the fit's core record (`results.estimates`) and its views' tables
(`inference.view.Inference`, `diagnostics.hlm_statistics.HLMStatistics`, `diagnostics.view.Diagnostics`).
"""
from __future__ import annotations

import base64
import html
import io

from multilevel.diagnostics.effect_sizes import EffectSizes
from multilevel.diagnostics.hlm_statistics import HLMStatistics
from multilevel.diagnostics.residual_files import level2_predictors
from multilevel.diagnostics.view import Diagnostics
from multilevel.errors import DataError, SpecificationError
from multilevel.inference.view import Inference
from multilevel.output import output_path
from multilevel.reports.equations import level_equations, mixed_equation
from multilevel.reports.hlm import hlm_report
from multilevel.reports.lme4 import lme4_summary
from multilevel.results.estimates import Estimates

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #446; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.6em; color: #335; border-bottom: 1px solid #ccd; }
table { border-collapse: collapse; margin: .6em 0 1em 0; font-size: .9em; }
th, td { border: 1px solid #ccd; padding: .25em .6em; text-align: right; }
th { background: #eef; } td:first-child, th:first-child { text-align: left; }
pre { background: #f6f6fa; padding: .8em; border: 1px solid #dde; overflow-x: auto; font-size: .85em; }
.figs { display: flex; flex-wrap: wrap; gap: 1em; } .figs figure { margin: 0; }
.figs img { max-width: 100%; border: 1px solid #dde; } figcaption { font-size: .85em; color: #555; }
nav a { margin-right: 1em; }
"""


def _table(frame, digits: int = 6, na: str = "") -> str:
    return frame.to_html(float_format=lambda v: f"{v:.{digits}g}", na_rep=na, border=0)


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def _head(fit: Estimates) -> str:
    return (
        f"<p><b>{html.escape(fit.method)} fit</b>: <code>{html.escape(fit.formula)}</code><br>"
        f"N = {fit.n_obs} rows, J = {fit.n_groups} units of <code>{html.escape(fit.design.group)}</code>; "
        f"deviance = {fit.deviance:.4f}"
        + ("; <b>singular fit</b>" if fit.singular else "")
        + (f"; <b>NOT converged</b>: {html.escape(fit.optimizer.check)}" if fit.optimizer is not None and not fit.converged else "")
        + (f"; {html.escape(fit.weights_description)}" if fit.weight_kind else "")
        + "</p>"
    )


def _core_tables(stats: HLMStatistics, inf: Inference, es: EffectSizes | None) -> list[str]:
    """The tables of the estimates; the effect sizes' when given (they need the rows)."""
    fixed = inf.model_based.join(inf.robust[["se"]].rename(columns={"se": "robust se"}))
    tables = [
        "<h3>Fixed effects</h3><p>Model-based SEs with HLM's approximate df, and HLM's robust (CR0) SEs.</p>",
        _table(fixed),
        "<h3>Variance components</h3>",
        _table(stats.variance_components),
        "<p>Reliability</p>",
        _table(stats.reliability.to_frame(), 3),
    ]
    if es is None:
        return tables
    return tables + [
        "<h3>Effect sizes</h3>",
        _table(es.icc, 4),
        _table(es.design_effects, 4),
        _table(es.r2, 4),
        "<p>Rights &amp; Sterba R<sup>2</sup></p>",
        _table(es.rights_sterba, 4),
    ]


def html_report(fit: Estimates, stats: HLMStatistics, inf: Inference, es: EffectSizes | None) -> str:
    """The compact view Jupyter shows, of the fit whose record is `fit` (`es`: its effect sizes,
    None for a streamed fit)."""
    return "\n".join([_head(fit), *_core_tables(stats, inf, es)])


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def default_plots(fit: Estimates) -> list[tuple[str, str, dict]]:
    """(title, kind, options) of the plots the document shows."""
    plots: list[tuple[str, str, dict]] = [("Empirical Bayes residuals", "caterpillar", {}), ("Q-Q plot of the Mahalanobis distances", "qq", {}),
             ("Log residual SDs of the units", "residual-sd", {}), ("Level-1 residuals against fitted values", "residuals-fitted", {})]
    d = fit.design
    columns = () if d.frame is None else d.frame.columns
    level1 = [z for z in d.z_names if z != "Intercept" and z in columns]
    level2 = level2_predictors(fit)
    if level1:
        plots.append(("Model graph", "model", {"x": level1[0], "lines": {v: "quartiles" for v in level2[:2]}}))
    if level2:
        plots.append((f"EB residuals against {level2[-1]}", "eb", {"variable": level2[-1]}))
    return plots


def html_document(diag: Diagnostics, title: str | None = None, plots: bool = True) -> str:
    """One self-contained HTML page (no external files) of the fit whose views are `diag` (its
    record `diag.est`, inference `diag.inference`, HLM statistics `diag.statistics`)."""
    fit, stats, inf = diag.est, diag.statistics, diag.inference
    es = None if fit.design.streamed else diag.effect_sizes()  # effect sizes need the rows
    summary_df = "hlm" if fit.weighted else "satterthwaite"
    title = title or f"Multilevel model: {fit.spec.outcome}"
    sections = [
        ("model", "The model", _pre("\n".join(level_equations(fit.spec.outcome, fit.design.coefficients)))
         + "<p>Mixed form</p>" + _pre(mixed_equation(fit.spec.outcome, fit.design.coefficients))
         + "<p>lme4 form</p>" + _pre(fit.formula)),
        ("data", "Data", _pre(str(fit.data_report))),
        ("tables", "Estimates", "\n".join(_core_tables(stats, inf, es))),
        ("inference", "Fixed effects with Satterthwaite df" if not fit.weighted else "Fixed effects (robust SEs)",
         _table(inf.coef_table(df=None if fit.weighted else "satterthwaite"))),
        ("hlm", "HLM report", _pre(hlm_report(fit, stats, inf, (), es))),
        ("lme4", "lme4-style summary", _pre(lme4_summary(fit, inf.coef_table(df=summary_df), summary_df))),
    ]
    if plots and not fit.design.streamed:
        figs = []
        for caption, kind, options in default_plots(fit):
            fig = diag.plot(kind, **options)
            figs.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{_png(fig)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        sections.insert(3, ("plots", "Plots", '<div class="figs">' + "".join(figs) + "</div>"))
    nav = "<nav>" + "".join(f'<a href="#{key}">{html.escape(name)}</a>' for key, name, _ in sections) + "</nav>"
    body = "\n".join(f'<section id="{key}"><h2>{html.escape(name)}</h2>{content}</section>' for key, name, content in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{_head(fit)}{nav}{body}</body></html>\n"
    )


# ----- several grouping factors (`interfaces.multi_fit.MultiFit`) ----------------------------------
#: (title, kind) of the plots the page of a fit with several grouping factors shows
MULTI_PLOTS = (("Conditional modes by factor", "caterpillar"), ("Level-1 residuals against fitted values", "residuals-fitted"),
               ("Normal Q-Q plot of the level-1 residuals", "qq"))


def multi_html_document(fit, title: str | None = None, plots: bool = True) -> str:
    """One self-contained HTML page of a fit with several grouping factors (the `MultiFit` facade:
    every table is one of its members): the model, the data report, the fixed effects with Wald
    intervals, the variance components (lme4's VarCorr), the levels of each factor, the effect
    sizes, HLM's report where the structure has one (`fit.report()`), lme4's summary and the plots
    (`fit.plot`)."""
    title = title or f"Multilevel model: {fit.spec.outcome}"
    fixed = fit.fixed.join(fit.confint()[["ci_low", "ci_high"]])
    groups = "".join(f"<li><code>{html.escape(k)}</code>: {v} levels</li>" for k, v in fit.groups.items())
    sections = [
        ("model", "The model", "<p>lme4 form</p>" + _pre(fit.formula) + f"<p>Grouping factors</p><ul>{groups}</ul>"),
        ("data", "Data", _pre(str(fit.data_report))),
        ("tables", "Estimates", "\n".join([
            "<h3>Fixed effects</h3><p>Model-based SEs (lme4's) and 95% Wald intervals.</p>", _table(fixed),
            "<h3>Variance components</h3><p>lme4's <code>as.data.frame(VarCorr(fit))</code>.</p>",
            _table(fit.varcorr.set_index("grp"), na="")])),
    ]
    if not fit.design.streamed:
        sections.append(("effects", "Effect sizes", _table(fit.effect_sizes(), 4)))
    try:
        sections.append(("hlm", "HLM report", _pre(fit.report())))
    except SpecificationError:
        pass  # a structure HLM's reports do not cover: lme4's summary only
    sections.append(("lme4", "lme4-style summary", _pre(fit.summary())))
    if plots and not fit.design.streamed:
        figs = []
        for caption, kind in MULTI_PLOTS:
            figs.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{_png(fit.plot(kind))}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        sections.insert(3, ("plots", "Plots", '<div class="figs">' + "".join(figs) + "</div>"))
    nav = "<nav>" + "".join(f'<a href="#{key}">{html.escape(name)}</a>' for key, name, _ in sections) + "</nav>"
    body = "\n".join(f'<section id="{key}"><h2>{html.escape(name)}</h2>{content}</section>' for key, name, content in sections)
    state = ("; <b>singular fit</b>" if fit.singular else "") + \
        ("" if fit.converged else f"; <b>NOT converged</b>: {html.escape(fit.optimizer.check)}")
    head = (f"<p><b>{html.escape(fit.method)} fit</b>: <code>{html.escape(fit.formula)}</code><br>N = {fit.n_obs} rows; "
            + ", ".join(f"{v} levels of <code>{html.escape(k)}</code>" for k, v in fit.groups.items())
            + f"; {'REML criterion' if fit.reml else 'deviance'} = {fit.deviance:.4f}{state}</p>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{head}{nav}{body}</body></html>\n"
    )


def save_page(page: str, path) -> None:
    """Write an HTML page to `path` (`output.output_path`'s checks); a clear error if it cannot."""
    target = output_path(path, "The HTML page")
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"Cannot write the HTML page to '{target}': {exc.strerror or exc}.") from None
