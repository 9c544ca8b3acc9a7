"""Every command README.md shows works from a checkout without an activated virtualenv.

The commands are read from the README itself: its ``sh`` blocks and the inline code that starts
with ``make``, ``python``, ``honcho``, ``celery``, ``visrec`` or ``.venv/bin/``. Each is run as
far as it can go here: ``make web`` until ``/healthz`` answers, ``make worker`` and ``make beat``
until their processes say they are running, every Python entry point to its ``--help``, and the
other make targets as a dry run whose Python entry points answer ``--help``. Commands for a
deployed stack (``curl``, ``docker compose``) are out of reach and listed as such. A README
command of any other kind fails the first test, so the README and this test stay in step.

The children get the environment a new user's shell has: no ``VIRTUAL_ENV``, no ``.venv/bin``
on PATH, no PYTHONPATH, and none of the service's settings but the test's own (its migrated
database, its Redis databases).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from demo.process_tree import SessionProcess
from shared.config import Settings, settings_to_env

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VENV_BIN = ROOT / ".venv" / "bin"
BOOT_TIMEOUT_S = 120.0  # a loaded 2-core machine boots gunicorn or Celery in 5-60 s

# Make targets started for real; every other documented target is checked as a dry run.
LIVE_TARGETS = {"web", "worker", "beat"}
# Commands for a deployed stack or the host, not entry points of the checkout.
OUT_OF_REACH = {"curl", "docker", "cp", "mkdir"}
COMMAND_START = re.compile(
    r"^(?:(?:make|python3?|honcho|celery|gunicorn|visrec)(?:\s|$)|\.venv/bin/)"
)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


@dataclass(frozen=True)
class Documented:
    command: str
    kind: str  # "make", "module", "visrec", "out of reach" or "unknown"
    target: str  # the make target, the module, the visrec subcommand or the program


def _shell_lines(text: str) -> Iterator[str]:
    """Commands of the README's sh blocks, continuations joined and comments dropped."""
    for block in re.findall(r"^```(?:sh|bash|shell|console)\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                yield line


def _inline_commands(text: str) -> Iterator[str]:
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        words = [w for w in span.split() if not ASSIGNMENT.match(w)]
        if words and COMMAND_START.match(words[0]):
            yield span


def classify(command: str) -> Documented:
    words = [w for w in shlex.split(command) if not ASSIGNMENT.match(w)]
    if not words:
        return Documented(command, "assignment", "")
    program = words[0]
    if program == "make" and len(words) == 2:
        return Documented(command, "make", words[1])
    if program == ".venv/bin/python" and len(words) > 2 and words[1] == "-m":
        return Documented(command, "module", words[2])
    if program == ".venv/bin/visrec":
        return Documented(command, "visrec", words[1] if len(words) > 1 else "")
    if program in OUT_OF_REACH:
        return Documented(command, "out of reach", program)
    return Documented(command, "unknown", program)


def documented() -> list[Documented]:
    text = README.read_text()
    commands = [*_shell_lines(text), *_inline_commands(text)]
    found = [classify(c) for c in dict.fromkeys(commands)]
    return [d for d in found if d.kind != "assignment"]


def _by_kind(kind: str) -> list[str]:
    return sorted({d.target for d in documented() if d.kind == kind})


# An activated venv's variables, and make's own when the suite runs under `make test`.
_NOT_IN_A_NEW_SHELL = {
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "MAKEOVERRIDES",
}


def shell_env(**extra: str) -> dict[str, str]:
    """A new user's shell: the venv not activated, no service settings of the caller's."""
    setting_names = {f.name.upper() for f in fields(Settings)}
    venv_bin = os.path.realpath(VENV_BIN)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in setting_names and k not in _NOT_IN_A_NEW_SHELL
    }
    env["PATH"] = os.pathsep.join(
        p
        for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if os.path.realpath(p) != venv_bin
    )
    return {**env, **extra}


