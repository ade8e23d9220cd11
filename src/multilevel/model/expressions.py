"""The safe reading of formula text: what a term may say, checked before anything is evaluated.

Formula text is never run as code. Every formula is tokenised here and every function call in it
is parsed with Python's `ast` (mode "eval") and checked against a whitelist; only then is a
formula handed to formulaic, and then as plain column look-ups (backticked names) and `C(name)`:
formulaic evaluates no expression of the user's. The transforms are computed here, by a small
interpreter over numpy arrays (`derived_values`).

Allowed in a formula (lme4's meaning in every case):

- column names: bare (`ses`, `mean.ses`) or backticked (`` `my var` `` for a name with spaces or
  other characters); numbers `0`/`1` (intercept), the formula operators `+ - * / : ^ ( )`;
- `I(expr)`: arithmetic on columns: `+ - * /`, `^` or `**` (power, as in R: `I(x^2)` is x
  squared), unary minus, numbers, `TRUE`/`FALSE` (or `True`/`False`), comparisons
  (`< <= > >= == !=`, giving 0/1) and the elementwise functions below;
- elementwise functions of such an expression: `log` (natural), `log10`, `log2`, `log1p`, `exp`,
  `sqrt`, `abs`;
- `poly(x, degree)` (R's orthogonal polynomials) and `poly(x, degree, raw = TRUE)` (powers
  x, x^2, ...), columns named as R names them: `poly(x, 2, raw = TRUE)1`, `...2`;
- `scale(x)`: (x - mean) / sd over the rows used (R's `scale`);
- `C(x)` and `factor(x)` (the same): x as a categorical predictor;
- `cwc(x)`: x centred within each unit (HLM's group-mean centring), column `cwc(x)`;
  `cgm(x)`: x centred at the grand mean (HLM's grand-mean centring), column `cgm(x)`: the mean
  over the rows used (what an lme4 user's `x - mean(x)` gives), except for a level-2 variable
  written in a level-2 equation of `fit_levels`, which HLM centres at its mean over the units
  (sum_j x_j / J, each unit counted once: `Derived.over_units`);
- `offset(expr)` (fixed part only, a term of its own): added to the linear predictor with
  coefficient 1, as in R.

Anything else (attributes such as `np.x`, subscripts, strings, lambdas, other functions, names
that start with `__`) is refused with a `SpecificationError` naming the term.
"""
from __future__ import annotations

import ast
import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from multilevel.errors import DataError, SpecificationError

#: how a derived column is made (`Derived.kind`); "group" and "grand" are the centrings
Kind = Literal["transform", "group", "grand", "scale", "poly", "offset"]
Centering = Literal["group", "grand"]

#: elementwise functions (inside I(), offset() and at the top of a term)
ELEMENTWISE: dict[str, np.ufunc] = {
    "log": np.log, "log10": np.log10, "log2": np.log2, "log1p": np.log1p,
    "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs,
}
#: every function a formula may call
FUNCTIONS = ("I", *ELEMENTWISE, "poly", "scale", "C", "factor", "cwc", "cgm", "offset")
#: the centring helpers and their kind: `cwc(x)` centres within cluster (HLM's group-mean
#: centring), `cgm(x)` at the grand mean (HLM's grand-mean centring)
CENTERING: dict[str, Centering] = {"cwc": "group", "cgm": "grand"}

ALLOWED = (
    "Allowed in a formula: column names (backticked, `like this`, when they have spaces or other "
    "characters), numbers, + - * / : ^ and parentheses, and the functions "
    + ", ".join(f"{f}()" for f in FUNCTIONS)
    + " (I() takes arithmetic, comparisons, TRUE/FALSE and the elementwise functions; see docs/formulas.md)."
)

