"""POST /api/v1/jobs and GET /api/v1/jobs/<id>: validation, auth, atomicity (no worker runs)."""

from __future__ import annotations

import io
import json
import threading

import pytest
from sqlalchemy import func, select

from shared.media import MediaStore
from shared.models import Item, Job, JobItem
from shared.queueing import QUEUES
from tests.support.images import jpeg_bytes


def queue_lengths(broker_redis) -> dict[str, int]:
    return {q: broker_redis.llen(q) for q in QUEUES}


def row_counts(db_session) -> tuple[int, int, int]:
    db_session.rollback()
    return (
        db_session.scalar(select(func.count()).select_from(Job)),
        db_session.scalar(select(func.count()).select_from(JobItem)),
        db_session.scalar(select(func.count()).select_from(Item)),
    )


def upload(client, files, headers, **form):
    data = {"images": [(io.BytesIO(b), name) for name, b in files], **form}
    return client.post(
        "/api/v1/jobs", data=data, headers=headers, content_type="multipart/form-data"
    )


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, "unauthorized"), ({"Authorization": "Bearer wrong-key"}, "invalid_api_key")],
)
def test_without_a_valid_key_nothing_is_created_or_enqueued(
    client, db_session, broker_redis, headers, code
):
    response = upload(client, [("a.jpg", jpeg_bytes(1))], headers)
    assert response.status_code == 401
    assert response.get_json()["code"] == code
    json_response = client.post(
        "/api/v1/jobs",
        json={"items": [{"sku": "x", "url": "http://example.com/x.jpg"}]},
        headers=headers,
    )
    assert json_response.status_code == 401
    assert row_counts(db_session) == (0, 0, 0)
    assert queue_lengths(broker_redis) == dict.fromkeys(QUEUES, 0)


def test_multipart_upload_creates_a_queued_job_and_enqueues_it(
    client, auth_headers, db_session, broker_redis, settings
):
    image = jpeg_bytes(2)
    response = upload(
        client,
        [("shirts/blue-1.jpg", image), ("red-2.png", jpeg_bytes(3))],
        auth_headers,
        attributes=[json.dumps({"colour": "blue"}), json.dumps({"colour": "red"})],
    )
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "queued"
    assert response.headers["Location"] == body["status_url"] == f"/api/v1/jobs/{body['id']}"
    assert queue_lengths(broker_redis)["default"] == 1
    db_session.rollback()
    items = {i.sku: i for i in db_session.scalars(select(Item))}
    assert set(items) == {"blue-1", "red-2"}
    assert items["blue-1"].attributes == {"colour": "blue"}
    assert items["blue-1"].status == "pending"
    assert MediaStore(settings.media_root).read(items["blue-1"].media_key) == image

    job = client.get(body["status_url"]).get_json()
    assert (job["status"], job["total"], job["done"], job["failed"], job["pending"]) == (
        "queued",
        2,
        0,
        0,
        2,
    )
    assert job["progress"] == 0.0


def test_the_same_image_under_two_skus_is_stored_once(client, auth_headers, settings):
    image = jpeg_bytes(4)
    response = upload(client, [("a.jpg", image), ("b.jpg", image)], auth_headers)
    assert response.status_code == 202
    stored = [p for p in settings.media_root.rglob("*") if p.is_file()]
    assert len([p for p in stored if p.read_bytes() == image]) == 1


