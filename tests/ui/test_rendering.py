"""What a shopper sees, as headless Chromium draws it under the pages' Content-Security-Policy:
on the product page and on the photo-search result page, the detected garments boxed over the
photo with their category and score, and in the result rows a picture on every card (the
matched garment's crop in the "tops/bottoms like this one" rows).

Items are written as a worker would: a synthetic outfit photo in the media store, its top and
bottom boxes on the embedding rows, and each box's crop stored as its own JPEG (``crop_key``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from shared.config import Settings, set_settings
from shared.vocabulary import CROP_KINDS, VectorKind, category_name
from tests.support.browser import chromium, csp_violations
from tests.support.servers import serving

pytestmark = [pytest.mark.browser]

SKUS = tuple(f"LOOK-{i}" for i in range(1, 7))
# Outfits drawn on a square, set on a taller photo: boxes must follow a photo that is not square.
OUTFIT_SIZE = 240
PHOTO_W, PHOTO_H = 240, 300
OUTFIT_TOP = 30
CROP_MAX_SIDE = 128
WINDOW_W, WINDOW_H = 1300, 1000
# Smaller than this on screen is not a picture a person can see.
MIN_PX = 24
WAIT_S = 30
# The first photo search loads the detector and the embedder in the worker.
QUERY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Garment:
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in photo pixels
    label: int
    score: float
    crop_key: str


@dataclass(frozen=True)
class Product:
    media_key: str
    garments: dict[str, Garment]


def _outfit_photo(index: int) -> tuple[Image.Image, dict[str, tuple[tuple[int, ...], int]]]:
    """A top over a bottom, and their boxes in the photo with their categories."""
    from training.synthetic import BOTTOM_CATEGORIES, plan_outfit, render, sample_rng

    rng = sample_rng("ui-rendering", 0, index)
    square, drawn = render(rng, OUTFIT_SIZE, plan_outfit(rng, OUTFIT_SIZE, weights=(1, 0, 0, 0)))
    photo = Image.new("RGB", (PHOTO_W, PHOTO_H), square.getpixel((0, 0)))
    photo.paste(square, (0, OUTFIT_TOP))
    boxes = {}
    for garment in drawn:
        kind = (
            VectorKind.BOTTOM if garment.spec.category_id in BOTTOM_CATEGORIES else VectorKind.TOP
        )
        x1, y1, x2, y2 = garment.bbox  # inclusive bounds
        boxes[kind] = ((x1, y1 + OUTFIT_TOP, x2 + 1, y2 + 1 + OUTFIT_TOP), garment.spec.category_id)
    return photo, boxes


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _write_catalogue(settings: Settings, db_session, version: str) -> dict[str, Product]:
    """Six ready outfits with top/bottom/full vectors of ``version``, boxes and stored crops;
    neighbour lists folded."""
    from shared.media import MediaStore
    from shared.models import Embedding, Item
    from shared.vectors import encode

    store = MediaStore(settings.media_root)
    rng = np.random.default_rng(5)
    products = {}
    for index, sku in enumerate(SKUS, start=1):
        photo, boxes = _outfit_photo(index)
        stored = store.put_bytes(_jpeg(photo))
        item = Item(
            sku=sku,
            media_key=stored.key,
            image_sha256=stored.sha256,
            byte_size=stored.size,
            width=PHOTO_W,
            height=PHOTO_H,
            status="ready",
        )
        db_session.add(item)
        db_session.flush()
        garments = {}
        for kind in VectorKind:
            row = Embedding(
                item_id=item.id,
                kind=kind,
                model_version=version,
                dim=2048,
                vector=encode(rng.normal(size=2048).astype(np.float32)),
            )
            if kind in boxes:
                box, label = boxes[kind]
                crop = photo.crop(box)
                crop.thumbnail((CROP_MAX_SIDE, CROP_MAX_SIDE))
                crop_key = store.put_bytes(_jpeg(crop)).key
                garment = Garment(box, label, round(0.95 - 0.05 * index, 2), crop_key)
                row.box = [float(v) for v in box]
                row.label, row.score, row.crop_key = label, garment.score, garment.crop_key
                garments[kind] = garment
            db_session.add(row)
        products[sku] = Product(stored.key, garments)
    db_session.commit()

    from workers.tasks.lists import fold_lists

    fold_lists("rendering test")
    return products


@dataclass(frozen=True)
class Rect:
    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def holds(self, other: Rect, slack: float = 1.0) -> bool:
        return (
            other.left >= self.left - slack
            and other.top >= self.top - slack
            and other.right <= self.right + slack
            and other.bottom <= self.bottom + slack
        )

    def distance(self, other: Rect) -> float:
        """How far apart the two rectangles' edges are, at most."""
        edges = zip(
            (self.left, self.top, self.right, self.bottom),
            (other.left, other.top, other.right, other.bottom),
            strict=True,
        )
        return max(abs(a - b) for a, b in edges)

    def __str__(self) -> str:
        return f"{self.width:.0f}x{self.height:.0f} at ({self.left:.0f}, {self.top:.0f})"


