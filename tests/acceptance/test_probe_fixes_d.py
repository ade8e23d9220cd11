"""Fixes of the tester's probe (round 2, part d): each test failed before its fix."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.errors import MultilevelWarning, SpecificationError


@pytest.fixture(scope="module")
def hsb():
    return ml.datasets.hsb()


# ----- 1. homogeneity_test(min_df=...) is validated --------------------------------------------------
@pytest.mark.parametrize("bad", ["10", -1, 0, 2.5, True])
def test_homogeneity_min_df_must_be_a_whole_number_of_at_least_one(hsb, bad):
    f = ml.fit("mathach ~ cwc(ses) + (1|school)", hsb)
    with pytest.raises(SpecificationError, match="min_df must be a whole number"):
        f.homogeneity_test(min_df=bad)


# ----- 2. a unit whose level-1 design is rank deficient is left out, whatever its columns' sizes ------
def _numpy_homogeneity(data: pd.DataFrame, x: str, min_df: int = 10) -> tuple[float, int, int]:
    """R&B's H from each school's own OLS (numpy lstsq), leaving out rank-deficient schools."""
    ls, fs = [], []
    for _, g in data.groupby("school"):
        X = np.column_stack([np.ones(len(g)), g[x].to_numpy(float)])
        if np.linalg.matrix_rank(X) < X.shape[1]:
            continue
        y = g["mathach"].to_numpy(float)
        b = np.linalg.lstsq(X, y, rcond=None)[0]
        f = len(g) - X.shape[1]
        if f < min_df:
            continue
        r = y - X @ b
        ls.append(np.log(r @ r / f))
        fs.append(f)
    ls, fs = np.array(ls), np.array(fs)
    lbar = np.sum(fs * ls) / np.sum(fs)
    return float(np.sum(((ls - lbar) / np.sqrt(2 / fs)) ** 2)), len(ls) - 1, len(ls)


def test_homogeneity_leaves_out_every_unit_with_a_constant_predictor(hsb):
    f = ml.fit("mathach ~ female + (1|school)", hsb)
    H, df, used = _numpy_homogeneity(hsb, "female")
    constant = int((hsb.groupby("school")["female"].nunique() == 1).sum())
    assert constant == 37
    h = f.homogeneity_test()
    assert h["chisq"] == pytest.approx(H, rel=1e-8)
    assert h["df"] == df and h["units_used"] == used
    # olsrsvar follows the same rule: NaN in exactly the schools where female is constant
    r = f.residuals(level=2)
    const = hsb.groupby("school")["female"].nunique() == 1
    assert np.isnan(r["olsrsvar"]).to_numpy().tolist() == const.reindex(r.index).to_numpy().tolist()


# ----- 3. entered deviances carry their convention --------------------------------------------------
def test_compare_puts_fits_in_the_entered_deviances_convention(hsb):
    f1 = ml.fit("mathach ~ cwc(ses) + (1|school)", hsb)
    fs = ml.fit("mathach ~ cwc(ses) + (cwc(ses)|school)", hsb)
    ref = f1.deviance - fs.deviance  # the same fixed effects: the REML deviances compare
    for c in (ml.compare(ml.Deviance(f1.hlm_deviance, f1.hlm_n_params, method="REML"), fs),
              ml.compare(f1, ml.Deviance(fs.hlm_deviance, fs.hlm_n_params, method="REML")),
              ml.compare(f1, ml.Deviance(fs.deviance, fs.n_params, method="REML", convention="lme4"))):
        row = c.table.dropna(subset=["chisq"]).iloc[0]
        assert row["chisq"] == pytest.approx(ref, rel=1e-9)
        assert row["df"] == 2
        assert any("convention" in n for n in c.notes)
    c = ml.compare(ml.Deviance(f1.hlm_deviance, f1.hlm_n_params, method="REML"), fs)
    assert any("HLM's convention" in n for n in c.notes)


def test_deviance_conventions_cannot_be_mixed_or_unknown():
    with pytest.raises(SpecificationError, match="mix conventions"):
        ml.compare(ml.Deviance(100.0, 2, "a"), ml.Deviance(90.0, 4, "b", convention="lme4"))
    with pytest.raises(SpecificationError, match="convention must be 'hlm'"):
        ml.Deviance(100.0, 2, convention="sas")


# ----- 4. pseudo_r2 refuses what compare refuses ---------------------------------------------------
def test_pseudo_r2_refuses_different_rows_methods_and_weights(hsb):
    base = ml.fit("mathach ~ 1 + (1|school)", hsb)
    fit = ml.fit("mathach ~ cwc(ses) + (1|school)", hsb)
    with pytest.raises(SpecificationError, match="different data"):
        ml.pseudo_r2(ml.fit("mathach ~ 1 + (1|school)", hsb.iloc[:7000]), fit)
    with pytest.raises(SpecificationError, match="REML and ML"):
        ml.pseudo_r2(base.refit("ML"), fit)
    h = hsb.assign(w1=1.0, w2=1.0)
    weighted = ml.fit("mathach ~ cwc(ses) + (1|school)", h, method="ML",
                      sampling_weights=ml.SamplingWeights(level1="w1", level2="w2"))
    with pytest.raises(SpecificationError, match="different weights"):
        ml.pseudo_r2(base.refit("ML"), weighted)
    assert ml.pseudo_r2(base, fit).loc["level-1 (sigma2)", "pseudo_r2"] > 0


# ----- 5. the df advice lists only what the fit allows ---------------------------------------------
def test_df_advice_for_precision_weights_leaves_out_bell_mccaffrey(hsb):
    h = hsb.assign(w=np.random.default_rng(3).uniform(0.5, 2, len(hsb)))
    f = ml.fit("mathach ~ cwc(ses) + (1|school)", h, precision_weights="w")
    with pytest.raises(SpecificationError) as e:
        f.coef_table(df="satterthwaite", se="CR0")
    assert "bell-mccaffrey" not in str(e.value)
    for df in ("hlm", "residual", "between-within", "infinite"):
        assert df in str(e.value)
        assert np.isfinite(f.coef_table(df=df, se="CR0")["se"]).all()  # each advised option works
    u = ml.fit("mathach ~ cwc(ses) + (1|school)", hsb)
    with pytest.raises(SpecificationError, match="bell-mccaffrey"):
        u.coef_table(df="satterthwaite", se="CR0")


# ----- 6. a dictionary-encoded column's reference level is the sorted first, as text's ---------------
def test_dictionary_columns_sort_their_levels_as_text(hsb, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pc = pytest.importorskip("pyarrow.compute")
    pq = pytest.importorskip("pyarrow.parquet")
    h = hsb.assign(sec_t=hsb["sector"].map({0: "pub", 1: "cath"})).sort_values("sector", kind="stable")
    h = h[["school", "mathach", "sec_t"]].reset_index(drop=True)  # 'pub' appears first
    form = "mathach ~ sec_t + (1|school)"
    text = ml.fit(form, h).beta.index.tolist()
    assert text == ["Intercept", "sec_t[T.pub]"]  # 'cath' < 'pub'
    t = pa.Table.from_pandas(h, preserve_index=False)
    t = t.set_column(2, "sec_t", pc.dictionary_encode(t["sec_t"]))
    assert t["sec_t"].chunk(0).dictionary.to_pylist() == ["pub", "cath"]
    assert ml.fit(form, t).beta.index.tolist() == text
    pq.write_table(t, tmp_path / "d.parquet")
    assert ml.fit(form, str(tmp_path / "d.parquet")).beta.index.tolist() == text
    arrow_backed = pd.read_parquet(tmp_path / "d.parquet", dtype_backend="pyarrow")
    assert ml.fit(form, arrow_backed).beta.index.tolist() == text
    # a pandas Categorical keeps the order its user gave
    cat = h.assign(sec_t=pd.Categorical(h["sec_t"], categories=["pub", "cath"]))
    assert ml.fit(form, cat).beta.index.tolist() == ["Intercept", "sec_t[T.cath]"]


# ----- 7. residual files keep the original names as labels, and say what was renamed ----------------
@pytest.mark.parametrize("ext", [".sav", ".dta"])
def test_saved_residual_files_label_and_report_renamed_columns(hsb, tmp_path, ext):
    pyreadstat = pytest.importorskip("pyreadstat")
    f = ml.fit("mathach ~ sector + cwc(ses) + (cwc(ses)|school)", hsb)
    path = tmp_path / f"r{ext}"
    with pytest.warns(MultilevelWarning, match=r"'cwc\(ses\)' -> 'cwc_ses'"):
        f.save_residuals(path, level=1)
    _, meta = (pyreadstat.read_sav if ext == ".sav" else pyreadstat.read_dta)(str(path))
    labels = dict(zip(meta.column_names, meta.column_labels))
    assert labels["cwc_ses"] == "cwc(ses)"
    assert labels["mathach"] == "mathach"
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultilevelWarning)
        f.save_residuals(tmp_path / "r.csv", level=1)  # nothing renamed, nothing said


# ----- 8. float ids print as whole numbers in the level-2 missing message and report -----------------
def test_float_ids_print_as_integers_in_level2_missing(hsb):
    stu = hsb[["school", "mathach", "ses"]].assign(school=lambda t: t["school"].astype(float))
    sch = hsb.groupby("school", as_index=False)[["meanses"]].first().assign(school=lambda t: t["school"].astype(float))
    sch.loc[sch["school"].isin([1224, 1288]), "meanses"] = np.nan
    with pytest.raises(ml.errors.DataError) as e:
        ml.fit("mathach ~ meanses + ses + (1|school)", stu, level2=sch)
    assert "1224 (meanses)" in str(e.value) and "1224.0" not in str(e.value)
    f = ml.fit("mathach ~ meanses + ses + (1|school)", stu, level2=sch, level2_missing="drop")
    text = str(f.data_report)
    assert "1224 (meanses), 1288 (meanses)" in text and "1224.0" not in text
    assert "left with no rows" not in text  # listed once, as dropped for their level-2 values


# ----- 9. text level-2 predictors are in the level-2 residual file ----------------------------------
def test_level2_file_has_text_level2_predictors(hsb):
    h = hsb.assign(sector_lab=hsb["sector"].map({0: "public", 1: "catholic"}))
    f = ml.fit("mathach ~ sector_lab * cwc(ses) + meanses + (cwc(ses)|school)", h)
    r = f.residuals(level=2)
    assert "sector_lab" in r.columns and "meanses" in r.columns
    want = h.groupby("school")["sector_lab"].first()
    assert r["sector_lab"].tolist() == want.reindex(r.index).tolist()
