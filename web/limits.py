"""Rate limits for anonymous callers, counted in the broker Redis (Flask-Limiter).

Not in the cache Redis: that one evicts under memory pressure (allkeys-lru) and may be flushed
at any time, and either would hand every caller a fresh budget. The broker never evicts.

Only the photo search is limited: it costs a GPU forward pass per call and anyone may call it.
Callers with a valid API key are not counted. If that Redis is unreachable, limits fail
open (the search still answers) rather than turning an outage into refusals.
"""

from __future__ import annotations

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

limiter = Limiter(
    key_func=get_remote_address,
    headers_enabled=True,
    swallow_errors=True,
    key_prefix="visrec:ratelimit",
    strategy="moving-window",
)


def photo_search_limit() -> str:
    return current_app.config["SETTINGS"].photo_search_rate_limit or "1000000/second"


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    # The one Redis connection not made by shared.redis_clients: Flask-Limiter's storage (the
    # limits library) builds its own client from a URI, so its short timeouts are passed here.
    app.config.setdefault("RATELIMIT_STORAGE_URI", settings.redis_broker_url)
    app.config.setdefault(
        "RATELIMIT_STORAGE_OPTIONS", {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    )
    limiter.init_app(app)
    # Flask-Limiter also checks default and blueprint limits before every request: there are
    # none here, and that check cost a third of /healthz's time. The limited view's decorator
    # checks its own limit, so that hook is taken out again.
    hooks = app.before_request_funcs.get(None, [])
    hooks[:] = [hook for hook in hooks if hook != limiter._check_request_limit]
