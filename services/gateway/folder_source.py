"""A hot folder: image files written by a vision PC or a camera, sent once each, moved away once acknowledged.

When a file is complete: the folder is rescanned every ``rescan_s`` (plain rescans rather than inotify, because
network shares, where vision PCs usually write, send no inotify events for writes made by another host). A file
is read once its size and modification time have not changed for ``settle_s``, so a writer that writes in
chunks is not read early as long as it never pauses longer than that. Writers that may pause longer must use
the **write-then-rename** convention: write under a name the gateway ignores (a leading ``.`` or the suffix
``.tmp``, ``.part``, ``.partial`` or ``.filepart``) and rename it into place when done; with only such writers,
``settle_s`` can be 0. A file that still fails to decode goes to ``failed/`` (see below), never half-sent.

What happens to a file:

* valid: sent; moved to ``done/`` (or deleted) **only after the broker acknowledged it**. Until then it stays
  where it is, so a crashed gateway sends it again after a restart, with the same frame id (name, size and
  modification time), which the replica's idempotent write turns into a no-op.
* invalid (not an image, truncated, above the limits, a bad part sidecar): moved to ``failed/`` next to a
  ``<name>.error.json`` holding the reason code and a one-line detail.
* a part sidecar ``<stem>.json`` (:mod:`services.gateway.part_identity`) travels with its image.

Files already present at start are sent too, oldest modification time first.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.config import LimitsConfig
from services.gateway.encoding import FrameEncoding, frame_from_bytes
from services.gateway.frames import GatewayFrame, Outcome, OutcomeCallback, Submit
from services.gateway.metrics import GatewayMetrics
from services.gateway.part_identity import SIDECAR_SUFFIX, identity_from_name, identity_from_sidecar, sidecar_path
from zsad_core.errors import ZsadError

log = logging.getLogger(__name__)

IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".filepart")
ERROR_SUFFIX = ".error.json"
_ID_CHARS = re.compile(r"[^A-Za-z0-9._:-]+")


@dataclass
class FolderSettings:
    """Where a folder source reads and puts files, and when it considers one complete.

    Attributes:
        path: the watched folder (not its subfolders).
        done: acknowledged files go here; ``None`` deletes them instead.
        failed: invalid files and their ``.error.json`` go here.
        pattern: only names matching this glob are frames (sidecars and in-progress names never are).
        settle_s: how long size and modification time must stay unchanged before a file is read.
        rescan_s: time between two scans of the folder.
        part_pattern: regular expression for part identity in file names (``None``: none).
    """

    path: Path
    done: Path | None
    failed: Path
    pattern: str = "*"
    settle_s: float = 1.0
    rescan_s: float = 0.5
    part_pattern: re.Pattern[str] | None = None


@dataclass
class _Sighting:
    size: int
    mtime_ns: int
    since: float = field(default_factory=time.monotonic)


def file_frame_id(name: str, size: int, mtime_ns: int) -> str:
    """A frame id that is the same for the same file on every scan and every restart, and readable in logs.

    Name, size and modification time rather than the content's hash: the same image saved twice (two parts that
    look alike) must stay two frames.
    """
    digest = hashlib.blake2b(f"{name}\0{size}\0{mtime_ns}".encode(), digest_size=8).hexdigest()
    return f"{_ID_CHARS.sub('_', Path(name).stem)[:80]}-{digest}"


class FolderSource:
    """Sends the files of one folder as frames of one camera (see the module docstring for the rules)."""

    def __init__(
        self,
        camera: str,
        settings: FolderSettings,
        *,
        encoding: FrameEncoding,
        limits: LimitsConfig,
        metrics: GatewayMetrics,
    ):
        self.camera = camera
        self.settings = settings
        self.encoding = encoding
        self.limits = limits
        self.metrics = metrics
        self._seen: dict[str, _Sighting] = {}
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        for folder in (settings.done, settings.failed):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)

    def run(self, submit: Submit, stop: threading.Event) -> None:
        """Scan until ``stop`` is set; a folder that cannot be listed (a share gone away) is retried, not fatal."""
        unreachable = False
        while not stop.is_set():
            try:
                self.scan(submit)
            except OSError as exc:
                if not unreachable:
                    log.error("camera %s: cannot list %s (%s); retrying", self.camera, self.settings.path, exc)
                unreachable = True
            else:
                if unreachable:
                    self.metrics.reconnected()
                    log.info("camera %s: %s is readable again", self.camera, self.settings.path)
                unreachable = False
            stop.wait(self.settings.rescan_s)

    def scan(self, submit: Submit) -> int:
        """One pass over the folder: submit every complete file not yet in flight; how many were submitted."""
        ready = self._complete_files()
        submitted = 0
        for path, sighting in ready:
            frame = self._read(path, sighting)
            if frame is not None:
                with self._lock:
                    self._in_flight.add(path.name)
                submit(frame, self._outcome_handler(path))
                submitted += 1
        return submitted

    def _complete_files(self) -> list[tuple[Path, _Sighting]]:
        now = time.monotonic()
        present: dict[str, os.stat_result] = {}
        with os.scandir(self.settings.path) as entries:
            for entry in entries:
                if self._is_frame_name(entry.name) and entry.is_file(follow_symlinks=False):
                    try:
                        present[entry.name] = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:  # moved or renamed between listing and stat
                        continue
        ready = []
        with self._lock:
            self._seen = {name: seen for name, seen in self._seen.items() if name in present}
            for name, stat in present.items():
                if name in self._in_flight:
                    continue
                seen = self._seen.get(name)
                if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                    seen = self._seen[name] = _Sighting(stat.st_size, stat.st_mtime_ns, now)
                if now - seen.since >= self.settings.settle_s:
                    ready.append((self.settings.path / name, seen))
        return sorted(ready, key=lambda item: (item[1].mtime_ns, item[0].name))

    def _is_frame_name(self, name: str) -> bool:
        return not (
            name.startswith(".")
            or name.endswith(IN_PROGRESS_SUFFIXES)
            or name.endswith(SIDECAR_SUFFIX)
            or not fnmatch.fnmatch(name, self.settings.pattern)
        )

    def _read(self, path: Path, seen: _Sighting) -> GatewayFrame | None:
        """The file's frame; ``None`` if it changed or vanished meanwhile, or was invalid (then moved to failed/)."""
        try:
            payload = path.read_bytes()
            after = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._fail(path, "unreadable", f"cannot read {path.name}: {exc.strerror or exc}")
            return None
        if (after.st_size, after.st_mtime_ns) != (seen.size, seen.mtime_ns):
            return None  # still being written: seen again, with its new size, on the next scan
        self.metrics.captured()
        try:
            part = identity_from_name(path.name, self.settings.part_pattern)
            part = part.merged(identity_from_sidecar(sidecar_path(path)))
            return frame_from_bytes(
                payload,
                camera=self.camera,
                frame_id=file_frame_id(path.name, seen.size, seen.mtime_ns),
                capture_ts=seen.mtime_ns / 1e9,
                encoding=self.encoding,
                limits=self.limits,
                part=part,
            )
        except ZsadError as exc:
            self._fail(path, exc.reason, str(exc))
            return None

    def _outcome_handler(self, path: Path) -> OutcomeCallback:
        def handle(frame: GatewayFrame, outcome: Outcome) -> None:
            if outcome is Outcome.ACKNOWLEDGED:
                self._retire(path)
            with self._lock:
                self._in_flight.discard(path.name)

        return handle

    def _retire(self, path: Path) -> None:
        """Move an acknowledged file (and its sidecar) to done/, or delete them."""
        try:
            for file in (path, sidecar_path(path)):
                if not file.exists():
                    continue
                if self.settings.done is None:
                    file.unlink()
                else:
                    shutil.move(file, _free_name(self.settings.done, file.name))
        except OSError as exc:  # it stays and is sent again under the same id: a duplicate, never a loss
            log.error("camera %s: cannot move acknowledged %s: %s", self.camera, path, exc)

    def _fail(self, path: Path, reason: str, detail: str) -> None:
        """Move an invalid file (and its sidecar) to failed/ with the reason next to it."""
        self.metrics.failed(reason)
        log.warning("camera %s: %s goes to %s: %s", self.camera, path.name, self.settings.failed, detail)
        target = _free_name(self.settings.failed, path.name)
        try:
            shutil.move(path, target)
            if sidecar_path(path).exists():
                shutil.move(sidecar_path(path), _free_name(self.settings.failed, sidecar_path(path).name))
            report = {"file": path.name, "reason": reason, "detail": detail, "camera": self.camera,
                      "failed_at": time.time()}  # fmt: skip
            target.with_name(target.name + ERROR_SUFFIX).write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            log.error("camera %s: cannot move invalid %s to %s: %s", self.camera, path, self.settings.failed, exc)


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/stem-N.suffix`` when a file of that name is already there."""
    target = folder / name
    number = 1
    while target.exists():
        target = folder / f"{Path(name).stem}-{number}{Path(name).suffix}"
        number += 1
    return target
