"""Issue 14: centring at every level of HLM3's (and HLM4's) level equations, as HLM centres: a level-1
predictor at its level-2 unit's mean (cwc) or the rows' mean (cgm); a level-2 predictor at its
level-3 unit's mean over the level-2 units (cwc) or at its mean over the level-2 units (cgm), each
level-2 unit counted once; a level-3 predictor at its mean over the level-3 units (cgm). Each
centred fit equals the fit of the same model on columns centred by hand with pandas."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.model.level_equations import factor_names


def rooms(seed: int = 11) -> pd.DataFrame:
    """Rows in rooms in schools; room ids restart in every school (HLM3 reads level-2 ids within
    level-3 units); uneven sizes, so means over rows and over units differ."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(14):
        w3 = rng.normal(3.0, 1.0)
        u = rng.normal(0, [0.8, 0.3])
        for room in range(int(rng.integers(2, 7))):
            w2 = rng.normal(5.0, 2.0) + 0.5 * w3
            r = rng.normal(0, [0.9, 0.3])
            for _ in range(int(rng.integers(1, 12))):
                x = rng.normal(2.0 + 0.3 * w2, 1.0)
                y = 1 + 0.4 * w3 + 0.3 * w2 + u[0] + r[0] + (0.7 + u[1] + r[1]) * x + rng.normal(0, 0.7)
                rows.append((f"s{s}", f"r{room}", x, w2, w3, y))
    return pd.DataFrame(rows, columns=["school", "room", "x", "w2", "w3", "y"])


def by_hand(df: pd.DataFrame) -> pd.DataFrame:
    """HLM's centring, with pandas: level-1 means per room (rows), level-2 means per school and
    overall over the rooms (one value each), level-3 mean over the schools (one value each)."""
    out = df.copy()
    out["x_cwc"] = df["x"] - df.groupby(["school", "room"])["x"].transform("mean")
    out["x_cgm"] = df["x"] - df["x"].mean()
    per_room = df.groupby(["school", "room"])["w2"].first()
    school_mean = per_room.groupby(level="school").mean()
    out["w2_cwc"] = df["w2"] - df["school"].map(school_mean)
    out["w2_cgm"] = df["w2"] - per_room.mean()
    out["w3_cgm"] = df["w3"] - df.groupby("school")["w3"].first().mean()
    return out


