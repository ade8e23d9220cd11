"""The catalogue of issue 11 (acceptance): every input class of the issue's "What was found" (items
1-9) and every row of docs/bad-input.md, one row each, with what must happen:

* "right": the fit (or read) works and agrees with an independent reference: another fit that the
  algebra says must agree, a numpy computation, or a known value;
* "error": a `multilevel.errors.MultilevelError` whose message names the column / unit / row / file
  (every string in `names`);
* "warning": the fit works and warns (`multilevel.errors.MultilevelWarning`) naming the column.

Whatever happens, nothing but a MultilevelError may escape (no numpy / pandas / numba / pyarrow /
formulaic traceback). `outcome()` classifies each case; `summary()` counts them (cases tried, right
answers, clear errors, warnings, failures) for the closing note: run
`python -m pytest tests/test_catalogue.py -k summary -s`.

Every row of docs/bad-input.md has a case (`test_every_bad_input_row_has_a_case`): a case of item
"bad-input" named after the row's first cell, or a case of an issue item whose `row` names it (one
input, counted once). The cache rows are checked without compiling anything (the folder checks of
`multilevel.numerics.cache`; the end-to-end subprocesses are in tests/test_cache_security.py).
"""
from __future__ import annotations

import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from conftest import hsb
from multilevel.errors import MultilevelError

REL = 1e-6
M = "mathach ~ ses + (1 | school)"


# ----- the cases ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    item: str  # the item ("1".."9") or "bad-input" (a row of docs/bad-input.md)
    run: Callable[[Path], object]  # called with a fresh folder; returns what `check` reads
    expect: str  # "right" | "error" | "warning"
    check: Callable[[object], None] | None = None  # "right": asserts the answer against its reference
    names: tuple[str, ...] = field(default=())  # "error"/"warning": the message must contain each
    # the row of docs/bad-input.md this case reproduces (its first cell up to " ("), for a case of an
    # issue item that is also a row: one input is one case, counted once. A case of item "bad-input"
    # names its row by its own name ("bad-input: <first cell>[ (variant)]").
    row: str = ""


def small() -> pd.DataFrame:
    return hsb()[["school", "mathach", "ses", "sector", "meanses"]].iloc[:600].copy()


def gen(seed: int = 1, J: int = 30, lo: int = 3, hi: int = 12, slope: bool = False) -> pd.DataFrame:
    """Small two-level data: y = 1 + 0.5 x + u_j (+ v_j x) + e."""
    rng = np.random.default_rng(seed)
    n = rng.integers(lo, hi + 1, J)
    g = np.repeat(np.arange(J), n)
    x = rng.normal(size=g.size)
    u = rng.normal(size=J)
    v = 0.5 * rng.normal(size=J) if slope else np.zeros(J)
    y = 1 + 0.5 * x + u[g] + v[g] * x + rng.normal(size=g.size)
    return pd.DataFrame({"g": g, "x": x, "y": y})


def rel_close(what: str, got, want, rel: float = REL) -> None:
    got, want = np.asarray(got, float), np.asarray(want, float)
    scale = max(1e-300, float(np.max(np.abs(want)))) if want.size else 1.0
    err = float(np.max(np.abs(got - want))) / scale if want.size else 0.0
    assert got.shape == want.shape and np.all(np.isfinite(got)) and err <= rel, (
        f"{what}: {np.array2string(got, precision=10)} vs reference {np.array2string(want, precision=10)} (off by {err:.3g} relative)"
    )


def same_model(a: ml.Fit, b: ml.Fit, what: str = "", beta_map: dict | None = None) -> None:
    """Two fits of the same likelihood: deviance, tau and sigma2 (and the fixed effects, by name,
    `beta_map` naming b's coefficient for a's) agree to REL."""
    rel_close(f"{what} deviance", a.deviance, b.deviance, 1e-8)
    rel_close(f"{what} tau", a.tau.to_numpy(), b.tau.to_numpy())
    rel_close(f"{what} sigma2", a.sigma2, b.sigma2)
    names = list(a.beta.index)
    other = [beta_map.get(n, n) if beta_map else n for n in names]
    assert set(other) <= set(b.beta.index), f"{what} fixed effects {names} vs {list(b.beta.index)}"
    rel_close(f"{what} fixed effects", a.beta[names].to_numpy(), b.beta[other].to_numpy())
    assert a.converged and b.converged, f"{what} converged={a.converged}, {b.converged}"


def pair(fa: Callable[[Path], ml.Fit], fb: Callable[[Path], ml.Fit]) -> Callable[[Path], tuple]:
    return lambda tmp: (fa(tmp), fb(tmp))


def both(beta_map: dict | None = None) -> Callable[[tuple], None]:
    return lambda ab: same_model(ab[0], ab[1], beta_map=beta_map)


CASES: list[Case] = []


def case(name, item, run, expect, check=None, names=(), row=""):
    CASES.append(Case(name, item, run, expect, check, tuple(names), row))


# ----- 1. precision --------------------------------------------------------------------------------
HSB_M1 = "mathach ~ 1 + (1 | school)"
def _shifted_outcome(shift: float) -> None:
    def check(ab) -> None:
        shifted, plain = ab
        rel_close("tau", shifted.tau.to_numpy(), plain.tau.to_numpy())
        rel_close("sigma2", shifted.sigma2, plain.sigma2)
        rel_close("deviance", shifted.deviance, plain.deviance, 1e-8)
        rel_close("intercept", shifted.beta["Intercept"], plain.beta["Intercept"] + shift)

    case(f"1: mathach + {shift:g} on HSB gives the unshifted tau", "1",
         pair(lambda _: ml.fit(HSB_M1, hsb().assign(mathach=hsb()["mathach"] + shift)), lambda _: ml.fit(HSB_M1, hsb())),
         "right", check)


for _shift in (1e5, 1e7, 1e9):
    _shifted_outcome(_shift)


def _big_predictor(_):
    d = gen(3)
    return ml.fit("y ~ x + (1 | g)", d.assign(x=1e6 + d["x"])), ml.fit("y ~ x + (1 | g)", d)


case("1: a predictor 1e6 + N(0,1) is not 'collinear with the Intercept'", "1", _big_predictor, "right",
     lambda ab: (rel_close("slope", ab[0].beta["x"], ab[1].beta["x"]), rel_close("tau", ab[0].tau.to_numpy(), ab[1].tau.to_numpy()),
                 rel_close("deviance", ab[0].deviance, ab[1].deviance, 1e-8)))


def _streamed_shift(tmp: Path):
    d = hsb()[["school", "mathach", "ses"]].assign(mathach=lambda t: t["mathach"] + 1e7)
    (tmp / "parts").mkdir()
    half = len(d) // 2
    d.iloc[:half].to_parquet(tmp / "parts" / "a.parquet", index=False)
    d.iloc[half:].to_parquet(tmp / "parts" / "b.parquet", index=False)
    return ml.fit(M, tmp / "parts"), ml.fit(M, hsb())


case("1: a streamed Parquet fit of mathach + 1e7 gives the in-memory unshifted tau", "1", _streamed_shift, "right",
     lambda ab: (rel_close("tau", ab[0].tau.to_numpy(), ab[1].tau.to_numpy()), rel_close("slope", ab[0].beta["ses"], ab[1].beta["ses"])))


# ----- 2. optimizer honesty ------------------------------------------------------------------------
def growth(seed: int, P: int, s0: float, s1: float, r: float, sig: float, miss: float) -> pd.DataFrame:
    """Growth data: P persons measured at ages 30..37 (a share `miss` of visits missed); a random
    intercept (SD s0 at age 33.5) and slope (SD s1), correlation r, residual SD sig."""
    rng = np.random.default_rng(seed)
    ages = np.arange(30, 38)
    pid = np.repeat(np.arange(P), ages.size)
    age = np.tile(ages, P).astype(float)
    c = r * s0 * s1
    u = rng.multivariate_normal([0, 0], [[s0**2, c], [c, s1**2]], P)
    y = 20 + 0.8 * (age - 33.5) + u[pid, 0] + u[pid, 1] * (age - 33.5) + sig * rng.normal(size=age.size)
    keep = rng.random(age.size) > miss
    return pd.DataFrame({"id": pid, "age": age, "y": y})[keep].reset_index(drop=True)


GROWTH = {  # the second and third stop on the boundary today (15.3 and 3.8 deviance units above)
    "60 persons": dict(seed=11, P=60, s0=2.0, s1=0.5, r=0.3, sig=1.0, miss=0.15),
    "46 persons": dict(seed=33, P=46, s0=2.292718608430742, s1=0.392806627734984, r=0.12196869471500249, sig=1.9953075888975946, miss=0.09517721462828095),
    "41 persons": dict(seed=39, P=41, s0=2.5232496033840177, s1=0.18475118365519588, r=-0.6814429616930042, sig=2.874453491568766, miss=0.03489558350037205),
}


