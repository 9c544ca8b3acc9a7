"""Training-time augmentation: the box follows the pixels through crop and mirror."""

from __future__ import annotations

import numpy as np

from training.train_embedder import AUGMENT_MIN_SCALE, _augment


def _photo_with_a_red_box(box: tuple[int, int, int, int]) -> np.ndarray:
    rgb = np.zeros((80, 120, 3), dtype=np.uint8)
    x1, y1, x2, y2 = box
    rgb[y1:y2, x1:x2, 0] = 255
    return rgb


def test_the_moved_box_still_frames_the_garment_and_crops_keep_most_of_the_photo() -> None:
    box = (30, 20, 70, 60)
    flipped = kept = 0
    for seed in range(40):
        out, (x1, y1, x2, y2) = _augment(
            _photo_with_a_red_box(box), box, np.random.default_rng(seed)
        )
        height, width = out.shape[:2]
        assert height >= int(80 * AUGMENT_MIN_SCALE) and width >= int(120 * AUGMENT_MIN_SCALE)
        red = out[..., 0] == 255
        ys, xs = np.nonzero(red)
        # Every red pixel left in the crop lies inside the moved box, and the box holds no black.
        assert xs.min() >= x1 - 1e-6 and xs.max() < x2 + 1e-6
        assert ys.min() >= y1 - 1e-6 and ys.max() < y2 + 1e-6
        assert red[int(y1) : int(y2), int(x1) : int(x2)].all()
        left_share = xs.mean() / width
        flipped += left_share > 0.5
        kept += 1
    # A coin flip mirrors some photos and not others (the garment sits left of centre).
    assert 0 < flipped < kept


def test_a_batch_keeps_unannotated_boxes_empty_and_moves_annotated_ones(tmp_path) -> None:
    from PIL import Image

    from training.train_embedder import EmbedderSample, load_batch

    path = tmp_path / "photo.png"
    Image.fromarray(_photo_with_a_red_box((30, 20, 70, 60))).save(path)
    samples = [
        EmbedderSample(path, label=3, bbox=None, group=0),
        EmbedderSample(path, label=3, bbox=(30, 20, 70, 60), group=1),
    ]
    for seed in range(5):
        rng = np.random.default_rng(seed)
        pixels, targets = load_batch(samples, 64, augment=True, rng=rng)
        assert pixels.shape == (2, 64, 64, 3)
        assert targets["bbox"][0].tolist() == [0.0, 0.0, 0.0, 0.0]
        x1, y1, x2, y2 = targets["bbox"][1]
        assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0
