"""Retrieval quality of a model bundle: Recall@K on the In-shop query/gallery split.

Usage::

    python -m training.evaluate --bundle DIR --data DIR [--kind full|top|bottom]
        [--k 1 5 20] [--embedder-weights imagenet|random|FILE] [--device cpu|cuda]
        [--batch-size N] [--limit N]
    python -m training.evaluate --compare --data DIR [--train-data DIR] [--weights random|...]
        [--epochs N] [--train-batch-size N] [--input-size PX] [--output DIR] [--bundle DIR] ...

``--compare`` trains the embedder twice with the same budget (images, epochs, batch size) and
prints, in one table, Recall@K of: the starting weights untrained, the article's recipe
(category + box heads, last 12 layers, its learning rate) and the metric-learning recipe
(Proxy-Anchor on the pooled embedding, every layer). Training data is ``--train-data`` (either
DeepFashion layout; default: the In-shop folder's own ``train`` partition, item ids as classes).
``--bundle`` is optional there: its detector is kept, so ``--kind top|bottom`` works too.

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

from shared.vocabulary import VectorKind
from training.deepfashion import DatasetError, InShopImage, read_inshop

DEFAULT_KS = (1, 5, 20)
KINDS: tuple[VectorKind, ...] = tuple(VectorKind)
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


def recall_at_k(
    query_vectors: np.ndarray,
    query_items: Sequence[str],
    gallery_vectors: np.ndarray,
    gallery_items: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
    chunk: int = 512,
) -> dict[int, float]:
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
        queries = np.asarray(query_vectors[start : start + chunk], dtype=np.float64)
        ids = np.asarray(query_items[start : start + chunk])
        # Squared distances; the query's own norm does not change its ranking.
        distances = gallery_sq[None, :] - 2.0 * queries @ gallery.T
        nearest = np.argsort(distances, axis=1, kind="stable")[:, :max_k]
        same = gallery_ids[nearest] == ids[:, None]
        for k in ks:
            hits[k] += int(same[:, :k].any(axis=1).sum())
    return {k: hits[k] / len(query_items) for k in ks}


def embed_images(
    pipeline: Any, images: Sequence[InShopImage], kind: str, batch_size: int
) -> list[np.ndarray | None]:
    """The ``kind`` vector of each image (None when the pipeline gave none), with progress."""
    from tqdm import tqdm

    vectors: list[np.ndarray | None] = []
    with tqdm(total=len(images), desc=f"embedding ({kind})", unit="img") as progress:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
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
    kind: str = VectorKind.FULL,
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
        raise EvaluationError(f"{data_dir}: the partition file lists no query or no gallery images")
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
    scored = [
        (v, q.item_id)
        for v, q in zip(query_vectors, queries, strict=True)
        if v is not None and q.item_id in gallery_items
    ]
    no_vector = sum(v is None for v in query_vectors)
    no_match = sum(
        v is not None and q.item_id not in gallery_items
        for v, q in zip(query_vectors, queries, strict=True)
    )
    if not scored:
        raise EvaluationError(f"no query got a '{kind}' vector with a matching gallery photo")
    recall = recall_at_k(
        np.stack([v for v, _ in scored]),
        [i for _, i in scored],
        np.stack([v for v, _ in kept]),
        [i for _, i in kept],
        ks,
    )
    return EvaluationResult(
        kind, pipeline.model_version, recall, len(scored), len(kept), no_vector, no_match
    )


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


@dataclass(frozen=True)
class Recipe:
    name: str
    loss: str | None  # None: the starting weights, untrained
    trainable_layers: str
    learning_rate: float


# The article's settings as train_embedder's defaults have them; the metric recipe trains every
# layer (from random weights nothing else learns) at a rate that suits that, measured on the
# synthetic In-shop split (README, training guide).
RECIPES: tuple[Recipe, ...] = (
    Recipe("untrained", None, "0", 0.0),
    Recipe("article", "article", "12", 1e-4),
    Recipe("metric", "metric", "all", 3e-4),
)


@dataclass(frozen=True)
class ComparisonRow:
    recipe: Recipe
    result: EvaluationResult
    train_seconds: float


def compare_recipes(
    data_dir: Path | str,
    output_dir: Path | str,
    *,
    train_data: Path | str | None = None,
    weights: str = "random",
    epochs: int = 1,
    train_batch_size: int = 32,
    input_size: int = 96,
    augment: bool = True,
    kind: str = VectorKind.FULL,
    ks: Sequence[int] = DEFAULT_KS,
    base_bundle: Path | str | None = None,
    recipes: Sequence[Recipe] = RECIPES,
    device: str = "cpu",
    batch_size: int = 16,
    limit: int | None = None,
    seed: int = 0,
    verbose: int | str = 2,
) -> list[ComparisonRow]:
    """Train each recipe with the same budget, then evaluate each like :func:`evaluate_bundle`.

    ``augment`` (random resized crops and flips, see training.train_embedder.load_batch) applies
    to every trained recipe alike: the budget stays the same for each."""
    import shutil
    import time

    from training.bundle_writer import update_bundle, write_bundle
    from training.train_embedder import train_embedder

    output_dir = Path(output_dir)
    train_data = Path(train_data) if train_data is not None else Path(data_dir)
    rows = []
    for recipe in recipes:
        work = output_dir / recipe.name
        bundle_dir = work / "bundle"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        if base_bundle is not None:
            shutil.copytree(base_bundle, bundle_dir)
        started = time.monotonic()
        if recipe.loss is None:
            if base_bundle is None:
                write_bundle(bundle_dir, embedder_weights=weights, input_size=input_size)
            else:
                update_bundle(bundle_dir, embedder_weights=weights, input_size=input_size)
        else:
            train_embedder(
                train_data,
                work / "train",
                weights=weights,
                epochs=epochs,
                batch_size=train_batch_size,
                input_size=input_size,
                learning_rate=recipe.learning_rate,
                loss=recipe.loss,
                trainable_layers=recipe.trainable_layers,
                augment=augment,
                bundle_dir=bundle_dir,
                verbose=verbose,
                seed=seed,
            )
        took = time.monotonic() - started
        result = evaluate_bundle(
            bundle_dir,
            data_dir,
            kind=kind,
            ks=ks,
            device=device,
            batch_size=batch_size,
            limit=limit,
        )
        rows.append(ComparisonRow(recipe, result, took))
    return rows


def format_comparison(rows: Sequence[ComparisonRow]) -> str:
    ks = list(rows[0].result.recall)
    header = (
        f"{'recipe':<12}" + "".join(f"{'R@' + str(k):>8}" for k in ks) + f"{'train s':>9}  trains"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        what = (
            "nothing (starting weights)"
            if row.recipe.loss is None
            else f"loss {row.recipe.loss}, layers {row.recipe.trainable_layers}, "
            f"lr {row.recipe.learning_rate:g}"
        )
        lines.append(
            f"{row.recipe.name:<12}"
            + "".join(f"{row.result.recall[k]:>8.4f}" for k in ks)
            + f"{row.train_seconds:>9.0f}  {what}"
        )
    by_name = {row.recipe.name: row for row in rows}
    if "article" in by_name and "metric" in by_name:
        article, metric = by_name["article"].result.recall, by_name["metric"].result.recall
        first = ks[0]
        ratio = metric[first] / article[first] if article[first] else float("inf")
        lines.append(f"metric / article Recall@{first}: {ratio:.2f}x")
    result = rows[0].result
    lines.append(f"(kind {result.kind}; {result.queries} queries, {result.gallery} gallery photos)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate", description="Recall@K of a model bundle on In-shop."
    )
    parser.add_argument(
        "--bundle", type=Path, help="model bundle folder (required unless --compare)"
    )
    parser.add_argument("--data", required=True, type=Path, help="In-shop dataset folder")
    parser.add_argument("--kind", default=VectorKind.FULL, choices=KINDS)
    parser.add_argument("--k", type=int, nargs="+", default=list(DEFAULT_KS))
    parser.add_argument(
        "--embedder-weights",
        default=None,
        help="override the bundle's embedder: imagenet, random or a file",
    )
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="score the first N queries")
    compare = parser.add_argument_group("--compare: train and compare the recipes")
    compare.add_argument(
        "--compare",
        action="store_true",
        help="train the article and metric recipes with the same budget and "
        "compare them with the untrained start",
    )
    compare.add_argument(
        "--train-data",
        type=Path,
        default=None,
        help="training set, either DeepFashion layout (default: --data's train partition)",
    )
    compare.add_argument(
        "--weights", default="random", help="starting weights: random, imagenet or a .weights.h5"
    )
    compare.add_argument("--epochs", type=int, default=1)
    compare.add_argument("--train-batch-size", type=int, default=32)
    compare.add_argument("--input-size", type=int, default=96)
    compare.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="train without random resized crops and flips (default: every recipe gets them)",
    )
    compare.add_argument(
        "--output",
        type=Path,
        default=Path("var/train/compare"),
        help="scratch folder for the trained recipes",
    )
    compare.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from shared.ml.bundle import BundleError
    from training.train_embedder import EmbedderTrainingError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.compare:
        try:
            rows = compare_recipes(
                args.data,
                args.output,
                train_data=args.train_data,
                weights=args.weights,
                epochs=args.epochs,
                train_batch_size=args.train_batch_size,
                input_size=args.input_size,
                augment=args.augment,
                kind=args.kind,
                ks=args.k,
                base_bundle=args.bundle,
                device=args.device,
                batch_size=args.batch_size,
                limit=args.limit,
                seed=args.seed,
            )
        except (DatasetError, EvaluationError, BundleError, EmbedderTrainingError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(format_comparison(rows))
        for row in rows:
            print(
                json.dumps(
                    {
                        "recipe": row.recipe.name,
                        "train_seconds": row.train_seconds,
                        **row.result.as_json(),
                    }
                )
            )
        return 0
    if args.bundle is None:
        parser.error("--bundle is required (unless --compare)")
    try:
        result = evaluate_bundle(
            args.bundle,
            args.data,
            kind=args.kind,
            ks=args.k,
            embedder_weights=args.embedder_weights,
            device=args.device,
            batch_size=args.batch_size,
            limit=args.limit,
        )
    except (DatasetError, EvaluationError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(format_table(result))
    print(json.dumps(result.as_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
