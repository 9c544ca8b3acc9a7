"""Which generation of the lists cache this process reads: the pointer, looked at every
``cache_pointer_ttl_s`` at most. That is all a web process keeps: no vectors, no lists.

A missing pointer (cache flushed, or never filled) sends reads to PostgreSQL and asks once, for
every process together, for a reload from PostgreSQL (shared.search.scheduling).
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from shared.config import Settings
from shared.redis_clients import redis_client
from shared.search import lists_cache, scheduling

log = logging.getLogger(__name__)


class ListsPointer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._generation: str | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def client(self) -> redis.Redis:
        return redis_client(self.settings.redis_cache_url)

    def generation(self) -> str | None:
        now = time.monotonic()
        if now - self._checked_at < self.settings.cache_pointer_ttl_s:
            return self._generation
        with self._lock:
            if now - self._checked_at < self.settings.cache_pointer_ttl_s:
                return self._generation
            self._checked_at = now
            try:
                self._generation = lists_cache.read_pointer(self.client())
            except redis.RedisError as exc:
                log.warning(
                    "lists cache unreachable; reading PostgreSQL", extra={"error": str(exc)}
                )
                self._generation = None
                return None
            if self._generation is None:
                self._ask_for_reload()
            return self._generation

    def _ask_for_reload(self) -> None:
        try:
            if scheduling.request_cache_reload(self.settings, reason="cache empty"):
                log.warning("lists cache empty: reload from PostgreSQL requested")
        except Exception as exc:  # the broker being down must not fail the request
            log.warning("could not request a lists cache reload", extra={"error": str(exc)})
