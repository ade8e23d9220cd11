"""Data is never merged, split or misaligned silently (issue 11, item 5; and the data cases of item 6).

Each test compares against an independent reference: the same data in a plain numpy-typed frame,
an explicit pandas Categorical, a fit of the rows without the bad ones, or residuals computed
here from the columns by pandas alignment.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyreadstat
import pytest

import multilevel as ml
from conftest import MODELS, hsb
from multilevel.errors import DataError, MultilevelWarning

M = "mathach ~ ses + (1 | school)"


def small(n: int = 1200) -> pd.DataFrame:
    return hsb()[["school", "mathach", "ses", "female", "sector", "meanses"]].iloc[:n].copy()


def same_numbers(a: ml.Fit, b: ml.Fit, rtol: float = 1e-10) -> None:
    np.testing.assert_allclose(a.beta.to_numpy(), b.beta.to_numpy(), rtol=rtol)
    np.testing.assert_allclose(a.sigma2, b.sigma2, rtol=rtol)
    np.testing.assert_allclose(a.tau.to_numpy(), b.tau.to_numpy(), rtol=rtol)
    assert a.n_obs == b.n_obs and a.n_groups == b.n_groups


def with_diet(d: pd.DataFrame) -> pd.DataFrame:
    """A level-1 text column whose values look like numbers ("1".."4"), as ChickWeight's Diet."""
    rng = np.random.default_rng(5)
    return d.assign(diet=rng.choice(["1", "2", "3", "4"], size=len(d)))


# ----- text columns are factors ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["object", "str", "string", "string[pyarrow]"])
def test_text_that_looks_like_numbers_is_a_factor_as_in_r(dtype):
    d = with_diet(small())
    d["diet"] = d["diet"].astype(dtype)
    fit = ml.fit("mathach ~ ses * diet + (1 | school)", d)
    # the reference: the same column as an explicit pandas Categorical (a factor in R)
    cat = d.assign(diet=pd.Categorical(d["diet"].astype(object), categories=["1", "2", "3", "4"]))
    ref = ml.fit("mathach ~ ses * diet + (1 | school)", cat)
    assert len(fit.beta) == 8  # lme4: (Intercept), ses, diet2..4, ses:diet2..4
    assert list(fit.beta.index) == list(ref.beta.index)
    same_numbers(fit, ref, rtol=1e-12)
    note = next(n for n in fit.data_report.notes if "'diet'" in n)
    assert "look like numbers" in note and "factor" in note and "pd.to_numeric" in note
    assert "treated as a factor" in fit.report()


def test_text_of_many_number_like_values_says_to_convert():
    d = small()
    d["ses"] = d["ses"].astype(str)
    with pytest.raises(DataError, match=r"'ses' is text whose values look like numbers .*pd\.to_numeric\(df\['ses'\]\)"):
        ml.fit(M, d)


def test_an_object_column_of_numbers_with_some_numbers_as_text_is_converted_and_reported():
    d = small()
    ses = d["ses"].astype(object)
    ses.iloc[[2, 5]] = ses.iloc[[2, 5]].map(repr)  # '0.123' among floats
    fit = ml.fit(M, d.assign(ses=ses))
    same_numbers(fit, ml.fit(M, d), rtol=1e-12)
    assert any("'ses' mixes numbers and numbers written as text" in n for n in fit.data_report.notes)


def test_an_outcome_written_as_text_is_refused():
    d = small()
    d["mathach"] = d["mathach"].astype(str)
    with pytest.raises(DataError, match=r"outcome 'mathach' is not numeric.*pd\.to_numeric\(df\['mathach'\]\)"):
        ml.fit(M, d)