def test_sku_fields_override_file_names(client, auth_headers, db_session):
    response = upload(
        client, [("1.jpg", jpeg_bytes(5)), ("2.jpg", jpeg_bytes(6))], auth_headers, sku=["A", "B"]
    )
    assert response.status_code == 202
    db_session.rollback()
    assert sorted(db_session.scalars(select(Item.sku))) == ["A", "B"]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {"items": []}}, 422, "validation_error"),
        ({"json": {"nope": 1}}, 422, "validation_error"),
        ({"json": {"items": [{"sku": "a"}]}}, 422, "validation_error"),
        (
            {"json": {"items": [{"sku": "a", "url": "http://x.test/a", "path": "a.jpg"}]}},
            422,
            "validation_error",
        ),
        ({"json": {"items": [{"sku": "a", "url": "ftp://x.test/a.jpg"}]}}, 422, "validation_error"),
        # The same code as a repeated file name in multipart.
        (
            {"json": {"items": [{"sku": "a", "path": "a.jpg"}, {"sku": "a", "path": "b.jpg"}]}},
            422,
            "duplicate_sku",
        ),
        (
            {"json": {"items": [{"sku": " a", "path": "a.jpg"}, {"sku": "a ", "path": "b.jpg"}]}},
            422,
            "duplicate_sku",
        ),
        # Spaces alone are no SKU: normalised first, then refused (never stored as "").
        ({"json": {"items": [{"sku": "   ", "path": "a.jpg"}]}}, 422, "invalid_sku"),
        ({"data": "{not json", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "hello", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"data": {"sku": "x"}, "content_type": "multipart/form-data"}, 422, "validation_error"),
    ],
)
def test_invalid_requests_are_refused_whole(
    client, auth_headers, db_session, broker_redis, kwargs, status, code
):
    response = client.post("/api/v1/jobs", headers=auth_headers, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["code"] == code
    assert response.get_json()["message"]
    assert row_counts(db_session) == (0, 0, 0)
    assert queue_lengths(broker_redis) == dict.fromkeys(QUEUES, 0)


@pytest.mark.parametrize(
    ("files", "form", "code"),
    [
        ([("a.jpg", b"1"), ("a.png", b"2")], {}, "duplicate_sku"),
        ([("a.jpg", b"1"), ("b.jpg", b"2")], {"sku": ["only-one"]}, "sku_count_mismatch"),
        # A 'sku' part that is no SKU gets the code a file name that is none gets.
        ([("a.jpg", b"1")], {"sku": [""]}, "invalid_sku"),
        ([("a.jpg", b"1")], {"sku": ["  "]}, "invalid_sku"),
        ([("a.jpg", b"1")], {"sku": ["shirts/a"]}, "invalid_sku"),
        ([("a.jpg", b"1")], {"sku": ["x" * 256]}, "invalid_sku"),
        ([("tab\there.jpg", b"1")], {}, "invalid_sku"),
        ([("x" * 256 + ".jpg", b"1")], {}, "invalid_sku"),
    ],
)
def test_inconsistent_multipart_fields_are_refused(
    client, auth_headers, db_session, broker_redis, files, form, code
):
    response = upload(client, files, auth_headers, **form)
    assert response.status_code == 422
    assert response.get_json()["code"] == code
    assert row_counts(db_session) == (0, 0, 0)
    assert queue_lengths(broker_redis) == dict.fromkeys(QUEUES, 0)


@pytest.mark.parametrize("sku", ["shirts/a", "tab\there", "x" * 256])
def test_a_json_sku_that_could_not_be_addressed_is_refused(
    client, auth_headers, db_session, broker_redis, sku
):
    response = client.post(
        "/api/v1/jobs",
        json={"items": [{"sku": sku, "url": "http://example.com/a.jpg"}]},
        headers=auth_headers,
    )
    assert response.status_code == 422
    assert response.get_json()["code"] == "invalid_sku"
    assert "item #1" in response.get_json()["message"]
    assert "without '/'" in json.dumps(response.get_json()["details"]["json"]["items"]["0"])
    assert row_counts(db_session) == (0, 0, 0)
    assert queue_lengths(broker_redis) == dict.fromkeys(QUEUES, 0)


def test_an_oversized_body_is_refused_with_413(make_app, settings, auth_headers, db_session):
    client = make_app(settings.replace(max_request_bytes=10_000)).test_client()
    response = upload(client, [("big.jpg", b"\0" * 20_000)], auth_headers)
    assert response.status_code == 413
    assert response.get_json()["code"] == "payload_too_large"
    assert row_counts(db_session) == (0, 0, 0)


@pytest.mark.parametrize("job_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid", "1"])
def test_unknown_or_malformed_job_ids_answer_404_json(client, job_id):
    response = client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 404
    assert response.get_json()["code"] == "job_not_found"


