"""Issue 11: the second probe's data-handling findings (plots' options, unit ids of any kind,
level-2 equations, contrast messages, unused categories, streamed and missing paths, formula
messages, messages that describe the data as it is). Each test failed before its fix."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from conftest import hsb
from multilevel.data.join import canonical_ids
from multilevel.errors import DataError, SpecificationError


def sim(J: int = 20, n: int = 8, seed: int = 1) -> pd.DataFrame:
    r = np.random.default_rng(seed)
    g = np.repeat(np.arange(J), n)
    x = r.normal(size=J * n)
    w = np.repeat(r.normal(size=J), n)
    y = 1 + 0.5 * x + 0.3 * w + np.repeat(r.normal(size=J), n) + r.normal(size=J * n)
    return pd.DataFrame(dict(y=y, x=x, w=w, g=g))


def quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.fit(*args, **kwargs)


# ----- item 1: fit.plot options ---------------------------------------------------------------
@pytest.fixture(scope="module")
def sector_fits():
    pytest.importorskip("matplotlib")
    h = hsb()
    model = "mathach ~ sector * cwc(ses) + (cwc(ses) | school)"
    numeric = quiet_fit(model, h)
    text = quiet_fit(model, h.assign(sector=h.sector.map({0: "public", 1: "catholic"})))
    return numeric, text


def test_model_graph_lines_at_the_levels_of_a_text_factor_match_the_numeric_coding(sector_fits):
    numeric, text = sector_fits
    ax_t = text.plot("model", x="cwc(ses)", lines={"sector": ["public", "catholic"]}).axes[0]
    ax_n = numeric.plot("model", x="cwc(ses)", lines={"sector": [0, 1]}).axes[0]
    assert [ln.get_label() for ln in ax_t.lines] == ["sector = public", "sector = catholic"]
    for lt, ln in zip(ax_t.lines, ax_n.lines):
        np.testing.assert_allclose(lt.get_ydata(), ln.get_ydata(), rtol=1e-7)
    # "levels": every level, in the order of the data's levels
    assert len(text.plot("model", x="cwc(ses)", lines={"sector": "levels"}).axes[0].lines) == 2


@pytest.mark.parametrize(
    "lines, match",
    [
        (["sector"], r"lines= must be a dict .*lines=\{'sector': 'quartiles'\}"),
        ({"sector": 1}, r"lines=\{'sector': 1\}: give a list of values of 'sector' \(e.g. \[1\]"),
        ({"sector": ["a"]}, r"'a' is not a number, and 'sector' is numeric"),
        ({"sectr": [0, 1]}, r"'sectr' \(a line variable\) is not a variable of this fit. Did you mean 'sector'"),
    ],
)
def test_model_graph_bad_lines_are_named(sector_fits, lines, match):
    numeric, _ = sector_fits
    with pytest.raises((SpecificationError, DataError), match=match):
        numeric.plot("model", x="cwc(ses)", lines=lines)


def test_model_graph_text_factor_lines_refuse_quartiles_and_unknown_levels(sector_fits):
    _, text = sector_fits
    with pytest.raises(SpecificationError, match=r"'sector' is a factor \(levels 'public', 'catholic'\)"):
        text.plot("model", x="cwc(ses)", lines={"sector": "quartiles"})
    with pytest.raises(SpecificationError, match=r"'publc' is not a level of 'sector'.*Did you mean 'public'"):
        text.plot("model", x="cwc(ses)", lines={"sector": ["publc"]})


def test_unknown_plot_options_list_the_accepted_ones(sector_fits):
    numeric, _ = sector_fits
    with pytest.raises(SpecificationError, match=r"fit\.plot\('qq'\) has no option 'colour'\. Its options are: none"):
        numeric.plot("qq", colour="red")
    with pytest.raises(SpecificationError, match=r"no option 'line'\. Did you mean 'lines'\? Its options are: x, lines, n_points"):
        numeric.plot("model", line={"sector": [0, 1]})


# ----- item 2: ids of any kind; cells holding several values -----------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda s: pd.to_datetime(s, unit="D"),
        lambda s: pd.to_timedelta(s, unit="D"),
        lambda s: pd.Categorical(s),
        lambda s: s.astype(float),
    ],
    ids=["datetime", "timedelta", "category of numbers", "float"],
)
def test_ids_of_any_single_value_dtype_are_units(make):
    d = sim()
    ref = quiet_fit("y ~ x + (1 | g)", d)
    fit = quiet_fit("y ~ x + (1 | g)", d.assign(g=make(d.g)))
    assert fit.n_groups == ref.n_groups == 20
    assert fit.deviance == pytest.approx(ref.deviance, rel=1e-10)
    np.testing.assert_allclose(np.sort(fit.ranef["Intercept"].to_numpy()), np.sort(ref.ranef["Intercept"].to_numpy()), atol=1e-8)


def test_datetime_ids_are_labelled_as_the_level2_join_labels_them():
    d = sim()
    ids = pd.to_datetime(d.g, unit="D")
    fit = quiet_fit("y ~ x + (1 | g)", d.assign(g=ids))
    assert list(fit.ranef.index) == sorted(pd.unique(ids))  # the ids themselves, as datetimes


def test_bool_ids_are_two_units():
    d = sim()
    fit = quiet_fit("y ~ x + (1 | g)", d.assign(g=d.g % 2 == 0))
    assert fit.n_groups == 2


def test_tuple_ids_are_refused_as_not_single_values():
    d = sim()
    with pytest.raises(DataError, match=r"The id column 'g' holds tuples, not single values \(rows 0, 1, 2"):
        ml.fit("y ~ x + (1 | g)", d.assign(g=[(a, 1) for a in d.g]))


def test_a_column_of_lists_or_complex_numbers_is_refused():
    d = sim()
    with pytest.raises(DataError, match=r"The variable 'x' holds lists, not single values"):
        ml.fit("y ~ x + (1 | g)", d.assign(x=[[a, 1.0] for a in d.x]))
    with pytest.raises(DataError, match=r"The predictor 'x' holds complex numbers"):
        ml.fit("y ~ x + (1 | g)", d.assign(x=d.x + 1j))
    with pytest.raises(DataError, match=r"The outcome 'y' holds complex numbers"):
        ml.fit("y ~ x + (1 | g)", d.assign(y=d.y + 0j))


# ----- item 3: level-2 equations ---------------------------------------------------------------
def test_level2_equations_as_one_string_get_the_dict_form():
    with pytest.raises(SpecificationError, match=r"level2 must be a dict .*not a str: e\.g\. level2=\{'Intercept': 'sector \+ u', 'cwc\(ses\)': 'sector \+ u'\}"):
        ml.fit_levels("mathach ~ 1 + cwc(ses)", "sector + u", group="school", data=hsb())


@pytest.mark.parametrize("name", ["u", "U"])
def test_a_data_column_named_u_is_not_taken_for_the_random_marker(name):
    h = hsb().assign(**{name: hsb().meanses})
    with pytest.raises(SpecificationError, match=rf"data also have a column named '{name}'.*Write `{name}` \(in backticks\)"):
        ml.fit_levels("mathach ~ 1 + cwc(ses)", {"Intercept": "sector + u"}, group="school", data=h)


def test_a_backticked_u_is_the_column():
    h = hsb()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = ml.fit_levels("mathach ~ 1 + cwc(ses)", {"Intercept": "sector + `u` + random"}, group="school", data=h.assign(u=h.meanses))
        b = ml.fit_levels("mathach ~ 1 + cwc(ses)", {"Intercept": "sector + meanses + u"}, group="school", data=h)
    assert list(a.fixed.index) == ["Intercept", "sector", "u", "cwc(ses)"]
    np.testing.assert_allclose(a.fixed.estimate.to_numpy(), b.fixed.estimate.to_numpy(), rtol=1e-8)


# ----- item 4: contrast messages ---------------------------------------------------------------
def test_contrast_messages_show_the_users_text_and_the_models_name():
    fit = quiet_fit("mathach ~ sector * cwc(ses) + (1 | school)", hsb())
    with pytest.raises(SpecificationError) as e:
        fit.test("cwc(ses):sector = 0")
    msg = str(e.value)
    assert "_N" not in msg
    assert "'cwc(ses):sector'" in msg and "Did you mean 'sector:cwc(ses)'" in msg


def test_backticked_names_in_a_contrast():
    h = hsb()
    fit = quiet_fit("mathach ~ `a b` + (1 | school)", h.assign(**{"a b": h.ses}))
    assert fit.test("`a b` = 0").estimates.estimate.iloc[0] == pytest.approx(fit.fixed.estimate["a b"])
    with pytest.raises(SpecificationError) as e:
        fit.test("`a c` = 0")
    assert "_N" not in str(e.value) and "Did you mean 'a b'" in str(e.value)


# ----- item 5: unused categories ---------------------------------------------------------------
def test_unused_categories_are_dropped_as_a_text_column_has_none():
    h = hsb()
    grp = np.where(h.female == 1, "f", "m")
    cat = quiet_fit("mathach ~ grp + (1 | school)", h.assign(grp=pd.Categorical(grp, categories=["f", "m", "other"])))
    txt = quiet_fit("mathach ~ grp + (1 | school)", h.assign(grp=grp))
    assert list(cat.fixed.index) == list(txt.fixed.index) == ["Intercept", "grp[T.m]"]
    assert cat.deviance == pytest.approx(txt.deviance, rel=1e-12)
    assert any("'grp' is a categorical column with 1 category no row used has ('other')" in n for n in cat.data_report.notes)


def test_a_category_present_only_in_dropped_rows_is_dropped():
    h = hsb()
    grp = np.where(h.female == 1, "f", np.where(h.minority == 1, "other", "m"))
    d = h.assign(grp=pd.Categorical(grp, categories=["f", "m", "other"]))
    d.loc[d.grp == "other", "ses"] = np.nan
    cat = quiet_fit("mathach ~ grp + ses + (1 | school)", d)
    txt = quiet_fit("mathach ~ grp + ses + (1 | school)", d.assign(grp=d.grp.astype(str)))
    assert list(cat.fixed.index) == list(txt.fixed.index)
    assert cat.deviance == pytest.approx(txt.deviance, rel=1e-12)


# ----- items 6, 7: streamed and missing paths --------------------------------------------------
def test_a_streamed_fit_names_the_files_columns(tmp_path):
    pytest.importorskip("pyarrow")
    d = sim()
    (tmp_path / "pq").mkdir()
    d.iloc[:80].to_parquet(tmp_path / "pq" / "a.parquet")
    d.iloc[80:].to_parquet(tmp_path / "pq" / "b.parquet")
    with pytest.raises(DataError, match=r"Column 'xx' .* Did you mean 'x'\? The data have 4 columns: y, x, w, g"):
        ml.fit("y ~ xx + (1 | g)", str(tmp_path / "pq") + "/", stream=True)


@pytest.mark.parametrize("stream", [None, True])
def test_a_missing_folder_is_said_to_be_missing(tmp_path, stream):
    path = str(tmp_path / "nope") + "/"
    with pytest.raises(DataError, match=rf"Cannot read '{path}': there is no such folder or file \(looked in {tmp_path}\)"):
        ml.fit("y ~ x + (1 | g)", path, stream=stream)


def test_a_missing_file_names_close_files(tmp_path):
    sim().to_csv(tmp_path / "data.csv", index=False)
    with pytest.raises(DataError, match=r"no such file \(looked in .*\)\. Did you mean 'data\.csv'"):
        ml.read(tmp_path / "dta.csv")


# ----- item 8: formula messages ----------------------------------------------------------------
def test_two_names_in_a_row_suggest_backticks():
    with pytest.raises(SpecificationError, match=r"two names in a row, 'my' and 'x'.*backticks: `my x`") as e:
        ml.fit("y ~ my x + (1 | g)", sim().assign(**{"my x": 1.0}))
    assert "\x1b" not in str(e.value) and "\u29db" not in str(e.value)


def test_formulaic_messages_lose_their_colour_codes():
    with pytest.raises(SpecificationError) as e:
        ml.fit("y ~ x * + (1 | g)", sim())
    assert "\x1b" not in str(e.value) and "\u29db" not in str(e.value) and "\u29da" not in str(e.value)
    from multilevel.errors import plain_message

    assert plain_message(ValueError("a\n\n\u29db\x1b[1;31m`x`\x1b[0m\u29da")) == "a `x`"


@pytest.mark.parametrize("name, formula", [("a:b", "mathach ~ `a:b` + (1 | school)"), ("a|b", "mathach ~ `a|b` + (1 | school)"),
                                           ("a|b", "mathach ~ ses + (`a|b` | school)")])
def test_backticked_names_with_colon_or_bar_are_refused_with_a_rename(name, formula):
    h = hsb()
    with pytest.raises(SpecificationError, match=rf"The column name '{__import__('re').escape(name)}' .*Rename the column"):
        ml.fit(formula, h.assign(**{name: h.ses}))


# ----- item 9: messages that describe the data as it is ----------------------------------------
def test_a_bool_outcome_is_taken_as_0_1_as_r_does():
    d = sim().assign(y=lambda t: t.y > 1)
    with pytest.warns(ml.errors.MultilevelWarning, match="looks binary"):
        fit = ml.fit("y ~ x + (1 | g)", d)
    ref = quiet_fit("y ~ x + (1 | g)", d.assign(y=d.y.astype(float)))
    assert fit.deviance == pytest.approx(ref.deviance, rel=1e-12)
    assert "The outcome 'y' is True/False: taken as 1/0 (as R does)." in fit.data_report.notes


def test_dates_and_durations_as_predictors_are_called_so():
    d = sim()
    with pytest.raises(DataError, match=r"The predictor 'x' is a date/time column .*\.dt\.days"):
        ml.fit("y ~ x + (1 | g)", d.assign(x=pd.date_range("2020", periods=len(d))))
    with pytest.raises(DataError, match=r"The predictor 'x' is a duration column"):
        ml.fit("y ~ x + (1 | g)", d.assign(x=pd.to_timedelta(np.arange(len(d)), unit="h")))


def test_a_grouping_factor_in_the_index_says_reset_index():
    with pytest.raises(DataError, match=r"'school' .* is the data's index .*df\.reset_index\(\)"):
        ml.fit("mathach ~ ses + (1 | school)", hsb().set_index("school"))


def test_large_whole_number_float_ids_are_integer_labels_with_a_note():
    d = sim()
    ids = (d.g + 1224) * 1e14
    fit = quiet_fit("y ~ x + (1 | g)", d.assign(g=ids))
    # unit-level outputs carry the ids as integers (their own type, not text)
    assert list(fit.ranef.index) == [int(v) for v in sorted(set(canonical_ids(ids)), key=int)]
    assert fit.ranef.index[0] == 122400000000000000
    assert any("stored as floating-point numbers" in n for n in fit.data_report.notes)
