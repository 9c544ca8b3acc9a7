"""Where bytes come from: URL downloads (SSRF guard, caps, redirects) and IMPORT_ROOT paths."""

from __future__ import annotations

import os
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.support.images import jpeg_bytes
from workers.ingestion.errors import SourceError
from workers.ingestion.fetch import FetchPolicy, address_allowed, fetch_url
from workers.ingestion.paths import read_import_path


def _policy(image_server, allow_private: bool = True, timeout_s: float = 5) -> FetchPolicy:
    # Only web ports are allowed by default; the loopback server's port is allowed explicitly.
    port = image_server.httpd.server_address[1]
    return FetchPolicy(
        timeout_s=timeout_s,
        max_bytes=100_000,
        allow_private=allow_private,
        allowed_ports=frozenset({80, 443, port}),
    )


@pytest.fixture
def OPEN(image_server) -> FetchPolicy:
    return _policy(image_server)


@pytest.fixture
def GUARDED(image_server) -> FetchPolicy:
    return _policy(image_server, allow_private=False)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "169.254.169.254",
        "10.1.2.3",
        "192.168.0.1",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104  (an address the fetcher must refuse)
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[fd00:ec2::254]",
        "localhost",
        # IPv6 forms that lead to a private IPv4 address: NAT64, 6to4, IPv4-compatible.
        "[64:ff9b::7f00:1]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b:1::a00:1]",
        "[2002:7f00:1::]",
        "[2002:c0a8:1::1]",
        "[::127.0.0.1]",
        "[::10.0.0.1]",
    ],
)
def test_private_loopback_link_local_and_metadata_addresses_are_refused(
    host, image_server, GUARDED
):
    port = image_server.httpd.server_address[1]
    image_server.add_bytes("/a.jpg", jpeg_bytes(1))
    with pytest.raises(SourceError) as caught:
        fetch_url(f"http://{host}:{port}/a.jpg", GUARDED)
    assert caught.value.reason == "fetch_failed"
    assert "not a public address" in caught.value.message
    assert image_server.requests == []  # refused before connecting


def test_a_loopback_server_is_reachable_when_private_addresses_are_allowed(image_server, OPEN):
    data = jpeg_bytes(2)
    url = image_server.add_bytes("/ok.jpg", data)
    assert fetch_url(url, OPEN) == data
    # By name too: the name is resolved once and the request goes to that address.
    assert fetch_url(url.replace("127.0.0.1", "localhost"), OPEN) == data


def test_redirects_are_followed_and_every_hop_is_checked_again(image_server, OPEN):
    data = jpeg_bytes(3)
    target = image_server.add_bytes("/final.jpg", data)
    assert fetch_url(image_server.add_redirect("/hop", target), OPEN) == data
    with pytest.raises(SourceError, match="only http and https"):
        fetch_url(image_server.add_redirect("/evil", "file:///etc/passwd"), OPEN)
    for i in range(7):
        image_server.add_redirect(f"/loop{i}", f"/loop{i + 1}")
    with pytest.raises(SourceError, match="redirects"):
        fetch_url(image_server.base + "/loop0", OPEN)


def test_downloads_are_capped_in_size_whether_declared_or_not(image_server, OPEN):
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


def test_http_errors_and_unreachable_hosts_fail_the_fetch(image_server, OPEN):
    with pytest.raises(SourceError, match="HTTP 404"):
        fetch_url(image_server.base + "/missing.jpg", OPEN)
    closed = FetchPolicy(5, 100_000, allow_private=True, allowed_ports=frozenset({9}))
    with pytest.raises(SourceError) as refused:
        fetch_url("http://127.0.0.1:9/closed.jpg", closed)
    assert refused.value.message == (
        "fetch_failed: the connection to 127.0.0.1 failed: connection refused"
    )
    with pytest.raises(SourceError, match="cannot resolve"):
        fetch_url("http://no-such-host.invalid/a.jpg", OPEN)


def test_public_ipv4_addresses_embedded_in_ipv6_stay_allowed():
    for address in ("64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8", "8.8.8.8"):
        assert address_allowed(address), address
    for address in ("64:ff9b::c0a8:101", "2002:a00:1::", "::169.254.169.254", "::1", "::"):
        assert not address_allowed(address), address


