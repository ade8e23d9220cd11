"""Time the inference on the seminar's model 4 (HSB data): the pieces that need derivatives or
per-unit matrix functions, each computed from the per-group summaries (best of several runs).

    python benchmarks/inference_time.py
"""
from __future__ import annotations

import time

import multilevel as ml

FORMULA = "mathach ~ (sector + meanses) * cses + (cses | school)"


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


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
    print(f"{'step':<34}{'seconds':>10}")
    for name, fn in cases.items():
        t = best_of(fn, 1 if "profile" in name or "bootstrap" in name else 5)
        print(f"{name:<34}{t:>10.4f}")


if __name__ == "__main__":
    main()
