"""An ONNX model's protobuf bytes read and extended without the ``onnx`` package (which is not
installed): a graph's nodes, outputs and initializers found, and new nodes or outputs appended.
Protobuf merges a message field that appears twice, so appending ``graph { output { ... } }`` to
the bytes adds to the graph without rewriting the rest. Used by the Piper and Kokoro models.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from voxserve.errors import EngineError

# Field numbers of onnx.proto (ModelProto, GraphProto, NodeProto, TensorProto, ValueInfoProto).
MODEL_GRAPH = 7
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_OUTPUT = 1, 5, 12
NODE_OUTPUT, NODE_OP_TYPE = 2, 4
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_NAME, TENSOR_RAW_DATA = 1, 2, 8, 9
TENSOR_DATA_LOCATION = 14
VALUE_INFO_NAME = 1

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class ModelFormatError(EngineError):
    """A model file is not the ONNX model it was taken for."""

    def __init__(self, message: str):
        super().__init__(message, code="voice_unreadable")


def model_graph(data: bytes) -> memoryview:
    """The model's graph (the first one: the alignment patch is a second, merged into it)."""
    graph = next(
        (value for number, value in message_fields(memoryview(data)) if number == MODEL_GRAPH), None
    )
    if not isinstance(graph, memoryview):
        raise ModelFormatError("no graph")
    return graph


def length_field(field: int, payload: bytes) -> bytes:
    return encode_varint(field << 3 | _LENGTH) + encode_varint(len(payload)) + payload


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def repeated(message: memoryview, wanted: int) -> Iterator[memoryview]:
    return (value for number, value in message_fields(message) if number == wanted)


def string(message: memoryview, wanted: int) -> str:
    return next(strings(message, wanted), "")


def strings(message: memoryview, wanted: int) -> Iterator[str]:
    return (bytes(value).decode() for number, value in message_fields(message) if number == wanted)


def message_fields(message: memoryview) -> Iterator[tuple[int, Any]]:
    """(field number, value) for each field: an int, or a memoryview of a length-delimited one."""
    position = 0
    while position < len(message):
        key, position = varint(message, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, position = varint(message, position)
        elif wire_type == _LENGTH:
            length, position = varint(message, position)
            value, position = message[position : position + length], position + length
        elif wire_type in (_FIXED64, _FIXED32):
            size = 8 if wire_type == _FIXED64 else 4
            value = int.from_bytes(message[position : position + size], "little")
            position += size
        else:
            raise ModelFormatError(f"unsupported protobuf wire type {wire_type}")
        if position > len(message):
            raise ModelFormatError("truncated protobuf message")
        yield number, value


def varint(data: memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ModelFormatError("truncated protobuf varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
