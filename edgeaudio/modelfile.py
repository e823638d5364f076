"""Self-describing model files: the metadata that travels inside every .onnx and .tflite.

One JSON document under the key ``edgeaudio``: in ONNX it is a ``metadata_props`` entry, in
TFLite a ``metadata`` entry naming a buffer that holds the JSON bytes. Readers here need no
torch and no onnx package: ONNX metadata comes from onnxruntime, TFLite metadata from a small
flatbuffer walk (``read_tflite_metadata``) that works with any interpreter package.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelFileError
from .frontend import FrontendSpec

METADATA_KEY = "edgeaudio"
FORMAT_VERSION = 1
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "none")

# Streaming settings a model ships with; the CLI flags and Model.stream() arguments override.
# gate_db: windows quieter than this (RMS, dB full scale) score zero, so silence opens no event.
DEFAULT_STREAM_SETTINGS = {"hop_seconds": 0.25, "smooth": 3, "threshold": 0.5, "patience": 2,
                           "release_ratio": 0.7, "gate_db": -60.0}


@dataclass
class ModelInfo:
    """What a model file says about itself."""

    labels: list
    frontend: FrontendSpec
    n_frames: int                      # frames per model window: the model's input is [1, n_frames, bins]
    name: str = "unnamed"
    version: str = "0"
    output_activation: str = "softmax"  # applied by the runtime to the model's raw outputs
    clip_pooling: str = "mean"          # how window scores combine into one clip score
    stream: dict = field(default_factory=lambda: dict(DEFAULT_STREAM_SETTINGS))
    provenance: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    @property
    def window_samples(self) -> int:
        return self.frontend.samples_for_frames(self.n_frames)

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    @property
    def hop_seconds(self) -> float:
        return float(self.stream.get("hop_seconds", DEFAULT_STREAM_SETTINGS["hop_seconds"]))

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "name": self.name, "version": self.version,
                "labels": list(self.labels), "sample_rate": self.sample_rate,
                "window_seconds": round(self.window_seconds, 6), "n_frames": self.n_frames,
                "frontend": self.frontend.to_dict(), "output_activation": self.output_activation,
                "clip_pooling": self.clip_pooling, "stream": self.stream,
                "provenance": self.provenance, **({"extra": self.extra} if self.extra else {})}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> "ModelInfo":
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{source}: metadata '{METADATA_KEY}' is not valid JSON: {exc}")
        if not isinstance(d, dict):
            raise ModelFileError(f"{source}: metadata '{METADATA_KEY}' is not a JSON object")
        missing = [k for k in ("labels", "frontend", "n_frames") if k not in d]
        if missing:
            raise ModelFileError(f"{source}: metadata '{METADATA_KEY}' lacks {', '.join(missing)}")
        if int(d.get("format_version", 1)) > FORMAT_VERSION:
            raise ModelFileError(f"{source}: model format {d['format_version']} is newer than this "
                                 f"edgeaudio understands ({FORMAT_VERSION}); upgrade edgeaudio")
        labels = d["labels"]
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise ModelFileError(f"{source}: labels must be a non-empty list of strings")
        if len(set(labels)) != len(labels):
            raise ModelFileError(f"{source}: labels contain duplicates")
        activation = d.get("output_activation", "softmax")
        if activation not in OUTPUT_ACTIVATIONS:
            raise ModelFileError(f"{source}: unknown output_activation {activation!r}")
        stream = dict(DEFAULT_STREAM_SETTINGS)
        stream.update(d.get("stream") or {})
        return cls(labels=labels, frontend=FrontendSpec.from_dict(d["frontend"]),
                   n_frames=int(d["n_frames"]), name=str(d.get("name", "unnamed")),
                   version=str(d.get("version", "0")), output_activation=activation,
                   clip_pooling=d.get("clip_pooling", "mean"), stream=stream,
                   provenance=d.get("provenance") or {}, extra=d.get("extra") or {})


def model_format(path: Path, head: bytes) -> str:
    """'tflite' (flatbuffer identifier TFL3) or 'onnx' (by suffix; protobuf has no magic)."""
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    if path.suffix.lower() == ".tflite":
        raise ModelFileError(f"{path}: not a TFLite file (no TFL3 identifier): truncated or foreign")
    return "onnx"


def read_model_bytes(path) -> tuple[Path, bytes, str]:
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file (.onnx or .tflite)")
    data = path.read_bytes()
    if len(data) < 16:
        raise ModelFileError(f"{path}: file is empty or truncated ({len(data)} bytes)")
    return path, data, model_format(path, data[:8])


# --- TFLite: a minimal flatbuffer walk over Model.metadata and Model.buffers -------------------
# Field order in the TFLite schema: Model{version, operator_codes, subgraphs, description,
# buffers, metadata_buffer, metadata, signature_defs}; Metadata{name, buffer};
# Buffer{data, offset, size}. Offsets are little-endian uint32 relative to where they sit.

def _u32(buf, pos):
    return struct.unpack_from("<I", buf, pos)[0]


def _table_field(buf, table, index):
    """Absolute position of field ``index`` of the table at ``table``, or None if absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    vtable_len = struct.unpack_from("<H", buf, vtable)[0]
    slot = 4 + 2 * index
    if slot >= vtable_len:
        return None
    rel = struct.unpack_from("<H", buf, vtable + slot)[0]
    return table + rel if rel else None


