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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxserve.engines.onnx_bytes import (
    GRAPH_INITIALIZER,
    GRAPH_NODE,
    GRAPH_OUTPUT,
    MODEL_GRAPH,
    NODE_OP_TYPE,
    NODE_OUTPUT,
    TENSOR_DATA_LOCATION,
    TENSOR_DATA_TYPE,
    TENSOR_DIMS,
    TENSOR_NAME,
    TENSOR_RAW_DATA,
    VALUE_INFO_NAME,
    ModelFormatError,
    length_field,
    message_fields,
    model_graph,
    repeated,
    string,
    strings,
    varint,
)

# TensorProto.DataType -> numpy, for the types a voice's weights come in.
_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64,
           9: np.bool_, 10: np.float16, 11: np.float64}  # fmt: skip

SHARED_MIN_BYTES = 4096
"""Smaller initializers stay in each session: they are shapes and scalars, a few KB in all."""


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
        graph = model_graph(data)
        duration = _duration_tensor(graph)
        outputs = {string(info, VALUE_INFO_NAME) for info in repeated(graph, GRAPH_OUTPUT)}
        if duration is not None and duration not in outputs:
            data += _with_output(duration)
            graph = model_graph(data)
        weights = SharedWeights(_weights(graph))
    except (ModelFormatError, UnicodeDecodeError) as error:
        raise ModelFormatError(f"piper voice {path.name} cannot be read: {error}") from error
    return VoiceModel(data=data, alignments=duration is not None, weights=weights)


def _duration_tensor(graph: memoryview) -> str | None:
    """The output of the graph's one Ceil node (the frames of each phoneme id), if it has one."""
    ceils = [
        name
        for node in repeated(graph, GRAPH_NODE)
        if string(node, NODE_OP_TYPE) == "Ceil"
        for name in strings(node, NODE_OUTPUT)
    ]
    return ceils[0] if len(ceils) == 1 else None


def _weights(graph: memoryview) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for tensor in repeated(graph, GRAPH_INITIALIZER):
        fields = list(message_fields(tensor))
        raw = [value for number, value in fields if number == TENSOR_RAW_DATA]
        dtype = _DTYPES.get(next((v for number, v in fields if number == TENSOR_DATA_TYPE), 0))
        external = any(number == TENSOR_DATA_LOCATION and value == 1 for number, value in fields)
        if len(raw) != 1 or dtype is None or external or len(raw[0]) < SHARED_MIN_BYTES:
            continue
        dims = _dims(fields)
        # Copied: raw data lies at any offset in the file, and kernels want aligned weights.
        flat = np.frombuffer(raw[0], dtype=dtype).copy()
        if flat.size != int(np.prod(dims)):
            raise ModelFormatError(f"initializer {string(tensor, TENSOR_NAME)!r}: bad size")
        weights[string(tensor, TENSOR_NAME)] = flat.reshape(dims)
    return weights


def _dims(fields: list[tuple[int, Any]]) -> list[int]:
    dims: list[int] = []
    for number, value in fields:
        if number != TENSOR_DIMS:
            continue
        if isinstance(value, int):
            dims.append(value)
        else:  # packed
            position = 0
            while position < len(value):
                dim, position = varint(value, position)
                dims.append(dim)
    return dims


def _with_output(name: str) -> bytes:
    value_info = length_field(VALUE_INFO_NAME, name.encode())
    return length_field(MODEL_GRAPH, length_field(GRAPH_OUTPUT, value_info))
