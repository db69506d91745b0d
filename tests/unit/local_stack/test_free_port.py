"""``free_port`` picks listener ports below the kernel's ephemeral range, where client connections never land."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from services.local_stack import service_processes
from services.local_stack.service_processes import LISTENER_PORTS_FROM, free_port


def _ephemeral_from() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


@pytest.mark.skipif(not Path("/proc/sys/net/ipv4/ip_local_port_range").exists(), reason="Linux's range file")
def test_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    ports = {free_port() for _ in range(50)}
    assert all(LISTENER_PORTS_FROM <= port < _ephemeral_from() for port in ports)
    assert len(ports) > 40  # random, not one port handed out again and again
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_a_port_that_is_taken_is_not_picked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        # A range of exactly 1,000 ports that starts at the taken one: every pick but one is free.
        monkeypatch.setattr(service_processes, "LISTENER_PORTS_FROM", taken)
        range_file = tmp_path / "ip_local_port_range"
        range_file.write_text(f"{taken + 1000}\t{taken + 2000}\n")
        monkeypatch.setattr(service_processes, "EPHEMERAL_RANGE_FILE", range_file)
        picked = {free_port() for _ in range(300)}
    assert taken not in picked and all(taken < port < taken + 1000 for port in picked)


def test_without_room_below_the_range_the_os_picks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text("1024\t65535\n")
    monkeypatch.setattr(service_processes, "EPHEMERAL_RANGE_FILE", range_file)
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