@dataclass(frozen=True)
class Derived:
    """A column computed from the data before the design is built: a transform (`I(x^2)`,
    `log(x)`), a centring (`cwc(x)`, `cgm(x)`), `scale(x)`, `poly(x, k[, raw = TRUE])` or an offset.

    `name` is its column name in the model (poly: the stem; its columns are `name1`..`namek`),
    `source` the formula text that makes it again, `variables` the data columns it reads;
    `expression` (transform, offset) is Python over the placeholders _v0, _v1, ... for
    `variables`, already checked against the whitelist.
    """

    kind: Kind
    name: str
    source: str
    variables: tuple[str, ...]
    expression: str = ""
    degree: int = 0
    raw: bool = True
    #: cgm() of a level-2 variable in HLM's level-2 equations: centred at its mean over the units
    #: (each unit counted once, HLM's grand mean of a level-2 predictor), not over the rows
    over_units: bool = False
    #: a centring in level equations of three or four levels (HLM3/HLM4, `level_equations`):
    #: `within` is the grouping factor (lme4's name, 'childid:schoolid') whose units' means cwc()
    #: subtracts; `counted` the factor whose units are each counted once in the mean (HLM centres a
    #: level-2 or level-3 predictor in its own level's file, one value per unit). Empty: the
    #: model's one factor, and the rows (or `over_units`), as for two levels.
    within: str = ""
    counted: str = ""

    @property
    def columns(self) -> tuple[str, ...]:
        if self.kind == "poly":
            return tuple(f"{self.name}{k}" for k in range(1, self.degree + 1))
        return (self.name,)

    @property
    def stateful(self) -> bool:
        """Whether its values depend on other rows (means, sd, orthogonal polynomials)."""
        return self.kind in ("group", "grand", "scale") or (self.kind == "poly" and not self.raw)


# ----- tokens ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Token:
    kind: Literal["name", "quoted", "number", "op", "string"]
    text: str


_NAME = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
_NUM = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_OPS = ("**", "==", "!=", "<=", ">=", "||", "+", "-", "*", "/", ":", "^", "(", ")", ",", "=", "<", ">", "|", "~")


def tokenize(text: str) -> list[Token]:
    """Formula text -> tokens; refuses characters a formula never needs."""
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise SpecificationError(f"A backticked name in '{text}' has no closing backtick.")
            if j == i + 1:
                raise SpecificationError(f"'{text}' has an empty backticked name ``.")
            out.append(Token("quoted", text[i + 1 : j]))
            i = j + 1
            continue
        if ch in "'\"":
            j = text.find(ch, i + 1)
            j = n - 1 if j < 0 else j
            out.append(Token("string", text[i : j + 1]))
            i = j + 1
            continue
        m = _NUM.match(text, i)
        if m and (ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit())):
            out.append(Token("number", m.group(0)))
            i = m.end()
            continue
        m = _NAME.match(text, i)
        if m:
            out.append(Token("name", m.group(0)))
            i = m.end()
            continue
        for op in _OPS:
            if text.startswith(op, i):
                out.append(Token("op", op))
                i += len(op)
                break
        else:
            raise SpecificationError(f"The character {ch!r} in '{text}' is not allowed in a formula. {ALLOWED}")
    return out


def _plain(name: str) -> bool:
    """A name formulaic and Python read as one identifier (else it is backticked)."""
    return name.isidentifier() and not keyword.iskeyword(name) and name not in FUNCTIONS


def quote(name: str) -> str:
    """`name` as formula text: bare when it is a plain identifier, else backticked."""
    return name if _plain(name) else f"`{name}`"


def column_token(tok: Token, term: str) -> str:
    """The column a name token refers to, after the checks every column name gets."""
    if tok.kind == "quoted":
        return tok.text
    name = tok.text
    if name == ".":
        raise SpecificationError(
            f"'.' (all other columns) in '{term}' is not supported: list the predictors by name."
        )
    if name.startswith("__") or keyword.iskeyword(name):
        raise SpecificationError(f"'{name}' in the term '{term}' is not allowed. {ALLOWED}")
    return name


# ----- calls: parsed by ast, checked, rendered -------------------------------------------------
_BOOL = {"TRUE": "True", "FALSE": "False", "True": "True", "False": "False"}