def _screenshot(driver, path: Path) -> None:
    """The whole page, as tall as it is, at the window's width."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WINDOW_W, max(WINDOW_H, int(height) + 140))
    driver.save_screenshot(str(path))
    driver.set_window_size(WINDOW_W, WINDOW_H)


def _rect(driver, element) -> Rect:
    found = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height];",
        element,
    )
    return Rect(*(float(v) for v in found))


def _load_every_image(driver) -> list[str]:
    """Scroll every picture into view, as a person reading the page would (cards load lazily),
    and wait for each to finish; the ones that did not load, said."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    images = driver.find_elements(By.TAG_NAME, "img")
    for image in images:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", image)
        # One that never finishes is reported below, with the others that did not load.
        with contextlib.suppress(TimeoutException):
            WebDriverWait(driver, WAIT_S).until(
                lambda d, img=image: d.execute_script("return arguments[0].complete", img)
            )
    driver.execute_script("window.scrollTo(0, 0)")
    problems = []
    for image in images:
        loaded = driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", image
        )
        what = image.get_attribute("alt") or image.get_attribute("src")[:60]
        if not loaded:
            problems.append(f"picture {what!r} did not load")
            continue
        drawn = _rect(driver, image)
        if drawn.width < MIN_PX or drawn.height < MIN_PX:
            problems.append(f"picture {what!r} is drawn at {drawn}")
    return problems


def _boxes_on_photo(
    driver, scope: str
) -> tuple[Rect, dict[str, Rect], dict[str, tuple[str, Rect]]]:
    """The photo in ``scope``, and the boxes and box captions drawn for it, by kind."""
    from selenium.webdriver.common.by import By

    photo = driver.find_element(By.CSS_SELECTOR, f"{scope} img.photo")
    boxes = {
        box.get_attribute("data-kind"): _rect(driver, box)
        for box in driver.find_elements(By.CSS_SELECTOR, f"{scope} .box[data-kind]")
    }
    labels = {}
    for label in driver.find_elements(By.CSS_SELECTOR, f"{scope} .box-label"):
        kind = label.get_attribute("data-kind") or label.find_element(
            By.XPATH, "./ancestor::*[@data-kind][1]"
        ).get_attribute("data-kind")
        labels[kind] = (label.get_attribute("textContent").strip(), _rect(driver, label))
    return _rect(driver, photo), boxes, labels


def _box_problems(
    photo: Rect, boxes: dict[str, Rect], labels: dict[str, tuple[str, Rect]]
) -> list[str]:
    problems = []
    for kind, box in boxes.items():
        if box.width < MIN_PX or box.height < MIN_PX:
            problems.append(f"the {kind} box is drawn at {box}")
        if not photo.holds(box):
            problems.append(f"the {kind} box ({box}) is not on the photo ({photo})")
    for kind, (text, drawn) in labels.items():
        if drawn.width < MIN_PX or drawn.height < 8:
            problems.append(f"the {kind} caption {text!r} is drawn at {drawn}")
        if not photo.holds(drawn):
            problems.append(f"the {kind} caption {text!r} ({drawn}) is off the photo ({photo})")
    return problems


def _card_problems(driver, expected: dict[str, dict[str, str]]) -> list[str]:
    """Every card of each row shows its picture: ``{kind: {sku: media URL ending}}``."""
    from selenium.webdriver.common.by import By

    problems = []
    for kind, pictures in expected.items():
        cards = driver.find_elements(By.CSS_SELECTOR, f'section[data-kind="{kind}"] a.card')
        shown = {card.find_element(By.CSS_SELECTOR, ".sku").text: card for card in cards}
        if set(shown) != set(pictures):
            problems.append(f"the {kind} row shows {sorted(shown)}, not {sorted(pictures)}")
        for sku, card in shown.items():
            images = card.find_elements(By.TAG_NAME, "img")
            if not images:
                problems.append(f"the {kind} card of {sku} has no picture")
                continue
            drawn = _rect(driver, images[0])
            if drawn.width < MIN_PX or drawn.height < MIN_PX:
                problems.append(f"the {kind} picture of {sku} is drawn at {drawn}")
            src = images[0].get_attribute("src") or ""
            if sku in pictures and not src.endswith(pictures[sku]):
                problems.append(f"the {kind} card of {sku} shows {src}, not {pictures[sku]}")
    return problems


def _expected_pictures(products: dict[str, Product], skus: set[str]) -> dict[str, dict[str, str]]:
    """The crop of the matched garment in the top and bottom rows, the photo among look-alikes."""
    rows: dict[str, dict[str, str]] = {
        kind: {sku: f"/media/{products[sku].garments[kind].crop_key}" for sku in skus}
        for kind in CROP_KINDS
    }
    rows[VectorKind.FULL] = {sku: f"/media/{products[sku].media_key}" for sku in skus}
    return rows


def _caption(garment: Garment, kind: str) -> str:
    return f"{kind}: {category_name(garment.label).replace('_', ' ')} {garment.score:.2f}"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "chromium-profile", WINDOW_W, WINDOW_H, watch_csp=True) as driver:
        yield driver


