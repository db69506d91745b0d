"""The result store against a real redis-server: password, round trip, idempotency, TTLs, trimming."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import redis
from pydantic import SecretStr

from services.config import RedisConfig
from services.local_stack.service_processes import RedisServer
from services.stores.result_store import (
    MAP_LEVELS,
    FrameResult,
    ResultStore,
    StoredSource,
    WriteOutcome,
    WriteReceipt,
    events_key,
    map_key,
    result_key,
    scores_key,
)

pytestmark = pytest.mark.integration
TTL_S = 600
STORED, DUPLICATE, CONFLICT = WriteOutcome.STORED, WriteOutcome.DUPLICATE, WriteOutcome.CONFLICT


def outcomes(receipts: list[WriteReceipt]) -> list[WriteOutcome]:
    return [receipt.outcome for receipt in receipts]


@pytest.fixture
def store(redis_server: RedisServer) -> ResultStore:
    config = RedisConfig(url=redis_server.url, password=SecretStr(redis_server.password), result_ttl_s=TTL_S)
    store = ResultStore.from_config(config)
    yield store
    store.close()


def make_batch(cams: list[str], per_cam: int, seed: int = 0) -> list[FrameResult]:
    rng = np.random.default_rng(seed)
    batch = []
    for cam in cams:
        for index in range(per_cam):
            shape = (24 + index, 32)  # a different shape per frame: each map must come back with its own
            batch.append(
                FrameResult(
                    camera=cam,
                    frame_id=f"f-{index:03d}",
                    score=float(rng.uniform(0, 1)),
                    threshold=0.5,
                    method="winclip",
                    anomaly_map=rng.uniform(-1.0, 3.0, size=shape).astype(np.float32),
                    prompt_version="v3" if index % 2 else None,
                    partition=index % 4,
                    offset=100 + index,
                    capture_ts=1_767_000_000.0 + index,
                    infer_ts=1_767_000_000.5 + index,
                )
            )
    return batch


@pytest.mark.parametrize("protocol", [2, 3])
def test_password_is_required(redis_server: RedisServer, protocol: int) -> None:
    # retry=None: redis-py counts auth errors as connection errors and would back off for ~5 s before failing.
    options = {"host": redis_server.host, "port": redis_server.port, "protocol": protocol, "retry": None}
    with pytest.raises(redis.AuthenticationError, match=r"Authentication required|authenticated"):  # NOAUTH, HELLO
        redis.Redis(**options).ping()
    with pytest.raises(redis.AuthenticationError, match="invalid username-password"):
        redis.Redis(password="wrong", **options).ping()
    with redis_server.client(decode_responses=True) as client:
        assert client.ping()
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("save")["save"] == ""


def test_ping(store: ResultStore) -> None:
    assert store.ping() is True


def test_batch_round_trip(store: ResultStore, unique: str) -> None:
    cams = [f"a{unique}", f"b{unique}"]
    batch = make_batch(cams, per_cam=5)
    assert outcomes(store.write_results(batch)) == [STORED] * 10

    for frame in batch:
        stored = store.get_result(frame.camera, frame.frame_id)
        assert stored is not None
        assert (stored.camera, stored.frame_id, stored.method) == (frame.camera, frame.frame_id, "winclip")
        assert stored.score == frame.score and stored.threshold == 0.5 and stored.label == frame.label
        assert stored.prompt_version == frame.prompt_version
        assert (stored.partition, stored.offset) == (frame.partition, frame.offset)
        assert (stored.capture_ts, stored.infer_ts) == (frame.capture_ts, frame.infer_ts)
        assert stored.write_ts >= frame.infer_ts
        decoded = store.get_map(frame.camera, frame.frame_id)
        assert decoded is not None and decoded.shape == frame.anomaly_map.shape
        span = float(frame.anomaly_map.max() - frame.anomaly_map.min())
        assert np.abs(decoded - frame.anomaly_map).max() <= span / MAP_LEVELS

    for cam in cams:
        assert store.count_events(cam) == 5
        expected = sorted(((f.frame_id, f.score) for f in batch if f.camera == cam), key=lambda item: -item[1])
        assert store.worst(cam, 3) == expected[:3]
        assert [r.frame_id for r in store.recent(cam, 2)] == ["f-004", "f-003"]  # newest first
    assert store.get_result(cams[0], "never-written") is None
    assert store.get_map(cams[0], "never-written") is None


def test_rewrite_changes_nothing(store: ResultStore, unique: str) -> None:
    cam = f"c{unique}"
    batch = make_batch([cam], per_cam=4)
    assert outcomes(store.write_results(batch)) == [STORED] * 4
    client = store.client
    before = {
        "hashes": [client.hgetall(result_key(cam, f.frame_id)) for f in batch],
        "maps": [client.get(map_key(cam, f.frame_id)) for f in batch],
        "events": client.xrange(events_key(cam)),
    }
    # The same frames again, with other scores and maps as a re-run of the model might give.
    replay = make_batch([cam], per_cam=4, seed=1)
    assert outcomes(store.write_results(replay)) == [DUPLICATE] * 4
    mixed = [*replay[:2], *make_batch([cam], per_cam=6)[4:]]
    assert outcomes(store.write_results(mixed)) == [DUPLICATE, DUPLICATE, STORED, STORED]
    assert store.count_events(cam) == 6
    assert [client.hgetall(result_key(cam, f.frame_id)) for f in batch] == before["hashes"]
    assert [client.get(map_key(cam, f.frame_id)) for f in batch] == before["maps"]
    assert client.xrange(events_key(cam))[:4] == before["events"]
    assert [client.zscore(scores_key(cam), f.frame_id) for f in batch] == [f.score for f in batch]
    assert store.write_result(batch[0]).outcome is DUPLICATE


def test_ttls(redis_server: RedisServer, unique: str) -> None:
    cam, short = f"t{unique}", f"s{unique}"
    with redis_server.client() as client:
        store = ResultStore(client, result_ttl_s=TTL_S, camera_ttl_s={short: 30})
        store.write_results([*make_batch([cam], 1), *make_batch([short], 1)])
        assert 0 < client.ttl(result_key(cam, "f-000")) <= TTL_S
        assert 0 < client.ttl(map_key(cam, "f-000")) <= TTL_S
        assert client.ttl(result_key(cam, "f-000")) >= TTL_S - 5
        assert 0 < client.ttl(result_key(short, "f-000")) <= 30
        assert 0 < client.ttl(map_key(short, "f-000")) <= 30


def test_frame_without_map(store: ResultStore, unique: str) -> None:
    cam = f"n{unique}"
    assert store.write_result(FrameResult(cam, "f1", score=0.9, threshold=0.5, method="clip-ad")).outcome is STORED
    stored = store.get_result(cam, "f1")
    assert stored is not None and stored.label == 1 and stored.map_min is None
    assert store.get_map(cam, "f1") is None
    assert store.client.exists(map_key(cam, "f1")) == 0


def test_scores_are_trimmed_and_expired_results_leave_the_worst_view(redis_server: RedisServer, unique: str) -> None:
    cam = f"w{unique}"
    with redis_server.client() as client:
        store = ResultStore(client, scores_maxlen=3)
        frames = [FrameResult(cam, f"f{i}", score=i / 10, threshold=0.5, method="winclip") for i in range(6)]
        store.write_results(frames)
        assert client.zcard(scores_key(cam)) == 3
        assert store.worst(cam, 10) == [("f5", 0.5), ("f4", 0.4), ("f3", 0.3)]
        client.delete(result_key(cam, "f5"))  # as if its TTL had run out
        assert store.worst(cam, 2) == [("f4", 0.4), ("f3", 0.3)]
        assert client.zscore(scores_key(cam), "f5") is None


def test_script_cache_loss_is_recovered(store: ResultStore, unique: str) -> None:
    cam = f"l{unique}"
    store.write_results(make_batch([cam], 2))
    store.client.script_flush()
    assert outcomes(store.write_results(make_batch([cam], 3))) == [DUPLICATE, DUPLICATE, STORED]
    assert store.count_events(cam) == 3


def test_events_stream_is_capped(redis_server: RedisServer, unique: str) -> None:
    cam = f"e{unique}"
    with redis_server.client() as client:
        store = ResultStore(client, events_maxlen=10)
        frames = [FrameResult(cam, f"f{i}", score=0.1, threshold=0.5, method="winclip") for i in range(400)]
        store.write_results(frames)
        # MAXLEN ~ trims whole stream nodes (100 entries by default), so the cap is approximate.
        assert 10 <= store.count_events(cam) <= 110


def test_a_reused_frame_id_with_other_bytes_is_a_conflict_and_changes_nothing(store: ResultStore, unique: str) -> None:
    cam = f"x{unique}"
    first = FrameResult(cam, "f1", score=0.2, threshold=0.5, method="clip-ad", digest="a" * 32)
    assert store.write_result(first).outcome is STORED
    before = store.client.hgetall(result_key(cam, "f1"))
    again = FrameResult(cam, "f1", score=0.9, threshold=0.5, method="clip-ad", digest="a" * 32)
    other = FrameResult(cam, "f1", score=0.9, threshold=0.5, method="clip-ad", digest="b" * 32)
    unknown = FrameResult(cam, "f1", score=0.9, threshold=0.5, method="clip-ad")  # a writer that records none
    assert outcomes(store.write_results([again, other, unknown])) == [DUPLICATE, CONFLICT, DUPLICATE]
    assert store.client.hgetall(result_key(cam, "f1")) == before
    assert store.count_events(cam) == 1
    assert store.stored_sources([(cam, "f1"), (cam, "f2")]) == [StoredSource("a" * 32, -1, -1), None]


def _pair(cam: str) -> tuple[FrameResult, FrameResult]:
    """Two records of one frame id with other bytes: ``earlier`` at offset 10, ``later`` at offset 11."""
    rng = np.random.default_rng(3)
    common = {"camera": cam, "frame_id": "f1", "threshold": 0.5, "method": "clip-ad", "partition": 2}
    earlier = FrameResult(**common, score=0.2, offset=10, digest="a" * 32, anomaly_map=rng.uniform(size=(8, 8)))
    later = FrameResult(**common, score=0.9, offset=11, digest="b" * 32, anomaly_map=rng.uniform(size=(6, 6)))
    return earlier, later


@pytest.mark.parametrize("later_first", [False, True])
def test_the_lower_offset_wins_a_frame_id_conflict_whichever_is_written_first(
    store: ResultStore, unique: str, later_first: bool
) -> None:
    cam = f"w{later_first:d}{unique}"
    earlier, later = _pair(cam)
    if later_first:
        assert store.write_result(later) == WriteReceipt(STORED)
        assert store.write_result(earlier) == WriteReceipt(WriteOutcome.REPLACED, 2, 11)
    else:
        assert store.write_result(earlier) == WriteReceipt(STORED)
        assert store.write_result(later) == WriteReceipt(CONFLICT, 2, 10)

    kept = store.get_result(cam, "f1")
    assert (kept.offset, kept.digest, kept.score) == (10, "a" * 32, 0.2)
    assert kept.replaces == ("2:11" if later_first else "")
    assert store.get_map(cam, "f1").shape == (8, 8)
    assert store.worst(cam, 5) == [("f1", 0.2)]
    # One event per frame id: the replaced result's event is gone, the kept one's says what it replaced.
    assert [(event.offset, event.replaces) for event in store.recent(cam, 10)] == [(10, kept.replaces)]
    # Re-deliveries change nothing: the earlier record is a duplicate, the later one is refused again.
    before = store.client.hgetall(result_key(cam, "f1"))
    assert store.write_results([later, earlier]) == [WriteReceipt(CONFLICT, 2, 10), WriteReceipt(DUPLICATE, 2, 10)]
    assert store.client.hgetall(result_key(cam, "f1")) == before
    assert store.count_events(cam) == 1


def test_a_result_without_a_kafka_position_neither_replaces_nor_is_replaced(store: ResultStore, unique: str) -> None:
    cam = f"n{unique}"
    earlier, later = _pair(cam)
    unplaced = FrameResult(cam, "f1", score=0.5, threshold=0.5, method="clip-ad", digest="c" * 32)
    assert store.write_result(later).outcome is STORED
    assert store.write_result(unplaced) == WriteReceipt(CONFLICT, 2, 11)
    other = FrameResult(cam, "f2", score=0.5, threshold=0.5, method="clip-ad", digest="c" * 32)
    assert store.write_result(other).outcome is STORED
    assert store.write_result(dataclasses.replace(earlier, frame_id="f2")) == WriteReceipt(CONFLICT)
