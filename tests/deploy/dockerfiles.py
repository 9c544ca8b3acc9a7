"""Just enough Dockerfile and .dockerignore parsing to check our two images without Docker."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Copy:
    sources: list[str]
    dest: str
    from_stage: str | None
    line: int


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages in order, each with its instructions (continuations joined, comments dropped)."""
    stages: list[Stage] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical = pending + stripped
        pending = ""
        keyword, _, args = logical.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
            continue
        if not stages:
            raise ValueError(f"line {start}: {instruction.keyword} before FROM")
        stages[-1].instructions.append(instruction)
    if pending:
        raise ValueError("file ends inside a line continuation")
    return stages


def exec_or_shell_words(args: str) -> list[str]:
    """The words of a CMD/ENTRYPOINT/COPY argument, in exec (JSON) or shell form."""
    if args.startswith("["):
        words = json.loads(args)
        if not all(isinstance(w, str) for w in words):
            raise ValueError(f"exec form must be a list of strings: {args}")
        return words
    return shlex.split(args)


def copies(stage: Stage) -> list[Copy]:
    result = []
    for instruction in stage.all("COPY") + stage.all("ADD"):
        words = exec_or_shell_words(instruction.args)
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        from_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
        if len(paths) < 2:
            raise ValueError(f"line {instruction.line}: COPY needs a source and a destination")
        result.append(Copy(paths[:-1], paths[-1], from_stage, instruction.line))
    return result


def command_words(stage: Stage) -> list[str]:
    """ENTRYPOINT + CMD of a stage as words; a `sh -c` script is split into its own words."""
    words: list[str] = []
    for keyword in ("ENTRYPOINT", "CMD"):
        found = stage.all(keyword)
        if found:
            words += exec_or_shell_words(found[-1].args)
    if len(words) >= 3 and words[0] in {"sh", "/bin/sh", "bash"} and words[1] == "-c":
        words = shlex.split(words[2])
    return [w for w in words if w != "exec"]


_MODULE_ATTR = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def python_targets(words: list[str]) -> list[tuple[str, str | None]]:
    """(module, attribute) pairs a command loads: gunicorn `mod:attr`, celery `-A mod`, `-m mod`."""
    targets: list[tuple[str, str | None]] = []
    for index, word in enumerate(words):
        if _MODULE_ATTR.match(word):
            module, attr = word.split(":")
            targets.append((module, attr))
        elif word in {"-A", "--app"} and index + 1 < len(words):
            targets.append((words[index + 1], None))
        elif word.startswith("--app="):
            targets.append((word.split("=", 1)[1], None))
        elif word == "-m" and index + 1 < len(words):
            targets.append((words[index + 1], None))
    return targets


def read_dockerignore(path: Path) -> list[str]:
    if not path.exists():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def is_ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops ``relative`` (or a folder above it) from the build context."""
    parts = Path(relative.rstrip("/")).parts
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        for depth in range(1, len(parts) + 1):
            candidate = "/".join(parts[:depth])
            if _match(candidate, pattern):
                ignored = not negate
                break
    return ignored


def _match(path: str, pattern: str) -> bool:
    if pattern.startswith("**/"):
        tail = pattern[3:]
        pieces = path.split("/")
        return any(fnmatch.fnmatchcase("/".join(pieces[i:]), tail) for i in range(len(pieces)))
    return fnmatch.fnmatchcase(path, pattern)