# ----- pandas' extension types -------------------------------------------------------------------
def _with_missing(d: pd.DataFrame) -> pd.DataFrame:
    d = d.copy()
    d.loc[d.index[[4, 40, 400]], "ses"] = np.nan
    d.loc[d.index[[7, 70]], "female"] = np.nan
    d["g"] = pd.Series(np.resize(np.array(["a", "b", "c"], dtype=object), len(d)), index=d.index)
    d.loc[d.index[[9]], "g"] = np.nan
    d.loc[d.index[[600]], "school"] = np.nan  # a row without an id: dropped and counted
    return d


@pytest.mark.parametrize("kind", ["Int64", "Float64", "boolean", "string", "string_ids", "pyarrow_ids", "arrow_backend",
                                  "float16"])
def test_extension_dtypes_give_the_same_fit_as_numpy_columns(kind):
    base = _with_missing(small())
    form = "mathach ~ ses + female + g + (1 | school)"
    d = base.copy()
    ref_data = base
    if kind == "Int64":
        d["female"] = d["female"].astype("Int64")  # pd.NA for the missing ones
        d["sector"] = d["sector"].astype("Int64")
        form = "mathach ~ ses + female + g + sector + (1 | school)"
    elif kind == "Float64":
        d["ses"] = d["ses"].astype("Float64")
        d["mathach"] = d["mathach"].astype("Float64")
    elif kind == "boolean":
        d["female"] = d["female"].map({1.0: True, 0.0: False}).astype("boolean")
        ref_data = base.assign(female=base["female"])  # numpy: 0/1 with NaN
    elif kind == "string":
        d["g"] = d["g"].astype("string")  # pd.NA for the missing one
    elif kind == "string_ids":
        d["school"] = d["school"].astype("string")
    elif kind == "pyarrow_ids":
        d["school"] = d["school"].astype("string[pyarrow]")
    elif kind == "arrow_backend":
        d = d.convert_dtypes(dtype_backend="pyarrow")
        assert "pyarrow" in str(d["ses"].dtype)
    elif kind == "float16":
        d["ses"] = d["ses"].astype(np.float16)
        ref_data = base.assign(ses=d["ses"].astype(np.float64))
    fit = ml.fit(form, d)
    ref = ml.fit(form, ref_data)
    same_numbers(fit, ref, rtol=1e-12)
    assert fit.design.group_labels == ref.design.group_labels
    # pd.NA counts as missing in the data report
    assert fit.data_report.dropped_by_variable == ref.data_report.dropped_by_variable
    assert dict(fit.data_report.dropped_by_variable) == {"ses": 3, "female": 2, "g": 1, "school": 1}


def test_read_csv_with_the_pyarrow_backend_and_nullable_weights(tmp_path):
    d = small()
    d["w"] = np.random.default_rng(1).uniform(0.5, 2.0, len(d))
    d["g"] = np.resize(["a", "b", "c"], len(d))  # a text predictor (string[pyarrow] when read so)
    d.loc[d.index[3], "ses"] = np.nan
    d.to_csv(tmp_path / "d.csv", index=False)
    arrow = pd.read_csv(tmp_path / "d.csv", dtype_backend="pyarrow")
    plain = pd.read_csv(tmp_path / "d.csv")
    form = "mathach ~ ses + g + (1 | school)"
    same_numbers(ml.fit(form, arrow), ml.fit(form, plain), rtol=1e-12)
    same_numbers(
        ml.fit(form, arrow, method="ML", sampling_weights="w"), ml.fit(form, plain, method="ML", sampling_weights="w"), rtol=1e-12
    )
    nullable = plain.convert_dtypes()  # Int64 / Float64 / string
    same_numbers(ml.fit(form, nullable, method="ML", sampling_weights="w"), ml.fit(form, plain, method="ML", sampling_weights="w"),
                 rtol=1e-12)


def test_duplicate_column_names_are_refused_by_name():
    d = small()
    d = pd.concat([d, d[["ses"]]], axis=1)
    with pytest.raises(DataError, match=r"more than one column named 'ses'"):
        ml.fit(M, d)
    s = hsb()[["school", "meanses", "sector"]].drop_duplicates("school")
    s = pd.concat([s, s[["sector"]]], axis=1)
    with pytest.raises(DataError, match=r"level-2 data have more than one column named 'sector'"):
        ml.fit(MODELS["M2"], hsb()[["school", "mathach"]], level2=s)


