"""Self-describing model files: the metadata that travels inside every .onnx and .tflite.

One JSON document under the key ``edgeaudio``: in ONNX it is a ``metadata_props`` entry, in
TFLite a ``metadata`` entry naming a buffer that holds the JSON bytes. Readers here need no
torch, no onnx package and no interpreter: a checked protobuf walk (``read_onnx_metadata``) and
a checked flatbuffer walk (``verify_tflite``, ``read_tflite_metadata``) read a file before any
native runtime sees it, so a truncated or corrupt file is refused instead of crashing one. The
document is validated against ``edgeaudio.schema`` once, in ``parse_metadata``.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelFileError
from .frontend import FrontendSpec
from .schema import MAX_METADATA_BYTES, SchemaError, validate_metadata

METADATA_KEY = "edgeaudio"
FORMAT_VERSION = 1

# Streaming settings a model ships with; the CLI flags and Model.stream() arguments override.
# gate_db: windows quieter than this (RMS, dB full scale) score zero, so silence opens no event.
# background: labels that mean "none of these" (a trained background class), never an event.
DEFAULT_STREAM_SETTINGS = {"hop_seconds": 0.25, "smooth": 3, "threshold": 0.5, "patience": 2,
                           "release_ratio": 0.7, "gate_db": -60.0, "background": []}


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
    # a streaming-aware graph (chunk_frames, window_chunks, features, logits, states; see
    # edgeaudio.schema.STREAMING): one chunk and its carried states per call. None: one window.
    streaming: dict | None = None

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
        """The default hop; a streaming graph's is one chunk, whatever ``stream`` says."""
        if self.streaming is not None:
            return self.chunk_seconds
        return float(self.stream.get("hop_seconds", DEFAULT_STREAM_SETTINGS["hop_seconds"]))

    @property
    def chunk_samples(self) -> int:
        """Samples between two calls of a streaming graph (its chunk of front-end frames)."""
        return self.streaming["chunk_frames"] * self.frontend.hop_length

    @property
    def chunk_seconds(self) -> float:
        return self.chunk_samples / self.sample_rate

    @property
    def scored_window_seconds(self) -> float:
        """The audio one window score covers: the model window, or a streaming graph's
        ``window_chunks`` chunks (its ``window_seconds`` is one chunk's frames)."""
        if self.streaming is not None:
            return self.streaming["window_chunks"] * self.chunk_seconds
        return self.window_seconds

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "name": self.name, "version": self.version,
                "labels": list(self.labels), "sample_rate": self.sample_rate,
                "window_seconds": round(self.window_seconds, 6), "n_frames": self.n_frames,
                "frontend": self.frontend.to_dict(), "output_activation": self.output_activation,
                "clip_pooling": self.clip_pooling, "stream": self.stream,
                "provenance": self.provenance, **({"extra": self.extra} if self.extra else {}),
                **({"streaming": self.streaming} if self.streaming is not None else {})}

    def to_json(self) -> str:
        # compact: the document rides inside every model file (a few KB of a 300-KB int8 one)
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text, source: str = "model") -> "ModelInfo":
        """Parse and validate (``edgeaudio.schema``) a metadata document, ``str`` or ``bytes``."""
        d = parse_metadata(text, source)
        stream = dict(DEFAULT_STREAM_SETTINGS)
        stream.update(d.get("stream", {}))
        try:
            frontend = FrontendSpec.from_dict(d["frontend"])
        except ValueError as exc:  # FrontendSpec's own checks; the schema ran before them
            raise ModelFileError(f"{source}: metadata field frontend: {exc}") from exc
        return cls(labels=list(d["labels"]), frontend=frontend, n_frames=d["n_frames"],
                   name=d.get("name", "unnamed"), version=d.get("version", "0"),
                   output_activation=d.get("output_activation", "softmax"),
                   clip_pooling=d.get("clip_pooling", "mean"), stream=stream,
                   provenance=d.get("provenance", {}), extra=d.get("extra", {}),
                   streaming=d.get("streaming"))


