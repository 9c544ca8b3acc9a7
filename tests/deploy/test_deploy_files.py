"""The deployment files, checked without a Docker engine (none runs on CI machines).

Two layers: Debian's docker-compose v1.29 validates docker-compose.yml against the Compose
Specification schema and interpolates it (`config`), and our own checks assert the invariants the
design depends on: contract variable names, the GPU worker's solo pool, a web image without ML
frameworks, COPY sources that exist, commands that name real modules, no committed secrets.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import Settings, load_settings
from shared.queueing import QUEUES
from tests.deploy import dockerfiles

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
WEB_DOCKERFILE = ROOT / "docker" / "web.Dockerfile"
WORKER_DOCKERFILE = ROOT / "docker" / "worker.Dockerfile"

# docs/architecture.md#configuration-contract
CONTRACT_VARS = {
    "DATABASE_URL",
    "REDIS_BROKER_URL",
    "REDIS_CACHE_URL",
    "MEDIA_ROOT",
    "IMPORT_ROOT",
    "MODEL_DIR",
    "EMBEDDER_WEIGHTS",
    "API_KEYS",
    "PORT",
}
SETTINGS_VARS = {f.name.upper() for f in dataclasses.fields(Settings)}
# Read by the web command (web/serve.py), not by Settings.
GUNICORN_VARS = {"WEB_CONCURRENCY", "WEB_THREADS", "OPENBLAS_NUM_THREADS"}
APP_SERVICES = ("migrate", "web", "worker", "query-worker", "lists-worker", "beat")
WORKERS = ("worker", "query-worker", "lists-worker")
GPU_WORKERS = ("worker", "query-worker")  # the lists worker loads no model
SECRETS = ("API_KEYS", "POSTGRES_PASSWORD")
ML_PACKAGE_PREFIXES = (
    "torch",
    "tensorflow",
    "tf-",
    "keras",
    "tf-keras",
    "detectron2",
    "pb1-detectron2",
    "opencv",
    "jax",
)
FIRST_PARTY = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()} | {"migrations"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _words(command: Any) -> list[str]:
    return [str(w) for w in command] if isinstance(command, list) else str(command).split()


def _with_defaults(text: str) -> str:
    """``${VAR:-default}`` -> ``default``: what compose resolves when VAR is unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def _stages(path: Path) -> list[dockerfiles.Stage]:
    return dockerfiles.parse_dockerfile(path.read_text())


def _requirement_names(path: Path) -> set[str]:
    """Normalised distribution names in a requirements file, following `-r` includes."""
    names: set[str] = set()
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            names |= _requirement_names(path.parent / line.split(maxsplit=1)[1])
            continue
        if line.startswith("-"):
            continue  # constraints (-c), a lock's --hash lines: no requirement named
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        assert match, f"{path}: cannot read requirement {line!r}"
        names.add(re.sub(r"[-_.]+", "-", match.group(0)).lower())
    return names


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
    return names


def _first_party_imports(package_dir: Path) -> dict[str, set[str]]:
    """First-party top-level packages imported anywhere (lazily too) under ``package_dir``."""
    found: dict[str, set[str]] = {}
    for path in package_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in FIRST_PARTY:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


# --- docker-compose.yml: schema validation with docker-compose v1.29 -----------------------------

COMPOSE_BIN = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(
    COMPOSE_BIN is None,
    reason="docker-compose missing (scripts/install_test_tools.sh installs it as root)",
)


