"""Remote-control commands every worker answers (Celery's broadcast, on its pidbox): drop a
retired version's matrices, and say which versions' matrices it holds.

A solo-pool worker answers between tasks, so a broadcast reaches a worker busy with a batch
when that batch ends; nothing is lost meanwhile (the version receives no more work).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.control import control_command

from workers.search.index import get_index

log = logging.getLogger(__name__)


def drop_matrices(version: str) -> int:
    """Forget every matrix (and the lists with it) of ``version``; how many were held."""
    index = get_index()
    with index.lock:
        keys = [key for key in index.matrices if key[0] == version]
        for key in keys:
            del index.matrices[key]
    return len(keys)


def held_matrices() -> dict[str, int]:
    """``<version>/<kind>`` -> rows, for every matrix this process holds."""
    index = get_index()
    with index.lock:
        return {f"{v}/{k}": int(m.n) for (v, k), m in index.matrices.items()}


@control_command(args=[("version", str)], signature="<version>")
def drop_version(state: Any, version: str) -> dict[str, Any]:  # noqa: ARG001
    dropped = drop_matrices(version)
    log.info("matrices dropped", extra={"model_version": version, "matrices": dropped})
    return {"ok": dropped}


@control_command()
def held_versions(state: Any) -> dict[str, Any]:  # noqa: ARG001
    return {"ok": held_matrices()}
