"""Which generation of the lists cache this process reads: the pointer, looked at every
``cache_pointer_ttl_s`` at most. That is all a web process keeps: no vectors, no lists.

A missing pointer (cache flushed, or never filled) sends reads to PostgreSQL and asks once, for
every process together, for a reload from PostgreSQL (shared.search.scheduling). A cache that
does not answer within ``CACHE_TIMEOUT_S`` (down, paused, overloaded) is left alone for
``CACHE_BACKOFF_S``: requests meanwhile read PostgreSQL without touching the network to Redis,
so at most one request per process and back-off pays the timeout.

A list the cache lacks while PostgreSQL has it (evicted) is noted on the broker with one
command, and a repair writes it back (shared.search.scheduling, workers.search.cache_repair).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import redis

from shared.redis_clients import redis_client
from shared.search import lists_cache, scheduling

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.search.reader import ItemRef

log = logging.getLogger(__name__)

CACHE_TIMEOUT_S = 0.5
CACHE_BACKOFF_S = 5.0


class ListsPointer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._generation: str | None = None
        self._checked_at = float("-inf")
        self._down_until = float("-inf")
        self._broker_down_until = float("-inf")
        self._lock = threading.Lock()

    def client(self) -> redis.Redis:
        return redis_client(self.settings.redis_cache_url, CACHE_TIMEOUT_S)

    def cache_failed(self, exc: Exception) -> None:
        """A read timed out or failed: stop asking Redis for a while."""
        self._down_until = time.monotonic() + CACHE_BACKOFF_S
        self._generation = None
        log.warning("lists cache unavailable; reading PostgreSQL", extra={"error": str(exc)})

    def generation(self) -> str | None:
        now = time.monotonic()
        if now < self._down_until:
            return None
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
        except Exception as exc:  # noqa: BLE001  the broker being down must not fail the request
            log.warning("could not request a lists cache reload", extra={"error": str(exc)})

    def lists_missing(self, item: ItemRef, kinds: list[str]) -> None:
        """Note lists the cache answered without, for a repair to write back. A broker that
        fails is left alone for ``CACHE_BACKOFF_S``: the page has its answer already."""
        now = time.monotonic()
        if now < self._broker_down_until or item.version is None:
            return
        missing = [scheduling.MissingList(item.version, kind, item.id) for kind in kinds]
        try:
            if scheduling.note_missing_lists(self.settings, missing):
                log.info("lists missing from the cache: repair requested")
        except Exception as exc:  # noqa: BLE001  the broker being down must not fail the request
            self._broker_down_until = now + CACHE_BACKOFF_S
            log.warning("could not note lists missing from the cache", extra={"error": str(exc)})
