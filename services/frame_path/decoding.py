"""What travels between ingest and serving: a validated, decoded frame, and the acknowledgement of its result.

Ingest turns each Kafka record into a :class:`FrameRequest` with :func:`decode_record` or fails with a
:class:`~zsad_core.errors.ZsadError` whose ``reason`` becomes the dead-letter reason. A request carries the
model's input, not the frame: the camera's region squashed to the method's input size (a few hundred KB at
most, whatever the camera sends), with the geometry that places a map back on the frame. Serving answers each
request with a :class:`FrameAck` after the Redis write. Both are plain dataclasses of numbers, strings and
one numpy array, so Ray moves them between processes without torch and without anything a client controls
being unpickled (the client's bytes stay bytes until :func:`decode_record` has checked them).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from services.config import CameraConfig, UnknownCameraError
from services.frame_path.decode_budget import DecodeBudget
from services.records import FrameHeaders
from zsad_core.errors import ZsadError
from zsad_core.imageio import FrameGeometry, ImageLimits, decode_model_input, plan_model_input, probe_image

AckStatus = Literal["stored", "replaced", "duplicate", "conflict", "failed", "skipped"]
_FORMAT_OF_CONTENT_TYPE = {"image/jpeg": "JPEG", "image/png": "PNG"}


class ContentTypeMismatchError(ZsadError, ValueError):
    """The content-type header says one format and the bytes are another."""

    reason = "content_type_mismatch"


class RoiOutsideFrameError(ZsadError, ValueError):
    """The camera's region of interest does not fit inside the frame."""

    reason = "roi_outside_frame"


class ModelUnavailableError(RuntimeError):
    """The model failed on every frame of a batch, one by one too: the replica, not the frames, is at fault.

    Raised by the inspector so that ingest retries the frames as a system failure instead of dead-lettering
    the whole stream; defined here, without torch, because ingest classifies it.
    """


