"""Contrasts of the fixed effects written as text: "sector = 0, sector:cses = 0", "meanses - cses",
"2*G01 - G11 = 1". Names are lme4's column names or HLM's gamma labels (G00, G01, ...); names with
parentheses and operators, as the model names derived columns ("sector:cwc(ses) = 0",
"I(x^2) = 0", "poly(x, 2, raw = TRUE)2 = 0"), are read whole.
"""
from __future__ import annotations

import re

import numpy as np

from multilevel.errors import SpecificationError, close_matches

_GAMMA = re.compile(r"G\d+")
#: a number's mantissa and its "e", just before the sign of the exponent ("1e-3")
_MANTISSA_E = re.compile(r"(?:^|[^\w.:])(?:\d+\.?\d*|\.\d+)[eE]$")
_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"


def _split_top(text: str, seps: str) -> list[tuple[str, str]]:
    """Split at separators outside parentheses (not the sign of a number's exponent, as in 1e-3);
    returns (separator before, piece)."""
    out, depth, start, sep = [], 0, 0, "+"
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch in "+-" and _MANTISSA_E.search(text[:i]):
            continue
        elif ch in seps and depth == 0:
            out.append((sep, text[start:i]))
            sep, start = ch, i + 1
    out.append((sep, text[start:]))
    return out


def _restore(text: str, back: dict[str, str]) -> str:
    """The user's text: the placeholders of `_protect` put back (longest key first: _N12_ before _N1_)."""
    for key in sorted(back, key=len, reverse=True):
        text = text.replace(key, back[key])
    return text


def _did_you_mean(piece: str, x_names: list[str]) -> str:
    """'Did you mean' a name of the model: the same interaction in another order (formulaic orders
    an interaction's factors as the formula does: sector:cwc(ses), not cwc(ses):sector), else the
    closest names."""
    factors = sorted(f.strip() for f in piece.split(":"))
    same = [n for n in x_names if sorted(f.strip() for f in n.split(":")) == factors and n != piece]
    if same:
        return f" Did you mean {', '.join(repr(n) for n in same)}? (an interaction is named with its factors in the model's order)"
    return close_matches(piece, x_names)


def _side(expr: str, names: dict[str, int], p: int, back: dict[str, str] | None = None) -> tuple[np.ndarray, float]:
    back = back or {}
    coef, const = np.zeros(p), 0.0
    for sign, piece in _split_top(expr, "+-"):
        piece = piece.strip()
        if not piece:
            if sign == "-":
                raise SpecificationError(f"Cannot read the contrast {expr!r}: a '-' with nothing after it.")
            continue
        s = -1.0 if sign == "-" else 1.0
        m = re.fullmatch(rf"({_NUMBER})\s*\*?\s*(.*)", piece)
        if m and m.group(2):
            s *= float(m.group(1))
            piece = m.group(2).strip()
        elif re.fullmatch(_NUMBER, piece):
            const += s * float(piece)
            continue
        if len(piece) > 1 and piece.startswith("`") and piece.endswith("`"):
            piece = piece[1:-1]  # a backticked name, as in the formula
        if piece not in names:
            model_names = [n for n in names if not _GAMMA.fullmatch(n) and not re.fullmatch(r"_N\d+_", n)]
            shown = _restore(piece, back)
            raise SpecificationError(
                f"{shown!r} in the contrast {_restore(expr, back).strip()!r} is not a fixed effect of this model."
                f"{_did_you_mean(shown, model_names)} The fixed effects are: {', '.join(model_names)} "
                "(or HLM's labels G00, G01, ...)."
            )
        coef[names[piece]] += s
    return coef, const


def _protect(text: str, x_names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Replace the names that hold characters the contrast grammar uses ("cwc(ses)", "I(x^2)",
    "poly(x, 2, raw = TRUE)1") by placeholders, longest first, so that they are read whole."""
    special = sorted((n for n in x_names if not re.fullmatch(r"[\w.:]+", n)), key=len, reverse=True)
    back: dict[str, str] = {}
    for k, n in enumerate(special):
        if n in text:
            key = f"_N{k}_"
            text = text.replace(f"`{n}`", key).replace(n, key)  # backticked as in the formula, or not
            back[key] = n
    return text, back


def parse_contrasts(text: str, x_names: tuple[str, ...], gamma_labels: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """L (rows), rhs and a label per row, from comma-separated linear equations (or expressions = 0)."""
    names = {n: i for i, n in enumerate(x_names)}
    names.update({g: i for i, g in enumerate(gamma_labels)})
    p = len(x_names)
    text, back = _protect(text, x_names)
    names.update({key: names[n] for key, n in back.items()})
    rows, rhs, labels = [], [], []
    for _, eq in _split_top(text, ","):
        eq = eq.strip()
        if not eq:
            continue
        shown = _restore(eq, back)
        bad = re.search(r"[<>!/]|\*\s*(?:[-+]?\s*" + _NUMBER + r")\s*(?:$|[-+=])", eq)
        if bad:
            raise SpecificationError(
                f"Cannot read the contrast {shown!r} at {bad.group(0).strip()!r}: write linear equations with '=' and "
                "numbers before the names, e.g. \"sector = 0\", \"2*meanses - cses = 0\", \"0.5*G01 + 0.5*G02 = 1\"."
            )
        parts = eq.split("=")
        if len(parts) > 2:
            raise SpecificationError(f"Cannot read the contrast {shown!r}: more than one '='.")
        left, lc = _side(parts[0], names, p, back)
        right, rc = _side(parts[1], names, p, back) if len(parts) == 2 else (np.zeros(p), 0.0)
        row = left - right
        if not row.any():
            raise SpecificationError(f"The contrast {shown!r} has no fixed effect in it.")
        rows.append(row)
        rhs.append(rc - lc)
        labels.append(shown)
    if not rows:
        raise SpecificationError("The contrast is empty: write e.g. \"sector = 0, sector:cses = 0\".")
    return np.array(rows), np.array(rhs), labels