# ----- ids ---------------------------------------------------------------------------------------
def test_spss_ids_sharing_a_label_stay_distinct_units(tmp_path):
    d = small(400).reset_index(drop=True)
    ids = {s: i + 1 for i, s in enumerate(pd.unique(d["school"]))}
    d["school"] = d["school"].map(ids).astype(float)
    labels = {float(i): f"school {i}" for i in ids.values()}
    labels[2.0] = labels[1.0] = "St Mary"  # two schools, one name
    path = tmp_path / "s.sav"
    pyreadstat.write_sav(d, str(path), variable_value_labels={"school": labels})
    fit = ml.fit(M, path)
    ref = ml.fit(M, d)
    assert fit.n_groups == len(ids) == ref.n_groups
    same_numbers(fit, ref, rtol=1e-12)
    assert any("'school' has codes sharing a value label" in n for n in fit.data_report.notes)
    # labels one to one with the codes still become categories (a factor with named levels)
    pyreadstat.write_sav(d.assign(female=d["female"].astype(float)), str(path),
                         variable_value_labels={"female": {0.0: "male", 1.0: "female"}})
    assert isinstance(ml.read(path)["female"].dtype, pd.CategoricalDtype)


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_ids_are_missing_ids_not_a_unit(blank):
    d = small()
    d.loc[d.index[[10, 11, 500]], "school"] = blank
    fit = ml.fit(M, d)
    assert blank not in fit.design.group_labels and "" not in fit.design.group_labels
    assert dict(fit.data_report.dropped_by_variable) == {"school": 3}
    assert any("3 rows have a blank id" in n for n in fit.data_report.notes)
    same_numbers(fit, ml.fit(M, d.drop(index=d.index[[10, 11, 500]])), rtol=1e-12)


def test_ids_are_normalised_alike_in_a_plain_fit_and_in_a_join():
    s = hsb()[["school", "meanses"]].drop_duplicates("school")
    students = hsb()[["school", "mathach"]].copy()
    # numeric ids in a float column (a missing id makes pandas' integers float), padded text ids
    num = students.assign(school=students["school"].astype(float))
    num.loc[num.index[0], "school"] = np.nan
    joined_by_hand = num.assign(meanses=num["school"].map(dict(zip(s["school"].astype(float), s["meanses"]))))
    plain = ml.fit(MODELS["M2"], joined_by_hand)
    joined = ml.fit(MODELS["M2"], num, level2=s.assign(school=s["school"].astype(int)))
    assert plain.design.group_labels == joined.design.group_labels
    assert plain.design.group_labels[:2] == ("1224", "1288")  # 12.0 is the unit 12, in numeric order
    same_numbers(plain, joined, rtol=1e-12)
    padded = students.assign(school=" " + students["school"] + " ")
    a = ml.fit(MODELS["M2"], padded.assign(meanses=hsb()["meanses"]))
    b = ml.fit(MODELS["M2"], padded, level2=s)
    ref = ml.fit(MODELS["M2"], hsb())
    assert a.design.group_labels == b.design.group_labels == ref.design.group_labels
    same_numbers(a, ref, rtol=1e-12)
    same_numbers(b, ref, rtol=1e-12)


