"""How result objects print: a title, tables and lines of text (`__str__`/`__repr__`), and the
same as HTML for Jupyter (`_repr_html_`). Formatting only: every number comes from the object."""
from __future__ import annotations

import html
from collections.abc import Sequence

import pandas as pd


def _table_text(t: pd.DataFrame | pd.Series) -> str:
    frame = t.to_frame() if isinstance(t, pd.Series) else t
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_rows", 200):
        return frame.to_string(float_format=lambda x: f"{x:.6g}")


def as_text(title: str, parts: Sequence[object]) -> str:
    """The title, then each part (text lines as they are, tables as aligned columns)."""
    out = [title]
    for p in parts:
        out.append(_table_text(p) if isinstance(p, (pd.DataFrame, pd.Series)) else str(p))
    return "\n".join(out)


def as_html(title: str, parts: Sequence[object]) -> str:
    """The same parts as HTML (tables by pandas, text escaped)."""
    out = [f"<p><b>{html.escape(title)}</b></p>"]
    for p in parts:
        if isinstance(p, (pd.DataFrame, pd.Series)):
            frame = p.to_frame() if isinstance(p, pd.Series) else p
            out.append(frame.to_html(float_format=lambda x: f"{x:.6g}", na_rep=""))
        else:
            out.append(f"<pre>{html.escape(str(p))}</pre>")
    return "\n".join(out)


class ShownAsTables:
    """Prints as the title and parts of its `_parts()`: `str`/`repr` as text, `_repr_html_` for
    Jupyter. (A dataclass using it sets repr=False, so that its generated repr does not replace
    this one.)"""

    def _parts(self) -> tuple[str, list[object]]:
        raise NotImplementedError

    def __str__(self) -> str:
        return as_text(*self._parts())

    def __repr__(self) -> str:
        return as_text(*self._parts())

    def _repr_html_(self) -> str:
        return as_html(*self._parts())


def p_text(p: float) -> str:
    """A p-value as printed in the tables: 4 significant digits, '< 1e-16' below double precision."""
    return "< 1e-16" if p < 1e-16 else f"{p:.4g}"
