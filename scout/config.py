"""Scout's settings, read once from SCOUT_* environment variables (listed in the README)."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def is_postgres_url(db: str) -> bool:
    """Is SCOUT_DB a PostgreSQL URL (a database server) rather than an SQLite file path?"""
    return db.startswith(("postgresql://", "postgres://"))


class ConfigError(ValueError):
    """A setting has a value Scout cannot use; the message names it."""


def bundled_claude_path() -> str | None:
    """The Claude Code CLI shipped inside claude-agent-sdk, if it is there."""
    try:
        import claude_agent_sdk
    except ImportError:
        return None
    path = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    return str(path) if path.exists() else None


def _int(env: dict[str, str], name: str, default: int, low: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < low:
        raise ConfigError(f"{name} must be at least {low}, not {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, zero_ok: bool = False) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{name} must be {'0 or more' if zero_ok else 'positive'}, not {value}")
    return value


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first is the default)."""
    value = env.get(name) or choices[0]
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _list(env: dict[str, str], name: str, default: list[str], sep: str = ",") -> list[str]:
    raw = env.get(name)
    if raw is None:
        return default
    return [part.strip() for part in raw.split(sep) if part.strip()]


@dataclass
class Settings:
    """Everything the server, supervisor and workers are configured with."""

    db: str = "data/scout.db"
    host: str = "127.0.0.1"
    port: int = 8000
    max_workers: int = 4
    max_pending: int = 1000
    claude_path: str | None = None
    threads: int = 32
    max_streams: int = 200
    allowed_hosts: list[str] = field(default_factory=list)
    task_timeout: float = 3600.0
    idle_timeout: float = 900.0
    stop_grace: float = 3.0
    approval_timeout: float = 300.0
    shutdown: str = "detach"
    api_token: str | None = None
    allowed_roots: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)
    modes_file: str | None = None
    log_dir: str = ""
    worktrees: str = ""  # SCOUT_WORKTREES: where sessions' git worktrees are made
    max_message_bytes: int = 100_000
    worker_env_pass: list[str] = field(default_factory=list)
    db_max_bytes: int | None = None
    task_nice: int = 10
    containment: str = "auto"
    sse_keepalive: float = 15.0
    # Warm sessions: a conversation's Claude Code stays alive between turns (0: off).
    session_idle: float = 300.0
    max_warm: int = 8
    # Operations (see docs/api-brief.md, "Operations").
    retention_days: float = 30.0
    retention_interval: float = 3600.0
    max_events_per_task: int = 100_000
    log_format: str = "text"
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_hosts: list[str] = field(default_factory=lambda: list(DEFAULT_WEBHOOK_HOSTS))
    # Nodes (several servers on one PostgreSQL log; see the README).
    node_id: str = field(default_factory=socket.gethostname)
    node_lease: float = 15.0

    def __post_init__(self) -> None:
        # Settings built in code (tests, embedders) get worktrees beside the database too,
        # never in whatever directory the process happens to run in.
        if not self.worktrees:
            self.worktrees = os.path.join(os.path.dirname(os.path.abspath(self.db)), "worktrees")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        raw_db = env.get("SCOUT_DB") or "data/scout.db"
        # A postgresql:// URL is a database server; anything else a file path.
        db = raw_db if is_postgres_url(raw_db) else os.path.abspath(raw_db)
        local = os.path.dirname(db) if db.startswith("/") else os.path.abspath("data")
        shutdown = env.get("SCOUT_SHUTDOWN", "detach")
        if shutdown not in ("detach", "cancel"):
            raise ConfigError(f"SCOUT_SHUTDOWN must be 'detach' or 'cancel', not {shutdown!r}")
        roots = _list(env, "SCOUT_ALLOWED_ROOTS", [os.getcwd()], sep=os.pathsep)
        return cls(
            db=db,
            host=env.get("SCOUT_HOST") or "127.0.0.1",
            port=_int(env, "SCOUT_PORT", 8000),
            max_workers=_int(env, "SCOUT_MAX_WORKERS", 4, low=1),
            max_pending=_int(env, "SCOUT_MAX_PENDING", 1000, low=1),
            claude_path=env.get("SCOUT_CLAUDE_PATH") or bundled_claude_path(),
            threads=_int(env, "SCOUT_THREADS", 32, low=4),
            max_streams=_int(env, "SCOUT_MAX_STREAMS", 200, low=1),
            allowed_hosts=_list(env, "SCOUT_ALLOWED_HOSTS", []),
            task_timeout=_float(env, "SCOUT_TASK_TIMEOUT", 3600.0),
            idle_timeout=_float(env, "SCOUT_IDLE_TIMEOUT", 900.0),
            stop_grace=_float(env, "SCOUT_STOP_GRACE", 3.0),
            approval_timeout=_float(env, "SCOUT_APPROVAL_TIMEOUT", 300.0),
            shutdown=shutdown,
            api_token=env.get("SCOUT_API_TOKEN") or None,
            allowed_roots=[os.path.realpath(r) for r in roots],
            cors_origins=_list(env, "SCOUT_CORS_ORIGINS", []),
            modes_file=env.get("SCOUT_MODES_FILE") or None,
            log_dir=os.path.abspath(env.get("SCOUT_LOG_DIR") or os.path.join(local, "logs")),
            worktrees=os.path.abspath(env.get("SCOUT_WORKTREES") or os.path.join(local, "worktrees")),
            max_message_bytes=_int(env, "SCOUT_MAX_MESSAGE_BYTES", 100_000, low=1),
            worker_env_pass=_list(env, "SCOUT_WORKER_ENV", []),
            db_max_bytes=_int(env, "SCOUT_DB_MAX_MB", 0) * 1024 * 1024 or None,
            task_nice=_int(env, "SCOUT_TASK_NICE", 10),
            containment=_choice(env, "SCOUT_CONTAINMENT", ("auto", "subreaper")),
            sse_keepalive=_float(env, "SCOUT_SSE_KEEPALIVE", 15.0),
            session_idle=_float(env, "SCOUT_SESSION_IDLE", 300.0, zero_ok=True),
            max_warm=_int(env, "SCOUT_MAX_WARM", 8, low=0),
            **_ops_settings(env),
            **_node_settings(env),
        )


