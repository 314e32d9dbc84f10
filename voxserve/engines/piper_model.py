"""A Piper voice model read once per voice: patched to report phoneme durations, and its weights
held once for every ONNX session of that voice.

Both are done on the model's protobuf bytes directly, so that neither needs the ``onnx`` package:

- **Alignments.** Piper's VITS graphs compute each phoneme id's length in frames (the output of
  their one ``Ceil`` node) and drop it; marking that tensor as a second graph output is what
  ``piper.patch_voice_with_alignment`` does. Protobuf merges a message field that appears twice,
  so appending ``graph { output { name: ... } }`` to the bytes adds the output without rewriting
  the rest.
- **Shared weights.** Every large initializer is copied once out of the model's bytes into an
  aligned array under one ``OrtValue``; each session is given them all
  (``SessionOptions.add_initializer``) and uses them in place instead of a copy of its own. The
  bytes themselves are needed only while the sessions are made.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxserve.errors import EngineError

# Field numbers of onnx.proto (ModelProto, GraphProto, NodeProto, TensorProto, ValueInfoProto).
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_OUTPUT = 1, 5, 12
_NODE_OUTPUT, _NODE_OP_TYPE = 2, 4
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_NAME, _TENSOR_RAW_DATA = 1, 2, 8, 9
_TENSOR_DATA_LOCATION = 14
_VALUE_INFO_NAME = 1

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

# TensorProto.DataType -> numpy, for the types a voice's weights come in.
_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64,
           9: np.bool_, 10: np.float16, 11: np.float64}  # fmt: skip

SHARED_MIN_BYTES = 4096
"""Smaller initializers stay in each session: they are shapes and scalars, a few KB in all."""


class ModelFormatError(EngineError):
    """A voice file is not the ONNX model it was taken for."""

    def __init__(self, message: str):
        super().__init__(message, code="voice_unreadable")


class SharedWeights:
    """A voice's large initializers, in memory of their own, for every session of the voice."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self._values: dict[str, Any] = {}

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.arrays.values())

    def add_to(self, options: Any) -> Any:
        """``options`` (an ``onnxruntime.SessionOptions``) made to use these weights in place."""
        import onnxruntime

        if not self._values:
            self._values = {
                name: onnxruntime.OrtValue.ortvalue_from_numpy(array)
                for name, array in self.arrays.items()
            }
        for name, value in self._values.items():
            # ORT keeps a pointer, not a reference: these must outlive every session given them.
            options.add_initializer(name, value)
        return options


@dataclass(frozen=True)
class VoiceModel:
    """One voice's model as read: what its sessions are made from."""

    data: bytes
    """The model, with the alignment output when it has one (needed only to make sessions)."""
    alignments: bool
    """Whether sessions of ``data`` return phoneme-id durations as a second output."""
    weights: SharedWeights


def read_voice_model(path: Path) -> VoiceModel:
    """``path``'s model, patched for alignments when it has the tensor they come from."""
    data = path.read_bytes()
    try:
        graph = _graph(data)
        duration = _duration_tensor(graph)
        outputs = {_string(info, _VALUE_INFO_NAME) for info in _repeated(graph, _GRAPH_OUTPUT)}
        if duration is not None and duration not in outputs:
            data += _with_output(duration)
            graph = _graph(data)
        weights = SharedWeights(_weights(graph))
    except (ModelFormatError, UnicodeDecodeError) as error:
        raise ModelFormatError(f"piper voice {path.name} cannot be read: {error}") from error
    return VoiceModel(data=data, alignments=duration is not None, weights=weights)


def _graph(data: bytes) -> memoryview:
    """The model's graph (the first one: the alignment patch is a second, merged into it)."""
    graph = next(
        (value for number, value in _fields(memoryview(data)) if number == _MODEL_GRAPH), None
    )
    if not isinstance(graph, memoryview):
        raise ModelFormatError("no graph")
    return graph


def _duration_tensor(graph: memoryview) -> str | None:
    """The output of the graph's one Ceil node (the frames of each phoneme id), if it has one."""
    ceils = [
        name
        for node in _repeated(graph, _GRAPH_NODE)
        if _string(node, _NODE_OP_TYPE) == "Ceil"
        for name in _strings(node, _NODE_OUTPUT)
    ]
    return ceils[0] if len(ceils) == 1 else None


def _weights(graph: memoryview) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for tensor in _repeated(graph, _GRAPH_INITIALIZER):
        fields = list(_fields(tensor))
        raw = [value for number, value in fields if number == _TENSOR_RAW_DATA]
        dtype = _DTYPES.get(next((v for number, v in fields if number == _TENSOR_DATA_TYPE), 0))
        external = any(number == _TENSOR_DATA_LOCATION and value == 1 for number, value in fields)
        if len(raw) != 1 or dtype is None or external or len(raw[0]) < SHARED_MIN_BYTES:
            continue
        dims = _dims(fields)
        # Copied: raw data lies at any offset in the file, and kernels want aligned weights.
        flat = np.frombuffer(raw[0], dtype=dtype).copy()
        if flat.size != int(np.prod(dims)):
            raise ModelFormatError(f"initializer {_string(tensor, _TENSOR_NAME)!r}: bad size")
        weights[_string(tensor, _TENSOR_NAME)] = flat.reshape(dims)
    return weights


def _dims(fields: list[tuple[int, Any]]) -> list[int]:
    dims: list[int] = []
    for number, value in fields:
        if number != _TENSOR_DIMS:
            continue
        if isinstance(value, int):
            dims.append(value)
        else:  # packed
            position = 0
            while position < len(value):
                dim, position = _varint(value, position)
                dims.append(dim)
    return dims


def _with_output(name: str) -> bytes:
    value_info = _length_field(_VALUE_INFO_NAME, name.encode())
    return _length_field(_MODEL_GRAPH, _length_field(_GRAPH_OUTPUT, value_info))


def _length_field(field: int, payload: bytes) -> bytes:
    return _encode_varint(field << 3 | _LENGTH) + _encode_varint(len(payload)) + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _repeated(message: memoryview, wanted: int) -> Iterator[memoryview]:
    return (value for number, value in _fields(message) if number == wanted)


def _string(message: memoryview, wanted: int) -> str:
    return next(_strings(message, wanted), "")


def _strings(message: memoryview, wanted: int) -> Iterator[str]:
    return (bytes(value).decode() for number, value in _fields(message) if number == wanted)


def _fields(message: memoryview) -> Iterator[tuple[int, Any]]:
    """(field number, value) for each field: an int, or a memoryview of a length-delimited one."""
    position = 0
    while position < len(message):
        key, position = _varint(message, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, position = _varint(message, position)
        elif wire_type == _LENGTH:
            length, position = _varint(message, position)
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


def _varint(data: memoryview, position: int) -> tuple[int, int]:
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
