"""The Fit as HTML tables, for Jupyter."""
from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..results import Fit


def html_report(fit: Fit) -> str:
    head = (
        f"<p><b>{html.escape(fit.method)} fit</b>: <code>{html.escape(fit.formula)}</code><br>"
        f"N = {fit.n_obs} rows, J = {fit.n_groups} units of <code>{html.escape(fit.design.group)}</code>; "
        f"deviance = {fit.deviance:.4f}"
        + ("; <b>singular fit</b>" if fit.singular else "")
        + "</p>"
    )
    fixed = fit.fixed.join(fit.robust[["se"]].rename(columns={"se": "robust se"}))
    parts = [
        head,
        "<p><b>Fixed effects</b> (HLM df)</p>",
        fixed.to_html(float_format=lambda v: f"{v:.6g}"),
        "<p><b>Variance components</b></p>",
        fit.variance_components.to_html(float_format=lambda v: f"{v:.6g}", na_rep=""),
        "<p><b>Reliability</b></p>",
        fit.reliability.to_frame().to_html(float_format=lambda v: f"{v:.3f}"),
    ]
    es = fit.effect_sizes()
    fmt = lambda v: f"{v:.4g}"  # noqa: E731
    parts += [
        "<p><b>Effect sizes</b></p>",
        es.icc.to_html(float_format=fmt),
        es.design_effects.to_html(float_format=fmt),
        es.r2.to_html(float_format=fmt),
        "<p>Rights &amp; Sterba R<sup>2</sup></p>",
        es.rights_sterba.to_html(float_format=fmt, na_rep=""),
    ]
    return "\n".join(parts)
