"""Asking the workers for list maintenance: debounced folds, a single-flight cache reload, and
debounced repairs of lists missing from the cache (the misses noted in a bounded set).

Everything here lives on the broker Redis (it never evicts): the cache it is about may lose any
key at any time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from shared import task_names
from shared.queueing import QUEUE_LISTS, send_unwatched
from shared.redis_clients import redis_client
from shared.versions.routing import versioned

if TYPE_CHECKING:
    from shared.config import Settings

FOLD_PENDING_KEY = "visrec:lists:fold-pending"
RELOAD_PENDING_KEY = "visrec:lists:reload-pending"
RELOAD_FLAG_TTL_S = 300
MISSING_LISTS_KEY = "visrec:lists:missing"
REPAIR_PENDING_KEY = "visrec:lists:repair-pending"
# Misses noted at once, at most: a few hundred KB on the broker. Past it a miss is not noted;
# the page asks again on its next view, once a repair has drained the set.
MAX_MISSING_LISTS = 10_000


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
    send_unwatched(
        settings, task_names.FOLD_LISTS, kwargs, versioned(QUEUE_LISTS, model_version), delay
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
    send_unwatched(
        settings, task_names.RELOAD_LISTS_CACHE, {"reason": reason}, QUEUE_LISTS, countdown
    )


def clear_reload_pending(settings: Settings) -> None:
    redis_client(settings.redis_broker_url).delete(RELOAD_PENDING_KEY)


@dataclass(frozen=True)
class MissingList:
    """A list a reader found missing from the live cache generation while PostgreSQL has it."""

    version: str
    kind: str
    item_id: int

    def member(self) -> str:
        return f"{self.version}:{self.kind}:{self.item_id}"

    @classmethod
    def from_member(cls, member: bytes | str) -> MissingList:
        text = member.decode() if isinstance(member, bytes) else member
        # A model version may hold ':'; a kind and an item id never do.
        version, kind, item_id = text.rsplit(":", 2)
        return cls(version, kind, int(item_id))


# One round trip on a product page's miss path: note the misses (a set: a page viewed again
# before the repair adds nothing; bounded by ARGV[1]), then take the repair's debounce flag
# (ARGV[2] ms). Answers 1 when the caller must send the repair.
_NOTE_MISSING_LUA = """
local room = tonumber(ARGV[1]) - redis.call('SCARD', KEYS[1])
for i = 3, #ARGV do
    if room <= 0 then break end
    room = room - redis.call('SADD', KEYS[1], ARGV[i])
end
if redis.call('SET', KEYS[2], 'missing lists', 'NX', 'PX', ARGV[2]) then
    return 1
end
return 0
"""


def _repair_flag_ms(delay_s: float) -> int:
    # The flag outlives the wait by a minute: a lost message blocks repairs that long at most.
    return max(1, int(delay_s * 1000)) + 60_000


def note_missing_lists(settings: Settings, missing: Sequence[MissingList]) -> bool:
    """Remember lists to write back into the cache and ask for a repair unless one is waiting
    (``cache_repair_delay_s`` from now). Returns True when this call sent it."""
    if not missing:
        return False
    client = redis_client(settings.redis_broker_url)
    note = client.register_script(_NOTE_MISSING_LUA)
    delay = settings.cache_repair_delay_s
    args: list[int | str] = [MAX_MISSING_LISTS, _repair_flag_ms(delay)]
    args += [m.member() for m in missing]
    if not note(keys=[MISSING_LISTS_KEY, REPAIR_PENDING_KEY], args=args):
        return False
    _send_repair(settings, "missing lists", countdown=delay)
    return True


def request_cache_repair(settings: Settings, *, reason: str, delay_s: float) -> bool:
    """A repair (workers.tasks.lists.repair_cache) ``delay_s`` from now unless one is already
    waiting; True when this call sent it."""
    client = redis_client(settings.redis_broker_url)
    if not client.set(REPAIR_PENDING_KEY, reason, nx=True, px=_repair_flag_ms(delay_s)):
        return False
    _send_repair(settings, reason, countdown=delay_s)
    return True


def _send_repair(settings: Settings, reason: str, *, countdown: float) -> None:
    send_unwatched(
        settings, task_names.REPAIR_LISTS_CACHE, {"reason": reason}, QUEUE_LISTS, countdown
    )


def clear_repair_pending(settings: Settings) -> None:
    """Called as a repair starts: misses noted while it runs schedule the next one."""
    redis_client(settings.redis_broker_url).delete(REPAIR_PENDING_KEY)


def take_missing_lists(settings: Settings, count: int) -> list[MissingList]:
    """Up to ``count`` noted misses, removed from the set (a repair that fails loses them; the
    pages note them again on their next view)."""
    # SPOP with a count answers a list of members (redis-py types it loosely).
    members = cast(
        "list[bytes] | None", redis_client(settings.redis_broker_url).spop(MISSING_LISTS_KEY, count)
    )
    return [MissingList.from_member(m) for m in members or ()]