def parse_metadata(raw, source: str = "model") -> dict:
    """The metadata JSON (``bytes`` or ``str``) as a validated dict, or a ``ModelFileError`` in
    one line naming the field. The size bound is checked before anything is decoded."""
    if len(raw) > MAX_METADATA_BYTES:
        raise ModelFileError(f"{source}: metadata '{METADATA_KEY}' is {len(raw)} bytes, more "
                             f"than {MAX_METADATA_BYTES}")
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelFileError(f"{source}: metadata '{METADATA_KEY}' is not valid UTF-8 "
                                 f"(byte {exc.start})") from None
    try:
        d = json.loads(raw)
    except RecursionError:
        raise ModelFileError(f"{source}: metadata '{METADATA_KEY}' nests too deeply") from None
    except ValueError as exc:  # bad JSON, or an integer too long to convert (Python 3.11+)
        raise ModelFileError(f"{source}: metadata '{METADATA_KEY}' is not valid JSON: "
                             f"{str(exc)[:120]}") from None
    try:
        validate_metadata(d, FORMAT_VERSION)
    except SchemaError as exc:
        raise ModelFileError(f"{source}: {exc}") from None
    return d


def model_format(path: Path, head: bytes) -> str:
    """'tflite' (flatbuffer identifier TFL3) or 'onnx' (by suffix; protobuf has no magic)."""
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    if path.suffix.lower() == ".tflite":
        raise ModelFileError(f"{path}: not a TFLite file (no TFL3 identifier): truncated or foreign")
    return "onnx"


MAX_MODEL_BYTES = 512 * 2**20   # a model for a small device; checked before reading the file


def read_model_bytes(path) -> tuple[Path, bytes, str]:
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file (.onnx or .tflite)")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(f"{path}: {size} bytes, more than a model file may hold "
                             f"({MAX_MODEL_BYTES})")
    data = path.read_bytes()
    if len(data) < 16:
        raise ModelFileError(f"{path}: file is empty or truncated ({len(data)} bytes)")
    return path, data, model_format(path, data[:8])


# --- TFLite: a checked flatbuffer walk ---------------------------------------------------------
# The legacy interpreter (tflite-runtime) trusts every offset in the file, so a truncated or
# corrupt file makes it read past the end and crash. ``verify_tflite`` follows every offset the
# interpreter follows and checks it, and every index, against the file before it sees it.
# Offsets are little-endian; a table starts with a signed offset back to its vtable, which lists
# the vtable size, the table size and a uint16 position per field (0: absent).

class _FlatBuffer:
    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)

    def need(self, pos: int, length: int, what: str) -> None:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise ModelFileError(f"{what} lies outside the file (byte {pos}, {length} bytes, "
                                 f"file {self.size} bytes): truncated or corrupt")

    def unpack(self, fmt: str, pos: int, what: str):
        self.need(pos, struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, pos)[0]

    def table(self, pos: int, what: str) -> tuple:
        """(position, table size, vtable position, vtable size) of a checked table."""
        vtable = pos - self.unpack("<i", pos, what)
        vt_size = self.unpack("<H", vtable, what + " vtable")
        obj_size = self.unpack("<H", vtable + 2, what + " vtable")
        if vt_size < 4 or vt_size % 2 or obj_size < 4:
            raise ModelFileError(f"{what} has a malformed vtable: corrupt file")
        self.need(vtable, vt_size, what + " vtable")
        self.need(pos, obj_size, what)
        return pos, obj_size, vtable, vt_size

    def field(self, table: tuple, index: int, size: int, what: str):
        """Position of field ``index`` (``size`` bytes inline), or None when absent."""
        pos, obj_size, vtable, vt_size = table
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return None
        rel = struct.unpack_from("<H", self.data, vtable + slot)[0]
        if not rel:
            return None
        if rel + size > obj_size:
            raise ModelFileError(f"{what} field {index} overruns its table: corrupt file")
        return pos + rel

    def scalar(self, table: tuple, index: int, fmt: str, what: str, default=0):
        pos = self.field(table, index, struct.calcsize(fmt), what)
        return default if pos is None else struct.unpack_from(fmt, self.data, pos)[0]

    def target(self, table: tuple, index: int, what: str):
        pos = self.field(table, index, 4, what)
        return None if pos is None else pos + self.unpack("<I", pos, what)

    def vector(self, table: tuple, index: int, elem_size: int, what: str) -> tuple:
        """(first element position, length) of a vector field; (0, 0) when absent."""
        start = self.target(table, index, what)
        if start is None:
            return 0, 0
        n = self.unpack("<I", start, what)
        self.need(start + 4, n * elem_size, what)
        return start + 4, n

    def string(self, table: tuple, index: int, what: str) -> bytes:
        start, n = self.vector(table, index, 1, what)
        if start:
            self.need(start, n + 1, what)  # flatbuffer strings end in a NUL the C side expects
        return bytes(self.data[start:start + n])

    def tables(self, table: tuple, index: int, what: str) -> list:
        start, n = self.vector(table, index, 4, what)
        return [self.table(start + 4 * i + _u32(self.data, start + 4 * i), f"{what}[{i}]")
                for i in range(n)]

    def ints(self, table: tuple, index: int, fmt: str, what: str) -> list:
        size = struct.calcsize(fmt)
        start, n = self.vector(table, index, size, what)
        return [v[0] for v in struct.iter_unpack(fmt, self.data[start:start + n * size])]


