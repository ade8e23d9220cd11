"""Real data in: every file format, level-1 and level-2 files joined, missing data at both levels."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pyreadstat
import pytest

import multilevel as ml
from conftest import DATA, MODELS, fitted, hsb
from multilevel.errors import DataError

STUDENT_VARS = ["school", "minority", "female", "ses", "mathach", "cses"]
SCHOOL_VARS = ["school", "size", "sector", "pracad", "disclim", "himinty", "meanses"]


def students() -> pd.DataFrame:
    return hsb()[STUDENT_VARS].copy()


def schools() -> pd.DataFrame:
    return hsb()[SCHOOL_VARS].drop_duplicates("school").reset_index(drop=True)


def same_fit(a: ml.Fit, b: ml.Fit) -> None:
    """Equal to the last digit: the same rows in the same order give the same floating-point numbers."""
    np.testing.assert_array_equal(a.beta.to_numpy(), b.beta.to_numpy())
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.sigma2 == b.sigma2 and a.deviance == b.deviance
    np.testing.assert_array_equal(a.vcov.to_numpy(), b.vcov.to_numpy())
    assert a.n_obs == b.n_obs and a.design.group_labels == b.design.group_labels


def test_seminar_model_2_from_an_spss_and_a_stata_file(tmp_path):
    """Acceptance: students in SPSS, schools in Stata, joined on the school id; equal to the fit
    from the shipped DataFrame to the last digit."""
    pyreadstat.write_sav(students(), tmp_path / "students.sav")
    pyreadstat.write_dta(schools(), tmp_path / "schools.dta")
    from_files = ml.fit(MODELS["M2"], tmp_path / "students.sav", level2=tmp_path / "schools.dta")
    same_fit(from_files, fitted("M2", "REML"))
    r = from_files.data_report
    assert "students.sav" in r.source and "schools.dta" in r.source
    assert r.n_rows_used == 7185 and r.n_units_used == 160
    # the level-equation entry point takes the same two files
    lv = ml.fit_levels("mathach ~ 1", {"Intercept": "meanses + u"}, group="school",
                       data=tmp_path / "students.sav", level2_data=tmp_path / "schools.dta")
    same_fit(lv, from_files)


@pytest.mark.parametrize("kind", ["csv", "csv.gz", "tsv", "parquet", "sav", "dta", "xpt", "polars", "pyarrow", "dict"])
def test_every_format_gives_the_same_fit(tmp_path, kind):
    d = hsb()[["school", "mathach", "meanses"]]
    path = tmp_path / f"hsb.{kind}"
    if kind in ("csv", "csv.gz"):
        d.to_csv(path, index=False)
        data = path
    elif kind == "tsv":
        d.to_csv(path, sep="\t", index=False)
        data = path
    elif kind == "parquet":
        d.to_parquet(path)
        data = path
    elif kind == "sav":
        pyreadstat.write_sav(d, path)
        data = path
    elif kind == "dta":
        pyreadstat.write_dta(d, path)
        data = path
    elif kind == "xpt":
        pyreadstat.write_xport(d, path)
        data = path
    elif kind == "polars":
        import polars

        data = polars.from_pandas(d)
    elif kind == "pyarrow":
        import pyarrow

        data = pyarrow.Table.from_pandas(d)
    else:
        data = {c: d[c].to_numpy() for c in d.columns}
    # text ids read back from CSV as numbers: the labels are the same text
    same_fit(ml.fit(MODELS["M2"], data), fitted("M2", "REML"))


def test_sas_data_set_level2_file():
    fit = ml.fit(MODELS["M2"], students(), level2=DATA / "hsb_schools.sas7bdat")
    np.testing.assert_allclose(fit.beta, fitted("M2", "REML").beta, rtol=1e-12)
    assert ml.read(DATA / "hsb_schools.sas7bdat").shape == (160, 9)


def test_value_labels_become_categories_and_user_missing_codes_missing(tmp_path):
    d = students()
    d.loc[[3, 10, 11], "ses"] = -9.0
    path = tmp_path / "s.sav"
    pyreadstat.write_sav(
        d, path, variable_value_labels={"female": {0: "male", 1: "female"}}, missing_ranges={"ses": [-9.0]}
    )
    r = ml.read(path)
    assert isinstance(r["female"].dtype, pd.CategoricalDtype)
    assert list(r["female"].cat.categories) == ["male", "female"]  # in code order: male is the reference
    assert r["ses"].isna().sum() == 3
    codes = ml.read(path, value_labels="codes")
    assert pd.api.types.is_numeric_dtype(codes["female"])
    fit = ml.fit("mathach ~ female + ses + (1 | school)", path)
    assert "female[T.female]" in fit.beta.index
    assert fit.data_report.dropped_by_variable == (("ses", 3),)
    assert "missing in 'ses': 3 rows" in fit.report()
    numeric = ml.fit("mathach ~ female + ses + (1 | school)", codes)
    assert fit.beta["female[T.female]"] == pytest.approx(numeric.beta["female"], rel=1e-12)


def test_missing_optional_reader_says_which_extra(tmp_path, monkeypatch):
    pyreadstat.write_sav(students().head(50), tmp_path / "s.sav")
    monkeypatch.setitem(sys.modules, "pyreadstat", None)
    with pytest.raises(DataError, match=r"pip install pyreadstat .*multilevel\[files\]'"):
        ml.read(tmp_path / "s.sav")
    students().head(50).to_parquet(tmp_path / "s.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(DataError, match=r"pip install pyarrow .*multilevel\[parquet\]'"):
        ml.read(tmp_path / "s.parquet")


# ----- two tables ---------------------------------------------------------------------------
def test_join_checks_duplicates_unmatched_and_conflicts():
    s = schools()
    with pytest.raises(DataError, match=r"more than one row.*1224"):
        ml.fit(MODELS["M2"], students(), level2=pd.concat([s, s.iloc[:1]]))
    missing = s[~s.school.isin(["1224", "1288"])]
    with pytest.raises(DataError, match=r"2 unit id\(s\).*no row in the level-2 table \(1224, 1288"):
        ml.fit(MODELS["M2"], students(), level2=missing)
    dropped = ml.fit(MODELS["M2"], students(), level2=missing, level2_missing="drop")
    r = dropped.data_report
    assert r.unmatched_level1_ids == ("1224", "1288") and r.n_units_used == 158
    assert r.n_rows_in == 7185 and r.n_rows_used == 7185 - r.unmatched_level1_rows
    assert "level-1 units with no level-2 row dropped" in str(r)
    conflict = students().assign(meanses=hsb()["meanses"] + (hsb()["school"] == "1296") * 0.5)
    with pytest.raises(DataError, match=r"'meanses' is in both tables but differs in 1 unit.*1296"):
        ml.fit(MODELS["M2"], conflict, level2=s)
    agree = students().assign(meanses=hsb()["meanses"])
    same_fit(ml.fit(MODELS["M2"], agree, level2=s), fitted("M2", "REML"))


def test_level2_rows_without_students_are_reported_and_numeric_ids_match_text():
    extra = pd.concat([schools(), pd.DataFrame({"school": ["9999"], "meanses": [0.1], "sector": [1]})])
    extra["school"] = extra["school"].astype(int)  # numbers here, text in the students table
    fit = ml.fit(MODELS["M2"], students(), level2=extra)
    assert fit.data_report.level2_rows_without_units == ("9999",)
    same_fit(fit, fitted("M2", "REML"))


def test_missing_level2_values_are_refused_or_their_units_dropped():
    s = schools()
    s.loc[s.school.isin(["1224", "1288"]), "meanses"] = np.nan
    with pytest.raises(DataError, match=r"2 units have missing level-2 values: 1224 \(meanses\), 1288 \(meanses\)"):
        ml.fit(MODELS["M2"], students(), level2=s)
    fit = ml.fit(MODELS["M2"], students(), level2=s, level2_missing="drop")
    r = fit.data_report
    assert [u for u, _ in r.level2_dropped] == ["1224", "1288"] and r.n_units_used == 158
    assert r.dropped_by_variable == ()  # not counted as level-1 listwise deletion
    # one file, level equations: a declared level-2 variable follows the same rule
    one = hsb().copy()
    one.loc[one.school == "1224", "meanses"] = np.nan
    with pytest.raises(DataError, match="missing level-2 values: 1224"):
        ml.fit_levels("mathach ~ 1", {"Intercept": "meanses + u"}, group="school", data=one)


def test_level1_missing_values_are_dropped_listwise_and_reported_by_variable():
    d = hsb().copy()
    d.loc[[0, 1, 2], "ses"] = np.nan
    d.loc[[2, 3], "mathach"] = np.nan
    fit = ml.fit("mathach ~ ses + (1 | school)", d)
    r = fit.data_report
    assert r.n_rows_used == 7185 - 4
    assert dict(r.dropped_by_variable) == {"ses": 3, "mathach": 2}


# ----- review findings: labels on some codes only, separators, ids, float32, polars order --------
def test_labels_on_special_codes_only_keep_the_numbers(tmp_path):
    d = schools()
    pyreadstat.write_dta(d, tmp_path / "s.dta", variable_value_labels={"size": {9999: "huge"}, "sector": {0: "public", 1: "catholic"}})
    r = ml.read(tmp_path / "s.dta")
    assert pd.api.types.is_numeric_dtype(r["size"])  # partly labelled: numbers kept
    assert list(r["sector"].cat.categories) == ["public", "catholic"]
    fit = ml.fit("mathach ~ size + cses + (1 | school)", students(), level2=tmp_path / "s.dta")
    assert "size" in fit.beta.index and len(fit.beta) == 3
    assert any("'size' has value labels for 1 codes" in n for n in fit.data_report.notes)
    assert "kept as numbers" in fit.report()


def test_separator_of_a_csv(tmp_path):
    d = hsb()[["school", "mathach", "meanses"]]
    d.to_csv(tmp_path / "semi.csv", sep=";", index=False)
    with pytest.raises(DataError, match=r"separator is probably ';'.*sep=';'"):
        ml.read(tmp_path / "semi.csv")
    same_fit(ml.fit(MODELS["M2"], ml.read(tmp_path / "semi.csv", sep=";")), fitted("M2", "REML"))
    d.to_csv(tmp_path / "comma.csv", sep=";", decimal=",", index=False)
    with pytest.raises(DataError, match="decimal commas"):
        ml.fit(MODELS["M2"], ml.read(tmp_path / "comma.csv", sep=";"))
    same_fit(ml.fit(MODELS["M2"], ml.read(tmp_path / "comma.csv", sep=";", decimal=",")), fitted("M2", "REML"))


def test_join_hints_and_float32_copies(tmp_path):
    s = schools()
    padded = s.assign(school="0" + s["school"])
    with pytest.raises(DataError, match=r"No id matches at all.*leading zeros"):
        ml.fit(MODELS["M2"], students(), level2=padded)
    # a shared variable stored in 4 bytes in one table (Stata's default float) still agrees
    st = students().assign(meanses=hsb()["meanses"].astype(np.float32))
    same_fit(ml.fit(MODELS["M2"], st, level2=s), fitted("M2", "REML"))
    lab = students().assign(sector=pd.Categorical(hsb()["sector"].map({0: "public", 1: "catholic"})))
    with pytest.raises(DataError, match="labelled \\(a category\\) in one and numeric in the other"):
        ml.fit(MODELS["M2"], lab, level2=s)


def test_polars_categories_give_the_same_reference_level_as_pandas():
    import polars

    d = hsb()[["school", "mathach", "sector"]].assign(kind=lambda x: np.where(x.sector == 1, "public", "catholic"))
    d = d.iloc[::-1].reset_index(drop=True)  # "public" appears first
    pl = polars.from_pandas(d).with_columns(polars.col("kind").cast(polars.Categorical))
    a = ml.fit("mathach ~ kind + (1 | school)", d)
    b = ml.fit("mathach ~ kind + (1 | school)", pl)
    assert list(a.beta.index) == list(b.beta.index) == ["Intercept", "kind[T.public]"]


def test_text_with_many_values_is_not_made_a_factor():
    d = students().assign(code=lambda x: "id" + x.index.astype(str))
    with pytest.raises(DataError, match="'code' is text with 7185 different values"):
        ml.fit("mathach ~ code + (1 | school)", d)