def _python_source(tokens: list[Token], term: str) -> tuple[str, list[str]]:
    """Tokens of a call's arguments -> Python source over placeholders, and the columns."""
    names: list[str] = []
    parts: list[str] = []
    for k, tok in enumerate(tokens):
        nxt = tokens[k + 1] if k + 1 < len(tokens) else None
        if tok.kind == "name" and tok.text in _BOOL:
            parts.append(_BOOL[tok.text])
        elif tok.kind == "name" and nxt is not None and nxt.text == "(":
            if tok.text not in FUNCTIONS:
                raise SpecificationError(f"The function '{tok.text}' in the term '{term}' is not allowed. {ALLOWED}")
            parts.append(tok.text)
        elif tok.kind == "name" and nxt is not None and nxt.text == "=" and k > 0 and tokens[k - 1].text == ",":
            parts.append(tok.text)  # a keyword argument (poly's raw =, degree =)
        elif tok.kind in ("name", "quoted"):
            col = column_token(tok, term)
            if col not in names:
                names.append(col)
            parts.append(f"_v{names.index(col)}")
        elif tok.kind == "op" and tok.text == "^":
            parts.append("**")  # R's power
        elif tok.kind == "op" and tok.text in ("|", "||", "~", ":"):
            raise SpecificationError(f"'{tok.text}' inside the function call of '{term}' is not allowed. {ALLOWED}")
        else:
            parts.append(tok.text)
    return " ".join(parts), names


_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "^"}
_CMPOPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "^": 4}


def _check_expr(node: ast.AST, term: str, compare: bool) -> None:
    """Refuse every node outside the whitelisted arithmetic (see module doc)."""

    def bad(what: str) -> SpecificationError:
        return SpecificationError(f"{what} in the term '{term}' is not allowed. {ALLOWED}")

    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise bad(f"The operator {type(node.op).__name__}")
        _check_expr(node.left, term, compare)
        _check_expr(node.right, term, compare)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise bad(f"The operator {type(node.op).__name__}")
        _check_expr(node.operand, term, compare)
    elif isinstance(node, ast.Compare):
        if not compare:
            raise bad("A comparison (only inside I())")
        if len(node.ops) != 1 or type(node.ops[0]) not in _CMPOPS:
            raise bad("A chained or non-arithmetic comparison")
        _check_expr(node.left, term, compare)
        _check_expr(node.comparators[0], term, compare)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            raise bad(f"The text {node.value!r}")
        if not isinstance(node.value, (int, float, bool)) or isinstance(node.value, complex):
            raise bad(f"The constant {node.value!r}")
    elif isinstance(node, ast.Name):
        if not re.fullmatch(r"_v\d+", node.id):
            raise bad(f"'{node.id}'")
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in ELEMENTWISE:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise bad(f"The call of '{name}' (inside a transform only {', '.join(ELEMENTWISE)} may be called)")
        if node.keywords or len(node.args) != 1:
            raise bad(f"'{node.func.id}' with other than one argument")
        _check_expr(node.args[0], term, compare)
    else:
        raise bad(f"'{_describe(node)}'")


def _describe(node: ast.AST) -> str:
    kinds = {ast.Attribute: "An attribute (a.b)", ast.Subscript: "A subscript (a[...])", ast.Lambda: "A lambda",
             ast.BoolOp: "'and'/'or'", ast.IfExp: "An 'if' expression", ast.Starred: "A starred argument"}
    return kinds.get(type(node), type(node).__name__)


def _render(node: ast.AST, names: list[str], parent: int = 0) -> str:
    """R's text of an expression (the column name of a transform): `x^2`, `x + 1`, `log(x)`."""
    if isinstance(node, ast.BinOp):
        op = _BINOPS[type(node.op)]
        p = _PREC[op]
        left = _render(node.left, names, p + (1 if op == "^" else 0))
        right = _render(node.right, names, p + (0 if op == "^" else 1))
        s = f"{left}{op}{right}" if op in ("^", "/") else f"{left} {op} {right}"
        return f"({s})" if p < parent else s
    if isinstance(node, ast.UnaryOp):
        s = ("-" if isinstance(node.op, ast.USub) else "+") + _render(node.operand, names, 3)
        return f"({s})" if parent > 3 else s
    if isinstance(node, ast.Compare):
        s = f"{_render(node.left, names, 1)} {_CMPOPS[type(node.ops[0])]} {_render(node.comparators[0], names, 1)}"
        return f"({s})" if parent > 0 else s
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool):
            return "TRUE" if node.value else "FALSE"
        return repr(node.value)
    if isinstance(node, ast.Name):
        return quote(names[int(node.id[2:])])
    if isinstance(node, ast.Call):
        return f"{_callee(node)}({_render(node.args[0], names)})"
    raise AssertionError(type(node))