@pytest.fixture
def page_settings(settings: Settings) -> Iterator[Settings]:
    """No detector: the product page reads boxes from the database, not from a model."""
    changed = settings.replace(model_dir=None, embedder_weights="random", embedder_input_size=64)
    set_settings(changed)
    yield changed
    set_settings(settings)


def test_product_page_draws_the_boxes_on_the_photo_and_crops_in_the_rows(
    browser, make_app, page_settings: Settings, db_session, tmp_path: Path
) -> None:
    from shared.ml.bundle import load_bundle

    products = _write_catalogue(page_settings, db_session, load_bundle(page_settings).model_version)
    sku = SKUS[2]
    with serving(make_app(page_settings)) as url:
        browser.get(f"{url}/items/{sku}")
        problems = _load_every_image(browser)
        photo, boxes, labels = _boxes_on_photo(browser, "figure.detected")
        _screenshot(browser, tmp_path / "product.png")
        problems += _card_problems(browser, _expected_pictures(products, set(SKUS) - {sku}))
        problems += csp_violations(browser)

    garments = products[sku].garments
    assert set(boxes) == set(garments) == {"top", "bottom"}, problems
    problems += _box_problems(photo, boxes, labels)
    # The photo keeps its shape, and each box is where the garment was found on it.
    if abs(photo.height / photo.width - PHOTO_H / PHOTO_W) > 0.02:
        problems.append(f"the photo is drawn at {photo}, not {PHOTO_W}:{PHOTO_H}")
    scale = photo.width / PHOTO_W
    for kind, garment in garments.items():
        x1, y1, x2, y2 = garment.box
        drawn = boxes[kind]
        found = Rect(
            photo.left + x1 * scale, photo.top + y1 * scale, (x2 - x1) * scale, (y2 - y1) * scale
        )
        if drawn.distance(found) > 2:
            problems.append(f"the {kind} box is drawn at {drawn}, the garment is at {found}")
        if labels.get(kind, ("",))[0] != _caption(garment, kind):
            problems.append(
                f"the {kind} caption reads {labels.get(kind)}, not {_caption(garment, kind)!r}"
            )
    assert not problems, "What a shopper sees wrong:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def detector_bundle(tmp_path_factory: pytest.TempPathFactory):
    from tests.support.bundles import make_test_bundle

    return make_test_bundle(
        tmp_path_factory.mktemp("bundle"), detector=True, input_size=64, test_size=128, seed=0
    )


@pytest.fixture
def search_settings(settings: Settings, detector_bundle) -> Iterator[Settings]:
    """A worker with a detector: threshold 0, so the random detector's best top and bottom
    boxes are kept as a trained one's would be."""
    changed = settings.replace(
        model_dir=detector_bundle.root,
        embedder_weights=None,
        score_threshold=0.0,
        query_timeout_s=QUERY_TIMEOUT_S,
    )
    set_settings(changed)
    yield changed
    set_settings(settings)


@pytest.mark.e2e
@pytest.mark.ml
def test_photo_search_page_draws_the_detected_boxes_and_crops_of_the_results(
    browser, make_app, search_settings: Settings, db_session, worker_log: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from shared.ml.bundle import load_bundle
    from tests.support.worker import WorkerProcess

    products = _write_catalogue(
        search_settings, db_session, load_bundle(search_settings).model_version
    )
    query_photo = tmp_path / "query.jpg"
    query_photo.write_bytes(_jpeg(_outfit_photo(len(SKUS) + 1)[0]))
    worker = WorkerProcess(search_settings, worker_log)
    worker.start()
    try:
        with serving(make_app(search_settings)) as url:
            browser.get(f"{url}/search")
            browser.find_element(By.ID, "image").send_keys(str(query_photo))
            browser.find_element(By.CSS_SELECTOR, "form.upload button[type=submit]").click()
            WebDriverWait(browser, QUERY_TIMEOUT_S + 30).until(
                ec.presence_of_element_located((By.ID, "results"))
            )
            errors = browser.find_elements(By.CSS_SELECTOR, ".error")
            assert not errors, errors[0].text
            problems = _load_every_image(browser)
            photo, boxes, labels = _boxes_on_photo(browser, ".results")
            _screenshot(browser, tmp_path / "search.png")
            searched = {
                kind
                for kind in CROP_KINDS
                if browser.find_elements(By.CSS_SELECTOR, f'section[data-kind="{kind}"] a.card')
            }
            problems += _card_problems(browser, _expected_pictures(products, set(SKUS)))
            problems += csp_violations(browser)
    finally:
        worker.stop()

    # The worker searched with the top and the bottom it found: both are drawn on the photo.
    assert searched == {"top", "bottom"}, problems
    assert set(boxes) == searched, problems
    assert set(labels) == searched, problems
    problems += _box_problems(photo, boxes, labels)
    if abs(photo.height / photo.width - PHOTO_H / PHOTO_W) > 0.02:
        problems.append(f"the photo is drawn at {photo}, not {PHOTO_W}:{PHOTO_H}")
    assert not problems, "What a shopper sees wrong:\n" + "\n".join(problems)
