"""Errors raised on bad input. Each says what is wrong and what to do."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

#: ANSI colour codes and the markers formulaic puts around the place of an error in its messages
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\u29db\u29da]")


class MultilevelError(ValueError):
    """Base class of the errors this package raises on bad input."""


class SpecificationError(MultilevelError):
    """The model, as written, cannot be understood or fitted."""


class DataError(MultilevelError):
    """The data do not fit the model: a missing column, a bad value, a bad grouping."""


class MultilevelWarning(UserWarning):
    """A fit was made, but something about the data or the model deserves the user's attention
    (e.g. a 0/1 or count outcome fitted by a linear model). Filter it with
    warnings.simplefilter('ignore', multilevel.errors.MultilevelWarning)."""


class ConvergenceWarning(MultilevelWarning):
    """The optimiser did not reach a checked optimum (`fit.converged` is False)."""


def close_matches(name: str, candidates: Iterable[str]) -> str:
    """A ' Did you mean ...?' hint listing the candidates closest to `name` (or '')."""
    cands = [str(c) for c in candidates]
    found = difflib.get_close_matches(name, cands, n=3, cutoff=0.6)
    if not found:
        lowered = {c.lower(): c for c in cands}
        if name.lower() in lowered:
            found = [lowered[name.lower()]]
    return f" Did you mean {', '.join(repr(f) for f in found)}?" if found else ""


def preview(items: Iterable[object], limit: int = 10) -> str:
    """A short comma-separated list, ending in '... (N in all)' when cut."""
    items = list(items)
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def plain_message(exc: BaseException) -> str:
    """A library's error message as plain text: formulaic colours the place of an error with ANSI
    codes between the markers ⧛ ⧚, which print as garbage outside a terminal; they are removed and
    the message put on one line."""
    text = _ANSI.sub("", str(exc))
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
