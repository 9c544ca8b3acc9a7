"""Filters on item attributes, and product families (``distinct``, ``exclude_same``).

One spec, three uses: parsed from a request's parameters (``attr.<name>=``, ``.not=``,
``.min=``, ``.max=``, ``distinct=``, ``exclude_same=``), compiled to one SQL predicate over
``items.attributes`` (JSONB, every value a bound parameter), and evaluated in Python on an
attributes mapping (what tests judge the SQL by). The rules, the same in both:

- ``attr.<name>=<value>``: the attribute equals the value, read as a JSON scalar when it parses
  as one (``true``, ``12``, ``"12"``, ``null``), else as the string itself; repeated: any of them.
  Numbers compare as numbers (12 equals 12.0); a string never equals a number or a boolean.
- ``attr.<name>.not=<value>``: the attribute equals none of the values; an item without the
  attribute passes.
- ``attr.<name>.min=<number>`` / ``.max=<number>``: the attribute is a JSON number within the
  inclusive bound (a string "12" is not a number).
- An item without the attribute matches no condition on it except ``.not``.

Families: values are compared as JSON values (the same equality as above); an item without the
attribute is a family of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

MAX_CONDITIONS = 20
MAX_NAME_CHARS = 255
# Bounds beyond this exponent are refused: PostgreSQL's numeric cannot compare them anyway.
_MAX_EXPONENT = 1000
PREFIX = "attr."
Operator = Literal["eq", "not", "min", "max"]
_SUFFIXES: dict[str, Operator] = {"not": "not", "min": "min", "max": "max"}
_NUMBER = re.compile(r"\A[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")
# A ``JSON scalar`` parameter value: what json.loads takes, minus NaN and the infinities.
Scalar = str | bool | Decimal | None


class FilterError(ValueError):
    """A filter parameter that cannot be read; ``details`` names the parameter."""

    def __init__(self, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Condition:
    """One attribute and operator; ``values`` for eq/not (any of / none of), ``bound`` for
    min/max."""

    name: str
    op: Operator
    values: tuple[Scalar, ...] = ()
    bound: Decimal | None = None


@dataclass(frozen=True)
class FilterSpec:
    conditions: tuple[Condition, ...] = ()
    distinct: str | None = None
    exclude_same: str | None = None
    # How many parameters made the conditions (a repeated value counts once per repetition).
    count: int = field(default=0, compare=False)

    @property
    def empty(self) -> bool:
        return not self.conditions and self.distinct is None and self.exclude_same is None

    def to_payload(self) -> dict[str, Any]:
        """A JSON-safe form (for a task message); :func:`from_payload` reads it back."""
        return {
            "conditions": [
                {
                    "name": c.name,
                    "op": c.op,
                    "values": [_json_text(v) for v in c.values],
                    "bound": None if c.bound is None else str(c.bound),
                }
                for c in self.conditions
            ],
            "distinct": self.distinct,
            "exclude_same": self.exclude_same,
        }


def from_payload(payload: Mapping[str, Any] | None) -> FilterSpec:
    if not payload:
        return FilterSpec()
    conditions = tuple(
        Condition(
            name=c["name"],
            op=c["op"],
            values=tuple(
                _scalar(json.loads(v, parse_float=Decimal, parse_int=Decimal)) for v in c["values"]
            ),
            bound=None if c["bound"] is None else Decimal(c["bound"]),
        )
        for c in payload.get("conditions", [])
    )
    return FilterSpec(conditions, payload.get("distinct"), payload.get("exclude_same"))


# ----------------------------------------------------------------------------------- parsing


def _check_text(text: str, parameter: str, what: str) -> None:
    if "\x00" in text:
        raise FilterError(
            "invalid_filter", f"The {what} holds a NUL character.", {parameter: text[:60]}
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError(
            "invalid_filter", f"The {what} is not valid text.", {parameter: repr(text[:60])}
        ) from None


def attribute_name(raw: str, parameter: str) -> str:
    """A ``distinct`` / ``exclude_same`` attribute name, checked."""
    if not raw or len(raw) > MAX_NAME_CHARS:
        raise FilterError(
            "invalid_filter",
            f"'{parameter}' needs an attribute name of 1 to {MAX_NAME_CHARS} characters.",
            {parameter: raw[:60]},
        )
    _check_text(raw, parameter, "attribute name")
    return raw


def _scalar(value: Any) -> Scalar:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return _number(value)
    raise TypeError(f"not a JSON scalar: {value!r}")


def _number(value: int | float | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(repr(value))


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def parse_value(raw: str) -> Scalar:
    """A parameter's value: the JSON scalar it spells, else the string itself."""
    try:
        value = json.loads(
            raw, parse_float=Decimal, parse_int=Decimal, parse_constant=_no_constants
        )
    except ValueError:
        return raw
    if isinstance(value, dict | list):
        return raw
    return _scalar(value)


