"""Marshmallow schemas of the ingestion API (jobs, items, media): validation and OpenAPI."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from typing_extensions import override

from shared.vocabulary import ItemStatus, JobStatus, VectorKind
from web.api.patterns import SPACE, STRIPPED_CHARS
from web.services.attributes import MAX_PATCH_ITEMS

MAX_ITEMS_PER_JOB = 10_000
# Multipart parts one item may use: its file, its 'sku' field and its 'attributes' field.
MAX_FORM_FIELDS_PER_ITEM = 3
# A SKU is a path segment of item URLs (/api/v1/items/<sku>), so it cannot hold '/'; control
# characters would make it unprintable in logs and pages. Surrounding spaces are trimmed, so
# the pattern is of the value as sent: any spaces, then 1 to 255 characters that begin and end
# with neither a space nor a control character, then any spaces. It is the documented pattern
# too (OpenAPI reads it as ECMA-262), so it is spelled in what both dialects read alike.
_SKU_EDGE = rf"[^/\x00-\x1f\x7f{STRIPPED_CHARS}]"
_SKU_INNER = r"[^/\x00-\x1f\x7f]"
SKU_PATTERN = re.compile(rf"^{SPACE}*{_SKU_EDGE}(?:{_SKU_INNER}{{0,253}}{_SKU_EDGE})?{SPACE}*$")
SKU_RULE = (
    "1 to 255 characters once surrounding spaces are trimmed, without '/' or control characters"
)
SKU = validate.Regexp(SKU_PATTERN, error=f"A SKU is {SKU_RULE}.")


class SkuField(fields.String):
    """A SKU as the OpenAPI document shows it (SKU_PATTERN). Request bodies read SKUs as text and
    judge them with sku_problem, so a SKU that is none is refused as invalid_sku."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=[SKU, storable_text], **kwargs)


def sku_problem(sku: str) -> str | None:
    """Why ``sku`` (as sent, or trimmed: the answer is the same) cannot be a SKU, or None."""
    if SKU_PATTERN.fullmatch(sku) and _storable(sku):
        return None
    return f"{sku[:40]!r} is not a SKU: {SKU_RULE}"


def _storable(text: str) -> bool:
    # PostgreSQL text and jsonb hold no NUL character, and only valid UTF-8 (a lone surrogate,
    # which JSON's \ud800 escapes can produce, has no UTF-8 form).
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_storable_json(value: Any, where: str = "") -> None:
    if isinstance(value, str):
        if not _storable(value):
            raise ValidationError(f"{where or 'a value'} holds a NUL or an invalid character.")
    elif isinstance(value, dict):
        for key, inner in value.items():
            _check_storable_json(key, "a key")
            _check_storable_json(inner, repr(key) if _storable(str(key)) else "a value")
    elif isinstance(value, list):
        for inner in value:
            _check_storable_json(inner, where)


def storable_text(value: str) -> None:
    """Validator: text PostgreSQL can store."""
    if not _storable(value):
        raise ValidationError("Holds a NUL or an invalid character.")


class JsonObjectString(fields.Field[dict[str, Any]]):
    """A form field holding a JSON object (multipart has no nested values of its own)."""

    @override
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except (TypeError, ValueError):
            raise ValidationError("Not valid JSON.") from None
        if not isinstance(parsed, dict):
            raise ValidationError("Must be a JSON object.")
        _check_storable_json(parsed)
        return parsed


class JobItemInSchema(Schema):
    sku: fields.String = SkuField(required=True)
    url = fields.Url(
        schemes={"http", "https"},
        require_tld=False,
        validate=[validate.Length(max=4096), storable_text],
        metadata={"description": "An http(s) URL the worker downloads (public addresses only)."},
    )
    path = fields.String(
        validate=[validate.Length(min=1, max=4096), storable_text],
        metadata={"description": "A file under the server's IMPORT_ROOT."},
    )
    attributes = fields.Dict(
        keys=fields.String(),
        validate=_check_storable_json,
        metadata={"description": "Free-form JSON."},
    )

    @validates_schema
    def _one_source(self, data: dict[str, Any], **_: Any) -> None:
        if ("url" in data) == ("path" in data):
            raise ValidationError("give exactly one of 'url' or 'path'")