def _growth_case(label: str, method: str) -> None:
    def run(_):
        d = growth(**GROWTH[label])
        return (ml.fit("y ~ age + (age | id)", d, method=method),
                ml.fit("y ~ agec + (agec | id)", d.assign(agec=d["age"] - 33.5), method=method))

    def check(ab) -> None:
        raw, centred = ab
        assert raw.deviance <= centred.deviance + 1e-8 * abs(centred.deviance), (
            f"the uncentred fit stops {raw.deviance - centred.deviance:.4g} deviance units above the centred optimum "
            f"(converged={raw.converged}, singular={raw.singular})")
        rel_close("deviance", raw.deviance, centred.deviance, 1e-8)
        rel_close("slope", raw.beta["age"], centred.beta["agec"])
        rel_close("slope variance", raw.tau.iloc[1, 1], centred.tau.iloc[1, 1])
        rel_close("sigma2", raw.sigma2, centred.sigma2)
        assert raw.converged and centred.converged, f"converged={raw.converged}, {centred.converged}"

    case(f"2: uncentred growth model (age 30..37, random slope; {label}) reaches the centred optimum ({method})", "2", run, "right", check)


for _label in GROWTH:
    for _method in ("REML", "ML"):
        _growth_case(_label, _method)


def _assert(cond: bool, what: str) -> None:
    assert cond, what


# ----- 3. formulas ---------------------------------------------------------------------------------
def _xg():
    return gen(5, slope=False).assign(x=lambda t: t["x"] + 1.0)


case("3: I(x^2) is a square (not XOR)", "3",
     pair(lambda _: ml.fit("y ~ x + I(x^2) + (1 | g)", _xg()), lambda _: ml.fit("y ~ x + x2 + (1 | g)", _xg().assign(x2=lambda t: t["x"] ** 2))),
     "right", lambda ab: (rel_close("deviance", ab[0].deviance, ab[1].deviance, 1e-8),
                 rel_close("coefficients (sorted)", np.sort(ab[0].beta.to_numpy()), np.sort(ab[1].beta.to_numpy()))))
case("3: I(x**2) is a square", "3",
     pair(lambda _: ml.fit("y ~ x + I(x**2) + (1 | g)", _xg()), lambda _: ml.fit("y ~ x + x2 + (1 | g)", _xg().assign(x2=lambda t: t["x"] ** 2))),
     "right", lambda ab: rel_close("deviance", ab[0].deviance, ab[1].deviance, 1e-8))


def _levels3():
    d = gen(6)
    return d.assign(k=np.random.default_rng(6).integers(1, 4, len(d)))


def _dummies(d: pd.DataFrame) -> pd.DataFrame:
    return d.assign(k2=(d["k"] == 2).astype(float), k3=(d["k"] == 3).astype(float))


case("3: factor(k) of an integer column gives a dummy per level, as in R", "3",
     pair(lambda _: ml.fit("y ~ factor(k) + (1 | g)", _levels3()), lambda _: ml.fit("y ~ k2 + k3 + (1 | g)", _dummies(_levels3()))),
     "right", lambda ab: (rel_close("deviance", ab[0].deviance, ab[1].deviance, 1e-8), _assert(len(ab[0].beta) == 3, f"3 fixed effects, got {list(ab[0].beta.index)}"),
                          rel_close("coefficients (sorted)", np.sort(ab[0].beta.to_numpy()), np.sort(ab[1].beta.to_numpy()))))
case("3: I(x > 0) (TRUE/FALSE) is a 0/1 column, as in R", "3",
     pair(lambda _: ml.fit("y ~ I(x > 0) + (1 | g)", gen(7)), lambda _: ml.fit("y ~ pos + (1 | g)", gen(7).assign(pos=lambda t: (t["x"] > 0).astype(float)))),
     "right", lambda ab: (rel_close("deviance", ab[0].deviance, ab[1].deviance, 1e-8),
                          rel_close("coefficients (sorted)", np.sort(ab[0].beta.to_numpy()), np.sort(ab[1].beta.to_numpy()))))
case("3: offset(z) is an offset, as in R", "3",
     pair(lambda _: ml.fit("y ~ x + offset(z) + (1 | g)", gen(8).assign(z=lambda t: 0.3 * t["x"] ** 2)),
          lambda _: ml.fit("yz ~ x + (1 | g)", gen(8).assign(yz=lambda t: t["y"] - 0.3 * t["x"] ** 2))),
     "right", lambda ab: (rel_close("tau", ab[0].tau.to_numpy(), ab[1].tau.to_numpy()), rel_close("fixed effects", ab[0].beta.to_numpy(), ab[1].beta.to_numpy())))
case("3: poly(x, 2, raw = TRUE) is x and x^2", "3",
     pair(lambda _: ml.fit("y ~ poly(x, 2, raw = TRUE) + (1 | g)", _xg()), lambda _: ml.fit("y ~ x + x2 + (1 | g)", _xg().assign(x2=lambda t: t["x"] ** 2))),
     "right", lambda ab: (rel_close("deviance", ab[0].deviance, ab[1].deviance, 1e-8), rel_close("fixed effects", ab[0].beta.to_numpy(), ab[1].beta.to_numpy())))
case("3: a double ~", "3", lambda _: ml.fit("y ~ x ~ g + (1 | g)", gen()), "error", names=("2 '~'",), row="two `~`")
case("3: an empty ( | g)", "3", lambda _: ml.fit("y ~ x + ( | g)", gen()), "error", names=("( | g)",), row="`( | g)`")
case("3: (0 | g): a random part with no random effect", "3", lambda _: ml.fit("y ~ x + (0 | g)", gen()), "error", names=("(0 | g)",), row="`(0 | g)`")
case("3: a column named Intercept", "3", lambda _: ml.fit("y ~ Intercept + (1 | g)", gen().assign(Intercept=lambda t: t["x"] * 2)),
     "error", names=("Intercept",), row="a column named `Intercept` used in the model")
case("3: cwc() of a level-2 variable", "3", lambda _: ml.fit("mathach ~ cwc(meanses) + (1 | school)", small()),
     "error", names=("cwc(meanses)", "cgm(meanses)"), row="`cwc()` of a level-2 variable")


def _cwc_plus_raw(_):
    d = small()
    d["w"] = d["ses"] - d.groupby("school")["ses"].transform("mean")  # numpy/pandas reference centring
    return ml.fit("mathach ~ cwc(ses) + ses + (1 | school)", small()), ml.fit("mathach ~ w + ses + (1 | school)", d)


case("3: cwc(ses) + ses keeps both (within and raw)", "3", _cwc_plus_raw, "right",
     lambda ab: (_assert(list(ab[0].beta.index) == ["Intercept", "cwc(ses)", "ses"], f"terms {list(ab[0].beta.index)}"),
                 rel_close("fixed effects", ab[0].beta.to_numpy(), ab[1].beta.to_numpy())))


# ----- 4. formula text is not code -----------------------------------------------------------------
def _malicious(template: str):
    def run(tmp: Path):
        marker = tmp / "pwned"
        try:
            return ml.fit(template.format(path=str(marker)), small())
        finally:
            assert not marker.exists(), f"the formula ran code: {marker} was created"
    return run


case("4: I(__import__('os').system(...) or ses) is refused, not run", "4",
     _malicious("mathach ~ I(__import__('os').system('touch {path}') or ses) + (1 | school)"), "error", names=("__import__",))
case("4: I(np.savetxt(...) or ses) is refused, not run", "4",
     _malicious("mathach ~ I(np.savetxt('{path}', [1]) or ses) + (1 | school)"), "error", names=("savetxt",),
     row="code in a formula, e.g. `I(np.savetxt(path, [1]) or ses)`")
case("4: open() in a formula is refused", "4",
     _malicious("mathach ~ I(open('{path}', 'w').close() or ses) + (1 | school)"), "error", names=("open",))
case("4: an attribute of a column (ses.__class__) is refused", "4",
     lambda _: ml.fit("mathach ~ I(ses.__class__) + (1 | school)", small()), "error", names=("__class__",),
     row="a string, lambda, `and`/`or` or dunder name in a term")


# ----- 5. data: merged, split, misaligned ----------------------------------------------------------
def _digit_text(_):
    d = gen(9)
    k = np.random.default_rng(9).integers(1, 4, len(d))
    text = ml.fit("y ~ k + (1 | g)", d.assign(k=k.astype(str)))
    ref = ml.fit("y ~ k2 + k3 + (1 | g)", d.assign(k2=(k == 2) * 1.0, k3=(k == 3) * 1.0))
    return text, ref


case("5: a text column of digits ('1','2','3') is categorical", "5", _digit_text, "right",
     lambda ab: (_assert(len(ab[0].beta) == 3, f"3 fixed effects, got {list(ab[0].beta.index)}"), rel_close("deviance", ab[0].deviance, ab[1].deviance, 1e-8)))


def _dtype_case(name: str, convert: Callable[[pd.DataFrame], pd.DataFrame], ref: Callable[[pd.DataFrame], pd.DataFrame] = lambda d: d):
    case(f"5: {name}", "5", pair(lambda _: ml.fit(M, convert(small())), lambda _: ml.fit(M, ref(small()))), "right", both(),
         row=DTYPE_ROW)


DTYPE_ROW = 'pandas `string` / `string[pyarrow]`, nullable `Int64`/`Float64`/`boolean`, `dtype_backend="pyarrow"`, float16 columns'