def parse_bound(raw: str, parameter: str) -> Decimal:
    text = raw.strip()
    if not _NUMBER.match(text):
        raise FilterError(
            "invalid_filter",
            f"'{parameter}' needs a number, not {raw[:40]!r}.",
            {parameter: raw[:60]},
        )
    try:
        bound = Decimal(text)
    except InvalidOperation:  # the pattern admits only what Decimal reads; kept for safety
        raise FilterError(
            "invalid_filter", f"'{parameter}' needs a number.", {parameter: raw[:60]}
        ) from None
    _check_magnitude(bound, parameter, raw)
    return bound


def _check_magnitude(number: Decimal, parameter: str, raw: str) -> None:
    if abs(number.adjusted()) > _MAX_EXPONENT or len(number.as_tuple().digits) > _MAX_EXPONENT:
        raise FilterError(
            "invalid_filter",
            f"'{parameter}' is out of range (up to {_MAX_EXPONENT} digits and exponents).",
            {parameter: raw[:60]},
        )


def is_filter_parameter(key: str) -> bool:
    return key.startswith(PREFIX)


def _condition_slot(key: str) -> tuple[str, Operator]:
    """The attribute name and operator an ``attr.*`` key names; FilterError when it names none."""
    name, dot, suffix = key[len(PREFIX) :].partition(".")
    if dot and suffix not in _SUFFIXES:
        raise FilterError(
            "unknown_filter_operator",
            f"Unknown operator in {key[:80]!r}: use attr.<name>, attr.<name>.not, "
            "attr.<name>.min or attr.<name>.max (names hold no '.').",
            {key[:80]: "unknown operator"},
        )
    if not name or len(name) > MAX_NAME_CHARS:
        raise FilterError(
            "invalid_filter",
            f"{key[:80]!r} needs an attribute name of 1 to {MAX_NAME_CHARS} characters.",
            {key[:80]: "bad name"},
        )
    _check_text(name, key[:80], "attribute name")
    return name, (_SUFFIXES[suffix] if dot else "eq")


def parse(
    pairs: Iterable[tuple[str, str]], distinct: str | None = None, exclude_same: str | None = None
) -> FilterSpec:
    """The spec of a request's ``attr.*`` parameters (other keys are ignored) and families.

    FilterError for an unknown operator, a bad number, a name that cannot be an attribute's, or
    more than MAX_CONDITIONS conditions.
    """
    eq: dict[tuple[str, Operator], list[Scalar]] = {}
    bounds: dict[tuple[str, Operator], Decimal] = {}
    order: list[tuple[str, Operator]] = []
    count = 0
    for key, raw in pairs:
        if not is_filter_parameter(key):
            continue
        count += 1
        if count > MAX_CONDITIONS:
            raise FilterError(
                "too_many_filters",
                f"At most {MAX_CONDITIONS} attribute conditions per request.",
                {"limit": MAX_CONDITIONS},
            )
        slot = _condition_slot(key)
        _check_text(raw, key[:80], "value")
        op = slot[1]
        if slot not in eq and slot not in bounds:
            order.append(slot)
        if op in ("min", "max"):
            bound = parse_bound(raw, key[:80])
            # Repeating a bound keeps the tightest: every condition holds together.
            if slot in bounds:
                bound = max(bound, bounds[slot]) if op == "min" else min(bound, bounds[slot])
            bounds[slot] = bound
        else:
            value = parse_value(raw)
            if isinstance(value, Decimal):
                _check_magnitude(value, key[:80], raw)
            eq.setdefault(slot, []).append(value)
    conditions = tuple(
        Condition(name, op, values=tuple(eq[(name, op)]))
        if op in ("eq", "not")
        else Condition(name, op, bound=bounds[(name, op)])
        for name, op in order
    )
    return FilterSpec(
        conditions,
        None if distinct is None else attribute_name(distinct, "distinct"),
        None if exclude_same is None else attribute_name(exclude_same, "exclude_same"),
        count,
    )


# -------------------------------------------------------------------------------- evaluation

# A value's identity under JSON equality: numbers by value, strings, booleans and null apart.
Key = tuple[Any, ...]


