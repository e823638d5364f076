"""Write model files the runtime runs: ONNX and TFLite graphs (log features -> logits) with the
edgeaudio metadata inside (see ``edgeaudio.modelfile``).

Float writers live here (``write_onnx``, ``write_tflite``) with what every writer shares
(metadata, naming the layer a converter refuses); the int8 writers are in ``quantize.py``
(``quantize_onnx``, ``quantize_tflite``), and ``model_files.write_model_files`` writes any set
of the four files under their documented names::

    <stem>.onnx         float ONNX, BatchNorm folded
    <stem>.int8.onnx    int8 QDQ ONNX (float input and output)
    <stem>.tflite       float TFLite, BatchNorm folded
    <stem>.int8.tflite  int8 TFLite (int8 input and output, scale / zero point in the tensors)

Errors a user can act on are ``ExportError``s (``errors.py``).
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import torch

from edgeaudio.modelfile import METADATA_KEY, ModelInfo

from .errors import ConversionError, ExportError, write_file
from .streaming import converter_call, example_call, input_names, output_names

FORMATS = ("onnx", "tflite")


def file_name(stem: str, fmt: str, int8: bool) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    return f"{stem}{'.int8' if int8 else ''}.{fmt}"


@contextlib.contextmanager
def converters_silenced():
    """The converters print pages of progress; keep them out of the user's terminal."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield sink


