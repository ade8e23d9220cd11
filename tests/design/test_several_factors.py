"""Issue 14: the design of a model with several grouping factors (nested, crossed, interactions):
the factors' codes and labels, the checks per factor, the nesting facts and the data-report note,
the blocked summaries against the dense [Z1 Z2 X y]'[Z1 Z2 X y], and the clear refusals."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import block_diag

from multilevel.data.weights import SamplingWeights
from multilevel.design.builder import Grouping, build_design, factor_codes
from multilevel.design.nesting import implicit_nesting_notes, is_nested, nesting
from multilevel.errors import DataError, SpecificationError
from multilevel.model.formula import parse_formula


def classrooms(n_school: int = 10, n_room: int = 4, pupils: int = 5, seed: int = 1, unique_rooms: bool = False) -> pd.DataFrame:
    """Pupils in rooms in schools; rooms numbered 1..n_room in each school (or uniquely)."""
    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(n_school), n_room * pupils)
    room = np.tile(np.repeat(np.arange(1, n_room + 1), pupils), n_school)
    if unique_rooms:
        room = school * 100 + room
    x = rng.normal(size=school.size)
    w = rng.normal(2.0, 1.0, size=school.size)
    u = rng.normal(size=n_school)[school] + rng.normal(size=room.max() + 1)[room] * 0.5
    return pd.DataFrame({"school": school, "room": room, "x": x, "w": w, "y": 1 + x + u + rng.normal(size=school.size)})


def design(formula: str, frame: pd.DataFrame, **kw):
    return build_design(parse_formula(formula), frame, **kw)


# ----- the factors and their codes ---------------------------------------------------------------
def test_two_factors_each_have_their_codes_and_the_first_is_the_design_group():
    d = design("y ~ x + (x | school) + (1 | room)", classrooms())
    assert [g.name for g in d.groupings] == ["school", "room"]
    assert [g.n_levels for g in d.groupings] == [10, 4]
    assert d.term_grouping == (0, 1) and d.blocks == ((0, 1), (2,))
    assert d.z_names == ("Intercept", "x", "Intercept")  # the same name on two factors: two effects
    assert d.group == "school" and d.codes is d.groupings[0].codes and d.units is d.groupings[0].units
    assert d.n_factors == 2 and d.factor_blocks(1) == (2,)
    assert d.coefficients == ()  # HLM's level form is of one grouping
    for g in d.groupings:
        assert g.codes.dtype == np.intp and set(np.unique(g.codes)) == set(range(g.n_levels))
    assert d.groupings[1].labels == ("1", "2", "3", "4")
    assert d.data_report.factor_units == (("school", 10), ("room", 4))
    assert "Units of 'room': 4 used" in str(d.data_report)


def test_one_factor_designs_have_their_one_grouping():
    d = design("y ~ x + (x | school)", classrooms())
    (g,) = d.groupings
    assert (g.name, g.codes, g.units) == ("school", d.codes, d.units)
    assert d.term_grouping == (0,) and d.n_factors == 1 and d.coefficients
    assert d.data_report.factor_units == () and "Level-2 units: 10 used of 10" in str(d.data_report)


def test_an_interaction_factor_has_lme4s_levels_and_labels():
    # R: d <- data.frame(a = rep(c("y", "x", "z"), each = 8), b = rep(c(2, 10, 1, 3), 6));
    # levels(lmer(y ~ (1 | a/b), d)@flist[["b:a"]]): b's levels slowest, numbers by value
    frame = pd.DataFrame({"a": np.repeat(["y", "x", "z"], 8), "b": np.tile([2, 10, 1, 3], 6)})
    codes, units = factor_codes("b:a", frame.__getitem__)
    assert list(units) == ["1:x", "1:y", "1:z", "2:x", "2:y", "2:z", "3:x", "3:y", "3:z", "10:x", "10:y", "10:z"]
    labels = np.asarray(units)[codes]
    assert list(labels[:4]) == ["2:y", "10:y", "1:y", "3:y"]
    frame["y"] = np.random.default_rng(0).normal(size=len(frame))
    d = design("y ~ 1 + (1 | a/b)", frame)
    assert [g.name for g in d.groupings] == ["a", "b:a"]
    assert d.groupings[1].labels == tuple(units) and d.groupings[0].labels == ("x", "y", "z")
    assert is_nested(d.groupings[1], d.groupings[0]) and not is_nested(d.groupings[0], d.groupings[1])


@pytest.mark.parametrize("categorical", [False, True])
def test_the_levels_of_a_three_column_factor_are_lme4s(categorical):
    # R: d <- expand.grid(a = c(10, 2), b = c("q", "p"), c = c(3, 1), r = 1:3, stringsAsFactors = s)
    # levels(lmer(y ~ (1 | a/b/c), d)@flist[["c:(b:a)"]]): text sorted (s = FALSE); a factor's
    # levels in their own order (s = TRUE: q before p)
    rows = [(a, b, c) for _ in range(3) for c in (3, 1) for b in ("q", "p") for a in (10, 2)]
    frame = pd.DataFrame(rows, columns=["a", "b", "c"])
    if categorical:
        frame["b"] = pd.Categorical(frame["b"], categories=["q", "p"])
    first, second = ("q", "p") if categorical else ("p", "q")
    expected = [f"{c}:{b}:{a}" for c in (1, 3) for b in (first, second) for a in (2, 10)]
    assert list(factor_codes("c:(b:a)", frame.__getitem__)[1]) == expected


def test_three_levels_name_the_deepest_factor_as_lme4():
    frame = classrooms()
    frame["desk"] = np.tile([1, 2], len(frame) // 2)
    d = design("y ~ x + (1 | school/room/desk)", frame)
    assert [g.name for g in d.groupings] == ["school", "room:school", "desk:(room:school)"]
    assert [g.n_levels for g in d.groupings] == [10, 40, 80]
    assert d.groupings[2].labels[:2] == ("1:1:0", "1:1:1")  # desk:room:school, desk slowest
    assert nesting(d.groupings) == (("room:school", "school"), ("desk:(room:school)", "school"),
                                    ("desk:(room:school)", "room:school"))
    assert d.nested == nesting(d.groupings)
    assert design("y ~ x + (1 | school) + (1 | room)", frame).nested == ()  # crossed


def test_a_single_interaction_factor_is_the_design_group():
    d = design("y ~ x + (1 | room:school)", classrooms())
    assert d.group == "room:school" and d.n_groups == 40 and d.group_labels[0] == "1:0"
    assert len(d.coefficients) == 2  # one factor: HLM's classification as before


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 9)), min_size=6, max_size=40), st.randoms(use_true_random=False))
def test_factor_codes_depend_on_neither_the_row_order_nor_the_ids_spelling(pairs, rnd):
    a, b = (np.array(v) for v in zip(*pairs))
    frame = pd.DataFrame({"a": a, "b": b})
    perm = np.array(rnd.sample(range(len(a)), len(a)))
    for name in ("a", "b:a"):
        codes, units = factor_codes(name, frame.__getitem__)
        shuffled, units2 = factor_codes(name, frame.iloc[perm].reset_index(drop=True).__getitem__)
        np.testing.assert_array_equal(shuffled, codes[perm])
        assert list(units2) == list(units)
    # the same ids as text: the same units (the levels are numbered by their text's order, which is
    # that of the numbers for ids of one digit; in general the same partition of the rows)
    text = pd.DataFrame({"a": a.astype(str), "b": b.astype(str)})
    for name in ("b", "b:a"):
        codes, _ = factor_codes(name, frame.__getitem__)
        as_text, _ = factor_codes(name, text.__getitem__)
        if name == "b":
            np.testing.assert_array_equal(as_text, codes)
        # the same partition: a one-to-one map between the two numberings
        assert len(set(zip(codes.tolist(), as_text.tolist()))) == len(set(codes.tolist())) == len(set(as_text.tolist()))


# ----- the checks per factor ---------------------------------------------------------------------
def test_missing_and_blank_ids_of_a_second_factor_drop_their_rows_and_are_reported():
    frame = classrooms()
    frame["room"] = frame["room"].map(lambda r: f"r{r}").astype(object)
    frame.loc[[0, 7], "room"] = np.nan
    frame.loc[[3], "room"] = "  "
    frame.loc[[11], "room"] = " r2 "  # padded: the unit r2
    d = design("y ~ x + (1 | school) + (1 | room)", frame)
    r = d.data_report
    assert r.n_rows_used == len(frame) - 3
    assert dict(r.dropped_by_variable) == {"room": 3}
    assert any("1 rows have a blank id in 'room'" in n for n in r.notes)
    assert d.groupings[1].labels == ("r1", "r2", "r3", "r4")
    assert d.n_obs == len(frame) - 3 and d.groupings[1].codes.size == d.n_obs


def test_a_missing_id_in_a_column_of_an_interaction_drops_the_row():
    frame = classrooms()
    frame["room"] = frame["room"].astype(float)
    frame.loc[[5], "room"] = np.nan
    d = design("y ~ x + (1 | school/room)", frame)
    assert d.n_obs == len(frame) - 1 and d.groupings[1].n_levels == 40
    assert d.groupings[1].labels[0] == "1:0"  # whole-number float ids without '.0'


def test_mixed_ids_of_a_second_factor_are_refused_naming_it():
    frame = classrooms()
    frame["room"] = frame["room"].astype(object)
    frame.loc[0, "room"] = "one"
    with pytest.raises(DataError, match="room"):
        design("y ~ x + (1 | school) + (1 | room)", frame)


def test_every_factor_needs_two_levels():
    frame = classrooms()
    frame["one"] = 7
    with pytest.raises(DataError, match=r"grouping factor 'one' has 1 unit"):
        design("y ~ x + (1 | school) + (1 | one)", frame)


def test_text_ids_of_many_levels_are_ids_not_predictors():
    frame = classrooms(n_school=60)
    frame["room"] = (frame["school"] * 10 + frame["room"]).map(lambda v: f"id{v}")
    d = design("y ~ x + (1 | school) + (1 | room)", frame)
    assert d.groupings[1].n_levels == 240 and "room" not in d.levels


def test_random_slopes_are_checked_per_factor():
    frame = classrooms()
    frame["s"] = frame["school"] * 0.5  # constant within schools, varies within rooms
    with pytest.raises(DataError, match=r"random slope of 's' on 'school'"):
        design("y ~ s + (1 | room) + (s | school)", frame)
    design("y ~ s + (s | room) + (1 | school)", frame)  # varies within every room: identified


def test_duplicate_random_effects_are_per_factor():
    with pytest.raises(SpecificationError, match=r"Intercept of 'school' appear in two terms"):
        design("y ~ x + (1 | school) + (1 | room) + (1 | school)", classrooms())
    design("y ~ x + (1 | school) + (0 + x | school) + (1 | room)", classrooms())


# ----- nesting -----------------------------------------------------------------------------------
def _grouping(name: str, ids) -> Grouping:
    codes, units = np.unique(np.asarray(ids), return_inverse=True)[1], np.unique(np.asarray(ids))
    return Grouping(name, codes.astype(np.intp), units)


def test_nesting_of_pairs():
    school = _grouping("school", [0, 0, 0, 1, 1, 1])
    room = _grouping("room", [10, 10, 11, 12, 12, 13])  # unique ids: nested in school
    crossed = _grouping("rater", [1, 2, 1, 2, 1, 2])
    assert nesting([school, room, crossed]) == (("room", "school"),)
    same = _grouping("same", [5, 5, 5, 6, 6, 6])
    assert set(nesting([school, same])) == {("school", "same"), ("same", "school")}


def test_ids_restarting_within_schools_get_the_note():
    d = design("y ~ x + (1 | school) + (1 | room)", classrooms())
    (note,) = [n for n in d.data_report.notes if "repeat across" in n]
    assert "4 ids of 'room' in 10 units of 'school', 40 combinations" in note
    assert "taken as crossed with 'school', as lme4 does" in note
    assert "(1 | school/room)" in note and "(1 | room:school)" in note
    assert f"note: {note}" in str(d.data_report)


@pytest.mark.parametrize("formula, frame", [
    ("y ~ x + (1 | school) + (1 | room)", classrooms(unique_rooms=True)),  # nested by unique ids
    ("y ~ x + (1 | school/room)", classrooms()),  # nesting written
    ("y ~ x + (1 | school) + (1 | room) + (1 | room:school)", classrooms()),  # the combination in the model
    ("y ~ x + (1 | school) + (1 | room)", classrooms(pupils=1)),  # one row per cell: a crossed design
])
def test_no_note_where_nesting_is_written_or_the_design_is_crossed(formula, frame):
    d = design(formula, frame)
    assert not [n for n in d.data_report.notes if "repeat across" in n]


def test_the_note_trigger_on_groupings():
    school = _grouping("school", np.repeat(np.arange(6), 6))
    room = _grouping("room", np.tile(np.repeat([1, 2, 3], 2), 6))
    assert len(implicit_nesting_notes([school, room])) == 1
    # rooms not all seen in the largest school: ids that do not restart
    room2 = _grouping("room", np.concatenate([np.tile(np.repeat([1, 2, 3], 2), 5), np.repeat([4, 5, 6], 2)]))
    assert implicit_nesting_notes([school, room2]) == ()


# ----- the blocked summaries ---------------------------------------------------------------------
def _dense(codes: np.ndarray, z: np.ndarray, J: int) -> np.ndarray:
    N, q = z.shape
    Z = np.zeros((N, J, q))
    Z[np.arange(N), codes, :] = z
    return Z.reshape(N, J * q)


@pytest.mark.parametrize("formula", [
    "y ~ x + w + (x | school) + (1 | room)",  # crossed
    "y ~ x + w + (1 | school/room)",  # nested
    "y ~ x * w + (w | school) + (1 | room:school)",  # an interaction column (X' = X S_x)
])
def test_factor_summaries_are_the_dense_product(formula):
    frame = classrooms()
    frame["w"] = frame["w"] + 50.0  # far from 0: shifted in the internal coordinates
    d = design(formula, frame)
    s, order = d.factor_summaries()
    assert sorted(order) == list(range(d.n_factors))
    assert [t.J for t in s.terms] == sorted((g.n_levels for g in d.groupings), reverse=True)
    # the dense product in the internal coordinates from the data's own columns
    X = np.asarray(d.X) @ d.coords.S
    y = np.asarray(d.y) - d.coords.y_shift
    Zs = [_dense(d.groupings[f].codes, np.asarray(d.Z)[:, list(d.factor_blocks(f))], d.groupings[f].n_levels)
          for f in order]
    W = np.column_stack([*Zs, X, y])
    A = W.T @ W
    edges = np.cumsum([0] + [Z.shape[1] for Z in Zs])
    c = edges[-1] + X.shape[1]
    close = dict(rtol=1e-10, atol=1e-8)
    for t, term in enumerate(s.terms):
        lo, hi = edges[t], edges[t + 1]
        assert term.factor == d.groupings[order[t]].name
        np.testing.assert_allclose(block_diag(*term.ZtZ), A[lo:hi, lo:hi], **close)
        np.testing.assert_allclose(term.ZtX.reshape(-1, X.shape[1]), A[lo:hi, edges[-1]:c], **close)
        np.testing.assert_allclose(term.Zty.ravel(), A[lo:hi, c], **close)
        for cross in term.cross:
            e = cross.term
            np.testing.assert_allclose(cross.dense(), A[lo:hi, edges[e]:edges[e + 1]], **close)
    np.testing.assert_allclose(s.XtX_total, A[edges[-1]:c, edges[-1]:c], **close)
    np.testing.assert_allclose(s.Xty_total, A[edges[-1]:c, c], **close)
    assert s.yty_total == pytest.approx(A[c, c], rel=1e-10)


def test_factor_summaries_of_one_factor_are_the_one_pass():
    frame = classrooms()
    frame["x"] = frame["x"] + 100.0  # a random slope far from 0: shifted (z_shift) in the one pass
    d = design("y ~ x + (x | school)", frame)
    assert not d.coords.z_identity
    s, order = d.factor_summaries()
    one = d.summaries()
    assert order == (0,)
    np.testing.assert_allclose(s.C, one.C, rtol=1e-10, atol=1e-8)
    np.testing.assert_array_equal(s.n, one.n)


def test_several_factors_shift_no_random_slope():
    frame = classrooms()
    frame["x"] = frame["x"] + 100.0
    d = design("y ~ x + (x | school) + (1 | room)", frame)
    assert d.coords.z_identity


# ----- what several factors refuse ---------------------------------------------------------------
def test_the_one_factor_summaries_refuse_several():
    d = design("y ~ x + (1 | school) + (1 | room)", classrooms())
    with pytest.raises(SpecificationError, match=r"2 grouping factors \(school, room\).*not supported yet"):
        d.summaries()


def test_group_mean_centring_needs_one_factor():
    with pytest.raises(SpecificationError, match=r"cwc\(x\).*needs one grouping factor.*compute the group means"):
        design("y ~ cwc(x) + (1 | school) + (1 | room)", classrooms())
    design("y ~ cwc(x) + (1 | room:school)", classrooms())  # one factor, an interaction: its units


def test_weights_and_level2_joins_are_refused_for_several_factors():
    frame = classrooms()
    frame["wt"] = 1.0
    with pytest.raises(SpecificationError, match=r"Weights .* not supported with 2 grouping factors"):
        design("y ~ x + (1 | school) + (1 | room)", frame, weights=SamplingWeights.of({"level1": "wt"}))
    with pytest.raises(SpecificationError, match=r"Weights .* not supported with 2 grouping factors"):
        design("y ~ x + (1 | school) + (1 | room)", frame, precision_weights="wt")
    with pytest.raises(SpecificationError, match=r"level-2 table \(level2=\) joins by one id column"):
        design("y ~ x + (1 | school/room)", frame, level2_vars=("w",))
    with pytest.raises(SpecificationError, match=r"level-2 table.*interaction grouping factor 'room:school'"):
        design("y ~ x + (1 | room:school)", frame, level2_vars=("w",))


def test_a_second_factor_that_is_also_a_predictor_keeps_its_levels():
    frame = classrooms()
    frame["kind"] = np.where(frame["room"] % 2 == 0, "even", "odd")
    d = design("y ~ kind + (1 | school) + (1 | kind)", frame)
    assert d.levels["kind"] == ["even", "odd"] and d.x_names == ("Intercept", "kind[T.odd]")
    assert d.groupings[1].labels == ("even", "odd")
