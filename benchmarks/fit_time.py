"""Time one fit of the seminar's models on the HSB data (best of several runs).

    python benchmarks/fit_time.py
"""
from __future__ import annotations

import multilevel as ml
from _timing import best_of

MODELS = {
    "M1": "mathach ~ 1 + (1 | school)",
    "M3": "mathach ~ cses + (cses | school)",
    "M4": "mathach ~ (sector + meanses) * cses + (cses | school)",
    "S4": "mathach ~ (sector + meanses) * cses + (1 + female + cses | school)",
}


def main() -> None:
    data = ml.datasets.hsb()
    print(f"{'model':<6}{'method':<7}{'fit (s)':>10}{'evaluations':>13}")
    for name, formula in MODELS.items():
        for method in ("REML", "ML"):
            t = best_of(lambda formula=formula, method=method: ml.fit(formula, data, method=method))
            n = ml.fit(formula, data, method=method).optimizer.n_evaluations
            print(f"{name:<6}{method:<7}{t:>10.3f}{n:>13}")


if __name__ == "__main__":
    main()
