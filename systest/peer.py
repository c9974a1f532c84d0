"""AWS's amazon-ec2-net-utils release 2.7.4, the peer the system tier measures against.

It is never part of this repository: the image build runs the release's own
`make install` from a directory beside the checkout (``EC2NET_SYSTEST_PEER``, default
``../shared/peers/amazon-ec2-net-utils-2.7.4`` relative to the checkout) into the guest's
root (the `aws274` flavour), or installs the Debian package built from the release's own
debian/ (`build_deb`, the `aws274deb` flavour, where switching to ec2net is a package
swap); then image.py makes the same driver edits as for Debian's package.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PEER_VERSION = "2.7.4"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_PEER = Path("..") / "shared" / "peers" / f"amazon-ec2-net-utils-{PEER_VERSION}"


class PeerMissing(RuntimeError):
    pass


def peer_dir() -> Path:
    env = os.environ.get("EC2NET_SYSTEST_PEER")
    path = Path(env) if env else (REPO / DEFAULT_PEER).resolve()
    if not (path / "GNUmakefile").is_file():
        raise PeerMissing(
            f"amazon-ec2-net-utils {PEER_VERSION} not found at {path} "
            "(set EC2NET_SYSTEST_PEER to its source directory)"
        )
    return path


def tree_digest(path: Path) -> str:
    """Content hash of a source tree (this release, or rhel_guest's scripts): part of
    the image's cache key."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def make_install(src: Path, root: Path, log_file: Path) -> None:
    """The release's own `make install` into `root` (binaries in /usr/bin, where its
    units expect them); the source tree is only read."""
    with log_file.open("ab") as out:
        out.write(f"\n$ make -C {src} install DESTDIR={root} PREFIX=/usr\n".encode())
        out.flush()
        proc = subprocess.run(
            ["make", "-C", str(src), "install", f"DESTDIR={root}", "PREFIX=/usr"],
            check=False,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"make install of {src} failed ({proc.returncode}); log {log_file}")


def build_deb(src: Path, cache: Path) -> Path:
    """The release's own Debian package (its debian/, `dpkg-buildpackage -b -uc -us` in
    a copy; shellcheck skipped with DEB_BUILD_OPTIONS=nocheck and -d), built once per
    tree content under `cache`."""
    out_dir = cache / f"peer-deb-amazon-ec2-net-utils-{PEER_VERSION}-{tree_digest(src)}"
    found = sorted(out_dir.glob("amazon-ec2-net-utils_*_all.deb"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-peer-deb-", dir=cache) as tmp:
        work = Path(tmp) / "src"
        shutil.copytree(src, work, symlinks=True)
        for path in (work, *work.rglob("*")):
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o200)
        env = {**os.environ, "DEB_BUILD_OPTIONS": "nocheck"}
        proc = subprocess.run(
            ["dpkg-buildpackage", "-b", "-uc", "-us", "-d"],
            cwd=work,
            env=env,
            check=False,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"dpkg-buildpackage of {src} failed:\n{proc.stdout[-3000:]}")
        debs = sorted(Path(tmp).glob("amazon-ec2-net-utils_*_all.deb"))
        if len(debs) != 1:
            raise RuntimeError(f"expected one .deb from {src}, found {debs}")
        partial = Path(tmp) / "final"
        partial.mkdir()
        shutil.copyfile(debs[0], partial / debs[0].name)
        partial.chmod(0o755)
        os.rename(partial, out_dir)
    return out_dir / debs[0].name
