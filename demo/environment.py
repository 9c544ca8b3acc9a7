"""Where the demo keeps its state and the settings its stack runs with.

Everything lives under ``var/demo`` and in its own database (``visrec_demo``) and Redis
databases (2 and 3), so the demo never touches a development or test installation. Hosts come
from the user's own settings (``DATABASE_URL``, ``REDIS_BROKER_URL``), so a demo against other
servers needs only those variables.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from shared.config import Settings, load_settings, settings_to_env

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATABASE = "visrec_demo"
DEMO_BROKER_DB = 2
DEMO_CACHE_DB = 3


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def catalogue(self) -> Path:
        return self.root / "catalogue"

    @property
    def media(self) -> Path:
        return self.root / "media"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def training(self) -> Path:
        return self.root / "training"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def demo_paths() -> DemoPaths:
    return DemoPaths(ROOT / "var" / "demo")


def _with_redis_db(url: str, db: int) -> str:
    # redis://host:port/N -> same server, the demo's own database number.
    base, _, tail = url.rpartition("/")
    if base.endswith("/") or not tail.isdigit():
        return f"{url.rstrip('/')}/{db}"
    return f"{base}/{db}"


def stack_settings(user: Settings, paths: DemoPaths, model_dir: Path, port: int) -> Settings:
    """The user's settings, moved onto the demo's database, Redis dbs, media and bundle."""
    database_url = make_url(user.database_url).set(database=DEMO_DATABASE)
    return user.replace(
        database_url=database_url.render_as_string(hide_password=False),
        redis_broker_url=_with_redis_db(user.redis_broker_url, DEMO_BROKER_DB),
        redis_cache_url=_with_redis_db(user.redis_cache_url, DEMO_CACHE_DB),
        media_root=paths.media,
        import_root=paths.catalogue,
        model_dir=model_dir,
        # A key for this session only: ingestion needs one, and none is ever written to disk.
        api_keys=(secrets.token_urlsafe(24),),
        port=port,
        keras_backend="torch",
    )


def user_settings() -> Settings:
    return load_settings()


def stack_environment(settings: Settings) -> dict[str, str]:
    """The environment honcho passes to ``web`` and ``worker``."""
    env = {**os.environ, **settings_to_env(settings)}
    # The Procfile names gunicorn and celery: the ones in this interpreter's venv, activated
    # or not (make demo runs .venv/bin/python directly).
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env.update(
        PORT=str(settings.port),
        KERAS_BACKEND="torch",
        # Two cores: one web process is plenty for a demo and leaves the CPU to the worker.
        WEB_CONCURRENCY=env.get("WEB_CONCURRENCY", "1"),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
    )
    return env