def _job_items(item: type[Schema]) -> fields.List[Any]:
    return fields.List(
        fields.Nested(item), required=True, validate=validate.Length(min=1, max=MAX_ITEMS_PER_JOB)
    )


class JobCreateJsonSchema(Schema):
    """The JSON body as documented."""

    # SKUs must be unique in a job: checked after parsing, for JSON and multipart alike, and
    # refused as ``duplicate_sku`` (web.services.ingestion).
    items = _job_items(JobItemInSchema)


class JobItemInParseSchema(JobItemInSchema):
    # The SKU is read as text and judged after parsing (web.api.jobs), so a SKU that is none is
    # refused as invalid_sku whichever body it came in: a JSON item, a 'sku' part, a file name.
    sku = fields.String(required=True)


class JobCreateJsonParseSchema(Schema):
    """The JSON body as read."""

    items = _job_items(JobItemInParseSchema)


_SKU_PARTS = "One per file, in the same order (default: file name stem)."


class UploadFormSchema(Schema):
    """The multipart form fields as read (their SKUs judged after parsing, as JSON items' are)."""

    sku = fields.List(fields.String(), metadata={"description": _SKU_PARTS})
    attributes = fields.List(
        JsonObjectString(
            metadata={"type": "string", "description": 'A JSON object, e.g. {"brand": "acme"}.'}
        ),
        metadata={"description": "One JSON object per file, in the same order (optional)."},
    )


class UploadFilesSchema(Schema):
    images = fields.List(
        fields.Raw(metadata={"type": "string", "format": "binary"}),
        required=True,
        validate=validate.Length(min=1, max=MAX_ITEMS_PER_JOB),
    )


class UploadDocSchema(UploadFormSchema, UploadFilesSchema):
    """The multipart body as documented (webargs reads form fields and files separately)."""

    sku = fields.List(SkuField(), metadata={"description": _SKU_PARTS})


class JobCreatedSchema(Schema):
    id = fields.UUID(required=True)
    status = fields.String(required=True)
    status_url = fields.String(required=True)


class PageArgsSchema(Schema):
    # A job has at most MAX_ITEMS_PER_JOB failed items, so no page past that can hold any; the
    # bound also keeps the offset within PostgreSQL's bigint.
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_ITEMS_PER_JOB))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class JobItemErrorSchema(Schema):
    position = fields.Integer()
    sku = fields.String()
    reason = fields.String()
    error = fields.String()


class ErrorPageSchema(Schema):
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()
    pages = fields.Integer()
    items = fields.List(fields.Nested(JobItemErrorSchema))


class JobSchema(Schema):
    id = fields.UUID()
    status = fields.String(metadata={"enum": [status.value for status in JobStatus]})
    source = fields.String()
    total = fields.Integer()
    done = fields.Integer(metadata={"description": "Items that succeeded (skipped included)."})
    failed = fields.Integer()
    skipped = fields.Integer(metadata={"description": "Unchanged items: no model work done."})
    pending = fields.Integer()
    progress = fields.Float(metadata={"description": "Finished items / total, 0..1."})
    model_version = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    errors = fields.Nested(ErrorPageSchema)


class VectorSchema(Schema):
    kind = fields.String(metadata={"enum": [kind.value for kind in VectorKind]})
    model_version = fields.String()
    dim = fields.Integer()
    box = fields.List(
        fields.Float(),
        allow_none=True,
        metadata={
            "description": "The garment's box in photo pixels, [x1, y1, x2, y2] (top and bottom"
            " vectors; null for the whole photo)."
        },
    )
    label = fields.Integer(
        allow_none=True, metadata={"description": "DeepFashion2 category id, 1-13 (crops)."}
    )
    label_name = fields.String(allow_none=True)
    score = fields.Float(allow_none=True, metadata={"description": "Detection score (crops)."})
    crop_url = fields.String(
        allow_none=True,
        metadata={
            "description": "A JPEG of the box cut out of the photo (top and bottom vectors; null"
            " for the whole photo and for a crop not stored yet)."
        },
    )


