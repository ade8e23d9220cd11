"""The HTML page and the plots of fits with several grouping factors (`reports.html.multi_html_document`,
`diagnostics.plots.plot_factors`): every section, the embedded figures, and the plots' panels and
points against the fit's own numbers."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.errors import SpecificationError

pytest.importorskip("matplotlib")

REFS = Path(__file__).resolve().parents[2] / "refs" / "multi" / "data"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def nested():
    d = pd.read_csv(REFS / "egsingle.csv", dtype={"schoolid": str, "childid": str})
    return ml.fit("math ~ year + (1 | schoolid/childid)", d, method="ML")


@pytest.fixture(scope="module")
def crossed():
    d = pd.read_csv(REFS / "crossed_slope.csv", dtype={"school": str, "rater": str})
    return ml.fit("y ~ x + (x | school) + (1 | rater)", d)


def _sections(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z0-9]+)">', page)


def test_the_page_of_a_nested_model_has_every_section_and_hlm3s_report(nested, tmp_path):
    path = tmp_path / "eg.html"
    page = nested.to_html(path, title="egsingle")
    assert path.read_text(encoding="utf-8") == page
    assert _sections(page) == ["model", "data", "tables", "plots", "effects", "hlm", "lme4"]
    assert "<title>egsingle</title>" in page
    assert page.count("data:image/png;base64,") == 3
    for name in ("childid:schoolid", "schoolid", "Residual", "year"):
        assert name in page
    assert "Level-3" in page or "level-3" in page.lower()  # HLM3's report
    assert f"{nested.deviance:.4f}" in page
    # every embedded figure is a PNG
    for b64 in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page):
        assert base64.b64decode(b64)[:8] == PNG


def test_the_page_of_a_crossed_model_has_hcm2s_report(crossed):
    page = crossed.to_html(plots=False)
    assert _sections(page) == ["model", "data", "tables", "effects", "hlm", "lme4"]
    assert "HCM2 run" in page and "b00j" in page
    assert "data:image/png" not in page
    # the variance components as lme4's VarCorr: the correlation of the school's slope
    cor = crossed.varcorr.query("grp == 'school' and var2 == 'x'")["sdcor"].iloc[0]
    assert f"{cor:.6g}" in page


def test_the_page_of_three_crossed_factors_leaves_out_hlms_report():
    d = pd.read_csv(REFS / "crossed_slope.csv", dtype={"school": str, "rater": str})
    d["wave"] = (np.arange(len(d)) % 4).astype(str)  # a third factor crossed with both
    fit = ml.fit("y ~ x + (1 | school) + (1 | rater) + (1 | wave)", d)
    with pytest.raises(SpecificationError):
        fit.report()
    assert _sections(fit.to_html(plots=False)) == ["model", "data", "tables", "effects", "lme4"]


def test_caterpillar_has_a_panel_per_random_effect_and_a_point_per_level(crossed, tmp_path):
    path = tmp_path / "cat.png"
    fig = crossed.plot("caterpillar", path=path, level=0.9)
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 10_000
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(fig.axes) == 4 and len(shown) == 3  # school: (Intercept), x; rater: (Intercept); one empty
    modes, condvar = crossed.ranef, crossed.ranef_condvar
    z = 1.6448536269514722
    titles = {ax.get_title(): ax for ax in shown}
    assert set(titles) == {"(Intercept) | school", "x | school", "(Intercept) | rater"}
    for factor, table in modes.items():
        for k, term in enumerate(table.columns):
            ax = titles[f"{term} | {factor}"]
            x = ax.lines[0].get_xdata()
            assert len(x) == len(table)  # one point per level: 25 schools, 12 raters
            np.testing.assert_allclose(x, np.sort(table[term].to_numpy()))
            # the bars: z condsd either side
            order = np.argsort(table[term].to_numpy(), kind="stable")
            segments = ax.collections[0].get_segments()
            half = np.array([(s[1][0] - s[0][0]) / 2 for s in segments])
            np.testing.assert_allclose(half, z * np.sqrt(condvar[factor][order, k, k]), rtol=1e-12)


def test_residual_plots_have_a_point_per_row(nested, tmp_path):
    for kind in ("residuals-fitted", "qq"):
        path = tmp_path / f"{kind}.png"
        fig = nested.plot(kind, path=path)
        assert path.read_bytes()[:8] == PNG
        (ax,) = fig.axes
        assert ax.collections[0].get_offsets().shape[0] == nested.n_obs
    fig = nested.plot("residuals-fitted")
    r = nested.residuals(1)
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets()[:, 1], r["resid"].to_numpy())


def test_plot_refusals_name_the_kinds_and_options(crossed, tmp_path):
    with pytest.raises(SpecificationError, match="caterpillar, residuals-fitted, qq"):
        crossed.plot("eb")
    with pytest.raises(SpecificationError, match="no option 'levle'"):
        crossed.plot("caterpillar", levle=0.9)
    with pytest.raises(SpecificationError, match=r"\.png, \.svg or \.pdf"):
        crossed.plot("caterpillar", path=tmp_path / "cat.jpg")
