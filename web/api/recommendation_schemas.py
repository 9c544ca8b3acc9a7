"""Request and response schemas of the recommendation endpoints (OpenAPI and validation)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from shared.search.filters import MAX_CONDITIONS, MAX_NAME_CHARS
from shared.vocabulary import DISPLAY_ORDER, VectorKind
from web.api.patterns import SPACE

MAX_K = 100
DEFAULT_K = 10
# Plain strings: the OpenAPI document shows this default as it is.
DEFAULT_KINDS: tuple[str, ...] = tuple(kind.value for kind in DISPLAY_ORDER)
_ANY_KIND = "|".join(DEFAULT_KINDS)
# What ``kinds`` accepts, for the OpenAPI document (parse_kinds is the rule itself): SPACE, not
# \s, is what str.strip() trims in both regex dialects.
KINDS_PATTERN = rf"^{SPACE}*(({_ANY_KIND}){SPACE}*(,{SPACE}*({_ANY_KIND}){SPACE}*)*)?$"


def parse_kinds(raw: str | None) -> tuple[str, ...]:
    """``"top,bottom"`` -> ("top", "bottom"); unknown or empty lists are a validation error."""
    if raw is None or not raw.strip():
        return DEFAULT_KINDS
    kinds: list[str] = []
    for part in raw.split(","):
        try:
            kind = VectorKind(part.strip()).value
        except ValueError:
            raise ValidationError(
                f"unknown kind {part.strip()!r}; use a comma-separated subset of "
                f"{', '.join(DEFAULT_KINDS)}"
            ) from None
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


class KindsField(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return parse_kinds(super()._deserialize(value, attr, data, **kwargs))


class RecommendationQuery(Schema):
    k = fields.Integer(
        load_default=DEFAULT_K,
        validate=validate.Range(min=1, max=MAX_K),
        metadata={"description": f"How many items per kind (1-{MAX_K})."},
    )
    kinds = KindsField(
        load_default=DEFAULT_KINDS,
        metadata={
            "description": "Comma-separated subset of top, bottom, full.",
            "pattern": KINDS_PATTERN,
            # The parameter as a client writes it (the loaded default is a tuple).
            "default": ",".join(DEFAULT_KINDS),
        },
    )


# An attribute name as ``distinct`` and ``exclude_same`` take it: any text but NUL.
ATTRIBUTE_NAME_PATTERN = r"^[^\x00]+$"

FILTERS_DESCRIPTION = f"""
**Filters on attributes** (besides the parameters listed): any number of parameters, at most
{MAX_CONDITIONS} in all, each named after an attribute (a name holds no `.`):

- `attr.<name>=<value>`: the attribute equals the value, read as a JSON scalar when it parses
  as one (`true`, `12`, `"12"`, `null`), else as the text itself; repeated: any of the values.
  Numbers compare by value (12 equals 12.0); text never equals a number or a boolean.
- `attr.<name>.not=<value>`: the attribute equals none of the values (repeatable); an item
  without the attribute passes.
- `attr.<name>.min=<number>`, `attr.<name>.max=<number>`: the attribute is a JSON number within
  the inclusive bound.

An item without an attribute matches no condition on it except `.not`. All conditions hold
together, and the answer is exact whatever the filter: the k nearest of the items that pass
(fewer only when fewer pass; none: an empty list). An unknown operator (`attr.<name>.<other>`),
a bound that is not a number, or more than {MAX_CONDITIONS} conditions: 422
(`unknown_filter_operator`, `invalid_filter`, `too_many_filters`).
"""


def _attribute_name(description: str) -> fields.String:
    return fields.String(
        validate=[
            validate.Length(min=1, max=MAX_NAME_CHARS),
            validate.Regexp(ATTRIBUTE_NAME_PATTERN, error="An attribute name holds no NUL."),
        ],
        metadata={"description": description},
    )


class PhotoFamilyQuery(Schema):
    distinct = _attribute_name(
        "Keep only the nearest item of each value of this attribute (a product family, e.g."
        " style); items without it each stand alone. Applied after the filters."
    )


class ItemRecommendationQuery(RecommendationQuery, PhotoFamilyQuery):
    exclude_same = _attribute_name(
        "Leave out every item whose value of this attribute equals this item's (its own"
        " variants); nothing is left out when this item has no such attribute."
    )


class HitSchema(Schema):
    sku = fields.String(required=True)
    distance = fields.Float(
        required=True, metadata={"description": "Euclidean distance between the two vectors."}
    )
    image_url = fields.String(
        required=True, allow_none=True, metadata={"description": "The item's photo."}
    )
    crop_url = fields.String(
        allow_none=True,
        metadata={
            "description": "Top and bottom hits only (absent from full hits): a JPEG of the"
            " item's garment of that kind, the crop that was matched; null when the item has"
            " no stored crop (not backfilled yet)."
        },
    )


class RecommendationsSchema(Schema):
    sku = fields.String(metadata={"description": "The item asked about (absent for a photo)."})
    model_version = fields.String(allow_none=True)
    results = fields.Dict(keys=fields.String(), values=fields.List(fields.Nested(HitSchema)))
    missing = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"description": "Requested kinds with no vector, and why (empty results)."},
    )
    query = fields.Dict(metadata={"description": "For a photo: its media key and crops."})
