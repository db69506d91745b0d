"""A bounded, ordered disk spool for frames the broker could not take.

Why on disk: a stream or a camera cannot be asked for a frame again, so while Kafka is unreachable its frames
must survive a gateway restart. One file per frame, named by a sequence number, keeps the order without an
index; each is written to a temporary name, flushed to disk and renamed, so a crash leaves either the whole
entry or none (a leftover temporary file is removed at start).

**Full policy**: the spool holds at most ``max_bytes`` (file sizes summed). A frame that does not fit is
*refused*, never an older one dropped: the oldest frames are the ones closest to being sent, and a folder
source keeps a refused file and offers it again later, so nothing is lost there. A stream or camera frame
refused is lost; the sender counts it as ``zsad_gateway_frames_failed_total{reason="spool_full"}``
(alert on it, and on ``zsad_gateway_spool_bytes`` near the limit).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from services.config import ConfigError
from services.gateway.frames import GatewayFrame

_SUFFIX = ".frame"
_TEMPORARY = ".partial"
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class SpoolEntry:
    """A spooled frame and the file that holds it."""

    path: Path
    frame: GatewayFrame


class DiskSpool:
    """Frames in arrival order under ``directory``, at most ``max_bytes`` of them.

    Not thread-safe: the sender's thread is its only user.
    """

    def __init__(self, directory: str | Path, max_bytes: int):
        if max_bytes <= 0:
            raise ConfigError(f"spool size limit must be positive, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(f"*{_TEMPORARY}"):
            leftover.unlink()
        self._files = sorted(self.directory.glob(f"*{_SUFFIX}"))
        self.bytes = sum(path.stat().st_size for path in self._files)
        self._next = int(self._files[-1].stem) + 1 if self._files else 0

    def __len__(self) -> int:
        return len(self._files)

    def append(self, frame: GatewayFrame) -> bool:
        """Store ``frame`` after the others; False (nothing written) when it would exceed ``max_bytes``."""
        data = _serialise(frame)
        if self.bytes + len(data) > self.max_bytes:
            return False
        path = self.directory / f"{self._next:020d}{_SUFFIX}"
        temporary = path.with_suffix(_TEMPORARY)
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.rename(path)
        self._next += 1
        self._files.append(path)
        self.bytes += len(data)
        return True

    def oldest(self, count: int, max_bytes: int) -> list[SpoolEntry]:
        """Up to ``count`` entries, oldest first, without removing them.

        ``max_bytes`` bounds the memory of one batch (frames may be tens of MB); the first entry is always given.
        """
        entries: list[SpoolEntry] = []
        total = 0
        for path in self._files[:count]:
            total += path.stat().st_size
            if entries and total > max_bytes:
                break
            entries.append(SpoolEntry(path, _deserialise(path.read_bytes())))
        return entries

    def remove(self, entries: list[SpoolEntry]) -> None:
        """Forget entries the broker acknowledged (the oldest ones, as :meth:`oldest` gave them)."""
        for entry in entries:
            self.bytes -= entry.path.stat().st_size
            entry.path.unlink()
            self._files.remove(entry.path)


def _serialise(frame: GatewayFrame) -> bytes:
    meta = json.dumps({
        "camera": frame.camera,
        "frame_id": frame.frame_id,
        "capture_ts": frame.capture_ts,
        "content_type": frame.content_type,
        "extra_headers": [[name, value.decode("ascii")] for name, value in frame.extra_headers],
    }).encode()  # fmt: skip
    return _LENGTH.pack(len(meta)) + meta + frame.payload


def _deserialise(data: bytes) -> GatewayFrame:
    (length,) = _LENGTH.unpack_from(data)
    meta = json.loads(data[_LENGTH.size : _LENGTH.size + length])
    return GatewayFrame(
        camera=meta["camera"],
        frame_id=meta["frame_id"],
        capture_ts=meta["capture_ts"],
        payload=data[_LENGTH.size + length :],
        content_type=meta["content_type"],
        extra_headers=tuple((name, value.encode("ascii")) for name, value in meta["extra_headers"]),
    )