def _callee(call: ast.Call) -> str:
    """The name of a function `_check_expr` admitted (a bare name: attributes are refused there)."""
    assert isinstance(call.func, ast.Name)
    return call.func.id


def _parse_call(fname: str, args: list[Token], term: str, text: str) -> tuple[ast.Call, list[str]]:
    src, names = _python_source(args, term)
    try:
        tree = ast.parse(f"{fname}({src})", mode="eval")
    except SyntaxError:
        raise SpecificationError(f"Cannot read '{text}' in the term '{term}'. {ALLOWED}") from None
    call = tree.body
    assert isinstance(call, ast.Call)
    return call, names


def _single_column(call: ast.Call, names: list[str], fname: str, term: str) -> str:
    if call.keywords or len(call.args) != 1 or not isinstance(call.args[0], ast.Name):
        raise SpecificationError(f"{fname}() takes one column name, as in {fname}(x); '{term}' gives it something else.")
    _check_expr(call.args[0], term, False)
    return names[int(call.args[0].id[2:])]


def _literal(node: ast.AST, term: str, what: str):
    if not isinstance(node, ast.Constant) or isinstance(node.value, str):
        raise SpecificationError(f"{what} in '{term}' must be a number or TRUE/FALSE.")
    return node.value


def read_call(fname: str, args: list[Token], term: str) -> tuple[str, list[Derived], list[str]]:
    """A call in a formula -> (formulaic text that stands for it, the derived columns it makes,
    the data columns it reads)."""
    piece, derived, names = _read_call(fname, args, term)
    return piece, derived, names


def _read_call(fname: str, args: list[Token], term: str) -> tuple[str, list[Derived], list[str]]:
    text = f"{fname}(...)"
    if fname not in FUNCTIONS:
        raise SpecificationError(f"The function '{fname}' in the term '{term}' is not allowed. {ALLOWED}")
    call, names = _parse_call(fname, args, term, text)
    if fname in ("C", "factor"):
        col = _single_column(call, names, fname, term)
        return f"C({quote(col)})", [], names
    if fname in CENTERING:
        col = _single_column(call, names, fname, term)
        name = f"{fname}({col})"
        return f"`{name}`", [Derived(CENTERING[fname], name, f"{fname}({quote(col)})", (col,))], names
    if fname == "scale":
        col = _single_column(call, names, fname, term)
        return f"`scale({col})`", [Derived("scale", f"scale({col})", f"scale({quote(col)})", (col,))], names
    if fname == "poly":
        return (*_read_poly(call, names, term), names[:1])
    # I(), offset() and the elementwise functions: checked arithmetic
    if call.keywords or len(call.args) != 1:
        raise SpecificationError(f"{fname}() takes one expression, as in {fname}(x); '{term}' gives it something else.")
    _check_expr(call.args[0], term, compare=fname == "I")
    inner = call.args[0]
    if fname == "I" and isinstance(inner, ast.Name):
        col = names[int(inner.id[2:])]
        return f"`{col}`", [], names  # I(x) is x
    rendered = f"{fname}({_render(inner, names)})"
    # the column name: the text without backticks (formulaic looks it up as one backticked name)
    display = f"{fname}({_render(inner, [f'{chr(0)}{n}' for n in names])})".replace("`", "").replace(chr(0), "")
    expression = ast.unparse(inner) if fname in ("I", "offset") else ast.unparse(call)
    kind: Kind = "offset" if fname == "offset" else "transform"
    return f"`{display}`", [Derived(kind, display, rendered, tuple(names), expression)], names