# ----- outputs carry the input's index -------------------------------------------------------------
def test_level1_residuals_align_with_the_input_rows_after_rows_were_dropped():
    d = hsb()[["school", "mathach", "ses", "female"]].copy()
    d.index = pd.Index(np.random.default_rng(3).permutation(len(d)) * 10 + 7)  # not 0..N-1
    rows = d.index[[0, 1, 50, 3000, 7000]]
    d.loc[rows, "ses"] = np.nan
    fit = ml.fit("mathach ~ ses + female + (1 + ses | school)", d)
    r = fit.residuals(level=1)
    assert r.index.equals(d.index.drop(rows))
    d["r"] = r["resid"]  # pandas aligns on the index
    # independently: y - (X beta + Z u_j), from the columns, the unit's effects looked up by its id
    b, u = fit.beta, fit.ranef
    used = d.dropna(subset=["ses"])
    uj = u.loc[used["school"].to_numpy()]
    fitted = (b["Intercept"] + b["ses"] * used["ses"] + b["female"] * used["female"]
              + uj["Intercept"].to_numpy() + uj["ses"].to_numpy() * used["ses"])
    np.testing.assert_allclose(d.loc[used.index, "r"], used["mathach"] - fitted, rtol=1e-9, atol=1e-9)
    assert d.loc[rows, "r"].isna().all()
    d["fitted"] = r["fitted"]
    np.testing.assert_allclose(d.loc[used.index, "fitted"], fitted, rtol=1e-9)
    # unit-level outputs are indexed by the unit ids
    r2 = fit.residuals(level=2)
    assert list(r2.index) == list(u.index)
    np.testing.assert_allclose(r2.loc["1224", "eb_ses"], u.loc["1224", "ses"], rtol=1e-12)


def test_level1_residuals_of_a_joined_fit_keep_the_level1_index():
    students = hsb()[["school", "mathach"]].copy()
    students.index = students.index + 100
    s = hsb()[["school", "meanses"]].drop_duplicates("school")
    fit = ml.fit(MODELS["M2"], students, level2=s)
    assert fit.residuals(level=1).index.equals(students.index)


# ----- degenerate data (item 6) ------------------------------------------------------------------
def test_every_unit_of_one_row_is_refused_as_lme4_refuses_it():
    d = small().reset_index(drop=True)
    d["row"] = np.arange(len(d))
    with pytest.raises(DataError, match=r"Every unit of 'row' has a single row \(1200 units, 1200 rows used\).*lme4"):
        ml.fit("mathach ~ ses + (1 | row)", d)
    # units of one row among larger units stay allowed and listed
    d2 = pd.concat([d, pd.DataFrame({"school": ["X1"], "mathach": [3.0], "ses": [0.2]})], ignore_index=True)
    assert ml.fit(M, d2).data_report.singleton_units == ("X1",)


def test_binary_and_count_outcomes_warn_and_name_the_outcome():
    d = small()
    d["passed"] = (d["mathach"] > 12).astype(int)
    with pytest.warns(MultilevelWarning, match=r"outcome 'passed' looks binary.*planned"):
        ml.fit("passed ~ ses + (1 | school)", d)
    d["absences"] = np.random.default_rng(2).poisson(1.5, len(d))
    with pytest.warns(MultilevelWarning, match=r"outcome 'absences' looks a count.*planned"):
        ml.fit("absences ~ ses + (1 | school)", d)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultilevelWarning)
        ml.fit(M, d)  # a continuous outcome: no warning


@pytest.mark.parametrize("values", [["high", "low"], ["1.5", "2"]])
def test_a_text_weight_column_is_refused_by_name(values):
    d = small()
    d["w"] = np.resize(values, len(d))
    with pytest.raises(DataError, match=r"The sampling weight column 'w' is not numeric.*pd\.to_numeric"):
        ml.fit(M, d, method="ML", sampling_weights="w")


# ----- Parquet files ---------------------------------------------------------------------------------
def test_truncated_and_empty_parquet_files_are_named(tmp_path):
    d = small()
    good = tmp_path / "good.parquet"
    d.to_parquet(good)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"Cannot read '.*cut\.parquet'"):
        ml.fit(M, cut)
    with pytest.raises(DataError, match=r"Cannot read '.*cut\.parquet' as a Parquet file"):
        ml.fit(M, cut, stream=True)
    folder = tmp_path / "parts"
    folder.mkdir()
    d.iloc[:600].to_parquet(folder / "a.parquet")
    (folder / "b.parquet").write_bytes(cut.read_bytes())
    with pytest.raises(DataError, match=r"Cannot read '.*b\.parquet' as a Parquet file.*truncated"):
        ml.fit(M, folder, stream=True)
    (folder / "b.parquet").write_bytes(b"")
    with pytest.raises(DataError, match=r"The Parquet file '.*b\.parquet' is empty"):
        ml.fit(M, str(folder), stream=True)