def run(argv: list[str], timeout_s: float = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        cwd=ROOT,
        env=shell_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_every_readme_command_is_one_this_test_runs():
    found = documented()
    unknown = [d.command for d in found if d.kind == "unknown"]
    assert not unknown, (
        f"README shows {unknown}: this test does not know how to run them. A Python entry point "
        "is written `.venv/bin/python -m ...` (bare python, honcho or celery need the venv "
        "activated), the client `.venv/bin/visrec ...`, a service `make <target>`."
    )
    kinds = {d.kind for d in found}
    assert {"make", "module", "visrec"} <= kinds, found
    assert {d.target for d in found if d.kind == "make"} >= LIVE_TARGETS
    assert "ingest" in {d.target for d in found if d.kind == "visrec"}


def test_the_readme_reader_finds_what_it_must_refuse():
    # The checks below are only as good as the classifier's refusals.
    for bare in ("python -m training.evaluate --help", "honcho start web", "visrec ingest d"):
        assert classify(bare).kind == "unknown", bare
    assert list(_inline_commands("a `python-svc` b `celery -A x worker` c")) == [
        "celery -A x worker"
    ]
    assert classify("MODEL_DIR=models/v1 make demo") == Documented(
        "MODEL_DIR=models/v1 make demo", "make", "demo"
    )


@pytest.mark.parametrize("module", _by_kind("module"))
def test_documented_python_entry_point_answers_help(module):
    result = run([str(VENV_BIN / "python"), "-m", module, "--help"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage:" in result.stdout


@pytest.mark.parametrize("subcommand", sorted({"", *_by_kind("visrec")}), ids=lambda s: s or "-")
def test_the_visrec_command_answers_help(subcommand):
    result = run([str(VENV_BIN / "visrec"), *subcommand.split(), "--help"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"usage: visrec {subcommand}".rstrip())


@pytest.mark.parametrize("target", sorted(set(_by_kind("make")) - LIVE_TARGETS))
def test_documented_make_target_resolves_and_its_python_entry_points_answer_help(target):
    dry = run(["make", "-n", target], timeout_s=60)
    assert dry.returncode == 0, dry.stderr
    modules = re.findall(r"^\S*\.venv/bin/python -m ([\w.]+)", dry.stdout, re.M)
    for module in modules:
        result = run([str(VENV_BIN / "python"), "-m", module, "--help"])
        assert result.returncode == 0, f"make {target}: {module} --help\n{result.stderr[-3000:]}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  (our own http:// URL)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


@pytest.fixture
def service_settings(settings: Settings, clean_db, cache_redis, broker_redis) -> Settings:
    # No model build at worker start: booting is what is checked here, not ingestion.
    return settings.replace(preload_models=False)


def _make(target: str, settings: Settings, tmp_path: Path, **env: str) -> SessionProcess:
    if (ROOT / ".env").exists():
        pytest.skip("honcho would read this checkout's .env over the test's settings")
    # `-o install`: make install ran before the suite (make test); run again here it would
    # rewrite the shared virtualenv under the running tests whenever its stamp is stale.
    return SessionProcess(
        ["make", "-o", "install", target],
        ROOT,
        shell_env(**{**settings_to_env(settings), **env}),
        tmp_path / f"make-{target}.log",
    )


def test_make_web_answers_health_and_the_visrec_command_reaches_it(service_settings, tmp_path):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with _make("web", service_settings, tmp_path, PORT=str(port)) as web:
        web.wait_until(lambda: _get(f"{base}/healthz")[0] == 200, "/healthz 200", BOOT_TIMEOUT_S)
        status, body = _get(f"{base}/readyz")
        assert status in (200, 503), body
        assert json.loads(body)["checks"]["database"]["ok"] is True, "the test's database"
        result = run([str(VENV_BIN / "visrec"), "similar", "NO-SUCH-SKU", "--api", base])
    assert result.returncode == 2
    assert "404 item_not_found" in result.stderr


@pytest.mark.e2e
def test_make_worker_starts_the_ingest_and_the_query_worker(service_settings, tmp_path):
    with _make("worker", service_settings, tmp_path) as worker:
        worker.wait_until(
            lambda: len(re.findall(r"\b(worker|query)@\S+ ready\.", worker.log())) == 2,
            "'ready.' from both workers",
            BOOT_TIMEOUT_S,
        )
        queues = worker.log()
    assert re.search(r"\.> ingest\s", queues) and re.search(r"\.> query\s", queues), queues


@pytest.mark.e2e
def test_make_beat_starts_the_scheduler(service_settings, tmp_path):
    schedule = tmp_path / "celerybeat-schedule"
    with _make("beat", service_settings, tmp_path, BEAT_SCHEDULE_FILE=str(schedule)) as beat:
        beat.wait_until(lambda: "beat: Starting..." in beat.log(), "beat: Starting", 90)