def _read_poly(call: ast.Call, names: list[str], term: str) -> tuple[str, list[Derived]]:
    usage = "write poly(x, degree) or poly(x, degree, raw = TRUE) with x a column name"
    args = list(call.args)
    kw = {k.arg: k.value for k in call.keywords}
    if not args or not isinstance(args[0], ast.Name) or len(args) > 3 or set(kw) - {"degree", "raw"}:
        raise SpecificationError(f"Cannot read '{term}': {usage}.")
    col = names[int(args[0].id[2:])]
    degree = args[1] if len(args) > 1 else kw.get("degree", ast.Constant(1))
    raw = args[2] if len(args) > 2 else kw.get("raw", ast.Constant(False))
    d, r = _literal(degree, term, "The degree"), _literal(raw, term, "raw")
    if isinstance(d, bool) or not float(d).is_integer() or not 1 <= d <= 20:
        raise SpecificationError(f"The degree in '{term}' must be a whole number from 1 to 20; {usage}.")
    d, r = int(d), bool(r)
    for name in [*names[1:]]:
        raise SpecificationError(f"'{name}' in '{term}' is not allowed: {usage}.")
    stem_src = f"poly({quote(col)}, {d}" + (", raw = TRUE)" if r else ")")
    stem = f"poly({col}, {d}" + (", raw = TRUE)" if r else ")")
    der = Derived("poly", stem, stem_src, (col,), degree=d, raw=r)
    return "(" + " + ".join(f"`{c}`" for c in der.columns) + ")", [der]


# ----- formula text -> formulaic text -----------------------------------------------------------
def translate(text: str, term: str | None = None) -> tuple[str, list[Derived], list[str]]:
    """A right-hand side (fixed part, or the inside of a random term) -> (formulaic text where every
    column is a backticked look-up, the derived columns, the data columns named bare)."""
    term = term or text
    tokens = tokenize(text)
    out: list[str] = []
    derived: list[Derived] = []
    columns: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.kind == "name" and nxt is not None and nxt.text == "(":
            depth, j = 0, i + 1
            while j < len(tokens):
                if tokens[j].text == "(":
                    depth += 1
                elif tokens[j].text == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= len(tokens):
                raise SpecificationError(f"Unbalanced parentheses in '{text}'.")
            if tok.text == "offset":
                raise SpecificationError(
                    f"offset() in '{term}' must be a term of its own in the fixed part, as in 'y ~ x + offset(z) + (1 | g)'."
                )
            piece, der, names = read_call(tok.text, tokens[i + 2 : j], term)
            out.append(piece)
            derived.extend(der)
            columns.extend(names)
            i = j + 1
            continue
        if tok.kind in ("name", "quoted"):
            col = column_token(tok, term)
            if tok.kind == "name" and col in _BOOL:
                raise SpecificationError(f"{col} in '{term}' is not a predictor; TRUE/FALSE belong inside a function, e.g. poly(x, 2, raw = TRUE).")
            columns.append(col)
            out.append(f"`{col}`")
        elif tok.kind == "number":
            out.append(tok.text)
        elif tok.kind == "string":
            raise SpecificationError(f"The text {tok.text} in '{term}' is not allowed. {ALLOWED}")
        elif tok.text in ("+", "-", "*", "/", ":", "(", ")"):
            out.append(tok.text)
        elif tok.text in ("^", "**"):
            out.append("**")  # crossing to a degree, as in R's (a + b)^2
        elif tok.text == "~":
            raise SpecificationError(f"The formula has more than one '~' (in '{term}'); write one 'outcome ~ predictors'.")
        else:
            raise SpecificationError(f"'{tok.text}' in '{term}' is not allowed here. {ALLOWED}")
        i += 1
    return " ".join(out), derived, columns


