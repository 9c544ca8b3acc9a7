"""The UI in a real browser: catalogue grid -> product page with "You may also like" rows ->
search by an uploaded photo (embedded by a real Celery worker) -> screenshot.

Headless Debian Chromium driven by selenium. Items, vectors and media are written straight into
the test database; the neighbour lists are computed by the same fold task the workers run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shared.config import Settings, set_settings
from shared.vocabulary import DISPLAY_ORDER, VectorKind
from tests.support.browser import chromium
from tests.support.servers import serving

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

READY_SKUS = tuple(f"SKU{i:05d}" for i in range(1, 9))
PENDING_SKU = "PENDING-1"
WAIT_S = 30
# The first photo search loads the embedder in the worker: far slower than a warm query.
QUERY_TIMEOUT_S = 180.0


@pytest.fixture
def ui_settings(settings: Settings) -> Iterator[Settings]:
    """Whole-photo vectors from seeded random ResNet50 weights at 64 px: fast on a CPU."""
    changed = settings.replace(
        model_dir=None,
        embedder_weights="random",
        embedder_input_size=64,
        query_timeout_s=QUERY_TIMEOUT_S,
    )
    set_settings(changed)
    yield changed
    set_settings(settings)


@pytest.fixture
def catalogue(
    ui_settings: Settings, db_session, cache_redis, broker_redis, tmp_path: Path
) -> dict[str, str]:
    """Eight ready items with photos and top/bottom/full vectors, one pending item; cache built."""
    from shared.media import MediaStore
    from shared.ml.bundle import load_bundle
    from shared.models import Embedding, Item
    from shared.vectors import encode
    from training.synthetic import make_catalogue

    photos = tmp_path / "photos"
    make_catalogue(photos, count=len(READY_SKUS) + 1, seed=7, size=160)
    store = MediaStore(ui_settings.media_root)
    # The version a worker with these settings stamps on the query vector: the two must match.
    version = load_bundle(ui_settings).model_version
    rng = np.random.default_rng(0)
    for index, sku in enumerate((*READY_SKUS, PENDING_SKU), start=1):
        stored = store.put_bytes((photos / f"SKU{index:05d}.jpg").read_bytes())
        ready = sku != PENDING_SKU
        item = Item(
            sku=sku,
            media_key=stored.key,
            image_sha256=stored.sha256,
            byte_size=stored.size,
            width=160,
            height=160,
            status="ready" if ready else "pending",
        )
        db_session.add(item)
        db_session.flush()
        if ready:
            for kind in VectorKind:
                vector = rng.normal(size=2048).astype(np.float32)
                db_session.add(
                    Embedding(
                        item_id=item.id,
                        kind=kind,
                        model_version=version,
                        dim=2048,
                        vector=encode(vector),
                    )
                )
    db_session.commit()

    from workers.tasks.lists import fold_lists

    fold_lists("browser test")
    return {"query_photo": str(photos / "SKU00009.jpg"), "version": version}


@pytest.fixture
def live_server(make_app, ui_settings: Settings, catalogue: dict[str, str]) -> Iterator[str]:
    with serving(make_app(ui_settings)) as url:
        yield url


@pytest.fixture
def query_worker(ui_settings: Settings, worker_log: Path) -> Iterator[None]:
    from tests.support.worker import WorkerProcess

    worker = WorkerProcess(ui_settings, worker_log)
    worker.start()
    try:
        yield
    finally:
        worker.stop()


@pytest.fixture
def browser(tmp_path: Path):
    with chromium(tmp_path / "chromium-profile", 1280, 1600) as driver:
        yield driver


def _cards(driver, css: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def test_catalogue_says_which_model_serves_and_what_is_building(
    browser, live_server: str, catalogue: dict[str, str], db_session, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    from shared.versions import registry

    serving, next_version = catalogue["version"], "next-model-v2"
    registry.claim_serving_if_none(db_session, serving)
    registry.ensure_known(db_session, next_version)
    assert registry.track(db_session, next_version)
    db_session.commit()

    browser.get(f"{live_server}/")
    line = browser.find_element(By.CSS_SELECTOR, "p.model-versions")
    browser.save_screenshot(str(tmp_path / "catalogue-versions.png"))
    # Drawn where a person reads it, as one line of text above the grid, not clipped away.
    assert line.is_displayed()
    assert line.size["width"] >= 300 and line.size["height"] >= 10, line.size
    grid = browser.find_element(By.CSS_SELECTOR, "main ul.grid")
    assert line.location["y"] + line.size["height"] <= grid.location["y"]
    text = " ".join(line.text.split())
    assert f"Model version {serving} serves." in text
    assert f"Building {next_version}: 0 of {len(READY_SKUS)} products embedded." in text


def test_browse_product_and_search_by_photo(
    browser, live_server: str, query_worker: None, catalogue: dict[str, str], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)

    # The grid shows every ready item, each with a photo that loaded, and hides pending ones.
    browser.get(f"{live_server}/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Catalogue"
    cards = _cards(browser, "main ul.grid a.card")
    assert [c.find_element(By.CSS_SELECTOR, ".sku").text for c in cards] == list(READY_SKUS)
    assert PENDING_SKU not in browser.page_source
    first_photo = cards[0].find_element(By.TAG_NAME, "img")
    assert first_photo.get_attribute("alt") == f"Product {READY_SKUS[0]}"
    wait.until(
        lambda d: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", first_photo
        )
    )

    # A click opens the product page with its three "You may also like" rows.
    cards[2].click()
    wait.until(ec.url_contains(f"/items/{READY_SKUS[2]}"))
    assert browser.find_element(By.TAG_NAME, "h1").text == READY_SKUS[2]
    for kind in DISPLAY_ORDER:
        shown = [
            c.find_element(By.CSS_SELECTOR, ".sku").text
            for c in _cards(browser, f'section[data-kind="{kind}"] a.card')
        ]
        # Every other ready item, never the product itself.
        assert sorted(shown) == sorted(s for s in READY_SKUS if s != READY_SKUS[2]), kind
    browser.save_screenshot(str(tmp_path / "product.png"))

    # Keyboard: the search link is reachable and the form is labelled.
    browser.find_element(By.LINK_TEXT, "Search by photo").click()
    wait.until(ec.url_contains("/search"))
    field = browser.find_element(By.ID, "image")
    label = browser.find_element(By.CSS_SELECTOR, 'label[for="image"]')
    assert label.text
    field.send_keys(catalogue["query_photo"])
    browser.find_element(By.CSS_SELECTOR, "form.upload button[type=submit]").click()

    # The worker embeds the photo (whole photo only: this bundle has no detector).
    wait_query = WebDriverWait(browser, QUERY_TIMEOUT_S + 30)
    wait_query.until(ec.presence_of_element_located((By.ID, "results")))
    errors = _cards(browser, ".error")
    assert not errors, errors[0].text
    look_alikes = _cards(browser, 'section[data-kind="full"] a.card')
    assert len(look_alikes) == len(READY_SKUS)
    shot = tmp_path / "search.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # A result leads back to a product page.
    look_alikes[0].click()
    wait.until(ec.url_contains("/items/SKU"))
    assert (
        browser.find_element(By.CSS_SELECTOR, "img.photo")
        .get_attribute("alt")
        .startswith("Photo of product")
    )


def test_job_page_shows_progress(browser, live_server: str, db_session, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    from shared.models import Job, JobItem

    job = Job(status="partial", source="upload", total=3, done=2, failed=1)
    db_session.add(job)
    db_session.flush()
    db_session.add(
        JobItem(
            job_id=job.id,
            position=2,
            sku="BROKEN-1",
            status="failed",
            reason="undecodable",
            error="not an image",
        )
    )
    db_session.commit()

    browser.get(f"{live_server}/jobs/{job.id}")
    progress = browser.find_element(By.ID, "job-progress")
    assert progress.get_attribute("value") == "3"
    assert progress.get_attribute("max") == "3"
    summary = browser.find_element(By.ID, "job-summary").text
    assert summary.startswith("partial: 2 done, 1 failed")
    assert "BROKEN-1" in browser.find_element(By.TAG_NAME, "table").text
    browser.save_screenshot(str(tmp_path / "job.png"))