DEFAULT_WEBHOOK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")


def _node_settings(env: dict[str, str]) -> dict[str, Any]:
    """SCOUT_NODE_ID (default: the host name) and SCOUT_NODE_LEASE."""
    from .validate import NODE_ID

    node = env.get("SCOUT_NODE_ID") or socket.gethostname()
    if not NODE_ID.match(node):
        raise ConfigError(f"SCOUT_NODE_ID must be 1-128 letters, digits, '.', '_' or '-', not {node!r}")
    lease = _float(env, "SCOUT_NODE_LEASE", 15.0)
    if lease < 1:
        raise ConfigError(f"SCOUT_NODE_LEASE must be at least 1 second, not {lease:g}")
    return {"node_id": node, "node_lease": lease}


def _ops_settings(env: dict[str, str]) -> dict[str, Any]:
    """Retention, event cap, log format and webhook settings."""
    from .validate import webhook_url_problem

    raw_days = env.get("SCOUT_RETENTION_DAYS") or "30"
    try:
        days = float(raw_days)
    except ValueError:
        raise ConfigError(f"SCOUT_RETENTION_DAYS must be a number of days, not {raw_days!r}") from None
    if not 0 <= days < 1e6:
        raise ConfigError(f"SCOUT_RETENTION_DAYS must be 0 (keep everything) or more, not {raw_days!r}")
    log_format = (env.get("SCOUT_LOG_FORMAT") or "text").lower()
    if log_format not in ("text", "json"):
        raise ConfigError(f"SCOUT_LOG_FORMAT must be 'text' or 'json', not {log_format!r}")
    hosts = [h.lower().strip("[]") for h in _list(env, "SCOUT_WEBHOOK_HOSTS", list(DEFAULT_WEBHOOK_HOSTS))]
    url = env.get("SCOUT_WEBHOOK_URL") or None
    if url:
        problem = webhook_url_problem(url, hosts)
        if problem:
            raise ConfigError(f"SCOUT_WEBHOOK_URL: {problem}")
    return {
        "retention_days": days,
        "retention_interval": _float(env, "SCOUT_RETENTION_INTERVAL", 3600.0),
        "max_events_per_task": _int(env, "SCOUT_MAX_EVENTS_PER_TASK", 100_000),
        "log_format": log_format,
        "webhook_url": url,
        "webhook_secret": env.get("SCOUT_WEBHOOK_SECRET") or None,
        "webhook_hosts": hosts,
    }
