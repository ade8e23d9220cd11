"""The benchmark scripts' pure helpers (benchmarks/): the data of issue 13, the coefficient names
shared by the peers, the agreement check and the default skips. Nothing here is timed."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import generate  # noqa: E402 (the scripts' folder is on sys.path from here on)
import peers  # noqa: E402
import users  # noqa: E402


@pytest.mark.parametrize(("name", "expected"), [
    ("(Intercept)", "Intercept"), ("Intercept", "Intercept"), ("x1", "x1"),
    ("x1:w1", "w1:x1"), ("w1:x1", "w1:x1"),
    ("f[T.L02]", "f=L02"), ("C(f)[T.L07]", "f=L07"), ("fL02", "f=L02"), ("f.1", "f=L02"), ("f.19", "f=L20"),
])
def test_every_peers_spelling_of_a_coefficient_has_one_canonical_name(name, expected):
    assert peers.canonical_name(name) == expected


def test_the_four_files_of_a_size_hold_the_same_rows():
    """Text or integer ids, sorted or shuffled: the same rows (so the same estimates)."""
    base = generate.users_table(3000, "int", "sorted").to_pandas()
    for ids in generate.ID_KINDS:
        for order in generate.ORDERS:
            t = generate.users_table(3000, ids, order).to_pandas()
            if ids == "text":
                assert t["g"].str.fullmatch(r"S\d{7}").all()
                t["g"] = t["g"].str[1:].astype("int64")
            t = t.sort_values(["g", "y"]).reset_index(drop=True)
            pd_base = base.sort_values(["g", "y"]).reset_index(drop=True)
            assert t.equals(pd_base), (ids, order)
    shuffled = generate.users_table(3000, "int", "shuffled").to_pandas()
    assert not np.all(np.diff(shuffled["g"].to_numpy()) >= 0)
    assert set(base["f"]) == set(generate.LEVELS) and len(base) == 3000


def test_the_data_are_seeded():
    a = generate.users_table(2000, "text", "shuffled").to_pandas()
    b = generate.users_table(2000, "text", "shuffled").to_pandas()
    c = generate.users_table(2000, "text", "shuffled", seed=7).to_pandas()
    assert a.equals(b) and not a.equals(c)


def test_agreement_needs_the_same_coefficients():
    ref = dict(coefs={"Intercept": 1.0, "x1": 2.0}, tau=[[1.0, 0.1], [0.1, 0.5]], sigma2=4.0, remlcrit=10.0)
    near = dict(ref, coefs={"Intercept": 1.0 + 1e-9, "x1": 2.0}, remlcrit=10.0 + 1e-9)
    far = dict(ref, coefs={"Intercept": 1.1, "x1": 2.0})
    short = dict(ref, coefs={"Intercept": 1.0})
    assert users.agreement(ref, near)["ok"]
    assert not users.agreement(ref, far)["ok"]
    missing = users.agreement(ref, short)
    assert not missing["ok"] and "x1" in missing["why"]


def test_the_default_run_skips_what_it_says():
    skip = users.skip_reason
    assert skip("glmm", "text-shuffled", 10**7, None, False, False) is None
    assert skip("glmm", "factor", 10**7, None, False, False)  # the default run's length
    assert skip("glmm", "factor", 10**7, None, False, True) is None  # asked for by --cases
    assert skip("lme4", "text-shuffled", 10**7, None, False, True)
    assert skip("lme4", "text-shuffled", 10**6, None, False, False) is None
    assert skip("lme4", "int-sorted", 10**6, None, False, False)
    assert skip("lme4", "int-sorted", 10**6, None, True, False) is None
    assert skip("lme4", "text-shuffled", 10**4, "skipped: no R", True, False) == "skipped: no R"


def test_lme4_is_given_the_model_and_the_id_class(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "users_text.parquet"
    pq.write_table(generate.users_table(500, "text", "shuffled"), path)
    cmd = peers.command("lme4", path, model="factor")
    assert cmd[2].endswith(".csv") and cmd[3] == peers.MODELS["factor"].formula and cmd[4:] == ["character", "x1"]
    assert peers.command("lme4", path)[3:] == []  # the old model: the old command line


def test_the_old_model_keeps_run_pys_layout():
    """run.py reads `beta` as [Intercept, x, w, x:w]; the canonical names sort the interaction."""
    coefs = peers.canonical({"(Intercept)": 1.0, "x": 2.0, "w": 3.0, "x:w": 4.0})
    out = peers._layout(coefs, [[1.0, 0.0], [0.0, 1.0]], 4.0, None, True, "old")
    assert out["beta"] == [1.0, 2.0, 3.0, 4.0]
    assert "beta" not in peers._layout(coefs, [[1.0, 0.0], [0.0, 1.0]], 4.0, None, True, "users")


def test_the_first_fit_table_states_the_acceptance():
    import first_fit

    times = {"HSB model 4": {"ours s cold": [1.5, 1.9, 3.0], "ours s warm": [1.2, 1.1, 0.9], "glmm": [0.3, 0.4, 0.5]}}
    text = first_fit.render(times, ["s"], ["ours", "glmm"], 3)
    assert "| HSB model 4 | empty (first fit of a fresh install) | 1.90 | 0.40 | 0.21 |" in text
    assert "empty cache 1.90 s (target under 2 s: met)" in text
    assert "warm cache 1.10 s (target under 1 s: **not met**)" in text
