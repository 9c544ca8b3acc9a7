"""Absolute or relative URLs for the documents the API and the UI show.

Services and views both build them, so they live below both (a service never imports a view).
"""

from __future__ import annotations

from collections.abc import Callable

from flask import g, has_request_context, url_for

from shared.media import is_valid_key
from web.resources import settings

# Any valid key: the URL of this one, minus the key, is every valid key's URL prefix.
_PROBE_KEY = "0" * 64


def public_url(path: str) -> str:
    """``path`` made absolute with PUBLIC_BASE_URL when one is set, else left relative."""
    base = settings().public_base_url
    return f"{base.rstrip('/')}{path}" if base else path


def _media_prefix() -> str:
    # A product page shows ~30 images; url_for costs ~30 us each (werkzeug's URL builder), so
    # the prefix is built once per request and valid keys (hex, never quoted) appended to it.
    prefix: str | None = g.get("visrec_media_prefix") if has_request_context() else None
    if prefix is None:
        prefix = public_url(url_for("media.get_media", key=_PROBE_KEY))[: -len(_PROBE_KEY)]
        if has_request_context():
            g.visrec_media_prefix = prefix
    return prefix


def media_urls() -> Callable[[str | None], str | None]:
    """:func:`media_url` for the many images of one document (the prefix looked up once)."""
    prefix = _media_prefix()

    def url(key: str | None) -> str | None:
        if not key:
            return None
        return prefix + key if is_valid_key(key) else media_url(key)

    return url


def media_url(key: str | None) -> str | None:
    """The URL an image is served at, for any API document that shows one."""
    if not key:
        return None
    if is_valid_key(key):
        return _media_prefix() + key
    return public_url(url_for("media.get_media", key=key))
