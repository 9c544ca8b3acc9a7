"""The model bundle the demo's worker loads.

``MODEL_DIR`` set: the user's own bundle, used as it is. Otherwise a small demo bundle trained
once on synthetic data (in a child process, so this process never imports an ML framework) and
kept under ``var/demo/bundle``; later runs reuse it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from demo import recipe
from demo.environment import ROOT
from shared.config import Settings
from shared.ml.bundle import BundleError, load_bundle

DONE_MARKER = ".demo-bundle-complete"


def cached_bundle_ok(bundle_dir: Path) -> bool:
    """A finished demo bundle of the current recipe (another recipe's is trained again)."""
    marker = bundle_dir / DONE_MARKER
    if not marker.is_file() or marker.read_text(encoding="utf-8").strip() != recipe.fingerprint():
        return False
    try:
        load_bundle(Settings(model_dir=bundle_dir))
    except BundleError:
        return False
    return True


def check_user_bundle(model_dir: Path, settings: Settings) -> str:
    """Validate the user's bundle up front: a clear message now beats a failing worker later."""
    bundle = load_bundle(settings.replace(model_dir=model_dir))
    return f"{bundle.mode}, model_version {bundle.model_version}"


def train_demo_bundle(bundle_dir: Path, work_dir: Path, log_path: Path) -> None:
    """Run :mod:`demo.train_bundle` in a child process; its log goes to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "demo.train_bundle",
        "--out",
        str(bundle_dir),
        "--work",
        str(work_dir),
    ]
    started = time.monotonic()
    with log_path.open("wb") as log:
        # Its own stdout carries the short progress lines; detectron2's chatter goes to the log.
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log)
        for line in proc.stdout or ():
            print(f"   [{time.monotonic() - started:5.0f} s] {line.decode().rstrip()}", flush=True)
        code = proc.wait()
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(
            f"training the demo bundle failed (exit {code}); see {log_path}:\n{tail}"
        )
    (bundle_dir / DONE_MARKER).write_text(recipe.fingerprint() + "\n", encoding="utf-8")
