"""Flask application factory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from shared.config import Settings, load_settings
from web import errors, limits, resources
from web.api.schemas import MAX_FORM_FIELDS_PER_ITEM, MAX_ITEMS_PER_JOB
from web.openapi import ErrorBodyPlugin, VisrecApi
from web.uploads import CappedRequest


class _InOrderJSON(DefaultJSONProvider):
    # Documents keep the order they are built in (results by kind as asked, fields as documented).
    sort_keys = False


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the app; ``config`` is a Settings or a mapping of overrides on the environment."""
    settings = config if isinstance(config, Settings) else load_settings(config)
    app = Flask(__name__)
    app.request_class = CappedRequest
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        # A job may hold MAX_ITEMS_PER_JOB files, each with its own sku and attributes fields;
        # Flask's default (1,000 parts) would refuse jobs the schema accepts.
        MAX_FORM_PARTS=MAX_ITEMS_PER_JOB * MAX_FORM_FIELDS_PER_ITEM + 16,
        API_TITLE="Visual recommendations API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
    )
    app.json = _InOrderJSON(app)
    api = VisrecApi(
        app,
        spec_kwargs={
            "info": {"description": "You may also like, by photo."},
            "extra_plugins": [ErrorBodyPlugin()],
        },
    )
    api.spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "description": "An API key from API_KEYS."}
    )
    app.extensions["visrec_api"] = api
    resources.init_app(app)
    errors.init_app(app)
    limits.init_app(app)
    _register_blueprints(app, api)
    return app


def _register_blueprints(app: Flask, api: VisrecApi) -> None:
    from web.health import blp as health_blp

    api.register_blueprint(health_blp)
    from web.api import items, jobs, media

    for ingestion_blp in (jobs.blp, items.blp, media.blp):
        api.register_blueprint(ingestion_blp)
    from web.api.recommendations import blp as recommendations_blp

    api.register_blueprint(recommendations_blp)
    from web.api.models import blp as models_blp

    api.register_blueprint(models_blp)
    from web.ui import bp as ui_bp  # plain Flask blueprint: pages stay out of the OpenAPI doc

    app.register_blueprint(ui_bp)
