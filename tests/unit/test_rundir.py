"""The runtime directory's checks and ec2net's own files: 0700, refused when another
user could change it, never read or written through a symbolic link, no half-written
file when a write fails; the configuration file's own checks and size limit; a record
from the "future" (wall clock stepped back) is not fresh."""

from __future__ import annotations

import errno
import io
import json
import os
import secrets
import stat
import time
from pathlib import Path

import pytest

from ec2net import config
from ec2net.converge import Action
from ec2net.errors import ConfigError, RuntimeDirError, UnsafePath
from ec2net.state import Phase, Record, Store, write_if_changed
from tests.unit.fakes import PRIMARY_MAC, FakeImds, FakeKernel, engine

MAC1 = "02:00:00:00:02:14"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _record(mac: str = MAC1) -> Record:
    return Record(mac, "eni-0bbbbbbbbbbbbbbb1", "eth1", 3, 10001, ["10.0.2.21"])


def test_created_0700_and_a_looser_directory_of_ours_tightened(tmp_path: Path) -> None:
    store = Store(tmp_path / "run")
    store.ensure()
    assert {_mode(d) for d in (store.root, store.records_dir, store.locks_dir)} == {0o700}
    os.chmod(store.root, 0o755)  # as systemd's RuntimeDirectory= makes it
    store.ensure()
    assert _mode(store.root) == 0o700


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_writable_by_group_or_others_refused(tmp_path: Path, mode: int) -> None:
    run = tmp_path / "run"
    run.mkdir()
    os.chmod(run, mode)
    with pytest.raises(UnsafePath, match=f"{run}: writable by group or others"):
        Store(run).ensure()
    assert _mode(run) == mode  # refused, not "fixed"


def test_a_symlinked_runtime_directory_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    (tmp_path / "run").symlink_to(real)
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        Store(tmp_path / "run").ensure()
    assert list(real.iterdir()) == []


@root_only
def test_owned_by_another_user_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    os.chown(run, 65534, 65534)
    with pytest.raises(UnsafePath, match="owned by uid 65534, not by root"):
        Store(run).ensure()


def test_a_symlinked_record_is_never_read(tmp_path: Path) -> None:
    store = Store(tmp_path / "run")
    store.ensure()
    victim = tmp_path / "victim.json"
    victim.write_text(json.dumps({"mac": MAC1}))
    (store.records_dir / "02-00-00-00-02-14.json").symlink_to(victim)
    with pytest.raises(UnsafePath, match="symbolic link"):
        store.load(MAC1)
    with pytest.raises(UnsafePath, match="symbolic link"):
        store.records()


def test_a_write_replaces_a_symlink_never_writes_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    target = tmp_path / "metrics.prom"
    target.symlink_to(victim)
    assert write_if_changed(target, "new\n")
    assert victim.read_text() == "keep me\n"
    assert not target.is_symlink() and target.read_text() == "new\n"


def test_a_symlinked_directory_refused_where_asked(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OSError) as err:
        write_if_changed(tmp_path / "link" / "metrics.prom", "x\n", follow_dir=False)
    assert err.value.errno in (errno.ELOOP, errno.ENOTDIR)
    assert list(real.iterdir()) == []


