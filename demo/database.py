"""The demo's own database: created when missing, then migrated with Alembic (the only way a
schema is made in this project)."""

from __future__ import annotations

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from demo.environment import ROOT


def _libpq_url(url: str, database: str) -> str:
    # psycopg speaks libpq URLs, without SQLAlchemy's "+psycopg" driver suffix.
    return (
        make_url(url)
        .set(drivername="postgresql", database=database)
        .render_as_string(hide_password=False)
    )


def ensure_database(url: str) -> bool:
    """Create the database ``url`` names unless it exists; True when it was created."""
    name = make_url(url).database
    if not name:
        raise ValueError(f"DATABASE_URL names no database: {url}")
    with psycopg.connect(_libpq_url(url, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(f'CREATE DATABASE "{name}"')
        return True


def upgrade_head(url: str) -> None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logging"] = False
    command.upgrade(cfg, "head")