def _vector(buf, field_pos):
    start = field_pos + _u32(buf, field_pos)
    return start + 4, _u32(buf, start)


def _tables(buf, table, index):
    pos = _table_field(buf, table, index)
    if pos is None:
        return []
    start, n = _vector(buf, pos)
    return [start + 4 * i + _u32(buf, start + 4 * i) for i in range(n)]


def read_tflite_metadata(data: bytes) -> dict:
    """All ``name -> bytes`` metadata entries of a TFLite flatbuffer."""
    try:
        model = _u32(data, 0)
        buffers = _tables(data, model, 4)
        out = {}
        for meta in _tables(data, model, 6):
            name_pos = _table_field(data, meta, 0)
            buf_pos = _table_field(data, meta, 1)
            if name_pos is None or buf_pos is None:
                continue
            s, n = _vector(data, name_pos)
            name = bytes(data[s:s + n]).decode("utf-8")
            buffer = buffers[_u32(data, buf_pos)]
            data_pos = _table_field(data, buffer, 0)
            if data_pos is not None:
                s, n = _vector(data, data_pos)
                out[name] = bytes(data[s:s + n])
            else:  # large models keep buffers after the flatbuffer: offset and size fields
                off_pos, size_pos = _table_field(data, buffer, 1), _table_field(data, buffer, 2)
                if off_pos is None or size_pos is None:
                    continue
                off = struct.unpack_from("<Q", data, off_pos)[0]
                size = struct.unpack_from("<Q", data, size_pos)[0]
                if off + size > len(data):
                    raise IndexError("buffer beyond end of file")
                out[name] = bytes(data[off:off + size])
        return out
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"TFLite file is truncated or corrupt ({exc})") from exc


def info_from_tflite(path: Path, data: bytes) -> ModelInfo:
    meta = read_tflite_metadata(data)
    if METADATA_KEY not in meta:
        raise ModelFileError(f"{path}: not an edgeaudio model: no metadata '{METADATA_KEY}'")
    return ModelInfo.from_json(meta[METADATA_KEY].decode("utf-8", "replace"), str(path))


def info_from_onnx_metadata(path: Path, custom_metadata: dict) -> ModelInfo:
    if METADATA_KEY not in custom_metadata:
        raise ModelFileError(f"{path}: not an edgeaudio model: no metadata '{METADATA_KEY}'")
    return ModelInfo.from_json(custom_metadata[METADATA_KEY], str(path))
