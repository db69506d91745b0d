"""The local stack's web view tokens: generated once, owner-only, kept across restarts."""

from __future__ import annotations

import stat
from pathlib import Path

from services.local_stack.stack_process import VIEW_TOKENS_FILE, view_tokens


def test_tokens_are_generated_private_and_kept(tmp_path: Path) -> None:
    first = view_tokens(tmp_path)
    path = tmp_path / VIEW_TOKENS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(first) == {"viewer", "operator"} and first["viewer"] != first["operator"]
    assert all(len(token) >= 16 for token in first.values())
    assert view_tokens(tmp_path) == first


def test_a_damaged_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / VIEW_TOKENS_FILE).write_text("viewer=short\n")
    tokens = view_tokens(tmp_path)
    assert len(tokens["viewer"]) >= 16 and "operator" in tokens