def read_offset(text: str) -> Derived | None:
    """`offset(expr)` as a whole fixed-part term -> its Derived; None for any other term."""
    tokens = tokenize(text)
    if len(tokens) >= 3 and tokens[0] == Token("name", "offset") and tokens[1].text == "(" and tokens[-1].text == ")":
        depth = 0
        for k, t in enumerate(tokens[1:], 1):
            depth += t.text == "("
            depth -= t.text == ")"
            if depth == 0 and k != len(tokens) - 1:
                return None
        _, der, _ = read_call("offset", tokens[2:-1], text)
        return der[0]
    return None


def column_name(text: str, what: str) -> str:
    """One column name (bare or backticked), e.g. the outcome or a grouping factor."""
    tokens = tokenize(text) if text.strip() else []
    if len(tokens) != 1 or tokens[0].kind not in ("name", "quoted"):
        raise SpecificationError(
            f"{what} '{text}' must be one column name (backticked if it has spaces); "
            "transform it into a new column first."
        )
    return column_token(tokens[0], text)


# ----- values --------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def _compiled(expression: str) -> ast.AST:
    return ast.parse(expression, mode="eval").body


def _evaluate(node: ast.AST, values: list[np.ndarray]) -> np.ndarray | float:
    if isinstance(node, ast.BinOp):
        a, b = _evaluate(node.left, values), _evaluate(node.right, values)
        op = type(node.op)
        return a + b if op is ast.Add else a - b if op is ast.Sub else a * b if op is ast.Mult else a / b if op is ast.Div else np.power(a, b)
    if isinstance(node, ast.UnaryOp):
        v = _evaluate(node.operand, values)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Compare):
        a, b = _evaluate(node.left, values), _evaluate(node.comparators[0], values)
        cmp = type(node.ops[0])
        r = a < b if cmp is ast.Lt else a <= b if cmp is ast.LtE else a > b if cmp is ast.Gt else a >= b if cmp is ast.GtE else a == b if cmp is ast.Eq else a != b
        return np.asarray(r, dtype=float)
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, (int, float))  # _check_expr admitted numbers and TRUE/FALSE only
        return float(node.value)
    if isinstance(node, ast.Name):
        return values[int(node.id[2:])]
    if isinstance(node, ast.Call):
        return ELEMENTWISE[_callee(node)](_evaluate(node.args[0], values))
    raise AssertionError(type(node))  # _check_expr admitted nothing else


