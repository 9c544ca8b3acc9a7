"""A local HTTP image server and job polling for the ingestion tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shared.vocabulary import FINISHED_JOB_STATUSES
from tests.support.waiting import wait_until


def wait_for_job(client: Any, job_id: str, timeout_s: float = 240.0) -> dict[str, Any]:
    """The job's document once it has finished (succeeded, partial or failed)."""
    last: dict[str, Any] = {}

    def finished() -> dict[str, Any] | None:
        response = client.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.get_json()
        last.update(response.get_json())
        return dict(last) if last["status"] in FINISHED_JOB_STATUSES else None

    return wait_until(
        finished, timeout_s, interval=0.5, message=lambda: f"job {job_id} to finish: {last}"
    )


class ImageServer:
    """A loopback HTTP server with named routes; ``gate`` lets a test hold a response."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.requests: list[str] = []
        self.hits = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.hits:
                    server.requests.append(self.path)
                    server.hits.notify_all()
                route = server.routes.get(self.path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add_bytes(self, path: str, data: bytes, gate: threading.Event | None = None) -> str:
        def route(handler: BaseHTTPRequestHandler) -> None:
            if gate is not None:
                gate.wait(120)
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

        self.routes[path] = route
        return self.base + path

    def add_redirect(self, path: str, location: str) -> str:
        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(302)
            handler.send_header("Location", location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        self.routes[path] = route
        return self.base + path

    def wait_for_request(self, path: str, timeout_s: float) -> bool:
        with self.hits:
            return self.hits.wait_for(lambda: path in self.requests, timeout_s)

    def start(self) -> ImageServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