def test_openapi_documents_the_ingestion_api(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    post = spec["paths"]["/api/v1/jobs"]["post"]
    content = post["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}
    assert "202" in post["responses"]
    assert "/api/v1/jobs/{job_id}" in spec["paths"]
    assert {"get", "delete"} <= set(spec["paths"]["/api/v1/items/{sku}"])
    assert "/media/{key}" in spec["paths"]


def _submit_together(app, auth_headers, bodies: list[dict]) -> list:
    barrier = threading.Barrier(len(bodies))
    responses: list = [None] * len(bodies)

    def submit(n: int) -> None:
        client = app.test_client()
        barrier.wait()
        responses[n] = client.post("/api/v1/jobs", json=bodies[n], headers=auth_headers)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return responses


def test_two_jobs_naming_the_same_items_in_reversed_orders_both_succeed(
    app, auth_headers, db_session, broker_redis
):
    skus = [f"shared-{i:04d}" for i in range(400)]
    for round_ in range(3):  # new rows in the first round, existing rows (upserts) after
        bodies = [
            {"items": [{"sku": s, "url": f"http://example.com/{round_}/{s}.jpg"} for s in order]}
            for order in (skus, list(reversed(skus)))
        ]
        responses = _submit_together(app, auth_headers, bodies)
        assert [r.status_code for r in responses] == [202, 202], [r.get_json() for r in responses]
    db_session.rollback()
    assert db_session.scalar(select(func.count()).select_from(Item)) == len(skus)
    assert db_session.scalar(select(func.count()).select_from(Job)) == 6
    # Positions are still the submitted order.
    job_id = responses[1].get_json()["id"]
    first = db_session.scalar(
        select(JobItem.sku).where(JobItem.job_id == job_id, JobItem.position == 0)
    )
    assert first == skus[-1]


def test_surrounding_spaces_are_trimmed_from_json_skus(client, auth_headers, db_session):
    body = {"items": [{"sku": "  SKU-1 ", "url": "http://example.com/1.jpg"}]}
    response = client.post("/api/v1/jobs", json=body, headers=auth_headers)
    assert response.status_code == 202, response.get_json()
    db_session.rollback()
    assert list(db_session.scalars(select(Item.sku))) == ["SKU-1"]


@pytest.mark.parametrize("page", [str(10**20), "10001", "0", "-1", "x"])
def test_an_out_of_range_page_is_refused_not_a_server_error(
    client, auth_headers, broker_redis, page
):
    body = {"items": [{"sku": "p", "url": "http://example.com/p.jpg"}]}
    job_id = client.post("/api/v1/jobs", json=body, headers=auth_headers).get_json()["id"]
    response = client.get(f"/api/v1/jobs/{job_id}?page={page}")
    assert response.status_code == 422
    assert response.get_json()["code"] == "validation_error"
    assert "page" in response.get_json()["details"]["query"]


def test_a_job_of_1001_files_is_accepted_as_the_schema_allows(
    client, auth_headers, db_session, broker_redis
):
    files = [(f"f{i:04d}.jpg", b"%d" % i) for i in range(1001)]
    response = upload(client, files, auth_headers)
    assert response.status_code == 202, response.get_json()
    job = client.get(response.get_json()["status_url"]).get_json()
    assert job["total"] == 1001
    assert row_counts(db_session) == (1, 1001, 1001)


class _GeneratedBody(io.RawIOBase):
    """A multipart body of one huge file, made up as it is read (never held in memory)."""

    def __init__(self, boundary: str, file_bytes: int) -> None:
        self.head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
            f'filename="huge.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        self.tail = f"\r\n--{boundary}--\r\n".encode()
        self.length = len(self.head) + file_bytes + len(self.tail)
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = base + offset
        return self.position

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.length - self.position)
        if n <= 0:
            return 0
        chunk = bytearray(b"\xff" * n)
        head_left = len(self.head) - self.position
        if head_left > 0:
            chunk[: min(n, head_left)] = self.head[self.position : self.position + n]
        tail_start = self.length - len(self.tail)
        if self.position + n > tail_start:
            start = max(self.position, tail_start)
            chunk[start - self.position :] = self.tail[
                start - tail_start : self.position + n - tail_start
            ]
        buffer[:n] = chunk
        self.position += n
        return n


def test_a_500_mb_upload_is_refused_while_it_streams_before_anything_is_stored(
    client, auth_headers, db_session, broker_redis, settings
):
    assert settings.max_request_bytes > 500 * 10**6 > settings.max_upload_bytes
    stored_before = {p for p in settings.media_root.rglob("*") if p.is_file()}
    body = _GeneratedBody("visrec-boundary", 500 * 10**6)
    response = client.post(
        "/api/v1/jobs",
        input_stream=body,
        content_length=body.length,
        content_type="multipart/form-data; boundary=visrec-boundary",
        headers=auth_headers,
    )
    assert response.status_code == 413
    assert response.get_json()["code"] == "payload_too_large"
    assert str(settings.max_upload_bytes) in response.get_json()["message"]
    # Refused a little past the per-file limit, not after reading 500 MB.
    assert body.position < 2 * settings.max_upload_bytes
    assert {p for p in settings.media_root.rglob("*") if p.is_file()} == stored_before
    assert row_counts(db_session) == (0, 0, 0)
    assert queue_lengths(broker_redis) == dict.fromkeys(QUEUES, 0)


def test_anonymous_item_reads_show_what_a_shop_page_needs_and_key_holders_see_the_rest(
    client, auth_headers, broker_redis
):
    signed = "https://cdn.example.com/p/1.jpg?X-Amz-Signature=s3cr3t&X-Amz-Credential=AKIA"
    body = {
        "items": [
            {"sku": "by-url", "url": signed, "attributes": {"brand": "acme"}},
            {"sku": "by-path", "path": "/srv/imports/shop/2.jpg"},
        ]
    }
    assert client.post("/api/v1/jobs", json=body, headers=auth_headers).status_code == 202
    for sku in ("by-url", "by-path"):
        anonymous = client.get(f"/api/v1/items/{sku}")
        assert anonymous.status_code == 200
        text = anonymous.get_data(as_text=True)
        assert "s3cr3t" not in text and "AKIA" not in text and "/srv/imports" not in text
        assert set(anonymous.get_json()) == {
            "sku", "status", "image_url", "width", "height", "attributes", "kinds"
        }  # fmt: skip
    assert client.get("/api/v1/items/by-url").get_json()["attributes"] == {"brand": "acme"}
    full = client.get("/api/v1/items/by-url", headers=auth_headers).get_json()
    assert full["source_url"] == signed
    by_path = client.get("/api/v1/items/by-path", headers=auth_headers).get_json()
    assert by_path["source_path"] == "/srv/imports/shop/2.jpg"
    wrong = client.get("/api/v1/items/by-url", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.get_json()["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("item", "code"),
    [
        (
            {"sku": "a", "path": "a.jpg", "attributes": {"note": "nul\u0000inside"}},
            "validation_error",
        ),
        ({"sku": "a", "path": "a.jpg", "attributes": {"k\u0000": 1}}, "validation_error"),
        (
            {"sku": "a", "path": "a.jpg", "attributes": {"deep": [{"x": "\ud800"}]}},
            "validation_error",
        ),
        ({"sku": "a", "path": "nul\u0000.jpg"}, "validation_error"),
        ({"sku": "\ud800", "path": "a.jpg"}, "invalid_sku"),
    ],
    ids=["nul-value", "nul-key", "lone-surrogate", "nul-path", "surrogate-sku"],
)
def test_text_the_database_cannot_store_is_refused_not_a_server_error(
    client, auth_headers, db_session, broker_redis, item, code
):
    # Sent as raw JSON: \u0000 and lone \ud800 escapes are valid JSON but not storable text.
    body = json.dumps({"items": [item]})
    response = client.post(
        "/api/v1/jobs", data=body, content_type="application/json", headers=auth_headers
    )
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["code"] == code
    assert row_counts(db_session) == (0, 0, 0)


def test_multipart_attributes_the_database_cannot_store_are_refused(
    client, auth_headers, db_session, broker_redis
):
    response = upload(
        client, [("a.jpg", b"1")], auth_headers, attributes=['{"note": "nul\\u0000"}']
    )
    assert response.status_code == 422, response.get_json()
    assert row_counts(db_session) == (0, 0, 0)
