"""``GET /api/v1/models`` (the model versions and which serves), ``POST .../<v>/build``,
``POST .../<v>/serve`` and ``DELETE .../<v>`` (API key): the version life cycle
(docs/architecture.md#model-versions). The work is web.services.models'."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from web.api.model_schemas import ModelsSchema, ModelVersionSchema, ServingSchema
from web.auth import caller_has_key, require_api_key
from web.services import models

blp = Blueprint("models", __name__, url_prefix="/api/v1", description="Model versions")


@blp.route("/models")
class Models(MethodView):
    @blp.doc(security=[{}, {"bearer": []}])
    @blp.response(200, ModelsSchema)
    @blp.alt_response(401, description="A key was sent and it is not valid")
    def get(self) -> dict[str, Any]:
        """Every model version some worker was started with, its state and progress.

        ``items`` of ``catalogue`` ready items have vectors of the version; ``complete`` when
        all do and its lists hold every change. Bundle paths, provenance and settings are for
        API-key holders.
        """
        document = models.overview()
        if not caller_has_key():
            for version in document["versions"]:
                for name in models.PRIVATE_FIELDS:
                    version.pop(name, None)
        return document


@blp.route("/models/<string:version>/build")
class Build(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.response(202, ModelVersionSchema)
    @blp.alt_response(401, description="Missing or wrong API key")
    @blp.alt_response(404, description="Unknown model version")
    @blp.alt_response(409, description="The version is retired (model_retired)")
    @blp.alt_response(503, description="The build could not be queued")
    @require_api_key
    def post(self, version: str) -> dict[str, Any]:
        """Build a version beside the serving one: its workers embed every ready item from
        its stored photo, in the background; its lists are computed in full. Idempotent."""
        return models.build(version)


@blp.route("/models/<string:version>/serve")
class Serve(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.response(200, ServingSchema)
    @blp.alt_response(401, description="Missing or wrong API key")
    @blp.alt_response(404, description="Unknown model version")
    @blp.alt_response(409, description="The version is not complete (model_not_ready)")
    @require_api_key
    def post(self, version: str) -> dict[str, Any]:
        """Serve this version from now on (one atomic switch; the way back is the same call)."""
        return models.serve(version)


@blp.route("/models/<string:version>")
class Version(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.response(202, ModelVersionSchema)
    @blp.alt_response(401, description="Missing or wrong API key")
    @blp.alt_response(404, description="Unknown model version")
    @blp.alt_response(409, description="The version is serving (model_serving)")
    @blp.alt_response(503, description="The purge could not be queued")
    @require_api_key
    def delete(self, version: str) -> dict[str, Any]:
        """Retire a version that does not serve: its vectors, lists, list changes, cache keys
        and every worker's matrices of it are deleted by a worker (``purged`` once done)."""
        return models.retire(version)
