"""The pointers into docs/ resolve: every ``docs/<page>.md#<section>`` cited anywhere in the
repository names a page and a heading that exist, and the docs' own links lead somewhere."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CITATION = re.compile(r"docs/([\w-]+\.md)#([\w-]+)")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


# Not ours, or not source: never searched.
_SKIPPED_DIRS = {".git", ".venv", "var", "models", "data", "__pycache__", ".pytest_cache"}
_TEXT_SUFFIXES = {".py", ".md", ".sh", ".txt", ".in", ".yml", ".yaml", ".toml", ".ini", ".cfg", ""}


def _repository_files() -> list[Path]:
    """The repository's text files (the same selection in a clone and in a worktree)."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith(".ruff")]
        for name in files:
            path = Path(folder) / name
            if path.suffix in _TEXT_SUFFIXES or name.endswith("Dockerfile"):
                found.append(path)
    return found


def test_every_citation_of_docs_names_a_real_section() -> None:
    cited: dict[tuple[str, str], list[str]] = {}
    for path in _repository_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for match in CITATION.finditer(text):
            cited.setdefault(match.groups(), []).append(str(path.relative_to(ROOT)))
    assert cited, "no code cites docs/ any more: is this test still needed?"
    broken = {
        f"docs/{page}#{anchor}": where
        for (page, anchor), where in cited.items()
        if not (DOCS / page).is_file() or anchor not in _anchors(DOCS / page)
    }
    assert broken == {}


def test_no_citation_of_a_design_document_outside_the_repository() -> None:
    citing = [
        str(path.relative_to(ROOT))
        for path in _repository_files()
        if path != Path(__file__) and "design.md" in path.read_text(errors="replace")
    ]
    assert citing == []


def _leads_somewhere(page: Path, target: str) -> bool:
    file_part, _, anchor = target.partition("#")
    linked = (page.parent / file_part).resolve() if file_part else page
    if not linked.exists():
        return False
    return not anchor or linked.suffix != ".md" or anchor in _anchors(linked)


def test_links_inside_docs_lead_somewhere() -> None:
    broken = [
        f"{page.name}: {target}"
        for page in sorted(DOCS.glob("*.md"))
        for target in MARKDOWN_LINK.findall(page.read_text())
        if not target.startswith(("http://", "https://")) and not _leads_somewhere(page, target)
    ]
    assert broken == []


_TOP_FOLDERS = (
    "bench|demo|docker|docs|migrations|requirements|scripts|shared|tests|training|visrec_client"
    "|web|workers"
)
# A repository path as the docs write it: `workers/search/fold.py`, requirements/*.lock.txt.
_CITED_PATH = re.compile(rf"(?<![\w./-])((?:{_TOP_FOLDERS})/[\w*./-]*[\w*/])")


def _prose_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted(ROOT.glob("*/README.md"))]


def test_every_repository_path_the_docs_cite_exists() -> None:
    missing = {}
    for page in _prose_files():
        for cited in _CITED_PATH.findall(page.read_text()):
            path = cited.split("#")[0].rstrip(".")
            if not any(ROOT.glob(path)) and not (ROOT / path).exists():
                missing.setdefault(path, []).append(str(page.relative_to(ROOT)))
    assert missing == {}


def _variables_table(page: Path, heading: str) -> set[str]:
    """The variables in the first column of the tables under ``heading`` of ``page``."""
    section = page.read_text().split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    # A row may name several variables at once: `A`, `B`, `C`.
    cells = re.findall(r"^\| (`[A-Z0-9_]+`(?:, `[A-Z0-9_]+`)*) \|", section, flags=re.M)
    return {name for cell in cells for name in re.findall(r"`([A-Z0-9_]+)`", cell)}


def test_the_configuration_table_names_every_setting_and_nothing_else() -> None:
    import dataclasses

    from shared.config import Settings

    settings = {f.name.upper() for f in dataclasses.fields(Settings)}
    documented = _variables_table(ROOT / "README.md", "## Configuration")
    assert sorted(settings - documented) == [], "settings the README does not describe"
    assert sorted(documented - settings) == [], "README rows naming no setting"
    contract = _variables_table(DOCS / "architecture.md", "## Configuration contract")
    assert contract, "docs/architecture.md lists no contract names"
    assert sorted(contract - settings) == [], "contract names the code does not have"
