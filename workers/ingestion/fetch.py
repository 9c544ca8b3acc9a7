"""Download an image by URL without becoming an SSRF proxy.

Each hop resolves the host once, refuses the request if any address it resolves to is not a
public unicast address (private, loopback, link-local such as the 169.254.169.254 metadata
service, multicast, reserved...), then connects to that very address (pinned: a second DNS
answer cannot swap it) while sending the original Host header and TLS server name. Redirects are
followed by hand so every hop is checked again. The body is streamed under a byte cap and a
wall-clock deadline.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from workers.ingestion.errors import SourceError

MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_USER_AGENT = "visrec-ingest/1.0"


@dataclass(frozen=True)
class FetchPolicy:
    timeout_s: float
    max_bytes: int
    allow_private: bool = False


def _fail(message: str) -> SourceError:
    return SourceError("fetch_failed", f"fetch_failed: {message}")


def _address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve_pinned(host: str, port: int, allow_private: bool) -> str:
    """The one address this hop will connect to, after checking every address the host has."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _fail(f"cannot resolve host {host!r}: {exc}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise _fail(f"host {host!r} has no address")
    if not allow_private:
        for address in addresses:
            if not _address_allowed(address):
                raise _fail(f"host {host!r} resolves to {address}, which is not a public address")
    return addresses[0]


def _pool(scheme: str, address: str, host: str, port: int, policy: FetchPolicy):
    timeout = urllib3.Timeout(connect=policy.timeout_s, read=policy.timeout_s)
    if scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            maxsize=1,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
        )
    return urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False, maxsize=1)


def _read_capped(response, policy: FetchPolicy, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        raise SourceError(
            "too_large", f"the URL declares {declared} bytes; the limit is {policy.max_bytes}"
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in response.stream(64 * 1024, decode_content=True):
        size += len(chunk)
        if size > policy.max_bytes:
            raise SourceError("too_large", f"the URL sent more than {policy.max_bytes} bytes")
        if time.monotonic() > deadline:
            raise _fail(f"download took longer than {policy.timeout_s:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


def fetch_url(url: str, policy: FetchPolicy) -> bytes:
    """The body of ``url`` (http/https only), or :class:`SourceError` saying why not."""
    deadline = time.monotonic() + policy.timeout_s
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        parts = urlsplit(current)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise _fail(f"only http and https URLs are fetched, not {scheme or 'none'!r}")
        host = parts.hostname
        if not host:
            raise _fail("the URL has no host")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise _fail("the URL has an invalid port") from None
        address = resolve_pinned(host, port, policy.allow_private)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = port == (443 if scheme == "https" else 80)
        host_header = host if default_port else f"{host}:{port}"
        if ":" in host and not default_port:
            host_header = f"[{host}]:{port}"
        pool = _pool(scheme, address, host, port, policy)
        try:
            response = pool.urlopen(
                "GET",
                target,
                headers={"Host": host_header, "User-Agent": _USER_AGENT, "Accept": "image/*"},
                redirect=False,
                preload_content=False,
                assert_same_host=False,
            )
            try:
                if response.status in _REDIRECTS and response.headers.get("Location"):
                    current = urljoin(current, response.headers["Location"])
                    continue
                if response.status != 200:
                    raise _fail(f"HTTP {response.status} from {host}")
                return _read_capped(response, policy, deadline)
            finally:
                response.release_conn()
        except Urllib3Error as exc:
            raise _fail(f"{type(exc).__name__}: {exc}") from None
        finally:
            pool.close()
    raise _fail(f"more than {MAX_REDIRECTS} redirects")
