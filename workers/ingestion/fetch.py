"""Download an image by URL without becoming an SSRF proxy.

Each hop resolves the host once, refuses the request if any address it resolves to is not a
public unicast address (private, loopback, link-local such as the 169.254.169.254 metadata
service, multicast, reserved..., and IPv6 forms that embed such an IPv4 address: mapped, NAT64,
6to4, IPv4-compatible), then connects to that very address (pinned: a second DNS answer cannot
swap it) while sending the original Host header and TLS server name. Only the allowed ports are
contacted. Redirects are followed by hand so every hop is checked again. The body is streamed
under a byte cap, and the whole fetch under one wall-clock deadline: a watchdog shuts the socket
down when it passes, so a server trickling bytes cannot hold the worker past it.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util.ssl_match_hostname import CertificateError

from workers.ingestion.errors import SourceError

if TYPE_CHECKING:
    from urllib3.response import HTTPResponse

MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_USER_AGENT = "visrec-ingest/1.0"
DEFAULT_PORTS = frozenset({80, 443})
# RFC 6052 well-known NAT64 prefix: the last 32 bits are the IPv4 address a NAT64 gateway reaches.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# RFC 8215 local-use NAT64: translated by a site's own gateway, so never a public destination.
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
# Deprecated IPv4-compatible addresses (::a.b.c.d), which some stacks still route as IPv4.
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


@dataclass(frozen=True)
class FetchPolicy:
    timeout_s: float
    max_bytes: int
    allow_private: bool = False
    allowed_ports: frozenset[int] = field(default=DEFAULT_PORTS)


def _fail(message: str) -> SourceError:
    return SourceError("fetch_failed", f"fetch_failed: {message}")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to, for the forms that embed one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_allowed(address: str) -> bool:
    """Whether ``address`` is a public unicast address, looking through embedded IPv4 forms."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        if ip.teredo is not None and not all(v4.is_global for v4 in ip.teredo):
            return False
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not ip.is_multicast


def _resolve(host: str, port: int, timeout_s: float) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order, each once."""
    # getaddrinfo cannot be interrupted and a slow resolver retries for many seconds: it runs in
    # a thread of its own so the fetch's deadline holds (the thread ends with the resolver).
    addresses: list[str] = []
    failed: list[BaseException] = []

    def resolve() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            failed.append(exc)
            return
        addresses.extend(dict.fromkeys(str(info[4][0]) for info in infos))

    thread = threading.Thread(target=resolve, name="fetch-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, timeout_s))
    if thread.is_alive():
        raise _fail(f"resolving host {host!r} took too long")
    if failed:
        raise _fail(f"cannot resolve host {host!r}")
    return addresses


def resolve_pinned(host: str, port: int, allow_private: bool, timeout_s: float = 15.0) -> str:
    """The one address this hop will connect to, after checking every address the host has."""
    addresses = _resolve(host, port, timeout_s)
    if not addresses:
        raise _fail(f"host {host!r} has no address")
    if not allow_private:
        for address in addresses:
            if not address_allowed(address):
                raise _fail(f"host {host!r} resolves to {address}, which is not a public address")
    return addresses[0]


class _Watchdog:
    """Shuts a connection's socket down at the deadline, waking any read blocked on it."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._sock is not None:
                try:
                    # socket.socket's own shutdown, not SSLSocket's: no TLS state is touched
                    # from this thread; the reader just sees the connection end.
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.fired and sock is not None:
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    @contextmanager
    def running(self) -> Iterator[_Watchdog]:
        self._timer.start()
        try:
            yield self
        finally:
            self._timer.cancel()


def _connection(
    scheme: str, address: str, host: str, port: int, remaining: float
) -> HTTPConnection:
    # Each socket operation gives up by the remaining budget; the watchdog bounds their sum.
    if scheme == "https":
        return HTTPSConnection(
            address,
            port,
            timeout=remaining,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
        )
    return HTTPConnection(address, port, timeout=remaining)