_dtype_case("pandas 'string' ids", lambda d: d.assign(school=d["school"].astype("string")))
_dtype_case("'string[pyarrow]' ids", lambda d: d.assign(school=d["school"].astype("string[pyarrow]")))
_dtype_case("nullable Int64 ids", lambda d: d.assign(school=d["school"].astype(int).astype("Int64")))
_dtype_case("nullable Int64 predictor with a missing value (dropped, as NaN)",
            lambda d: d.assign(sector=d["sector"].astype("Int64").where(d.index != 7, pd.NA), ses=d["sector"].astype("Int64").where(d.index != 7, pd.NA)),
            lambda d: d.assign(ses=d["sector"].astype(float).where(d.index != 7, np.nan)))
_dtype_case("nullable boolean predictor", lambda d: d.assign(ses=(d["ses"] > 0).astype("boolean")), lambda d: d.assign(ses=(d["ses"] > 0).astype(float)))
_dtype_case('dtype_backend="pyarrow" table', lambda d: d.convert_dtypes(dtype_backend="pyarrow"))
_dtype_case("float16 predictor", lambda d: d.assign(ses=d["ses"].astype(np.float16)), lambda d: d.assign(ses=d["ses"].astype(np.float16).astype(float)))


def _duplicate_columns(_):
    d = small()
    d = pd.concat([d, d[["ses"]]], axis=1)
    return ml.fit(M, d)


case("5: duplicate column names", "5", _duplicate_columns, "error", names=("'ses'",), row="duplicate column names")


def _spss_shared_label(tmp: Path):
    import pyreadstat

    d = small()
    codes = {s: i + 1 for i, s in enumerate(sorted(d["school"].unique()))}
    d["school"] = d["school"].map(codes).astype(float)
    labels = {float(c): f"School {c}" for c in codes.values()}
    labels[2.0] = labels[1.0]  # two schools share a label
    pyreadstat.write_sav(d, tmp / "s.sav", variable_value_labels={"school": labels})
    return ml.fit(M, tmp / "s.sav"), len(codes)


case("5: SPSS ids are taken by code, not by label (two schools sharing a label stay two)", "5", _spss_shared_label, "right",
     lambda r: _assert(r[0].n_groups == r[1], f"{r[0].n_groups} units, the file has {r[1]}"), row="SPSS/Stata codes sharing a value label")


def _blank_ids(_):
    d = small()
    d["school"] = d["school"].astype(object)
    d.loc[[0, 50, 51], "school"] = ""
    d.loc[[100], "school"] = "  "
    blank = d.index.isin([0, 50, 51, 100])
    return ml.fit(M, d), ml.fit(M, d[~blank])


case("5: blank ids are missing (reported), not one unit", "5", _blank_ids, "right",
     lambda ab: (_assert(ab[0].n_groups == ab[1].n_groups and ab[0].n_obs == ab[1].n_obs, f"{ab[0].n_groups} units / {ab[0].n_obs} rows vs {ab[1].n_groups} / {ab[1].n_obs}"),
                 rel_close("deviance", ab[0].deviance, ab[1].deviance, 1e-8)), row="blank ids")


def _residuals_aligned(_):
    d = small()
    d.index = np.arange(1000, 1000 + len(d))[::-1]  # an index that is not 0..n-1
    d.loc[d.index[[3, 10, 200]], "ses"] = np.nan
    fit = ml.fit(M, d)
    d["r"] = fit.residuals(level=1)["resid"]
    kept = d.dropna(subset=["ses"])
    u = fit.ranef.iloc[:, 0]
    want = kept["mathach"] - fit.beta["Intercept"] - fit.beta["ses"] * kept["ses"] - kept["school"].astype(str).map(u).to_numpy()
    return d, kept.index, want


case("5: level-1 residuals carry the input's row index (df['r'] = ... is right after dropped rows)", "5", _residuals_aligned, "right",
     lambda r: (_assert(r[0]["r"].loc[~r[0].index.isin(r[1])].isna().all(), "dropped rows got a residual"),
                rel_close("residuals", r[0]["r"].loc[r[1]].to_numpy(), r[2].to_numpy())),
     row="assigning row-level outputs back after rows were dropped")


def _fitted_aligned(_):
    d = small().sample(frac=1.0, random_state=3)  # shuffled: index out of order
    fit = ml.fit(M, d)
    res = fit.residuals(level=1)
    return res, d


case("5: level-1 outputs are indexed by the input rows (shuffled input)", "5", _fitted_aligned, "right",
     lambda r: (_assert(list(r[0].index) == list(r[1].index), "index of residuals(level=1) is not the input's"),
                rel_close("outcome column", r[0]["mathach"].to_numpy(), r[1]["mathach"].to_numpy(), 0)))


def _level2_join_ids(_):
    """Ids normalised the same way in a plain fit and in a level-2 join (numbers in one table, text
    in the other)."""
    d = small()
    l1 = d[["school", "mathach", "ses"]].assign(school=lambda t: t["school"].astype(int))
    l2 = d[["school", "meanses"]].drop_duplicates("school")
    return ml.fit("mathach ~ ses + meanses + (1 | school)", l1, level2=l2), ml.fit("mathach ~ ses + meanses + (1 | school)", d)


case("5: numeric ids joined to text ids give the one-table fit", "5", _level2_join_ids, "right", both(),
     row='ids 12 / 12.0 / "12" / " 12 "')


# ----- 6. degenerate data --------------------------------------------------------------------------
def _exact(_):
    d = gen(10).assign(score=lambda t: 1 + 2 * t["x"])
    return ml.fit("score ~ x + (1 | g)", d)


case("6: an exact fit (score = 1 + 2x)", "6", _exact, "error", names=("score",))
case("6: an outcome times 1e-200", "6", lambda _: ml.fit(M, small().assign(mathach=lambda t: t["mathach"] * 1e-200)), "error", names=("mathach",))
case("6: the outcome among the predictors (score ~ score + x)", "6",
     lambda _: ml.fit("score ~ score + x + (1 | g)", gen().rename(columns={"y": "score"})), "error", names=("score",),
     row="the outcome among the predictors")
case("6: every unit has one row", "6",
     lambda _: ml.fit("y ~ x + (1 | school)", gen(12).assign(school=lambda t: np.arange(len(t)))), "error", names=("'school'", "single row"),
     row="every unit of one row")
case("6: a 0/1 outcome fitted by a linear model warns", "6",
     lambda _: ml.fit("passed ~ ses + (1 | school)", small().assign(passed=lambda t: (t["mathach"] > 13).astype(int))), "warning", names=("passed",),
     row="a 0/1 or count outcome")
case("6: a count outcome fitted by a linear model warns", "6",
     lambda _: ml.fit("visits ~ x + (1 | g)", gen(13).assign(visits=np.random.default_rng(13).poisson(1.0, len(gen(13))))), "warning", names=("visits",))
case("6: a text weight column", "6",
     lambda _: ml.fit(M, small().assign(wt=lambda t: np.where(t.index % 2 == 0, "1", "two")), method="ML", sampling_weights="wt"),
     "error", names=("'wt'", "not numeric"), row="text weight column")
case("6: bootstrap(n_boot=-5)", "6", lambda _: ml.fit(M, small()).bootstrap(n_boot=-5, progress=False), "error", names=("n_boot",))
case("6: backticked names with spaces", "6",
     pair(lambda _: ml.fit("`math ach` ~ `s e s` + (1 | school)", small().rename(columns={"mathach": "math ach", "ses": "s e s"})),
          lambda _: ml.fit(M, small())),
     "right", lambda ab: (rel_close("deviance", ab[0].deviance, ab[1].deviance, 1e-8), rel_close("tau", ab[0].tau.to_numpy(), ab[1].tau.to_numpy())))


def _empty_parquet(tmp: Path):
    (tmp / "empty.parquet").write_bytes(b"")
    return ml.fit(M, tmp / "empty.parquet")


