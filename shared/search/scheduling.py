"""Asking the workers for list maintenance: debounced folds and a single-flight cache reload."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared import task_names
from shared.queueing import QUEUE_LISTS, task_sender
from shared.redis_clients import redis_client
from shared.versions.routing import versioned

if TYPE_CHECKING:
    from shared.config import Settings

FOLD_PENDING_KEY = "visrec:lists:fold-pending"
RELOAD_PENDING_KEY = "visrec:lists:reload-pending"
RELOAD_FLAG_TTL_S = 300


def request_fold(
    settings: Settings,
    *,
    reason: str,
    delay_s: float | None = None,
    model_version: str | None = None,
) -> bool:
    """Schedule a fold ``delay_s`` (default ``fold_debounce_s``) from now unless one is already
    waiting.

    ``model_version``: a fold of that version's changes only, on its workers' ``lists.<v>``
    queue (with its own flag); None folds every version's, on the plain ``lists`` queue.

    Returns True when this call sent it. The fold task clears the flag when it starts, so
    changes committed while it runs schedule the next one. The flag lives on the broker (the
    cache may be flushed) and expires, so a lost task cannot block folds for good; the periodic
    fold catches anything left over.
    """
    client = redis_client(settings.redis_broker_url)
    delay = settings.fold_debounce_s if delay_s is None else delay_s
    delay_ms = max(1, int(delay * 1000))
    if not client.set(_fold_flag(model_version), reason, nx=True, px=delay_ms + 60_000):
        return False
    kwargs: dict[str, str] = {"reason": reason}
    if model_version is not None:
        kwargs["model_version"] = model_version
    task_sender(settings).send_task(
        task_names.FOLD_LISTS,
        kwargs=kwargs,
        queue=versioned(QUEUE_LISTS, model_version),
        countdown=delay,
        # Nobody reads a fold's result: without this, every sender subscribes to its result
        # channel on the broker for good (a web process would hold one per DELETE).
        ignore_result=True,
    )
    return True


def _fold_flag(model_version: str | None) -> str:
    return FOLD_PENDING_KEY if model_version is None else f"{FOLD_PENDING_KEY}:{model_version}"


def clear_fold_pending(settings: Settings, model_version: str | None = None) -> None:
    redis_client(settings.redis_broker_url).delete(_fold_flag(model_version))


def request_cache_reload(settings: Settings, *, reason: str) -> bool:
    """Single flight for a cold cache: however many readers notice, one reload is asked for.

    The flag lasts until a reload has published (or expires). Returns True when this call asked.
    """
    client = redis_client(settings.redis_broker_url)
    if not client.set(RELOAD_PENDING_KEY, reason, nx=True, ex=RELOAD_FLAG_TTL_S):
        return False
    _send_reload(settings, reason, countdown=None)
    return True


def resend_cache_reload(settings: Settings, *, reason: str, delay_s: float) -> None:
    """The reload again ``delay_s`` from now (the lock was taken); its flag stays set meanwhile."""
    client = redis_client(settings.redis_broker_url)
    client.set(RELOAD_PENDING_KEY, reason, ex=RELOAD_FLAG_TTL_S)
    _send_reload(settings, reason, countdown=delay_s)


def _send_reload(settings: Settings, reason: str, *, countdown: float | None) -> None:
    # Nobody reads a reload's result (see request_fold).
    task_sender(settings).send_task(
        task_names.RELOAD_LISTS_CACHE,
        kwargs={"reason": reason},
        queue=QUEUE_LISTS,
        countdown=countdown,
        ignore_result=True,
    )


def clear_reload_pending(settings: Settings) -> None:
    redis_client(settings.redis_broker_url).delete(RELOAD_PENDING_KEY)
