"""Time the inference on the seminar's model 4 (HSB data): the pieces that need derivatives or
per-unit matrix functions, each computed from the per-group summaries (best of several runs),
and, when Rscript is installed, the same steps in lme4/lmerTest/pbkrtest/clubSandwich in the same
run (inference_time_r.R), as ratios R time / our time.

    python benchmarks/inference_time.py
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import multilevel as ml
from _timing import best_of

FORMULA = "mathach ~ (sector + meanses) * cses + (cses | school)"


def main() -> None:
    data = ml.datasets.hsb()
    fit = ml.fit(FORMULA, data)
    fml = ml.fit(FORMULA, data, method="ML")

    def fresh(f):  # a new Fit object, so no cached derivative is reused
        return f.at(f.tau.to_numpy(), f.sigma2)

    cases = {
        "fit (REML)": lambda: ml.fit(FORMULA, data),
        "coef_table satterthwaite": lambda: fresh(fit).coef_table(df="satterthwaite"),
        "coef_table kenward-roger": lambda: fresh(fit).coef_table(df="kenward-roger"),
        "coef_table CR2 + Bell-McCaffrey": lambda: fresh(fit).coef_table(se="CR2"),
        "joint test HTZ (2 rows)": lambda: fresh(fit).test("sector = 0, sector:cses = 0", se="CR2"),
        "effect_sizes": lambda: fit.effect_sizes(),
        "confint profile (ML fit)": lambda: fml.confint("profile"),
        "bootstrap, 100 refits": lambda: fit.bootstrap(100, seed=1, progress=False),
    }
    ours = {name: best_of(fn, 1 if "profile" in name or "bootstrap" in name else 5) for name, fn in cases.items()}
    r_times = _r_times()
    print(f"{'step':<34}{'multilevel (s)':>15}{'R (s)':>10}{'R / ours':>10}")
    for name, t in ours.items():
        r = r_times.get(name)
        extra = f"{r:>10.3f}{r / t:>10.1f}" if r is not None else f"{'':>10}{'':>10}"
        print(f"{name:<34}{t:>15.4f}{extra}")


def _r_times() -> dict[str, float]:
    if shutil.which("Rscript") is None:
        return {}
    here = Path(__file__).resolve().parent
    csv = here.parent / "src" / "multilevel" / "datasets" / "data" / "hsb.csv"
    res = subprocess.run(["Rscript", str(here / "inference_time_r.R"), str(csv)], capture_output=True, text=True)
    if res.returncode != 0:
        print("R timing failed:", res.stderr.strip()[-500:])
        return {}
    return {k: float(v) for k, v in (line.split("\t") for line in res.stdout.strip().splitlines())}


if __name__ == "__main__":
    main()