def _truncated_parquet(tmp: Path):
    small().to_parquet(tmp / "full.parquet", index=False)
    raw = (tmp / "full.parquet").read_bytes()
    (tmp / "cut.parquet").write_bytes(raw[: len(raw) // 2])
    return ml.fit(M, tmp / "cut.parquet")


def _schema_change(tmp: Path):
    (tmp / "parts").mkdir()
    d = small()[["school", "mathach", "ses"]]
    d.iloc[:300].to_parquet(tmp / "parts" / "part1.parquet", index=False)
    d.iloc[300:].assign(ses=lambda t: t["ses"].map("{:.3f}".format)).to_parquet(tmp / "parts" / "part2.parquet", index=False)
    return ml.fit(M, tmp / "parts")


def _schema_missing_column(tmp: Path):
    (tmp / "parts").mkdir()
    d = small()[["school", "mathach", "ses"]]
    d.iloc[:300].to_parquet(tmp / "parts" / "part1.parquet", index=False)
    d.iloc[300:].drop(columns="ses").to_parquet(tmp / "parts" / "part2.parquet", index=False)
    return ml.fit(M, tmp / "parts")


case("6: an empty (0-byte) Parquet file", "6", _empty_parquet, "error", names=("empty.parquet",))
case("6: a truncated Parquet file", "6", _truncated_parquet, "error", names=("cut.parquet",), row="a truncated Parquet file")
case("6: a column's type changes between streamed Parquet files", "6", _schema_change, "error", names=("part2.parquet", "ses"),
     row="a schema change between streamed Parquet files")
case("6: a column is missing from one streamed Parquet file", "6", _schema_missing_column, "error", names=("part2.parquet", "ses"))


# ----- 7. weights ----------------------------------------------------------------------------------
case("7: a plain weights='w' string is ambiguous: the message names both kinds", "7",
     lambda _: ml.fit(M, small().assign(w=2.0), method="ML", weights="w"), "error", names=("sampling_weights", "precision_weights"),
     row='`weights="w"`')


def _precision_constant(_):
    d = small().assign(w=4.0)
    return ml.fit(M, d, precision_weights="w"), ml.fit(M, small())


# lmer's weights=: Var(e_i) = sigma2 / w_i. The rows' residual variance is what the data say (the
# unweighted fit's sigma2_0), so with every w_i = 4 the fitted sigma2 is 4 sigma2_0, while tau and beta
# (which depend on the weights only through their ratios) stay (lmer checked in
# tests/test_precision_weights.py::test_scaling_the_weights_scales_sigma2_only).
case("7: precision weights all equal to 4: sigma2 x 4 (lmer's weights=: Var(e_i) = sigma2 / w_i), tau and beta unchanged", "7",
     _precision_constant, "right",
     lambda ab: (rel_close("sigma2 / 4", ab[0].sigma2 / 4, ab[1].sigma2), rel_close("tau", ab[0].tau.to_numpy(), ab[1].tau.to_numpy()),
                 rel_close("fixed effects", ab[0].beta.to_numpy(), ab[1].beta.to_numpy())))


def _sampling_ones(_):
    d = small().assign(w=1.0)
    return ml.fit(M, d, method="ML", sampling_weights="w"), ml.fit(M, small(), method="ML")


case("7: sampling weights all 1 give the unweighted ML fit", "7", _sampling_ones, "right",
     lambda ab: (rel_close("tau", ab[0].tau.to_numpy(), ab[1].tau.to_numpy()), rel_close("fixed effects", ab[0].beta.to_numpy(), ab[1].beta.to_numpy())))


# ----- 9. what users read --------------------------------------------------------------------------
def _wald_bounds(_):
    return ml.fit("mathach ~ cses + (cses | school)", hsb()).confint("wald")


def _check_wald(ci: pd.DataFrame) -> None:
    for name, row in ci.iterrows():
        if str(name).startswith(("sd_", "sigma")):
            if row["estimate"] == 0:  # on the boundary: no Wald interval (NaN, as lme4's NA; docs)
                assert np.isnan(row["ci_low"]) and np.isnan(row["ci_high"]), f"{name}: an interval at a zero SD"
                continue
            assert row["ci_low"] >= 0, f"{name}: lower bound {row['ci_low']} < 0"
        if str(name).startswith("cor_"):
            if abs(row["estimate"]) == 1:  # a singular fit: no Wald interval (NaN, as lme4's NA)
                assert np.isnan(row["ci_low"]) and np.isnan(row["ci_high"]), f"{name}: an interval at |cor| = 1"
                continue
            assert -1 <= row["ci_low"] and row["ci_high"] <= 1, f"{name}: [{row['ci_low']}, {row['ci_high']}] outside [-1, 1]"


def _wald_bounds_small(_):
    d = gen(14, J=12, lo=2, hi=5, slope=True)
    return ml.fit("y ~ x + (x | g)", d).confint("wald")


case("9: Wald intervals of SDs and correlations stay inside their bounds (HSB, cses slope)", "9", _wald_bounds, "right", _check_wald)
case("9: Wald intervals of SDs and correlations stay inside their bounds (12 small units)", "9", _wald_bounds_small, "right", _check_wald)
case("9: a group-centred term is named cwc(ses)", "9", lambda _: ml.fit("mathach ~ cwc(ses) + (1 | school)", small()), "right",
     lambda f: _assert("cwc(ses)" in f.beta.index, f"terms {list(f.beta.index)}"))


# ----- docs/bad-input.md -----------------------------------------------------------------------------
def _write(tmp: Path, name: str, text: str) -> Path:
    (tmp / name).write_text(text)
    return tmp / name


case("bad-input: empty file", "bad-input", lambda t: ml.fit(M, _write(t, "empty.csv", "")), "error", names=("empty.csv",))
case("bad-input: file with a header only", "bad-input", lambda t: ml.read(_write(t, "header.csv", "school,mathach,ses\n")), "error", names=("header.csv",))
case("bad-input: unknown format", "bad-input", lambda t: ml.read(_write(t, "data.xlsx", "PK")), "error", names=("data.xlsx", ".xlsx"))
case("bad-input: missing file", "bad-input", lambda t: ml.read(t / "nothere.csv"), "error", names=("nothere.csv",))
case("bad-input: unreadable file", "bad-input", lambda t: ml.read(_write(t, "broken.sav", "this is not an SPSS file" * 10)), "error", names=("broken.sav",))


def _mixed_ids(_):
    d = small()
    d["school"] = d["school"].astype(object)
    d.loc[:9, "school"] = 1224
    return ml.fit(M, d)


case("bad-input: id column of mixed types", "bad-input", _mixed_ids, "error", names=("school",))
case("bad-input: all values missing in a predictor", "bad-input", lambda _: ml.fit(M, small().assign(ses=np.nan)), "error", names=("ses",))


def _inf(_):
    d = small()
    d.loc[5, "ses"] = np.inf
    return ml.fit(M, d)


case("bad-input: infinite values", "bad-input", _inf, "error", names=("ses", "row 5"))
case("bad-input: constant predictor", "bad-input", lambda _: ml.fit(M, small().assign(ses=2.0)), "error", names=("ses",))
case("bad-input: outcome with one value", "bad-input", lambda _: ml.fit(M, small().assign(mathach=7.0)), "error", names=("mathach",))


def _one_row_group(_):
    extra = pd.DataFrame({"school": ["X1"], "mathach": [10.0], "ses": [0.1], "sector": [0], "meanses": [0.1]})
    return ml.fit(M, pd.concat([small(), extra], ignore_index=True)), ml.fit(M, small())


case("bad-input: a group of one row (allowed, reported)", "bad-input", _one_row_group, "right",
     lambda ab: (_assert(ab[0].n_groups == ab[1].n_groups + 1, "the unit of one row is a unit"),
                 _assert("X1" in str(ab[0].data_report), "the data report lists X1")))


def _text_in_numbers(_):
    d = small()
    d["ses"] = d["ses"].astype(object)
    d.loc[[3, 9], "ses"] = "n/a"
    d.loc[12, "ses"] = "."
    return ml.fit(M, d)


case("bad-input: non-numeric strings in a numeric column", "bad-input", _text_in_numbers, "error", names=("ses", "n/a", "row 12"))
case("bad-input: not a table", "bad-input", lambda _: ml.fit(M, 42), "error", names=("int",))


def _l1l2():
    d = hsb()
    return d[["school", "mathach", "ses"]].copy(), d[["school", "meanses", "sector"]].drop_duplicates("school").reset_index(drop=True)


M2 = "mathach ~ meanses + (1 | school)"


def _dup_l2(_):
    l1, l2 = _l1l2()
    return ml.fit(M2, l1, level2=pd.concat([l2, l2.iloc[:1]]))


def _unmatched_l1(_):
    l1, l2 = _l1l2()
    return ml.fit(M2, l1, level2=l2[~l2.school.isin(["1224", "1288"])])


def _extra_l2(_):
    l1, l2 = _l1l2()
    extra = pd.concat([l2, pd.DataFrame({"school": ["9999"], "meanses": [0.1], "sector": [1]})])
    return ml.fit(M2, l1, level2=extra), ml.fit(M2, hsb())


def _conflict(_):
    l1, l2 = _l1l2()
    l1["meanses"] = hsb()["meanses"] + (hsb()["school"] == "1296") * 0.5
    return ml.fit(M2, l1, level2=l2)


def _missing_l2(_):
    l1, l2 = _l1l2()
    l2.loc[l2.school.isin(["1224", "1288"]), "meanses"] = np.nan
    return ml.fit(M2, l1, level2=l2)


def _varying_l2(_):
    d = small().assign(x=lambda t: np.arange(len(t), dtype=float))
    return ml.fit_levels("mathach ~ 1", {"Intercept": "x + u"}, group="school", data=d)


def _reader_missing(tmp: Path):
    import pyreadstat

    pyreadstat.write_sav(small(), tmp / "s.sav")
    saved = sys.modules.get("pyreadstat")
    sys.modules["pyreadstat"] = None  # as if not installed
    try:
        return ml.read(tmp / "s.sav")
    finally:
        sys.modules["pyreadstat"] = saved


case("bad-input: duplicate ids in the level-2 table", "bad-input", _dup_l2, "error", names=("1224",))
case("bad-input: level-1 ids with no level-2 row", "bad-input", _unmatched_l1, "error", names=("1224", "1288"))
case("bad-input: level-2 rows with no level-1 rows (allowed, reported)", "bad-input", _extra_l2, "right",
     lambda ab: (_assert("9999" in str(ab[0].data_report), "the data report lists 9999"), same_model(ab[0], ab[1])))
case("bad-input: a variable in both tables with different values", "bad-input", _conflict, "error", names=("meanses", "1296"))
case("bad-input: missing level-2 values", "bad-input", _missing_l2, "error", names=("1224", "meanses"))
case("bad-input: a level-2 predictor (level equations) that varies within units", "bad-input", _varying_l2, "error", names=("x",))
case("bad-input: a reader that is not installed", "bad-input", _reader_missing, "error", names=("pyreadstat", "pip install pyreadstat"))


# ----- docs/bad-input.md: the rows added by issue 11 ---------------------------------------------------
# (rows reproduced by a case of an issue item above name that case's `row` and are not repeated here)
def _formula(text: str) -> Callable[[Path], object]:
    return lambda _: ml.fit(text, small())


_TERM_ROW = "a string, lambda, `and`/`or` or dunder name in a term"
case(f"bad-input: {_TERM_ROW} (a string)", "bad-input", _formula("mathach ~ I('a') + (1 | school)"), "error", names=("'a'", "I('a')"))
case(f"bad-input: {_TERM_ROW} (a lambda)", "bad-input", _formula("mathach ~ I((lambda: 1)() + ses) + (1 | school)"), "error",
     names=("lambda", "I((lambda: 1)() + ses)"))
case(f"bad-input: {_TERM_ROW} (and)", "bad-input", _formula("mathach ~ I(ses and sector) + (1 | school)"), "error",
     names=("'and'", "I(ses and sector)"))
case(f"bad-input: {_TERM_ROW} (or)", "bad-input", _formula("mathach ~ I(ses or sector) + (1 | school)"), "error",
     names=("'or'", "I(ses or sector)"))
case("bad-input: the outcome among the predictors (in the random part)", "bad-input",
     _formula("mathach ~ ses + (mathach | school)"), "error", names=("'mathach'",))
case("bad-input: a transform that is not finite (`log(ses)` with ses <= 0)", "bad-input", _formula("mathach ~ log(ses) + (1 | school)"),
     "error", names=("'log(ses)'",))
case("bad-input: a data column with a derived column's name", "bad-input",
     lambda _: ml.fit("mathach ~ cwc(ses) + (1 | school)", small().assign(**{"cwc(ses)": 1.0})), "error", names=("'cwc(ses)'", "rename"))


def _streamed(formula: str) -> Callable[[Path], object]:
    def run(tmp: Path):
        small().to_parquet(tmp / "d.parquet", index=False)
        return ml.fit(formula, tmp / "d.parquet", stream=True)
    return run


_STREAM_ROW = "`scale()`, orthogonal `poly()` or `offset()` in a streamed fit"
case(f"bad-input: {_STREAM_ROW} (scale)", "bad-input", _streamed("mathach ~ scale(ses) + (1 | school)"), "error", names=("'scale(ses)'", "cgm("))
case(f"bad-input: {_STREAM_ROW} (poly)", "bad-input", _streamed("mathach ~ poly(ses, 2) + (1 | school)"), "error",
     names=("'poly(ses, 2)'", "raw = TRUE"))
case(f"bad-input: {_STREAM_ROW} (offset)", "bad-input", _streamed("mathach ~ ses + offset(sector) + (1 | school)"), "error",
     names=("offset", "outcome"))


# precision weights (lme4's weights=), built as in tests/test_precision_weights.py
def _w() -> pd.DataFrame:
    d = small()
    d["w"] = 1 + (np.arange(len(d)) % 5) / 2
    return d


def _w_with(rows: list[int], value: float) -> pd.DataFrame:
    d = _w()
    d.loc[rows, "w"] = value
    return d


def _missing_weight(_):
    d = _w_with([1, 2], np.nan)
    return ml.fit(M, d, precision_weights="w"), ml.fit(M, d.drop(index=[1, 2]), precision_weights="w")


case("bad-input: precision weight 0", "bad-input", lambda _: ml.fit(M, _w_with([2, 10], 0.0), precision_weights="w"), "error",
     names=("'w'", "rows 2, 10", "drop those rows"))
case("bad-input: negative precision weight", "bad-input", lambda _: ml.fit(M, _w_with([7], -1.0), precision_weights="w"), "error",
     names=("'w'", "row 7"))
case("bad-input: missing precision weight (allowed: dropped listwise, reported)", "bad-input", _missing_weight, "right",
     lambda ab: (_assert(dict(ab[0].data_report.dropped_by_variable) == {"w": 2}, f"data report: {dict(ab[0].data_report.dropped_by_variable)}"),
                 same_model(ab[0], ab[1])))
case("bad-input: text weight column (precision)", "bad-input",
     lambda _: ml.fit(M, _w().assign(w=lambda t: t["w"].map(lambda v: f"w{v}")), precision_weights="w"), "error",
     names=("precision weight column 'w'", "not numeric", "pd.to_numeric"))
case("bad-input: precision weight column not in the data", "bad-input", lambda _: ml.fit(M, _w(), precision_weights="wt"), "error",
     names=("'wt'", "'w'"))
case("bad-input: both sampling_weights= and precision_weights=", "bad-input",
     lambda _: ml.fit(M, _w(), method="ML", sampling_weights="w", precision_weights="w"), "error", names=("sampling_weights=", "precision_weights="))
case("bad-input: precision_weights= given an array/Series", "bad-input", lambda _: ml.fit(M, _w(), precision_weights=_w()["w"]), "error",
     names=("precision_weights", "Series", "column"))
for _how in (dict(df="kenward-roger"), dict(se="CR2"), dict(se="CR0", df="bell-mccaffrey")):
    case(f"bad-input: Kenward-Roger, CR2 or Bell-McCaffrey with precision weights ({_how})", "bad-input",
         lambda _, how=_how: ml.fit(M, _w(), precision_weights="w").coef_table(**how), "error", names=("precision weights", "satterthwaite"))
case("bad-input: `ml.compare` of fits with different weights", "bad-input",
     lambda _: ml.compare(ml.fit("mathach ~ 1 + (1 | school)", _w(), "ML"), ml.fit(M, _w(), "ML", precision_weights="w")), "error",
     names=("different weights", "'w'"))


# the compiled-code cache (item 8): only the folder checks, nothing is compiled
def _cache_env(**env: str | None):
    """A context in which cache.cache_dir() sees these variables (None: unset), restored after."""
    import contextlib
    import os

    @contextlib.contextmanager
    def ctx():
        keys = ("MULTILEVEL_CACHE_DIR", "XDG_CACHE_HOME", "HOME")
        saved = {k: os.environ.get(k) for k in keys}
        try:
            for k in keys:
                if k in env:
                    if env[k] is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = env[k]
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return ctx()


def _refused_cache(make: Callable[[Path], Path], uid_offset: int = 0):
    """unsafe_reason() of the folder, and what cache_dir() does when MULTILEVEL_CACHE_DIR names it:
    (reason, chosen folder, the RuntimeWarnings' texts)."""
    def run(tmp: Path):
        import os

        from multilevel.numerics import cache

        folder = make(tmp)
        reason = cache.unsafe_reason(str(folder), os.getuid() + uid_offset)
        with warnings.catch_warnings(record=True) as caught, _cache_env(MULTILEVEL_CACHE_DIR=str(folder)):
            warnings.simplefilter("always")
            chosen = cache.cache_dir() if uid_offset == 0 else None
        return reason, chosen, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)], folder, uid_offset
    return run


