"""A file-system registry of trained models: immutable versions, one ``LIVE`` pointer per model.

Serve replicas, the retraining job and the benchmarks must agree on *which* model files to use
without a database. Layout under ``<data_root>/models``::

    <name>/<version>/            one published version: the model's own files + metadata.json
    <name>/.tmp-<uuid>/          a version being written (never read)
    <name>/LIVE                  the promoted version (absent: the latest one is live)

A version is published by writing everything into a temporary folder and renaming it into
place, so a reader sees either no version or a complete one, and a writer that fails leaves
nothing behind. Versions are UTC timestamps (``20250101T120000123456Z``): they sort in
publication order and name when a model was made. ``LIVE`` is replaced atomically, so
promoting or rolling back is one small write that replicas pick up on their next resolve.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scale_ray.settings import Settings

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
LIVE_FILE = "LIVE"
#: Held while a first version is published (:meth:`ModelRegistry.ensure_live`).
LOCK_FILE_NAME = ".lock"
TMP_PREFIX = ".tmp-"
VERSION_FORMAT = "%Y%m%dT%H%M%S%fZ"
#: Keys :meth:`ModelRegistry.publish` writes itself; callers' metadata may not set them.
RESERVED_KEYS = ("name", "version", "created_at", "code_version")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REPO = Path(__file__).resolve().parents[2]


@functools.cache
def code_version() -> str:
    """The git commit of this checkout, else ``"unknown"`` (no git, or not a checkout)."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(_REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha or "unknown"


def new_version(now: datetime | None = None) -> str:
    """A version string for ``now`` (UTC): sortable, microsecond resolution."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime(VERSION_FORMAT)


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ValueError(f"invalid model {kind} {value!r}: use letters, digits, '_', '-', '.'")
    return value


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex}")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ModelRegistry:
    """Published model versions under one root folder (local file system only)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        """The registry under ``<data_root>/models`` (absolute, so every process agrees)."""
        if not settings.is_local:
            raise ValueError(f"the model registry needs a local data_root: {settings.data_root}")
        return cls(Path(settings.path("models")))

    # ------------------------------------------------------------------ writing
    def publish(
        self,
        name: str,
        write: Callable[[Path], None],
        metadata: dict[str, Any],
        *,
        version: str | None = None,
    ) -> str:
        """Publish a new version of ``name``: ``write(folder)`` fills a fresh folder, then
        ``metadata.json`` is added and the folder renamed into place. Returns the version.

        ``version`` pins the version string (e.g. when the model's own files record it); it
        must not exist yet (``FileExistsError``). Without it a timestamp is used, and a new one
        is taken if another writer published the same one first. If ``write`` raises, nothing
        is left behind and the exception propagates.
        """
        _check_name("name", name)
        if version is not None:
            _check_name("version", version)
        clash = sorted(set(metadata) & set(RESERVED_KEYS))
        if clash:
            raise ValueError(f"metadata may not set {clash}: the registry writes them")
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            write(tmp)
            for _ in range(100):
                now = datetime.now(UTC)
                chosen = version or new_version(now)
                meta = {
                    "name": name,
                    "version": chosen,
                    "created_at": now.isoformat(),
                    "code_version": code_version(),
                    **metadata,
                }
                _write_atomic(tmp / METADATA_FILE, json.dumps(meta, indent=2, sort_keys=True))
                target = folder / chosen
                if not target.exists():
                    try:
                        os.rename(tmp, target)
                    except OSError:  # another writer took the name between the check and here
                        if not target.exists():
                            raise
                    else:
                        log.info("published model %s version %s", name, chosen)
                        return chosen
                if version is not None:
                    raise FileExistsError(f"model {name!r} already has version {version!r}")
                time.sleep(1e-5)
            raise RuntimeError(f"could not find a free version name for model {name!r}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def ensure_live(self, name: str, publish_first: Callable[[], str]) -> str:
        """The live version of ``name``; with none, ``publish_first()`` publishes one.

        Safe when several processes call it at once: one publishes (holding an ``flock`` on
        ``<root>/<name>/.lock``), the others wait and then return its version.
        """
        live = self.live(name)
        if live is not None:
            return live
        folder = self.root / _check_name("name", name)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / LOCK_FILE_NAME).open("a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                live = self.live(name)
                return live if live is not None else publish_first()
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def promote(self, name: str, version: str) -> None:
        """Make ``version`` the live one (atomic replace of ``<name>/LIVE``)."""
        if version not in self.versions(name):
            raise LookupError(f"model {name!r} has no version {version!r} under {self.root}")
        _write_atomic(self.root / name / LIVE_FILE, version + "\n")
        log.info("promoted model %s version %s", name, version)

    # ------------------------------------------------------------------ reading
    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first (folders being written are skipped)."""
        folder = self.root / _check_name("name", name)
        if not folder.is_dir():
            return []
        return sorted(
            entry.name
            for entry in folder.iterdir()
            if not entry.name.startswith(".")
            and entry.is_dir()
            and (entry / METADATA_FILE).is_file()
        )

    def latest(self, name: str) -> str | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def live(self, name: str) -> str | None:
        """The promoted version; the latest one when none was promoted (or it is gone)."""
        pointer = self.root / _check_name("name", name) / LIVE_FILE
        try:
            promoted = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            promoted = ""
        if promoted:
            if (self.root / name / promoted / METADATA_FILE).is_file():
                return promoted
            log.warning("model %s: LIVE names missing version %r; using latest", name, promoted)
        return self.latest(name)

    def path(self, name: str, version: str) -> Path:
        return self.root / _check_name("name", name) / _check_name("version", version)

    def metadata(self, name: str, version: str) -> dict[str, Any]:
        path = self.path(name, version) / METADATA_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            missing = f"model {name!r} has no version {version!r} under {self.root}"
            raise LookupError(missing) from None

    def resolve(self, name: str, version: str | None = None) -> tuple[str, Path]:
        """``(version, folder)`` for ``None``/``"live"``, ``"latest"`` or a version string.

        Raises ``LookupError`` naming the model and what is missing.
        """
        if version in (None, "live", "latest"):
            chosen = self.latest(name) if version == "latest" else self.live(name)
            if chosen is None:
                raise LookupError(f"model {name!r} has no published versions under {self.root}")
            return chosen, self.path(name, chosen)
        assert version is not None
        if version not in self.versions(name):
            known = self.versions(name)
            hint = f"; versions: {', '.join(known[-5:])}" if known else "; none published"
            raise LookupError(f"model {name!r} has no version {version!r} under {self.root}{hint}")
        return version, self.path(name, version)
