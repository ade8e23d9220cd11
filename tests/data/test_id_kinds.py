"""Unit ids of every kind (integers, text as object or pandas/Arrow text, pandas categories, Arrow
dictionaries) give the same fit, and their checks judge each distinct value, not each row."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import multilevel as ml
from multilevel.data.checks import _numeric_looking_text, plain_column
from multilevel.data.join import canonical_ids, id_kind, normalise_ids, not_single_rows
from multilevel.design.builder import unit_codes
from multilevel.errors import DataError

FORMULA = "y ~ x * w + (1 + x | g)"


def _data(seed: int = 0, J: int = 40, n: int = 800) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, J, n)
    g[:J] = np.arange(J)
    w = rng.normal(size=J)
    x = rng.normal(size=n)
    y = 1 + x + w[g] + rng.normal(size=J)[g] + 0.5 * rng.normal(size=J)[g] * x + rng.normal(size=n)
    return pd.DataFrame({"g": g, "y": y, "x": x, "w": w[g]})


def _kinds(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    text = ("s" + df["g"].astype(str)).to_numpy(dtype=object)
    padded = np.array([f" {t}  " if i % 3 else t for i, t in enumerate(text)], dtype=object)
    return {
        "object": df.assign(g=pd.Series(text, dtype=object)),
        "object padded": df.assign(g=pd.Series(padded, dtype=object)),
        "str": df.assign(g=pd.Series(text, dtype=object).astype(str)),
        "string[pyarrow]": df.assign(g=pd.Series(text, dtype="string[pyarrow]")),
        "category": df.assign(g=pd.Series(text, dtype=object).astype("category")),
        "category unsorted": df.assign(g=pd.Categorical(text, categories=sorted(set(text), reverse=True))),
        "arrow dictionary": df.assign(g=pd.Series(pd.arrays.ArrowExtensionArray(pa.array(text).dictionary_encode()))),
    }


@pytest.mark.parametrize("kind", list(_kinds(_data())))
def test_every_kind_of_text_id_gives_the_fit_of_the_text_ids(kind):
    df = _data()
    want = ml.fit(FORMULA, _kinds(df)["object"])
    got = ml.fit(FORMULA, _kinds(df)[kind])
    assert got.deviance == pytest.approx(want.deviance, rel=1e-10)
    # the same units (a categorical column's in the order of its categories)
    assert sorted(map(str, got.ranef.index)) == sorted(map(str, want.ranef.index))
    aligned = got.ranef.set_axis(list(map(str, got.ranef.index))).loc[list(map(str, want.ranef.index))]
    np.testing.assert_allclose(aligned.to_numpy(), want.ranef.to_numpy(), rtol=1e-7, atol=1e-9)


def test_integer_and_text_ids_give_the_same_fit():
    df = _data(1)
    a, b = ml.fit(FORMULA, df), ml.fit(FORMULA, _kinds(df)["object"])
    assert b.deviance == pytest.approx(a.deviance, rel=1e-10)


def test_blank_and_padded_text_ids_are_counted_once_per_distinct_text():
    ids = pd.Series([" a", "a", "", "  ", None, "b ", "a"], dtype=object)
    found: list = []
    out, blank = normalise_ids(ids, found)
    assert blank == 2
    assert out.tolist()[:2] == ["a", "a"] and out.isna().tolist() == [False, False, True, True, True, False, False]
    (codes, distinct) = found[0]
    # the codes handed over name the stripped ids; unit_codes gives the units of pd.factorize(sort=True)
    assert [distinct[c] if c >= 0 else None for c in codes] == ["a", "a", None, None, None, "b", "a"]
    got = unit_codes(out, "g", found[0])
    want = unit_codes(out, "g")
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1].tolist() == want[1].tolist() == ["a", "b"]


def test_categorical_ids_are_numbered_in_their_categories_order():
    ids = pd.Series(pd.Categorical(["b", None, "c", "b"], categories=["c", "z", "b"]))
    codes, units = unit_codes(ids, "g")
    want_codes, want_units = pd.factorize(ids, sort=True)
    np.testing.assert_array_equal(codes, want_codes)
    assert units.tolist() == list(np.asarray(want_units)) == ["c", "b"]


@pytest.mark.parametrize("values,kind", [
    ([1, 2.0, np.int64(3), None], "number"),
    (["a", None, "b"], "text"),
    ([True, False], "text"),  # booleans are not numbers of an id (as before)
    ([1, "a"], "mixed"),
    ([True, 1], "mixed"),
    ([], "number"),
])
def test_id_kind_of_object_columns(values, kind):
    assert id_kind(pd.Series(values, dtype=object)) == kind


def test_id_kind_of_categories_counts_only_the_categories_in_use():
    assert id_kind(pd.Series(pd.Categorical(["a", "a"], categories=["a", 5]))) == "text"
    assert id_kind(pd.Series(pd.Categorical([1, "a"]))) == "mixed"


def test_cells_holding_lists_are_found_by_their_kind():
    assert not_single_rows(pd.Series(["a", [1], (1, 2), None, np.array([1])], dtype=object)) == [1, 2, 4]
    assert not_single_rows(pd.Series(["a", "b"], dtype=object)) == []


def test_canonical_ids_write_each_distinct_id_once_as_before():
    assert canonical_ids(pd.Series([3.0, 1.5, np.nan, 3.0])).tolist()[:2] == ["3", "1.5"]
    assert canonical_ids(pd.Series([" x", "y", None], dtype=object)).tolist()[:2] == ["x", "y"]
    assert canonical_ids(pd.Series([True, False])).tolist() == ["True", "False"]


def test_arrow_dictionary_text_becomes_the_categorical_of_its_values():
    arr = pa.chunked_array([pa.array(["b", "a", None]).dictionary_encode(), pa.array(["c", "b"]).dictionary_encode()])
    got = plain_column(pd.Series(pd.arrays.ArrowExtensionArray(arr), name="v"))
    assert list(got.cat.categories) == ["a", "b", "c"]
    assert got.astype(object).tolist()[:2] == ["b", "a"] and got.isna().tolist() == [False, False, True, False, False]
    ordered = pa.DictionaryArray.from_arrays(pa.array([1, 0, 1]), pa.array(["z", "y", "unused"]), ordered=True)
    got = plain_column(pd.Series(pd.arrays.ArrowExtensionArray(ordered)))
    assert list(got.cat.categories) == ["y", "z"] and got.cat.ordered  # in order of first appearance


def test_text_among_numbers_names_each_text_and_its_rows():
    col = pd.Series(["1", "2.5", "n/a", None, "3", "n/a", "x", "4", "5", "6"], dtype=object)
    looks, bad = _numeric_looking_text(col)
    assert looks and bad == {"n/a": [2, 5], "x": [6]}
    with pytest.raises(DataError, match=r"'n/a' \(rows 2, 5\); 'x' \(row 6\)"):
        v = np.concatenate([col.to_numpy(), np.arange(790.0).astype(str)]).astype(object)
        ml.fit("y ~ v + (1 | g)", _data().assign(v=pd.Series(v, dtype=object)))
