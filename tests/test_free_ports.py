"""Ports for private stacks and test listeners come from outside the kernel's ephemeral range, so no
client socket or ``bind(port 0)`` elsewhere on the machine can take one between the pick and the
service's start. A CI chaos soak once failed when MinIO, restarted after a kill, found its port
(picked inside the range) "in use by another process"."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from qrsdp_sim import stack


def _ephemeral() -> range:
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_picked_ports_are_outside_the_ephemeral_range_and_distinct(kind: int) -> None:
    ephemeral = _ephemeral()
    taken: set[int] = set()
    singles = [stack.free_port(taken, kind) for _ in range(40)]
    pairs = [stack.free_port_pair(taken, kind) for _ in range(40)]
    picked = singles + pairs + [p + 1 for p in pairs]
    assert not [p for p in picked if p in ephemeral], ephemeral
    assert len(set(picked)) == len(picked) == 120
    assert taken == set(picked)


def test_a_port_someone_holds_is_never_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    free = stack.free_port_pair(set())
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", free))
        holder.listen(1)
        # Only two candidates: the held one and the one above it.
        monkeypatch.setattr(stack, "private_port_range", lambda: range(free, free + 2))
        assert {stack.free_port() for _ in range(20)} == {free + 1}
        with pytest.raises(stack.StackError, match="no free port"):
            stack.free_port_pair(set())  # the only pair inside the range starts at the held port