def _u32(buf, pos):
    return struct.unpack_from("<I", buf, pos)[0]


# Field numbers of the TFLite schema (tensorflow/compiler/mlir/lite/schema/schema.fbs), for the
# tables the interpreter reads. Builtin-options tables with vector or string fields, by their
# BuiltinOptions code: {code: (name, {field: element size, 0 for a string})}. Other options
# tables hold scalars only and are checked as tables (fields inside their bounds).
_OPTIONS_WITH_VECTORS = {3: ("ConcatEmbeddingsOptions", {1: 4, 2: 4}),
                         8: ("FullyConnectedOptions", {5: 1}),
                         17: ("ReshapeOptions", {0: 4}), 30: ("SqueezeOptions", {0: 4}),
                         111: ("VarHandleOptions", {0: 0, 1: 0}),
                         115: ("BucketizeOptions", {0: 4})}
_TENSOR_TYPES = 23                   # TensorType FLOAT32 = 0 ... FLOAT8_E5M2 = 22
_ELEMENT_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8,
                  15: 4, 16: 2, 18: 2, 21: 1, 22: 1}
MAX_TENSOR_BYTES = 2**28             # one tensor the interpreter would allocate


def _check_options(fb: _FlatBuffer, op: tuple, type_index: int, union_index: int,
                   known: dict, what: str) -> None:
    code = fb.scalar(op, type_index, "<B", what)
    pos = fb.target(op, union_index, what)
    if pos is None or code == 0:
        return
    options = fb.table(pos, f"{what} options")
    name, fields = known.get(code, ("options", {}))
    for index, elem in fields.items():
        if elem:
            fb.vector(options, index, elem, f"{what} {name}")
        else:
            fb.string(options, index, f"{what} {name}")


def _check_tensor(fb: _FlatBuffer, tensor: tuple, n_buffers: int, what: str) -> None:
    kind = fb.scalar(tensor, 1, "<b", what)
    if not 0 <= kind < _TENSOR_TYPES:
        raise ModelFileError(f"{what} has unknown type {kind}: corrupt file")
    buffer = fb.scalar(tensor, 2, "<I", what)
    if buffer >= n_buffers:
        raise ModelFileError(f"{what} names buffer {buffer} of {n_buffers}: corrupt file")
    shape = fb.ints(tensor, 0, "<i", what + " shape")
    fb.ints(tensor, 7, "<i", what + " shape signature")
    fb.string(tensor, 3, what + " name")
    if any(d < 0 for d in shape):
        raise ModelFileError(f"{what} has a negative dimension {shape}: corrupt file")
    elements = 1
    for d in shape:
        elements *= d
    if elements * _ELEMENT_BYTES.get(kind, 1) > MAX_TENSOR_BYTES:
        raise ModelFileError(f"{what} shape {shape} is larger than {MAX_TENSOR_BYTES} bytes")
    q_pos = fb.target(tensor, 4, what)
    if q_pos is not None:
        q = fb.table(q_pos, what + " quantization")
        for index, fmt in ((0, "<f"), (1, "<f"), (2, "<f"), (3, "<q")):
            fb.vector(q, index, struct.calcsize(fmt), what + " quantization")
        _, n_scales = fb.vector(q, 2, 4, what)
        _, n_zeros = fb.vector(q, 3, 8, what)
        if n_scales > 1:
            dim = fb.scalar(q, 6, "<i", what)
            if not 0 <= dim < len(shape) or shape[dim] != n_scales or n_zeros != n_scales:
                raise ModelFileError(f"{what}: {n_scales} per-channel scales do not fit shape "
                                     f"{shape} along dimension {dim}: corrupt file")
        details = fb.target(q, 5, what)
        if details is not None:
            fb.vector(fb.table(details, what + " quantization details"), 0, 1, what)
    if fb.field(tensor, 6, 4, what) is not None:
        raise ModelFileError(f"{what} is sparse: sparse tensors are not supported")
    if fb.field(tensor, 9, 4, what) is not None:
        raise ModelFileError(f"{what} is a variant tensor: not supported")


