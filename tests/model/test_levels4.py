"""Issue 14: HLM4's level equations (`ml.levels(..., level4=..., group=(l2, l3, l4))`): the spec equals
the lme4 formula's `(... | l4/l3/l2)`, the fit equals converged lme4 on the four-level simulation
(refs/multi/sim4.json, made by refs/make_refs_multi.R), and centring one level up works as at three levels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.model.formula import parse_formula

REFS = Path(__file__).resolve().parents[2] / "refs" / "multi"

L1 = "y ~ 1 + x"
L2 = {"Intercept": "random"}  # rows in c: a random intercept over c
L3 = {"Intercept": {"Intercept": "random"}, "x": {"Intercept": "random"}}  # intercept and x slope over b
L4 = {"Intercept": {"Intercept": {"Intercept": "w + random"}}}  # w (constant within a) and a random intercept over a
GROUP = ("c", "b", "a")


def sim4() -> tuple[pd.DataFrame, dict]:
    ref = json.loads((REFS / "sim4.json").read_text())
    return pd.read_csv(REFS / ref["data_file"], dtype={c: str for c in ref["id_columns"]}), ref


def test_hlm4_equations_are_the_lme4_formula():
    spec = ml.levels(L1, L2, L3, L4, group=GROUP)
    # the fixed effects in HLM's order (the intercept's equations first), as lme4 lists `w + x`
    assert spec == parse_formula("y ~ w + x + (1 | a) + (1 + x | b:a) + (1 | c:(b:a))")
    assert spec.groups == ("a", "b:a", "c:(b:a)")  # lme4's names of (... | a/b/c)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_hlm4_fit_equals_lme4(method):
    df, ref = sim4()
    fit = ml.fit_levels(L1, L2, level3=L3, level4=L4, group=GROUP, data=df, method=method)
    r = ref[method]
    assert fit.converged and fit.n_obs == r["n_obs"]
    fe = r["fixed_effects"]
    np.testing.assert_allclose(fit.beta.loc[["Intercept", "x", "w"]].to_numpy(), fe["estimate"], rtol=1e-6)
    np.testing.assert_allclose(fit.fixed.loc[["Intercept", "x", "w"], "se"].to_numpy(), fe["se"], rtol=1e-6)
    assert fit.deviance == pytest.approx(r["criterion"]["value"], rel=1e-6)
    # variance components by level (lme4's a:b:c is our c:(b:a), a:b is b:a: the same units)
    names = {"a:b:c": "c:(b:a)", "a:b": "b:a", "a": "a", "Residual": "Residual"}
    vc = r["varcorr"]
    mine = fit.varcorr
    assert list(mine["grp"]) == [names[g] for g in vc["grp"]]
    np.testing.assert_allclose(mine["vcov"].to_numpy(), vc["vcov"], rtol=1e-4)


def test_hlm4_centring_one_level_up():
    """cwc of a level-3 variable is within its level-4 unit (each level-3 unit counted once); cgm of a
    level-4 variable is over the level-4 units; cwc of a level-1 variable is within its level-2 unit."""
    df, _ = sim4()
    rng = np.random.default_rng(5)
    b_units = df.groupby(["a", "b"]).ngroups
    v3 = pd.Series(rng.normal(2.0, 1.0, b_units), index=df.groupby(["a", "b"]).size().index)
    df["v3"] = [v3[(a, b)] for a, b in zip(df["a"], df["b"])]
    per_b = df.groupby(["a", "b"])["v3"].first()
    df["v3_c"] = df["v3"] - df["a"].map(per_b.groupby(level="a").mean())
    df["w_c"] = df["w"] - df.groupby("a")["w"].first().mean()
    df["x_c"] = df["x"] - df.groupby(["a", "b", "c"])["x"].transform("mean")

    def model(x: str, v: str, w: str):
        return ml.fit_levels(
            f"y ~ 1 + {x}", {"Intercept": "random"}, level3={"Intercept": {"Intercept": f"{v} + random"}},
            level4={"Intercept": {"Intercept": {"Intercept": f"{w} + random", v: ""}}, x: {"Intercept": {"Intercept": ""}}},
            group=GROUP, data=df, method="ML",
        )

    a, b = model("cwc(x)", "cwc(v3)", "cgm(w)"), model("x_c", "v3_c", "w_c")
    np.testing.assert_allclose(a.beta.to_numpy(), b.beta.to_numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a.vcov.to_numpy(), b.vcov.to_numpy(), rtol=1e-8, atol=1e-12)
    assert a.deviance == pytest.approx(b.deviance, rel=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group": ("c", "b")}, r"four-level model needs group=\(level-2 id, level-3 id, level-4 id\)"),
        ({"group": ("c", "b", "b")}, r"Two levels' ids are both 'b'"),
        ({"level4": {"Intercept": {"Intercept": "random"}}}, r"level4\['Intercept'\] must be a dict"),
        ({"level4": {"Intercept": {"Intercept": {"Intercept": "w"}}}}, r"No level-3 coefficient is random at level 4"),
        ({"level4": {"Intercept": {"Intercept": {"zz": "random"}}}}, r"level4\['Intercept'\]\['Intercept'\] has an equation for 'zz'"),
        ({"level4": {"Intercept": {"Intercept": {"Intercept": "cwc(w) + random"}}}}, r"level 4 is the top level"),
    ],
)
def test_hlm4_refusals(kwargs, message):
    args = {"level4": L4, "group": GROUP}
    args.update(kwargs)
    with pytest.raises(ml.SpecificationError, match=message):
        ml.levels(L1, L2, L3, args["level4"], group=args["group"])


def test_three_ids_without_level4_are_refused():
    with pytest.raises(ml.SpecificationError, match=r"names three ids \(a four-level model\) but no level4"):
        ml.levels(L1, L2, L3, group=GROUP)
