"""Issue 14: HLM3's MDM from three files (`data.join.join_levels`; `fit_levels(level2_data=, level3_data=)`
and `ml.fit(level2=, level3=)`): the joined fit equals the fit of the merged rows; missing level-2 and
level-3 values refused naming the columns and units, or dropped on request and reported per level; ids
in one file and not the other reported, never silently dropped."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml

L1 = "y ~ 1 + x"
L2 = {"Intercept": "w2 + random", "x": "random"}
L3 = {"Intercept": {"Intercept": "w3 + random", "w2": ""}, "x": {"Intercept": "random"}}


def three_files(seed: int = 4):
    """(level-1 rows with room and school ids, level-2 table (room, school, w2, extra), level-3 table
    (school, w3)); room ids restart in every school, as HLM3 reads them."""
    rng = np.random.default_rng(seed)
    rows, rooms, schools = [], [], []
    for s in range(12):
        w3 = rng.normal()
        schools.append((f"S{s}", w3))
        u = rng.normal(0, [0.8, 0.3])
        for r in range(int(rng.integers(2, 6))):
            w2 = rng.normal()
            rooms.append((r, f"S{s}", w2, rng.normal()))
            e = rng.normal(0, [0.9, 0.3])
            for _ in range(int(rng.integers(1, 9))):
                x = rng.normal()
                rows.append((r, f"S{s}", x, 1 + 0.5 * w3 + 0.3 * w2 + u[0] + e[0] + (0.7 + u[1] + e[1]) * x + rng.normal(0, 0.7)))
    return (pd.DataFrame(rows, columns=["room", "school", "x", "y"]),
            pd.DataFrame(rooms, columns=["room", "school", "w2", "extra"]),
            pd.DataFrame(schools, columns=["school", "w3"]))


def merged(l1, l2, l3):
    return l1.merge(l2, on=["room", "school"]).merge(l3, on="school")


def _fit(data, **kw):
    return ml.fit_levels(L1, L2, level3=L3, group=("room", "school"), data=data, method="ML", **kw)


def test_three_files_equal_the_merged_rows():
    l1, l2, l3 = three_files()
    a = _fit(l1, level2_data=l2, level3_data=l3)
    b = _fit(merged(l1, l2, l3))
    np.testing.assert_allclose(a.beta.to_numpy(), b.beta.to_numpy(), rtol=1e-10)
    assert a.deviance == pytest.approx(b.deviance, rel=1e-12)
    text = str(a.design.data_report)
    assert "Level-2 file: " in text and "joined on room and school" in text and "Level-3 file: 12 rows joined on school" in text


def test_paths_and_formula_route(tmp_path):
    l1, l2, l3 = three_files()
    paths = []
    for name, t in (("l1", l1), ("l2", l2), ("l3", l3)):
        p = tmp_path / f"{name}.csv"
        t.to_csv(p, index=False)
        paths.append(str(p))
    a = _fit(paths[0], level2_data=paths[1], level3_data=paths[2])
    f = ml.fit("y ~ w3 + w2 + x + (x | school) + (x | school:room)", paths[0], method="ML", level2=paths[1], level3=paths[2])
    b = _fit(merged(l1, l2, l3))
    assert a.deviance == pytest.approx(b.deviance, rel=1e-12) and f.deviance == pytest.approx(b.deviance, rel=1e-12)


def test_level2_table_without_level3_id_when_ids_are_unique():
    l1, l2, l3 = three_files()
    l1 = l1.assign(room=l1["school"] + "-" + l1["room"].astype(str))
    l2 = l2.assign(room=l2["school"] + "-" + l2["room"].astype(str)).drop(columns="school")
    a = _fit(l1, level2_data=l2, level3_data=l3)
    b = _fit(l1.merge(l2, on="room").merge(l3, on="school"))
    assert a.deviance == pytest.approx(b.deviance, rel=1e-12)


def test_repeated_level2_ids_need_the_level3_id():
    l1, l2, l3 = three_files()
    with pytest.raises(ml.DataError, match=r"no level-3 id 'school' and the level-2 id 'room' repeats"):
        _fit(l1, level2_data=l2.drop(columns="school"), level3_data=l3)


@pytest.mark.parametrize("level", [2, 3])
def test_missing_values_refused_naming_columns_and_units(level):
    l1, l2, l3 = three_files()
    if level == 2:
        l2.loc[3, "w2"] = np.nan
        unit = f"{l2.loc[3, 'room']}:{l2.loc[3, 'school']}"
    else:
        l3.loc[5, "w3"] = np.nan
        unit = "S5"
    with pytest.raises(ml.DataError, match=rf"level-{level} table has missing values in the model's variable\(s\) 'w{level}' .*{unit} \(w{level}\).*level{level}_missing='drop'"):
        _fit(l1, level2_data=l2, level3_data=l3)


def test_missing_values_in_unused_variables_are_not_refused():
    l1, l2, l3 = three_files()
    l2.loc[0, "extra"] = np.nan
    assert _fit(l1, level2_data=l2, level3_data=l3).converged


def test_missing_values_dropped_on_request_and_reported_per_level():
    l1, l2, l3 = three_files()
    l2.loc[3, "w2"] = np.nan
    l3.loc[5, "w3"] = np.nan
    fit = _fit(l1, level2_data=l2, level3_data=l3, level2_missing="drop", level3_missing="drop")
    room, school = l2.loc[3, "room"], l2.loc[3, "school"]
    keep = ~((l1["room"] == room) & (l1["school"] == school)) & (l1["school"] != "S5")
    ref = _fit(merged(l1[keep], l2.dropna(subset=["w2"]), l3.dropna()))
    assert fit.deviance == pytest.approx(ref.deviance, rel=1e-12) and fit.n_obs == int(keep.sum())
    text = str(fit.design.data_report)
    n2 = int(((l1["room"] == room) & (l1["school"] == school)).sum())
    assert f"1 level-2 units dropped for missing level-2 values ({n2} level-1 rows; level2_missing='drop'): {room}:{school} (w2)" in text
    assert f"1 level-3 units dropped for missing level-3 values ({int((l1['school'] == 'S5').sum())} level-1 rows" in text
    assert "S5 (w3)" in text
    assert f"Level-1 rows: {fit.n_obs} used of {len(l1)} ({len(l1) - fit.n_obs} dropped)" in text


def test_ids_in_one_file_and_not_the_other():
    l1, l2, l3 = three_files()
    l2_extra = pd.concat([l2, pd.DataFrame([(9, "S0", 0.1, 0.0)], columns=l2.columns)], ignore_index=True)
    l3_extra = pd.concat([l3, pd.DataFrame([("S99", 0.0)], columns=l3.columns)], ignore_index=True)
    fit = _fit(l1, level2_data=l2_extra, level3_data=l3_extra)
    text = str(fit.design.data_report)
    assert "1 level-2 rows have no level-1 rows (not used): 9:S0" in text
    assert "1 level-3 rows have no level-1 rows (not used): S99" in text
    # level-1 units with no level-2 row: refused, or dropped on request and reported
    short = l2.drop(index=0)
    with pytest.raises(ml.DataError, match=r"1 level-2 unit\(s\) \('room' and 'school'\) of the level-1 rows have no row in the level-2 table \(0:S0"):
        _fit(l1, level2_data=short, level3_data=l3)
    fit = _fit(l1, level2_data=short, level3_data=l3, level2_missing="drop")
    assert "1 level-2 units of the rows below have no row in the level-2 file, dropped" in str(fit.design.data_report)
    with pytest.raises(ml.DataError, match=r"level-3 unit\(s\) \('school'\) of the level-1 rows have no row in the level-3 table \(S1"):
        _fit(l1, level2_data=l2, level3_data=l3[l3["school"] != "S1"])


def test_wrong_uses_are_refused():
    l1, l2, l3 = three_files()
    with pytest.raises(ml.DataError, match=r"level3_missing must be 'error' .* or 'drop'"):
        _fit(l1, level2_data=l2, level3_data=l3, level3_missing="keep")
    with pytest.raises(ml.SpecificationError, match=r"level3_data= is a level-3 table, for three-level models"):
        ml.fit_levels(L1, {"Intercept": "random"}, group="school", data=merged(l1, l2, l3), level3_data=l3)
    with pytest.raises(ml.DataError, match=r"The id 'school' is not a column of the level-3 table"):
        _fit(l1, level2_data=l2, level3_data=l3.rename(columns={"school": "sch"}))
    with pytest.raises(ml.DataError, match=r"level-2 table has 1 unit\(s\) \('room' and 'school'\) on more than one row"):
        _fit(l1, level2_data=pd.concat([l2, l2.iloc[[0]]]), level3_data=l3)


def test_level_files_need_the_nesting_written():
    l1, l2, l3 = three_files()
    with pytest.raises(ml.SpecificationError, match=r"Level files .* are joined for three-level models .* Write the nesting"):
        ml.fit("y ~ x + (1 | school) + (1 | room)", l1, level2=l2, level3=l3)
