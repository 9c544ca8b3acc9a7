"""A web process serves product pages without holding vector matrices or importing the
workers' search code: its memory does not grow with the catalogue."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from shared.config import settings_to_env
from tests.recommendations.helpers import add_catalogue, expected
from tests.support.worker import ROOT

# In its own interpreter: serve every item's recommendations, then report what is in memory.
_PROBE = r"""
import json, sys, tracemalloc
tracemalloc.start()  # numpy reports its buffers to tracemalloc too
from shared.config import load_settings
from web import create_app

client = create_app(load_settings()).test_client()
skus = json.loads(sys.argv[1])
answers = {}
for sku in skus:
    response = client.get(f"/api/v1/items/{sku}/recommendations?k=5")
    assert response.status_code == 200, response.json
    results = response.json["results"]
    answers[sku] = {kind: [h["sku"] for h in hits] for kind, hits in results.items()}
if len(sys.argv) > 2:  # the probe's own check: a planted matrix must be seen
    planted = __import__("numpy").zeros((1500, 256), dtype="float32")
# numpy's array buffers are traced in their own domain (NPY_TRACE_DOMAIN).
buffers = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, 389047)])
largest = max((trace.size for trace in buffers.traces), default=0)
frameworks = ("torch", "tensorflow", "keras", "detectron2", "cv2")
print(json.dumps({
    "answers": answers,
    "largest_block_bytes": int(largest),
    "worker_modules": sorted(m for m in sys.modules if m.startswith("workers")),
    "ml_modules": sorted(m for m in frameworks if m in sys.modules),
}))
"""


@pytest.mark.slow
def test_a_web_process_answers_from_lists_without_matrices(
    settings, db_session, cache_redis, broker_redis, fold
):
    n, dim = 1500, 256  # each kind's matrix would be 1.5 MB
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2, n, dim)).astype(np.float32)
    add_catalogue(
        db_session, {f"s{i:04d}": {"full": vectors[0, i], "top": vectors[1, i]} for i in range(n)}
    )
    fold()
    skus = [f"s{i:04d}" for i in range(0, n, 50)]
    env = {**os.environ, **settings_to_env(settings), "PYTHONPATH": str(ROOT)}

    def probe(*extra: str) -> dict:
        run = subprocess.run(
            [sys.executable, "-c", _PROBE, json.dumps(skus), *extra],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        return json.loads(run.stdout.strip().splitlines()[-1])

    report = probe()
    for sku in skus:
        for kind in ("full", "top"):
            assert report["answers"][sku][kind] == [
                s for s, _ in expected(db_session, sku, kind, 5)
            ]
    # No array alive comes near a matrix (one kind: 1.5 MB); one item's list is 1.9 KB.
    assert report["largest_block_bytes"] < 64 * 1024
    assert report["worker_modules"] == [] and report["ml_modules"] == []
    assert probe("plant")["largest_block_bytes"] >= 1500 * 256 * 4  # the probe sees matrices
