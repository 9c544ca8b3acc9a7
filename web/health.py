"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask_smorest import Blueprint
from sqlalchemy import text

from web.resources import broker_redis, cache_redis, db, settings

blp = Blueprint("health", __name__, description="Liveness, readiness and metrics")


@blp.route("/healthz")
@blp.response(200)
def healthz() -> dict[str, Any]:
    """The process is alive (touches nothing else)."""
    return {"status": "ok"}


def _check(fn: Any) -> dict[str, Any]:
    try:
        detail = fn()
    except Exception as exc:  # a readiness probe reports every failure, whatever its type
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, **(detail or {})}


def _bundle_status() -> dict[str, Any]:
    # shared.ml.bundle reads manifests and hashes files only: no ML framework is imported here.
    from shared.ml.bundle import inspect_bundle

    return inspect_bundle(settings()).as_dict()


@blp.route("/readyz")
@blp.response(200)
def readyz() -> Any:
    """Database, broker, cache and model bundle; 503 naming what is down."""
    checks = {
        "database": _check(lambda: db().execute(text("SELECT 1")).scalar_one() and None),
        "broker": _check(lambda: broker_redis().ping() and None),
        "cache": _check(lambda: cache_redis().ping() and None),
        "model_bundle": _check(_bundle_status),
    }
    ok = all(c["ok"] for c in checks.values())
    body = {"status": "ready" if ok else "unavailable", "checks": checks}
    return body, (200 if ok else 503)


@blp.route("/metrics")
def metrics() -> Response:
    from web.metrics import render_metrics

    payload, content_type = render_metrics()
    return Response(payload, content_type=content_type)