def _compose_config(tmp_path: Path, text: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # A copy in an empty folder: a developer's own .env must not change what is validated.
    (tmp_path / "docker-compose.yml").write_text(text)
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env}
    assert COMPOSE_BIN is not None
    return subprocess.run(
        [COMPOSE_BIN, "-f", "docker-compose.yml", "config"],
        cwd=tmp_path,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


SECRET_ENV = {"API_KEYS": "key-one,key-two", "POSTGRES_PASSWORD": "pw-for-validation"}


@needs_compose
def test_compose_file_is_valid_compose_spec_and_resolves_to_working_settings(tmp_path):
    result = _compose_config(tmp_path, COMPOSE.read_text(), SECRET_ENV)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]

    # What each app container will see parses into Settings the way the app reads it.
    for name in ("web", *WORKERS, "beat"):
        env = {k: str(v) for k, v in resolved[name]["environment"].items() if v is not None}
        settings = load_settings(environ=env)
        assert (
            settings.database_url
            == "postgresql+psycopg://visrec:pw-for-validation@postgres:5432/visrec"
        )
        assert settings.redis_broker_url.startswith("redis://redis-broker:")
        assert settings.redis_cache_url.startswith("redis://redis-cache:")
        assert str(settings.media_root) == "/data/media"
        assert str(settings.model_dir) == "/models"
        # Unset unless the operator sets it: the bundle's embedder weights then apply.
        assert settings.embedder_weights is None
    web = load_settings(
        environ={k: str(v) for k, v in resolved["web"]["environment"].items() if v is not None}
    )
    assert web.api_keys == ("key-one", "key-two")
    assert web.port == 8000
    assert resolved["web"]["ports"][0]["published"] == 8000
    assert resolved["web"]["ports"][0]["target"] == 8000


@needs_compose
@pytest.mark.parametrize("secret", SECRETS)
def test_compose_refuses_to_start_without_each_secret(tmp_path, secret):
    env = {k: v for k, v in SECRET_ENV.items() if k != secret}
    result = _compose_config(tmp_path, COMPOSE.read_text(), env)
    assert result.returncode != 0
    assert f"set {secret}" in result.stderr


@needs_compose
@pytest.mark.parametrize(
    ("original", "broken", "complaint"),
    [
        ("capabilities: [gpu]", "capabilities: gpu", "should be an array"),
        ("condition: service_completed_successfully", "condition: service_done", "service_done"),
        ("      migrate:\n        condition:", "      migrat:\n        condition:", "migrat"),
    ],
)
def test_compose_validation_rejects_broken_files(tmp_path, original, broken, complaint):
    # The validator above is only worth trusting if it fails on the mistakes we could make.
    text = COMPOSE.read_text()
    assert original in text
    result = _compose_config(tmp_path, text.replace(original, broken, 1), SECRET_ENV)
    assert result.returncode != 0
    assert complaint in result.stderr


# --- docker-compose.yml: invariants ------------------------------------------------------------


def test_compose_uses_the_compose_specification_without_version():
    assert "version" not in _compose()


def test_app_services_use_only_real_setting_names_and_every_contract_name():
    services = _services()
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert isinstance(env, dict), f"{name}: environment as a mapping"
        unknown = set(env) - SETTINGS_VARS - GUNICORN_VARS
        assert not unknown, f"{name}: {sorted(unknown)} are not Settings fields (typo?)"
    needed = CONTRACT_VARS - {"API_KEYS", "PORT"}
    for name in ("web", *WORKERS):
        missing = needed - set(services[name]["environment"])
        assert not missing, f"{name} lacks {sorted(missing)}"
    assert {"API_KEYS", "PORT"} <= set(services["web"]["environment"])
    for name in APP_SERVICES:
        url = services[name]["environment"]["DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://"), f"{name}: psycopg 3 driver in DATABASE_URL"


def test_no_secret_has_a_literal_or_default_value():
    text = COMPOSE.read_text()
    for secret in SECRETS:
        uses = re.findall(rf"\$\{{{secret}([^}}]*)\}}", text)
        assert uses, f"{secret} is never read from the environment"
        for modifier in uses:
            assert modifier.startswith(":?"), (
                f"${{{secret}{modifier}}} must be required, no default"
            )
        literal = re.findall(rf"^\s*-?\s*{secret}\s*[:=]\s*(?!\$\{{{secret}:\?)\S", text, re.M)
        assert not literal, f"{secret} is given a literal value in docker-compose.yml"
    example = (ROOT / ".env.example").read_text()
    for secret in SECRETS:
        assert re.search(rf"^{secret}=$", example, re.M), f".env.example leaves {secret} empty"
    assert ".env" in dockerfiles.read_dockerignore(ROOT / ".dockerignore")


