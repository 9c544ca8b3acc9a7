"""Where bytes come from: URL downloads (SSRF guard, caps, redirects) and IMPORT_ROOT paths."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import pytest

from tests.ingestion.helpers import jpeg_bytes
from workers.ingestion.errors import SourceError
from workers.ingestion.fetch import FetchPolicy, fetch_url
from workers.ingestion.paths import read_import_path

OPEN = FetchPolicy(timeout_s=5, max_bytes=100_000, allow_private=True)
GUARDED = FetchPolicy(timeout_s=5, max_bytes=100_000, allow_private=False)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "169.254.169.254",
        "10.1.2.3",
        "192.168.0.1",
        "100.64.0.1",
        "0.0.0.0",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[fd00:ec2::254]",
        "localhost",
    ],
)
def test_private_loopback_link_local_and_metadata_addresses_are_refused(host, image_server):
    port = image_server.httpd.server_address[1]
    image_server.add_bytes("/a.jpg", jpeg_bytes(1))
    with pytest.raises(SourceError) as caught:
        fetch_url(f"http://{host}:{port}/a.jpg", GUARDED)
    assert caught.value.reason == "fetch_failed"
    assert "not a public address" in caught.value.message
    assert image_server.requests == []  # refused before connecting


def test_a_loopback_server_is_reachable_when_private_addresses_are_allowed(image_server):
    data = jpeg_bytes(2)
    url = image_server.add_bytes("/ok.jpg", data)
    assert fetch_url(url, OPEN) == data
    # By name too: the name is resolved once and the request goes to that address.
    assert fetch_url(url.replace("127.0.0.1", "localhost"), OPEN) == data


def test_redirects_are_followed_and_every_hop_is_checked_again(image_server):
    data = jpeg_bytes(3)
    target = image_server.add_bytes("/final.jpg", data)
    assert fetch_url(image_server.add_redirect("/hop", target), OPEN) == data
    with pytest.raises(SourceError, match="only http and https"):
        fetch_url(image_server.add_redirect("/evil", "file:///etc/passwd"), OPEN)
    for i in range(7):
        image_server.add_redirect(f"/loop{i}", f"/loop{i + 1}")
    with pytest.raises(SourceError, match="redirects"):
        fetch_url(image_server.base + "/loop0", OPEN)


def test_downloads_are_capped_in_size_whether_declared_or_not(image_server):
    big = b"\xff" * 200_000
    with pytest.raises(SourceError) as declared:
        fetch_url(image_server.add_bytes("/big.jpg", big), OPEN)
    assert declared.value.reason == "too_large"

    def undeclared(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()  # no Content-Length: the body ends when the connection closes
        handler.wfile.write(big)

    image_server.routes["/stream.jpg"] = undeclared
    with pytest.raises(SourceError) as streamed:
        fetch_url(image_server.base + "/stream.jpg", OPEN)
    assert streamed.value.reason == "too_large"


def test_http_errors_and_unreachable_hosts_fail_the_fetch(image_server):
    with pytest.raises(SourceError, match="HTTP 404"):
        fetch_url(image_server.base + "/missing.jpg", OPEN)
    with pytest.raises(SourceError, match="fetch_failed"):
        fetch_url("http://127.0.0.1:9/closed.jpg", OPEN)
    with pytest.raises(SourceError, match="cannot resolve"):
        fetch_url("http://no-such-host.invalid/a.jpg", OPEN)


def test_import_paths_stay_inside_the_import_root(tmp_path):
    root = tmp_path / "import"
    (root / "shop").mkdir(parents=True)
    (root / "shop" / "a.jpg").write_bytes(b"inside")
    (tmp_path / "secret.jpg").write_bytes(b"outside")
    (root / "escape.jpg").symlink_to(tmp_path / "secret.jpg")
    (root / "door").symlink_to(tmp_path)
    (root / "inner.jpg").symlink_to(root / "shop" / "a.jpg")

    assert read_import_path(root, "shop/a.jpg", 100) == b"inside"
    assert read_import_path(root, str(root / "shop" / "a.jpg"), 100) == b"inside"
    assert read_import_path(root, "inner.jpg", 100) == b"inside"  # a symlink within is fine
    refused = {
        "../secret.jpg": "path_rejected",
        "shop/../../secret.jpg": "path_rejected",
        "escape.jpg": "path_rejected",
        "door/secret.jpg": "path_rejected",
        str(tmp_path / "secret.jpg"): "path_rejected",
        "shop": "path_rejected",
        "nothing.jpg": "not_found",
    }
    for raw, reason in refused.items():
        with pytest.raises(SourceError) as caught:
            read_import_path(root, raw, 100)
        assert caught.value.reason == reason, raw
    with pytest.raises(SourceError) as too_big:
        read_import_path(root, "shop/a.jpg", 3)
    assert too_big.value.reason == "too_large"
    with pytest.raises(SourceError, match="IMPORT_ROOT is not set"):
        read_import_path(None, "shop/a.jpg", 100)
