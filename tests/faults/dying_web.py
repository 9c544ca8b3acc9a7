"""The web app in a process that SIGKILLs itself at a chosen point of ``POST /api/v1/jobs``.

Test support only: ``python -m tests.faults.dying_web after-send|after-commit`` with the settings
in the environment; prints its port once it serves. The hook wraps the app from outside, so the
production code carries no test switch.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from flask import Response, request
from werkzeug.serving import make_server

import web.services.ingestion as ingestion
from shared.config import load_settings
from web import create_app


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(point: str) -> None:
    app = create_app(load_settings())
    if point == "after-send":
        real = ingestion.celery_client

        class SendThenDie:
            def send_task(self, *args: Any, **kwargs: Any) -> None:
                real().send_task(*args, **kwargs)
                _die()

        ingestion.celery_client = SendThenDie
    elif point == "after-commit":

        @app.after_request
        def _die_before_answering(response: Response) -> Response:
            if request.method == "POST" and request.path == "/api/v1/jobs":
                _die()
            return response

    else:
        raise SystemExit(f"unknown point {point!r}")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
