"""No function over 60 lines in production code: a reader sees each one whole.

Production code is every module under web/, workers/, shared/, demo/, visrec_client/ and
training/. Outside the rule: migrations/ and bench/ (never scanned), and the training CLIs,
whole files: a training/*.py module with an ``if __name__ == "__main__":`` entry (a training
run reads top to bottom as one recipe; its library modules, such as training/metric_loss.py,
keep the rule). A function's length runs from its ``def`` line to its last line, docstring,
comments and nested functions included; decorators do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("web", "workers", "shared", "demo", "visrec_client", "training")
MAX_LINES = 60


def _is_cli(tree: ast.Module) -> bool:
    """Whether the module ends in an ``if __name__ == "__main__":`` entry."""
    for node in tree.body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "__name__"
            and any(
                isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators
            )
        ):
            return True
    return False


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[int, str, int]]:
    """(line, name, length) of every function in ``source`` longer than ``max_lines``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > max_lines:
                found.append((node.lineno, node.name, length))
    return sorted(found)


def _scanned_modules() -> list[Path]:
    modules = []
    for top in PRODUCTION:
        for path in sorted((ROOT / top).rglob("*.py")):
            if top == "training" and _is_cli(ast.parse(path.read_text())):
                continue
            modules.append(path)
    return modules


def test_no_production_function_is_over_sixty_lines():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for path in _scanned_modules()
        for line, name, length in long_functions(path.read_text())
    ]
    assert not offenders, f"functions over {MAX_LINES} lines (split them):\n" + "\n".join(offenders)


def test_the_scan_covers_every_tier_and_exempts_only_training_clis():
    scanned = {path.relative_to(ROOT) for path in _scanned_modules()}
    assert {path.parts[0] for path in scanned} == set(PRODUCTION)
    assert Path("workers/search/fold.py") in scanned
    assert Path("training/metric_loss.py") in scanned  # a training library module, not a CLI
    assert Path("training/train_embedder.py") not in scanned
    every = {p.relative_to(ROOT) for top in PRODUCTION for p in (ROOT / top).rglob("*.py")}
    assert {path.parts[0] for path in every - scanned} == {"training"}


def _function_of(lines: int) -> str:
    body = "".join(f"    x{i} = {i}\n" for i in range(lines - 1))
    return f"@decorated\ndef f():\n{body}\n\nclass C:\n    async def g(self):\n        pass\n"


def test_the_rule_counts_from_def_to_last_line():
    assert long_functions(_function_of(60)) == []
    assert long_functions(_function_of(61)) == [(2, "f", 61)]
    nested = "def outer():\n" + "".join(f"    def inner{i}():\n        pass\n" for i in range(31))
    assert [name for _, name, _ in long_functions(nested)] == ["outer"]
