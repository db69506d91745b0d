"""The local Redis password: generated once, kept across restarts, replaced only on request, never world-readable."""

from __future__ import annotations

from pathlib import Path

from services.local_stack.service_processes import RedisServer
from services.local_stack.stack_process import REDIS_AUTH_FILE, redis_password


def test_password_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = redis_password(tmp_path)
    assert len(first) >= 32  # 24 random bytes, URL-safe base64
    assert (tmp_path / REDIS_AUTH_FILE).read_text().strip() == first
    assert (tmp_path / REDIS_AUTH_FILE).stat().st_mode & 0o777 == 0o600
    assert redis_password(tmp_path) == first
    assert [path.name for path in tmp_path.iterdir()] == [REDIS_AUTH_FILE]  # no temporary file left behind


def test_rotation_replaces_it_with_mode_0600(tmp_path: Path) -> None:
    first = redis_password(tmp_path)
    (tmp_path / REDIS_AUTH_FILE).chmod(0o644)
    rotated = redis_password(tmp_path, rotate=True)
    assert rotated != first
    assert redis_password(tmp_path) == rotated
    assert (tmp_path / REDIS_AUTH_FILE).stat().st_mode & 0o777 == 0o600


def test_an_empty_file_gets_a_new_password(tmp_path: Path) -> None:
    (tmp_path / REDIS_AUTH_FILE).write_text("\n")
    assert len(redis_password(tmp_path)) >= 32


def test_persistent_redis_writes_an_fsynced_append_only_file(tmp_path: Path) -> None:
    command = RedisServer(data_dir=tmp_path, password="pw").command()
    assert command[command.index("--appendonly") + 1] == "no"  # the test fixtures keep nothing
    command = RedisServer(data_dir=tmp_path, password="pw", persistent=True).command()
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert command[command.index("--dir") + 1] == str(tmp_path.resolve())
    assert command[command.index("--bind") + 1] == "127.0.0.1"
