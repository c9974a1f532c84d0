"""The host side of the guest agent never blocks past its deadline.

QEMU stops reading the agent's socket while the guest has not opened its port; pings
then pile up until the socket is full. A blocking ``sendall`` there once hung a CI run
for 30 minutes in a guest's boot, with no diagnostics.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from systest import agent as agent_mod
from systest.agent import Agent, AgentError, SendBlocked


def test_wait_ready_ends_at_its_deadline_when_nobody_reads(
    connected: tuple[Agent, socket.socket],
) -> None:
    a, peer = connected
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # fill the socket the way hours of unanswered pings would
    sent = 0
    with pytest.raises(SendBlocked) as blocked:
        for _ in range(100_000):
            a._submit("fill", {"pad": "x" * 100}, 0.0)
            sent += 1
    assert sent > 10 and not blocked.value.partial
    start = time.monotonic()
    with pytest.raises(AgentError, match="not ready within 2"):
        a.wait_ready(2.0)
    assert time.monotonic() - start < 10  # bounded (the deadline is 2 s)


def test_a_torn_line_closes_the_connection(
    connected: tuple[Agent, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = connected
    monkeypatch.setattr(agent_mod, "SEND_TIMEOUT", 0.5)
    # a request larger than both buffers goes out in part, then stalls
    with pytest.raises(SendBlocked) as blocked:
        a.submit("write", data_b64="A" * (8 << 20))
    assert blocked.value.partial
    with pytest.raises(AgentError, match="not connected"):
        a.submit("ping")


def test_replies_route_to_their_requests(connected: tuple[Agent, socket.socket]) -> None:
    a, conn = connected
    first = a.submit("ping")
    second = a.submit("ping")
    lines = b""
    while lines.count(b"\n") < 2:
        lines += conn.recv(4096)
    ids = [json.loads(ln)["id"] for ln in lines.splitlines()]
    for req_id in reversed(ids):
        conn.sendall(json.dumps({"id": req_id, "boot_id": f"b{req_id}"}).encode() + b"\n")
    assert first.result(5)["boot_id"] == f"b{ids[0]}"
    assert second.result(5)["boot_id"] == f"b{ids[1]}"
