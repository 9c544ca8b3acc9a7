"""The neighbour lists in the Redis cache: generations, one pointer, one key per list.

Layout (all under ``visrec:lists:``), one generation ``G``:

- ``gen:G:l:<version>:<kind>:<item id>``: one item's list (shared.search.lists codec);
- ``gen:G:applied``: the id of the last fold whose changes these lists include;
- ``gen:G:meta``: JSON (when and why the generation was made, how many lists);
- ``current``: the pointer, the name of the live generation.

A reader fetches an item's lists *and* ``applied`` with one MGET, and a fold writes its lists and
the new ``applied`` in one MULTI/EXEC, so a reader always knows exactly which changes the lists
it holds include; it adds the rest from PostgreSQL (shared.search.reader). A whole generation is
written only when the cache is cold, flushed or too far behind (workers.search.cache_writer);
then the pointer switches with one SET and the old generation is UNLINKed. The cache may be
flushed or evicted at any time: a missing key only sends that read to PostgreSQL, and a repair
writes it back (workers.search.cache_repair).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.redis_clients import reply_text
from shared.search.lists import NeighbourList, from_bytes

if TYPE_CHECKING:
    import redis

PREFIX = "visrec:lists:"
POINTER_KEY = PREFIX + "current"


def _raw(reply: bytes | str) -> bytes:
    return reply if isinstance(reply, bytes) else reply.encode()


def _gen(generation: str) -> str:
    return f"{PREFIX}gen:{generation}:"


def applied_key(generation: str) -> str:
    return _gen(generation) + "applied"


def meta_key(generation: str) -> str:
    return _gen(generation) + "meta"


def list_key(generation: str, version: str, kind: str, item_id: int) -> str:
    return f"{_gen(generation)}l:{version}:{kind}:{item_id}"


def generation_pattern(generation: str) -> str:
    return _gen(generation) + "*"


@dataclass(frozen=True)
class CachedLists:
    """One item's lists as one generation holds them, and the fold they include."""

    applied: int
    lists: dict[str, NeighbourList | None]  # None: no such key (never written, or evicted)


def read_pointer(client: redis.Redis) -> str | None:
    value = client.get(POINTER_KEY)
    return reply_text(value) if value is not None else None


def read_applied(client: redis.Redis, generation: str) -> int | None:
    value = client.get(applied_key(generation))
    return int(value) if value is not None else None


def read_item_lists(
    client: redis.Redis, generation: str, version: str, item_id: int, kinds: Sequence[str]
) -> CachedLists | None:
    """One round trip; None when the generation is gone (flushed or replaced meanwhile)."""
    keys = [applied_key(generation)] + [list_key(generation, version, k, item_id) for k in kinds]
    values = client.mget(keys)
    if values[0] is None:
        return None
    lists = {
        kind: (from_bytes(_raw(value)) if value is not None else None)
        for kind, value in zip(kinds, values[1:], strict=True)
    }
    return CachedLists(int(values[0]), lists)


@dataclass(frozen=True)
class ListUpdate:
    version: str
    kind: str
    item_id: int
    value: NeighbourList | None  # None: the list is gone (item deleted, or lost this kind)


def apply_fold(
    client: redis.Redis, generation: str, fold_id: int, updates: Iterable[ListUpdate]
) -> None:
    """Write one fold's lists and its id atomically (readers see all of it or none)."""
    values: dict[str, bytes] = {}
    gone: list[str] = []
    for update in updates:
        key = list_key(generation, update.version, update.kind, update.item_id)
        if update.value is None:
            gone.append(key)
        else:
            values[key] = update.value.to_bytes()
    # Few commands (one MSET) rather than one SET per list: the client packs them far faster.
    values[applied_key(generation)] = str(fold_id).encode()
    with client.pipeline(transaction=True) as pipe:
        if gone:
            pipe.delete(*gone)
        pipe.mset(values)
        pipe.execute()


# Atomic check-and-write: the lists go in only while KEYS[1] (the pointer) names ARGV[1] and
# KEYS[2] (its ``applied``) holds ARGV[2]; ARGV[3:] are key, value pairs.
_WRITE_BACK_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
    return 0
end
redis.call('MSET', unpack(ARGV, 3))
return 1
"""


def write_back(
    client: redis.Redis, generation: str, applied: int, values: dict[str, bytes]
) -> bool:
    """Put lists back into ``generation`` (key -> encoded list), only while it is live and
    includes exactly fold ``applied``: they must be that fold's lists, since readers correct a
    list by the changes after ``applied``. False, with nothing written, when it is not so (a
    flush or a reload meanwhile). Keep ``values`` to a few thousand (Lua's unpack limit)."""
    if not values:
        return True
    script = client.register_script(_WRITE_BACK_LUA)
    args: list[str | bytes] = [generation, str(applied)]
    for key, value in values.items():
        args += [key, value]
    return bool(script(keys=[POINTER_KEY, applied_key(generation)], args=args))


def write_meta(client: redis.Redis, generation: str, meta: dict[str, Any]) -> None:
    client.set(meta_key(generation), json.dumps(meta))


def publish(client: redis.Redis, generation: str) -> str | None:
    """Make ``generation`` live and UNLINK every other; returns the previous name."""
    previous = client.set(POINTER_KEY, generation, get=True)
    remove_other_generations(client, keep=generation)
    # SET ... GET answers the old value, never the bool a plain SET answers.
    return reply_text(previous) if isinstance(previous, (bytes, str)) else None


def remove_other_generations(client: redis.Redis, keep: str) -> int:
    """UNLINK every generation but ``keep``, leftovers of interrupted reloads included."""
    removed = 0
    batch: list[bytes] = []
    keep_prefix = _gen(keep).encode()
    for key in client.scan_iter(match=f"{PREFIX}gen:*", count=5000):
        if not key.startswith(keep_prefix):
            batch.append(key)
        if len(batch) >= 1000:
            removed += client.unlink(*batch)
            batch = []
    if batch:
        removed += client.unlink(*batch)
    return removed
