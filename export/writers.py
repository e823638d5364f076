"""Write model files the runtime runs: ONNX and TFLite graphs (log features -> logits) with the
edgeaudio metadata inside (see ``edgeaudio.modelfile``)."""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from edgeaudio.modelfile import METADATA_KEY, ModelInfo


def example_input(info: ModelInfo) -> torch.Tensor:
    return torch.zeros(1, info.n_frames, info.frontend.n_bins)


@contextlib.contextmanager
def _quiet():
    """The converters print pages of progress; keep them out of the user's terminal."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield sink


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def set_onnx_metadata(onnx_path: Path, info: ModelInfo) -> None:
    import onnx

    model = onnx.load(str(onnx_path))
    for prop in [p for p in model.metadata_props if p.key == METADATA_KEY]:
        model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    _atomic_write(onnx_path, model.SerializeToString())


def write_onnx(network: torch.nn.Module, info: ModelInfo, path) -> Path:
    """Export ``network`` (features [1, T, F] -> logits) to ONNX with metadata."""
    path = Path(path)
    network = network.eval()
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(network, (example_input(info),), dynamo=True,
                                    input_names=["features"], output_names=["logits"])
        program.save(str(path))
    set_onnx_metadata(path, info)
    return path


def add_tflite_metadata(tflite_bytes: bytes, info: ModelInfo) -> bytes:
    """Append a buffer holding the metadata JSON and a Metadata entry naming it."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_bytes))
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_KEY.encode()
                      and m.name != METADATA_KEY]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(info.to_json().encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    meta = schema.MetadataT()
    meta.name = METADATA_KEY
    meta.buffer = len(model.buffers) - 1
    model.metadata.append(meta)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def write_tflite(network: torch.nn.Module, info: ModelInfo, path) -> Path:
    """Convert ``network`` with litert-torch (float) and write it with metadata."""
    import litert_torch

    path = Path(path)
    with _quiet():
        edge = litert_torch.convert(network.eval(), (example_input(info),))
        tmp = path.with_name(path.name + ".raw")
        edge.export(str(tmp))
    data = tmp.read_bytes()
    tmp.unlink()
    _atomic_write(path, add_tflite_metadata(data, info))
    return path
