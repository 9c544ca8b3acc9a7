"""The UI's pages without a browser: what a shopper sees when something is missing or wrong."""

from __future__ import annotations

import io

from shared.models import Item


def test_empty_catalogue_says_how_to_fill_it(client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert b"No products yet" in response.data
    assert b"visrec ingest" in response.data


def test_grid_pages_through_ready_items_only(client, db_session) -> None:
    for n in range(30):
        db_session.add(Item(sku=f"A{n:03d}", status="ready", media_key="0" * 64))
    db_session.add(Item(sku="A999-pending", status="pending"))
    db_session.commit()

    first = client.get("/").get_data(as_text=True)
    assert "30 products" in first
    assert "A000" in first and "A023" in first and "A024" not in first
    assert 'rel="next"' in first and "Page 1 of 2" in first
    second = client.get("/?page=2").get_data(as_text=True)
    assert "A024" in second and "A029" in second and "A999-pending" not in second
    # A page past the end shows the last page rather than an empty grid.
    assert "Page 2 of 2" in client.get("/?page=99").get_data(as_text=True)


def test_unknown_or_unready_product_is_an_html_404(client, db_session) -> None:
    db_session.add(Item(sku="PENDING1", status="pending"))
    db_session.commit()
    for sku in ("NOPE", "PENDING1"):
        response = client.get(f"/items/{sku}")
        assert response.status_code == 404
        assert response.mimetype == "text/html"
        assert f"no product {sku}".encode() in response.data


def test_search_without_a_photo_asks_for_one(client) -> None:
    response = client.post("/search", data={}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert b"Choose a photo" in response.data
    assert b'role="alert"' in response.data


def test_search_with_a_non_image_explains_the_refusal(client, cache_redis) -> None:
    response = client.post(
        "/search",
        data={"image": (io.BytesIO(b"this is not a photo"), "notes.txt")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert response.mimetype == "text/html"
    assert b'class="error"' in response.data


def test_unknown_job_is_an_html_404(client) -> None:
    response = client.get("/jobs/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert client.get("/jobs/not-a-uuid").status_code == 404


def test_ui_pages_stay_out_of_the_openapi_document(client) -> None:
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert not [
        p for p in paths if not p.startswith(("/api/", "/healthz", "/readyz", "/metrics", "/media"))
    ]


def test_every_page_sends_security_headers_its_markup_respects(client, db_session) -> None:
    import re

    db_session.add(Item(sku="H1", status="ready", media_key="0" * 64))
    db_session.commit()
    pages = ["/", "/items/H1", "/items/none", "/search", "/jobs/none", "/ui/static/ui.css"]
    for path in pages:
        response = client.get(path)
        assert response.status_code in (200, 404, 409), path  # 409: no vectors to match yet
        policy = response.headers.get("Content-Security-Policy", "")
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
        assert directives.get("frame-ancestors") == "'none'", (path, policy)
        assert directives.get("script-src") == "'self'", (path, policy)
        assert directives.get("default-src") == "'none'", (path, policy)
        assert response.headers.get("X-Frame-Options") == "DENY", path
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path
        if response.mimetype == "text/html":
            html = response.get_data(as_text=True)
            # Nothing inline that the policy would block in a browser.
            assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
            assert not re.search(r"\son[a-z]+\s*=|\sstyle\s*=", html), path