def _check_refused(what: str) -> Callable[[tuple], None]:
    def check(r) -> None:
        reason, chosen, warned, folder, uid_offset = r
        _assert(reason is not None and what in reason, f"unsafe_reason: {reason!r} (wanted {what!r})")
        if uid_offset == 0:  # as this user: no cache at all, and a warning naming the folder
            _assert(chosen is None, f"cache_dir() chose {chosen}")
            _assert(any(f"does not cache compiled code in {folder}" in w for w in warned), f"warnings: {warned}")
    return check


def _world_writable(tmp: Path) -> Path:
    (tmp / "shared").mkdir()
    (tmp / "shared").chmod(0o777)
    return tmp / "shared"


def _symlink(tmp: Path) -> Path:
    (tmp / "real").mkdir(mode=0o700)
    (tmp / "link").symlink_to(tmp / "real")
    return tmp / "link"


def _open_parent(tmp: Path) -> Path:
    (tmp / "open").mkdir()
    (tmp / "open").chmod(0o777)
    (tmp / "open" / "cache").mkdir(mode=0o700)
    return tmp / "open" / "cache"


def _private(tmp: Path) -> Path:
    (tmp / "mine").mkdir(mode=0o700)
    return tmp / "mine"


_CACHE_ROW = "MULTILEVEL_CACHE_DIR"
case(f"bad-input: {_CACHE_ROW} (a world-writable folder)", "bad-input", _refused_cache(_world_writable), "right",
     _check_refused("other users can write"))
case(f"bad-input: {_CACHE_ROW} (a symbolic link)", "bad-input", _refused_cache(_symlink), "right", _check_refused("symbolic link"))
case(f"bad-input: {_CACHE_ROW} (under a folder others can write)", "bad-input", _refused_cache(_open_parent), "right",
     _check_refused("writable by other users"))
