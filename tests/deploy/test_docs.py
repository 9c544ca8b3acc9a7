"""The docs say what the code has: every ``docs/<page>.md#<section>`` cited anywhere in the
repository names a page and a heading that exist, the docs' own links lead somewhere, every
repository path, file and dotted module they cite exists, the README's configuration table
names exactly the settings, and every variable the docs name is one the code reads (and every
one the code reads outside ``Settings`` is documented)."""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import os
import re
from functools import cache
from pathlib import Path

from shared.config import Settings

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


# A README section cited by its heading, in code or config: (README, "Faults and what happens").
_README_SECTION = re.compile(r'README(?:\.md)?,?\s+"([^"]+)"')


def test_every_readme_section_cited_by_name_exists() -> None:
    readme = ROOT / "README.md"
    headings = {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", readme.read_text(), re.M)}
    cited: dict[str, list[str]] = {}
    for path in _repository_files():
        if path in (readme, Path(__file__)):
            continue
        # A citation may run over a line break of a comment: README "The\n# API".
        text = re.sub(r"\s*\n\s*(?:#\s*)?", " ", path.read_text(errors="replace"))
        for section in _README_SECTION.findall(text):
            cited.setdefault(section, []).append(str(path.relative_to(ROOT)))
    assert cited, "nothing cites a README section by name: is this test still needed?"
    assert {s: w for s, w in cited.items() if _anchor(s) not in headings} == {}


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
        f"{page.relative_to(ROOT)}: {target}"
        for page in _prose_files()
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


SETTINGS = frozenset(f.name.upper() for f in dataclasses.fields(Settings))


def test_the_configuration_table_names_every_setting_and_nothing_else() -> None:
    from tests.deploy.test_deploy_files import CONTRACT_VARS

    settings = SETTINGS
    documented = _variables_table(ROOT / "README.md", "## Configuration")
    assert sorted(settings - documented) == [], "settings the README does not describe"
    assert sorted(documented - settings) == [], "README rows naming no setting"
    contract = _variables_table(DOCS / "architecture.md", "## Configuration contract")
    assert contract, "docs/architecture.md lists no contract names"
    assert sorted(contract - settings) == [], "contract names the code does not have"
    assert contract == CONTRACT_VARS, "the contract test_deploy_files checks is another"


# Files at the top of the repository, as the docs write them: `Procfile`, `docker-compose.yml`.
_ROOT_FILE = re.compile(
    r"`(Procfile|Makefile|\.env\.example|[\w-]+\.(?:yml|yaml|toml|ini|cfg)|requirements\.txt)`"
)


def test_every_top_level_file_the_docs_cite_exists() -> None:
    missing = {
        (name, str(page.relative_to(ROOT)))
        for page in _prose_files()
        for name in _ROOT_FILE.findall(page.read_text())
        if not (ROOT / name).is_file()
    }
    assert sorted(missing) == []


_PACKAGES = "shared|web|workers|training|demo|bench|visrec_client|tests"
# A dotted name of our code as the docs write it: `shared.ml.pipeline.get_pipeline`.
_DOTTED = re.compile(rf"(?<![\w./-])((?:{_PACKAGES})(?:\.\w+)+)")
# ... and not a file name that happens to start like a package: (training.md).
_FILE_SUFFIXES = (".md", ".py", ".json", ".txt", ".yml", ".yaml", ".toml")


def _module_file(parts: list[str]) -> Path | None:
    path = ROOT.joinpath(*parts)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defines(module: Path, name: str) -> bool:
    """Whether ``module`` defines or imports ``name`` (a function, class, constant, submodule)."""
    text = module.read_text()
    return bool(
        re.search(rf"^\s*(?:async\s+def|def|class)\s+{name}\b", text, re.M)
        or re.search(rf"^\s*{name}\s*(?::[^=\n]+)?=", text, re.M)
        or re.search(rf"^\s*(?:from\s+\S+\s+)?import\s+.*\b{name}\b", text, re.M)
    )


@cache
def _task_names() -> frozenset[str]:
    """Task names are dotted too, and need not be module paths (shared/task_names.py)."""
    tree = ast.parse((ROOT / "shared" / "task_names.py").read_text())
    return frozenset(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


def _resolves(dotted: str) -> bool:
    if dotted in _task_names():
        return True
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        module = _module_file(parts[:split])
        if module is not None:
            rest = parts[split:]
            return not rest or _defines(module, rest[0])
    return False


def test_every_module_and_name_the_docs_cite_exists() -> None:
    missing = {
        (dotted, str(page.relative_to(ROOT)))
        for page in _prose_files()
        for dotted in _DOTTED.findall(page.read_text())
        if not dotted.endswith(_FILE_SUFFIXES) and not _resolves(dotted.rstrip("."))
    }
    assert sorted(missing) == []


def test_the_docs_checks_refuse_what_does_not_exist() -> None:
    # The checks above are only as good as their refusals.
    assert _resolves("workers.search.fold") and _resolves("shared.search.knn.error_margin")
    assert not _resolves("workers.search.no_such_module")
    assert not _resolves("shared.search.knn.no_such_function")
    assert _named_variables("`MEDIA_ROOT`, `DEMO_*`, `UPGRADE=1 make lock`, `MGET`") == {
        "MEDIA_ROOT",
        "DEMO_*",
        "UPGRADE",
    }
    assert not _known_variable("MEDIA_RTOO") and _known_variable("DB_*_TIMEOUT_S")


# Where the code reads environment variables other than Settings' fields, and how.
_CODE_DIRS = ("shared", "web", "workers", "training", "demo", "bench", "visrec_client")
_PY_ENV_READ = re.compile(
    r"""(?:\benviron|\benv)\s*(?:\.get\(|\.setdefault\(|\.pop\(|\[)\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|_env_flag\(\s*["']([A-Z][A-Z0-9_]*)["']"""
)
_SHELL_ENV_READ = re.compile(r"\$\{?\(?([A-Z][A-Z0-9_]*)|^\s*#?\s*([A-Z][A-Z0-9_]*)\s*\??=", re.M)
_SHELL_FILES = ("Procfile", "docker-compose.yml", "Makefile", ".env.example")


@cache
def _read_by_code() -> frozenset[str]:
    """Every environment variable the code, the Procfile, compose and the Makefile read."""
    names: set[str] = set()
    for folder in _CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            names.update(a or b for a, b in _PY_ENV_READ.findall(path.read_text()))
    for name in (*_SHELL_FILES, *(f"scripts/{p.name}" for p in (ROOT / "scripts").glob("*.sh"))):
        names.update(a or b for a, b in _SHELL_ENV_READ.findall((ROOT / name).read_text()))
    return frozenset(names)


@cache
def _constants() -> frozenset[str]:
    """Upper-case names the code defines (module constants, class attributes)."""
    found: set[str] = set()
    for folder in _CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            found.update(
                re.findall(r"^\s*([A-Z][A-Z0-9_]*)\s*(?::[^=\n]+)?=", path.read_text(), re.M)
            )
    return frozenset(found)


def _known_variable(name: str) -> bool:
    known = SETTINGS | _read_by_code() | _constants()
    if "*" in name:
        return any(fnmatch.fnmatchcase(k, name) for k in known)
    return name in known


# An upper-case name with an underscore in backticks (`STALL_AFTER_S`, `DB_KEEPALIVES_*`), or
# any upper-case name assigned in a command (`DEMO_ONCE=1 make demo`, `UPGRADE=1 make lock`).
_VARIABLE = r"[A-Z][A-Z0-9]*(?:_[A-Z0-9*]*)+"
_SPAN = re.compile(r"`([^`\n]+)`")


def _named_variables(text: str) -> set[str]:
    names = set()
    for span in _SPAN.findall(text):
        if re.fullmatch(rf"{_VARIABLE}(?:=\S*)?", span):
            names.add(span.split("=")[0])
        names.update(re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=", span))
    return {name for name in names if name.strip("_*")}


def test_every_variable_the_docs_name_is_one_the_code_has() -> None:
    unknown = {
        (name, str(page.relative_to(ROOT)))
        for page in _prose_files()
        for name in _named_variables(page.read_text())
        if not _known_variable(name)
    }
    assert sorted(unknown) == [], "the docs name settings or variables the code does not have"


def test_every_variable_the_code_reads_outside_settings_is_documented() -> None:
    prose = "\n".join(page.read_text() for page in _prose_files())
    named = _named_variables(prose)
    documented = {
        name for name in _read_by_code() if any(fnmatch.fnmatchcase(name, n) for n in named)
    }
    # The scripts' own shell variables (paths, tools) are theirs, not settings; so is PATH.
    internal = {"PATH", "HOME", "PY", "PYTHON", "VENV", "UV", "SDIST", "SHA256", "PYTEST_ARGS"}
    undocumented = _read_by_code() - SETTINGS - documented - internal
    assert sorted(undocumented) == [], "variables the code reads that no doc names"
