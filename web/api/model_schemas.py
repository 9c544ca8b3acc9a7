"""Schemas of the model-version endpoints (web.api.models)."""

from __future__ import annotations

from marshmallow import Schema, fields

STATES = ["registered", "building", "complete", "serving", "retired"]


class ModelVersionSchema(Schema):
    version = fields.String(required=True)
    state = fields.String(required=True, metadata={"enum": STATES})
    complete = fields.Boolean(
        required=True,
        metadata={"description": "Every ready item has its vectors and its lists are in step."},
    )
    items = fields.Integer(
        required=True, metadata={"description": "Ready items with vectors of this version."}
    )
    catalogue = fields.Integer(required=True, metadata={"description": "Ready items."})
    pending_changes = fields.Integer(
        metadata={"description": "Vector changes not yet folded into this version's lists."}
    )
    workers = fields.Integer(
        required=True, metadata={"description": "Live workers started with this version."}
    )
    created_at = fields.DateTime(required=True)
    retired_at = fields.DateTime(allow_none=True)
    purged = fields.Boolean(
        metadata={"description": "A retired version's vectors, lists and cache keys are gone."}
    )
    bundle_path = fields.String(allow_none=True, metadata={"description": "With an API key."})
    mode = fields.String(allow_none=True)
    provenance = fields.Dict(metadata={"description": "The bundle's provenance (API key)."})
    settings = fields.Dict(
        metadata={"description": "The version-changing settings it was made with (API key)."}
    )


class ModelsSchema(Schema):
    serving = fields.String(allow_none=True, required=True)
    versions = fields.List(fields.Nested(ModelVersionSchema), required=True)


class ServingSchema(Schema):
    serving = fields.String(required=True)
