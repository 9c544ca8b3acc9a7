"""The web tier never loads an ML framework: its image does not even contain one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shared.config import settings_to_env

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "torchvision", "tensorflow", "keras", "detectron2", "cv2")

# Runs in a fresh interpreter: the pytest process has long since imported everything.
PROBE = """
import importlib, json, pkgutil, sys
import web.wsgi  # what gunicorn loads: settings from the environment, logging, create_app
import web
for info in pkgutil.walk_packages(web.__path__, "web."):
    importlib.import_module(info.name)
client = web.wsgi.app.test_client()
statuses = {path: client.get(path).status_code
            for path in ("/healthz", "/readyz", "/metrics", "/api/v1/openapi.json")}
forbidden = sys.argv[1].split(",")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
print(json.dumps({"statuses": statuses, "loaded": loaded}))
"""


def test_web_app_serves_health_without_importing_ml_frameworks(settings):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(ROOT),
        **settings_to_env(settings),
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(FORBIDDEN)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["statuses"]["/healthz"] == 200
    assert report["statuses"]["/readyz"] in (200, 503), "readiness answers, whatever is down"
    assert report["loaded"] == [], f"web imported ML modules: {report['loaded'][:10]}"
