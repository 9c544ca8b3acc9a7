"""Redis clients, one pooled client per URL per process, always with short socket timeouts.

Every Redis connection of the web tier and the workers comes from :func:`redis_client` (the one
exception: Flask-Limiter's storage, which takes a URI; see web.limits). Celery's broker
connections are Celery's own (shared.queueing).

A request thread must never wait on Redis's default (no) timeout: a paused or unreachable
cache turns into a fast RedisError that callers handle (the read path then asks PostgreSQL).
Clients are kept per process id: a forked child never reuses its parent's sockets.
"""

from __future__ import annotations

import os
import threading

import redis

SOCKET_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 1.0

_clients: dict[tuple[int, str, float], redis.Redis] = {}
_lock = threading.Lock()


def redis_client(url: str, timeout_s: float = SOCKET_TIMEOUT_S) -> redis.Redis:
    """The pooled client for ``url``; ``timeout_s`` bounds every socket read and write."""
    key = (os.getpid(), url, timeout_s)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = redis.Redis.from_url(
                    url,
                    socket_timeout=timeout_s,
                    socket_connect_timeout=min(CONNECT_TIMEOUT_S, timeout_s),
                    health_check_interval=30,
                )
    return client


def reply_text(reply: bytes | str) -> str:
    """A reply as text: redis-py types replies as bytes or str; ours are bytes (no client here
    decodes responses)."""
    return reply.decode() if isinstance(reply, bytes) else reply
