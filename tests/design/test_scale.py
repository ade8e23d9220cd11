"""Data beyond memory: Parquet streamed in row groups, and Dask DataFrames on a LocalCluster with two
workers, give the in-memory fit (not timed; benchmarks/ measures speed and memory)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from conftest import hsb
from multilevel.design import chunked, sources
from multilevel.errors import SpecificationError

M = "mathach ~ (sector + meanses) * cwc(ses) + (cwc(ses) | school)"


def with_gaps() -> pd.DataFrame:
    d = hsb()[["school", "mathach", "ses", "sector", "meanses", "minority"]].copy()
    d.loc[[5, 900, 4000], "ses"] = np.nan  # listwise deletion must be the same
    d["group_kind"] = np.where(d["minority"] == 1, "m", "n")
    return d


def write_parts(d: pd.DataFrame, folder, n_parts: int = 4, row_group_size: int = 700) -> None:
    folder.mkdir(exist_ok=True)
    bounds = np.linspace(0, len(d), n_parts + 1).astype(int)
    for i in range(n_parts):
        d.iloc[bounds[i] : bounds[i + 1]].to_parquet(folder / f"part{i}.parquet", row_group_size=row_group_size)


def assert_same(a: ml.Fit, b: ml.Fit, rtol: float = 1e-7) -> None:
    """Equal to the optimiser's precision: the chunks' sums are added in another order."""
    assert list(a.beta.index) == list(b.beta.index)
    np.testing.assert_allclose(a.beta, b.beta, rtol=rtol)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-6, atol=1e-7)  # as precise as the optimum
    assert a.deviance == pytest.approx(b.deviance, rel=1e-12)
    np.testing.assert_allclose(a.vcov, b.vcov, rtol=1e-6, atol=1e-7 * np.abs(a.vcov.to_numpy()).max())
    scale = np.sqrt(np.diag(b.tau.to_numpy())).max()
    np.testing.assert_allclose(a.ranef, b.ranef, rtol=1e-4, atol=1e-5 * scale)
    assert a.n_obs == b.n_obs and a.design.group_labels == b.design.group_labels


@pytest.mark.parametrize("source", ["glob", "folder", "file"])
def test_streamed_parquet_equals_the_in_memory_fit(tmp_path, source):
    d = with_gaps()
    write_parts(d, tmp_path / "parts")
    ref = ml.fit(M + " + group_kind", d)
    if source == "glob":
        fit = ml.fit(M + " + group_kind", str(tmp_path / "parts" / "part*.parquet"))
    elif source == "folder":
        fit = ml.fit(M + " + group_kind", tmp_path / "parts")
    else:
        d.to_parquet(tmp_path / "all.parquet", row_group_size=500)
        fit = ml.fit(M + " + group_kind", tmp_path / "all.parquet", stream=True)
    assert fit.design.streamed
    assert_same(fit, ref)
    # group-mean centring used the unit means of the rows used (the first pass)
    np.testing.assert_allclose(fit.design.centering_means["cwc(ses)"], ref.design.centering_means["cwc(ses)"], rtol=1e-12)
    r, s = fit.data_report, ref.data_report
    assert (r.n_rows_in, r.n_rows_used, r.dropped_by_variable) == (s.n_rows_in, s.n_rows_used, s.dropped_by_variable)
    # everything computed from the summaries is there; what needs rows says so
    np.testing.assert_allclose(fit.coef_table(df="satterthwaite")["df"], ref.coef_table(df="satterthwaite")["df"], rtol=1e-6)
    np.testing.assert_allclose(fit.variance_components["chisq"].iloc[:2], ref.variance_components["chisq"].iloc[:2], rtol=1e-8)
    assert "Final estimation of fixed effects" in fit.report()
    with pytest.raises(SpecificationError, match="needs the rows"):
        fit.effect_sizes()
    c = ml.compare(ml.fit("mathach ~ (sector + meanses) * cwc(ses) + group_kind + (1 | school)", tmp_path / "parts"), fit)
    assert c.table["df"].iloc[1] == 2


def test_text_levels_that_differ_between_files_are_united(tmp_path):
    d = with_gaps()
    d["kind"] = np.where(d.index < 3000, "a", np.where(d.index < 6000, "b", "c"))  # file 0 has only "a"
    write_parts(d, tmp_path / "parts", n_parts=3)
    ref = ml.fit("mathach ~ kind + (1 | school)", d)
    fit = ml.fit("mathach ~ kind + (1 | school)", tmp_path / "parts")
    assert_same(fit, ref)


def test_streaming_errors(tmp_path):
    with pytest.raises(ml.DataError, match="No Parquet file matches"):
        ml.fit(M, str(tmp_path / "none*.parquet"))
    with pytest.raises(SpecificationError, match="level2="):
        write_parts(with_gaps(), tmp_path / "p")
        ml.fit(M, tmp_path / "p", level2=hsb())


@pytest.mark.parametrize("order", ["grouped", "shuffled", "complete", "text ids", "text ids shuffled"])
def test_chunks_of_numbers_take_the_array_path_with_the_same_fit(tmp_path, monkeypatch, order):
    """Integer ids and numbers (the usual large file) skip pandas (`chunked.numeric_arrays`): the same
    fit and data report as in memory and as the pandas path, with units spanning chunks (shuffled
    rows), a unit whose every row lacks a value, and a unit of one row; or no value missing at all
    ("complete": pass 2 then looks for none). Text ids: pyarrow's dictionary codes (`chunked.TextIds`)."""
    d = with_gaps().drop(columns="group_kind")
    if not order.startswith("text"):
        d["school"] = d["school"].astype("int64")
    d["minority"] = d["minority"].astype("int32")
    schools = d["school"].unique()
    d.loc[d["school"] == schools[3], "ses"] = np.nan  # dropped: no row used
    d = d[(d["school"] != schools[7]) | ~d["school"].duplicated()]  # one row
    if order.endswith("shuffled"):
        d = d.sample(frac=1, random_state=1)
    if order == "complete":
        d = d.dropna()
    d = d.reset_index(drop=True)
    d.to_parquet(tmp_path / "all.parquet", row_group_size=700)
    model = M + " + minority"
    ref = ml.fit(model, d)
    monkeypatch.setattr(sources, "BATCH_ROWS", 1000)
    taken: list[int] = []
    original = chunked.pass1_arrays
    monkeypatch.setattr(chunked, "pass1_arrays", lambda *a: taken.append(1) or original(*a))
    fit = ml.fit(model, tmp_path / "all.parquet", stream=True)
    assert len(taken) == -(-len(d) // 1000)  # every batch of 1000 rows
    monkeypatch.setattr(chunked, "numeric_arrays", lambda *a: None)
    general = ml.fit(model, tmp_path / "all.parquet", stream=True)
    for other in (ref, general):
        assert_same(fit, other)
        r, s = fit.data_report, other.data_report
        assert (r.n_rows_in, r.n_rows_used, r.dropped_by_variable, r.n_units_in, r.n_units_used, r.units_dropped,
                r.singleton_units) == (s.n_rows_in, s.n_rows_used, s.dropped_by_variable, s.n_units_in, s.n_units_used,
                                       s.units_dropped, s.singleton_units)
    assert fit.data_report.units_dropped == (() if order == "complete" else (str(schools[3]),))
    assert str(schools[7]) in fit.data_report.singleton_units
    np.testing.assert_allclose(fit.design.centering_means["cwc(ses)"], ref.design.centering_means["cwc(ses)"], rtol=1e-12)


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_dask_on_two_workers_equals_the_in_memory_fit(client):
    import dask.dataframe as dd

    dask_residuals = ml.dask_residuals

    assert len(client.scheduler_info()["workers"]) == 2
    d = with_gaps()
    ddf = dd.from_pandas(d, npartitions=6)
    ref = ml.fit(M + " + group_kind", d)
    fit = ml.fit(M + " + group_kind", ddf)
    assert_same(fit, ref)
    res = dask_residuals(fit, ddf)
    assert isinstance(res, dd.DataFrame)
    got = res.compute().dropna()
    want = ref.residuals(level=1)
    np.testing.assert_allclose(got["fitted"].to_numpy(), want["fitted"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(got["resid"].to_numpy(), want["resid"].to_numpy(), rtol=1e-6, atol=1e-5)
    # the same partition code on the in-memory fit reproduces its level-1 file exactly
    exact = dask_residuals(ref, ddf).compute().dropna()
    np.testing.assert_allclose(exact["resid"].to_numpy(), want["resid"].to_numpy(), rtol=1e-10, atol=1e-10)
    eb = dask_residuals(fit, ddf, level=2)  # the EB residuals as a Dask collection
    assert isinstance(eb, dd.DataFrame)
    eb = eb.compute()
    for c in ref.ranef.columns:
        np.testing.assert_allclose(eb[f"eb_{c}"].to_numpy(), ref.ranef[c].to_numpy(), rtol=1e-6, atol=1e-8)