def test_every_depends_on_target_exists_and_waits_for_the_right_state():
    services = _services()
    for name, service in services.items():
        for target in service.get("depends_on", {}):
            assert target in services, f"{name} depends on undefined service {target}"
    conditions = {
        name: {t: d["condition"] for t, d in services[name]["depends_on"].items()}
        for name in ("migrate", "web", *WORKERS)
    }
    assert conditions["migrate"]["postgres"] == "service_healthy"
    for name in ("web", *WORKERS):
        assert conditions[name]["migrate"] == "service_completed_successfully"
        assert conditions[name]["redis-broker"] == "service_healthy"
        assert conditions[name]["redis-cache"] == "service_healthy"
        for target in conditions[name]:
            if conditions[name][target] == "service_healthy":
                assert "healthcheck" in services[target], f"{target} needs a healthcheck"


def test_one_beat_sends_the_upkeep_tasks_to_the_workers_queues():
    services = _services()
    beat = services["beat"]
    words = _words(beat["command"])
    assert words[:4] == ["celery", "-A", "workers.celery_app", "beat"]
    assert words[words.index("--schedule") + 1].startswith("/tmp/"), "a writable schedule file"
    assert beat["image"] == services["worker"]["image"], "the image that holds workers/"
    assert beat["build"] == services["worker"]["build"]
    assert "deploy" not in beat, "beat loads no model: no GPU"
    assert beat["depends_on"]["redis-broker"]["condition"] == "service_healthy"
    assert beat["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert (
        beat["environment"]["REDIS_BROKER_URL"]
        == services["worker"]["environment"]["REDIS_BROKER_URL"]
    )
    # What beat sends runs on queues the two worker processes consume.
    from workers.schedule import beat_schedule

    consumed = set()
    for name in WORKERS:
        words = _words(services[name]["command"])
        consumed |= set(words[words.index("-Q") + 1].split(","))
    for entry in beat_schedule(load_settings(environ={})).values():
        assert entry["options"]["queue"] in consumed
    recovery = {
        "SWEEP_INTERVAL_S",
        "STALL_AFTER_S",
        "STALL_MAX_REQUEUES",
        "ITEM_MAX_DELIVERIES",
        "MEDIA_SWEEP_INTERVAL_S",
        "MEDIA_GRACE_S",
    }
    for name in (*WORKERS, "beat"):
        assert recovery <= set(services[name]["environment"]), name


