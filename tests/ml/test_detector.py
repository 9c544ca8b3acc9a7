"""The real Detectron2 model, random-initialised but configured as deployed, on synthetic photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.ml.bundle import BundleError
from shared.vocabulary import BOTTOM_IDS, TOP_IDS

pytestmark = pytest.mark.ml


@pytest.fixture(scope="module")
def detector(test_bundle):
    from shared.ml.detector import Detector

    # Threshold 0 so the random model's low-confidence boxes reach the grouping code.
    return Detector(
        test_bundle.detector_config,
        test_bundle.detector_weights,
        score_threshold=0.0,
        test_size=128,
        device="cpu",
        batch_size=4,
    )


def test_detections_come_back_per_image_in_image_coordinates(detector, catalogue_photos) -> None:
    photos = [*catalogue_photos[:3], np.ascontiguousarray(catalogue_photos[3][:120])]
    results = detector.detect(photos)
    assert len(results) == len(photos)
    # At threshold 0 the random model boxes something in every photo, and some box falls in a
    # group: without that the checks below would pass over empty arrays.
    assert all(len(found.scores) for found in results)
    assert any(found.best for found in results)
    for photo, found in zip(photos, results, strict=True):
        assert (found.height, found.width) == photo.shape[:2]
        n = len(found.scores)
        assert found.boxes.shape == (n, 4) and found.labels.shape == (n,)
        assert set(found.labels.tolist()) <= set(range(1, 14))
        for kind, ids in (("top", TOP_IDS), ("bottom", BOTTOM_IDS)):
            best = found.best.get(kind)
            group_scores = [
                s for s, lab in zip(found.scores, found.labels, strict=True) if lab in ids
            ]
            if not group_scores:
                assert best is None
                continue
            assert best is not None and best.label in ids
            assert best.score == pytest.approx(max(group_scores))
            x1, y1, x2, y2 = best.box
            assert 0 <= x1 < x2 <= found.width and 0 <= y1 < y2 <= found.height


def test_a_batch_gives_what_single_images_give(detector, catalogue_photos) -> None:
    together = detector.detect(catalogue_photos[:2])
    alone = [detector.detect([photo])[0] for photo in catalogue_photos[:2]]
    assert any(found.best for found in together), "nothing grouped: nothing to compare"
    for a, b in zip(together, alone, strict=True):
        assert a.best.keys() == b.best.keys()
        for kind in a.best:
            assert a.best[kind].label == b.best[kind].label
            np.testing.assert_allclose(a.best[kind].box, b.best[kind].box, atol=1e-2)


def test_the_deployed_threshold_filters_the_random_model(
    detector, test_bundle, catalogue_photos
) -> None:
    from shared.ml.detector import Detector

    deployed = Detector.from_bundle(test_bundle, "cpu")
    assert deployed.score_threshold == 0.55
    unfiltered = detector.detect(catalogue_photos[:2])
    # Something below the threshold must exist, or there is nothing for it to filter.
    assert any((found.scores < 0.55).any() for found in unfiltered)
    for kept, everything in zip(deployed.detect(catalogue_photos[:2]), unfiltered, strict=True):
        # Exactly the boxes scoring 0.55 or more survive (NMS among them is unchanged).
        assert len(kept.scores) == int((everything.scores >= 0.55).sum())
        assert (kept.scores >= 0.55).all()


def test_weights_for_another_model_are_refused(test_bundle, tmp_path: Path) -> None:
    import torch

    from shared.ml.detector import Detector

    state = torch.load(test_bundle.detector_weights, weights_only=True)["model"]
    state = {k: v for k, v in state.items() if not k.startswith("roi_heads.box_predictor")}
    wrong = tmp_path / "model_final.pth"
    torch.save({"model": state}, wrong)
    with pytest.raises(BundleError, match="do not match"):
        Detector(test_bundle.detector_config, wrong, device="cpu")


def test_write_bundle_checkpoints_load_with_detectron2s_checkpointer(test_bundle) -> None:
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    # torch.load's weights_only=True default must accept what write_bundle wrote
    # (docs/architecture.md#detectron2-install-and-patches).
    saved = torch.load(test_bundle.detector_weights, weights_only=True)
    assert set(saved) == {"model"}
    cfg = get_cfg()
    cfg.merge_from_file(str(test_bundle.detector_config))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(test_bundle.detector_weights))
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved["model"][name]), name


def test_write_bundle_flattens_base_configs_and_keeps_only_model_state(
    test_bundle, tmp_path: Path
) -> None:
    import torch
    import yaml
    from detectron2 import model_zoo

    base = model_zoo.get_config_file("Base-RCNN-FPN.yaml")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"_BASE_": base, "MODEL": {"ROI_HEADS": {"NUM_CLASSES": 13}}}))
    checkpoint = tmp_path / "model_final.pth"
    state = torch.load(test_bundle.detector_weights, weights_only=True)["model"]
    # What a training run leaves: model state plus trainer state we do not ship.
    torch.save({"model": state, "iteration": 99, "optimizer": {"state": {}}}, checkpoint)

    from training.bundle_writer import write_bundle

    bundle = write_bundle(
        tmp_path / "out",
        detector_config=config,
        detector_weights=checkpoint,
        embedder_weights=test_bundle.embedder_weights,
        input_size=96,
        provenance={"iterations": 99},
    )
    written = yaml.safe_load(bundle.detector_config.read_text())
    assert "_BASE_" not in written and written["MODEL"]["ROI_HEADS"]["NUM_CLASSES"] == 13
    assert set(torch.load(bundle.detector_weights, weights_only=True)) == {"model"}
    assert bundle.input_size == 96 and bundle.manifest["provenance"] == {"iterations": 99}

    config.write_text(yaml.safe_dump({"_BASE_": base}))
    with pytest.raises(BundleError, match="NUM_CLASSES is 80"):
        write_bundle(
            tmp_path / "bad",
            detector_config=config,
            detector_weights=checkpoint,
            embedder_weights="random",
        )
