"""The model bundle the demo's worker loads.

``MODEL_DIR`` set: the user's own bundle, used as it is. Otherwise a small demo bundle trained
once on synthetic data (in a child process, so this process never imports an ML framework) and
kept under ``var/demo/bundle``; later runs reuse it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from demo import recipe
from demo.environment import ROOT
from demo.progress import Relay
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
    """Run :mod:`demo.train_bundle` in a child process, its whole output in ``log_path``."""
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
    print(f"   full training log: {log_path}", flush=True)
    code = run_reporting_progress(command, env, log_path)
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(
            f"training the demo bundle failed (exit {code}); see {log_path}:\n{tail}"
        )
    (bundle_dir / DONE_MARKER).write_text(recipe.fingerprint() + "\n", encoding="utf-8")


def run_reporting_progress(command: Sequence[str], env: Mapping[str, str], log_path: Path) -> int:
    """Run ``command --progress-fd N`` with its stdout and stderr in ``log_path`` (a fresh file);
    what it reports on N (:mod:`demo.progress` lines) is drawn on stdout. Its exit status.

    So the console gets a line per step and a bar (or, when stdout is not a terminal, a few
    status lines) per long step, however much the child's libraries print.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    relay = Relay()
    with log_path.open("wb") as log, os.fdopen(read_fd, encoding="utf-8", errors="replace") as pipe:
        try:
            proc = subprocess.Popen(
                [*command, "--progress-fd", str(write_fd)],
                cwd=ROOT,
                env=dict(env),
                stdout=log,
                stderr=log,
                pass_fds=(write_fd,),
            )
        finally:
            # Only the child holds the write end now: the pipe ends when the child does.
            os.close(write_fd)
        try:
            for line in pipe:
                relay.feed(line)
            return proc.wait()
        except BaseException:
            # Ctrl-C reaches the child too, a SIGTERM to the demo does not: never leave it running.
            proc.kill()
            proc.wait()
            raise
        finally:
            relay.close()
