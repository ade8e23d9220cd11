"""model.terms gives formulaic's terms, order and names for simple right-hand sides, None for the
rest, and NumericSpec builds formulaic's model matrix of new data."""
import random

import formulaic
import numpy as np
import pandas as pd
import pytest

from multilevel.model.terms import NumericSpec, numeric_spec, simple_terms, term_name

CASES = [
    "(sector + meanses) * cses", "b*a", "a:b + b:a", "b:a + a", "a*b*c", "(a+b)*(c+d)", "a*b - a", "0 + a*b",
    "a + b - 1", "c + a:b + a", "`x y`*z", "a:b:c + c:a", "a*(b+c) + b:a", "1", "0", "-1 + a", "- 1 + a", "a + 1",
    "a*a", "a:a", "(a + b):c", "a - a", "a + (b + c)", "a - b:c + b*c", "`cwc(ses)` * sector", "a*b:c", "a:b*c",
    "1 + a - 1", "a + 0", "a + b - (a + b)", "-a + b", "0 + a + 1", "a - 1 + 1", "1 + 0", "0 + 1 + a",
    "(a*b)*(c*d)", "((a))", "a:(b + c):d", "(a + b - a)*c", "a*(b - b)", "`a`:a + a", "1 + `sector` + `meanses`:`cses`",
    "a + b*c*d - b:c", "d:c + c:d:e + e", "a +b", "  a*b  ",
]
NOT_SIMPLE = ["C(x)", "C(x)*y", "a**2", "(a+b)**2", "a/b", "a %in% b", "log(a)", "a + 2", "a.b", "(a + 1)*b", "-0 + a",
              "a + ", "(a + b", "a + b)", "", "a b", "`a`` + b", "` a` + b", "10 + a", "a:1", "1:a", "I(a)", "a + -1"]


def formulaic_terms(rhs: str) -> tuple[str, ...]:
    return tuple(str(t) for t in formulaic.Formula(rhs))


@pytest.mark.parametrize("rhs", CASES)
def test_simple_terms_are_formulaics(rhs):
    ours = simple_terms(rhs)
    assert ours is not None
    assert tuple(term_name(t) for t in ours) == formulaic_terms(rhs)
    assert {f for t in ours for f in t} == set(formulaic.Formula(rhs).required_variables)


@pytest.mark.parametrize("rhs", NOT_SIMPLE)
def test_the_rest_is_left_to_formulaic(rhs):
    assert simple_terms(rhs) is None


def _random_formula(rng: random.Random, depth: int = 0) -> str:
    names = ["a", "b", "c", "d", "`e f`"]
    if depth > 2 or rng.random() < 0.35:
        return rng.choice(names)
    op = rng.choice([" + ", " - ", "*", ":", " * ", " + "])
    left, right = _random_formula(rng, depth + 1), _random_formula(rng, depth + 1)
    text = f"{left}{op}{right}"
    return f"({text})" if rng.random() < 0.5 else text


def test_random_formulas_match_formulaic():
    rng = random.Random(13)
    checked = 0
    for _ in range(400):
        rhs = _random_formula(rng)
        head = rng.choice(["", "0 + ", "1 + ", "-1 + "])
        tail = rng.choice(["", " - 1", " + 1", " + 0"])
        rhs = head + rhs + tail
        try:
            expected = formulaic_terms(rhs)
        except Exception:
            assert simple_terms(rhs) is None  # formulaic refuses it: so must we
            continue
        ours = simple_terms(rhs)
        assert ours is not None, rhs
        assert tuple(term_name(t) for t in ours) == expected, rhs
        checked += 1
    assert checked > 300


def test_numeric_spec_is_formulaics_on_new_data():
    rhs = "1 + `x y` + b + `x y`:b"
    spec = numeric_spec(rhs)
    assert isinstance(spec, NumericSpec)
    data = pd.DataFrame({"x y": [0.5, 2.0, -1.0, 3.0], "b": [1.0, 0.0, 2.0, 5.0]})
    expected = formulaic.model_matrix(rhs, data, context={})
    mm = spec.get_model_matrix(data)
    assert list(mm.columns) == list(expected.columns) == [e.columns[0] for e in spec.structure]
    assert [e.term for e in spec.structure] == [str(e.term) for e in expected.model_spec.structure]
    np.testing.assert_array_equal(mm.to_numpy(), expected.to_numpy())
    assert numeric_spec("C(g) + x") is None