def _check_tensor_indices(fb: _FlatBuffer, table: tuple, index: int, n_tensors: int, what: str,
                          lowest: int = 0) -> None:
    for i in fb.ints(table, index, "<i", what):
        if not lowest <= i < n_tensors:
            raise ModelFileError(f"{what} names tensor {i} of {n_tensors}: corrupt file")


def verify_tflite(data: bytes) -> None:
    """Check every offset and index the interpreter will follow; ``ModelFileError`` if any
    points outside the file or outside its list."""
    fb = _FlatBuffer(data)
    model = fb.table(fb.unpack("<I", 0, "root"), "model")
    version = fb.scalar(model, 0, "<I", "model")
    if version != 3:
        raise ModelFileError(f"TFLite schema version {version}, not 3: corrupt or foreign file")
    buffers = fb.tables(model, 4, "buffer")
    for i, buffer in enumerate(buffers):
        fb.vector(buffer, 0, 1, f"buffer {i} data")
        offset = fb.scalar(buffer, 1, "<Q", f"buffer {i}")
        size = fb.scalar(buffer, 2, "<Q", f"buffer {i}")
        if offset > 1:  # 1 marks a buffer that is deliberately empty
            fb.need(offset, size, f"buffer {i} (offset and size)")
    codes = fb.tables(model, 1, "operator code")
    for i, code in enumerate(codes):
        fb.string(code, 1, f"operator code {i} custom name")
    subgraphs = fb.tables(model, 2, "subgraph")
    if not subgraphs:
        raise ModelFileError("TFLite file has no subgraph: corrupt or foreign file")
    for s, subgraph in enumerate(subgraphs):
        tensors = fb.tables(subgraph, 0, f"subgraph {s} tensor")
        for t, tensor in enumerate(tensors):
            _check_tensor(fb, tensor, len(buffers), f"subgraph {s} tensor {t}")

        _check_tensor_indices(fb, subgraph, 1, len(tensors), f"subgraph {s} inputs")
        _check_tensor_indices(fb, subgraph, 2, len(tensors), f"subgraph {s} outputs")
        fb.string(subgraph, 4, f"subgraph {s} name")
        for o, op in enumerate(fb.tables(subgraph, 3, f"subgraph {s} operator")):
            what = f"subgraph {s} operator {o}"
            if fb.scalar(op, 0, "<I", what) >= len(codes):
                raise ModelFileError(f"{what} names an unknown operator code: corrupt file")
            for index in (1, 2, 8):  # inputs, outputs, intermediates (-1: an omitted input)
                _check_tensor_indices(fb, op, index, len(tensors), what, lowest=-1)
            fb.vector(op, 5, 1, what + " custom options")
            fb.vector(op, 7, 1, what + " mutating inputs")
            if fb.scalar(op, 9, "<Q", what) or fb.scalar(op, 10, "<Q", what):
                fb.need(fb.scalar(op, 9, "<Q", what), fb.scalar(op, 10, "<Q", what),
                        what + " large custom options")
            _check_options(fb, op, 3, 4, _OPTIONS_WITH_VECTORS, what)
            _check_options(fb, op, 11, 12, {}, what)
    for i, meta in enumerate(fb.tables(model, 6, "metadata")):
        fb.string(meta, 0, f"metadata {i} name")
        if fb.scalar(meta, 1, "<I", f"metadata {i}") >= len(buffers):
            raise ModelFileError(f"metadata {i} names a missing buffer: corrupt file")
    fb.vector(model, 5, 4, "metadata buffer list")
    fb.string(model, 3, "model description")
    for i, sig in enumerate(fb.tables(model, 7, "signature")):
        fb.string(sig, 2, f"signature {i} key")
        if fb.scalar(sig, 4, "<I", f"signature {i}") >= len(subgraphs):
            raise ModelFileError(f"signature {i} names a missing subgraph: corrupt file")
        for index in (0, 1):
            for m, tensor_map in enumerate(fb.tables(sig, index, f"signature {i} tensor")):
                fb.string(tensor_map, 0, f"signature {i} tensor {m} name")