case(f"bad-input: {_CACHE_ROW} (a folder of another user)", "bad-input", _refused_cache(_private, uid_offset=1), "right",
     _check_refused("another user"))


def _no_writable_home(tmp: Path):
    """HOME (and XDG_CACHE_HOME) unusable: the cache goes to <tmp>/multilevel-<uid>, made 0700."""
    import os
    import stat
    import tempfile

    from multilevel.numerics import cache

    (tmp / "home").write_text("")  # a home that is a file: nothing can be made under it
    (tmp / "tmp").mkdir()
    (tmp / "tmp").chmod(0o1777)  # as /tmp
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp / "tmp")
    try:
        with warnings.catch_warnings(record=True) as caught, _cache_env(MULTILEVEL_CACHE_DIR=None, XDG_CACHE_HOME=None, HOME=str(tmp / "home")):
            warnings.simplefilter("always")
            chosen = cache.cache_dir()
    finally:
        tempfile.tempdir = saved
    want = tmp / "tmp" / f"multilevel-{os.getuid()}"
    mode = stat.S_IMODE(want.stat().st_mode) if want.exists() else None
    return chosen, str(want), mode, [str(w.message) for w in caught]


case("bad-input: no writable home and a read-only install (allowed: cached in <tmp>/multilevel-<uid>)", "bad-input", _no_writable_home, "right",
     lambda r: (_assert(r[0] == r[1], f"cache_dir() = {r[0]}, wanted {r[1]}"), _assert(r[2] == 0o700, f"mode {r[2]!r}"),
                _assert(not r[3], f"warnings: {r[3]}")))


# plots without their default predictors (tests/test_plot_defaults.py)
case('bad-input: `fit.plot("eb")` on a model without a level-2 predictor', "bad-input",
     lambda _: ml.fit(HSB_M1, small()).plot("eb"), "error", names=("level-2 predictor", "variable="))
case('bad-input: `fit.plot("model")` on a model without a level-1 predictor', "bad-input",
     lambda _: ml.fit(HSB_M1, small()).plot("model"), "error", names=("level-1 predictor", "x="))


# text that looks like numbers
def _diet() -> pd.DataFrame:
    """A level-1 text column whose values look like numbers ("1".."4"), as ChickWeight's Diet."""
    d = small()
    d["diet"] = np.random.default_rng(5).choice(["1", "2", "3", "4"], size=len(d))
    return d


def _diet_text(_):
    d = _diet()
    fit = ml.fit("mathach ~ ses + diet + (1 | school)", d)
    dummies = d.assign(**{f"d{k}": (d["diet"] == k).astype(float) for k in "234"})  # R's treatment contrasts, by hand
    return fit, ml.fit("mathach ~ ses + d2 + d3 + d4 + (1 | school)", dummies)


case("bad-input: numbers written as text (every value a number, a text column: a factor, as in R)", "bad-input", _diet_text, "right",
     lambda ab: (_assert(len(ab[0].beta) == 5, f"5 fixed effects (Intercept, ses, diet2..4), got {list(ab[0].beta.index)}"),
                 rel_close("deviance", ab[0].deviance, ab[1].deviance, 1e-8),
                 rel_close("fixed effects", ab[0].beta.to_numpy(), ab[1].beta.to_numpy()),
                 _assert(any("'diet'" in n and "factor" in n and "pd.to_numeric" in n for n in ab[0].data_report.notes),
                         f"data report notes: {ab[0].data_report.notes}")))
case("bad-input: numbers written as text with many values (a numeric column saved as text)", "bad-input",
     lambda _: ml.fit(M, small().assign(ses=lambda t: t["ses"].astype(str))), "error", names=("'ses'", "pd.to_numeric(df['ses'])"))


def _some_as_text(_):
    d = small()
    ses = d["ses"].astype(object)
    ses.iloc[[2, 5]] = ses.iloc[[2, 5]].map(repr)  # '0.123' beside floats
    return ml.fit(M, d.assign(ses=ses)), ml.fit(M, d)


case("bad-input: an object column of numbers, some written as text (allowed: read as numbers, reported)", "bad-input", _some_as_text, "right",
     lambda ab: (same_model(ab[0], ab[1]), _assert(any("'ses' mixes numbers and numbers written as text" in n for n in ab[0].data_report.notes),
                                                   f"data report notes: {ab[0].data_report.notes}")))
case("bad-input: an outcome written as text", "bad-input", lambda _: ml.fit(M, small().assign(mathach=lambda t: t["mathach"].astype(str))),
     "error", names=("'mathach'", "pd.to_numeric(df['mathach'])"))


def _float64_na(_):
    d = small()
    d.loc[[4, 40, 400], "ses"] = np.nan
    return ml.fit(M, d.assign(ses=d["ses"].astype("Float64"))), ml.fit(M, d)


case(f"bad-input: {DTYPE_ROW} (nullable Float64 with pd.NA)", "bad-input", _float64_na, "right",
     lambda ab: (same_model(ab[0], ab[1]),
                 _assert(dict(ab[0].data_report.dropped_by_variable) == {"ses": 3}, f"data report: {dict(ab[0].data_report.dropped_by_variable)}")))


# ids
def _missing_ids(_):
    d = small()
    d["school"] = d["school"].astype(object)
    d.loc[[4, 40], "school"] = np.nan
    return ml.fit(M, d), ml.fit(M, d.drop(index=[4, 40]))


case("bad-input: missing ids (allowed: dropped, as lme4 drops them)", "bad-input", _missing_ids, "right",
     lambda ab: (same_model(ab[0], ab[1]), _assert(ab[0].n_obs == ab[1].n_obs == len(small()) - 2, f"rows used {ab[0].n_obs}"),
                 _assert(dict(ab[0].data_report.dropped_by_variable) == {"school": 2}, f"data report: {dict(ab[0].data_report.dropped_by_variable)}")))


def _id_forms(_):
    """The unit 1224 written 1224, 1224.0 and ' 1224 ': one unit in a plain fit and in a level-2 join."""
    d = small()
    as_int = d.assign(school=d["school"].astype(int))
    as_float = d.assign(school=d["school"].astype(float))
    padded = d.assign(school=" " + d["school"] + " ")
    l2 = d[["school", "meanses"]].drop_duplicates("school")
    f2 = "mathach ~ ses + meanses + (1 | school)"
    fits = [ml.fit(f2, x) for x in (d, as_int, as_float, padded)]
    fits.append(ml.fit(f2, as_float.drop(columns="meanses"), level2=l2.assign(school=" " + l2["school"] + " ")))
    fits.append(ml.fit(f2, padded.drop(columns="meanses"), level2=l2.assign(school=l2["school"].astype(float))))
    return fits


case('bad-input: ids 12 / 12.0 / "12" / " 12 " (one unit in a plain fit and in a level-2 join)', "bad-input", _id_forms, "right",
     lambda fits: [(_assert(f.design.group_labels == fits[0].design.group_labels, f"fit {i}: units {f.design.group_labels[:3]}..."),
                    same_model(f, fits[0], what=f"fit {i}")) for i, f in enumerate(fits[1:], 1)])


# Parquet
def _streamed_parts(tmp: Path, second: Callable[[Path], None]):
    (tmp / "parts").mkdir()
    small().iloc[:300].to_parquet(tmp / "parts" / "a.parquet", index=False)
    second(tmp / "parts" / "b.parquet")
    return ml.fit(M, tmp / "parts", stream=True)


def _cut_bytes(path: Path) -> None:
    small().iloc[300:].to_parquet(path, index=False)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


case("bad-input: a truncated Parquet file (among streamed files)", "bad-input", lambda t: _streamed_parts(t, _cut_bytes), "error",
     names=("b.parquet", "truncated"))
case("bad-input: an empty Parquet file among streamed files", "bad-input", lambda t: _streamed_parts(t, lambda p: p.write_bytes(b"")), "error",
     names=("b.parquet", "empty"))



# ----- the second probe's data-handling rows (tests/test_probe_fixes_b.py has the detailed tests) ------
def _sector_text_fit():
    d = small().assign(sector=lambda t: t["sector"].map({0: "public", 1: "catholic"}))
    return ml.fit("mathach ~ sector * cwc(ses) + (1 | school)", d)


case('bad-input: `fit.plot("model", lines=...)` not a dict, a single value, a level that is not one, or quartiles of a text factor',
     "bad-input", lambda _: _sector_text_fit().plot("model", x="cwc(ses)", lines={"sector": ["publc"]}), "error",
     names=("'publc'", "'sector'", "'public'"))
case("bad-input: an unknown plot option", "bad-input", lambda _: ml.fit(M, small()).plot("qq", colour="red"), "error",
     names=("'colour'", "'qq'"))
case("bad-input: unit ids that are dates, durations, booleans or a category of numbers (dates)", "bad-input",
     pair(lambda _: ml.fit("y ~ x + (1 | g)", gen().assign(g=lambda t: pd.to_datetime(t["g"], unit="D"))),
          lambda _: ml.fit("y ~ x + (1 | g)", gen())), "right", both())
