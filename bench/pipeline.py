"""Images per second of the crop-and-embed pipeline vs the article's way, in one run.

The article's way (seed-article.md ``crop_images`` + its embedding loop), per photo: build a new
DefaultPredictor (config, model, checkpoint), read the file with OpenCV, detect one image, crop
every box, then embed the first top crop, the first bottom crop and the whole photo one at a
time at their raw sizes. Ours: models built once, photos decoded, detected in batches, crops
letterboxed to the embedder input and embedded in batches. Same photos, same weights, same
score threshold, both on this CPU.

    python -m bench.pipeline --images 32 --test-size 256   # quicker: smaller detector input
    python -m bench.pipeline --bundle var/models/x  # a trained bundle

Last line: a JSON object with images_per_s_batch{1,8,32}, images_per_s_article,
batched_over_article and the detector/embedder time split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
from tqdm import tqdm


def _photos(count: int, size: int, out_dir: Path) -> list[Path]:
    from training.synthetic import make_catalogue

    make_catalogue(out_dir, count=count, seed=11, size=size)
    return sorted(out_dir.glob("*.jpg"))


def _random_bundle(out_dir: Path, depth: int, test_size: int, input_size: int) -> Path:
    from tests.support.bundles import detector_cfg, random_detector_state, random_embedder_weights
    from training.bundle_writer import write_bundle

    cfg = detector_cfg(test_size, depth=depth)
    weights = random_embedder_weights(out_dir / "backbone.weights.h5", 0, input_size)
    write_bundle(
        out_dir / "bundle",
        detector_config=cfg,
        detector_weights=random_detector_state(cfg, 0),
        embedder_weights=weights,
        input_size=input_size,
        detector_test_size=test_size,
        provenance={"kind": "random bench bundle", "depth": depth},
    )
    return out_dir / "bundle"


def article_way(
    paths: list[Path], bundle: Any, threshold: float, device: str
) -> tuple[float, dict]:
    """seed-article.md's crop_images + embed loop, kept as written apart from the weights."""
    import cv2
    import torch
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    from shared.ml.embedder import build_backbone
    from shared.vocabulary import BOTTOM_IDS, CATEGORY_NAMES, TOP_IDS

    # The article's embed(): the network called on a raw (1, h, w, 3) BGR crop of any size.
    raw_model = build_backbone(bundle.embedder_weights, (None, None, 3))
    top_names = {CATEGORY_NAMES[i - 1] for i in TOP_IDS}
    bottom_names = {CATEGORY_NAMES[i - 1] for i in BOTTOM_IDS}

    def embed(img: np.ndarray) -> np.ndarray:
        # no_grad is not the article's (it ran on TF); without it torch is far slower still.
        with torch.no_grad():
            return np.asarray(raw_model(img.astype("float32"), training=False))

    split = {"build_s": 0.0, "detect_s": 0.0, "embed_s": 0.0}
    start = time.perf_counter()
    for path in tqdm(paths, desc="article", leave=False):
        t0 = time.perf_counter()
        cfg = get_cfg()
        cfg.merge_from_file(str(bundle.detector_config))
        cfg.MODEL.WEIGHTS = str(bundle.detector_weights)
        cfg.MODEL.DEVICE = device
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = threshold
        predictor = DefaultPredictor(cfg)
        t1 = time.perf_counter()
        im = cv2.imread(str(path))
        outputs = predictor(im)
        instances = outputs["instances"].to("cpu")
        crops, names = [], []
        for box, cls in zip(instances.pred_boxes, instances.pred_classes, strict=True):
            v = [int(k) for k in box]
            crops.append(im[v[1] : v[3], v[0] : v[2], :])
            names.append(CATEGORY_NAMES[int(cls)])
        top = [c for c, n in zip(crops, names, strict=True) if n in top_names and c.size]
        bottom = [c for c, n in zip(crops, names, strict=True) if n in bottom_names and c.size]
        t2 = time.perf_counter()
        for img in top[:1] + bottom[:1] + [im]:
            embed(img.reshape(1, *img.shape))
        t3 = time.perf_counter()
        split["build_s"] += t1 - t0
        split["detect_s"] += t2 - t1
        split["embed_s"] += t3 - t2
    return time.perf_counter() - start, split


