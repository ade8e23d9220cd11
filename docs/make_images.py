"""Remake the figures of the docs: the seminar's model 4 plots and a screenshot of its HTML report.

    .venv/bin/python docs/make_images.py        (the screenshot needs Debian's chromium)
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import multilevel as ml

OUT = Path(__file__).resolve().parent / "images"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    fit = ml.fit("mathach ~ (sector + meanses) * cses + (cses | school)", ml.datasets.hsb())
    fit.plot("caterpillar", path=OUT / "caterpillar.png")
    fit.plot("qq", path=OUT / "qq.png")
    fit.plot("model", x="cses", lines={"sector": [0, 1], "meanses": "quartiles"}, path=OUT / "model_graph.png")
    fit.plot("residual-sd", path=OUT / "residual_sd.png")
    fit.plot("eb", variable="pracad", path=OUT / "eb_pracad.png")
    fit.plot("residuals-fitted", path=OUT / "residuals_fitted.png")
    html = OUT / "model4_report.html"
    fit.to_html(html, title="HSB: the seminar's model 4")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2000",
             f"--screenshot={OUT / 'html_report.png'}", html.as_uri()],
            check=True, capture_output=True,
        )
    html.unlink()  # the page is remade on demand; the screenshot is what the docs show


if __name__ == "__main__":
    main()
