"""rtnetlink requests as values, and pyroute2 encoding each distinct part of them once.

A `Request` names a pyroute2 message class, the header's type and flags, the fixed
fields and the attributes. `Request.message()` is the pyroute2 message itself;
`Encoder.encode()` gives the same bytes faster in bulk: pyroute2 encodes the header and
fields once per shape and each attribute once per value (with the request's fields, as
an address attribute's encoding depends on the family), and the request is those parts
joined, with the header's length and sequence number written at the offsets pyroute2's
header definition gives. pyroute2 lays out an attribute chain the same way (each
attribute padded to 4 bytes, one after the other), so the bytes are equal; the unit
tests compare them on both pyroute2 versions.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

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

    def prepare(self, requests: Sequence[Request]) -> None:
        """Encode every attribute not cached yet, in one pyroute2 message per shape of
        fields: a whole message per value would cost its header and fields each time."""
        if len(self._fixed) + len(self._attrs) > _MAX_CACHED:
            self._fixed.clear()
            self._attrs.clear()
        missing: dict[tuple[Any, ...], tuple[Request, dict[Attr, None]]] = {}
        for req in requests:
            for attr in req.attrs:
                if (req.cls, req.fields, attr) not in self._attrs:
                    group = missing.setdefault((req.cls, req.fields), (req, {}))
                    group[1][attr] = None
        for (cls, fields), (req, attrs) in missing.items():
            msg = replace(req, attrs=tuple(attrs)).message()
            msg.encode()
            for attr, slot in zip(attrs, msg["attrs"]):
                # pyroute2 leaves each encoded attribute in its slot, with its place
                nla = slot.cell[1]
                part = bytes(msg.data[nla.offset : nla.offset + nla.length])
                self._attrs[(cls, fields, attr)] = part + bytes(-len(part) % _ALIGN)

    def encode(self, request: Request, seq: int) -> bytes:
        shape = (request.cls, request.type, request.flags, request.fields)
        fixed = self._fixed.get(shape)
        if fixed is None:
            fixed = self._fixed[shape] = encode_whole(replace(request, attrs=()))
        parts = [fixed]
        for attr in request.attrs:
            part = self._attrs.get((request.cls, request.fields, attr))
            if part is None:
                self.prepare([request])
                part = self._attrs[(request.cls, request.fields, attr)]
            parts.append(part)
        buf = bytearray().join(parts)
        _LENGTH.pack_into(buf, _LENGTH_AT, len(buf))
        _SEQ.pack_into(buf, _SEQ_AT, seq)
        return bytes(buf)
