"""Absolute or relative URLs for the documents the API and the UI show.

Services and views both build them, so they live below both (a service never imports a view).
"""

from __future__ import annotations

from flask import url_for

from web.resources import settings


def public_url(path: str) -> str:
    """``path`` made absolute with PUBLIC_BASE_URL when one is set, else left relative."""
    base = settings().public_base_url
    return f"{base.rstrip('/')}{path}" if base else path


def media_url(key: str | None) -> str | None:
    """The URL an image is served at, for any API document that shows one."""
    if not key:
        return None
    return public_url(url_for("media.get_media", key=key))
