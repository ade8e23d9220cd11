"""The seminar's model 4 on the High School and Beyond data, as HLM would print it.

    python -m multilevel.examples.hsb [--ml] [--summary]

Level-1:  mathach = B0 + B1*(ses - school mean of ses) + R
Level-2:  B0 = G00 + G01*sector + G02*meanses + U0
          B1 = G10 + G11*sector + G12*meanses + U1
"""
from __future__ import annotations

import argparse
import time

import multilevel as ml


def model4(method: str = "REML") -> ml.Fit:
    return ml.fit_levels(
        "mathach ~ 1 + cwc(ses)",
        {"Intercept": "sector + meanses + u", "ses": "sector + meanses + u"},
        group="school",
        data=ml.datasets.hsb(),
        method=method,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ml", action="store_true", help="full maximum likelihood instead of REML")
    ap.add_argument("--summary", action="store_true", help="also print the lme4-style summary")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    fit = model4("ML" if args.ml else "REML")
    elapsed = time.perf_counter() - start
    print(fit.report())
    if args.summary:
        print(fit.summary())
    print(f"(read the data, built the design and fitted in {elapsed:.3f} s)")


if __name__ == "__main__":
    main()