def test_a_schema_change_between_streamed_files_names_the_file(tmp_path):
    d = small()
    folder = tmp_path / "parts"
    folder.mkdir()
    d.iloc[:600].to_parquet(folder / "a.parquet")
    d.iloc[600:].assign(ses=d["ses"].iloc[600:].map(str)).to_parquet(folder / "b.parquet")
    with pytest.raises(DataError, match=r"'ses' is number .* in '.*a\.parquet' but text .* in '.*b\.parquet'"):
        ml.fit(M, folder, stream=True)
    d.iloc[600:].drop(columns="ses").to_parquet(folder / "b.parquet")
    with pytest.raises(DataError, match=r"The Parquet file '.*b\.parquet' has no column 'ses'"):
        ml.fit(M, folder, stream=True)
    # numbers of another width are the same kind: the streamed fit equals the in-memory one
    d.iloc[600:].assign(ses=d["ses"].iloc[600:].astype(np.float32).astype(np.float64)).to_parquet(folder / "b.parquet")
    d2 = d.copy()
    d2.iloc[600:, d2.columns.get_loc("ses")] = d["ses"].iloc[600:].astype(np.float32).astype(np.float64)
    d.iloc[600:].assign(ses=d2["ses"].iloc[600:].astype(np.float32)).to_parquet(folder / "b.parquet")
    same_numbers(ml.fit(M, folder, stream=True), ml.fit(M, d2), rtol=1e-8)


def test_streamed_fit_takes_ids_and_outcomes_as_the_in_memory_fit(tmp_path):
    d = small()
    blank = d.assign(school=d["school"].where(np.arange(len(d)) != 5, " "))
    floats = d.assign(school=d["school"].astype(float).where(np.arange(len(d)) != 7))
    for name, data in (("blank", blank), ("floats", floats)):
        data.to_parquet(tmp_path / f"{name}.parquet")
        streamed = ml.fit(M, tmp_path / f"{name}.parquet", stream=True)
        memory = ml.fit(M, data)
        same_numbers(streamed, memory, rtol=1e-10)
        assert streamed.design.group_labels == memory.design.group_labels
        assert dict(streamed.data_report.dropped_by_variable) == {"school": 1}
    d.assign(mathach=d["mathach"].map(str)).to_parquet(tmp_path / "text.parquet")
    with pytest.raises(DataError, match=r"outcome 'mathach' is not numeric"):
        ml.fit(M, tmp_path / "text.parquet", stream=True)


def test_chickweight_diet_as_text_matches_lme4():
    # refs/make_refs_text_factors.R: lmer(weight ~ Time * Diet + (1 | Chick)) with Diet the text "1".."4"
    import json
    from pathlib import Path

    ref = json.loads((Path(__file__).resolve().parents[2] / "refs" / "factors" / "chickweight_diet.json").read_text())
    d = pd.DataFrame(ref["data"])
    assert d["Diet"].map(type).eq(str).all()
    fit = ml.fit(ref["formula"], d)
    assert len(fit.beta) == len(ref["beta"]) == 8
    np.testing.assert_allclose(fit.beta.to_numpy(), list(ref["beta"].values()), rtol=1e-5)
    np.testing.assert_allclose(fit.sigma2, ref["sigma2"], rtol=1e-5)
    np.testing.assert_allclose(fit.tau.to_numpy().ravel(), [ref["tau00"]], rtol=1e-5)
    np.testing.assert_allclose(fit.deviance, ref["reml_criterion"], rtol=1e-8)
