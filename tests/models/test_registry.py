"""The model registry: atomic versions, a LIVE pointer, lookups that name what is missing."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from scale_ray.models.registry import METADATA_FILE, ModelRegistry
from scale_ray.settings import Settings


def _writer(text: str) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        (folder / "weights.txt").write_text(text)

    return write


def test_publish_versions_latest_live(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    assert registry.versions("m") == []
    assert registry.latest("m") is None and registry.live("m") is None

    v1 = registry.publish("m", _writer("one"), {"rows": 1})
    v2 = registry.publish("m", _writer("two"), {"rows": 2})
    assert re.fullmatch(r"\d{8}T\d{12}Z", v1) and v1 < v2
    assert registry.versions("m") == [v1, v2]
    assert registry.latest("m") == v2
    assert registry.live("m") == v2  # nothing promoted: the latest is live
    assert (registry.path("m", v1) / "weights.txt").read_text() == "one"
    assert registry.versions("other") == []

    registry.promote("m", v1)
    assert registry.live("m") == v1
    assert (tmp_path / "models" / "m" / "LIVE").read_text().strip() == v1
    v3 = registry.publish("m", _writer("three"), {})
    assert registry.live("m") == v1 and registry.latest("m") == v3  # publishing never promotes

    assert registry.resolve("m") == (v1, registry.path("m", v1))
    assert registry.resolve("m", "live") == (v1, registry.path("m", v1))
    assert registry.resolve("m", "latest") == (v3, registry.path("m", v3))
    assert registry.resolve("m", v2) == (v2, registry.path("m", v2))
    # No temporary or lock files are left, and only version folders count.
    (tmp_path / "models" / "m" / ".lock").touch()
    (tmp_path / "models" / "m" / "half-written").mkdir()
    names = sorted(p.name for p in (tmp_path / "models" / "m").iterdir())
    assert names == sorted([v1, v2, v3, "LIVE", ".lock", "half-written"])
    assert registry.versions("m") == [v1, v2, v3]


def test_metadata_content(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    version = registry.publish("cat", _writer("w"), {"rows": 12, "config": {"epochs": 2}})
    meta = registry.metadata("cat", version)
    assert meta["name"] == "cat" and meta["version"] == version
    assert meta["rows"] == 12 and meta["config"] == {"epochs": 2}
    created = datetime.fromisoformat(meta["created_at"])
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
    assert created.strftime("%Y%m%dT%H%M%S%fZ") == version
    assert meta["code_version"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", meta["code_version"])
    on_disk = json.loads((registry.path("cat", version) / METADATA_FILE).read_text())
    assert on_disk == meta
    with pytest.raises(ValueError, match="version"):
        registry.publish("cat", _writer("w"), {"version": "x"})


def test_failing_write_leaves_nothing(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.publish("m", _writer("ok"), {})

    def broken(folder: Path) -> None:
        (folder / "partial.bin").write_bytes(b"\0" * 10)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        registry.publish("m", broken, {})
    assert len(registry.versions("m")) == 1
    assert [p.name for p in (tmp_path / "m").iterdir() if p.name.startswith(".tmp-")] == []

    def not_json(folder: Path) -> None:
        (folder / "w").write_text("w")

    with pytest.raises(TypeError):
        registry.publish("m", not_json, {"bad": object()})
    assert len(registry.versions("m")) == 1
    assert len(list((tmp_path / "m").iterdir())) == 1


def test_pinned_version_and_collisions(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    pinned = registry.publish("m", _writer("a"), {}, version="20250101T000000000000Z")
    assert pinned == "20250101T000000000000Z"
    with pytest.raises(FileExistsError):
        registry.publish("m", _writer("b"), {}, version=pinned)
    assert registry.versions("m") == [pinned]
    # Many quick publishes never collide into one folder.
    versions = [registry.publish("m", _writer(str(i)), {"i": i}) for i in range(20)]
    assert len(set(versions)) == 20 and registry.versions("m") == [pinned, *versions]
    assert [registry.metadata("m", v)["i"] for v in versions] == list(range(20))


def test_lookups_name_what_is_missing(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    with pytest.raises(LookupError, match="'categorizer' has no published versions"):
        registry.resolve("categorizer")
    with pytest.raises(LookupError, match="no published versions"):
        registry.resolve("categorizer", "latest")
    version = registry.publish("categorizer", _writer("w"), {})
    with pytest.raises(LookupError, match="no version '20990101T000000000000Z'"):
        registry.resolve("categorizer", "20990101T000000000000Z")
    with pytest.raises(LookupError, match="no version"):
        registry.promote("categorizer", "20990101T000000000000Z")
    with pytest.raises(LookupError, match="no version"):
        registry.metadata("categorizer", "20990101T000000000000Z")
    with pytest.raises(ValueError, match="invalid model version"):
        registry.path("categorizer", "../../etc")
    with pytest.raises(ValueError, match="invalid model name"):
        registry.versions("a/b")
    # A LIVE pointer to a version that was deleted falls back to the latest.
    (tmp_path / "categorizer" / "LIVE").write_text("20000101T000000000000Z\n")
    assert registry.live("categorizer") == version


def test_from_settings(tmp_path: Path) -> None:
    settings = Settings(data_root=str(tmp_path / "var"))
    registry = ModelRegistry.from_settings(settings)
    assert registry.root == (tmp_path / "var" / "models").resolve()
    with pytest.raises(ValueError, match="local data_root"):
        ModelRegistry.from_settings(Settings(data_root="s3://bucket/scale"))
