"""One settings object, read from ``SCALE_*`` environment variables with embedded defaults.

Nothing is read at import time: call :func:`get_settings` (or build :class:`Settings` directly in
tests) so a process can change its environment before the first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, get_type_hints

_PREFIX = "SCALE_"


def _parse(raw: str, kind: Any) -> Any:
    if kind is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


@dataclass(frozen=True)
class Settings:
    """Runtime configuration.

    ``data_root`` is a local folder (``./var`` by default) or an object-store URI such as
    ``s3://bucket/scale``; every Delta table, raw upload and model artifact lives under it.
    """

    data_root: str = "./var"
    #: Number of ``user_bucket`` partitions; never change it for an existing ledger.
    num_buckets: int = 64
    #: Number of LedgerWriter actors; each owns the buckets ``b`` with ``b % writer_shards == i``.
    writer_shards: int = 2
    #: Group commit: a commit takes at most ``max_rows``; with fewer than ``min_rows`` waiting
    #: it first waits up to ``max_delay_ms`` for more requests to share the commit.
    group_commit_max_rows: int = 50_000
    group_commit_min_rows: int = 1_000
    group_commit_max_delay_ms: float = 4.0
    #: A writer bin-packs its buckets' small files in the background every this many commits
    #: (0 disables); commits slow down in proportion to the table's live files.
    auto_compact_commits: int = 200
    #: Commit retries on a Delta conflict or a transient storage error.
    commit_retries: int = 8
    #: Ray namespace for the named, detached LedgerWriter actors.
    ray_namespace: str = "scale"
    #: HMAC key for bearer tokens; empty means "generate one under data_root on first use".
    auth_secret: str = ""
    auth_issuer: str = "scale"
    auth_audience: str = "scale-api"
    token_ttl_s: int = 30 * 24 * 3600
    cors_origins: tuple[str, ...] = ("http://localhost:3000",)
    max_upload_bytes: int = 50 * 1024 * 1024
    max_batch: int = 10_000
    page_size_default: int = 100
    page_size_max: int = 1_000
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    #: Path of ``../shared/data`` for demo tenants and evaluations.
    shared_data: str = field(default="")
    log_level: str = "INFO"
    #: What the first categorizer trains on when the registry has none: ``default`` (taxonomy
    #: descriptions, real merchants, built-in rows, users' labels) or ``builtin`` (the built-in
    #: rows only: seconds instead of minutes, for tests).
    categorizer_bootstrap: str = "default"
    #: On its first start (no offset file) the anomaly monitor scores the existing ledger,
    #: bucket by bucket, before following new commits; False: only rows committed after it.
    anomaly_backfill: bool = True
    #: What the first forecaster is fitted on when the registry has none (``scale-ray up``):
    #: ``default`` (ledger users with enough history, else synthetic tenants; a minute or two
    #: on 2 CPUs) or ``fast`` (a tiny model on a few synthetic tenants: seconds, for tests).
    forecaster_bootstrap: str = "default"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``SCALE_<FIELD>`` variables; ``overrides`` win over both."""
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(raw, hints[f.name])
        values.update(overrides)
        return cls(**values)

    # -- derived locations -------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return "://" not in self.data_root or self.data_root.startswith("file://")

    def table_uri(self, name: str) -> str:
        """URI of the Delta table ``name`` (absolute for local roots, so actors agree)."""
        return self.path(name)

    def path(self, *parts: str) -> str:
        if self.is_local:
            root = self.data_root.removeprefix("file://")
            return str(Path(root).expanduser().resolve().joinpath(*parts))
        return "/".join([self.data_root.rstrip("/"), *parts])

    def shared_data_path(self) -> Path:
        if self.shared_data:
            return Path(self.shared_data).expanduser().resolve()
        here = Path(__file__).resolve().parent.parent
        return (here.parent / "shared" / "data").resolve()

    def as_env(self) -> dict[str, str]:
        """The settings as ``SCALE_*`` variables, to hand to Ray workers via ``runtime_env``."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            if f.name == "data_root":
                value = self.path() if self.is_local else value
            out[_PREFIX + f.name.upper()] = str(value)
        return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once from the environment."""
    return Settings.from_env()
