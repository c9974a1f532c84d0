"""busctl's replies to NetworkManager's D-Bus calls, as busctl prints them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ec2net.backends import nm_bus
from ec2net.errors import ApplyFailed


def test_load_argv_lists_every_file_after_its_count() -> None:
    argv = nm_bus.load_argv([Path("/run/a.nmconnection"), Path("/run/b.nmconnection")])
    assert argv[:2] == ["busctl", "--system"]
    assert argv[-5:] == [
        "LoadConnections",
        "as",
        "2",
        "/run/a.nmconnection",
        "/run/b.nmconnection",
    ]


def test_load_reply_names_the_files_that_failed() -> None:
    assert nm_bus.parse_load("bas true 0\n") == []
    assert nm_bus.parse_load('bas true 1 "/run/x y.nmconnection"\n') == ["/run/x y.nmconnection"]


@pytest.mark.parametrize(
    "reply",
    [
        "bas false 0\n",  # NetworkManager did not even try
        "",
        "b true\n",
        'bas true 2 "/run/a"\n',  # a count that does not match
        'bas true 1 "/run/a\n',  # an unterminated string
        "bas maybe 0\n",
    ],
)
def test_load_reply_that_is_not_a_success_is_a_retryable_failure(reply: str) -> None:
    with pytest.raises(ApplyFailed) as err:
        nm_bus.parse_load(reply)
    assert err.value.retryable


def test_object_and_string_replies() -> None:
    dev = "/org/freedesktop/NetworkManager/Devices/5"
    assert nm_bus.parse_object(f'o "{dev}"\n') == dev
    assert nm_bus.parse_object('o "/"\n') == nm_bus.NO_OBJECT
    assert nm_bus.parse_string('s "2edf65f1-81ca-5323-8cfa-2afca9263df4"\n').startswith("2edf")
    for bad in ('s "x"', "o relative", 'o "/a" "/b"', ""):
        with pytest.raises(ApplyFailed):
            nm_bus.parse_object(bad)
    with pytest.raises(ApplyFailed):
        nm_bus.parse_string('o "/"')


def test_reapply_passes_an_empty_profile_any_version_no_flags() -> None:
    argv = nm_bus.reapply_argv("/org/freedesktop/NetworkManager/Devices/5")
    assert argv[-5:] == ["Reapply", "a{sa{sv}}tu", "0", "0", "0"]
