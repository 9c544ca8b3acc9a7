"""The patterns the OpenAPI document shows accept exactly what the server accepts.

The server matches with Python's ``re``; schemathesis (and any client's validator) reads the
document's patterns as ECMA-262, through jsonschema-rs here. Both are asked about every character
of the Basic Multilingual Plane and a few beyond it, alone and next to valid text, and must agree
with the rule in words (and so with each other): no request the document calls invalid is
accepted, none it calls valid is refused for its SKU or its kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import jsonschema_rs
from marshmallow import ValidationError

from web.api.patterns import SPACE
from web.api.recommendation_schemas import KINDS_PATTERN, parse_kinds
from web.api.schemas import SKU_PATTERN, sku_problem

_ASTRAL = ["\U00010000", "\U0001f600", "\U0010ffff"]


def _characters() -> Iterator[str]:
    for code in range(0x10000):
        if not 0xD800 <= code <= 0xDFFF:  # lone surrogates are no text a request can carry
            yield chr(code)
    yield from _ASTRAL


def _documented(pattern: str) -> Callable[[str], bool]:
    validator = jsonschema_rs.Draft4Validator({"type": "string", "pattern": pattern})
    return validator.is_valid


def _disagreements(
    samples: Iterator[str], rule: Callable[[str], bool], server: Callable[[str], bool], pattern: str
) -> list[str]:
    documented = _documented(pattern)
    wrong = []
    for text in samples:
        want = rule(text)
        if server(text) != want or documented(text) != want:
            wrong.append(
                f"{text!r}: rule {want}, server {server(text)}, document {documented(text)}"
            )
    return wrong


def _sku_rule(text: str) -> bool:
    core = text.strip()
    return 1 <= len(core) <= 255 and not any(c == "/" or c < " " or c == "\x7f" for c in core)


def _sku_samples() -> Iterator[str]:
    for c in _characters():
        yield from (c, f"a{c}", f"{c}a", f"a{c}b", f" {c} ", c * 3)
    for n in (254, 255, 256):
        yield from ("x" * n, f"  {'x' * n}\t", f"x{' ' * (n - 2)}x", f"{' ' * 300}{'x' * n}")
    yield from ("", " ", "\u3000\x85", '{"":null}', "null", "5", "a/b")


def test_the_documented_sku_pattern_is_the_servers_rule():
    assert (
        _disagreements(
            _sku_samples(), _sku_rule, lambda text: sku_problem(text) is None, SKU_PATTERN.pattern
        )
        == []
    )


def _kinds_rule(text: str) -> bool:
    if not text.strip():
        return True
    return all(part.strip() in {"top", "bottom", "full"} for part in text.split(","))


def _kinds_accepted(text: str) -> bool:
    try:
        parse_kinds(text)
    except ValidationError:
        return False
    return True


def _kinds_samples() -> Iterator[str]:
    for c in _characters():
        yield from (c, f"{c}top", f"top{c}", f"top,{c}bottom", f"full{c},top", f"top{c}{c}")
    yield from ("", "top,,bottom", "top,bottom,full,top", ",top", "top,", "TOP")


def test_the_documented_kinds_pattern_is_the_servers_rule():
    assert _disagreements(_kinds_samples(), _kinds_rule, _kinds_accepted, KINDS_PATTERN) == []


def test_the_space_class_is_what_python_trims():
    # What makes both patterns portable: \s differs between the dialects, SPACE does not.
    python_space = _documented(f"^{SPACE}$")
    wrong = [c for c in _characters() if python_space(c) != (c.strip() == "")]
    assert wrong == []
