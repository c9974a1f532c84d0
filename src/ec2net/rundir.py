"""The runtime directory and the files ec2net keeps as root: checked, never through a
symbolic link.

ec2net runs as root and trusts what it finds in its runtime directory (records say what
it owns, and `down` deletes by them). So the directory must be one no other user can
change: `check_dir` creates it 0700 and refuses it, with an error that says why, when it
is a symbolic link, not a directory, owned by another user, or writable by group or
others. A directory of ours with looser read bits (systemd's RuntimeDirectory= makes
0755) is tightened to 0700.

Files are read with O_NOFOLLOW (a symbolic link is an error, ELOOP, never its target)
and replaced atomically: a temporary file of a random name created with O_EXCL and
O_NOFOLLOW beside the target, written, fsynced and renamed over it, all relative to one
open descriptor of the directory. A rename replaces a symbolic link instead of writing
through it, and a name planted in advance makes O_EXCL fail instead of being opened.
A write that fails (ENOSPC, EROFS, EIO) removes its temporary file: the old file stays
whole, and nothing is left half-written. Runtime state is written without fsync
(`durable=False`): the rename alone gives a reader the old file or the new one, and /run
does not outlive a reboot.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from ec2net.errors import UnsafePath

PRIVATE_MODE = 0o700
_TMP_TRIES = 4


def _owner() -> str:
    uid = os.geteuid()
    return "root" if uid == 0 else f"uid {uid}"


def check_dir(path: Path, *, create: bool = True, what: str = "runtime directory") -> None:
    """Make sure `path` is a directory only we can change (see the module doc); create it
    0700 if missing and `create`. Raises UnsafePath, or OSError from mkdir."""
    if create:
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, PRIVATE_MODE)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{what} {path}: is a symbolic link; ec2net does not follow one here")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{what} {path}: not a directory")
    if st.st_uid != os.geteuid():
        raise UnsafePath(
            f"{what} {path}: owned by uid {st.st_uid}, not by {_owner()}; refusing it: "
            "another user could change what ec2net takes as its own"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise UnsafePath(
            f"{what} {path}: writable by group or others (mode {mode:04o}); refusing it: "
            "another user could change what ec2net takes as its own"
        )
    if mode & 0o077:
        with contextlib.suppress(OSError):  # read-only: the check above is what counts
            os.chmod(path, PRIVATE_MODE)


def read_nofollow(path: Path, limit: int = 1 << 20) -> bytes:
    """The file's bytes (at most `limit`); OSError ELOOP if it is a symbolic link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, min(1 << 16, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def is_symlink(err: OSError) -> bool:
    """An O_NOFOLLOW open refused a symbolic link."""
    return err.errno == errno.ELOOP


def replace_file(
    path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True, follow_dir: bool = True
) -> None:
    """Atomically replace `path` with `data` (see the module doc); `durable`: fsync the
    file and the directory as well. With `follow_dir` false, the directory itself must
    not be a symbolic link either (ELOOP)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    dfd = os.open(path.parent, flags if follow_dir else flags | os.O_NOFOLLOW)
    try:
        tmp, fd = _create_tmp(dfd, path.name, mode)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        if durable:
            with contextlib.suppress(OSError):  # the rename itself must survive a crash
                os.fsync(dfd)
    finally:
        os.close(dfd)


def _create_tmp(dfd: int, name: str, mode: int) -> tuple[str, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for attempt in range(_TMP_TRIES):
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return tmp, os.open(tmp, flags, mode, dir_fd=dfd)
        except FileExistsError:
            if attempt == _TMP_TRIES - 1:
                raise
    raise AssertionError("unreachable")
