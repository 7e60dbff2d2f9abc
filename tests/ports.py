"""Free TCP ports of 127.0.0.1 for the servers the tests start: the cluster add-ons' webhook and health
servers (tests/cluster/common.sh runs this file), SeaweedFS, MLflow, the storage emulators, torchrun's
master.

A port is chosen before its server binds it, sometimes seconds before (an add-on starts after the
CRDs are applied). A port the kernel hands out (``bind(0)``) lies in its ephemeral range, which every
outgoing connection on the machine draws from too, so in that window a client's connection could take
it and the server then failed with "address already in use". These ports come from below that range
and below the ports kwokctl counts down from 32767 for its control planes, at random (two sessions
choosing at the same moment rarely pick the same one), each bound on the spot to check it is free.

Usage from a shell: ``python3 tests/ports.py N`` prints N such ports, one a line.
"""

from __future__ import annotations

import random
import socket
import sys
from pathlib import Path

# kwokctl takes its control planes' ports counting down from 32767; a few hundred clusters' worth stay clear.
POOL_TOP = 30_000
POOL_BOTTOM = 10_000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_range() -> range:
    try:
        low, high = (int(word) for word in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        low, high = 32_768, 60_999  # Linux's default
    return range(low, high + 1)


def _pool(span: int) -> list[int]:
    """Ports p of the pool such that p + span is in it too, and neither is ephemeral."""
    ephemeral = _ephemeral_range()
    return [
        port
        for port in range(POOL_BOTTOM, POOL_TOP - span)
        if port not in ephemeral and port + span not in ephemeral
    ]


def _bound(port: int) -> socket.socket | None:
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", port))
    except OSError:
        probe.close()
        return None
    return probe


def free_ports(count: int, *, with_offset: int | None = None) -> list[int]:
    """COUNT distinct ports free now (all bound together while choosing, so none repeats); with
    ``with_offset``, each port + that offset is free too and no chosen port is another's partner."""
    candidates = _pool(with_offset or 0)
    random.SystemRandom().shuffle(candidates)  # not the module's generator: a test may have seeded it, alike in every lane
    chosen: list[int] = []
    held: list[socket.socket] = []
    try:
        for port in candidates:
            if len(chosen) == count:
                break
            partners = [port, port + with_offset] if with_offset else [port]
            probes = [_bound(each) for each in partners]
            held.extend(probe for probe in probes if probe is not None)
            if all(probe is not None for probe in probes):
                chosen.append(port)
    finally:
        for probe in held:
            probe.close()
    if len(chosen) < count:
        raise RuntimeError(f"only {len(chosen)} of {count} free ports in {POOL_BOTTOM}-{POOL_TOP}")
    return chosen


def free_port() -> int:
    """One port free now."""
    return free_ports(1)[0]


def hold(ports: list[int]) -> list[socket.socket]:
    """Keep the ports of a server that is down for a while (killed by a test, to be started again on them):
    each bound, not listening, so that no other session's :func:`free_ports` picks it meanwhile (its probes
    bind without SO_REUSEADDR, which a bound port refuses) while a client connecting still finds nothing there
    (refused, as a server that is down). SO_REUSEADDR here: the killed server's connections may linger in
    TIME_WAIT on the port. Close them right before the server starts again. The chaos soak's object store,
    down 30 s, got its admin port taken by another lane's server that started meanwhile."""
    held = []
    for port in ports:
        placeholder = socket.socket()
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            placeholder.bind(("127.0.0.1", port))
        except OSError:
            placeholder.close()  # taken already: holding the others still narrows the window
            continue
        held.append(placeholder)
    return held


if __name__ == "__main__":
    print("\n".join(str(port) for port in free_ports(int(sys.argv[1]))))
