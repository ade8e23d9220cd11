"""Likelihood-ratio comparison of nested models, with the lecture's rules (Hoffman) and HLM's tests.

    chisq = D_smaller - D_bigger,  df = p_bigger - p_smaller,  p = P(chi2_df > chisq)

* REML deviances differ by the fixed effects' design, so REML fits that differ in fixed effects
  cannot be compared: refused, or both refitted by ML with `refit="ML"`.
* When the bigger model adds one random effect (its variance and k-1 covariances) and nothing
  else, the null value of the variance is on the boundary and the reference distribution is the
  mixture 0.5 chi2_k + 0.5 chi2_(k-1) (Stram and Lee 1994; docs/hlm-statistics.md section 9); the naive
  p-value is reported beside it.
* Information criteria under both conventions, each stated:
    lme4:    AIC = D + 2 p_all,   BIC = D + p_all log(N)          (p_all counts fixed effects too, also under REML)
    SAS/HLM: AIC = D + 2 p,       BIC = D + p log(J)              (p = covariance parameters under REML,
                                                                    all parameters under ML; n* = number of groups)
HLM's "Variance-Covariance components test" and "Model comparison test" are the chi-square of two
deviances; `Deviance` lets one enter a deviance and a parameter count by hand, as HLM's dialog does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from multilevel.errors import SpecificationError
from multilevel.inference import distributions as dist
from multilevel.results.estimates import Estimates, estimates_of
from multilevel.results.multi import MultiEstimates

CONVENTIONS = ("hlm", "lme4")


@dataclass(frozen=True)
class Deviance:
    """A deviance and its number of parameters, entered by hand (HLM's model comparison dialog).

    `convention` says whose numbers they are, because the two differ by more than a constant:
      "hlm" (default: what HLM prints, and what users copy from its output): HLM's deviance (lme4's
          REMLcrit - log 2 pi under REML, -2 logL - log 2 pi under ML; `Fit.hlm_deviance`) and its
          "Number of estimated parameters" (covariance parameters under REML, plus the gammas under
          ML; `Fit.hlm_n_params`);
      "lme4": lme4's deviance (`Fit.deviance`: REMLcrit or -2 logL) and its parameter count (all
          parameters, fixed effects too; `Fit.n_params`).
    Fits compared with it are put in its convention (compare())."""

    deviance: float
    n_params: int
    label: str = "entered"
    method: str | None = None
    convention: str = "hlm"

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise SpecificationError(
                f"Deviance convention must be 'hlm' (HLM's printed deviance and its \"Number of estimated parameters\") "
                f"or 'lme4' (fit.deviance and fit.n_params), not {self.convention!r}."
            )


@dataclass(frozen=True, eq=False)
class ModelComparison:
    table: pd.DataFrame
    notes: tuple[str, ...]

    def __str__(self) -> str:
        fmt = {c: "{:.3f}" for c in ("deviance", "aic", "bic", "aic_sas", "bic_sas")}
        fmt.update(chisq="{:.5f}", df="{:.0f}", p="{:.4g}", p_mixture="{:.4g}")
        cols = ["method", "n_params", "deviance", "aic", "bic", "aic_sas", "bic_sas", "chisq", "df", "p", "p_mixture"]
        shown = self.table[[c for c in cols if c in self.table]]
        formatters = {c: _blank_nan(f) for c, f in fmt.items() if c in shown}
        return shown.to_string(formatters=formatters, na_rep="") + "\n" + "\n".join(f"* {n}" for n in self.notes)

    def _repr_html_(self) -> str:
        return self.table.to_html(float_format=lambda x: f"{x:.5g}", na_rep="") + "".join(f"<p>{n}</p>" for n in self.notes)


def _blank_nan(pattern: str):
    return lambda x: "" if pd.isna(x) else pattern.format(x)


def mixture_p(chisq: float, k: int) -> float:
    """0.5 P(chi2_k > chisq) + 0.5 P(chi2_(k-1) > chisq), chi2_0 a point mass at 0."""
    lower = float(dist.chi2_sf(chisq, k - 1)) if k > 1 else float(chisq <= 0)
    return 0.5 * float(dist.chi2_sf(chisq, k)) + 0.5 * lower


def _same_data(a, b) -> bool:
    da, db = a.design, b.design
    if isinstance(a, MultiEstimates) or isinstance(b, MultiEstimates):
        return _same_rows(a, b)
    if da.n_obs != db.n_obs or da.group_labels != db.group_labels:
        return False
    pa, pb = da.precision_weights, db.precision_weights  # the likelihoods differ unless the weights agree
    if (pa is None) != (pb is None) or (pa is not None and not np.array_equal(pa.values, pb.values)):
        return False
    if da.streamed or db.streamed:  # no rows kept: the units' sums of y^2 stand for y
        return bool(np.allclose(da.coords.original_C(a.summaries)[:, -1, -1], db.coords.original_C(b.summaries)[:, -1, -1], rtol=1e-12))
    return np.array_equal(da.y, db.y) and np.array_equal(da.codes, db.codes)


def _same_rows(a, b) -> bool:
    """Fits with several grouping factors (and a one-factor fit beside them): the same rows (the
    input's index of the rows used) and the same outcome; their first factors may differ."""
    da, db = a.design, b.design
    if da.n_obs != db.n_obs or da.streamed or db.streamed:
        return False
    if da.row_index is not None and db.row_index is not None and not da.row_index.equals(db.row_index):
        return False
    return bool(np.array_equal(da.y, db.y))


def check_same_basis(fits, purpose: str) -> None:
    """Refuse fits that are not of the same data, weights and method: `compare` (for a
    likelihood-ratio test) and `pseudo_r2` (for a reduction in variance) need all three the same."""
    described = {f.design.weights_description for f in fits}
    if len(described) > 1:
        raise SpecificationError(
            "The models were fitted with different weights ("
            + "; ".join(sorted(x or "no weights" for x in described))
            + f"): their likelihoods are not comparable, so {purpose} is not either. Fit them with the same weights "
            "(precision_weights= or sampling_weights=)."
        )
    for f in fits[1:]:
        if not _same_data(fits[0], f):
            raise SpecificationError(
                f"The models were fitted to different data (different rows or outcome); {purpose} "
                "needs the same rows. Fit them to the same data (drop missing values first)."
            )
    if len({f.method for f in fits}) > 1:
        raise SpecificationError(
            f"REML and ML fits cannot be compared ({purpose}); refit them by the same method (fit.refit('ML'))."
        )


def _same_fixed(a, b) -> bool:
    da, db = a.design, b.design
    if sorted(da.x_names) != sorted(db.x_names):
        return False
    if da.streamed or db.streamed:
        idx = [db.x_names.index(n) for n in da.x_names]
        xa = da.coords.original_C(a.summaries).sum(axis=0)[a.summaries.q :, a.summaries.q :][:-1, :-1]
        xb = db.coords.original_C(b.summaries).sum(axis=0)[b.summaries.q :, b.summaries.q :][:-1, :-1]
        return bool(np.allclose(xa, xb[np.ix_(idx, idx)], rtol=1e-12))
    idx = [db.x_names.index(n) for n in da.x_names]
    return bool(np.allclose(da.X, db.X[:, idx]))


def _added_random_effect(small, big) -> int | None:
    """k if `big` = `small` plus one random effect with k new covariance parameters, else None."""
    ds, dbg = small.design, big.design
    if not set(ds.z_names) < set(dbg.z_names) or len(dbg.z_names) - len(ds.z_names) != 1:
        return None
    if int(big.template.is_diagonal.sum()) - int(small.template.is_diagonal.sum()) != 1:
        return None
    return big.template.size - small.template.size


def _random_effects(f) -> tuple[set[tuple[str, str]], int, int]:
    """(the (factor, random effect) pairs, the number of variances, of covariance parameters)."""
    if isinstance(f, MultiEstimates):
        pairs = {(t.name, z) for t in f.factors for z in t.z_names}
        return (pairs, sum(int(t.template.is_diagonal.sum()) for t in f.factors),
                sum(t.template.size for t in f.factors))
    return {(f.design.group, z) for z in f.design.z_names}, int(f.template.is_diagonal.sum()), f.template.size


def _added_random_effect_multi(small, big) -> int | None:
    """`_added_random_effect` when a fit has several grouping factors: the random effects are
    (factor, effect) pairs, so that (1 | school) + (1 | school:class) adds one to (1 | school)."""
    rs, vs, ks = _random_effects(small)
    rb, vb, kb = _random_effects(big)
    if not rs < rb or len(rb) - len(rs) != 1 or vb - vs != 1:
        return None
    return kb - ks


def _n_groups(f) -> int:
    """The units of a fit (several factors: the levels of its factor with the fewest, the top level
    of a nested model), the n of SAS's BIC."""
    if isinstance(f, MultiEstimates):
        return min(len(f.design.groupings[t.grouping].units) for t in f.factors)
    return f.n_groups


def _hlm_n_params(f) -> int:
    """HLM's parameter count: covariance parameters (REML), plus the fixed effects (ML)."""
    if isinstance(f, MultiEstimates):
        k = len(f.theta) + 1
        return k if f.reml else k + len(f.design.x_names)
    return f.hlm_n_params


def _refit_ml(f):
    if isinstance(f, MultiEstimates):
        return MultiEstimates.fit(f.design, "ML")
    return f.refit("ML")


def _record(m):
    """A fit's core record: `Estimates` (one factor) or `MultiEstimates` (several), else None."""
    est = estimates_of(m)
    if est is not None:
        return est
    multi = m if isinstance(m, MultiEstimates) else getattr(m, "estimates", None)
    return multi if isinstance(multi, MultiEstimates) else None


def _fit_row(f, label: str, convention: str = "lme4") -> dict:
    """A fit's row. In HLM's convention (beside an entered HLM deviance) its deviance and parameter
    count are HLM's (`Fit.hlm_deviance`, `Fit.hlm_n_params`), with lme4's kept beside them."""
    if convention == "hlm" and isinstance(f, MultiEstimates):
        raise SpecificationError(
            "HLM's deviance convention is not available yet for models with several grouping factors; enter "
            "the deviances as ml.Deviance(..., convention='lme4') (fit.deviance and fit.n_params)."
        )
    if convention == "hlm":
        d, k = f.hlm_deviance, f.hlm_n_params
        return {"model": label, "method": f.method, "n_obs": f.n_obs, "n_groups": f.n_groups,
                "deviance": d, "n_params": k, "aic": d + 2 * k,
                "deviance_lme4": f.deviance, "n_params_lme4": f.n_params}
    p_all = f.n_params
    p_sas = _hlm_n_params(f)
    J = _n_groups(f)
    return {
        "model": label, "method": f.method, "n_obs": f.n_obs, "n_groups": J,
        "deviance": f.deviance, "n_params": p_all, "aic": f.aic, "bic": f.bic,
        "n_params_sas": p_sas, "aic_sas": f.deviance + 2 * p_sas, "bic_sas": f.deviance + p_sas * np.log(J),
    }


def compare(*models, refit: str | None = None, labels: list[str] | None = None, mixture: bool | None = None) -> ModelComparison:
    """Compare nested models (fits, or `Deviance` numbers): a table sorted by the number of
    parameters with deviance, AIC/BIC (both conventions) and each model's chi-square test against
    the one before it. `refit="ML"` refits REML fits by ML when their fixed effects differ.
    `mixture` forces (True) or suppresses (False) the boundary mixture p-value; by default it is
    used exactly when a fit adds one random effect to the previous one."""
    if len(models) < 2:
        raise SpecificationError("compare() needs at least two models.")
    for i, m in enumerate(models):
        if not isinstance(m, Deviance) and _record(m) is None:
            raise SpecificationError(
                f"Argument {i + 1} of compare() is a {type(m).__name__}; give fits (ml.fit(...)) or "
                "ml.Deviance(deviance, n_params) numbers."
            )
    # each fit by its core record (`results.estimates`): what the comparison reads
    models = tuple(m if isinstance(m, Deviance) else _record(m) for m in models)
    if any(isinstance(m, Estimates) and m.weighted for m in models):
        raise SpecificationError(
            "Fits with sampling weights maximise a pseudo-likelihood, whose differences are not chi-square "
            "distributed: compare them by Wald tests (fit.test) instead."
        )
    if len({id(m) for m in models}) < len(models):
        raise SpecificationError("The same fit is given twice; compare different models.")
    given = list(labels) if labels else None
    labels = given or [m.label if isinstance(m, Deviance) else f"model {i + 1}" for i, m in enumerate(models)]
    fits = [m for m in models if not isinstance(m, Deviance)]
    notes: list[str] = []
    check_same_basis(fits, "a likelihood-ratio test")
    unknown = [m.label for m in models if isinstance(m, Deviance) and not m.method]
    if fits and unknown:
        # a REML criterion and a -2 log-likelihood differ by terms of the fixed effects' design: a
        # deviance of unknown kind cannot be set against a fit's
        raise SpecificationError(
            f"The entered deviance{'s' * (len(unknown) > 1)} {', '.join(repr(u) for u in unknown)} "
            f"{'do' if len(unknown) > 1 else 'does'} not say whether {'they are' if len(unknown) > 1 else 'it is'} "
            f"REML or ML, and the fits here are {'/'.join(sorted({f.method for f in fits}))} fits: give "
            "ml.Deviance(deviance, n_params, method='REML' or 'ML') (HLM prints which it used in the header of its output)."
        )
    bad = [m.method for m in models if isinstance(m, Deviance) and m.method and str(m.method).upper() not in ("REML", "ML")]
    if bad:
        raise SpecificationError(f"Deviance method must be 'REML' or 'ML', not {bad[0]!r}.")
    methods = {f.method for f in fits} | {str(m.method).upper() for m in models if isinstance(m, Deviance) and m.method}
    if len(methods) > 1:
        raise SpecificationError("REML and ML fits cannot be compared; refit them by the same method (fit.refit('ML')).")
    if "REML" in methods and any(not _same_fixed(fits[0], f) for f in fits[1:]):
        if refit is None:
            raise SpecificationError(
                "These REML fits differ in their fixed effects. REML deviances are not comparable then, "
                "because each REML likelihood is of residuals from its own fixed effects (the lecture's rule: "
                "use ML -2dLL for fixed effects). Use compare(..., refit='ML') to refit both by ML."
            )
        if str(refit).upper() != "ML":
            raise SpecificationError("refit must be 'ML'.")
        models = tuple(_refit_ml(m) if not isinstance(m, Deviance) else m for m in models)
        notes.append("REML fits with different fixed effects were refitted by ML for this comparison.")

    # one convention for every row: a chi-square of an HLM deviance against an lme4 one (they differ
    # by log 2 pi and count different parameters) would be silently wrong
    entered = {m.convention for m in models if isinstance(m, Deviance)}
    if len(entered) > 1:
        raise SpecificationError(
            "The entered deviances mix conventions ('hlm' and 'lme4'): HLM's deviance and parameter count differ from "
            "lme4's (by log 2 pi, and HLM counts covariance parameters only under REML). Enter all of them from the same "
            "program, with the same ml.Deviance(..., convention=...)."
        )
    convention = entered.pop() if entered else "lme4"
    rows: list[dict[str, Any]] = []
    for m, lab in zip(models, labels):
        if isinstance(m, Deviance):
            rows.append({"model": lab, "method": m.method or "", "deviance": m.deviance,
                         "n_params": m.n_params, "aic": m.deviance + 2 * m.n_params})
        else:
            rows.append(_fit_row(m, lab, convention))
    if convention == "hlm":
        notes.append(
            "deviance and n_params: HLM's convention for every row (its printed deviance, lme4's minus log 2 pi, and its "
            "\"Number of estimated parameters\", covariance parameters only under REML)"
            + ("; the fits were converted to it (fit.hlm_deviance, fit.hlm_n_params; lme4's in deviance_lme4, "
               "n_params_lme4). For lme4's numbers, enter ml.Deviance(..., convention='lme4')." if fits else ".")
        )
    elif any(isinstance(m, Deviance) for m in models):
        notes.append("deviance and n_params: lme4's convention for every row (fit.deviance, fit.n_params: all parameters).")
    order = sorted(range(len(models)), key=lambda i: (rows[i]["n_params"], -rows[i]["deviance"]))
    models = tuple(models[i] for i in order)
    rows = [rows[i] for i in order]
    for i in range(1, len(rows)):
        small, big = models[i - 1], models[i]
        chisq = rows[i - 1]["deviance"] - rows[i]["deviance"]
        df = rows[i]["n_params"] - rows[i - 1]["n_params"]
        rows[i]["chisq"], rows[i]["df"] = chisq, df
        rows[i]["p"] = float(dist.chi2_sf(chisq, df)) if df > 0 else np.nan
        negative = df > 0 and chisq < -1e-6 * max(1.0, abs(rows[i]["deviance"]))
        if negative:
            # the larger model fits worse: not nested, or one fit did not reach its optimum; a
            # p-value of 1 would hide it
            rows[i]["p"] = np.nan
            notes.append(
                f"{rows[i]['model']} has more parameters than {rows[i - 1]['model']} but a higher deviance (chi-square "
                f"{chisq:.4f} < 0): a likelihood-ratio test needs nested models, each at its optimum. Check that the "
                "smaller model is a special case of the larger one, that both converged (fit.converged) and, for entered "
                "deviances, that both are of the same kind (REML or ML) and data. No p-value is given."
            )
        if df <= 0:
            rows[i]["chisq"] = np.nan
            notes.append(
                f"{rows[i - 1]['model']} and {rows[i]['model']} have the same number of parameters, so they are not "
                "nested: no likelihood-ratio test; compare them by AIC and BIC (the lecture's rule for non-nested models)."
            )
        k = None
        if not isinstance(small, Deviance) and not isinstance(big, Deviance) and _same_fixed(small, big):
            multi = isinstance(small, MultiEstimates) or isinstance(big, MultiEstimates)
            k = _added_random_effect_multi(small, big) if multi else _added_random_effect(small, big)
        if mixture is True and k is None and df > 0:
            k = df
        if mixture is not False and k is not None and not negative:
            rows[i]["p_mixture"] = mixture_p(chisq, k)
            notes.append(
                f"{rows[i]['model']} adds one random effect ({k} covariance parameter{'s' if k > 1 else ''}) to "
                f"{rows[i - 1]['model']}: p_mixture uses 0.5 chi2({k}) + 0.5 chi2({k - 1}) for a variance on its boundary."
            )
    table = pd.DataFrame(rows).set_index("model")
    if "p_mixture" not in table:
        table["p_mixture"] = np.nan
    if fits and convention == "hlm":
        notes.append("aic: deviance + 2 n_params, in HLM's convention.")
    elif fits:
        notes.append("aic/bic: lme4's convention (all parameters, BIC n = number of rows).")
        notes.append("aic_sas/bic_sas: SAS PROC MIXED's and HLM's (covariance parameters only under REML; BIC n = number of groups).")
    return ModelComparison(table, tuple(notes))
