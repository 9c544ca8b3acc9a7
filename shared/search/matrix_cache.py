"""The matrix cache in Redis: generations of chunked float32 matrices and one pointer.

Layout (all under ``visrec:cache:``), one generation ``G``:

- ``gen:G:meta``: JSON describing the generation (versions, kinds, rows, dim, chunk counts,
  the PostgreSQL watermark ``max_embedding_id`` and every key it owns);
- ``gen:G:<version>:<kind>:vec:<i>``: raw little-endian float32 rows, whole rows per chunk,
  each chunk at most ``cache_chunk_bytes`` (well under Redis's 512 MB value limit);
- ``gen:G:<version>:<kind>:norms`` (float32 ``||x||^2``), ``:ids`` (int64 item ids, ascending)
  and ``:labels`` (JSON: skus and media keys, row-aligned);
- ``current``: the pointer, the name of the live generation.

A rebuild writes a whole new generation, then switches the pointer with one ``SET`` (readers
see the old generation or the new one, never a mix) and ``UNLINK``s the old one. A reader that
loses a race with that UNLINK gets :class:`GenerationMissing` and simply re-reads the pointer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from shared.search.knn import squared_norms
from shared.search.loader import VectorRow
from shared.vectors import DTYPE

PREFIX = "visrec:cache:"
POINTER_KEY = PREFIX + "current"


class GenerationMissing(LookupError):
    """The generation (or part of it) is not in Redis: flushed, or replaced meanwhile."""


def _gen_prefix(generation: str) -> str:
    return f"{PREFIX}gen:{generation}:"


def meta_key(generation: str) -> str:
    return _gen_prefix(generation) + "meta"


def _kind_prefix(generation: str, version: str, kind: str) -> str:
    return f"{_gen_prefix(generation)}{version}:{kind}:"


def new_generation_name() -> str:
    # Sortable by time; the random tail keeps two rebuilds in the same millisecond apart.
    return f"{int(time.time() * 1000):013d}-{np.random.default_rng().integers(1 << 32):08x}"


@dataclass
class KindMatrix:
    """One (model_version, kind): the matrix and the row -> item map."""

    vectors: np.ndarray  # (n, d) float32, C-contiguous
    sq_norms: np.ndarray  # (n,) float32
    item_ids: np.ndarray  # (n,) int64, ascending
    skus: list[str]
    media_keys: list[str | None]

    @property
    def rows(self) -> int:
        return int(self.item_ids.shape[0])

    def rows_of(self, item_ids: Iterable[int]) -> np.ndarray:
        """Rows holding these items (items absent from the matrix are skipped)."""
        wanted = np.fromiter(item_ids, dtype=np.int64)
        if wanted.size == 0 or self.rows == 0:
            return np.empty(0, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, wanted)
        pos = np.minimum(pos, self.rows - 1)
        return pos[self.item_ids[pos] == wanted].astype(np.int64)

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes)


@dataclass
class Generation:
    """A generation as loaded into a process."""

    name: str
    current_version: str | None
    max_embedding_id: int
    matrices: dict[tuple[str, str], KindMatrix] = field(default_factory=dict)

    def matrix(self, version: str, kind: str) -> KindMatrix | None:
        return self.matrices.get((version, kind))


class GenerationWriter:
    """Writes one new generation; nothing is visible to readers until :func:`publish`."""

    def __init__(self, client: redis.Redis, chunk_bytes: int, generation: str | None = None):
        self.client = client
        self.chunk_bytes = max(1, int(chunk_bytes))
        self.name = generation or new_generation_name()
        self.keys: list[str] = []
        self.versions: dict[str, dict[str, dict[str, int]]] = {}

    def _set(self, key: str, value: bytes | str) -> None:
        self.client.set(key, value)
        self.keys.append(key)

    def write_kind(self, version: str, kind: str, rows: Iterable[VectorRow]) -> int:
        """Stream one (version, kind) into chunks; returns the number of rows written."""
        prefix = _kind_prefix(self.name, version, kind)
        ids: list[int] = []
        skus: list[str] = []
        media_keys: list[str | None] = []
        norms: list[np.ndarray] = []
        buffer = bytearray()
        dim = 0
        row_bytes = 0
        chunk_rows = 0
        chunks = 0

        def flush() -> None:
            nonlocal buffer, chunks
            if not buffer:
                return
            block = np.frombuffer(bytes(buffer), dtype=DTYPE).reshape(-1, dim)
            norms.append(squared_norms(block.astype(np.float32, copy=False)))
            self._set(f"{prefix}vec:{chunks}", bytes(buffer))
            chunks += 1
            buffer = bytearray()

        for row in rows:
            if dim == 0:
                row_bytes = len(row.vector)
                dim = row_bytes // 4
                chunk_rows = max(1, self.chunk_bytes // row_bytes)
            elif len(row.vector) != row_bytes:
                raise ValueError(
                    f"{version}/{kind}: item {row.item_id} has {len(row.vector) // 4} values,"
                    f" expected {dim}"
                )
            buffer += row.vector
            ids.append(row.item_id)
            skus.append(row.sku)
            media_keys.append(row.media_key)
            if len(buffer) >= chunk_rows * row_bytes:
                flush()
        flush()
        n = len(ids)
        if n:
            self._set(prefix + "norms", np.concatenate(norms).astype("<f4").tobytes())
            self._set(prefix + "ids", np.asarray(ids, dtype="<i8").tobytes())
            self._set(prefix + "labels", json.dumps({"skus": skus, "media_keys": media_keys}))
        self.versions.setdefault(version, {})[kind] = {
            "rows": n,
            "dim": dim,
            "chunks": chunks,
            "chunk_rows": chunk_rows,
        }
        return n

    def finish(self, *, current_version: str | None, max_embedding_id: int, **extra: Any) -> dict:
        meta = {
            "generation": self.name,
            "created_at": time.time(),
            "current_version": current_version,
            "max_embedding_id": max_embedding_id,
            "versions": self.versions,
            "keys": self.keys,
            **extra,
        }
        self.client.set(meta_key(self.name), json.dumps(meta))
        return meta

    def abandon(self) -> None:
        """Remove what was written (a failed rebuild must not leak memory in the cache)."""
        if self.keys:
            self.client.unlink(*self.keys)
        self.client.unlink(meta_key(self.name))


def publish(client: redis.Redis, generation: str) -> str | None:
    """Make ``generation`` the live one and UNLINK every other; returns the previous name."""
    previous = client.set(POINTER_KEY, generation, get=True)
    old = previous.decode() if isinstance(previous, bytes) else previous
    remove_other_generations(client, keep=generation)
    return old


def remove_other_generations(client: redis.Redis, keep: str) -> int:
    """UNLINK every generation but ``keep``, including leftovers of crashed rebuilds."""
    removed = 0
    batch: list[bytes] = []
    keep_prefix = _gen_prefix(keep).encode()
    for key in client.scan_iter(match=f"{PREFIX}gen:*", count=1000):
        if not key.startswith(keep_prefix):
            batch.append(key)
        if len(batch) >= 500:
            removed += client.unlink(*batch)
            batch = []
    if batch:
        removed += client.unlink(*batch)
    return removed


def read_pointer(client: redis.Redis) -> str | None:
    value = client.get(POINTER_KEY)
    return value.decode() if value is not None else None


def read_meta(client: redis.Redis, generation: str) -> dict[str, Any]:
    raw = client.get(meta_key(generation))
    if raw is None:
        raise GenerationMissing(generation)
    return json.loads(raw)


def _get(client: redis.Redis, key: str, generation: str) -> bytes:
    value = client.get(key)
    if value is None:
        raise GenerationMissing(f"{generation}: {key}")
    return value


def load_kind(
    client: redis.Redis, generation: str, version: str, kind: str, info: dict[str, int]
) -> KindMatrix:
    """One matrix into process memory, one chunk at a time (peak: the matrix plus a chunk)."""
    n, dim = int(info["rows"]), int(info["dim"])
    prefix = _kind_prefix(generation, version, kind)
    if n == 0:
        return KindMatrix(
            np.empty((0, max(dim, 1)), np.float32),
            np.empty(0, np.float32),
            np.empty(0, np.int64),
            [],
            [],
        )
    vectors = np.empty((n, dim), dtype=np.float32)
    flat = vectors.reshape(-1)
    offset = 0
    for i in range(int(info["chunks"])):
        block = np.frombuffer(_get(client, f"{prefix}vec:{i}", generation), dtype=DTYPE)
        flat[offset : offset + block.size] = block
        offset += block.size
    if offset != flat.size:
        raise GenerationMissing(f"{generation}: {version}/{kind} has {offset} of {flat.size}")
    sq_norms = np.frombuffer(_get(client, prefix + "norms", generation), dtype="<f4").astype(
        np.float32
    )
    item_ids = np.frombuffer(_get(client, prefix + "ids", generation), dtype="<i8").astype(np.int64)
    labels = json.loads(_get(client, prefix + "labels", generation))
    return KindMatrix(vectors, sq_norms, item_ids, labels["skus"], labels["media_keys"])


def load_generation(client: redis.Redis, generation: str) -> Generation:
    meta = read_meta(client, generation)
    loaded = Generation(
        name=generation,
        current_version=meta.get("current_version"),
        max_embedding_id=int(meta.get("max_embedding_id", 0)),
    )
    for version, kinds in meta["versions"].items():
        for kind, info in kinds.items():
            loaded.matrices[(version, kind)] = load_kind(client, generation, version, kind, info)
    return loaded