def read_tflite_metadata(data: bytes) -> dict:
    """All ``name -> bytes`` metadata entries of a TFLite flatbuffer (offsets checked; an
    entry larger than any metadata may be is refused before it is copied)."""
    fb = _FlatBuffer(data)
    model = fb.table(fb.unpack("<I", 0, "root"), "model")
    buffers = fb.tables(model, 4, "buffer")
    out = {}
    for i, meta in enumerate(fb.tables(model, 6, "metadata")):
        try:
            name = fb.string(meta, 0, f"metadata {i} name").decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFileError(f"metadata {i} name is not UTF-8: corrupt file") from None
        index = fb.scalar(meta, 1, "<I", f"metadata {i}")
        if index >= len(buffers):
            raise ModelFileError(f"metadata {name!r} names a missing buffer: corrupt file")
        buffer = buffers[index]
        start, n = fb.vector(buffer, 0, 1, f"metadata {name!r}")
        if not start:  # large models keep buffers after the flatbuffer: offset and size fields
            start = fb.scalar(buffer, 1, "<Q", f"metadata {name!r}")
            n = fb.scalar(buffer, 2, "<Q", f"metadata {name!r}")
            fb.need(start, n, f"metadata {name!r}")
        if name == METADATA_KEY and n > MAX_METADATA_BYTES:
            raise ModelFileError(f"metadata '{METADATA_KEY}' is {n} bytes, more than "
                                 f"{MAX_METADATA_BYTES}")
        out[name] = bytes(data[start:start + n])
    return out


def info_from_tflite(path: Path, data: bytes) -> ModelInfo:
    """The validated metadata of a TFLite file whose structure has been verified."""
    try:
        verify_tflite(data)
        meta = read_tflite_metadata(data)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    if METADATA_KEY not in meta:
        raise ModelFileError(f"{path}: not an edgeaudio model: no metadata '{METADATA_KEY}'")
    return ModelInfo.from_json(meta[METADATA_KEY], str(path))


# --- ONNX: a checked walk over the top level of the protobuf ----------------------------------
# ModelProto field 14 is ``repeated StringStringEntryProto metadata_props`` {1: key, 2: value}.
# Reading it here (no onnx package) checks every top-level length against the file and lets
# the metadata be refused before onnxruntime parses the graph.

def _varint(data: bytes, pos: int) -> tuple:
    value = shift = 0
    for _ in range(10):
        if pos >= len(data):
            raise ModelFileError("protobuf field runs past the end of the file: truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ModelFileError("malformed protobuf varint: corrupt file")


def _protobuf_fields(data: bytes, start: int, end: int):
    """(field number, wire type, value or (start, end) of a length-delimited field)."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
            continue
        if wire == 2:
            length, pos = _varint(data, pos)
            value, size = (pos, pos + length), length
        elif wire in (1, 5):
            value, size = None, 8 if wire == 1 else 4
        else:
            raise ModelFileError(f"protobuf wire type {wire} at byte {pos}: not an ONNX file "
                                 "(truncated, corrupt or foreign)")
        if number == 0 or pos + size > end:
            raise ModelFileError(f"protobuf field at byte {pos} runs past the end: truncated "
                                 "or corrupt")
        pos += size
        yield number, wire, value


def read_onnx_metadata(data: bytes) -> dict:
    """All ``key -> bytes`` metadata_props of an ONNX file; an entry larger than any metadata
    may be is refused before it is copied."""
    out = {}
    saw_graph = False
    for number, wire, value in _protobuf_fields(data, 0, len(data)):
        saw_graph |= number == 7 and wire == 2
        if number != 14 or wire != 2:
            continue
        key = entry = None
        for sub, sub_wire, span in _protobuf_fields(data, *value):
            if sub_wire == 2 and sub == 1:
                key = bytes(data[span[0]:span[1]])
            elif sub_wire == 2 and sub == 2:
                entry = span
        if key is None or entry is None:
            continue
        if key == METADATA_KEY.encode() and entry[1] - entry[0] > MAX_METADATA_BYTES:
            raise ModelFileError(f"metadata '{METADATA_KEY}' is {entry[1] - entry[0]} bytes, "
                                 f"more than {MAX_METADATA_BYTES}")
        out[key.decode("utf-8", "replace")] = bytes(data[entry[0]:entry[1]])
    if not saw_graph:
        raise ModelFileError("no ONNX graph in the file: truncated, corrupt or foreign")
    return out


def info_from_onnx(path: Path, data: bytes) -> ModelInfo:
    """The validated metadata of an ONNX file, read before onnxruntime sees the file."""
    try:
        meta = read_onnx_metadata(data)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    if METADATA_KEY not in meta:
        raise ModelFileError(f"{path}: not an edgeaudio model: no metadata '{METADATA_KEY}'")
    return ModelInfo.from_json(meta[METADATA_KEY], str(path))