def batched_way(pipeline: Any, payloads: list[bytes], batch_size: int) -> tuple[float, dict]:
    """``batch_size`` photos per ``process`` call, as one ingestion task gets them; the models'
    own forward-pass sizes are the pipeline's defaults for the device, as deployed."""
    detector, embedder = pipeline.detector, pipeline.embedder
    split = {"detect_s": 0.0, "embed_s": 0.0, "crops": 0}
    detect, embed = detector.detect, embedder.embed

    def timed(fn: Any, key: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                split[key] += time.perf_counter() - t0

        return wrapper

    detector.detect, embedder.embed = timed(detect, "detect_s"), timed(embed, "embed_s")
    try:
        start = time.perf_counter()
        for i in tqdm(range(0, len(payloads), batch_size), desc=f"batch {batch_size}", leave=False):
            results = pipeline.process(payloads[i : i + batch_size])
            rejected = [r.error for r in results if r.error is not None]
            if rejected:
                raise RuntimeError(f"the pipeline rejected a benchmark photo: {rejected[0]}")
            split["crops"] += sum(len(r.crops) for r in results)
        return time.perf_counter() - start, split
    finally:
        del detector.detect, embedder.embed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--images", type=int, default=32, help="photos to run (default 32)")
    parser.add_argument(
        "--size", type=int, default=800, help="photo side in px (default 800, a catalogue photo)"
    )
    parser.add_argument("--bundle", type=Path, help="a model bundle (default: random GN R50)")
    parser.add_argument("--depth", type=int, default=50, help="random bundle ResNet depth")
    parser.add_argument(
        "--test-size",
        type=int,
        default=800,
        help="detector test size, both ways (default 800, Detectron2's)",
    )
    parser.add_argument("--input-size", type=int, default=224, help="embedder input size")
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.05,
        help="both ways (default 0.05: a random detector scores low, and crops "
        "must exist for the comparison to mean anything)",
    )
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)

    import torch

    from shared.config import load_settings
    from shared.ml import resolve_device
    from shared.ml.pipeline import get_pipeline

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        paths = _photos(args.images, args.size, work / "photos")
        bundle_dir = args.bundle or _random_bundle(
            work, args.depth, args.test_size, args.input_size
        )
        settings = load_settings(
            {
                "model_dir": bundle_dir,
                "device": args.device,
                "score_threshold": args.score_threshold,
                "detector_test_size": args.test_size,
                "embedder_input_size": args.input_size,
            }
        )
        pipeline = get_pipeline(settings)
        t0 = time.perf_counter()
        pipeline.load()
        load_s = time.perf_counter() - t0
        payloads = [p.read_bytes() for p in paths]
        pipeline.process(payloads[:2])  # warm-up: first-call allocations are not throughput

        device = resolve_device(args.device)
        # Half the article's photos before the batched runs and half after: on a shared
        # machine the load drifts, and this way both sides see the same drift.
        half = len(paths) // 2
        first_s, first_split = article_way(
            paths[:half], pipeline.bundle, args.score_threshold, device
        )
        rows: list[tuple[str, float, dict]] = []
        for bs in batch_sizes:
            seconds, split = batched_way(pipeline, payloads, bs)
            rows.append((f"batched, batch {bs}", seconds, split))
        second_s, second_split = article_way(
            paths[half:], pipeline.bundle, args.score_threshold, device
        )
        article_s = first_s + second_s
        article_split = {k: first_split[k] + second_split[k] for k in first_split}
        rows.append(("article (predictor per image)", article_s, article_split))
        crops = rows[0][2].pop("crops")
        for _name, _seconds, split in rows[1:-1]:
            split.pop("crops")

    n = len(paths)
    print(
        f"\n{n} photos {args.size}px, detector test size {args.test_size}, embedder "
        f"{args.input_size}px, threshold {args.score_threshold}, {crops} crops, "
        f"{resolve_device(args.device)}, torch threads {torch.get_num_threads()}, "
        f"model load once {load_s:.1f}s, forward passes of {pipeline.detector.batch_size} "
        f"(detector) and {pipeline.embedder.batch_size} (embedder) pictures"
    )
    print(f"{'way':32} {'images/s':>9} {'s/image':>8} {'build':>7} {'detect':>7} {'embed':>7}")
    for name, seconds, split in rows:
        print(
            f"{name:32} {n / seconds:9.2f} {seconds / n:8.3f} "
            f"{split.get('build_s', 0.0) / n:7.3f} {split['detect_s'] / n:7.3f} "
            f"{split['embed_s'] / n:7.3f}"
        )
    result: dict[str, Any] = {
        "images": n,
        "photo_size": args.size,
        "test_size": args.test_size,
        "input_size": args.input_size,
    }
    for (_name, seconds, split), bs in zip(rows, batch_sizes, strict=False):
        result[f"images_per_s_batch{bs}"] = round(n / seconds, 3)
        result[f"batch{bs}_detect_s_per_image"] = round(split["detect_s"] / n, 4)
        result[f"batch{bs}_embed_s_per_image"] = round(split["embed_s"] / n, 4)
    result["images_per_s_article"] = round(n / article_s, 3)
    result["article_split_s_per_image"] = {k: round(v / n, 4) for k, v in article_split.items()}
    best_key = f"images_per_s_batch{max(batch_sizes)}"
    result["batched_over_article"] = round(result[best_key] / result["images_per_s_article"], 2)
    print(f"batched (batch {max(batch_sizes)}) / article: {result['batched_over_article']:.2f}x")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
