"""Fixtures for engine tests in the simulated VPC: a started world plus an `Instance`
handle that runs the real `ec2net` command inside the instance namespace."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional, Union

import pytest

from ec2sim.fabric import Fabric
from ec2sim.netns import run_in_netns
from ec2sim.probe import echoes
from ec2sim.world import Subnet, World, default_world

SRC = str(Path(__file__).resolve().parents[2] / "src")
Addr = Union[ipaddress.IPv4Address, ipaddress.IPv6Address, str]


class Instance:
    """The instance side of a world: runs ec2net there and checks reachability."""

    def __init__(self, fabric: Fabric, tmp: Path, **config: Any) -> None:
        self.fabric = fabric
        self.ns = fabric.instance_ns
        self.runtime = tmp / "run"
        self.config = tmp / "ec2net.toml"
        self.write_config(**config)

    def write_config(
        self,
        drivers: tuple[str, ...] = ("veth",),
        backend: Optional[dict[str, Any]] = None,
        **extra: Any,
    ) -> None:
        lines = ["[interfaces]", f"drivers = {json.dumps(list(drivers))}"]
        for key, value in extra.items():
            lines.append(f"{key} = {json.dumps(value)}")
        # IMDS answers within milliseconds here; keep outage tests short.
        lines += ["[imds]", "timeout = 0.5", "retries = 2", "propagation_timeout = 25"]
        # Explicit: `auto` would follow whatever network manager the test host runs.
        lines += ["[backend]"]
        for key, value in (backend or {"name": "netlink"}).items():
            lines.append(f"{key} = {json.dumps(value)}")
        self.config.write_text("\n".join(lines) + "\n")

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": SRC,
            "EC2NET_CONFIG": str(self.config),
            "EC2NET_RUNTIME_DIR": str(self.runtime),
        }

    def ec2net(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = self.fabric.run(
            self.ns, [sys.executable, "-m", "ec2net", *args],
            check=False, timeout=timeout, env=self.env(),
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ec2net {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def ip(self, *args: str) -> str:
        return self.fabric.ip(self.ns, *args)

    def reachable(self, addr: Addr, src_ns: str = "") -> bool:
        return self.fabric.probe(src_ns or self.fabric.client_ns, addr)

    def owned_state(self) -> dict[str, str]:
        """Everything tagged with ec2net's protocol, and its records: what must be gone
        after down/detach."""
        out = {}
        for fam in ("-4", "-6"):
            # `ip rule show proto N` does not filter on this iproute2: keep our lines.
            rules = self.ip(fam, "rule", "show").splitlines()
            out[f"rules{fam}"] = "\n".join(ln for ln in rules if "proto 236" in ln)
            out[f"routes{fam}"] = self.ip(fam, "route", "show", "table", "all", "proto", "236")
        records = self.runtime / "enis"
        out["records"] = " ".join(sorted(p.name for p in records.glob("*.json")))
        return out

    def open_connection(self, addr: Addr, src_ns: str = "") -> socket.socket:
        ns = src_ns or self.fabric.client_ns
        ip = ipaddress.ip_address(str(addr))
        fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET

        def connect() -> socket.socket:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect((str(ip), self.fabric.echo_port))
            return s

        return run_in_netns(ns, connect)


def echo(sock: socket.socket, payload: bytes = b"still here") -> bool:
    return echoes(sock, payload)


def two_card_world() -> World:
    """The default world with a second network card and a subnet for it."""
    w = default_world()
    w.multi_card = True
    w.subnets["subnet-d"] = Subnet(
        "subnet-d",
        ipaddress.IPv4Network("10.0.4.0/24"),
        ipaddress.IPv6Network("2600:1f16:292:4::/64"),
    )
    return w


@pytest.fixture
def instance(world: Fabric, tmp_path: Path) -> Iterator[Instance]:
    yield Instance(world, tmp_path)


@pytest.fixture
def make_instance(
    make_world: Callable[..., Fabric],
    tmp_path: Path,
) -> Callable[..., Instance]:
    def factory(**kwargs: Any) -> Instance:
        config = kwargs.pop("config", {})
        return Instance(make_world(**kwargs), tmp_path, **config)

    return factory
