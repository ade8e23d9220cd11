"""Issue 12: the streamed, Dask and in-memory designs share their centring state, their internal
coordinates and the outcome-kind warning (one implementation each, fed by what each path gathers).

Each test failed before: the centring state was computed by `expressions.derived_state` in memory
and again in `chunked.plan_of`; a stream chose its coordinates from its first chunk and memory from
a sample of all rows; a stream gave no outcome-kind warning.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.data.checks import OutcomeKind
from multilevel.design import chunked, sources
from multilevel.errors import MultilevelWarning
from multilevel.model import expressions

dd = pytest.importorskip("dask.dataframe")

#: rows per streamed batch and per Dask partition: every frame here is cut into several
CHUNK_ROWS = 150


def data(n_units: int = 40, rows: int = 25, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_units), rows)
    x = 50 + 3 * rng.normal(size=g.size) + rng.normal(size=n_units)[g]
    w = rng.normal(size=n_units)[g]
    y = 2 + 0.5 * x + w + 0.3 * x * w + rng.normal(size=n_units)[g] + rng.normal(size=g.size)
    return pd.DataFrame({"g": g, "x": x, "w": w, "y": y})


def three_ways(formula: str, frame: pd.DataFrame, tmp_path, monkeypatch) -> dict[str, ml.Fit]:
    """The fit in memory, streamed from Parquet (row groups of CHUNK_ROWS) and from Dask partitions."""
    monkeypatch.setattr(sources, "BATCH_ROWS", CHUNK_ROWS)
    path = tmp_path / "d.parquet"
    frame.to_parquet(path, index=False, row_group_size=CHUNK_ROWS)
    ddf = dd.from_pandas(frame, npartitions=-(-len(frame) // CHUNK_ROWS), sort=False)
    return {"memory": ml.fit(formula, frame), "parquet": ml.fit(formula, str(path), stream=True), "dask": ml.fit(formula, ddf)}


def test_the_centring_state_is_one_function_for_every_source(tmp_path, monkeypatch):
    calls: list[str] = []
    one = expressions.centring_state

    def recorded(d, sums, counts):
        calls.append(d.name)
        return one(d, sums, counts)

    monkeypatch.setattr(expressions, "centring_state", recorded)
    monkeypatch.setattr(chunked, "centring_state", recorded)
    fits = three_ways("y ~ cwc(x) + cgm(w) + (cwc(x) | g)", data(), tmp_path, monkeypatch)
    assert calls == ["cwc(x)", "cgm(w)"] * 3
    memory = fits["memory"].design.centering_means
    for way in ("parquet", "dask"):
        state = fits[way].design.centering_means
        np.testing.assert_allclose(state["cwc(x)"], memory["cwc(x)"], rtol=1e-14)
        assert state["cgm(w)"] == pytest.approx(memory["cgm(w)"], rel=1e-14, abs=1e-15)
        np.testing.assert_allclose(fits[way].beta.to_numpy(), fits["memory"].beta.to_numpy(), rtol=1e-9)


def test_centring_state_formulas():
    d_group, d_grand, d_units = (expressions.Derived(kind, "c", "c", ("x",), over_units=units)
                                 for kind, units in (("group", False), ("grand", False), ("grand", True)))
    sums, counts = np.array([3.0, 10.0, 4.0]), np.array([1.0, 4.0, 2.0])
    np.testing.assert_array_equal(expressions.centring_state(d_group, sums, counts), [3.0, 2.5, 2.0])
    assert expressions.centring_state(d_grand, sums, counts) == 17.0 / 7.0  # over the rows
    assert expressions.centring_state(d_units, sums, counts) == pytest.approx(7.5 / 3)  # over the units


def test_the_coordinates_are_chosen_from_the_same_rows_from_every_source(tmp_path, monkeypatch):
    fits = three_ways("y ~ x * w + (x | g)", data(), tmp_path, monkeypatch)
    memory = fits["memory"].design.coords
    assert memory.y_shift != 0.0 and np.any(memory.shift)
    for way in ("parquet", "dask"):
        coords = fits[way].design.coords
        assert coords.y_shift == memory.y_shift, way
        np.testing.assert_array_equal(coords.shift, memory.shift)
        np.testing.assert_array_equal(coords.S, memory.S)


def test_a_tiny_outcome_is_refused_with_the_same_size_from_every_source(tmp_path, monkeypatch):
    frame = data().assign(y=lambda t: t["y"] * 1e-200)
    messages = set()
    for way in ("memory", "parquet", "dask"):
        with pytest.raises(ml.DataError, match="'y' has values of the order of") as e:
            three_ways_one(way, "y ~ x + (1 | g)", frame, tmp_path, monkeypatch)
        messages.add(str(e.value))
    assert len(messages) == 1, messages


def three_ways_one(way: str, formula: str, frame: pd.DataFrame, tmp_path, monkeypatch) -> ml.Fit:
    monkeypatch.setattr(sources, "BATCH_ROWS", CHUNK_ROWS)
    if way == "memory":
        return ml.fit(formula, frame)
    if way == "parquet":
        path = tmp_path / "one.parquet"
        frame.to_parquet(path, index=False, row_group_size=CHUNK_ROWS)
        return ml.fit(formula, str(path), stream=True)
    return ml.fit(formula, dd.from_pandas(frame, npartitions=-(-len(frame) // CHUNK_ROWS), sort=False))


@pytest.mark.parametrize("outcome, looks", [("passed", "binary"), ("visits", "a count")])
def test_the_outcome_kind_warning_from_every_source(outcome, looks, tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    frame = data().assign(passed=lambda t: (t["y"] > t["y"].median()).astype(int), visits=rng.poisson(1.5, 1000))
    messages = set()
    for way in ("memory", "parquet", "dask"):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            three_ways_one(way, f"{outcome} ~ x + (1 | g)", frame, tmp_path, monkeypatch)
        kind = [str(w.message) for w in seen if issubclass(w.category, MultilevelWarning) and "looks" in str(w.message)]
        assert len(kind) == 1, (way, kind)
        assert f"'{outcome}' looks {looks}" in kind[0]
        messages.add(kind[0])
    assert len(messages) == 1


def test_a_continuous_outcome_gets_no_kind_warning_from_a_stream(tmp_path, monkeypatch):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        three_ways_one("parquet", "y ~ x + (1 | g)", data(), tmp_path, monkeypatch)
    assert not [w for w in seen if "looks" in str(w.message)]


@pytest.mark.parametrize("seed", range(12))
def test_outcome_kind_of_chunks_is_that_of_all_rows(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    y = rng.choice([0.0, 1.0, 2.0, 9.0, 10.0, 11.0, 12.0, 30.0], size=n, p=rng.dirichlet(np.ones(8)))
    if seed % 4 == 0:
        y = (y > 5).astype(float)  # binary
    if seed % 4 == 1:
        y = y + 0.5  # not whole numbers
    cuts = np.sort(rng.integers(0, n, size=3))
    total = OutcomeKind()
    for part in np.split(y, cuts):
        total = total.add(OutcomeKind.of(part))
    assert total.kind() == OutcomeKind.of(y).kind()
    # the old in-memory rule, written out
    whole = y.min() >= 0 and np.all(np.floor(y) == y)
    values = np.unique(y)
    binary = whole and values.size == 2 and values[0] == 0 and values[1] == 1
    count = whole and not binary and values[0] == 0 and values.size > 2 and np.median(y) <= 10
    assert (total.kind() is not None) == (binary or count)
    assert total.median_small == (np.median(y) <= 10) or not whole