def _read_capped(response: HTTPResponse, policy: FetchPolicy, watchdog: _Watchdog) -> bytes:
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
        chunks.append(chunk)
    if watchdog.fired:
        # Without a Content-Length a body cut by the watchdog would look complete.
        raise _too_slow(policy)
    return b"".join(chunks)


def _too_slow(policy: FetchPolicy) -> SourceError:
    return _fail(f"the download did not finish within {policy.timeout_s:g} s")


def _describe(exc: BaseException) -> str:
    """A network failure in words: urllib3 and http.client messages quote Python objects."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    # Most specific first: urllib3 wraps a refused connection in a ConnectTimeoutError subclass.
    words: list[tuple[tuple[type[BaseException], ...], str]] = [
        ((CertificateError,), "its TLS certificate is not for this host"),
        ((ssl.SSLCertVerificationError,), "its TLS certificate could not be verified"),
        ((ssl.SSLError,), "the TLS handshake failed"),
        ((ConnectionRefusedError,), "connection refused"),
        ((ConnectionResetError,), "the server closed the connection"),
        ((TimeoutError, socket.timeout), "timed out"),
        ((http.client.HTTPException,), "the server did not answer with valid HTTP"),
        ((ConnectTimeoutError,), "timed out"),
    ]
    for kinds, text in words:
        if any(isinstance(e, kinds) for e in chain):
            return text
    for e in chain:
        if isinstance(e, OSError) and e.strerror:
            return e.strerror.lower()
    return "the connection was interrupted"


def _check_port(port: int, policy: FetchPolicy) -> None:
    if port not in policy.allowed_ports:
        allowed = ", ".join(str(p) for p in sorted(policy.allowed_ports))
        raise _fail(f"port {port} is not allowed (allowed: {allowed})")


def fetch_url(url: str, policy: FetchPolicy) -> bytes:
    """The body of ``url`` (http/https only), or :class:`SourceError` saying why not.

    The whole fetch (every redirect, connect, headers and body) ends by ``policy.timeout_s``.
    """
    watchdog = _Watchdog(time.monotonic() + policy.timeout_s)
    with watchdog.running():
        try:
            return _fetch(url, policy, watchdog)
        except SourceError:
            if watchdog.fired:
                raise _too_slow(policy) from None
            raise


def _fetch(url: str, policy: FetchPolicy, watchdog: _Watchdog) -> bytes:
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
        _check_port(port, policy)
        address = resolve_pinned(
            host, port, policy.allow_private, watchdog.deadline - time.monotonic()
        )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = port == (443 if scheme == "https" else 80)
        host_header = host if default_port else f"{host}:{port}"
        if ":" in host and not default_port:
            host_header = f"[{host}]:{port}"
        remaining = watchdog.deadline - time.monotonic()
        if remaining <= 0:
            raise _too_slow(policy)
        conn = _connection(scheme, address, host, port, remaining)
        try:
            conn.connect()
            watchdog.watch(conn.sock)
            conn.request(
                "GET",
                target,
                headers={"Host": host_header, "User-Agent": _USER_AGENT, "Accept": "image/*"},
                preload_content=False,
            )
            response = conn.getresponse()
            try:
                if response.status in _REDIRECTS and response.headers.get("Location"):
                    current = urljoin(current, response.headers["Location"])
                    continue
                if response.status != 200:
                    raise _fail(f"HTTP {response.status} from {host}")
                return _read_capped(response, policy, watchdog)
            finally:
                response.release_conn()
        except (Urllib3Error, http.client.HTTPException, CertificateError, OSError) as exc:
            if watchdog.fired:
                raise _too_slow(policy) from None
            raise _fail(f"the connection to {host} failed: {_describe(exc)}") from None
        finally:
            watchdog.watch(None)
            conn.close()
    raise _fail(f"more than {MAX_REDIRECTS} redirects")