def test_a_planted_temporary_name_is_not_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary file has a random name and O_EXCL: a symlink planted under the
    name it will take is never written through."""
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    names = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(names))
    (tmp_path / ".f.aaaaaaaaaaaa.tmp").symlink_to(victim)
    assert write_if_changed(tmp_path / "f", "data\n")
    assert victim.read_text() == "keep me\n" and (tmp_path / "f").read_text() == "data\n"


def test_a_failed_write_leaves_the_old_record_whole_and_names_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "run")
    store.save(_record())
    before = (store.records_dir / "02-00-00-00-02-14.json").read_text()

    real_fdopen = os.fdopen

    class Full(io.RawIOBase):
        """A file on a full file system: every write ENOSPC (tmpfs says so at once)."""

        def __init__(self, fd: int) -> None:
            self.fd = fd

        def writable(self) -> bool:
            return True

        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self) -> None:
            os.close(self.fd)
            super().close()

    def fdopen(fd: int, mode: str = "r", *args: object, **kw: object) -> object:
        return Full(fd) if "w" in mode else real_fdopen(fd, mode, *args, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "fdopen", fdopen)
    rec = _record()
    rec.owned_ips.append("10.0.2.22")
    with pytest.raises(RuntimeDirError) as err:
        store.save(rec)
    assert str(err.value) == (
        f"runtime directory {store.root}: cannot write enis/02-00-00-00-02-14.json: "
        "No space left on device (ENOSPC)"
    )
    assert err.value.retryable
    assert sorted(p.name for p in store.records_dir.iterdir()) == ["02-00-00-00-02-14.json"]
    assert (store.records_dir / "02-00-00-00-02-14.json").read_text() == before


def test_locks_and_files_are_private(tmp_path: Path) -> None:
    store = Store(tmp_path / "run")
    with store.lock("global", 1.0):
        pass
    assert _mode(store.locks_dir / "global.lock") == 0o600


# --- the configuration file ---------------------------------------------------------


def _load(path: Path) -> config.Settings:
    return config.load({"EC2NET_CONFIG": str(path), "EC2NET_RUNTIME_DIR": "/nonexistent"})


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_config_writable_by_others_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "ec2net.toml"
    path.write_text("[refresh]\ninterval = 5\n")
    os.chmod(path, mode)
    with pytest.raises(ConfigError, match=rf"{path}: -: file is writable by group or others"):
        _load(path)


def test_config_in_a_directory_others_can_write_refused(tmp_path: Path) -> None:
    d = tmp_path / "etc"
    d.mkdir()
    os.chmod(d, 0o777)
    path = d / "ec2net.toml"
    path.write_text("[refresh]\ninterval = 5\n")
    with pytest.raises(ConfigError, match=r"directory .* is writable by group or others"):
        _load(path)
    os.chmod(d, 0o1777)  # sticky (/tmp): others cannot replace our file
    assert _load(path).refresh_interval == 5


@root_only
def test_config_owned_by_another_user_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec2net.toml"
    path.write_text("[refresh]\ninterval = 5\n")
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="file is owned by uid 65534"):
        _load(path)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"# x\n" * 100_000, f"larger than {config.MAX_CONFIG_BYTES} bytes"),
        (b"[refresh]\ninterval = 5\n" + b" " * (4 << 20), "larger than"),
        (b'[imds]\nendpoints = ["' + b"a" * 200_000 + b'"]\n', "imds.endpoints"),
        (b"[refresh]\ninterval = 5\x00\n", "not valid TOML"),
        (b"[refresh]\ninterval = 5 # \xff\xfe\n", "not valid TOML"),
    ],
    ids=["100000 lines", "4 MiB", "a 200 KB line", "NUL", "not UTF-8"],
)
def test_config_inputs_no_one_writes_refused(tmp_path: Path, body: bytes, says: str) -> None:
    path = tmp_path / "ec2net.toml"
    path.write_bytes(body)
    with pytest.raises(ConfigError) as err:
        _load(path)
    assert str(path) in str(err.value) and says in str(err.value)
    assert len(str(err.value)) < 400  # names the file, not the whole value


def test_dev_null_is_no_configuration(tmp_path: Path) -> None:
    assert _load(Path(os.devnull)) == config.Settings(
        config_path=os.devnull, runtime_dir="/nonexistent"
    )


# --- the wall clock ------------------------------------------------------------------


def test_a_record_from_the_future_is_not_fresh(tmp_path: Path) -> None:
    """--fresh-within compares wall clocks: after the clock was stepped back, a record
    written before the step looks younger than zero, which says nothing."""
    kernel = FakeKernel()
    kernel.plug("eth0", PRIMARY_MAC, 2)
    kernel.plug("eth1", MAC1, 3)
    imds = FakeImds()
    imds.eni(PRIMARY_MAC, 0, ["10.0.1.10"], subnet="10.0.1.0/24")
    imds.eni(MAC1, 1, ["10.0.2.20", "10.0.2.21"])
    engine(kernel, imds, tmp_path).up("eth1")
    store = Store(tmp_path / "run")
    rec = store.load(MAC1)
    assert rec is not None and rec.phase == Phase.APPLIED.value
    rec.updated = time.time() + 3600  # written an hour "ahead" of the clock now
    store.save(rec, touch=False)
    before = imds.requests
    r = engine(kernel, imds, tmp_path).up("eth1", fresh_within=10)
    assert imds.requests > before and r.action is Action.UNCHANGED