def test_only_web_ports_are_contacted_unless_configured(image_server):
    url = image_server.add_bytes("/a.jpg", jpeg_bytes(4))
    default = FetchPolicy(timeout_s=5, max_bytes=100_000, allow_private=True)
    with pytest.raises(SourceError) as caught:
        fetch_url(url, default)
    assert caught.value.reason == "fetch_failed"
    assert "port" in caught.value.message and "not allowed" in caught.value.message
    assert image_server.requests == []
    # A redirect cannot lead to another port either.
    hop = image_server.add_redirect("/hop", "http://127.0.0.1:6379/")
    with pytest.raises(SourceError, match="port 6379 is not allowed"):
        fetch_url(hop, _policy(image_server))


def _trickle(handler: BaseHTTPRequestHandler, in_headers: bool) -> None:
    # One byte every 0.3 s until the client goes away: each read sees data well within any
    # per-read timeout, so only a deadline on the whole fetch ends it.
    try:
        if in_headers:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        else:
            handler.send_response(200)
            handler.send_header("Content-Length", "50000")
            handler.end_headers()
        while True:
            handler.wfile.write(b"X-Slow: a\r\n"[:1] if in_headers else b"\xff")
            handler.wfile.flush()
            time.sleep(0.3)
    except OSError:
        return


@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_a_server_trickling_bytes_cannot_hold_the_fetch_past_its_timeout(image_server, in_headers):
    image_server.routes["/slow.jpg"] = lambda handler: _trickle(handler, in_headers)
    policy = _policy(image_server, timeout_s=1.5)
    outcome: dict[str, BaseException] = {}

    def fetch() -> None:
        try:
            fetch_url(image_server.base + "/slow.jpg", policy)
        except BaseException as exc:  # noqa: BLE001  (the main thread asserts on it)
            outcome["error"] = exc

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    # Generous: the fetch's own deadline is 1.5 s; a per-read timeout alone would never end it.
    thread.join(60)
    assert not thread.is_alive(), "the fetch was still running a minute later"
    error = outcome.get("error")
    assert isinstance(error, SourceError), error
    assert error.reason == "fetch_failed"
    assert "did not finish within 1.5 s" in error.message


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
        "escape.jpg": "not_found",
        "door/secret.jpg": "not_found",
        str(tmp_path / "secret.jpg"): "not_found",
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


def test_a_host_file_outside_the_root_reads_exactly_like_a_missing_one(tmp_path):
    root = tmp_path / "import"
    root.mkdir()
    (tmp_path / "exists.jpg").write_bytes(b"outside")
    (root / "link.jpg").symlink_to(tmp_path / "exists.jpg")
    verdicts = {}
    for raw in (
        str(tmp_path / "exists.jpg"),
        str(tmp_path / "missing.jpg"),
        "/etc/passwd",
        "/no/such/file",
        "link.jpg",
    ):
        with pytest.raises(SourceError) as caught:
            read_import_path(root, raw, 100)
        verdicts[raw] = (caught.value.reason, caught.value.message.replace(repr(raw), "<path>"))
    assert len(set(verdicts.values())) == 1, verdicts
    assert next(iter(verdicts.values()))[0] == "not_found"


def test_a_fifo_or_a_device_inside_the_root_is_refused_without_blocking(tmp_path):
    root = tmp_path / "import"
    root.mkdir()
    os.mkfifo(root / "pipe.jpg")
    (root / "link-to-pipe.jpg").symlink_to(root / "pipe.jpg")
    outcome: dict[str, object] = {}

    def read_all() -> None:
        for raw in ("pipe.jpg", "link-to-pipe.jpg"):
            try:
                read_import_path(root, raw, 100)
            except SourceError as exc:
                outcome[raw] = exc.reason
        # /dev as the import root: its character devices are inside it.
        try:
            read_import_path(Path("/dev"), "zero", 100)
        except SourceError as exc:
            outcome["zero"] = exc.reason

    thread = threading.Thread(target=read_all, daemon=True)
    thread.start()
    thread.join(30)  # nothing ever writes to the FIFO: a blocking open would never return
    assert not thread.is_alive(), "reading the FIFO blocked the worker"
    assert outcome == {
        "pipe.jpg": "path_rejected",
        "link-to-pipe.jpg": "path_rejected",
        "zero": "path_rejected",
    }
