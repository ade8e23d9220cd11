"""The Fit in HTML: a compact view for Jupyter (`_repr_html_`) and a self-contained document to share
(`fit.to_html(path)`): the model in both forms, every table of the HLM report and of the
lme4-style summary, the data report, effect sizes and the plots embedded as PNG. Formatting only:
every number comes from the Fit's tables.
"""
from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multilevel.interfaces.fit import Fit

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


def _head(fit: Fit) -> str:
    return (
        f"<p><b>{html.escape(fit.method)} fit</b>: <code>{html.escape(fit.formula)}</code><br>"
        f"N = {fit.n_obs} rows, J = {fit.n_groups} units of <code>{html.escape(fit.design.group)}</code>; "
        f"deviance = {fit.deviance:.4f}"
        + ("; <b>singular fit</b>" if fit.singular else "")
        + (f"; <b>NOT converged</b>: {html.escape(fit.optimizer.check)}" if fit.optimizer is not None and not fit.converged else "")
        + (f"; {html.escape(fit.weights_description)}" if fit.weight_kind else "")
        + "</p>"
    )


def _core_tables(fit: Fit) -> list[str]:
    fixed = fit.model_based.join(fit.robust[["se"]].rename(columns={"se": "robust se"}))
    tables = [
        "<h3>Fixed effects</h3><p>Model-based SEs with HLM's approximate df, and HLM's robust (CR0) SEs.</p>",
        _table(fixed),
        "<h3>Variance components</h3>",
        _table(fit.variance_components),
        "<p>Reliability</p>",
        _table(fit.reliability.to_frame(), 3),
    ]
    if fit.design.streamed:  # effect sizes need the rows
        return tables
    es = fit.effect_sizes()
    return tables + [
        "<h3>Effect sizes</h3>",
        _table(es.icc, 4),
        _table(es.design_effects, 4),
        _table(es.r2, 4),
        "<p>Rights &amp; Sterba R<sup>2</sup></p>",
        _table(es.rights_sterba, 4),
    ]


def html_report(fit: Fit) -> str:
    """The compact view Jupyter shows."""
    return "\n".join([_head(fit), *_core_tables(fit)])


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def default_plots(fit: Fit) -> list[tuple[str, str, dict]]:
    """(title, kind, options) of the plots the document shows."""
    plots = [("Empirical Bayes residuals", "caterpillar", {}), ("Q-Q plot of the Mahalanobis distances", "qq", {}),
             ("Log residual SDs of the units", "residual-sd", {}), ("Level-1 residuals against fitted values", "residuals-fitted", {})]
    from multilevel.diagnostics.residual_files import level2_predictors

    d = fit.design
    level1 = [z for z in d.z_names if z != "Intercept" and z in d.frame.columns]
    level2 = level2_predictors(fit)
    if level1:
        plots.append(("Model graph", "model", {"x": level1[0], "lines": {v: "quartiles" for v in level2[:2]}}))
    if level2:
        plots.append((f"EB residuals against {level2[-1]}", "eb", {"variable": level2[-1]}))
    return plots


def html_document(fit: Fit, title: str | None = None, plots: bool = True) -> str:
    """One self-contained HTML page (no external files)."""
    title = title or f"Multilevel model: {fit.spec.outcome}"
    sections = [
        ("model", "The model", _pre("\n".join(fit.level_equations)) + "<p>Mixed form</p>" + _pre(fit.mixed_equation)
         + "<p>lme4 form</p>" + _pre(fit.formula)),
        ("data", "Data", _pre(str(fit.data_report))),
        ("tables", "Estimates", "\n".join(_core_tables(fit))),
        ("inference", "Fixed effects with Satterthwaite df" if not fit.weighted else "Fixed effects (robust SEs)",
         _table(fit.coef_table(df=None if fit.weighted else "satterthwaite"))),
        ("hlm", "HLM report", _pre(fit.report())),
        ("lme4", "lme4-style summary", _pre(fit.summary() if not fit.weighted else fit.summary(df="hlm"))),
    ]
    if plots and not fit.design.streamed:
        figs = []
        for caption, kind, options in default_plots(fit):
            fig = fit.plot(kind, **options)
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
