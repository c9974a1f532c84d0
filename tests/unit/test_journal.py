"""Journal fields: what ec2net sends journald (its native protocol, read back here as
journald parses it), and when it does so instead of writing stderr."""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ec2net import journal


def parse(datagram: bytes) -> dict[str, str]:
    """journald's reading of one native datagram."""
    out = {}
    data = datagram
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            out[key.decode()] = value.decode()
            data = rest
        else:
            (size,) = struct.unpack("<Q", rest[:8])
            out[line.decode()] = rest[8 : 8 + size].decode()
            data = rest[8 + size + 1 :]
    return out


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "socket"))
    sock.settimeout(2)
    yield sock
    sock.close()


def logger_to(path: str) -> tuple[logging.Logger, journal.JournalHandler]:
    handler = journal.JournalHandler(path)
    log = logging.getLogger(f"test-journal-{id(handler)}")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    return log, handler


def test_messages_about_an_eni_carry_its_fields(journald: socket.socket) -> None:
    journal.remember("eth1", "02:00:0a:00:02:14", "eni-0aaa")
    log, handler = logger_to(journald.getsockname())
    try:
        log.warning("%s: configured (%d changes)", "eth1", 3)
        got = parse(journald.recv(65536))
        log.info("mac 02:00:0a:00:02:14: trying again in 2 s")
        by_mac = parse(journald.recv(65536))
        log.info("scan: nothing to do\nsecond line")
        plain = parse(journald.recv(65536))
    finally:
        handler.close()
    assert got["MESSAGE"] == "eth1: configured (3 changes)"
    assert got["PRIORITY"] == "4" and got["SYSLOG_IDENTIFIER"] == "ec2net"
    assert (got["EC2NET_IFNAME"], got["EC2NET_MAC"], got["EC2NET_ENI_ID"]) == (
        "eth1", "02:00:0a:00:02:14", "eni-0aaa",
    )  # fmt: skip
    assert by_mac["EC2NET_ENI_ID"] == "eni-0aaa" and by_mac["EC2NET_IFNAME"] == "eth1"
    assert plain["MESSAGE"] == "scan: nothing to do\nsecond line"  # a length-prefixed value
    assert not any(k.startswith("EC2NET_") for k in plain)


def test_a_reused_name_takes_the_latest_eni(journald: socket.socket) -> None:
    journal.remember("eth7", "02:00:00:00:00:01", "eni-old")
    journal.remember("eth7", "02:00:00:00:00:02", "eni-new")
    assert journal.fields_of("eth7: up")["EC2NET_ENI_ID"] == "eni-new"


def test_no_socket_falls_back_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, handler = logger_to(str(tmp_path / "nothing-listens"))
    handler.fallback = logging.StreamHandler(sys.stderr)
    try:
        log.error("eth1: gone")
    finally:
        handler.close()
    assert "eth1: gone" in capsys.readouterr().err


def test_the_journal_only_when_stderr_is_what_systemd_connected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = (tmp_path / "stream").open("w")
    other = (tmp_path / "other").open("w")
    try:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        monkeypatch.setattr(sys, "stderr", stream)
        assert journal.stderr_is_the_journal()
        monkeypatch.setattr(sys, "stderr", other)  # redirected since (2>file)
        assert not journal.stderr_is_the_journal()
        monkeypatch.delenv("JOURNAL_STREAM")
        monkeypatch.setattr(sys, "stderr", stream)
        assert not journal.stderr_is_the_journal() and journal.handler() is None
    finally:
        stream.close()
        other.close()


def test_what_it_remembers_is_bounded() -> None:
    """A long-running daemon sees thousands of ENIs come and go: the latest are kept."""
    for k in range(journal.MAX_REMEMBERED + 500):
        journal.remember(f"eth{k % 7}", f"02:00:00:00:{k >> 8:02x}:{k & 255:02x}", f"eni-{k:08x}")
    assert len(journal._by_mac) == journal.MAX_REMEMBERED
    assert len(journal._by_name) <= journal.MAX_REMEMBERED
    last = journal.MAX_REMEMBERED + 499
    assert journal._by_mac[f"02:00:00:00:{last >> 8:02x}:{last & 255:02x}"][1] == f"eni-{last:08x}"


def test_a_commands_result_goes_to_the_journal_with_the_enis_fields(
    journald: socket.socket, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under a unit, `ec2net up`'s result (what it prints on a terminal) is a journal
    entry that `journalctl EC2NET_ENI_ID=` finds, whatever the log level (-q)."""
    from ec2net import cli
    from ec2net.converge import Action, Result

    journal.remember("ens7", "02:00:0a:00:01:1e", "eni-0bbb")
    handler = journal.JournalHandler(journald.getsockname())
    monkeypatch.setattr(cli, "_journal", handler)
    monkeypatch.setattr(cli.log, "level", logging.WARNING)
    try:
        cli._print_results([Result("ens7", Action.CONFIGURED, detail="2 changes")])
        got = parse(journald.recv(65536))
    finally:
        handler.close()
    assert got["MESSAGE"] == "ens7: configured (2 changes)"
    assert got["EC2NET_ENI_ID"] == "eni-0bbb" and got["PRIORITY"] == "6"
    assert capsys.readouterr().out == ""  # not twice


def test_the_daemon_logs_what_a_job_changed(caplog: pytest.LogCaptureFixture) -> None:
    """A hot-plug configured by the daemon leaves a line in the journal starting with the
    interface name (so it carries the ENI's fields); an unchanged refresh leaves none."""
    from ec2net import watch
    from ec2net.converge import Action, Result

    caplog.set_level(logging.INFO, logger="ec2net")
    watch._log_results(Result("ens8", Action.CONFIGURED))
    watch._log_results([Result("ens6", Action.UNCHANGED), Result("ens9", Action.REMOVED)])
    watch._log_results(None)
    assert [r.getMessage() for r in caplog.records] == ["ens8: configured", "ens9: removed"]
