"""The one place configuration comes from: environment variables, overridable in tests.

Every setting is a field of :class:`Settings`; its environment variable is the field name in
upper case (``database_url`` -> ``DATABASE_URL``). ``load_settings(overrides)`` takes a mapping
keyed by field name for tests. Nothing here connects to anything.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

_DEFAULT_DATA = Path(os.environ.get("VISREC_DATA_DIR", Path.cwd() / "var"))


@dataclass(frozen=True)
class Settings:
    # --- contract names (docs/architecture.md#configuration-contract) ---
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/visrec"
    redis_broker_url: str = "redis://127.0.0.1:6379/0"
    redis_cache_url: str = "redis://127.0.0.1:6379/1"
    media_root: Path = _DEFAULT_DATA / "media"
    import_root: Path | None = None
    model_dir: Path | None = None
    # "imagenet", "random", or a path to a .weights.h5 file; overrides the bundle's.
    embedder_weights: str | None = None
    api_keys: tuple[str, ...] = ()
    port: int = 8000

    # --- ingestion ---
    ingest_batch_size: int = 16
    max_upload_bytes: int = 20 * 1024 * 1024
    max_request_bytes: int = 512 * 1024 * 1024
    # Decompression-bomb guard: Pillow's own default warns at ~89 MP; we refuse far earlier.
    max_image_pixels: int = 40_000_000
    fetch_timeout_s: float = 15.0
    fetch_max_bytes: int = 20 * 1024 * 1024
    # Only for tests on loopback servers; never enable in production (SSRF guard).
    fetch_allow_private: bool = False
    # Ports URL ingestion may contact: web ports only, so a URL cannot probe other services.
    fetch_allowed_ports: tuple[int, ...] = (80, 443)
    # Long side, in pixels, of the JPEG kept of each detected top and bottom (crop_url): sized
    # for result grids; a smaller garment is kept at its own size.
    crop_max_side: int = 256

    # --- models ---
    # "auto" picks CUDA when available, else CPU.
    device: str = "auto"
    score_threshold: float | None = None
    detector_test_size: int | None = None
    embedder_input_size: int | None = None
    keras_backend: str = "torch"
    # A solo-pool worker loads its models before it takes its first task, so the first photo
    # search after a restart does not spend its timeout waiting for a model build.
    preload_models: bool = True
    # A worker that only folds (the Procfile's ``lists``) lowers its CPU priority by this much
    # (nice) when it starts: the searches and ingestion sharing its host take the cores first,
    # and a fold, which nobody waits on, takes what they leave. 0 leaves it as started.
    lists_worker_nice: int = 10

    # --- recommendations / neighbour lists ---
    query_timeout_s: float = 10.0
    # Anonymous photo searches per client address (Flask-Limiter syntax, counted in the broker
    # Redis, which never evicts); API-key holders are not limited. Empty: no limit.
    photo_search_rate_limit: str = "20/minute;200/hour"
    # Refuse photo searches without an API key altogether.
    photo_search_requires_key: bool = False
    # A burst of committed batches schedules one fold of the neighbour lists this long after
    # the first (the lists stay exact meanwhile: readers add the changes a fold has not seen).
    fold_debounce_s: float = 0.5
    # Celery beat also sends a fold this often (a lost request, a cold cache, a cache left
    # behind a fold).
    fold_interval_s: float = 60.0
    # How often a web process looks at the lists cache's generation pointer.
    cache_pointer_ttl_s: float = 0.5
    # Lists a product page found missing from the cache (evicted) are written back this long
    # after the first miss is noted, so one repair takes a burst of them; a fold whose cache
    # write failed has the cache brought up to date this long after, too.
    cache_repair_delay_s: float = 1.0
    # Folded change rows are kept this long, so a worker whose matrices are older than that
    # reloads them instead of replaying the log.
    list_change_retention_s: float = 3600.0
    # Matrix products on the worker: rows of queries per block (bounded memory: block x N). A
    # fold also takes its changed items this many at a time (docs/architecture.md, "Folds").
    list_block_rows: int = 512
    # A fold (or cache reload) that finds the fold lock taken is sent again this much later
    # instead of waiting for it: the worker goes back to its other tasks meanwhile.
    fold_lock_retry_s: float = 2.0
    # How often beat looks for a version build whose catch-up pass was lost (its worker died,
    # its task vanished, the broker was flushed) and starts a new pass for it.
    build_resume_interval_s: float = 60.0
    # A catch-up pass's lease: renewed by each chunk; one whose chain died lapses this long
    # after its last chunk began, and the next resume check starts a new pass. Must exceed a
    # chunk's longest time (INGEST_BATCH_SIZE photos) plus its wait in the queue.
    catch_up_lease_s: float = 600.0
    # The workers' PostgreSQL connections (the fold lock's among them). TCP keepalives on both
    # ends: a holder whose host vanished is dropped, and its lock freed, within idle +
    # interval x count seconds instead of the kernel's ~2 h. The timeouts end a statement, a
    # lock wait or an open transaction that stopped moving (a frozen process); the idle one
    # must exceed the longest computation a fold makes between two statements.
    db_keepalives_idle_s: int = 30
    db_keepalives_interval_s: int = 10
    db_keepalives_count: int = 3
    db_lock_timeout_s: float = 30.0
    db_statement_timeout_s: float = 1800.0
    db_idle_in_transaction_timeout_s: float = 3600.0

    # --- celery ---
    # Must exceed the slowest batch, or Redis redelivers a running task to a second worker.
    visibility_timeout_s: int = 3600
    task_max_retries: int = 5

    # --- recovery and retention (workers.maintenance, run by Celery beat) ---
    # How often beat asks a worker to look for stalled jobs.
    sweep_interval_s: float = 60.0
    # An unfinished job with no progress for this long and no task of its own left in the broker
    # is re-enqueued; after stall_max_requeues re-enqueues without progress its items fail.
    stall_after_s: float = 600.0
    stall_max_requeues: int = 3
    # Deliveries of one photo that may end without a result (the worker died on it) before the
    # photo fails as a crasher; at least 2, since a crash in a batch counts against every photo.
    item_max_deliveries: int = 3
    # How often media no row references is deleted, and how old it must be first: longer than
    # the slowest batch, which stores fetched bytes before it commits the rows naming them.
    media_sweep_interval_s: float = 3600.0
    media_grace_s: float = 21600.0

    # --- web ---
    public_base_url: str | None = None
    # How long a web process reuses its database counts for /metrics: each count is a
    # full-table GROUP BY (about 0.2 s of database time per scrape at 1M job items).
    metrics_db_ttl_s: float = 30.0
    log_level: str = "INFO"
    log_json: bool = True

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _parse(raw: str, annotation: Any) -> Any:
    """``raw`` as the field's declared type (``int``, ``float | None``, ``tuple[int, ...]``...).

    The type is read from the annotation itself, never guessed from its text, so a new field of
    any of these types parses without a change here; any other type is a programming error.
    """
    args = get_args(annotation)
    if get_origin(annotation) in (Union, UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported setting type {annotation!r}")
        return None if not raw.strip() else _parse(raw, inner[0])
    if get_origin(annotation) is tuple:
        item = args[0] if args else str
        return tuple(_parse(part.strip(), item) for part in raw.split(",") if part.strip())
    if annotation is bool:
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValueError(f"expected one of {', '.join(sorted(_TRUE | _FALSE - {''}))}")
        return word in _TRUE
    if annotation is int:
        return int(raw)
    if annotation is float:
        return float(raw)
    if annotation is Path:
        if not raw.strip():
            raise ValueError("expected a path")
        return Path(raw).expanduser()
    if annotation is str:
        return raw
    raise TypeError(f"unsupported setting type {annotation!r}")


def _field_types() -> dict[str, Any]:
    hints = get_type_hints(Settings)
    return {f.name: hints[f.name] for f in fields(Settings)}


def _from_override(value: Any, annotation: Any) -> Any:
    """A test's override: strings parse as the environment's would; paths become Paths."""
    if isinstance(value, str):
        return _parse(value, annotation)
    if value is not None and Path in (annotation, *get_args(annotation)):
        return Path(value)
    return value


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from ``environ`` (default: ``os.environ``), then ``overrides`` on top.

    A value that does not parse as its field's type, or an override naming no setting, is a
    ``ValueError`` naming the variable: a mistyped setting stops the process at start-up
    instead of being silently ignored.
    """
    env = os.environ if environ is None else environ
    types = _field_types()
    values: dict[str, Any] = {}
    for name, annotation in types.items():
        raw = env.get(name.upper())
        if raw is None:
            continue
        try:
            values[name] = _parse(raw, annotation)
        except ValueError as exc:
            raise ValueError(f"environment variable {name.upper()}={raw!r}: {exc}") from exc
    unknown = sorted(key.upper() for key in (overrides or {}) if key.lower() not in types)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}: no such field in Settings")
    for key, value in (overrides or {}).items():
        name = key.lower()
        try:
            values[name] = _from_override(value, types[name])
        except ValueError as exc:
            raise ValueError(f"setting {name.upper()}={value!r}: {exc}") from exc
    return Settings(**values)


_current: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    global _current
    if _current is None:
        _current = load_settings()
    return _current


def set_settings(settings: Settings | None) -> None:
    """Replace the process-wide settings (tests, worker start-up); None re-reads the environment."""
    global _current
    _current = settings


def settings_to_env(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce ``settings`` in a child process (a worker)."""
    env: dict[str, str] = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "1" if value else "0"
        env[f.name.upper()] = str(value)
    return env
