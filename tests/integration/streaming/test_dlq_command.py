"""``zsad dlq list|show|resend`` against a real broker and Redis: letters written as ingest writes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from stream_helpers import frame_bytes, read_topic

from services.cli.main import main
from services.config import load_config
from services.frame_path.producer import FrameProducer, ensure_topics
from services.local_stack.service_processes import KafkaBroker, RedisServer
from services.records import H_CAPTURE_TS, H_DLQ_DROPPED, H_FRAME_ID, DeadLetter, FrameHeaders
from services.stores.artifact_registry import ArtifactRegistry
from zsad_core.errors import ZsadError

pytestmark = pytest.mark.integration


class _RefusedError(ZsadError):
    reason = "not_an_image"


class _ConflictError(ZsadError):
    reason = "conflicting_frame_id"


def _letter(config_path: Path, camera: str, frame_id: str, error: ZsadError, offset: int, *, dropped: bool = False
            ) -> DeadLetter:  # fmt: skip
    config = load_config(config_path)
    meta = FrameHeaders.create(camera, frame_id, 1_700_000_000.5, "image/jpeg")
    letter = DeadLetter.build(key=meta.kafka_key(), value=None if dropped else frame_bytes(offset),
                              headers=meta.kafka_headers(), error=error, source_topic=config.kafka.frames_topic,
                              partition=0, offset=offset, dlq_topic=config.kafka.dlq_topic, group="g")  # fmt: skip
    if dropped:
        letter = DeadLetter(letter.topic, letter.key, None, [*letter.headers, (H_DLQ_DROPPED, b"1")])
    return letter


def test_letters_are_listed_shown_and_resent_with_their_original_headers_and_an_audit_entry(
    noida_broker: KafkaBroker, redis_server: RedisServer, unique: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "zsad.yaml"
    path.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": [noida_broker.bootstrap_servers], "frames_topic": f"frames-{unique}",
                  "dlq_topic": f"dlq-{unique}", "partitions": 1},
        "redis": {"url": redis_server.url, "password": redis_server.password},
        "registry": {"namespace": f"reg-{unique}"},
        "cameras": {camera: {"method": "clip-ad", "class_name": "object", "threshold": 0.5}
                    for camera in ("cam-a", "cam-b")},
    }))  # fmt: skip
    config = load_config(path)
    ensure_topics(config.kafka)
    letters = [_letter(path, "cam-a", "a-1", _RefusedError("not an image"), 3),
               _letter(path, "cam-b", "b-1", _ConflictError("id kept by frames:0:1"), 4),
               _letter(path, "cam-a", "a-2", _RefusedError("too large"), 5, dropped=True)]  # fmt: skip
    with FrameProducer.from_config(config) as producer:
        for letter in letters:
            producer.send_dead_letter(letter).get(timeout=30)
    cli = ["--config", str(path)]

    assert main(["dlq", "list", "--json", *cli]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(row["letter"], row["camera"], row["frame_id"], row["reason"], row["source"]) for row in listed] == [
        ("0:0", "cam-a", "a-1", "not_an_image", f"frames-{unique}:0:3"),
        ("0:1", "cam-b", "b-1", "conflicting_frame_id", f"frames-{unique}:0:4"),
        ("0:2", "cam-a", "a-2", "not_an_image", f"frames-{unique}:0:5"),
    ]
    assert [row["value_dropped"] for row in listed] == [False, False, True]
    assert main(["dlq", "list", "--json", "--camera", "cam-a", "--cause", "not_an_image", *cli]) == 0
    assert [row["letter"] for row in json.loads(capsys.readouterr().out)] == ["0:0", "0:2"]
    assert main(["dlq", "list", "--cause", "nope", *cli]) == 0
    assert "no dead letters" in capsys.readouterr().out

    image = tmp_path / "a-1.jpg"
    assert main(["dlq", "show", "0:0", "--out", str(image), *cli]) == 0
    shown = capsys.readouterr().out
    assert "not an image" in shown and "zsad-frame-id = a-1" in shown
    assert image.read_bytes() == frame_bytes(3)
    assert main(["dlq", "show", "0:9", *cli]) == 2
    assert "no dead letter 0:9" in capsys.readouterr().err

    # The letter without bytes cannot be re-sent, and nothing is sent with it; nothing chosen is an error too.
    assert main(["dlq", "resend", "0:0", "0:2", *cli]) == 2
    assert "0:2" in capsys.readouterr().err
    assert main(["dlq", "resend", *cli]) == 2
    capsys.readouterr()
    assert read_topic(config.kafka, config.kafka.frames_topic, expected=1, timeout_s=2) == []

    assert main(["dlq", "resend", "0:0", "--reason", "encoder fixed", "--actor", "ops", *cli]) == 0
    assert "resent 0:0: cam-a frame a-1" in capsys.readouterr().out
    (record,) = read_topic(config.kafka, config.kafka.frames_topic, expected=1)
    headers = dict(record.headers)
    assert (record.key, record.value) == (b"cam-a", frame_bytes(3))
    assert (headers[H_FRAME_ID], headers[H_CAPTURE_TS]) == (b"a-1", dict(letters[0].headers)[H_CAPTURE_TS])
    assert not [name for name in headers if name.startswith("zsad-dlq-")]
    with redis_server.client() as client:
        audit = ArtifactRegistry.from_config(config.registry, client).audit()
    (entry,) = [e for e in audit if e["action"] == "dlq_resend"]
    assert (entry["method"], entry["actor"], entry["reason"], entry["cause"], entry["to_version"]) == (
        "cam-a", "ops", "encoder fixed", "not_an_image", f"frames-{unique}:0:0")
