"""Starting and stopping the local services: only our process, also on errors, with useful failures."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from services.config import KafkaConfig
from services.frame_path.producer import ensure_topics
from services.local_stack.service_processes import NoidaBroker, RedisServer, ServiceError, _package_binary, free_port

pytestmark = pytest.mark.integration


def process_gone(pid: int) -> bool:
    # Our own child, already reaped by Popen.wait(): its PID is not in use unless the kernel recycled it.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def port_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return True
    return False


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_redis_is_stopped_when_the_body_raises() -> None:
    server = RedisServer()
    with pytest.raises(RuntimeError, match="boom"), server:
        pid, port, data_dir = server.pid, server.port, server.data_dir
        assert pid is not None and data_dir is not None and data_dir.is_dir()
        assert server.client().ping()
        raise RuntimeError("boom")
    assert server.pid is None and process_gone(pid) and port_closed(port)
    assert not data_dir.exists()  # a temporary data directory is removed with the service


def test_taken_port_is_refused_without_touching_its_owner(redis_server: RedisServer, tmp_path: Path) -> None:
    clash = RedisServer(port=redis_server.port, data_dir=tmp_path)
    with pytest.raises(ServiceError, match="already in use"):
        clash.start()
    assert clash.pid is None
    assert redis_server.client().ping()  # the running server was not touched


def test_noida_keeps_topics_and_records_across_a_clean_restart(tmp_path: Path) -> None:
    port = free_port()
    with NoidaBroker(port=port, data_dir=tmp_path) as broker:
        pid = broker.pid
        kafka = KafkaConfig(bootstrap_servers=[broker.bootstrap_servers], frames_topic="kept", partitions=2)
        ensure_topics(kafka)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        producer.send("kept", key=b"cam1", value=b"frame").get(timeout=10)
        producer.close()
    assert pid is not None and process_gone(pid) and port_closed(port)  # the broker itself, not a wrapper

    with NoidaBroker(port=port, data_dir=tmp_path) as broker:
        consumer = KafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers, receive_message_max_bytes=kafka.receive_message_max_bytes
        )
        assert consumer.partitions_for_topic("kept") == {0, 1}
        partitions = [TopicPartition("kept", p) for p in (0, 1)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        values = [r.value for batch in consumer.poll(timeout_ms=5000).values() for r in batch]
        consumer.close()
        assert values == [b"frame"]


def test_missing_package_names_the_install_command() -> None:
    with pytest.raises(ServiceError, match="pip install some-pkg"):
        _package_binary("zsad_no_such_package", "bin/x", "pip install some-pkg")
