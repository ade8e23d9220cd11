"""Where the package writes files (residual files, HTML pages, plots): the path checked before
anything is computed or written, so that a missing folder gets a message naming it."""
from __future__ import annotations

from pathlib import Path

from multilevel.errors import DataError, SpecificationError


def output_path(path, what: str = "The file"):
    """`path` as a Path whose folder exists, or a DataError naming the folder (before anything is
    computed or written). For every file the package writes: residual files, HTML pages, plots."""
    try:
        p = Path(path).expanduser()
    except TypeError:
        raise SpecificationError(f"{what} needs a file path (text or a pathlib.Path), not {type(path).__name__}.") from None
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        kind = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(f"{what} cannot be written to '{p}': the folder '{folder}' {kind}. Create it first (e.g. "
                        f"Path('{folder}').mkdir(parents=True)) or choose another path.")
    if p.is_dir():
        raise DataError(f"{what} cannot be written to '{p}': it is a folder; give a file name in it.")
    return p
