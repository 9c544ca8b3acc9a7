"""The web process's command: the one source for the Procfile's ``web`` and the web image's CMD.

Both run ``python -m web.serve``, which replaces itself with gunicorn serving ``web.wsgi:app``,
so the two cannot drift apart again. Process settings: PORT (Settings.port), WEB_CONCURRENCY and
WEB_THREADS (gunicorn workers and threads per worker), OPENBLAS_NUM_THREADS.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from shared.config import load_settings


def command(environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment the web process runs with, for ``environ``."""
    env = dict(environ)
    # Every request thread runs its own NumPy search; one BLAS thread each keeps WEB_THREADS
    # threads from each starting a BLAS thread per core and fighting over the same cores.
    if not env.get("OPENBLAS_NUM_THREADS"):
        env["OPENBLAS_NUM_THREADS"] = "1"
    port = load_settings(environ=env).port
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"0.0.0.0:{port}",
        "--workers",
        env.get("WEB_CONCURRENCY") or "2",
        "--threads",
        env.get("WEB_THREADS") or "4",
        "--access-logfile",
        "-",
        "web.wsgi:app",
    ]
    return argv, env


def main() -> None:
    argv, env = command(os.environ)
    os.execve(argv[0], argv, env)  # noqa: S606  (exec replaces this process: argv is ours)


if __name__ == "__main__":
    main()