case("bad-input: ids, a predictor or the outcome holding lists/tuples", "bad-input",
     lambda _: ml.fit("y ~ x + (1 | g)", gen().assign(g=lambda t: [(a, 1) for a in t["g"]])), "error", names=("'g'", "tuple"))
case("bad-input: complex numbers in a predictor or the outcome", "bad-input",
     lambda _: ml.fit("y ~ x + (1 | g)", gen().assign(x=lambda t: t["x"] + 1j)), "error", names=("'x'", "complex"))
case("bad-input: a date/time or duration predictor", "bad-input",
     lambda _: ml.fit("y ~ x + (1 | g)", gen().assign(x=lambda t: pd.date_range("2020", periods=len(t)))), "error",
     names=("'x'", "date/time"))
case("bad-input: a True/False outcome", "bad-input",
     pair(lambda _: ml.fit("y ~ x + (1 | g)", gen().assign(y=lambda t: t["y"] > 1)),
          lambda _: ml.fit("y ~ x + (1 | g)", gen().assign(y=lambda t: (t["y"] > 1).astype(float)))), "right", both())
case("bad-input: the grouping factor (only as the index)", "bad-input", lambda _: ml.fit(M, small().set_index("school")), "error",
     names=("'school'", "index", "reset_index()"))


def _big_float_ids(_):
    d = gen()
    return ml.fit("y ~ x + (1 | g)", d.assign(g=(d["g"] + 1224) * 1e14)), ml.fit("y ~ x + (1 | g)", d)


case("bad-input: whole-number float ids beyond 2**53", "bad-input", _big_float_ids, "right",
     lambda ab: (same_model(ab[0], ab[1]),
                 _assert(list(ab[0].ranef.index) == [(int(i) + 1224) * 10**14 for i in ab[1].ranef.index],
                         f"labels {list(ab[0].ranef.index)[:3]}")))
case("bad-input: level-2 equations given as one string", "bad-input",
     lambda _: ml.fit_levels("mathach ~ 1 + cwc(ses)", "sector + u", group="school", data=small()), "error",
     names=("level2", "'Intercept'", "'cwc(ses)'"))
case("bad-input: a data column named `u`/`U`", "bad-input",
     lambda _: ml.fit_levels("mathach ~ 1 + cwc(ses)", {"Intercept": "sector + u"}, group="school",
                             data=small().assign(u=lambda t: t["meanses"])), "error", names=("'u'", "`u`", "'Intercept'"))
case("bad-input: a contrast naming an interaction in another order, or a misspelt name", "bad-input",
     lambda _: ml.fit("mathach ~ sector * cwc(ses) + (1 | school)", small()).test("cwc(ses):sector = 0"), "error",
     names=("'cwc(ses):sector'", "'sector:cwc(ses)'"))
case("bad-input: a pandas Categorical with categories no row used has", "bad-input",
     pair(lambda _: ml.fit("mathach ~ grp + (1 | school)",
                           small().assign(grp=lambda t: pd.Categorical(np.where(t["ses"] > 0, "hi", "lo"), categories=["hi", "lo", "none"]))),
          lambda _: ml.fit("mathach ~ grp + (1 | school)", small().assign(grp=lambda t: np.where(t["ses"] > 0, "hi", "lo")))),
     "right", both())


def _streamed_misspelt(tmp: Path):
    (tmp / "parts").mkdir()
    d = small()
    d.iloc[:300].to_parquet(tmp / "parts" / "a.parquet", index=False)
    d.iloc[300:].to_parquet(tmp / "parts" / "b.parquet", index=False)
    return ml.fit("mathach ~ sess + (1 | school)", tmp / "parts", stream=True)


case("bad-input: a misspelt column in a streamed fit", "bad-input", _streamed_misspelt, "error",
     names=("'sess'", "Did you mean 'ses'", "sector", "meanses"))
case("bad-input: a missing folder", "bad-input", lambda t: ml.fit(M, str(t / "nope") + "/"), "error", names=("nope", "no such folder"))
case("bad-input: two names in a row in a formula", "bad-input",
     lambda _: ml.fit("mathach ~ my ses + (1 | school)", small()), "error", names=("'my'", "'ses'", "`my ses`"))
case("bad-input: a backticked column name holding ':' or '|'", "bad-input",
     lambda _: ml.fit("mathach ~ `a:b` + (1 | school)", small().assign(**{"a:b": 1.0})), "error", names=("'a:b'", "Rename"))
# ----- results, tests, intervals, pooling (the probe's findings; tests/test_probe_fixes_a.py) --------
case("bad-input: a level-1 variable as an `extra` column of the level-2 residual file", "bad-input",
     lambda _: ml.fit(M, small()).residuals(level=2, extra=["ses"]), "error", names=("'ses'", "varies within", "unit mean"))
case("bad-input: a misspelt `extra` column of a residual file", "bad-input",
     lambda _: ml.fit(M, small()).residuals(level=2, extra=["meanse"]), "error", names=("'meanse'", "Did you mean 'meanses'"))
case("bad-input: `fit.at(tau=..., sigma2=...)` / `ml.fit(..., tau=, sigma2=)` with bad values (tau not PSD)", "bad-input",
     lambda _: ml.fit("mathach ~ ses + (ses | school)", small()).at(tau=[[1, 2], [2, 1]], sigma2=36.0), "error",
     names=("positive semidefinite", "Intercept", "ses"))
case("bad-input: `fit.at(tau=..., sigma2=...)` / `ml.fit(..., tau=, sigma2=)` with bad values (sigma2 = 0)", "bad-input",
     lambda _: ml.fit(M, small(), tau=[[8.0]], sigma2=0), "error", names=("sigma2", "positive finite"))


def _evaluated(_):
    f = ml.fit(M, small())
    return f, f.at(tau=f.tau * 2, sigma2=f.sigma2)


case("bad-input: `fit.at(...)` (evaluated: converged is False, reports as before)", "bad-input", _evaluated, "right",
     lambda fa: (_assert(fa[0].converged and not fa[1].converged and fa[1].evaluated_at_given, "converged flags"),
                 _assert("evaluated at given variance components" in fa[1].summary(), "summary"),
                 _assert("failed to converge" not in fa[1].summary(), "summary says failed")))


def _listed(_):
    f = ml.fit("mathach ~ ses + sector + (1 | school)", small())
    return f.test(["ses = 0", "sector = 0"]), f.test("ses = 0, sector = 0")


case('bad-input: `fit.test(["a = 0", "b = 0"])` (one joint test)', "bad-input", _listed, "right",
     lambda ab: rel_close("chi-square", ab[0].chisq, ab[1].chisq, 1e-12))
case('bad-input: `fit.confint(..., which="fixd")` (bootstrap)', "bad-input",
     lambda _: ml.fit(M, small()).confint("bootstrap", which="fixd", n_boot=5, progress=False), "error", names=("which='fixd'", "'fixed'"))
case('bad-input: `fit.confint("bootstrap", n_boot=5)`', "bad-input",
     lambda _: ml.fit(M, small()).confint("bootstrap", n_boot=5, seed=1, progress=False), "warning", names=("n_boot=5",))


def _profile_at_zero(_):
    return ml.fit("y ~ x + (x || g)", gen(4)).confint("profile", which="variance")


def _check_profile(ci) -> None:
    _assert(ci.loc["sd_x|g", "estimate"] == 0 and ci.loc["sd_x|g", "ci_low"] == 0, "lower bound of a zero SD")
    ok = ci.dropna()
    _assert(bool((ok["ci_low"] <= ok["estimate"] + 1e-9).all() and (ok["estimate"] <= ok["ci_high"] + 1e-9).all()), "bounds around the estimate")


case('bad-input: `fit.confint("profile")` where a bound cannot be located (a zero SD: runs, its lower bound 0)', "bad-input",
     _profile_at_zero, "right", _check_profile)


def _negative_chisq(_):
    f = ml.fit(M, small(), method="ML")
    return ml.compare(f, ml.Deviance(f.deviance + 5, 5, "bigger", method="ML", convention="lme4"))


case("bad-input: `ml.compare` where the larger model has the higher deviance", "bad-input", _negative_chisq, "right",
     lambda c: (_assert(bool(np.isnan(c.table.loc["bigger", "p"])), "p of a negative chi-square"),
                _assert(any("higher deviance" in n for n in c.notes), "note")))
case("bad-input: `ml.compare(fit, ml.Deviance(d, k))`", "bad-input",
     lambda _: ml.compare(ml.fit(M, small()), ml.Deviance(4000.0, 5)), "error", names=("REML or ML", "method="))
case("bad-input: `fit.homogeneity_test(min_df='10')`, `min_df=-1`", "bad-input",
     lambda _: ml.fit(M, small()).homogeneity_test(min_df="10"), "error", names=("min_df must be a whole number", "'10'"))
case("bad-input: `ml.compare` of entered deviances of mixed conventions", "bad-input",
     lambda _: ml.compare(ml.Deviance(100.0, 2, "a"), ml.Deviance(90.0, 4, "b", convention="lme4")), "error",
     names=("mix conventions", "convention="))
case("bad-input: `ml.Deviance(d, k, convention='sas')`", "bad-input",
     lambda _: ml.Deviance(100.0, 2, convention="sas"), "error", names=("convention must be 'hlm'", "'sas'"))