def test_postgres_and_both_redis_servers_play_their_roles():
    services = _services()
    assert services["postgres"]["image"] == "postgres:16"
    assert "pg_isready" in " ".join(_words(services["postgres"]["healthcheck"]["test"]))
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])

    broker = _words(services["redis-broker"]["command"])
    assert broker[broker.index("--appendonly") + 1] == "yes"
    assert broker[broker.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(v.endswith(":/data") for v in services["redis-broker"]["volumes"])

    cache = _words(services["redis-cache"]["command"])
    assert cache[cache.index("--save") + 1] == ""
    assert cache[cache.index("--appendonly") + 1] == "no"
    assert cache[cache.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert "--maxmemory" in cache
    assert "volumes" not in services["redis-cache"], "the cache may be flushed: no volume"
    env = services["web"]["environment"]
    assert env["REDIS_BROKER_URL"].split("//")[1].split(":")[0] == "redis-broker"
    assert env["REDIS_CACHE_URL"].split("//")[1].split(":")[0] == "redis-cache"


def test_three_workers_run_solo_and_between_them_consume_every_queue_once():
    services = _services()
    consumed: list[str] = []
    names = set()
    for name in WORKERS:
        worker = services[name]
        if name in GPU_WORKERS:
            devices = worker["deploy"]["resources"]["reservations"]["devices"]
            assert any(
                d["driver"] == "nvidia"
                and "gpu" in d["capabilities"]
                and d.get("count") in (1, "all")
                for d in devices
            )
            assert worker["environment"]["KERAS_BACKEND"] == "torch"
        words = _words(worker["command"])
        assert words[:4] == ["celery", "-A", "workers.celery_app", "worker"]
        assert words[words.index("--pool") + 1] == "solo"
        assert words[words.index("--concurrency") + 1] == "1"
        assert words[words.index("--prefetch-multiplier") + 1] == "1"
        consumed += words[words.index("-Q") + 1].split(",")
        names.add(words[words.index("-n") + 1])
        assert worker["build"]["dockerfile"] == "docker/worker.Dockerfile"
    assert sorted(consumed) == sorted(QUEUES)
    assert len(names) == 3, "distinct node names"
    # Photo searches never wait behind a batch or a fold: query has a process of its own.
    query = _words(services["query-worker"]["command"])
    assert query[query.index("-Q") + 1].split(",") == ["query"]
    lists = _words(services["lists-worker"]["command"])
    assert lists[lists.index("-Q") + 1].split(",") == ["lists"]
    assert "deploy" not in services["lists-worker"], "no GPU: it loads no model"


def test_migrate_web_and_flower_are_wired_as_designed():
    services = _services()
    migrate, web, flower = services["migrate"], services["web"], services["flower"]
    assert _words(migrate["command"])[-3:] == ["alembic", "upgrade", "head"]
    assert migrate["restart"] == "no"
    assert web["build"]["dockerfile"] == "docker/web.Dockerfile"
    assert migrate["build"]["dockerfile"] in {"docker/web.Dockerfile", "docker/worker.Dockerfile"}
    assert "/healthz" in " ".join(_words(web["healthcheck"]["test"]))
    assert "${PORT" in web["environment"]["PORT"]
    assert "celery" in _words(flower["command"]) and "flower" in _words(flower["command"])
    broker = next(w for w in _words(flower["command"]) if w.startswith("--broker="))
    assert broker.split("=", 1)[1] == web["environment"]["REDIS_BROKER_URL"]
    assert all(str(p).startswith("127.0.0.1:") for p in flower["ports"]), "flower: local only"


def test_web_and_worker_share_media_and_read_the_model_bundle_read_only():
    services = _services()
    compose = _compose()
    for name in ("web", "worker"):
        volumes = [_with_defaults(v) for v in services[name]["volumes"]]
        media = [v for v in volumes if v.split(":")[1] == "/data/media"]
        assert media and media[0].split(":")[0] in compose["volumes"], f"{name}: named media volume"
        models = [v for v in volumes if v.split(":")[1] == "/models"]
        assert models and models[0].endswith(":ro"), f"{name}: /models mounted read-only"
        assert "./models" in models[0]
        imports = [v for v in volumes if v.split(":")[1] == "/data/import"]
        assert imports, f"{name}: IMPORT_ROOT mounted"
        env = services[name]["environment"]
        assert (env["MEDIA_ROOT"], env["MODEL_DIR"], env["IMPORT_ROOT"]) == (
            "/data/media",
            "/models",
            "/data/import",
        )


# --- Dockerfiles -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [WEB_DOCKERFILE, WORKER_DOCKERFILE], ids=["web", "worker"])
def test_every_copy_source_exists_and_reaches_the_build_context(path):
    ignore = dockerfiles.read_dockerignore(ROOT / ".dockerignore")
    stages = _stages(path)
    stage_names = {s.name for s in stages if s.name}
    for stage in stages:
        for copy in dockerfiles.copies(stage):
            if copy.from_stage is not None:
                assert copy.from_stage in stage_names, f"line {copy.line}: unknown stage"
                continue
            for source in copy.sources:
                assert (ROOT / source).exists(), f"{path.name}:{copy.line}: {source} missing"
                assert not dockerfiles.is_ignored(source, ignore), (
                    f"{path.name}:{copy.line}: {source} is excluded by .dockerignore"
                )


@pytest.mark.parametrize("path", [WEB_DOCKERFILE, WORKER_DOCKERFILE], ids=["web", "worker"])
def test_image_command_names_a_module_that_exists_and_is_copied(path):
    final = _stages(path)[-1]
    targets = dockerfiles.python_targets(dockerfiles.command_words(final))
    assert targets, f"{path.name}: CMD/ENTRYPOINT loads no Python module"
    copied = {s.strip("/").split("/")[0] for c in dockerfiles.copies(final) for s in c.sources}
    for module, attr in targets:
        source = _module_file(module)
        assert source is not None, f"{path.name}: module {module} does not exist"
        assert module.split(".")[0] in copied, f"{path.name}: {module} is not copied into the image"
        if attr:
            assert attr in _top_level_names(source), f"{module} defines no {attr}"


@pytest.mark.parametrize("path", [WEB_DOCKERFILE, WORKER_DOCKERFILE], ids=["web", "worker"])
def test_image_holds_every_first_party_package_its_code_imports(path):
    final = _stages(path)[-1]
    copied = {s.strip("/").split("/")[0] for c in dockerfiles.copies(final) for s in c.sources}
    for package in sorted(copied & FIRST_PARTY):
        for imported, where in _first_party_imports(ROOT / package).items():
            assert imported in copied, f"{path.name}: {sorted(where)} import {imported}, not copied"


@pytest.mark.parametrize("path", [WEB_DOCKERFILE, WORKER_DOCKERFILE], ids=["web", "worker"])
def test_image_runs_as_a_non_root_user(path):
    users = _stages(path)[-1].all("USER")
    assert users and users[-1].args.split(":")[0] not in {"root", "0"}


def test_web_image_has_no_ml_framework_and_no_worker_code():
    native, runtime = _stages(WEB_DOCKERFILE)
    assert native.base == runtime.base == "python:3.11-slim"
    # The build stage compiles the dot products and nothing else.
    built = sorted(s for c in dockerfiles.copies(native) for s in c.sources)
    assert built == ["scripts/build_native.sh", "shared/search/lane_dots.c"], built
    stages = [runtime]
    names = _requirement_names(ROOT / "requirements" / "web.lock.txt")
    ml = sorted(n for n in names if n.startswith(ML_PACKAGE_PREFIXES))
    assert not ml, f"requirements/web.lock.txt pulls ML frameworks: {ml}"
    sources = [s for c in dockerfiles.copies(stages[0]) if c.from_stage is None for s in c.sources]
    assert all(s.strip("/").split("/")[0] not in {"workers", "training"} for s in sources)
    requirement_files = [s for s in sources if s.startswith("requirements")]
    assert requirement_files == ["requirements/web.lock.txt"], sources
    installs = " ".join(i.args for i in stages[0].all("RUN") if "pip install" in i.args)
    assert "requirements/web.lock.txt" in installs
    assert "worker.lock" not in installs and "dev.lock" not in installs
    # The command (web/serve.py) serves web.wsgi:app on $PORT.
    assert dockerfiles.command_words(stages[0]) == ["python", "-m", "web.serve"]
    from web.serve import command

    argv, _ = command({"PORT": "8123"})
    assert "web.wsgi:app" in argv and "0.0.0.0:8123" in argv


@pytest.mark.parametrize("path", [WEB_DOCKERFILE, WORKER_DOCKERFILE], ids=["web", "worker"])
def test_image_carries_the_compiled_dot_products_from_a_stage_that_builds_them(path):
    stages = _stages(path)
    final = stages[-1]
    wanted = "shared/search/_lane_dots.so"
    carried = [c for c in dockerfiles.copies(final) if c.from_stage and c.dest.endswith(wanted)]
    assert len(carried) == 1, "the runtime image must take the .so its build stage compiled"
    builder = next(s for s in stages if s.name == carried[0].from_stage)
    assert "scripts/build_native.sh" in " ".join(i.args for i in builder.all("RUN"))
    # Copied after shared/ itself, or shared/'s COPY would not matter: order of the final stage.
    copies = dockerfiles.copies(final)
    shared_at = next(i for i, c in enumerate(copies) if "shared/" in c.sources)
    assert copies.index(carried[0]) > shared_at


def test_worker_image_installs_the_model_stack_and_detectron2():
    stages = _stages(WORKER_DOCKERFILE)
    runs = " ".join(i.args for s in stages for i in s.all("RUN"))
    assert "-r requirements/worker.lock.txt" in runs
    assert "scripts/install_detectron2.sh" in runs
    assert "gcc" in runs and "g++" in runs, "detectron2's extension is compiled"
    final = stages[-1]
    copied = {s.strip("/") for c in dockerfiles.copies(final) for s in c.sources}
    assert {"shared", "workers", "training", "migrations"} <= copied
    env = " ".join(i.args for i in final.all("ENV"))
    assert "KERAS_BACKEND=torch" in env
    ml = _requirement_names(ROOT / "requirements" / "worker.lock.txt")
    assert {"torch", "torchvision", "keras"} <= ml


def test_dockerignore_keeps_weights_data_and_the_venv_out_of_the_context():
    ignore = dockerfiles.read_dockerignore(ROOT / ".dockerignore")
    for path in [
        ".venv/bin/python",
        "var/media/x.jpg",
        "models/detector/model_final.pth",
        "data/deepfashion2/x.json",
        ".git/HEAD",
        "shared/__pycache__/config.pyc",
        "somewhere/embedder.weights.h5",
    ]:
        assert dockerfiles.is_ignored(path, ignore), path
    for path in ["shared/config.py", "web/wsgi.py", "requirements/web.lock.txt", ".env.example"]:
        assert not dockerfiles.is_ignored(path, ignore), path


# --- Procfile ----------------------------------------------------------------------------------


def _procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def test_procfile_runs_web_on_port_workers_on_every_queue_beat_and_migrates_on_release():
    from web.serve import command

    procs = _procfile()
    web = procs["web"].split()
    for module, attr in dockerfiles.python_targets(web):
        source = _module_file(module)
        assert source is not None and (attr is None or attr in _top_level_names(source))
    argv, _ = command({"PORT": "9123"})
    assert argv[argv.index("--bind") + 1] == "0.0.0.0:9123"
    apps = [(m, a) for m, a in dockerfiles.python_targets(argv) if a]  # not `-m gunicorn`
    assert apps == [("web.wsgi", "app")]
    assert "app" in _top_level_names(_module_file("web.wsgi"))
    consumed: list[str] = []
    for name in ("worker", "query", "lists"):
        worker = procs[name].split()
        assert worker[worker.index("--pool") + 1] == "solo"
        consumed += worker[worker.index("-Q") + 1].split(",")
    assert sorted(consumed) == sorted(QUEUES)
    # A search never waits behind a fold: they run in different processes.
    query = procs["query"].split()
    assert query[query.index("-Q") + 1] == "query"
    assert procs["release"].split()[-3:] == ["alembic", "upgrade", "head"]
    beat = procs["beat"].split()
    assert beat[:4] == ["celery", "-A", "workers.celery_app", "beat"]
    assert "--schedule" in beat


def test_the_procfile_and_the_web_image_run_one_web_command():
    from web.serve import command

    image = dockerfiles.command_words(_stages(WEB_DOCKERFILE)[-1])
    assert shlex.split(_procfile()["web"]) == image == ["python", "-m", "web.serve"]
    argv, env = command({})
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    assert argv[argv.index("--bind") + 1] == "0.0.0.0:8000"
    assert argv[-1] == "web.wsgi:app"
    argv, env = command({"OPENBLAS_NUM_THREADS": "4", "WEB_CONCURRENCY": "3", "WEB_THREADS": "8"})
    assert env["OPENBLAS_NUM_THREADS"] == "4"
    assert (argv[argv.index("--workers") + 1], argv[argv.index("--threads") + 1]) == ("3", "8")
