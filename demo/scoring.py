"""Precision@k of recommendations against the synthetic catalogue's labels.

A recommended item is relevant to a query when it shows the same garment type (DeepFashion2
category) in the same colour: for ``top`` results the tops are compared, for ``bottom`` the
bottoms, and for ``full`` (look-alikes) either one may match. With a small catalogue few items
share both type and colour, so every score is printed next to the best any ranking could reach
(the ceiling) and what a random ranking would get (chance): the number means something only
against those two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.vocabulary import CROP_KINDS

Labels = Mapping[str, Mapping[str, Any]]


def _same(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    return bool(a and b and a["category"] == b["category"] and a["colour"] == b["colour"])


def is_relevant(kind: str, query: Mapping[str, Any], candidate: Mapping[str, Any]) -> bool:
    if kind in CROP_KINDS:
        return _same(query.get(kind), candidate.get(kind))
    return any(_same(query.get(garment), candidate.get(garment)) for garment in CROP_KINDS)


@dataclass(frozen=True)
class KindScore:
    kind: str
    queries: int
    precision: float
    ceiling: float
    chance: float


def precision_at_k(
    kind: str, query_sku: str, results: Sequence[str], labels: Labels, k: int
) -> float:
    hits = sum(is_relevant(kind, labels[query_sku], labels[sku]) for sku in results[:k])
    return hits / k


def score_kind(
    kind: str,
    results_by_query: Mapping[str, Sequence[str]],
    labels: Labels,
    candidates: Iterable[str],
    k: int = 5,
) -> KindScore | None:
    """Mean precision@k over the queries that got results for ``kind``; None if there were none.

    ``candidates`` are the items that could have been recommended (the ready catalogue).
    """
    pool = list(candidates)
    precisions, ceilings, chances = [], [], []
    for query, results in results_by_query.items():
        if not results:
            continue
        others = [sku for sku in pool if sku != query]
        relevant = sum(is_relevant(kind, labels[query], labels[sku]) for sku in others)
        precisions.append(precision_at_k(kind, query, results, labels, k))
        ceilings.append(min(relevant, k) / k)
        chances.append(relevant / len(others) if others else 0.0)
    if not precisions:
        return None
    n = len(precisions)
    return KindScore(kind, n, sum(precisions) / n, sum(ceilings) / n, sum(chances) / n)
