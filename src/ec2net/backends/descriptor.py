"""What describes one backend: everything the registry, config validation, the CLI,
`render` and auto-detection need to know about it, in one value (pure).

Kept free of pyroute2 and of the engine so that config.py and `--help` can read the
registry cheaply; the activator is built by a factory that imports on call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Callable, Optional

from ec2net.backend_names import BackendName
from ec2net.backends import ifnames
from ec2net.errors import UnsupportedInterfaceName
from ec2net.render import Renderer

if TYPE_CHECKING:
    from ec2net.backends.activators import Activator
    from ec2net.config import Settings


@dataclass(frozen=True)
class Facts:
    """What auto-detection looks at on this host."""

    running: frozenset[str]  # process names (/proc/PID/comm)
    network_scripts: bool  # RHEL network-scripts installed


@dataclass(frozen=True)
class Descriptor:
    known: BackendName  # name, title and whether it settles (backend_names.py)
    priority: int  # `auto` takes the available one with the highest
    available: Callable[[Facts], bool]
    # File backends only (None: the kernel alone, over netlink).
    renderer: Optional[Renderer] = None
    dirs: tuple[PurePosixPath, ...] = ()  # where our files live (absolute)
    mode: int = 0o644
    activator: Optional[Callable[[Settings], Activator]] = None
    # Pattern ({ifname}) of a user's file whose presence without EC2SYNC=yes means
    # "hands off" (ifcfg-IF).
    user_file: Optional[str] = None
    # May add to the primary ENI (interfaces.manage_primary). A networkd or
    # NetworkManager profile of ours would replace the primary's boot profile.
    primary_ok: bool = False
    # The manager, not ec2net, creates the kernel objects: they carry its protocol (so
    # ours are recognised by table) and may come with extras of its own (so verify
    # judges only what must be added).
    adds_own_objects: bool = False
    # Why an interface name cannot be given to this manager, or None.
    name_problem: ifnames.NameCheck = ifnames.kernel

    @property
    def name(self) -> str:
        return self.known.name

    @property
    def title(self) -> str:
        return self.known.title

    @property
    def settles(self) -> bool:
        """The manager applies on its own time: the engine waits up to
        backend.settle_timeout for the kernel to show the plan. False: apply is done
        when it returns (no wait)."""
        return self.known.settles

    @property
    def writes_files(self) -> bool:
        return self.renderer is not None

    def check_name(self, ifname: str) -> None:
        """Refuse, before anything is rendered, a name the manager cannot take."""
        problem = self.name_problem(ifname)
        if problem is not None:
            raise UnsupportedInterfaceName(ifname, self.name, problem)

    def settle_timeout(self, settings: Settings) -> float:
        return settings.settle_timeout if self.settles else 0.0
