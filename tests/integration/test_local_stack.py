"""``zsad up`` / ``produce`` / ``status`` / ``results`` / ``down`` on a tiny model, and what the local stack keeps.

The README's main command, as a user runs it: the stack runs in its own process with its own Ray, Redis and
broker; its state home (``$ZSAD_HOME``) is a temporary directory, the commands after ``up`` run from another
directory (they find the stack through the state home), and ``down`` must leave nothing running.

Then the stack's durability and isolation: results survive a Redis kill -9, ``down``/``up`` (the same password),
large frames (above Kafka's default 1 MiB) pass, an oversized one is refused, every socket is on loopback, and
``zsad replay`` restores lost results once. Each of those steps failed on the stack before Redis had an
append-only file, a stored password, topics sized for ``limits.max_bytes`` and a loopback Ray node, or before
``zsad replay`` existed.

One test and two starts of the stack for all of it: a start costs 15-30 s, so the checks share the first stack
instead of each starting its own; the second start is the ``down``/``up`` being tested.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from process_tree import descendants

from services.cli.main import main
from services.config import load_config
from services.local_stack.service_processes import RedisServer, port_in_use
from services.local_stack.stack_process import REDIS_AUTH_FILE, StackState, process_alive
from services.stores.result_store import ResultStore, events_key, map_key, result_key, scores_key
from zsad_core.imageio import encode_png

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CAMERA = "line1"
GATE_CAMERA = "dock"  # its frames come through the folder gateway that `zsad up` runs
GATE_FILES = 3
SMALL_FRAMES = 12
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def _processed(metrics: str) -> float:
    """The highest ``line1`` frames-processed counter in a Prometheus text page (0 before its first export)."""
    lines = [line for line in metrics.splitlines()
             if line.startswith("ray_zsad_frames_processed_total{") and f'camera="{CAMERA}"' in line]  # fmt: skip
    return max((float(line.rsplit(" ", 1)[1]) for line in lines), default=0.0)


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """(address, pid) of every listening TCP socket owned by ``pids``, from ``ss``."""
    output = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in output.splitlines():
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)} & pids
        if owners:
            found.append((line.split()[3], min(owners)))
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "(exited)"


def _host(address: str) -> str:
    host = address.rsplit(":", 1)[0]
    return host.strip("[]")


def _wait_for_results(store: ResultStore, expected: int, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while store.count_results(CAMERA) < expected:
        assert time.monotonic() < deadline, f"{store.count_results(CAMERA)} of {expected} results after {timeout_s} s"
        time.sleep(0.25)


def _zsad(*args: str) -> str:
    """A ``zsad`` command's output, run in its own process as an operator runs it: the commands that join the
    stack's Ray as a driver cannot join from this process, which may hold the suite's own Ray."""
    command = [sys.executable, "-m", "services.cli.main", *args]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout


def _replay(*start: str) -> dict:
    """``zsad replay --json``, in its own process."""
    return json.loads(_zsad("replay", "--camera", CAMERA, *start, "--json"))


def _stored_frames(store: ResultStore) -> set[str]:
    return {key.decode().rsplit(":", 1)[1] for key in store.client.scan_iter(match=result_key(CAMERA, "*"))}


@pytest.mark.takes_long(
    reason="two `zsad up` stacks in turn (each its own Ray, Redis and broker), a Redis kill"
    " -9 and two replays in subprocesses"
)
def test_up_produce_status_results_down_and_results_survive_redis_kill_down_up_large_frames_and_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZSAD_HOME", str(tmp_path / "home"))
    # The stack's Ray exports metrics every second instead of every 10 s (its default): read by every Ray process
    # that `zsad up` starts.
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "1000")
    monkeypatch.chdir(tmp_path)
    stack_dir = tmp_path / "home" / "stack"
    hot = tmp_path / "hot"  # the folder of the gateway that `zsad up` starts for the second camera
    hot.mkdir()
    config = {
        "cameras": {camera: {"method": "clip-ad", "class_name": "bottle", "threshold": 0.5, "image_size": 64}
                    for camera in (CAMERA, GATE_CAMERA)},
        "gateways": {GATE_CAMERA: {"kind": "folder", "path": str(hot), "settle_s": 0.0, "rescan_s": 0.1}},
        "serving": {"backbone": "zsad-tiny-vit", "torch_threads": 1},
        "ingest": {"num_actors": 1},
        "kafka": {"partitions": 2},  # one actor reads both; `zsad ingest scale 2` gives each its own
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(0)
    big = tmp_path / "big"
    big.mkdir()
    # Noise does not compress: about 5.2 MB of PNG, beyond the 1 MiB that Kafka's defaults allow.
    (big / "frame.png").write_bytes(encode_png(rng.integers(0, 256, (1000, 1750, 3), dtype=np.uint8)))
    assert (big / "frame.png").stat().st_size > 5_000_000
    oversized = tmp_path / "oversized"
    oversized.mkdir()
    limit = load_config(str(tmp_path / "tiny.yaml")).limits.max_bytes
    (oversized / "frame.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(limit))

    assert main(["up", "--config", "tiny.yaml"]) == 0
    state = StackState.read(stack_dir)
    try:
        assert state is not None and state.status == "ready"
        assert ((stack_dir / "config.yaml").stat().st_mode & 0o777) == 0o600  # it holds the Redis password
        assert main(["up"]) == 0 and "already running" in capsys.readouterr().out  # idempotent
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")

        # --- up / produce / status / results, from another directory ---
        assert main(["produce", "--camera", CAMERA, "--synthetic", "--count", str(SMALL_FRAMES), "--size", "64"]) == 0
        deadline = time.monotonic() + 120
        while True:
            capsys.readouterr()
            assert main(["status", "--json"]) == 0
            status = json.loads(capsys.readouterr().out)
            if {row["camera"]: row["frames"] for row in status["cameras"]}[CAMERA] >= SMALL_FRAMES:
                break
            assert time.monotonic() < deadline, f"{SMALL_FRAMES} results did not arrive: {status}"
            time.sleep(0.5)
        assert status["ingest"]["actors"][0]["counts"]["stored"] == SMALL_FRAMES
        assert main(["results", "--camera", CAMERA, "--json"]) == 0
        assert len(json.loads(capsys.readouterr().out)) == SMALL_FRAMES
        # The pipeline's metrics reach Ray's Prometheus endpoint (what the dashboard and Grafana read), every 1 s
        # (RAY_metrics_report_interval_ms above): an export may still show a count from before the last frames,
        # so wait until it reaches 12, then check that it is exactly 12.
        deadline = time.monotonic() + 60
        while (processed := _processed(_get(state.metrics_url))) < SMALL_FRAMES:
            assert time.monotonic() < deadline, f"the zsad metrics showed {processed} frames after 60 s"
            time.sleep(0.25)
        assert processed == SMALL_FRAMES

        # --- the configured folder gateway runs beside the stack: files in, decisions out, its state in status ---
        for number in range(GATE_FILES):
            (hot / f"part-{number}.png").write_bytes(encode_png(np.full((48, 48, 3), 40 * number, np.uint8)))
        gate_store = ResultStore.from_config(load_config(stack_dir / "config.yaml"))
        deadline = time.monotonic() + 90
        while gate_store.count_results(GATE_CAMERA) < GATE_FILES:
            assert time.monotonic() < deadline, "the gateway's files got no results in 90 s"
            time.sleep(0.25)
        gate_store.close()
        assert sorted(path.name for path in (hot / "done").iterdir()) == [f"part-{n}.png" for n in range(GATE_FILES)]
        capsys.readouterr()
        deadline = time.monotonic() + 30
        while True:  # the heartbeat is written every few seconds
            assert main(["status", "--json"]) == 0
            (gateway,) = json.loads(capsys.readouterr().out)["gateways"]
            if gateway["sent"] == GATE_FILES or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert (gateway["camera"], gateway["state"], gateway["kind"], gateway["sent"], gateway["failed"]) == (
            GATE_CAMERA, "running", "folder", GATE_FILES, 0)

        # --- every socket the stack's processes listen on is on loopback (Ray's GCS, raylet, workers, metrics) ---
        sockets = _listening(descendants(state.pid))
        assert len(sockets) >= 6, sockets  # Redis, the broker, GCS, raylet, dashboard, Serve at least
        outside = [(address, _command(pid)) for address, pid in sockets if _host(address) not in LOOPBACK]
        # Known exception: each Serve replica's inter-deployment gRPC server, which Ray Serve 2.60 binds to
        # [::]:0 with no option to change it (ray/serve/_private/replica.py); exactly one per replica, no more.
        replica_grpc = [entry for entry in outside if entry[1].startswith("ray::ServeReplica:") and entry[0][0] == "*"]
        assert sorted(command.split()[0] for _, command in replica_grpc) == [
            "ray::ServeReplica:zsad:IngestController", "ray::ServeReplica:zsad:Inspector",
            "ray::ServeReplica:zsad:OperatorView",
        ], outside
        assert len(outside) == len(replica_grpc), outside
        assert state.metrics_url.startswith("http://127.0.0.1:")

        password_file = stack_dir / REDIS_AUTH_FILE
        password = password_file.read_text().strip()
        assert (password_file.stat().st_mode & 0o777) == 0o600
        stack_config = load_config(stack_dir / "config.yaml")
        assert stack_config.redis.password is not None
        assert stack_config.redis.password.get_secret_value() == password

        # --- a large frame passes (beside the 12 small ones above); one above limits.max_bytes is refused ---
        assert main(["produce", "--camera", CAMERA, "--images", str(big)]) == 0
        store = ResultStore.from_config(stack_config)
        _wait_for_results(store, SMALL_FRAMES + 1)
        frames = _stored_frames(store)
        assert len(frames) == SMALL_FRAMES + 1
        capsys.readouterr()

        # Above limits.max_bytes: a clear error, exit 2, and nothing sent.
        assert main(["produce", "--camera", CAMERA, "--images", str(oversized)]) == 2
        error = capsys.readouterr().err
        assert "zsad: error (too_large)" in error and f"{limit:,}" in error and "Traceback" not in error

        # (a) kill -9 Redis 2 s after the last write (appendfsync everysec), restart it on the stack's directory.
        time.sleep(2)
        redis_pid = state.children["redis"]
        port = int(stack_config.redis.url.rsplit(":", 1)[1].split("/")[0])
        os.kill(redis_pid, signal.SIGKILL)
        while port_in_use(port):  # the stack process reaps its child only on `down`: wait for the port instead
            time.sleep(0.05)
        with RedisServer(port=port, data_dir=stack_dir / "redis", password=password, persistent=True):
            assert _stored_frames(store) == frames
            assert store.count_results(CAMERA) == len(frames)
            store.client.connection_pool.disconnect()
    finally:
        assert main(["down"]) == 0
    # `down` leaves nothing running and removes the state and the effective configuration (which holds secrets).
    assert not process_alive(state.pid)
    assert not any(process_alive(pid) for pid in state.children.values())
    assert not any(process_alive(pid) for pid in state.gateways.values())
    assert not (stack_dir / "state.json").exists() and not (stack_dir / "config.yaml").exists()

    # (b) down, then up: the same password and every result.
    monkeypatch.chdir(tmp_path)
    assert main(["up", "--config", "tiny.yaml"]) == 0
    state = StackState.read(stack_dir)
    try:
        assert state is not None and state.status == "ready"
        assert password_file.read_text().strip() == password
        stack_config = load_config(stack_dir / "config.yaml")
        assert stack_config.redis.password is not None and stack_config.redis.password.get_secret_value() == password
        store = ResultStore.from_config(stack_config)
        assert _stored_frames(store) == frames
        events_before = store.count_events(CAMERA)
        assert events_before == len(frames)

        # (c) the camera's results are lost; replay restores each once, and appends one event per restored frame.
        with store.client.pipeline(transaction=False) as pipe:
            for frame_id in frames:
                pipe.delete(result_key(CAMERA, frame_id), map_key(CAMERA, frame_id))
            pipe.delete(scores_key(CAMERA))
            pipe.execute()
        assert _stored_frames(store) == set()
        report = _replay("--from-offset", "0")
        assert (report["frames"], report["restored"], report["already_stored"]) == (len(frames), len(frames), 0)
        assert (report["invalid"], report["failed"]) == (0, 0)
        assert _stored_frames(store) == frames and store.count_results(CAMERA) == len(frames)
        events = Counter(fields[b"frame_id"].decode() for _, fields in store.client.xrange(events_key(CAMERA)))
        assert events == dict.fromkeys(frames, 2)

        # A second replay finds every result and changes nothing.
        report = _replay("--since", "0")
        assert (report["frames"], report["restored"], report["already_stored"]) == (len(frames), 0, len(frames))
        assert store.count_events(CAMERA) == 2 * len(frames)
        store.close()

        # (d) ingest scaled from the command line, and the status asked of the cluster by its address (as for a
        # cluster that `zsad up` did not start): the controller itself answers, with the new actors.
        assert _zsad("ingest", "scale", "2").splitlines() == ["2 ingest actors", "  actor 0: partitions 0",
                                                               "  actor 1: partitions 1"]  # fmt: skip
        actors = json.loads(_zsad("status", "--json", "--address", state.ray_address))["ingest"]["actors"]
        assert [(actor["partitions"], actor["healthy"]) for actor in actors] == [([0], True), ([1], True)]
    finally:
        assert main(["down"]) == 0
    assert not process_alive(state.pid)
