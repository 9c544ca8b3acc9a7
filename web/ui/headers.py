"""Security headers for every UI page: what the browser may load, and that nobody may frame it.

The pages load only their own stylesheet, script and images (from this origin, or from
PUBLIC_BASE_URL where media URLs are absolute), so the policy names nothing else: an injected
script or a clickjacking frame has nowhere to come from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from web.resources import settings

if TYPE_CHECKING:
    from flask import Response


def _image_sources() -> str:
    # data: for the search page, which shows the shopper's photo back from the bytes it was
    # sent (the photo is never stored, so there is no URL to give it).
    sources = ["'self'", "data:"]
    base = settings().public_base_url
    if base:
        parts = urlsplit(base)
        if parts.scheme and parts.netloc:
            sources.append(f"{parts.scheme}://{parts.netloc}")
    return " ".join(sources)


def content_security_policy() -> str:
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {_image_sources()}",
            "connect-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )


def add_security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = content_security_policy()
    # For browsers that predate frame-ancestors.
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
