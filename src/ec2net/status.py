"""`ec2net status`: what ec2net manages, checked against the kernel (read only)."""

from __future__ import annotations

from typing import Any

from ec2net import plan as planner
from ec2net.diff import diff_interface
from ec2net.engine import Engine


def collect(engine: Engine) -> list[dict[str, Any]]:
    links = {ln.mac: ln for ln in engine.backend.links()}
    routes = engine.backend.owned_routes()
    rules = engine.backend.owned_rules()
    rows = []
    for rec in engine.store.records():
        link = links.get(rec.mac)
        eni = rec.eni()
        row: dict[str, Any] = {
            "interface": link.name if link else rec.ifname,
            "mac": rec.mac,
            "eni_id": rec.eni_id,
            "table": rec.table,
            "present": link is not None,
            "ipv4s": [str(a) for a in eni.ipv4s] if eni else [],
            "ipv6s": [str(a) for a in eni.ipv6s] if eni else [],
            "rules": sum(1 for r in rules if r.table == rec.table),
            "routes": sum(1 for r in routes if r.table == rec.table),
            "owned_addresses": len(rec.owned_ips),
            "backend": engine.backend.name,
        }
        drift = -1
        if link is not None and eni is not None:
            cur = engine.current(rec.table, link, rec.owned(), routes, rules)
            d = diff_interface(planner.plan_interface(eni, link), cur)
            # Under a network manager, extra objects it adds itself are not drift.
            managed = engine.backend.settle_timeout > 0
            drift = len(d.add) + (0 if managed else len(d.delete))
        row["drift"] = drift
        row["state"] = "ok" if drift == 0 else "gone" if link is None else "drifted"
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no ENIs managed by ec2net"
    head = ("IFACE", "MAC", "ENI", "TABLE", "IPV4", "IPV6", "RULES", "STATE")
    lines = [head]
    for r in rows:
        lines.append(
            (
                r["interface"],
                r["mac"],
                r["eni_id"],
                str(r["table"]),
                str(len(r["ipv4s"])),
                str(len(r["ipv6s"])),
                str(r["rules"]),
                r["state"],
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    table = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines
    )
    return f"{table}\nbackend: {rows[0]['backend']}"
