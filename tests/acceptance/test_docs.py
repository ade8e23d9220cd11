"""The documents the code cites are in the repository, with the sections it cites."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITING = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "refs").glob("*.R"))
# "hlm-statistics.md section 9", "... sections 1,\n 2, 6", "... 4a": the cited section numbers
CITE = re.compile(r"hlm-statistics\.md,?\s+(?:sections?\s+)?(\d+[a-z]?(?:(?:,\s*|\s+and\s+)\d+[a-z]?)*)")


def _sections() -> set[str]:
    text = (ROOT / "docs" / "hlm-statistics.md").read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,3} (\d+[a-z]?)\.", text, flags=re.M))


def test_every_cited_section_of_hlm_statistics_exists():
    sections = _sections()
    assert {"1", "2", "2b", "4a", "6", "8", "9", "10", "13"} <= sections
    cited = []
    for path in CITING:
        for match in CITE.finditer(path.read_text(encoding="utf-8")):
            for number in re.split(r",\s*|\s+and\s+", match.group(1)):
                cited.append((path.relative_to(ROOT).as_posix(), number))
    assert len(cited) >= 10  # the citations are found (src and refs cite the document a dozen times)
    missing = [c for c in cited if c[1] not in sections]
    assert not missing, missing


def test_every_cited_document_is_in_the_repository():
    cited = set()
    for path in CITING:
        cited |= set(re.findall(r"\b(docs/[\w.-]+\.md|refs/[\w.-]+\.md)", path.read_text(encoding="utf-8")))
    assert "docs/bad-input.md" in cited
    for name in cited:
        assert (ROOT / name).is_file(), name
    for doc in (ROOT / "docs").glob("*.md"):
        for link in re.findall(r"\.\./refs/[\w.-]+\.md", doc.read_text(encoding="utf-8")):
            assert (doc.parent / link).is_file(), (doc.name, link)
