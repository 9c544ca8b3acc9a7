"""Retrieval quality of a model bundle: Recall@K on the In-shop query/gallery split.

Usage::

    python -m training.evaluate --bundle DIR --data DIR [--kind full|top|bottom]
        [--k 1 5 20] [--embedder-weights imagenet|random|FILE] [--device cpu|cuda]
        [--batch-size N] [--limit N]

Every query and gallery photo goes through the workers' own pipeline
(``shared.ml.pipeline.get_pipeline``), so the numbers describe what the service would serve.
A query is a hit at K when one of its K nearest gallery photos (Euclidean distance over the
``--kind`` vectors) shows the same item. Queries whose item has no gallery photo, or that got no
vector of that kind (no top/bottom crop found), are left out and counted separately; gallery
photos without a vector cannot be retrieved. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.deepfashion import DatasetError, InShopImage, read_inshop

DEFAULT_KS = (1, 5, 20)
KINDS = ("full", "top", "bottom")
EXIT_USER_ERROR = 2


class EvaluationError(Exception):
    """Nothing to evaluate, or a bad argument."""


@dataclass(frozen=True)
class EvaluationResult:
    kind: str
    model_version: str
    recall: dict[int, float]
    queries: int  # queries scored
    gallery: int  # gallery photos with a vector
    queries_without_vector: int
    queries_without_match: int  # their item has no gallery photo with a vector

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["recall"] = {f"recall@{k}": v for k, v in self.recall.items()}
        return data


def recall_at_k(query_vectors: np.ndarray, query_items: Sequence[str],
                gallery_vectors: np.ndarray, gallery_items: Sequence[str],
                ks: Sequence[int] = DEFAULT_KS, chunk: int = 512) -> dict[int, float]:
    """Share of queries with a same-item gallery photo among their k nearest (Euclidean).

    Every query must have at least one same-item gallery photo. Ties keep gallery order.
    """
    if len(query_items) == 0:
        raise EvaluationError("no queries to score")
    gallery = np.asarray(gallery_vectors, dtype=np.float64)
    gallery_ids = np.asarray(gallery_items)
    gallery_sq = np.einsum("ij,ij->i", gallery, gallery)
    max_k = min(max(ks), len(gallery_ids))
    hits = {k: 0 for k in ks}
    for start in range(0, len(query_items), chunk):
        queries = np.asarray(query_vectors[start:start + chunk], dtype=np.float64)
        ids = np.asarray(query_items[start:start + chunk])
        # Squared distances; the query's own norm does not change its ranking.
        distances = gallery_sq[None, :] - 2.0 * queries @ gallery.T
        nearest = np.argsort(distances, axis=1, kind="stable")[:, :max_k]
        same = gallery_ids[nearest] == ids[:, None]
        for k in ks:
            hits[k] += int(same[:, :k].any(axis=1).sum())
    return {k: hits[k] / len(query_items) for k in ks}


def embed_images(pipeline: Any, images: Sequence[InShopImage], kind: str,
                 batch_size: int) -> list[np.ndarray | None]:
    """The ``kind`` vector of each image (None when the pipeline gave none), with progress."""
    from tqdm import tqdm

    vectors: list[np.ndarray | None] = []
    with tqdm(total=len(images), desc=f"embedding ({kind})", unit="img") as progress:
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            try:
                photos = [image.image_path.read_bytes() for image in chunk]
            except OSError as exc:
                raise DatasetError(getattr(exc, "filename", "?"), f"cannot read: {exc}") from None
            for image, result in zip(chunk, pipeline.process(photos), strict=True):
                if not result.ok:
                    raise DatasetError(image.image_path, f"undecodable image: {result.error}")
                vectors.append(result.vectors.get(kind))
            progress.update(len(chunk))
    return vectors


def evaluate_bundle(
    bundle_dir: Path | str,
    data_dir: Path | str,
    *,
    kind: str = "full",
    ks: Sequence[int] = DEFAULT_KS,
    embedder_weights: str | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    limit: int | None = None,
    settings_overrides: dict[str, Any] | None = None,
) -> EvaluationResult:
    """Recall@K of the bundle on the In-shop split in ``data_dir``.

    ``limit`` keeps the first N query items (with all their gallery photos) plus the whole
    gallery, for quick runs.
    """
    from shared.config import load_settings
    from shared.ml.pipeline import get_pipeline

    if kind not in KINDS:
        raise EvaluationError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    if not ks or min(ks) < 1:
        raise EvaluationError("K values must be positive")
    images = read_inshop(data_dir)
    queries = [i for i in images if i.partition == "query"]
    gallery = [i for i in images if i.partition == "gallery"]
    if limit is not None:
        queries = queries[:limit]
    if not queries or not gallery:
        raise EvaluationError(f"{data_dir}: the partition file lists no query or no gallery "
                              "images")
    overrides = {"model_dir": Path(bundle_dir), "device": device, **(settings_overrides or {})}
    if embedder_weights:
        overrides["embedder_weights"] = embedder_weights
    pipeline = get_pipeline(load_settings(overrides))

    gallery_vectors = embed_images(pipeline, gallery, kind, batch_size)
    kept = [(v, g.item_id) for v, g in zip(gallery_vectors, gallery, strict=True) if v is not None]
    if not kept:
        raise EvaluationError(f"no gallery photo got a '{kind}' vector")
    gallery_items = {item for _, item in kept}
    query_vectors = embed_images(pipeline, queries, kind, batch_size)
    scored = [(v, q.item_id) for v, q in zip(query_vectors, queries, strict=True)
              if v is not None and q.item_id in gallery_items]
    no_vector = sum(v is None for v in query_vectors)
    no_match = sum(v is not None and q.item_id not in gallery_items
                   for v, q in zip(query_vectors, queries, strict=True))
    if not scored:
        raise EvaluationError(f"no query got a '{kind}' vector with a matching gallery photo")
    recall = recall_at_k(np.stack([v for v, _ in scored]), [i for _, i in scored],
                         np.stack([v for v, _ in kept]), [i for _, i in kept], ks)
    return EvaluationResult(kind, pipeline.model_version, recall, len(scored), len(kept),
                            no_vector, no_match)


def format_table(result: EvaluationResult) -> str:
    lines = [f"{'metric':<12}{'value':>8}", "-" * 20]
    lines += [f"{'Recall@' + str(k):<12}{v:>8.4f}" for k, v in result.recall.items()]
    lines += [
        f"{'queries':<12}{result.queries:>8}",
        f"{'gallery':<12}{result.gallery:>8}",
        f"(kind {result.kind}, model {result.model_version}; left out: "
        f"{result.queries_without_vector} queries without a vector, "
        f"{result.queries_without_match} without a gallery match)",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate",
                                     description="Recall@K of a model bundle on In-shop.")
    parser.add_argument("--bundle", required=True, type=Path, help="model bundle folder")
    parser.add_argument("--data", required=True, type=Path, help="In-shop dataset folder")
    parser.add_argument("--kind", default="full", choices=KINDS)
    parser.add_argument("--k", type=int, nargs="+", default=list(DEFAULT_KS))
    parser.add_argument("--embedder-weights", default=None,
                        help="override the bundle's embedder: imagenet, random or a file")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="score the first N queries")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from shared.ml.bundle import BundleError

    args = build_parser().parse_args(argv)
    try:
        result = evaluate_bundle(args.bundle, args.data, kind=args.kind, ks=args.k,
                                 embedder_weights=args.embedder_weights, device=args.device,
                                 batch_size=args.batch_size, limit=args.limit)
    except (DatasetError, EvaluationError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(format_table(result))
    print(json.dumps(result.as_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