class ItemSchema(Schema):
    sku = fields.String()
    status = fields.String(metadata={"enum": [status.value for status in ItemStatus]})
    error = fields.String(allow_none=True)
    image_url = fields.String(allow_none=True)
    image_sha256 = fields.String(allow_none=True)
    byte_size = fields.Integer(allow_none=True)
    width = fields.Integer(allow_none=True)
    height = fields.Integer(allow_none=True)
    source_url = fields.String(allow_none=True)
    source_path = fields.String(allow_none=True)
    attributes = fields.Dict()
    kinds = fields.List(fields.String())
    vectors = fields.List(fields.Nested(VectorSchema))
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


def _check_patch(value: Any) -> None:
    """A merge patch PostgreSQL can store: storable text and finite numbers only."""
    _check_storable_json(value)
    _check_finite(value)


def _check_finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError("Numbers must be finite (no NaN or Infinity).")
    if isinstance(value, dict):
        for inner in value.values():
            _check_finite(inner)
    elif isinstance(value, list):
        for inner in value:
            _check_finite(inner)


_PATCH_DESCRIPTION = (
    "A JSON merge patch (RFC 7396) of the item's attributes: a key set to null is removed,"
    " a nested object merges key by key, any other value replaces the key's value."
)


class AttributesPatchSchema(Schema):
    attributes = fields.Dict(
        keys=fields.String(),
        required=True,
        validate=_check_patch,
        metadata={"description": _PATCH_DESCRIPTION},
    )


class ItemAttributesPatchSchema(AttributesPatchSchema):
    sku = SkuField(required=True)


def _plain_patch(value: Any) -> dict[str, Any] | None:
    """One bulk patch as ItemAttributesPatchSchema loads it, when it is plainly valid (both
    keys and nothing else, a SKU, an object patch PostgreSQL can store); else None."""
    if not isinstance(value, dict) or value.keys() != {"sku", "attributes"}:
        return None
    sku, patch = value["sku"], value["attributes"]
    if not isinstance(sku, str) or not isinstance(patch, dict) or sku_problem(sku) is not None:
        return None
    if not all(isinstance(key, str) for key in patch):
        return None
    try:
        _check_patch(patch)
    except ValidationError:
        return None
    return {"sku": sku, "attributes": patch}


class PatchList(fields.List[Any]):
    """The bulk patches: each plainly valid one is taken as it is, without a nested schema load
    (10,000 of them cost a stock feed most of its request); if any is not, the whole list goes
    through marshmallow, so refusals and their details are the nested schema's own."""

    @override
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, list):
            plain = [_plain_patch(v) for v in value]
            if all(p is not None for p in plain):
                return plain
        return super()._deserialize(value, attr, data, **kwargs)


class ItemsPatchSchema(Schema):
    items = PatchList(
        fields.Nested(ItemAttributesPatchSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_PATCH_ITEMS),
        metadata={
            "description": f"Up to {MAX_PATCH_ITEMS} patches, applied in order (a SKU named"
            " twice gets both).",
        },
    )


class PatchOutcomeSchema(Schema):
    sku = fields.String(required=True)
    status = fields.String(
        required=True,
        metadata={"enum": ["updated", "not_found"]},
    )


class ItemsPatchedSchema(Schema):
    updated = fields.Integer(required=True, metadata={"description": "Items patched."})
    not_found = fields.Integer(required=True, metadata={"description": "Unknown SKUs named."})
    items = fields.List(
        fields.Nested(PatchOutcomeSchema),
        required=True,
        metadata={"description": "One per patch sent, in the same order."},
    )