case("bad-input: `ml.pseudo_r2(base, fit)` of fits to different rows, by REML and ML, or with different weights", "bad-input",
     lambda _: ml.pseudo_r2(ml.fit("mathach ~ 1 + (1 | school)", small().iloc[:500]), ml.fit(M, small())), "error",
     names=("different data", "pseudo-R2"))


def _precision_df_advice(_):
    d = small().assign(w=np.random.default_rng(3).uniform(0.5, 2, 600))
    return ml.fit(M, d, precision_weights="w").coef_table(df="satterthwaite", se="CR0")


case('bad-input: `fit.coef_table(df="satterthwaite", se="CR0")`', "bad-input", _precision_df_advice, "error",
     names=("derived for the model-based covariance", "'between-within'"))
case("bad-input: a residual file saved as .sav/.dta with column names SPSS/Stata do not accept", "bad-input",
     lambda tmp: ml.fit("mathach ~ cwc(ses) + (1 | school)", small()).save_residuals(tmp / "r.dta", level=1), "warning",
     names=("cwc(ses)", "cwc_ses", "variable labels"))
case("bad-input: `ml.design_effect(icc=.3, cluster_size=0)`, `icc` outside [0, 1), `ml.effective_n(n_total=-5, ...)`", "bad-input",
     lambda _: ml.design_effect(icc=0.3, cluster_size=0), "error", names=("Cluster sizes", "1 or more"))
case("bad-input: `ml.design_effect(icc=.3, cluster_size=0)`, `icc` outside [0, 1), `ml.effective_n(n_total=-5, ...)` (n_total)", "bad-input",
     lambda _: ml.effective_n(n_total=-5, icc=0.3, cluster_size=5), "error", names=("n_total", "-5"))
case("bad-input: imputed data sets with different rows", "bad-input",
     lambda _: ml.fit(M, [small(), small().iloc[:-100]]), "error", names=("set 1: 600 rows", "set 2: 500 rows"))


def _pooled_se(_):
    sets = [small().assign(mathach=lambda t, k=k: t["mathach"] + 0.1 * k * np.sin(np.arange(len(t)))) for k in range(2)]
    p = ml.fit(M, sets)
    return p.test("ses = 0", se="CR0"), ml.pool(p.fits, se="CR0").test("ses = 0")


case('bad-input: `pooled.test("sector = 0", se="CR0")`', "bad-input", _pooled_se, "right",
     lambda ab: (rel_close("F", ab[0].F, ab[1].F, 1e-12), _assert(ab[0].se_method == "CR0", "SE method")))
case("bad-input: a file written into a folder that does not exist", "bad-input",
     lambda tmp: ml.fit(M, small()).save_residuals(tmp / "nope" / "x.csv"), "error", names=("folder", "nope", "does not exist"))

case('bad-input: `ml.fit_levels(l1, {...}, ..., level2="sch.csv")`', "bad-input",
     lambda tmp: (small().groupby("school", as_index=False)[["meanses"]].first().to_csv(tmp / "sch.csv", index=False),
                  ml.fit_levels("mathach ~ ses", {"Intercept": "meanses + u"}, group="school", data=small(), level2=str(tmp / "sch.csv"))),
     "error", names=("level2_data=", "sch.csv"))
case("bad-input: a random slope of a variable constant within every unit", "bad-input",
     lambda _: ml.fit("mathach ~ sector + (sector | school)", small()), "error", names=("'sector'", "'school'", "random part"))
case("bad-input: HLM's `U0`/`u1` in a level-2 equation", "bad-input",
     lambda _: ml.fit_levels("mathach ~ ses", {"Intercept": "sector + U0", "ses": "U1"}, group="school", data=small()),
     "error", names=("'U0'", "'Intercept'", "'u'"))
case("bad-input: a level-2 variable missing in only some rows of a unit", "bad-input",
     lambda _: ml.fit_levels("mathach ~ ses", {"Intercept": "meanses + u"}, group="school",
                             data=small().assign(meanses=lambda t: t["meanses"].mask(t.index < 3))),
     "error", names=("1224", "meanses", "3 of its 47 rows"))


# ----- running a case --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    status: str  # "right" | "clear error" | "warning" | "wrong" | "unclear error" | "raw error" | "no warning"
    detail: str

    @property
    def ok(self) -> bool:
        return self.status in ("right", "clear error", "warning")


def outcome(c: Case, tmp: Path) -> Outcome:
    """Run a case and classify what happened against its expectation."""
    import multilevel.errors as errors

    warning_class = getattr(errors, "MultilevelWarning", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = c.run(tmp)
        except MultilevelError as e:
            msg = str(e)
            if c.expect != "error":
                return Outcome("wrong", f"{type(e).__name__} where a {c.expect} was expected: {msg[:300]}")
            missing = [n for n in c.names if n not in msg]
            if missing:
                return Outcome("unclear error", f"{type(e).__name__} does not name {missing}: {msg[:300]}")
            return Outcome("clear error", f"{type(e).__name__}: {msg[:200]}")
        except AssertionError as e:  # a case's own guard (e.g. the formula ran code)
            return Outcome("wrong", f"AssertionError: {str(e)[:300]}")
        except Exception as e:
            return Outcome("raw error", f"{type(e).__module__}.{type(e).__name__}: {str(e)[:300]}")
    if c.expect == "error":
        return Outcome("wrong", "no error: the input was accepted")
    if c.expect == "warning":
        if warning_class is None:
            return Outcome("no warning", "multilevel.errors.MultilevelWarning does not exist")
        hits = [w for w in caught if issubclass(w.category, warning_class) and all(n in str(w.message) for n in c.names)]
        if not hits:
            got = [f"{w.category.__name__}: {str(w.message)[:80]}" for w in caught]
            return Outcome("no warning", f"no MultilevelWarning naming {list(c.names)} (got {got})")
        return Outcome("warning", str(hits[0].message)[:200])
    try:
        if c.check is not None:
            c.check(result)
    except AssertionError as e:
        return Outcome("wrong", str(e)[:400])
    except MultilevelError as e:
        return Outcome("wrong", f"{type(e).__name__} while checking: {str(e)[:300]}")
    except Exception as e:
        return Outcome("raw error", f"while checking: {type(e).__module__}.{type(e).__name__}: {str(e)[:300]}")
    return Outcome("right", "")


_SEEN: dict[str, Outcome] = {}


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_case(c: Case, tmp_path):
    got = outcome(c, tmp_path)
    _SEEN[c.name] = got
    assert got.ok, f"[{got.status}] {c.name}: {got.detail}"


def test_case_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))


def doc_row_key(line: str) -> str:
    """The key of a table row of docs/bad-input.md: its first cell (a Markdown cell may hold an
    escaped bar, `\\|`) up to its first " (" (the comment in parentheses)."""
    first = re.split(r"(?<!\\)\|", line)[1].replace("\\|", "|").strip()
    return first.split(" (")[0]


def case_row_key(c: Case) -> str:
    """The docs row a case reproduces: its `row`, or for a case of item "bad-input" its name."""
    if c.row:
        return c.row.split(" (")[0]
    return c.name.removeprefix("bad-input: ").split(" (")[0] if c.item == "bad-input" else ""


def test_every_bad_input_row_has_a_case():
    """Each row of docs/bad-input.md's table is a case here (by its first cell)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "bad-input.md").read_text()
    rows = [doc_row_key(line) for line in doc.splitlines() if line.startswith("| ") and not line.startswith("| input")]
    covered = {case_row_key(c) for c in CASES} - {""}
    missing = [r for r in rows if r not in covered]
    assert not missing, f"rows of docs/bad-input.md without a catalogue case: {missing}"


def outcomes() -> dict[str, Outcome]:
    """The outcome of every case: this pytest session's where there is one, else the case is run."""
    import tempfile

    got: dict[str, Outcome] = {}
    for c in CASES:
        if c.name not in _SEEN:
            with tempfile.TemporaryDirectory() as d:
                _SEEN[c.name] = outcome(c, Path(d))
        got[c.name] = _SEEN[c.name]
    return got


def summary() -> dict[str, int]:
    """Counts for the closing note: cases tried, right answers, clear errors, warnings, failures
    (and the failures by kind: wrong, unclear error, raw error, no warning)."""
    counts = Counter(o.status for o in outcomes().values())
    ok = ("right", "clear error", "warning")
    return {
        "cases tried": len(CASES),
        "right answers": counts["right"],
        "clear errors": counts["clear error"],
        "warnings": counts["warning"],
        "failures": sum(v for k, v in counts.items() if k not in ok),
        **{f"failures ({k})": v for k, v in sorted(counts.items()) if k not in ok},
    }


def test_summary(capsys):
    """Prints the counts and the failing cases (shown even without -s); fails if any case fails."""
    counts = summary()
    failing = [f"  [{o.status}] {name}: {o.detail[:200]}" for name, o in outcomes().items() if not o.ok]
    with capsys.disabled():
        print("\ncatalogue: " + "; ".join(f"{k}: {v}" for k, v in counts.items()))
        print("\n".join(failing))
    assert counts["failures"] == 0, counts
