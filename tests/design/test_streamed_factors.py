"""Issue 14: models with several grouping factors (nested, crossed, interactions) streamed from
Parquet row groups and from Dask partitions give the in-memory fit: fixed effects, SEs, variance
components, criterion and conditional modes to 1e-8 relative, the same factors, labels, nesting
facts and data report, whatever the order of the rows and the cut into chunks; bad input ends
with the in-memory message (`design.chunked`: each factor's levels in pass 1, the blocked
summaries added up in pass 2)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.design import sources
from multilevel.design.chunked import BlockedTotal, _KeyedSum, check_streamable
from multilevel.errors import MultilevelError, SpecificationError
from multilevel.interfaces.multi_fit import MultiFit
from multilevel.model.formula import parse_formula

dd = pytest.importorskip("dask.dataframe")

DATA = Path(__file__).resolve().parents[2] / "refs" / "multi" / "data"
EG = "math ~ year + (year | schoolid) + (year | schoolid:childid)"
RTOL = 1e-8


@pytest.fixture(scope="module")
def egsingle() -> pd.DataFrame:
    return pd.read_csv(DATA / "egsingle.csv")


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(sources, "BATCH_ROWS", 700)


def growth(n_school: int = 25, n_child: int = 8, years: int = 4, seed: int = 3, text: bool = False) -> pd.DataFrame:
    """Children measured each year in schools, child ids restarting in each school, slopes on year at both levels."""
    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(n_school), n_child * years)
    child = np.tile(np.repeat(np.arange(1, n_child + 1), years), n_school)
    year = np.tile(np.arange(years, dtype=float), n_school * n_child) - 1.5
    ci = school * n_child + child - 1
    u0, u1 = rng.normal(0, 1.0, n_school), rng.normal(0, 0.3, n_school)
    v0, v1 = rng.normal(0, 0.8, n_school * n_child), rng.normal(0, 0.2, n_school * n_child)
    lowinc = rng.uniform(0, 100, n_school)[school]
    y = 1 + 0.5 * year - 0.01 * lowinc + u0[school] + u1[school] * year + v0[ci] + v1[ci] * year + rng.normal(0, 0.5, school.size)
    frame = pd.DataFrame({"school": school, "child": child, "year": year, "lowinc": lowinc, "y": y})
    if text:
        frame["school"] = [f"s{s:02d}" for s in school]
        frame["child"] = [f"c{c}" for c in child]
    return frame


def crossed(n_s: int = 40, n_d: int = 15, rows: int = 900, seed: int = 5) -> pd.DataFrame:
    """Students crossed with lecturers (InstEval's shape), a department of each lecturer."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, n_s, rows)
    d = rng.integers(0, n_d, rows)
    dept = d % 3
    x = rng.normal(size=rows)
    y = 3 + 0.4 * x + rng.normal(0, 0.7, n_s)[s] + rng.normal(0, 0.5, n_d)[d] + rng.normal(size=rows)
    service = rng.integers(0, 2, rows)  # a rating's own (InstEval's service: dept:service is a factor of its own)
    return pd.DataFrame({"s": s, "d": d, "dept": dept, "service": service, "x": x, "y": y})


def _parquet(frame: pd.DataFrame, tmp_path: Path, name: str = "d.parquet", row_group: int = 500) -> str:
    path = tmp_path / name
    frame.to_parquet(path, index=False, row_group_size=row_group)
    return str(path)


def _quiet(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call()


def assert_same_fit(memory: MultiFit, other: MultiFit) -> None:
    assert isinstance(other, MultiFit) and other.design.streamed
    np.testing.assert_allclose(other.beta.to_numpy(), memory.beta.to_numpy(), rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(other.fixed["se"].to_numpy(), memory.fixed["se"].to_numpy(), rtol=RTOL)
    np.testing.assert_allclose(other.vcov.to_numpy(), memory.vcov.to_numpy(), rtol=RTOL, atol=1e-14)
    vm, vo = memory.varcorr, other.varcorr
    pd.testing.assert_frame_equal(vo[["grp", "var1", "var2"]], vm[["grp", "var1", "var2"]])
    np.testing.assert_allclose(vo[["vcov", "sdcor"]].to_numpy(float), vm[["vcov", "sdcor"]].to_numpy(float), rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(other.deviance, memory.deviance, rtol=RTOL)
    np.testing.assert_allclose(other.theta.to_numpy(), memory.theta.to_numpy(), rtol=1e-6, atol=1e-8)
    assert other.groups == memory.groups and other.n_obs == memory.n_obs
    assert list(other.ranef) == list(memory.ranef)
    for name, table in memory.ranef.items():
        pd.testing.assert_index_equal(other.ranef[name].index, table.index)
        assert list(other.ranef[name].columns) == list(table.columns)
        scale = float(np.abs(table.to_numpy()).max())
        np.testing.assert_allclose(other.ranef[name].to_numpy(), table.to_numpy(), rtol=RTOL, atol=RTOL * scale)
        np.testing.assert_allclose(other.ranef_condvar[name], memory.ranef_condvar[name], rtol=1e-7, atol=1e-12)
    assert [(g.name, g.labels) for g in other.design.groupings] == [(g.name, g.labels) for g in memory.design.groupings]
    assert other.design.term_grouping == memory.design.term_grouping and other.design.z_names == memory.design.z_names
    assert other.design.nested == memory.design.nested
    assert_same_report(memory.data_report, other.data_report)


def assert_same_report(memory, other) -> None:
    skip = {"source"}
    for field in memory.__dataclass_fields__:
        if field not in skip:
            assert getattr(other, field) == getattr(memory, field), field


def three_ways(formula: str, frame: pd.DataFrame, tmp_path: Path, method: str = "REML", seed: int = 0, partitions: int = 5):
    """The in-memory fit of `frame`, and the fits of its rows shuffled, streamed from Parquet and from Dask."""
    shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    memory = _quiet(lambda: ml.fit(formula, frame, method))
    parquet = _quiet(lambda: ml.fit(formula, _parquet(shuffled, tmp_path), method, stream=True))
    dask = _quiet(lambda: ml.fit(formula, dd.from_pandas(frame.sample(frac=1.0, random_state=seed + 1), npartitions=partitions), method))
    return memory, parquet, dask


# ----- the estimates ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_egsingle_three_levels_streamed_and_dask_give_the_in_memory_fit(egsingle, tmp_path, small_batches, method):
    memory, parquet, dask = three_ways(EG, egsingle, tmp_path, method)
    assert memory.design.nested == (("schoolid:childid", "schoolid"),)
    assert parquet.design.data_report.source.startswith("1 Parquet file")
    assert_same_fit(memory, parquet)
    assert_same_fit(memory, dask)


def test_the_rows_in_their_own_order_and_in_sorted_chunks_give_the_same(egsingle, tmp_path, small_batches):
    memory = ml.fit(EG, egsingle)
    in_order = ml.fit(EG, _parquet(egsingle, tmp_path, "a.parquet", row_group=300), stream=True)
    by_year = ml.fit(EG, _parquet(egsingle.sort_values(["year", "childid"]), tmp_path, "b.parquet", row_group=2000), stream=True)
    assert_same_fit(memory, in_order)
    assert_same_fit(memory, by_year)
    assert_same_fit(memory, ml.fit(EG, dd.from_pandas(egsingle, npartitions=2)))


def test_a_simulated_growth_model_with_text_ids(tmp_path, small_batches):
    frame = growth(text=True)
    f = "y ~ year + lowinc + (year | school) + (year | school:child)"
    memory, parquet, dask = three_ways(f, frame, tmp_path)
    assert memory.design.groupings[1].labels[:2] == ("s00:c1", "s00:c2")
    assert_same_fit(memory, parquet)
    assert_same_fit(memory, dask)


def test_a_four_level_model_of_text_ids_and_a_three_column_interaction(tmp_path, small_batches):
    frame = pd.read_csv(DATA / "sim4.csv.gz")
    f = "y ~ x + w + (1 | a) + (1 + x | a:b) + (1 | a:b:c)"
    memory, parquet, dask = three_ways(f, frame, tmp_path, "ML")
    assert len(memory.design.groupings) == 3
    assert_same_fit(memory, parquet)
    assert_same_fit(memory, dask)


def test_crossed_factors_and_an_interaction_of_them(tmp_path, small_batches):
    frame = crossed()
    # (dept:d would be d itself, each lecturer in one department: refused as one effect written twice)
    memory, parquet, dask = three_ways("y ~ x + (1 | s) + (1 | d) + (1 | dept:service)", frame, tmp_path)
    assert_same_fit(memory, parquet)
    assert_same_fit(memory, dask)
    memory, parquet, dask = three_ways("y ~ x + (x | s) + (1 | d)", frame, tmp_path, "ML", seed=4, partitions=7)
    assert memory.design.nested == ()
    assert_same_fit(memory, parquet)
    assert_same_fit(memory, dask)


def test_a_factor_that_groups_like_another_is_refused_from_every_source(tmp_path, small_batches):
    frame = crossed()
    formula = "y ~ x + (1 | s) + (1 | d) + (1 | dept:d)"  # each lecturer in one department: dept:d is d
    for data, kw in ((frame, {}), (_parquet(frame, tmp_path), {"stream": True}), (dd.from_pandas(frame, npartitions=3), {})):
        with pytest.raises(ml.SpecificationError, match="'d' and 'dept:d' group the rows the same way"):
            _quiet(lambda data=data, kw=kw: ml.fit(formula, data, **kw))


def test_penicillin_crossed_with_text_ids(tmp_path, small_batches):
    frame = pd.read_csv(DATA / "penicillin.csv")
    memory, parquet, dask = three_ways("diameter ~ 1 + (1 | plate) + (1 | sample)", frame, tmp_path)
    assert_same_fit(memory, parquet)
    assert_same_fit(memory, dask)


def test_machines_with_a_text_predictor_and_its_interaction_with_the_id(tmp_path, small_batches):
    frame = pd.read_csv(DATA / "machines.csv")
    memory, parquet, dask = three_ways("score ~ Machine + (1 | Worker) + (1 | Worker:Machine)", frame, tmp_path)
    assert_same_fit(memory, parquet)
    assert_same_fit(memory, dask)


def test_restarted_ids_get_the_implicit_nesting_note_from_every_source(tmp_path, small_batches):
    frame = growth()  # child ids 1..8 in every school
    f = "y ~ year + (1 | school) + (1 | child)"
    memory, parquet, dask = three_ways(f, frame, tmp_path)
    assert any("repeat across the units of 'school'" in n for n in memory.data_report.notes)
    assert_same_fit(memory, parquet)
    assert_same_fit(memory, dask)


def test_refit_by_ml_uses_the_streamed_summaries(egsingle, tmp_path, small_batches):
    streamed = ml.fit(EG, _parquet(egsingle, tmp_path), stream=True)
    assert_same_fit(ml.fit(EG, egsingle, "ML"), streamed.refit("ML"))


# ----- missing and bad values ---------------------------------------------------------------------
def test_missing_ids_and_values_in_some_chunks_are_reported_as_in_memory(tmp_path, small_batches):
    frame = growth().astype({"child": float, "school": float})
    frame.loc[[5, 300, 301], "child"] = np.nan  # a child id missing in two chunks
    frame.loc[[17], "school"] = np.nan
    frame.loc[[640, 790], "year"] = np.nan
    frame.loc[[3], "y"] = np.nan
    # every row of school 4 goes (each misses y): the unit is in but not used
    frame.loc[frame["school"] == 4, "y"] = np.nan
    f = "y ~ year + lowinc + (year | school) + (1 | school:child)"
    memory, parquet, dask = three_ways(f, frame, tmp_path)
    report = memory.data_report
    assert dict(report.dropped_by_variable)["child"] == 3 and report.units_dropped == ("4",)
    assert report.n_units_in == 25 and report.n_units_used == 24
    assert memory.design.groupings[0].labels[:2] == ("0", "1")  # whole-number float ids are the units 0, 1
    assert_same_fit(memory, parquet)
    assert_same_fit(memory, dask)


def test_blank_text_ids_of_the_second_factor_are_missing_ids_as_in_memory(tmp_path, small_batches):
    frame = growth(text=True)
    frame.loc[[9, 500], "child"] = "  "
    memory, parquet, dask = three_ways("y ~ year + (1 | school) + (1 | school:child)", frame, tmp_path)
    assert any("blank id in 'child'" in n for n in memory.data_report.notes)
    assert_same_fit(memory, parquet)
    assert_same_fit(memory, dask)


def _ends(formula: str, frame: pd.DataFrame, tmp_path: Path) -> list[tuple[str, str]]:
    out = []
    for data, kw in ((frame, {}), (_parquet(frame, tmp_path, "bad.parquet", row_group=200), {"stream": True}),
                     (dd.from_pandas(frame, npartitions=4), {})):
        try:
            _quiet(lambda d=data, k=kw: ml.fit(formula, d, **k))
            out.append(("fit", ""))
        except MultilevelError as e:
            out.append((type(e).__name__, str(e)))
    return out


@pytest.mark.parametrize("formula, frame, words", [
    ("y ~ year + (year | school) + (lowinc | school:child)", growth(), "constant within every unit of 'school:child'"),
    ("y ~ year + (1 | school) + (1 | school:child) + (year | school:child)", growth(), "appear in two terms"),
    ("y ~ cwc(year) + (1 | school) + (1 | school:child)", growth(), "group-mean centring"),
    ("y ~ year + (1 | school) + (1 | pupil)", growth().assign(pupil=lambda t: np.arange(len(t))), "single row"),
    ("y ~ year + (1 | school) + (1 | room)", growth(), "is not in the data"),
])
def test_bad_input_ends_as_in_memory(formula, frame, words, tmp_path, small_batches):
    ends = _ends(formula, frame, tmp_path)
    assert ends[0][0] != "fit" and words in ends[0][1], ends[0]
    assert ends[1] == ends[0] and ends[2] == ends[0]


def test_one_interaction_factor_alone_is_still_refused_with_what_to_do():
    with pytest.raises(SpecificationError, match="not the interaction 'room:school'"):
        check_streamable(parse_formula("y ~ x + (1 | room:school)"))
    check_streamable(parse_formula("y ~ x + (1 | school/room)"))  # several factors stream


# ----- the pieces -----------------------------------------------------------------------------------
def test_keyed_sums_merge_to_the_sums_by_key_in_any_order():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 500, 20_000)
    values = rng.normal(size=(keys.size, 2, 3))
    acc = _KeyedSum((2, 3))
    for part in np.array_split(np.arange(keys.size), 37):
        acc.add(keys[part], values[part])
    got_keys, got = acc.merge()
    want_keys = np.unique(keys)
    want = np.zeros((want_keys.size, 2, 3))
    np.add.at(want, np.searchsorted(want_keys, keys), values)
    np.testing.assert_array_equal(got_keys, want_keys)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_a_total_of_no_chunk_is_refused_not_made_up():
    from multilevel.design.chunked import blocked_design

    with pytest.raises(MultilevelError, match="changed between the two passes"):
        blocked_design(None, None, BlockedTotal())  # type: ignore[arg-type]


def test_a_factor_that_is_also_a_text_predictor(tmp_path, small_batches):
    frame = growth()
    frame["kind"] = np.where(frame["child"] % 3 == 0, "even", np.where(frame["child"] % 3 == 1, "odd", "other"))
    memory, parquet, dask = three_ways("y ~ year + kind + (1 | school) + (1 | school:kind)", frame, tmp_path)
    assert memory.design.groupings[1].labels[:3] == ("0:even", "0:odd", "0:other") and memory.converged
    assert_same_fit(memory, parquet)
    assert_same_fit(memory, dask)
    assert parquet.summary() == memory.summary() == dask.summary()


def test_an_interaction_as_the_first_factor(tmp_path, small_batches):
    frame = growth(text=True)
    frame.loc[[11, 12], "y"] = np.nan
    frame.loc[(frame["school"] == "s03") & (frame["child"] == "c2"), "year"] = np.nan  # a unit in, not used
    memory, parquet, dask = three_ways("y ~ year + (1 | school:child) + (year | school)", frame, tmp_path, "ML")
    report = memory.data_report
    assert memory.design.groupings[0].name == "school:child" and (report.n_units_in, report.n_units_used) == (200, 199)
    assert report.units_dropped == ("s03:c2",)
    assert_same_fit(memory, parquet)
    assert_same_fit(memory, dask)


def test_blank_ids_in_several_chunks_are_counted_once_over_all_of_them(tmp_path, small_batches):
    """One factor too: the data report's blank-id note counts the rows of every chunk (it said 1 of 2)."""
    frame = growth(text=True)
    frame.loc[[5, 500], "school"] = " "
    f = "y ~ year + (1 | school)"
    want = ("2 rows have a blank id in 'school': counted as missing ids (those rows are dropped).",)
    assert ml.fit(f, frame).data_report.notes == want
    assert ml.fit(f, _parquet(frame, tmp_path), stream=True).data_report.notes == want
    assert ml.fit(f, dd.from_pandas(frame, npartitions=3)).data_report.notes == want
