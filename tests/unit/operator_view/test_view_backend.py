"""The web view opens the registry the configuration describes, as every other reader does."""

from __future__ import annotations

from pathlib import Path

from services.config import ZsadConfig
from services.operator_view.app import ViewBackend


def test_the_views_registry_takes_cache_dir_and_size_limit_from_the_config(tmp_path: Path) -> None:
    config = ZsadConfig(
        redis={"url": "redis://127.0.0.1:1/0"},  # never contacted: building the backend opens no connection
        registry={"root": "redis://", "cache_dir": str(tmp_path / "node-cache"), "max_redis_bytes": 4096},
        cameras={"cam1": {"method": "clip-ad", "class_name": "object", "threshold": 0.5}},
    )
    backend = ViewBackend(config)
    assert backend.registry.cache_dir == tmp_path / "node-cache"
    assert backend.registry.store.max_bytes == 4096
