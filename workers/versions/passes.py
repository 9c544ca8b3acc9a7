"""One catch-up pass of a version at a time, under a lease on the broker Redis, and the
periodic check (Celery beat) that resumes a build whose pass was lost.

A pass is a chain of chunk tasks (workers.versions.catch_up). Its first chunk takes the lease
``visrec:versions:catch-up-pass:<v>`` with a token of its own, overwriting any older one; every
later chunk carries that token and goes on only while the lease holds it (renewing it), so a
newer pass (a build asked again, a batch's keep-in-step, a resume) supersedes the older one at
its next chunk instead of walking the catalogue beside it. The lease expires
``CATCH_UP_LEASE_S`` after its last renewal: a chain that died with its worker, or vanished
with the broker's data, leaves no lease behind.

The check (``resume_lost_builds``) asks for a pass of every version that is building (tracked,
not serving, not retired), lacks some ready item and has a live worker, unless a pass holds the
lease or a pass's start is already queued (``request_catch_up``'s flag): asking again on every
beat adds no work while one pass runs or waits.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from shared.db import session_scope
from shared.queueing import QUEUE_INGEST
from shared.redis_clients import redis_client
from shared.versions import presence
from shared.versions.registry import lacking_versions
from shared.versions.routing import request_catch_up

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)

PASS_KEY = "visrec:versions:catch-up-pass:"  # noqa: S105 - a key name, not a secret

# Renew the lease when the caller's token holds it, or take it back when it lapsed while the
# chain waited in a queue (nobody superseded it meanwhile); refuse when another pass holds it.
_HOLD_LUA = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""
_END_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _lease_ms(settings: Settings) -> int:
    return max(1, int(settings.catch_up_lease_s * 1000))


def start_pass(settings: Settings, version: str) -> str:
    """Take the lease for a new pass (superseding any other); its token."""
    token = uuid.uuid4().hex
    redis_client(settings.redis_broker_url).set(PASS_KEY + version, token, px=_lease_ms(settings))
    return token


def hold_pass(settings: Settings, version: str, token: str) -> bool:
    """Whether the pass of ``token`` goes on (its lease renewed); False once superseded."""
    client = redis_client(settings.redis_broker_url)
    held = client.register_script(_HOLD_LUA)(
        keys=[PASS_KEY + version], args=[token, _lease_ms(settings)]
    )
    return bool(held)


def end_pass(settings: Settings, version: str, token: str) -> None:
    """The pass walked the whole catalogue: its lease goes (unless a newer pass holds it)."""
    client = redis_client(settings.redis_broker_url)
    client.register_script(_END_LUA)(keys=[PASS_KEY + version], args=[token])


def pass_running(settings: Settings, version: str) -> bool:
    return bool(redis_client(settings.redis_broker_url).exists(PASS_KEY + version))


def forget_pass(settings: Settings, version: str) -> None:
    redis_client(settings.redis_broker_url).delete(PASS_KEY + version)


def resume_lost_builds(settings: Settings) -> dict[str, list[str]]:
    """Ask for a pass of every building version that lacks items, has a live worker and has
    no pass running or queued; what was found and what was asked."""
    with session_scope(settings) as session:
        lacking = lacking_versions(session)
    # The catch-up runs on the version's ingest workers (shared.versions.routing).
    live = presence.live_workers(settings, lacking, QUEUE_INGEST)
    resumed = []
    for version in lacking:
        if not live.get(version) or pass_running(settings, version):
            continue
        if request_catch_up(settings, version, reason="build resumed: no pass was running"):
            log.info("catch-up resumed", extra={"model_version": version})
            resumed.append(version)
    return {"lacking": lacking, "resumed": resumed}
