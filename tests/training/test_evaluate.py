"""Recall@K on the In-shop split, through the workers' pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared.config import load_settings
from training import synthetic
from training.evaluate import main, recall_at_k


def brute_force_recall(queries, query_ids, gallery, gallery_ids, k: int) -> float:
    hits = 0
    for vector, item in zip(queries, query_ids, strict=True):
        distances = [float(np.sqrt(np.sum((vector - g) ** 2))) for g in gallery]
        order = sorted(range(len(gallery)), key=lambda i: distances[i])
        hits += any(gallery_ids[i] == item for i in order[:k])
    return hits / len(query_ids)


def test_recall_at_k_matches_a_brute_force_count() -> None:
    rng = np.random.default_rng(7)
    gallery = rng.normal(size=(40, 16))
    gallery_ids = [f"id{i % 13}" for i in range(40)]
    queries = rng.normal(size=(25, 16))
    query_ids = [f"id{i % 13}" for i in range(25)]
    got = recall_at_k(queries, query_ids, gallery, gallery_ids, ks=(1, 3, 5, 20), chunk=7)
    for k in (1, 3, 5, 20):
        assert got[k] == pytest.approx(
            brute_force_recall(queries, query_ids, gallery, gallery_ids, k)
        )
    assert got[1] <= got[3] <= got[5] <= got[20]


def test_recall_is_perfect_when_each_query_sits_on_its_gallery_photo() -> None:
    gallery = np.eye(5)
    ids = ["a", "b", "c", "d", "e"]
    assert recall_at_k(gallery + 0.01, ids, gallery, ids, ks=(1,)) == {1: 1.0}
    assert recall_at_k(gallery[::-1] + 0.01, ids, gallery, ids, ks=(1,)) == {1: 0.2}


def test_missing_partition_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--bundle", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert str(tmp_path / "Eval" / "list_eval_partition.txt") in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.ml
def test_evaluate_random_weights_bundle_reports_the_brute_force_recall(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.ml.embedder import import_keras
    from shared.ml.pipeline import get_pipeline
    from training.bundle_writer import write_bundle
    from training.deepfashion import read_inshop

    import_keras("torch")
    data = tmp_path / "inshop"
    synthetic.write_inshop(data, 12, size=64, seed=0)
    bundle_dir = tmp_path / "bundle"
    write_bundle(bundle_dir, embedder_weights="random", input_size=64)

    assert main(["--bundle", str(bundle_dir), "--data", str(data), "--k", "1", "2", "5"]) == 0
    out = capsys.readouterr().out
    assert "Recall@1" in out
    report = json.loads(out.strip().splitlines()[-1])
    recall = report["recall"]
    assert set(recall) == {"recall@1", "recall@2", "recall@5"}
    assert all(0.0 <= value <= 1.0 for value in recall.values())

    images = read_inshop(data)
    pipeline = get_pipeline(load_settings({"model_dir": bundle_dir, "device": "cpu"}))
    queries = [i for i in images if i.partition == "query"]
    gallery = [i for i in images if i.partition == "gallery"]
    assert report["queries"] == len(queries) and report["gallery"] == len(gallery)

    def vectors(items):
        results = pipeline.process([i.image_path.read_bytes() for i in items])
        return [r.vectors["full"] for r in results]

    q, g = vectors(queries), vectors(gallery)
    for k in (1, 2, 5):
        expected = brute_force_recall(
            q, [i.item_id for i in queries], g, [i.item_id for i in gallery], k
        )
        assert recall[f"recall@{k}"] == pytest.approx(expected)


def test_compare_needs_no_bundle_but_plain_evaluation_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path)])
    assert "--bundle is required" in capsys.readouterr().err
    assert main(["--compare", "--data", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "list_eval_partition.txt" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.ml
def test_compare_trains_both_recipes_with_one_budget_and_prints_one_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.ml.embedder import import_keras

    import_keras("torch")
    data = tmp_path / "inshop"
    synthetic.write_inshop(data, 10, size=64, seed=1)
    code = main(
        [
            "--compare",
            "--data",
            str(data),
            "--output",
            str(tmp_path / "cmp"),
            "--epochs",
            "1",
            "--train-batch-size",
            "8",
            "--input-size",
            "64",
            "--k",
            "1",
            "5",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    table, *reports = out.strip().split("\n{")
    assert "metric / article Recall@1" in table
    rows = [json.loads("{" + line) for line in reports]
    assert [r["recipe"] for r in rows] == ["untrained", "article", "metric"]
    assert len({r["model_version"] for r in rows}) == 3  # three different embedders
    assert len({r["queries"] for r in rows}) == 1  # scored on the same queries
    for name in ("article", "metric"):
        manifest = json.loads((tmp_path / "cmp" / name / "bundle" / "manifest.json").read_text())
        assert manifest["provenance"]["embedder"]["epochs"] == 1
        assert manifest["provenance"]["embedder"]["loss"] == name
