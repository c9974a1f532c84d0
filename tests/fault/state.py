"""Canonical kernel state of the simulated instance, for exact comparisons.

"State" is the multiset of addresses on ENI links (eth*), of policy rules and of
routes in every table, IPv4 and IPv6, read with `ip -j` and stripped of what varies
between two equal worlds (lifetimes, link-local addresses made from random MACs).
A multiset, not a set: a duplicate rule must show up as a difference.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ec2sim import netns

# Fields that differ between two worlds in the same state.
_VOLATILE = frozenset({"expires", "valid_life_time", "preferred_life_time", "cacheinfo"})
PROTO_OURS = "236"


def _ip_json(ns: str, *args: str) -> list[dict[str, Any]]:
    out = netns.run(["ip", "-j", "-n", ns, *args]).stdout.strip()
    data: list[dict[str, Any]] = json.loads(out) if out else []
    return data


def _key(kind: str, obj: dict[str, Any]) -> str:
    clean = {k: v for k, v in obj.items() if k not in _VOLATILE}
    return kind + " " + json.dumps(clean, sort_keys=True)


def _link_local(obj: dict[str, Any]) -> bool:
    text = f"{obj.get('dst', '')} {obj.get('local', '')}"
    return "fe80:" in text


@dataclass(frozen=True)
class State:
    objects: tuple[str, ...]  # sorted canonical lines, duplicates kept

    def counter(self) -> Counter[str]:
        return Counter(self.objects)

    def minus(self, other: State) -> list[str]:
        """Objects in self that other lacks (counting duplicates)."""
        return sorted((self.counter() - other.counter()).elements())

    def ours(self) -> list[str]:
        return [o for o in self.objects if f'"protocol": "{PROTO_OURS}"' in o]

    def duplicates(self) -> list[str]:
        return sorted(k for k, n in self.counter().items() if n > 1)


def read_state(ns: str) -> State:
    objs: list[str] = []
    for fam in ("-4", "-6"):
        for link in _ip_json(ns, fam, "addr", "show"):
            name = str(link.get("ifname", ""))
            if not name.startswith("eth"):
                continue
            for a in link.get("addr_info", []):
                if _link_local(a):
                    continue
                objs.append(_key("addr", {"dev": name, **a}))
        for rule in _ip_json(ns, fam, "rule", "show"):
            objs.append(_key(f"rule{fam}", rule))
        for route in _ip_json(ns, fam, "route", "show", "table", "all"):
            if _link_local(route) or route.get("dev") in ("docker0", "vethctr"):
                continue  # bridge's link-local routes: random MACs; checked as foreign
            objs.append(_key(f"route{fam}", route))
    return State(tuple(sorted(objs)))


def diff_text(expected: State, actual: State, limit: int = 12) -> str:
    lost = expected.minus(actual)
    leaked = actual.minus(expected)
    lines = [f"lost {len(lost)}, leaked {len(leaked)}"]
    lines += [f"  - {o}" for o in lost[:limit]]
    lines += [f"  + {o}" for o in leaked[:limit]]
    return "\n".join(lines)
