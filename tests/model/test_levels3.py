"""Issue 14: HLM3's level equations (`ml.levels(..., level3=..., group=(l2, l3))`): the spec they make
equals the lme4 formula's, the two-level signature is unchanged, and what is not taken is refused."""
from __future__ import annotations

import pytest

import multilevel as ml
from multilevel.model.formula import parse_formula

EG_L1 = "math ~ 1 + year"
EG_L2 = {"Intercept": "black + hispanic + random", "year": "black + hispanic + random"}
EG_L3 = {"Intercept": {"Intercept": "lowinc + random"}, "year": {"Intercept": "lowinc + random"}}


def test_eg_model_as_hlm3_equations_is_the_lme4_formula():
    spec = ml.levels(EG_L1, EG_L2, EG_L3, group=("childid", "schoolid"))
    assert spec == parse_formula("math ~ (lowinc + black + hispanic) * year + (year | schoolid/childid)")
    assert spec.groups == ("schoolid", "childid:schoolid")  # level-2 ids read within level-3 units
    assert spec.random[0].terms == ("1", "year") and spec.random[1].terms == ("1", "year")


def test_level3_defaults_fixed_and_blank_equations():
    spec = ml.levels("y ~ 1 + x", {"Intercept": "w2 + random"}, {"Intercept": {"Intercept": "w3 + u", "w2": ""}},
                     group=("room", "school"))
    assert spec == parse_formula("y ~ 1 + w3 + w2 + x + (1 | school) + (1 | room:school)")


def test_random_level2_predictor_slope_at_level3_and_no_intercept():
    # B01 random at level 3 (U01 on w2); P1 = B10 with no level-2 random effect; B00 = U00 only ('0 + random')
    spec = ml.levels("y ~ 1 + x", {"Intercept": "w2 + random", "x": "1"},
                     {"Intercept": {"Intercept": "1 + random", "w2": "random"}, "x": {"Intercept": "random"}},
                     group=("room", "school"))
    assert spec == parse_formula("y ~ 1 + w2 + x + (1 + w2 + x | school) + (1 | room:school)")


def test_level1_grand_mean_centring_is_taken():
    spec = ml.levels("y ~ 1 + cgm(x)", {"Intercept": "random"}, {"Intercept": {"Intercept": "random"}}, group=("c", "s"))
    assert spec.centering_map == {"cgm(x)": "grand"}


def test_two_level_signature_unchanged():
    a = ml.levels("mathach ~ 1 + cwc(ses)", {"Intercept": "sector + u", "cwc(ses)": "u"}, group="school")
    assert a == parse_formula("mathach ~ sector + cwc(ses) + (cwc(ses) | school)")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level3": None, "group": ("c", "s")}, r"names two ids .* no level3 equations"),
        ({"group": "s"}, r"group=\(level-2 id, level-3 id\)"),
        ({"group": ("s", "s")}, r"both 's'"),
        ({"level3": {"Intercept": "random"}}, r"level3\['Intercept'\] must be a dict"),
        ({"level3": {"Intercept": {"w9": "random"}}}, r"'w9', which is not a level-2 coefficient"),
        ({"level3": {"z": {"Intercept": "random"}}}, r"not a level-1 coefficient"),
        ({"level3": {"Intercept": {"Intercept": "w3"}}}, r"No level-2 coefficient is random at level 3"),
        ({"level2": {"Intercept": "w2"}}, r"No level-1 coefficient is random at level 2"),
        ({"level2": {"Intercept": "w2 + R0"}}, r"'R0' .* HLM's name of a random effect"),
        ({"level3": {"Intercept": {"Intercept": "U00"}}}, r"'U00' .* HLM's name of a random effect"),
        ({"level3": {"Intercept": {"Intercept": "cwc(w3) + random"}}}, r"cwc\(w3\): group-mean centring of a level-3 variable, but level 3 is the top level"),
    ],
)
def test_refusals(kwargs, message):
    args = {"level2": {"Intercept": "w2 + random"}, "level3": {"Intercept": {"Intercept": "w3 + random"}}, "group": ("c", "s")}
    args.update(kwargs)
    with pytest.raises(ml.SpecificationError, match=message):
        ml.levels("y ~ 1 + x", args["level2"], args["level3"], group=args["group"])


def test_a_data_column_named_like_hlms_random_effects_is_a_column():
    from multilevel.model.level_equations import parse_levels3

    got = parse_levels3("y ~ 1", {"Intercept": "r1 + random"}, {"Intercept": {"Intercept": "u00 + random"}}, ("c", "s"),
                        columns=["y", "r1", "u00", "c", "s"])
    assert got == parse_formula("y ~ 1 + u00 + r1 + (1 | s) + (1 | c:s)")