class KafkaRecord(Protocol):
    """The fields of kafka-python's ``ConsumerRecord`` that ingest reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] | None


@dataclass(frozen=True, eq=False)
class FrameRequest:
    """A frame ready for a model: its model input (ROI applied) and where it came from.

    Attributes:
        camera, frame_id, capture_ts: from the validated headers.
        partition, offset: the Kafka position, stored with the result for audit and replay.
        image: ``(S, S, 3)`` uint8 RGB, the camera's region squashed to the method's input side S (any
            ``(H, W, 3)`` array is accepted too: the method squashes it itself).
        read_ts, decoded_ts: when ingest read and finished decoding it (stage latencies).
        content_digest: of the record's bytes (:func:`content_digest`): a re-delivery carries the same one, a
            different frame that reuses the id does not.
        geometry: the frame's size, the region and scale ``image`` was cut at; ``None`` when ``image`` is the
            frame itself.
        part_id, part_serial, part_station: the part identity headers (``None``: absent), stored with the result
            so that a PLC or MES can join the decision to its part.
    """

    camera: str
    frame_id: str
    capture_ts: float
    partition: int
    offset: int
    image: np.ndarray = field(repr=False)
    read_ts: float = 0.0
    decoded_ts: float = 0.0
    content_digest: str = ""
    geometry: FrameGeometry | None = None
    part_id: str | None = None
    part_serial: str | None = None
    part_station: str | None = None


@dataclass(frozen=True)
class FrameAck:
    """Serving's answer for one frame, sent after its result is in Redis.

    Attributes:
        status: ``stored`` (new result written), ``replaced`` (the frame id had a result for other bytes read at
            a higher position: this frame's result took its place, and that record is to be dead-lettered),
            ``duplicate`` (an earlier delivery of the same bytes already stored it; nothing changed), ``conflict``
            (the frame id has a result for other bytes read at a lower position; nothing changed), ``failed``
            (the method raised on this frame; nothing stored), or ``skipped`` (the camera is paused: not scored,
            nothing stored, done for ingest like a stored frame).
        prompt_version: the prompt version that scored it (``None``: zero-shot prompts).
        score, label: the result (``nan`` and -1 unless stored).
        rival_partition, rival_offset: the other record with this frame id: the one kept (``conflict``), the one
            replaced (``replaced``) or the one stored (``duplicate``); -1 otherwise.
        error_reason, error_detail: why it failed.
        queue_s, infer_s, store_s: seconds waiting for a batch, in the model, and writing to Redis.
        batch_size: frames of its camera group scored together (its head; the vision forward may span groups).
    """

    camera: str
    frame_id: str
    partition: int
    offset: int
    status: AckStatus
    prompt_version: str | None = None
    score: float = float("nan")
    label: int = -1
    rival_partition: int = -1
    rival_offset: int = -1
    error_reason: str = ""
    error_detail: str = ""
    queue_s: float = 0.0
    infer_s: float = 0.0
    store_s: float = 0.0
    batch_size: int = 0


def decode_record(
    record: KafkaRecord,
    cameras: Mapping[str, CameraConfig],
    limits: ImageLimits,
    *,
    input_sizes: Mapping[str, int],
    budget: DecodeBudget,
    read_ts: float | None = None,
) -> FrameRequest:
    """Validate and decode one record of the frames topic into the model input of its camera.

    Checks, in order and before any pixel is decoded: key and headers
    (:class:`~services.records.FrameHeaders`), the camera is configured, the payload passes the image
    limits, the declared content type matches the bytes, the camera's ROI lies inside the frame. Then, holding
    the frame's decoded pixels from ``budget``, decodes it (at reduced scale where the model input allows;
    truncation is found here) and squashes the ROI to the camera's input size.

    Args:
        input_sizes: model input side per camera (:func:`model_input_sizes`).
        budget: the decoded pixels this actor's decodes may hold at once.

    Raises:
        ZsadError: a subclass whose ``reason`` names the failure (``bad_headers``, ``unknown_camera``,
            ``empty``, ``not_an_image``, ``truncated``, ``too_large``,
            ``content_type_mismatch``, ``roi_outside_frame``).
    """
    read_ts = time.time() if read_ts is None else read_ts
    headers = FrameHeaders.from_kafka(record.key, record.headers)
    camera = cameras.get(headers.camera)
    if camera is None:
        raise UnknownCameraError(f"camera {headers.camera!r} is not configured (cameras: {sorted(cameras)})")
    data = record.value or b""
    fmt, width, height = probe_image(data, limits)
    if fmt != _FORMAT_OF_CONTENT_TYPE[headers.content_type]:
        raise ContentTypeMismatchError(f"header says {headers.content_type}, the payload is {fmt}")
    _check_roi(camera.roi, width, height)
    geometry = plan_model_input(fmt, width, height, input_sizes[headers.camera], camera.roi)
    with budget.hold(geometry.decoded_pixels):
        image = decode_model_input(data, geometry, limits)
    return FrameRequest(
        camera=headers.camera,
        frame_id=headers.frame_id,
        capture_ts=headers.capture_ts,
        partition=record.partition,
        offset=record.offset,
        image=image,
        read_ts=read_ts,
        decoded_ts=time.time(),
        geometry=geometry,
        content_digest=content_digest(data),
        part_id=headers.part_id,
        part_serial=headers.part_serial,
        part_station=headers.part_station,
    )


def model_input_sizes(cameras: Mapping[str, CameraConfig]) -> dict[str, int]:
    """The model input side of each camera: its ``image_size``, else its method's official one.

    Only a camera without ``image_size`` needs the method registry, which imports torch (about 1 GB in an
    ingest process); setting ``image_size`` on every camera keeps ingest free of it.
    """
    sizes = {name: camera.image_size for name, camera in cameras.items() if camera.image_size is not None}
    unset = {name: camera for name, camera in cameras.items() if camera.image_size is None}
    if unset:
        from zsad_core.methods import get_method_config

        sizes |= {name: get_method_config(camera.method, **camera.options).image_size for name, camera in unset.items()}
    return sizes


def _check_roi(roi: tuple[int, int, int, int] | None, frame_w: int, frame_h: int) -> None:
    if roi is not None and (roi[0] + roi[2] > frame_w or roi[1] + roi[3] > frame_h):
        x, y, width, height = roi
        raise RoiOutsideFrameError(f"roi [x={x}, y={y}, w={width}, h={height}] exceeds the {frame_w}x{frame_h} frame")


def content_digest(payload: bytes) -> str:
    """A frame payload's identity: the first 128 bits of its SHA-256, hex (collisions need an attacker who can
    already write to the frames topic, and would only make a frame count as its own re-delivery)."""
    return hashlib.sha256(payload).hexdigest()[:32]


def crop_roi(image: np.ndarray, roi: tuple[int, int, int, int] | None) -> np.ndarray:
    """The ``[x, y, w, h]`` region of ``image`` (a contiguous copy), or the image itself when ``roi`` is None.

    Raises:
        RoiOutsideFrameError: the region reaches past the frame's edge.
    """
    if roi is None:
        return image
    _check_roi(roi, image.shape[1], image.shape[0])
    x, y, width, height = roi
    return np.ascontiguousarray(image[y : y + height, x : x + width])
