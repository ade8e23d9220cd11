"""The bad-input catalogue (docs/bad-input.md): one test per row, each checking the message."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from conftest import hsb
from multilevel.errors import DataError

M = "mathach ~ ses + (1 | school)"


def small() -> pd.DataFrame:
    return hsb()[["school", "mathach", "ses", "sector"]].iloc[:600].copy()


def test_empty_file(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"is empty \(0 bytes\)"):
        ml.fit(M, tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("school,mathach,ses\n")
    with pytest.raises(DataError, match=r"has no rows \(only the column names"):
        ml.read(tmp_path / "header.csv")
    with pytest.raises(DataError, match="The data have no rows"):
        ml.fit(M, small().iloc[:0])


def test_unknown_format(tmp_path):
    (tmp_path / "data.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match=r"file type '\.xlsx' is not known\. multilevel reads \.csv"):
        ml.read(tmp_path / "data.xlsx")


def test_unreadable_file(tmp_path):
    with pytest.raises(DataError, match="there is no such file"):
        ml.read(tmp_path / "nothere.csv")
    (tmp_path / "broken.sav").write_bytes(b"this is not an SPSS file" * 10)
    with pytest.raises(DataError, match=r"Cannot read '.*broken\.sav' as a \.sav file: "):
        ml.read(tmp_path / "broken.sav")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match="it is a folder"):
        ml.read(tmp_path / "folder.csv")


def test_id_column_of_mixed_types():
    d = small()
    d["school"] = d["school"].astype(object)
    d.loc[:9, "school"] = 1224  # numbers among text ids
    with pytest.raises(DataError, match=r"The id column 'school' in the data mixes numbers \(1224\) and text \('1224', '1288'"):
        ml.fit(M, d)


def test_all_values_missing_in_a_predictor():
    d = small().assign(ses=np.nan)
    with pytest.raises(DataError, match=r"'ses' has no value in any of the 600 rows \(all missing\)"):
        ml.fit(M, d)


def test_infinite_values():
    d = small()
    d.loc[5, "ses"] = np.inf
    with pytest.raises(DataError, match=r"'ses' has 1 infinite value \(row 5\)"):
        ml.fit(M, d)


def test_constant_predictor():
    d = small().assign(ses=2.0)
    with pytest.raises(DataError, match=r"The predictor 'ses' has the same value \(2\) in every row used"):
        ml.fit(M, d)


def test_outcome_with_one_value():
    d = small().assign(mathach=7.0)
    with pytest.raises(DataError, match=r"The outcome 'mathach' takes a single value \(7\) in every row used"):
        ml.fit(M, d)


def test_group_of_one_row_is_allowed_and_reported():
    d = pd.concat([small(), pd.DataFrame({"school": ["X1"], "mathach": [10.0], "ses": [0.1], "sector": [0]})], ignore_index=True)
    fit = ml.fit(M, d)
    assert fit.data_report.singleton_units == ("X1",)
    assert "1 units have a single row: X1" in fit.report()


def test_text_in_a_numeric_column(tmp_path):
    d = small()
    d["ses"] = d["ses"].astype(object)
    d.loc[[3, 9], "ses"] = "n/a"
    d.loc[12, "ses"] = "."
    d.to_csv(tmp_path / "d.csv", index=False)
    expected = r"'ses' is a column of numbers with some text in it: 'n/a' \(rows 3, 9\); '.' \(row 12\)"
    with pytest.raises(DataError, match=expected):
        ml.fit(M, d)
    # pandas' CSV reader already takes 'n/a' as missing; '.' is left
    with pytest.raises(DataError, match=r"'ses' is a column of numbers with some text in it: '\.' \(row 12\)"):
        ml.fit(M, tmp_path / "d.csv")
    # read with that code as missing too: the fit drops the rows and says so
    fit = ml.fit(M, ml.read(tmp_path / "d.csv", na_values=["."]))
    assert dict(fit.data_report.dropped_by_variable) == {"ses": 3}


def test_numbers_stored_as_text_are_a_factor_as_in_r():
    # a text column is a factor whatever its values look like (R's rule); as a factor of 257 levels
    # it is refused, with the conversion to do (tests/test_data_handling.py has the factor fits)
    d = small()
    d["ses"] = d["ses"].astype(str)
    with pytest.raises(DataError, match=r"'ses' is text whose values look like numbers .*pd\.to_numeric"):
        ml.fit(M, d)
    d["ses"] = pd.to_numeric(d["ses"])
    np.testing.assert_allclose(ml.fit(M, d).beta.to_numpy(), ml.fit(M, small()).beta.to_numpy(), rtol=1e-12)


def test_not_a_table():
    with pytest.raises(DataError, match="must be a file path or a table"):
        ml.fit(M, 42)