def _poly_state(x: np.ndarray, degree: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """R's poly(x, degree) coefficients (alpha, norm2), from the QR of the centred powers."""
    xbar = float(x.mean())
    xc = x - xbar
    if len(np.unique(x)) <= degree:
        raise DataError(f"{name}: '{name[5:].split(',')[0]}' has only {len(np.unique(x))} distinct values in the rows used; "
                        f"a polynomial of degree {degree} needs more than {degree}.")
    X = np.vander(xc, degree + 1, increasing=True)
    Q, R = np.linalg.qr(X)
    Z = Q * np.diag(R)  # sign-free: R's qr.qy(QR, diag(diag(QR$qr)))
    norm2 = (Z**2).sum(axis=0)
    alpha = ((xc[:, None] * Z**2).sum(axis=0) / norm2 + xbar)[:degree]
    return alpha, np.concatenate([[1.0], norm2])


def _poly_values(x: np.ndarray, degree: int, alpha: np.ndarray, norm2: np.ndarray) -> list[np.ndarray]:
    """R's predict(poly) recurrence: Z_{k+1} = (x - alpha_k) Z_k - norm2_{k+1}/norm2_k Z_{k-1}."""
    Z = [np.ones_like(x), x - alpha[0]]
    for i in range(1, degree):
        Z.append((x - alpha[i]) * Z[i] - (norm2[i + 1] / norm2[i]) * Z[i - 1])
    return [Z[k] / np.sqrt(norm2[k + 1]) for k in range(1, degree + 1)]


#: what a stateful column keeps from the rows used (`derived_state`)
DerivedState = np.ndarray | float | tuple[float, float] | tuple[np.ndarray, np.ndarray] | None


def centring_state(d: Derived, sums: np.ndarray, counts: np.ndarray) -> np.ndarray | float:
    """The centring state of cwc(x) or cgm(x) from x's per-unit sums S_j = sum_i x_ij and rows n_j
    over the rows used (units in the order of their codes): written once for the in-memory design
    (sums from one bincount, `derived_state`) and the streamed one (sums added up over the chunks).

    cwc(x), HLM's group-mean centring: the unit means S_j / n_j;
    cgm(x), HLM's grand-mean centring: the mean over the rows, sum_j S_j / sum_j n_j (lme4's x - mean(x));
    cgm(x) of a level-2 variable in level equations: the mean over the units, each counted once,
    sum_j (S_j / n_j) / J (HLM's grand mean of a level-2 predictor; x is constant within units,
    checked in `builder._classify`, so S_j / n_j is its value; over the rows large units would weigh more).
    """
    if d.kind == "group":
        return sums / counts
    if d.over_units:
        has = counts > 0
        return float((sums[has] / counts[has]).mean())
    return float(sums.sum() / counts.sum())


def derived_state(d: Derived, column: Callable[[str], np.ndarray], codes: np.ndarray, n_groups: int,
                  counts: np.ndarray | None = None) -> DerivedState:
    """What a stateful column needs from the rows used: unit means (cwc) or the mean (cgm) by
    `centring_state`, (mean, sd) (scale), R's (alpha, norm2) (orthogonal poly); None for the
    others. `counts`: the rows of each unit (np.bincount(codes), made once for all columns)."""
    if not d.stateful:
        return None
    x = column(d.variables[0])
    if d.kind in ("group", "grand"):
        n = np.bincount(codes, minlength=n_groups) if counts is None else counts
        return centring_state(d, np.bincount(codes, weights=x, minlength=n_groups), n)
    if d.kind == "scale":
        sd = float(x.std(ddof=1)) if x.size > 1 else 0.0
        if not sd > 0:
            raise DataError(f"scale({d.variables[0]}): '{d.variables[0]}' has the same value in every row used; it cannot be scaled.")
        return (float(x.mean()), sd)
    return _poly_state(x, d.degree, d.name)


def derived_values(
    d: Derived, column: Callable[[str], np.ndarray], codes: np.ndarray | None, state: object, check: bool = True
) -> dict[str, np.ndarray]:
    """The column(s) of `d` on the rows whose data columns `column(v)` gives (float arrays);
    `check`: refuse values that are not finite (rows used; off for rows with missing values).
    `state` is `derived_state`'s (typed `object`: the designs keep the states of all kinds in one dict)."""
    if d.kind == "group":
        assert codes is not None and isinstance(state, np.ndarray)
        x = column(d.variables[0])
        return {d.name: x - np.where(codes >= 0, state[np.maximum(codes, 0)], np.nan)}
    if d.kind == "grand":
        assert isinstance(state, (float, np.floating))
        return {d.name: column(d.variables[0]) - state}
    if d.kind == "scale":
        assert isinstance(state, tuple)
        m, sd = state
        return {d.name: (column(d.variables[0]) - m) / sd}
    if d.kind == "poly":
        x = column(d.variables[0])
        if d.raw:
            return {c: x**k for k, c in enumerate(d.columns, 1)}
        assert isinstance(state, tuple)
        alpha, norm2 = state
        return dict(zip(d.columns, _poly_values(x, d.degree, alpha, norm2)))
    values = [column(v) for v in d.variables]
    n = len(values[0]) if values else 0
    with np.errstate(all="ignore"):
        out = np.broadcast_to(np.asarray(_evaluate(_compiled(d.expression), values), dtype=float), (n,)).copy()
    bad = ~np.isfinite(out)
    if check and bad.any():
        raise not_finite_error(d, int(bad.sum()))
    return {d.name: out}


def not_finite_error(d: Derived, rows: int) -> DataError:
    """A transform that is not a finite number in `rows` of the rows used."""
    return DataError(
        f"'{d.source}' is not a finite number in {rows} of the rows used (e.g. the log or "
        "square root of a number <= 0, or a division by 0); drop those rows or change the transform."
    )
