"""Liveness, readiness and Prometheus metrics.

Readiness says what is down, never why in the driver's words: those name hosts, ports and
server paths, so they go to the log and the body carries a fixed phrase.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Response
from flask_smorest import Blueprint
from marshmallow import Schema, fields
from sqlalchemy import text

from web.resources import broker_redis, cache_redis, db, settings

log = logging.getLogger(__name__)

blp = Blueprint("health", __name__, description="Liveness, readiness and metrics")

_DOWN = {
    "database": "the database is unreachable",
    "broker": "the broker is unreachable",
    "cache": "the cache is unreachable",
    "model_bundle": "the model bundle cannot be loaded",
}


class LivenessSchema(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok"]})


class CheckSchema(Schema):
    ok = fields.Boolean(required=True)
    error = fields.String(metadata={"description": "What is down (details are in the log)."})
    model_version = fields.String(allow_none=True)
    detector = fields.Boolean()
    mode = fields.String(allow_none=True, metadata={"enum": ["crops+full", "full_only", None]})
    embedder_weights = fields.String(
        allow_none=True, metadata={"description": "imagenet, random, or file"}
    )


class ReadinessSchema(Schema):
    status = fields.String(required=True, metadata={"enum": ["ready", "unavailable"]})
    checks = fields.Dict(keys=fields.String(), values=fields.Nested(CheckSchema), required=True)


@blp.route("/healthz")
@blp.response(200, LivenessSchema)
def healthz() -> dict[str, Any]:
    """The process is alive (touches nothing else)."""
    return {"status": "ok"}


def _check(name: str, fn: Any) -> dict[str, Any]:
    try:
        detail = fn()
    except Exception:  # a readiness probe reports every failure, whatever its type
        log.warning("readiness check failed", extra={"check": name}, exc_info=True)
        return {"ok": False, "error": _DOWN[name]}
    return {"ok": True, **(detail or {})}


def _database_status() -> None:
    db().execute(text("SELECT 1")).scalar_one()


class _BundleUnusable(Exception):
    pass


def _bundle_status() -> dict[str, Any]:
    # shared.ml.bundle reads manifests and hashes files only: no ML framework is imported here.
    from shared.ml.bundle import NAMED_EMBEDDER_WEIGHTS, inspect_bundle

    status = inspect_bundle(settings()).as_dict()
    if not status["ok"]:
        raise _BundleUnusable(status["error"])
    weights = status["embedder_weights"]
    # Which model answers, not where its files live on the server.
    return {
        "model_version": status["model_version"],
        "detector": status["detector"],
        "mode": status["mode"],
        "embedder_weights": weights if weights in NAMED_EMBEDDER_WEIGHTS else "file",
    }


@blp.route("/readyz")
@blp.response(200, ReadinessSchema)
@blp.alt_response(503, schema=ReadinessSchema, description="Something is down")
def readyz() -> Any:
    """Database, broker, cache and model bundle; 503 naming what is down."""
    checks = {
        "database": _check("database", _database_status),
        "broker": _check("broker", lambda: broker_redis().ping() and None),
        "cache": _check("cache", lambda: cache_redis().ping() and None),
        "model_bundle": _check("model_bundle", _bundle_status),
    }
    ok = all(c["ok"] for c in checks.values())
    body = {"status": "ready" if ok else "unavailable", "checks": checks}
    return body, (200 if ok else 503)


@blp.route("/metrics")
@blp.doc(
    responses={
        "200": {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    }
)
def metrics() -> Response:
    from web.metrics import render_metrics

    payload, content_type = render_metrics()
    return Response(payload, content_type=content_type)