def value_key(value: Any) -> Key:
    """Equal for two JSON values exactly when PostgreSQL's jsonb ``=`` says they are equal."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float | Decimal):
        return ("number", _number(value))
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(value_key(v) for v in value))
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, value_key(v)) for k, v in value.items())))
    raise TypeError(f"not a JSON value: {value!r}")


_CONSTANT_KEYS: dict[str, Key] = {
    "true": ("bool", True),
    "false": ("bool", False),
    "null": ("null",),
}


def key_of_text(text: str | None) -> Key | None:
    """The key of a value PostgreSQL sent as jsonb text (None: the attribute is absent)."""
    if text is None:
        return None
    # Most family values are plain strings or constants: read without a JSON decode (a jsonb
    # string's text escapes every quote and backslash, so one without a backslash is its
    # literal).
    if text.startswith('"') and "\\" not in text:
        return ("string", text[1:-1])
    constant = _CONSTANT_KEYS.get(text)
    if constant is not None:
        return constant
    return value_key(json.loads(text, parse_float=Decimal, parse_int=Decimal))


def _passes(condition: Condition, attributes: Mapping[str, Any]) -> bool:
    present = condition.name in attributes
    value = attributes.get(condition.name)
    if condition.op == "not":
        return not present or all(value_key(value) != value_key(v) for v in condition.values)
    if not present:
        return False
    if condition.op == "eq":
        return any(value_key(value) == value_key(v) for v in condition.values)
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return False
    number, bound = _number(value), condition.bound
    if bound is None:
        return False
    return number >= bound if condition.op == "min" else number <= bound


def matches(spec: FilterSpec, attributes: Mapping[str, Any] | None) -> bool:
    """Whether an item with these attributes passes every condition."""
    attributes = attributes or {}
    return all(_passes(c, attributes) for c in spec.conditions)


# ------------------------------------------------------------------------------------- SQL


def _json_text(value: Scalar) -> str:
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)


@dataclass(frozen=True)
class SqlPredicate:
    sql: str
    params: dict[str, Any]


def predicate(spec: FilterSpec, column: str, style: Literal["named", "pyformat"]) -> SqlPredicate:
    """The conditions as one boolean SQL expression over the JSONB ``column`` (never NULL).

    ``style``: ``:name`` placeholders (SQLAlchemy ``text``) or ``%(name)s`` (psycopg). Names and
    values are bound parameters; only placeholders and operators are written into the SQL.
    """
    params: dict[str, Any] = {}

    def bind(name: str, value: Any) -> str:
        params[name] = value
        return f":{name}" if style == "named" else f"%({name})s"

    parts: list[str] = []
    for i, condition in enumerate(spec.conditions):
        attr = f"({column} -> CAST({bind(f'flt{i}_name', condition.name)} AS text))"
        if condition.op in ("eq", "not"):
            any_of = " OR ".join(
                f"{attr} = CAST({bind(f'flt{i}_v{j}', _json_text(v))} AS jsonb)"
                for j, v in enumerate(condition.values)
            )
            # NULL (attribute absent) is no match; so NOT ... lets an item without it through.
            test = f"coalesce(({any_of}), false)"
            parts.append(test if condition.op == "eq" else f"NOT {test}")
        else:
            # CASE, not AND: PostgreSQL may evaluate AND's operands in any order, and a cast of
            # a string to numeric must never run.
            number = (
                f"(CASE WHEN jsonb_typeof({attr}) = 'number'"
                f" THEN CAST({attr} #>> '{{}}' AS numeric) END)"
            )
            compare = ">=" if condition.op == "min" else "<="
            bound = bind(f"flt{i}_bound", condition.bound)
            parts.append(f"coalesce({number} {compare} CAST({bound} AS numeric), false)")
    return SqlPredicate(" AND ".join(f"({p})" for p in parts) or "true", params)


def containment(spec: FilterSpec, column: str) -> SqlPredicate | None:
    """The equality conditions as containment (``column @> '{"name": value}'``, repeated
    values OR-ed), which the GIN index on ``items.attributes`` answers; None when there are
    none. A pre-filter only: every item that passes :func:`predicate` passes it (jsonb
    containment of a scalar is its equality), so ``prefilter AND predicate`` is exact.
    psycopg placeholders; values bound whole as jsonb."""
    params: dict[str, Any] = {}
    parts: list[str] = []
    for i, condition in enumerate(spec.conditions):
        if condition.op != "eq":
            continue
        any_of = []
        for j, value in enumerate(condition.values):
            name = f"flt{i}_c{j}"
            params[name] = f"{{{json.dumps(condition.name)}:{_json_text(value)}}}"
            any_of.append(f"{column} @> CAST(%({name})s AS jsonb)")
        parts.append(f"({' OR '.join(any_of)})")
    if not parts:
        return None
    return SqlPredicate(" AND ".join(parts), params)


def key_sql(
    column: str, name: str, param: str, style: Literal["named", "pyformat"]
) -> tuple[str, dict[str, Any]]:
    """``column -> name`` as jsonb text (NULL when absent): what :func:`key_of_text` reads."""
    placeholder = f":{param}" if style == "named" else f"%({param})s"
    return f"CAST(({column} -> CAST({placeholder} AS text)) AS text)", {param: name}


# --------------------------------------------------------------------------------- families


class FamilyPicker:
    """Walks items nearest first and keeps those the families allow (after the filters).

    ``exclude_same``: drop items sharing the asking item's value (``own``; None: it has none,
    so nothing is dropped). ``distinct``: keep only the first (nearest) item of each value.
    """

    def __init__(self, spec: FilterSpec, own: Key | None) -> None:
        self.spec = spec
        self.own = own
        self.seen: set[Key] = set()

    def offer(self, distinct_key: Key | None, same_key: Key | None) -> bool:
        if self.spec.exclude_same is not None and self.own is not None and same_key == self.own:
            return False
        if self.spec.distinct is not None and distinct_key is not None:
            if distinct_key in self.seen:
                return False
            self.seen.add(distinct_key)
        return True


def attribute_pairs(spec: FilterSpec) -> list[str]:
    """The attributes whose values the families need (distinct, then exclude_same)."""
    return [name for name in (spec.distinct, spec.exclude_same) if name is not None]
