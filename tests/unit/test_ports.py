"""The test servers' ports (tests/ports.py): free, distinct, outside the kernel's ephemeral range and
kwokctl's, and a port's partner at an offset free too."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import ports
import pytest


def test_ports_are_distinct_free_and_below_the_ephemeral_and_kwokctl_ranges() -> None:
    chosen = ports.free_ports(20)
    ephemeral = ports._ephemeral_range()
    assert len(set(chosen)) == 20
    for port in chosen:
        assert ports.POOL_BOTTOM <= port < ports.POOL_TOP < 32_768 - 100
        assert port not in ephemeral
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))


def test_a_port_taken_is_never_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = ports.free_ports(60)
    monkeypatch.setattr(ports, "_pool", lambda span: list(pool))
    taken = [socket.socket() for _ in range(50)]
    try:
        for probe, port in zip(taken, pool, strict=False):
            probe.bind(("127.0.0.1", port))
        assert sorted(ports.free_ports(10)) == sorted(pool[50:])
        with pytest.raises(RuntimeError, match="only 10 of 11 free ports"):
            ports.free_ports(11)
    finally:
        for probe in taken:
            probe.close()


def test_with_an_offset_each_partner_is_free_and_no_port_is_another_ones_partner() -> None:
    chosen = ports.free_ports(10, with_offset=10_000)
    partners = {port + 10_000 for port in chosen}
    assert not partners & set(chosen)
    for port in [*chosen, *partners]:
        assert port < ports.POOL_TOP and port not in ports._ephemeral_range()
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))


def test_the_cluster_scripts_read_them_one_a_line() -> None:
    script = Path(ports.__file__)
    printed = subprocess.run([sys.executable, str(script), "3"], capture_output=True, text=True, check=True).stdout
    assert len({int(line) for line in printed.splitlines()}) == 3
