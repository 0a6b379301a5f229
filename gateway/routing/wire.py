"""Reads one top-level string field from a serialized protobuf message without parsing it.

Routing needs only the request's `model`; walking the wire format's tags and skipping every other
field by its length costs a few operations per top-level field and copies nothing but the value.
"""

from __future__ import annotations

_VARINT, _FIXED64, _LENGTH, _START_GROUP, _END_GROUP, _FIXED32 = range(6)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def read_string_field(data: bytes, number: int) -> str:
    """The last value of top-level field `number` (proto3 semantics: last one wins); "" if absent
    or if the bytes are not a well-formed message (the backend will say why)."""
    found = b""
    pos, end = 0, len(data)
    try:
        while pos < end:
            key, pos = _varint(data, pos)
            field, wire_type = key >> 3, key & 7
            if wire_type == _LENGTH:
                length, pos = _varint(data, pos)
                if field == number:
                    found = data[pos : pos + length]
                pos += length
            elif wire_type == _VARINT:
                _, pos = _varint(data, pos)
            elif wire_type == _FIXED64:
                pos += 8
            elif wire_type == _FIXED32:
                pos += 4
            else:  # groups are not used by capmesh's contracts
                return ""
        return found.decode("utf-8") if pos == end else ""
    except (IndexError, UnicodeDecodeError):
        return ""
