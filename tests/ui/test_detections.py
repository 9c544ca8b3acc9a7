"""The product page shows what the detector found: boxes over the photo (an SVG overlay in percent
of the photo, no inline style for the CSP to drop), and in the "tops/bottoms like this one" rows
the stored crop of each result that was matched. tests/ui/test_rendering.py looks at the same
in a browser."""

from __future__ import annotations

import re

import numpy as np
import pytest

from shared.models import Embedding, Item
from shared.vectors import encode

VERSION = "v-detections"
SLING_CROP = "cd" * 32


def _item(db_session, sku: str, width: int, height: int) -> Item:
    item = Item(sku=sku, status="ready", media_key="ab" * 32, width=width, height=height)
    db_session.add(item)
    db_session.flush()
    return item


def _vector(
    db_session,
    item: Item,
    kind: str,
    rng,
    box=None,
    label=None,
    score=None,
    version: str = VERSION,
    crop_key: str | None = None,
) -> None:
    db_session.add(
        Embedding(
            item_id=item.id,
            kind=kind,
            model_version=version,
            dim=2048,
            vector=encode(rng.normal(size=2048).astype(np.float32)),
            box=box,
            label=label,
            score=score,
            crop_key=crop_key,
        )
    )


@pytest.fixture
def catalogue(db_session, cache_redis, broker_redis) -> None:
    rng = np.random.default_rng(3)
    # SKU-A: a vest (label 5) over trousers (8) on a 200 x 400 photo.
    a = _item(db_session, "SKU-A", 200, 400)
    _vector(db_session, a, "full", rng)
    _vector(db_session, a, "top", rng, [20.0, 40.0, 180.0, 200.0], 5, 0.87)
    _vector(db_session, a, "bottom", rng, [50.0, 200.0, 150.0, 400.0], 8, 0.61)
    # An earlier bundle's box for SKU-A must not be drawn.
    _vector(db_session, a, "top", rng, [0.0, 0.0, 10.0, 10.0], 1, 0.99, version="v-old")
    # SKU-B: a sling (6) only; SKU-C: nothing detected.
    b = _item(db_session, "SKU-B", 300, 300)
    _vector(db_session, b, "full", rng)
    _vector(db_session, b, "top", rng, [30.0, 60.0, 270.0, 210.0], 6, 0.42, crop_key=SLING_CROP)
    c = _item(db_session, "SKU-C", 300, 300)
    _vector(db_session, c, "full", rng)
    db_session.commit()

    from workers.tasks.lists import fold_lists

    fold_lists("ui detections test")


def _boxes(html: str) -> dict[str, str]:
    """The SVG box outlines drawn over the photo: kind -> their x, y, width, height."""
    found = re.findall(
        r'<rect class="box box-(\w+)" data-kind="\1" (x="[^"]*" y="[^"]*" width="[^"]*"'
        r' height="[^"]*")',
        html,
    )
    return dict(found)


def test_product_page_draws_the_detected_boxes_with_category_and_score(client, catalogue) -> None:
    html = client.get("/items/SKU-A").get_data(as_text=True)

    assert _boxes(html) == {
        "top": 'x="10.000%" y="10.000%" width="80.000%" height="40.000%"',
        "bottom": 'x="25.000%" y="50.000%" width="50.000%" height="50.000%"',
    }
    labels = re.findall(
        r'<text class="box-label box-label-(\w+)" data-kind="\1" x="([^"]*)" y="([^"]*)"'
        r' dx="[^"]*" dy="([^"]*)" text-anchor="(\w+)">([^<]*)</text>',
        html,
    )
    # The vest's caption above its box (room there), the trousers' inside theirs (they reach
    # the photo's foot); both from the boxes' left edges, as both lie left of the middle.
    assert labels == [
        ("top", "10.000%", "10.000%", "-0.4em", "start", "top: vest 0.87"),
        ("bottom", "25.000%", "100.000%", "-0.5em", "start", "bottom: trousers 0.61"),
    ]
    assert "short sleeved shirt" not in html  # the old bundle's box
    assert not re.search(r"\sstyle\s*=", html)  # the CSP would drop it


def test_top_row_shows_each_results_matched_crop(client, catalogue) -> None:
    html = client.get("/items/SKU-A").get_data(as_text=True)
    top_row = html.split('data-kind="top"', 1)[1].split("</section>", 1)[0]

    # SKU-B's sling: the crop the worker stored, with its category and score.
    crop = re.search(r'<img class="crop" src="([^"]+)"[^>]*alt="([^"]+)"', top_row)
    assert crop is not None, top_row
    assert crop.groups() == (f"/media/{SLING_CROP}", "Matched top of product SKU-B: sling")
    assert "top: sling 0.42" in top_row


def test_a_result_without_a_stored_crop_shows_its_whole_photo(client, catalogue) -> None:
    # SKU-A's trousers were detected but no crop of them is stored (embedded before crops were).
    html = client.get("/items/SKU-B").get_data(as_text=True)
    bottom_row = html.split('data-kind="bottom"', 1)[1].split("</section>", 1)[0]
    top_row = html.split('data-kind="top"', 1)[1].split("</section>", 1)[0]

    assert 'alt="Product SKU-A"' in top_row and 'class="crop"' not in top_row
    assert "top: vest 0.87" in top_row
    assert "no bottom garment was detected" in bottom_row


def test_a_photo_without_detections_says_so_and_draws_no_box(client, catalogue) -> None:
    html = client.get("/items/SKU-C").get_data(as_text=True)
    assert 'class="box ' not in html
    assert "No top or bottom detected" in html
    # Its look-alikes still show, as whole photos.
    full_row = html.split('data-kind="full"', 1)[1].split("</section>", 1)[0]
    assert 'alt="Product SKU-A"' in full_row


def test_the_search_page_boxes_follow_the_workers_answer() -> None:
    from web.ui.detections import from_photo_search

    query = {
        "crops": {
            "top": {"box": [-5.0, 10.0, 100.0, 60.0], "label": 1, "score": 0.9},
            "bottom": {"box": [50.0, 300.0, 80.0, 400.0], "label": 8, "score": 0.4},
        },
        "width": 200,
        "height": 100,
    }
    found = from_photo_search(query)
    # The top is clipped to the photo; the bottom lies below it, so there is nothing to draw.
    assert list(found) == ["top"]
    top = found["top"]
    assert (top.left, top.top, top.width, top.height) == (0.0, 10.0, 50.0, 50.0)
    assert top.caption == "top: short sleeved shirt 0.90"
    # A worker that did not say the photo's size: no box can be placed.
    assert from_photo_search({**query, "width": None}) == {}
    assert from_photo_search(None) == {}
