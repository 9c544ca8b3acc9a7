"""The HTTP tier: JSON API, health endpoints and the catalogue UI. Never imports ML frameworks."""

from web.app import create_app

__all__ = ["create_app"]
