"""The seminar's model 4 on the High School and Beyond data, as HLM would print it.

    python -m multilevel.examples.hsb [--ml] [--summary]

Level-1:  mathach = B0 + B1*(ses - school mean of ses) + R
Level-2:  B0 = G00 + G01*sector + G02*meanses + U0
          B1 = G10 + G11*sector + G12*meanses + U1

After the report, a note compares it with what HLM 6 printed for this model in the seminar: HLM
stopped before the optimum (its deviance is higher), so its tau, sigma2 and the fixed effects
differ from ours in the 3rd to 4th digit; evaluated at HLM's printed tau and sigma2 our report
reproduces HLM's printed numbers (tests/reference/test_hlm_seminar.py).
"""
from __future__ import annotations

import argparse
import time
from typing import TypedDict

import multilevel as ml


def model4(method: str = "REML") -> ml.Fit:
    return ml.fit_levels(
        "mathach ~ 1 + cwc(ses)",
        {"Intercept": "sector + meanses + u", "ses": "sector + meanses + u"},
        group="school",
        data=ml.datasets.hsb(),
        method=method,
    )


class PrintedFit(TypedDict):
    """Estimates as a program printed them: tau (k x k), sigma2 and the deviance."""

    tau: list[list[float]]
    sigma2: float
    deviance: float


#: HLM 6.08's printed REML estimates of model 4 in the seminar (tests/fixtures/hlm_printed.json): tau,
#: sigma2 and HLM's deviance. These are HLM's numbers, transcribed, not ours.
HLM6_MODEL4: PrintedFit = {"tau": [[2.37996, 0.19058], [0.19058, 0.14892]], "sigma2": 36.70313, "deviance": 46501.875643}


def hlm6_note(fit: ml.Fit) -> str:
    """Plain words on where HLM 6's printed numbers for model 4 differ from this fit, and why."""
    hlm = HLM6_MODEL4
    at_hlm = fit.at(tau=hlm["tau"], sigma2=hlm["sigma2"])
    ours = fit.hlm_deviance
    tau = fit.tau.to_numpy()
    lines = [
        "How this compares with HLM 6 (the seminar's printout of this model):",
        f"  HLM 6 printed deviance {hlm['deviance']:.6f}, tau11 = {hlm['tau'][1][1]:.5f}, sigma2 = {hlm['sigma2']:.5f};",
        f"  this fit has deviance {ours:.6f}, tau11 = {tau[1, 1]:.5f}, sigma2 = {fit.sigma2:.5f}.",
    ]
    gap = float(abs(at_hlm.fixed["estimate"] - fit.fixed["estimate"]).max())
    if hlm["deviance"] > ours:
        lines += [
            f"  HLM's deviance is {hlm['deviance'] - ours:.3f} higher: HLM 6 stopped iterating before the optimum",
            "  (it stops when the deviance changes little between iterations). So its variance components",
            f"  differ from these (most of all tau11), and its fixed effects by up to {gap:.4f}, with their SEs.",
            "  These estimates are at the optimum (lme4 and nlme find the same). Evaluated at HLM's printed",
            "  tau and sigma2, this program prints HLM's numbers to the printed digits:",
            f"  fit.at(tau=..., sigma2=...).report() (deviance there: {at_hlm.hlm_deviance:.6f}).",
        ]
    else:
        lines.append("  The two agree, or this fit is the one short of the optimum: see fit.optimizer.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ml", action="store_true", help="full maximum likelihood instead of REML")
    ap.add_argument("--summary", action="store_true", help="also print the lme4-style summary")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    fit = model4("ML" if args.ml else "REML")
    elapsed = time.perf_counter() - start
    print(fit.report())
    if not args.ml:  # HLM's printout is of the REML fit
        print(hlm6_note(fit))
        print()
    if args.summary:
        print(fit.summary())
    print(f"(read the data, built the design and fitted in {elapsed:.3f} s)")


if __name__ == "__main__":
    main()
