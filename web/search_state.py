"""This process's copy of the cached matrices, refreshed only when the pointer changes.

A request costs at most one small Redis GET (the pointer), and only when the last look is
older than ``cache_pointer_ttl_s``. A new generation is loaded by a background thread while
requests keep answering from the old copy (still exact: see shared.search.recommender); the
copy is swapped by one reference assignment. Only a process that has no copy at all waits.

When the pointer is gone (cache flushed or restarted) the process keeps serving its copy and
asks for one rebuild (single flight across every process: shared.search.scheduling).
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from flask import Flask, current_app

from shared.config import Settings
from shared.search import matrix_cache, scheduling
from shared.search.matrix_cache import Generation, GenerationMissing

log = logging.getLogger(__name__)


class CacheUnavailable(RuntimeError):
    """No copy in this process and none loadable now; the client should retry shortly."""


class SearchState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._generation: Generation | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()
        self._loading: str | None = None
        self._loaded = threading.Condition(self._lock)
        self._client: redis.Redis | None = None

    @property
    def generation(self) -> Generation | None:
        return self._generation

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.settings.redis_cache_url, socket_timeout=30, socket_connect_timeout=2
            )
        return self._client

    def current(self, wait_s: float | None = None) -> Generation:
        """The generation to answer from; raises CacheUnavailable when there is none."""
        now = time.monotonic()
        if now - self._checked_at >= self.settings.cache_pointer_ttl_s:
            self._checked_at = now
            self._check_pointer()
        generation = self._generation
        if generation is not None:
            return generation
        wait = self.settings.query_timeout_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait
        with self._loaded:
            while self._generation is None and self._loading is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._loaded.wait(left)
        if self._generation is None:
            raise CacheUnavailable("the recommendation cache is being built")
        return self._generation

    def _check_pointer(self) -> None:
        try:
            pointer = matrix_cache.read_pointer(self._redis())
        except redis.RedisError as exc:
            # The cache server is down: a copy we hold is still exact; without one we cannot answer.
            log.warning("cache pointer unreadable", extra={"error": str(exc)})
            return
        if pointer is None:
            self._cache_lost()
            return
        held = self._generation
        if held is not None and held.name == pointer:
            return
        with self._lock:
            if self._loading is not None:
                return
            self._loading = pointer
        threading.Thread(
            target=self._load, args=(pointer,), name=f"cache-load-{pointer}", daemon=True
        ).start()

    def _cache_lost(self) -> None:
        try:
            if scheduling.request_rebuild_for_empty_cache(self.settings):
                log.warning("cache empty: rebuild requested")
        except Exception as exc:  # the broker being down must not fail the request
            log.warning("could not request a cache rebuild", extra={"error": str(exc)})

    def _load(self, pointer: str) -> None:
        started = time.perf_counter()
        generation: Generation | None = None
        try:
            # A rebuild may replace the generation while we read it: follow the pointer.
            for _ in range(3):
                try:
                    generation = matrix_cache.load_generation(self._redis(), pointer)
                    break
                except GenerationMissing:
                    latest = matrix_cache.read_pointer(self._redis())
                    if latest is None or latest == pointer:
                        # Flushed, or a pointer to a generation that is no longer whole.
                        self._cache_lost()
                        break
                    pointer = latest
        except Exception:
            log.exception("cache generation failed to load", extra={"generation": pointer})
            generation = None
        with self._loaded:
            if generation is not None:
                self._generation = generation
            self._loading = None
            # A failed load is retried on the next pointer look, not in a tight loop.
            self._loaded.notify_all()
        if generation is not None:
            log.info(
                "cache generation loaded",
                extra={
                    "generation": pointer,
                    "seconds": round(time.perf_counter() - started, 3),
                    "bytes": sum(m.nbytes for m in generation.matrices.values()),
                },
            )


def search_state(app: Flask | None = None) -> SearchState:
    """The app's SearchState, made on first use (after any fork: threads never cross one)."""
    app = app or current_app
    state = app.extensions.get("visrec_search_state")
    if state is None:
        with _create_lock:
            state = app.extensions.get("visrec_search_state")
            if state is None:
                state = app.extensions["visrec_search_state"] = SearchState(app.config["SETTINGS"])
    return state


_create_lock = threading.Lock()
