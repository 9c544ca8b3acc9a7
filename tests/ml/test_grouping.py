"""Which detections become the top and bottom crops (hand-made detections, no framework)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.ml.detector import best_per_group, one_garment_each
from shared.ml.preprocess import IMAGENET_MEAN_RGB, clip_box, crop, letterbox
from shared.vocabulary import (
    BOTTOM_IDS,
    CATEGORY_NAMES,
    DRESS_IDS,
    TOP_IDS,
    category_name,
    group_of,
)

W, H = 200, 300


def test_groups_follow_the_design() -> None:
    assert len(CATEGORY_NAMES) == 13
    assert TOP_IDS == (1, 2, 3, 4, 5, 6, 10, 11, 12, 13)
    assert BOTTOM_IDS == (7, 8, 9)
    assert [category_name(i) for i in DRESS_IDS] == [
        "short_sleeved_dress",
        "long_sleeved_dress",
        "vest_dress",
        "sling_dress",
    ]
    # The article left sling and sling dress out; we count them as tops.
    assert group_of(6) == "top" and group_of(13) == "top"
    assert [group_of(i) for i in (7, 8, 9)] == ["bottom"] * 3
    assert category_name(8) == "trousers"
    with pytest.raises(ValueError, match=r"outside 1\.\.13"):
        category_name(14)


def test_no_garment_found_gives_no_crops() -> None:
    assert best_per_group(np.zeros((0, 4)), [], [], W, H) == {}


def test_only_a_bottom_gives_only_a_bottom() -> None:
    best = best_per_group([(10, 150, 190, 290)], [8], [0.9], W, H)
    assert set(best) == {"bottom"}
    assert best["bottom"].label == 8 and best["bottom"].box == (10.0, 150.0, 190.0, 290.0)


def test_the_higher_scoring_top_wins_even_when_listed_second() -> None:
    boxes = [(0, 0, 100, 100), (20, 20, 180, 140), (10, 150, 190, 290)]
    best = best_per_group(boxes, [1, 11, 9], [0.7, 0.95, 0.6], W, H)
    assert best["top"].label == 11 and best["top"].score == pytest.approx(0.95)
    assert best["top"].box == (20.0, 20.0, 180.0, 140.0)
    assert best["bottom"].label == 9


def test_detections_below_the_threshold_are_ignored() -> None:
    best = best_per_group(
        [(0, 0, 50, 50), (0, 100, 50, 200)], [2, 7], [0.5, 0.56], W, H, score_threshold=0.55
    )
    assert set(best) == {"bottom"}


def test_boxes_outside_the_image_are_clipped() -> None:
    best = best_per_group([(-20.5, -10, 250, 120)], [2], [0.9], W, H)
    assert best["top"].box == (0.0, 0.0, float(W), 120.0)


def test_a_box_wholly_outside_does_not_hide_a_lower_scoring_one() -> None:
    best = best_per_group([(300, 10, 400, 50), (10, 10, 60, 60)], [1, 5], [0.99, 0.6], W, H)
    assert best["top"].label == 5


def test_a_skirt_read_inside_a_dress_is_the_dress() -> None:
    # A dress from shoulders to knees; the detector also reads its lower half as a skirt.
    dress, skirt = (40, 20, 160, 280), (45, 150, 155, 275)
    best = best_per_group([dress, skirt], [11, 9], [0.8, 0.9], W, H)
    assert set(best) == {"top"} and best["top"].label == 11


def test_a_top_read_off_the_waistband_of_shorts_is_the_shorts() -> None:
    shorts, sling = (30, 120, 170, 260), (40, 125, 160, 190)
    best = best_per_group([shorts, sling], [7, 6], [0.7, 0.9], W, H)
    assert set(best) == {"bottom"} and best["bottom"].label == 7


def test_a_top_read_over_whole_shorts_gives_way_to_the_surer_shorts() -> None:
    # No top but a dress holds a whole bottom: a vest box drawn round a pair of shorts is the
    # shorts read twice, and the surer reading stays.
    vest, shorts = (30, 40, 170, 260), (45, 70, 155, 235)
    best = best_per_group([vest, shorts], [5, 7], [0.45, 0.95], W, H)
    assert set(best) == {"bottom"} and best["bottom"].label == 7
    best = best_per_group([vest, shorts], [5, 7], [0.95, 0.45], W, H)
    assert set(best) == {"top"} and best["top"].label == 5


def test_a_real_outfit_keeps_both_garments() -> None:
    # A shirt over trousers overlaps at the waist, and a long coat leaves the legs below it.
    shirt, trousers = (30, 10, 170, 160), (40, 140, 160, 295)
    assert set(best_per_group([shirt, trousers], [1, 8], [0.9, 0.9], W, H)) == {"top", "bottom"}
    coat = (20, 10, 180, 200)
    assert set(best_per_group([coat, trousers], [4, 8], [0.9, 0.9], W, H)) == {"top", "bottom"}


def test_two_readings_of_one_box_keep_the_surer_one() -> None:
    box = (30, 30, 170, 270)
    best = one_garment_each(
        best_per_group([box], [11], [0.6], W, H) | best_per_group([box], [9], [0.7], W, H)
    )
    assert set(best) == {"bottom"}


def test_clip_and_crop_take_the_pixels_under_the_box() -> None:
    assert clip_box((-5, -5, 0.5, 10), W, H) is None
    image = np.arange(H * W * 3, dtype=np.uint32).reshape(H, W, 3).astype(np.uint8)
    piece = crop(image, (10.2, 20.0, 30.0, 60.7))
    assert piece.shape == (41, 20, 3)
    assert np.array_equal(piece, image[20:61, 10:30])


def test_letterbox_keeps_aspect_and_pads_with_the_mean_colour() -> None:
    tall = np.zeros((100, 50, 3), dtype=np.uint8)
    boxed = letterbox(tall, 64)
    assert boxed.shape == (64, 64, 3)
    # 50 wide scaled by 0.64 -> 32 columns of image, centred, 16 columns of pad each side.
    assert (boxed[:, 16:48] == 0).all()
    pad = np.round(IMAGENET_MEAN_RGB).astype(np.uint8)
    assert (boxed[:, :16] == pad).all() and (boxed[:, 48:] == pad).all()