def prepare_output_dir(path) -> Path:
    """Create ``path`` if needed and prove it writable, or raise an ExportError saying why."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ExportError(f"output path {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".edgeaudio-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ExportError(f"output folder {path} is not writable: "
                          f"{exc.strerror or exc}") from exc
    return path


# --- naming the layer a converter refuses ----------------------------------------------------

_OP_PATTERNS = (re.compile(r"op='(?:aten|prims)\.(\w+)"),
                re.compile(r"\b(?:aten|prims)(?:\.|::)(\w+)"),
                re.compile(r"translating node %(\w+)"))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _ops_in(message: str) -> list:
    found = []
    for pattern in _OP_PATTERNS:
        for name in pattern.findall(message):
            name = re.sub(r"_\d+$", "", name)  # fx node names: relu_3 -> relu
            if name not in found and name not in ("default",):
                found.append(name)
    return found


def _layers_using(network: torch.nn.Module, example: tuple, ops: list) -> list:
    """(layer path, layer type, op) for graph nodes running one of ``ops``; exact names first,
    then decomposed relatives (aten.i0 -> prims.bessel_i0)."""
    try:
        with converters_silenced():
            ep = torch.export.export(network.eval(), tuple(example))
            graphs = [ep.graph]
            with contextlib.suppress(Exception):
                graphs.append(ep.run_decompositions().graph)
    except Exception:
        return []
    nodes = [n for g in graphs for n in g.nodes if n.op == "call_function"]

    def name(node):
        return getattr(node.target, "_opname", None) or getattr(node.target, "__name__", "")

    for exact in (True, False):
        hits = []
        for op in ops:
            for node in nodes:
                n = name(node)
                if (n == op) if exact else (op.endswith("_" + n) or n.endswith("_" + op)):
                    stack = node.meta.get("nn_module_stack") or {}
                    if stack:
                        path, kind = list(stack.values())[-1]
                        entry = (path or "<top level>", str(kind).rsplit(".", 1)[-1], op)
                        if entry not in hits:
                            hits.append(entry)
        if hits:
            return hits
    return []


def conversion_error(network: torch.nn.Module, example: tuple, exc: BaseException,
                     converter: str) -> ConversionError:
    """A one-line ConversionError naming the op and the layer ``converter`` refused
    (``example``: the network's inputs, ``streaming.example_call``)."""
    message = str(exc)
    ops = _ops_in(message)
    hits = _layers_using(network, example, ops) if ops else []
    if hits:
        path, kind, op = hits[0]
        more = f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""
        return ConversionError(f"the {converter} converter refuses op '{op}' in layer '{path}' "
                               f"({kind}){more}: {first_line(exc)}")
    return ConversionError(f"the {converter} converter refused the network: {first_line(exc)}")


# --- ONNX ------------------------------------------------------------------------------------

def set_onnx_metadata(onnx_path: Path, info: ModelInfo) -> None:
    import onnx

    model = onnx.load(str(onnx_path))
    for prop in [p for p in model.metadata_props if p.key == METADATA_KEY]:
        model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    write_file(onnx_path, model.SerializeToString())


def write_onnx(network: torch.nn.Module, info: ModelInfo, path) -> Path:
    """Export ``network`` (features [1, T, F] -> logits; a streaming call also takes and
    returns its states) to ONNX with metadata."""
    path = Path(path)
    network = network.eval()
    example = example_call(info)
    try:
        with converters_silenced(), torch.no_grad():
            program = torch.onnx.export(network, example, dynamo=True,
                                        input_names=input_names(info),
                                        output_names=output_names(info))
    except Exception as exc:
        raise conversion_error(network, example, exc, "ONNX") from exc
    tmp = path.with_name(path.name + ".raw")
    try:
        with converters_silenced():
            program.save(str(tmp))
        write_file(path, tmp.read_bytes())
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    set_onnx_metadata(path, info)
    return path


# --- TFLite ----------------------------------------------------------------------------------

def drop_tensor_names(model) -> None:
    """Unname every tensor but the graph's inputs and outputs. The converter names each after
    its module path (a few hundred bytes apiece, a tenth of a small int8 file); nothing reads
    them, and the signature keeps its own input and output keys."""
    for subgraph in model.subgraphs:
        keep = {int(i) for i in subgraph.inputs} | {int(i) for i in subgraph.outputs}
        for index, tensor in enumerate(subgraph.tensors):
            if index not in keep:
                tensor.name = None  # the interpreter names it ""


def _shared_vector_quantization(schema):
    """A ``QuantizationParametersT`` whose scale and zero-point vectors, and the table holding
    them, are written once per distinct content and referenced from every tensor that has them
    (a FlatBuffer may point many tables at one vector or table). Per-channel int8 weights store
    an int64 zero point per channel, all zero, which LiteRT wants in full: written per tensor
    they are a fifth of a small int8 file."""

    class SharedVectorQuantization(schema.QuantizationParametersT):
        def __init__(self, source, written: dict):
            super().__init__()
            self.__dict__.update(vars(source))
            self.written = written  # (builder, field, content) -> offset, shared by the file

        def _vector(self, builder, field: str, values, dtype) -> int:
            array = np.asarray(values, dtype=dtype)
            key = (id(builder), field, array.tobytes())
            if key not in self.written:
                self.written[key] = builder.CreateNumpyVector(array)
            return self.written[key]

        def Pack(self, builder):
            if self.min is not None or self.max is not None or self.details is not None:
                return super().Pack(builder)  # not what the int8 converter writes: as is
            key = (id(builder), "table", self.detailsType, self.quantizedDimension,
                   np.asarray(self.scale if self.scale is not None else [], "<f4").tobytes(),
                   np.asarray(self.zeroPoint if self.zeroPoint is not None else [],
                              "<i8").tobytes(), self.scale is None, self.zeroPoint is None)
            if key not in self.written:  # tensors quantized alike share one table too
                self.written[key] = self._table(builder)
            return self.written[key]

        def _table(self, builder) -> int:
            scale = None if self.scale is None else self._vector(builder, "scale", self.scale,
                                                                 "<f4")
            zero = None if self.zeroPoint is None else self._vector(builder, "zero_point",
                                                                    self.zeroPoint, "<i8")
            schema.QuantizationParametersStart(builder)
            if scale is not None:
                schema.QuantizationParametersAddScale(builder, scale)
            if zero is not None:
                schema.QuantizationParametersAddZeroPoint(builder, zero)
            schema.QuantizationParametersAddDetailsType(builder, self.detailsType)
            schema.QuantizationParametersAddQuantizedDimension(builder,
                                                               self.quantizedDimension)
            return schema.QuantizationParametersEnd(builder)

    return SharedVectorQuantization


def pack_tflite(model) -> bytes:
    """Serialize a TFLite object model with its quantization vectors and tables shared
    (``_shared_vector_quantization``): the same graph, the interpreter reads it as before."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    shared = _shared_vector_quantization(schema)
    written: dict = {}
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            if tensor.quantization is not None:
                tensor.quantization = shared(tensor.quantization, written)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def add_tflite_metadata(tflite_bytes: bytes, info: ModelInfo) -> bytes:
    """Append a buffer holding the metadata JSON and a Metadata entry naming it (tensor names
    dropped and quantization vectors shared on the way: ``drop_tensor_names``,
    ``pack_tflite``)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_bytes))
    drop_tensor_names(model)
    replaced = [m for m in (model.metadata or []) if m.name in (METADATA_KEY.encode(), METADATA_KEY)]
    for meta in replaced:  # buffers are referenced by index: empty the old one, keep its place
        model.buffers[meta.buffer].data = None
    model.metadata = [m for m in (model.metadata or []) if m not in replaced]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(info.to_json().encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    meta = schema.MetadataT()
    meta.name = METADATA_KEY
    meta.buffer = len(model.buffers) - 1
    model.metadata.append(meta)
    return pack_tflite(model)


def write_tflite(network: torch.nn.Module, info: ModelInfo, path) -> Path:
    """Convert ``network`` with litert-torch (float) and write it with metadata."""
    import litert_torch

    path = Path(path)
    module, args, kwargs = converter_call(network.eval(), info)
    try:
        with converters_silenced():
            data = bytes(litert_torch.convert(module, args, kwargs).model_content())
    except Exception as exc:
        raise conversion_error(network, example_call(info), exc, "TFLite") from exc
    write_file(path, add_tflite_metadata(data, info))
    return path
