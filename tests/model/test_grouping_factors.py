"""Issue 14: random-effect terms on several grouping factors, named as lme4 names them.

The names of nested factors are lme4's (`findbars`, lme4 1.1-31):
  findbars(y ~ (1 | a/b/c))  ->  1 | c:(b:a),  1 | b:a,  1 | a
  findbars(y ~ (t || a/b))   ->  1 | b:a,  1 | a,  0 + t | b:a,  0 + t | a
  findbars(y ~ (1 | a/(b:c))) -> 1 | (b:c):a,  1 | a
(the outer factor comes first here: `formula.grouping_factors`).
"""
from __future__ import annotations

import pytest

from multilevel.errors import SpecificationError
from multilevel.model.formula import grouping_factors, parse_formula
from multilevel.model.spec import group_variables, render_group


def _terms(formula: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(r.group, r.terms) for r in parse_formula(formula).random]


def test_two_factors_are_two_groups():
    spec = parse_formula("y ~ x + (1 | school) + (1 | room)")
    assert _terms("y ~ x + (1 | school) + (1 | room)") == [("school", ("1",)), ("room", ("1",))]
    assert spec.groups == ("school", "room")
    assert spec.variables() == ("y", "school", "room", "x")
    spec = parse_formula("y ~ (x | g1) + (1 | g2)")
    assert _terms("y ~ (x | g1) + (1 | g2)") == [("g1", ("1", "x")), ("g2", ("1",))]
    assert spec.groups == ("g1", "g2")


def test_a_factor_named_twice_stays_one_factor():
    assert _terms("y ~ (1 | g) + (0 + x | g)") == [("g", ("1",)), ("g", ("x",))]
    assert parse_formula("y ~ (1 | g) + (0 + x | g)").groups == ("g",)
    assert _terms("y ~ (x || g)") == [("g", ("1",)), ("g", ("x",))]


def test_an_interaction_is_one_factor_that_reads_its_columns():
    spec = parse_formula("y ~ x + (1 | a:b)")
    assert spec.groups == ("a:b",)
    assert spec.grouping_columns == ("a", "b")
    assert spec.variables() == ("y", "a", "b", "x")  # the columns, never 'a:b' itself
    assert "a:b" not in spec.variables()


def test_nesting_expands_as_lme4_does():
    assert _terms("y ~ (t | a/b)") == [("a", ("1", "t")), ("b:a", ("1", "t"))]
    assert _terms("y ~ (1 | a/b/c)") == [("a", ("1",)), ("b:a", ("1",)), ("c:(b:a)", ("1",))]
    spec = parse_formula("y ~ (t | a/b/c)")
    assert spec.groups == ("a", "b:a", "c:(b:a)")
    assert spec.variables() == ("y", "a", "b", "c", "t")
    assert _terms("y ~ (1 | a/(b:c))") == [("a", ("1",)), ("(b:c):a", ("1",))]
    assert _terms("y ~ (1 | (a:b)/c)") == [("a:b", ("1",)), ("c:(a:b)", ("1",))]


def test_uncorrelated_nesting_is_one_block_per_term_and_factor():
    assert _terms("y ~ (t || a/b)") == [("a", ("1",)), ("a", ("t",)), ("b:a", ("1",)), ("b:a", ("t",))]
    assert parse_formula("y ~ (t || a/b)").groups == ("a", "b:a")


@pytest.mark.parametrize("formula", [
    "y ~ x + (1 | school) + (1 | room)", "y ~ (t | a/b/c)", "y ~ (t || a/b)", "y ~ (1 | a:b)",
    "y ~ (1 | a/(b:c))", "y ~ (1 | `my school`/room)",
])
def test_the_formula_of_a_spec_parses_back_to_it(formula):
    spec = parse_formula(formula)
    assert parse_formula(spec.to_formula()) == spec


def test_group_names_and_their_columns():
    assert group_variables("school") == ("school",)
    assert group_variables("c:(b:a)") == ("c", "b", "a")
    assert group_variables("(b:c):a") == ("b", "c", "a")
    assert render_group("b:my school") == "b:`my school`"
    assert grouping_factors("`my school`/room", "(1 | `my school`/room)") == ("my school", "room:my school")


@pytest.mark.parametrize("formula, message", [
    ("y ~ (1 | a + b)", r"holds '\+'.*\(1 \| a\) \+ \(1 \| b\)"),
    ("y ~ (1 | a/)", "must be one column name"),
    ("y ~ (1 | a//b)", "must be one column name"),
    ("y ~ (1 | a:)", "must be one column name"),
    ("y ~ (1 | `a(b)`:c)", "holds parentheses"),
])
def test_groupings_that_cannot_be_read_are_refused(formula, message):
    with pytest.raises(SpecificationError, match=message):
        parse_formula(formula)


def test_one_factor_messages_are_unchanged():
    with pytest.raises(SpecificationError, match=r"nothing before the bar; write '\(1 \| g\)'"):
        parse_formula("y ~ ( | g)")
    with pytest.raises(SpecificationError, match="must be one column name"):
        parse_formula("y ~ (1 | log(g))")
