"""rtnetlink requests as values, and pyroute2 encoding each distinct part of them once.

A `Request` names a pyroute2 message class, the header's type and flags, the fixed
fields and the attributes. `Request.message()` is the pyroute2 message itself;
`Encoder.encode()` gives the same bytes faster in bulk: pyroute2 encodes the header and
fields once per shape and each attribute once per value and message family (an
address attribute's encoding depends on the family, and on nothing else of the
message's fields: the same rule table under another source length, or the same
address on another link, is not encoded again), and the request is those parts
joined, with the header's length and sequence number written at the offsets pyroute2's
header definition gives. pyroute2 lays out an attribute chain the same way (each
attribute padded to 4 bytes, one after the other), so the bytes are equal; the unit
tests compare them on both pyroute2 versions.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Optional

from pyroute2.netlink import nlmsg

Attr = tuple[str, Any]
_ALIGN = 4
# Entries kept per Encoder: one bulk apply needs a few thousand; a long-lived channel
# (the daemon's jobs each open their own) must not grow without bound.
_MAX_CACHED = 8192


@dataclass(frozen=True)
class Request:
    cls: type[Any]  # pyroute2 message class (rtmsg, fibmsg, ifaddrmsg, ifinfmsg)
    type: int
    flags: int
    fields: tuple[tuple[str, int], ...]
    attrs: tuple[Attr, ...] = ()

    def message(self, seq: int = 0) -> Any:
        """This request as a pyroute2 message, not yet encoded."""
        msg = self.cls()
        header = msg["header"]
        header["type"], header["flags"], header["sequence_number"] = self.type, self.flags, seq
        for name, value in self.fields:
            msg[name] = value
        msg["attrs"] = list(self.attrs)  # a fresh list: encoding replaces its cells
        return msg

    def with_flags(self, flags: int) -> Request:
        return replace(self, flags=flags)


def _header_slot(name: str) -> tuple[struct.Struct, int]:
    offset = 0
    for field, fmt in nlmsg.header:
        if field == name:
            return struct.Struct(fmt), offset
        offset += struct.calcsize(fmt)
    raise LookupError(f"pyroute2's nlmsg header has no {name}")


_LENGTH, _LENGTH_AT = _header_slot("length")
_SEQ, _SEQ_AT = _header_slot("sequence_number")


def encode_whole(request: Request, seq: int = 0) -> bytes:
    """pyroute2's own encoding of the whole message (the reference Encoder matches)."""
    msg = request.message(seq)
    msg.encode()
    return bytes(msg.data)


class Encoder:
    """Encodes requests, caching the parts pyroute2 encoded. Not thread-safe."""

    def __init__(self) -> None:
        self._fixed: dict[tuple[Any, ...], bytes] = {}
        self._attrs: dict[tuple[Any, ...], bytes] = {}
        self._families: dict[tuple[tuple[str, int], ...], int] = {}

    def _family(self, fields: tuple[tuple[str, int], ...]) -> int:
        fam = self._families.get(fields)
        if fam is None:
            fam = self._families[fields] = next((v for k, v in fields if k == "family"), -1)
        return fam

    def prepare(self, requests: Sequence[Request]) -> None:
        """Encode every attribute not cached yet, in one pyroute2 message per shape of
        fields: a whole message per value would cost its header and fields each time."""
        if len(self._fixed) + len(self._attrs) > _MAX_CACHED:
            self._fixed.clear()
            self._attrs.clear()
            self._families.clear()
        attrs = self._attrs
        missing: dict[tuple[Any, ...], tuple[Request, dict[tuple[Any, ...], None]]] = {}
        for req in requests:
            cls, fam = req.cls, self._family(req.fields)
            for attr in req.attrs:
                key = (cls, fam, attr)
                if key not in attrs:
                    # one message per class and family, with this request's fields
                    group = missing.setdefault((cls, fam), (req, {}))
                    group[1][key] = None
        for req, keys in missing.values():
            msg = replace(req, attrs=tuple(key[2] for key in keys)).message()
            msg.encode()
            for key, slot in zip(keys, msg["attrs"]):
                # pyroute2 leaves each encoded attribute in its slot, with its place
                nla = slot.cell[1]
                part = bytes(msg.data[nla.offset : nla.offset + nla.length])
                attrs[key] = part + bytes(-len(part) % _ALIGN)

    def encode(self, request: Request, seq: int, flags: Optional[int] = None) -> bytes:
        """`flags`: the header's flags instead of the request's own."""
        cls, fields = request.cls, request.fields
        if flags is None:
            flags = request.flags
        shape = (cls, request.type, flags, fields)
        fixed = self._fixed.get(shape)
        if fixed is None:
            plain = replace(request, flags=flags, attrs=())
            fixed = self._fixed[shape] = encode_whole(plain)
        parts = [fixed]
        fam = self._family(fields)
        for attr in request.attrs:
            part = self._attrs.get((cls, fam, attr))
            if part is None:
                self.prepare([request])
                part = self._attrs[(cls, fam, attr)]
            parts.append(part)
        buf = bytearray().join(parts)
        _LENGTH.pack_into(buf, _LENGTH_AT, len(buf))
        _SEQ.pack_into(buf, _SEQ_AT, seq)
        return bytes(buf)
