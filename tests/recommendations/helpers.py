"""Catalogue rows written straight through SQLAlchemy, and the brute force answers are judged by."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, select

from shared.models import Embedding, Item
from shared.queueing import QUEUE_LISTS
from shared.vectors import encode

if TYPE_CHECKING:
    import redis
    from sqlalchemy.orm import Session

VERSION = "test-model-v1"


def add_item(
    session: Session,
    sku: str,
    vectors: Mapping[str, np.ndarray],
    version: str = VERSION,
    media_key: str | None = None,
    crop_keys: Mapping[str, str] | None = None,
) -> int:
    item = Item(sku=sku, media_key=media_key or f"{abs(hash(sku)):064x}"[:64], status="ready")
    session.add(item)
    session.flush()
    for kind, vector in vectors.items():
        session.add(
            Embedding(
                item_id=item.id,
                kind=kind,
                model_version=version,
                dim=int(vector.shape[0]),
                vector=encode(vector),
                crop_key=(crop_keys or {}).get(kind),
            )
        )
    session.commit()
    return item.id


def add_catalogue(
    session: Session, vectors: Mapping[str, Mapping[str, np.ndarray]], version: str = VERSION
) -> dict[str, int]:
    return {sku: add_item(session, sku, kinds, version) for sku, kinds in vectors.items()}


def delete_item(session: Session, sku: str) -> None:
    session.execute(delete(Item).where(Item.sku == sku))
    session.commit()


def stored_vectors(session: Session, kind: str, version: str = VERSION) -> list[tuple]:
    """(item_id, sku, vector) of one kind as PostgreSQL holds them now."""
    rows = session.execute(
        select(Item.id, Item.sku, Embedding.vector)
        .join(Embedding, Embedding.item_id == Item.id)
        .where(Embedding.kind == kind, Embedding.model_version == version)
    ).all()
    return [(r[0], r[1], np.frombuffer(r[2], dtype="<f4")) for r in rows]


def brute_force(
    rows: Iterable[tuple], query: np.ndarray, k: int, exclude_item_id: int | None = None
) -> list[tuple[str, float]]:
    """Every distance in float64, sorted by (distance, item id): the definition of right."""
    rows = [r for r in rows if r[0] != exclude_item_id]
    if not rows:
        return []
    matrix = np.stack([r[2] for r in rows]).astype(np.float64)
    dist = np.sqrt(((matrix - query.astype(np.float64)) ** 2).sum(axis=1))
    order = sorted(range(len(rows)), key=lambda i: (dist[i], rows[i][0]))[:k]
    return [(rows[i][1], float(dist[i])) for i in order]


def tie_heavy_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Small integers: many exact duplicates and equal distances."""
    return rng.integers(0, 3, size=(n, dim)).astype(np.float32)


def expected(session: Session, sku: str, kind: str, k: int, version: str = VERSION) -> list:
    """Brute force for one catalogue item's own vector of ``kind``."""
    rows = stored_vectors(session, kind, version)
    mine = [r for r in rows if r[1] == sku]
    assert mine, f"{sku} has no {kind}"
    return brute_force(rows, mine[0][2], k, exclude_item_id=mine[0][0])


def replace_vector(
    session: Session, sku: str, kind: str, vector: np.ndarray, version: str = VERSION
) -> None:
    """A re-photographed item: its row keeps its id, the bytes change (as the upsert does)."""
    item_id = session.scalars(select(Item.id).where(Item.sku == sku)).one()
    row = session.scalars(
        select(Embedding).where(
            Embedding.item_id == item_id, Embedding.kind == kind, Embedding.model_version == version
        )
    ).one()
    row.vector = encode(vector)
    row.dim = int(vector.shape[0])
    session.commit()


def queued_tasks(broker_redis: redis.Redis, task: str) -> list[dict]:
    """Tasks of one name waiting on the broker's ``lists`` queue (Celery's Redis transport)."""
    found = []
    for raw in broker_redis.lrange(QUEUE_LISTS, 0, -1):
        message = json.loads(raw)
        if message.get("headers", {}).get("task") == task:
            found.append(message)
    return found