def _same_fit(a, b, rtol: float = 1e-8) -> None:
    assert a.converged and b.converged
    np.testing.assert_allclose(a.beta.to_numpy(), b.beta.to_numpy(), rtol=rtol, atol=1e-10)
    np.testing.assert_allclose(a.vcov.to_numpy(), b.vcov.to_numpy(), rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-6, atol=1e-8)
    assert a.deviance == pytest.approx(b.deviance, rel=rtol)
    np.testing.assert_allclose(a.varcorr["vcov"].to_numpy(), b.varcorr["vcov"].to_numpy(), rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize(
    ("l1", "w2", "w3", "hand"),
    [
        ("cwc(x)", "cwc(w2)", "cgm(w3)", ("x_cwc", "w2_cwc", "w3_cgm")),
        ("cgm(x)", "cgm(w2)", "cgm(w3)", ("x_cgm", "w2_cgm", "w3_cgm")),
        ("cwc(x)", "cgm(w2)", "w3", ("x_cwc", "w2_cgm", "w3")),
    ],
)
@pytest.mark.parametrize("method", ["ML", "REML"])
def test_centred_fit_equals_hand_centred_columns(l1, w2, w3, hand, method):
    df = by_hand(rooms())
    hx, h2, h3 = hand

    def model(x: str, a: str, b: str):
        return ml.fit_levels(
            f"y ~ 1 + {x}", {"Intercept": f"{a} + random", x: "random"},
            level3={"Intercept": {"Intercept": f"{b} + random", a: ""}, x: {"Intercept": f"{b} + random"}},
            group=("room", "school"), data=df, method=method,
        )

    centred, plain = model(l1, w2, w3), model(hx, h2, h3)
    _same_fit(centred, plain)
    # the centred columns the fit used are the hand-made ones
    frame = centred.design.centred_frame()
    for mine, theirs in zip((l1, w2, w3), hand):
        if "(" in mine:
            np.testing.assert_allclose(frame[mine].to_numpy(), df[theirs].to_numpy(), rtol=1e-12, atol=1e-12)


def test_level2_group_mean_counts_each_level2_unit_once():
    """The level-3 unit's mean of a level-2 predictor is over its level-2 units, not its rows (a room
    of 10 rows counts once): it differs from the row-weighted mean on these data."""
    df = by_hand(rooms())
    fit = ml.fit_levels("y ~ 1 + x", {"Intercept": "cwc(w2) + random"}, level3={"Intercept": {"Intercept": "random"}},
                        group=("room", "school"), data=df, method="ML")
    rows_weighted = df["w2"] - df.groupby("school")["w2"].transform("mean")
    got = fit.design.centred_frame()["cwc(w2)"].to_numpy()
    np.testing.assert_allclose(got, df["w2_cwc"].to_numpy(), rtol=1e-12, atol=1e-12)
    assert np.max(np.abs(got - rows_weighted.to_numpy())) > 1e-3


def test_report_prints_hlm3_centring_notes():
    df = rooms()
    fit = ml.fit_levels("y ~ 1 + cwc(x)", {"Intercept": "cwc(w2) + random", "x": "random"},
                        level3={"Intercept": {"Intercept": "cgm(w3) + random", "w2": ""}, "x": {"Intercept": "random"}},
                        group=("room", "school"), data=df, method="ML")
    text = fit.report()
    eq = text[text.index("Level-1 Model"):text.index("Mixed Model")]
    # HLM3's level form names the variables; its notes say how each is centred (HLM 7's sentences)
    assert "P1*(x)" in eq and "B01*(w2)" in eq and "G001*(w3)" in eq
    assert "x has been centered around the group mean." in eq
    assert "w2 has been centered around the group mean." in eq
    assert "w3 has been centered around the grand mean." in eq
    # which mean, as HLM3 computes it
    assert "level-2 unit (room:school)" in eq
    assert "level-3 unit (school), each level-2 unit counted once" in eq
    assert "over the level-3 units, each counted once" in eq


@pytest.mark.parametrize(
    ("level1", "level2", "level3", "message"),
    [
        ("y ~ 1 + x", {"Intercept": "random"}, {"Intercept": {"Intercept": "cwc(w3) + random"}},
         r"cwc\(w3\): group-mean centring of a level-3 variable, but level 3 is the top level"),
        ("y ~ 1 + cgm(x)", {"Intercept": "cgm(x) + random"}, {"Intercept": {"Intercept": "random"}},
         r"cgm\(x\) is written at level 1 and at level 2"),
    ],
)
def test_centring_refusals_in_the_equations(level1, level2, level3, message):
    with pytest.raises(ml.SpecificationError, match=message):
        ml.levels(level1, level2, level3, group=("room", "school"))


def test_centred_level2_predictor_that_varies_in_its_units_is_refused():
    df = rooms()
    with pytest.raises(ml.DataError, match=r"cgm\(x\): 'x' is centred as a predictor of the units of 'room:school'.*varies within"):
        ml.fit_levels("y ~ 1", {"Intercept": "cgm(x) + random"}, level3={"Intercept": {"Intercept": "random"}},
                      group=("room", "school"), data=df)


def test_group_mean_of_a_level3_variable_at_level2_is_refused_as_zero():
    df = rooms()
    with pytest.raises(ml.DataError, match=r"cwc\(w3\): 'w3' is constant within every unit of 'school'"):
        ml.fit_levels("y ~ 1", {"Intercept": "cwc(w3) + random"}, level3={"Intercept": {"Intercept": "random"}},
                      group=("room", "school"), data=df)


def test_factor_names_are_lme4s_of_nested_slashes():
    assert factor_names(("childid", "schoolid")) == ("childid:schoolid", "schoolid")
    assert factor_names(("c", "b", "a")) == ("c:(b:a)", "b:a", "a")


def test_streamed_fit_of_level_centring_is_refused(tmp_path):
    path = tmp_path / "rooms.parquet"
    rooms().to_parquet(path)
    with pytest.raises(ml.SpecificationError, match=r"cwc\(x\): centring at a level of a three- or four-level model"):
        ml.fit_levels("y ~ 1 + cwc(x)", {"Intercept": "random"}, level3={"Intercept": {"Intercept": "random"}},
                      group=("room", "school"), data=str(path), stream=True)
