"""A bounded reader of the protobuf wire format, for the few ONNX fields the scan needs.

It never builds messages: :func:`fields` walks one message's fields between two offsets and
yields each as (field number, wire type, value), where a length-delimited value is the
(start, end) span of its bytes, so nested messages are read in place and large tensors are
stepped over without a copy. Every length is checked against its parent's bounds.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["ProtobufError", "fields", "read_varint", "text"]

VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5


class ProtobufError(ValueError):
    """The bytes are not well-formed protobuf."""


def read_varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    """Read a varint at ``pos``; return (value, position after it)."""
    value = 0
    shift = 0
    while True:
        if pos >= end:
            raise ProtobufError("varint runs past the end of its message")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint longer than 10 bytes")


def fields(
    data: memoryview, start: int, end: int
) -> Iterator[tuple[int, int, int | tuple[int, int]]]:
    """Yield the fields of the message in ``data[start:end]``.

    Yields:
        (field number, wire type, value): an int for varint and fixed fields, the (start, end)
        span of the bytes for length-delimited ones.

    Raises:
        ProtobufError: a malformed tag, length or wire type (groups are not used by ONNX and
            are rejected).
    """
    pos = start
    while pos < end:
        key, pos = read_varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0")
        if wire == VARINT:
            value, pos = read_varint(data, pos, end)
            yield number, wire, value
        elif wire == LENGTH:
            length, pos = read_varint(data, pos, end)
            if length > end - pos:
                raise ProtobufError(f"field {number} runs past the end of its message")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire == FIXED64:
            if pos + 8 > end:
                raise ProtobufError("fixed64 runs past the end of its message")
            yield number, wire, int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
        elif wire == FIXED32:
            if pos + 4 > end:
                raise ProtobufError("fixed32 runs past the end of its message")
            yield number, wire, int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")


def text(data: memoryview, span: int | tuple[int, int], limit: int = 4096) -> str:
    """Decode a string field (UTF-8, replacing bad bytes), at most ``limit`` bytes of it."""
    if not isinstance(span, tuple):
        raise ProtobufError("expected a length-delimited field")
    start, end = span
    return bytes(data[start : min(end, start + limit)]).decode("utf-8", errors="replace")
