"""The netlink constants taken from pyroute2 (0.7 and 0.9 alike) are the kernel's
values (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h, linux/fib_rules.h), and
link events carry a typed kind that still compares equal to its old string."""

from __future__ import annotations

from pyroute2.netlink import NETLINK_ROUTE
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK, RTMGRP_LINK

from ec2net.backends import netlink_batch as nb
from ec2net.backends import netlink_events as ne

KERNEL = {
    "NLMSG_ERROR": 2,
    "NLMSG_DONE": 3,
    "RTM_NEWLINK": 16,
    "RTM_GETLINK": 18,
    "RTM_NEWADDR": 20,
    "RTM_DELADDR": 21,
    "RTM_GETADDR": 22,
    "RTM_NEWROUTE": 24,
    "RTM_DELROUTE": 25,
    "RTM_GETROUTE": 26,
    "RTM_NEWRULE": 32,
    "RTM_DELRULE": 33,
    "RTM_GETRULE": 34,
    "NLM_F_REQUEST": 0x1,
    "NLM_F_ACK": 0x4,
    "NLM_F_DUMP_INTR": 0x10,
    "NLM_F_DUMP": 0x300,
    "NLM_F_EXCL": 0x200,
    "NLM_F_CREATE": 0x400,
    "SOL_NETLINK": 270,
    "NETLINK_EXT_ACK": 11,
    "NETLINK_GET_STRICT_CHK": 12,
    "IFA_F_NODAD": 0x02,
    "IFA_F_NOPREFIXROUTE": 0x200,
    "RTN_UNICAST": 1,
    "RTPROT_RA": 9,
    "FR_ACT_TO_TBL": 1,
    "IFF_UP": 0x1,
}


def test_batch_constants_are_the_kernels() -> None:
    assert {name: getattr(nb, name) for name in KERNEL} == KERNEL
    assert nb.F_ADD == 0x1 | 0x4 | 0x400 | 0x200
    assert nb.F_DEL == 0x1 | 0x4


def test_event_constants_are_the_kernels() -> None:
    assert (NETLINK_ROUTE, RTMGRP_LINK, RTM_NEWLINK, RTM_DELLINK) == (0, 1, 16, 17)


def test_link_change_is_a_str_enum() -> None:
    ev = ne.LinkEvent(ne.LinkChange.DEL, 3, "eth1", "02:00:00:00:00:01")
    assert ev.kind == "del" and ev.kind is ne.LinkChange.DEL
    assert ne.LinkChange("new") is ne.LinkChange.NEW
    assert {k.value for k in ne.LinkChange} == {"new", "del"}


def test_link_messages_decoded_as_pyroute2_decodes_them() -> None:
    """The daemon's link dump (netlink_links.LinkMsg, pyroute2's ifinfmsg narrowed)
    against pyroute2's whole decoding, on this namespace's real links (no root needed)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        theirs = []
        for msg in ipr.get_links():
            info = msg.get_attr("IFLA_LINKINFO")
            theirs.append(
                (
                    int(msg["index"]),
                    str(msg.get_attr("IFLA_IFNAME") or ""),
                    str(msg.get_attr("IFLA_ADDRESS") or "").lower(),
                    str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else "",
                    int(msg.get_attr("IFLA_MASTER") or 0),
                )
            )
    ours = [(e.index, e.name, e.mac, e.link_kind, e.master) for e in ne.dump_links()]
    assert ours and sorted(ours) == sorted(theirs)
    assert all(e.kind is ne.LinkChange.NEW for e in ne.dump_links())
