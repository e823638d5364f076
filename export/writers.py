"""Write model files the runtime runs: ONNX and TFLite graphs (log features -> logits) with the
edgeaudio metadata inside (see ``edgeaudio.modelfile``).

Float writers live here (``write_onnx``, ``write_tflite``); the int8 writers are in
``quantize.py`` (``quantize_onnx``, ``quantize_tflite``). ``write_model_files`` writes any set
of the four files under their documented names::

    <stem>.onnx         float ONNX, BatchNorm folded
    <stem>.int8.onnx    int8 QDQ ONNX (float input and output)
    <stem>.tflite       float TFLite, BatchNorm folded
    <stem>.int8.tflite  int8 TFLite (int8 input and output, scale / zero point in the tensors)

Errors a user can act on (a layer a converter refuses, an output folder that cannot be written)
are ``ExportError``s: the CLI prints them as one line.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np
import torch

from edgeaudio.errors import EdgeAudioError
from edgeaudio.modelfile import METADATA_KEY, ModelInfo

FORMATS = ("onnx", "tflite")


class ExportError(EdgeAudioError):
    """Export cannot go on: the message says why."""


class ConversionError(ExportError):
    """A converter refused the network (the message names the layer where it can)."""


def file_name(stem: str, fmt: str, int8: bool) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    return f"{stem}{'.int8' if int8 else ''}.{fmt}"


def example_input(info: ModelInfo) -> torch.Tensor:
    return torch.zeros(1, info.n_frames, info.frontend.n_bins)


@contextlib.contextmanager
def _quiet():
    """The converters print pages of progress; keep them out of the user's terminal."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield sink


def _atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc


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


def _first_line(exc: BaseException) -> str:
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


def _layers_using(network: torch.nn.Module, example: torch.Tensor, ops: list) -> list:
    """(layer path, layer type, op) for graph nodes running one of ``ops``; exact names first,
    then decomposed relatives (aten.i0 -> prims.bessel_i0)."""
    try:
        with _quiet():
            ep = torch.export.export(network.eval(), (example,))
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


def conversion_error(network: torch.nn.Module, example: torch.Tensor, exc: BaseException,
                     converter: str) -> ConversionError:
    """A one-line ConversionError naming the op and the layer ``converter`` refused."""
    message = str(exc)
    ops = _ops_in(message)
    hits = _layers_using(network, example, ops) if ops else []
    if hits:
        path, kind, op = hits[0]
        more = f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""
        return ConversionError(f"the {converter} converter refuses op '{op}' in layer '{path}' "
                               f"({kind}){more}: {_first_line(exc)}")
    return ConversionError(f"the {converter} converter refused the network: {_first_line(exc)}")


# --- ONNX ------------------------------------------------------------------------------------

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
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(network, (example_input(info),), dynamo=True,
                                        input_names=["features"], output_names=["logits"])
    except Exception as exc:
        raise conversion_error(network, example_input(info), exc, "ONNX") from exc
    tmp = path.with_name(path.name + ".raw")
    try:
        with _quiet():
            program.save(str(tmp))
        _atomic_write(path, tmp.read_bytes())
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    set_onnx_metadata(path, info)
    return path


# --- TFLite ----------------------------------------------------------------------------------

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


def tflite_io_details(tflite_bytes: bytes) -> tuple:
    """({dtype, scale, zero_point, shape} of the input, the same of the output)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeaudio.backends import native_stderr_silenced

    with native_stderr_silenced():
        interpreter = Interpreter(model_content=bytes(tflite_bytes))

    def describe(d):
        scale, zero = d["quantization"]
        return {"dtype": np.dtype(d["dtype"]).name, "scale": float(scale),
                "zero_point": int(zero), "shape": [int(s) for s in d["shape"]]}

    return (describe(interpreter.get_input_details()[0]),
            describe(interpreter.get_output_details()[0]))


def write_tflite(network: torch.nn.Module, info: ModelInfo, path) -> Path:
    """Convert ``network`` with litert-torch (float) and write it with metadata."""
    import litert_torch

    path = Path(path)
    try:
        with _quiet():
            data = bytes(litert_torch.convert(network.eval(),
                                              (example_input(info),)).model_content())
    except Exception as exc:
        raise conversion_error(network, example_input(info), exc, "TFLite") from exc
    _atomic_write(path, add_tflite_metadata(data, info))
    return path


# --- all files at once -----------------------------------------------------------------------

def write_model_files(network: torch.nn.Module, info: ModelInfo, out_dir, *,
                      formats=FORMATS, float_files: bool = True, int8: bool = False,
                      calibration: np.ndarray | None = None, stem: str = "model",
                      int8_network: torch.nn.Module | None = None,
                      tflite_pt2e=None) -> dict:
    """Write the model files of ``network`` (any torch network log features -> logits) into
    ``out_dir``: float files with BatchNorm folded, and with ``int8`` the int8 files calibrated
    on ``calibration`` (``[N, n_frames, bins]`` log features from training data, see
    ``quantize.calibration_windows``). Returns ``{file name: path}``.

    ``int8_network`` (e.g. after quantization-aware fine-tuning) replaces ``network`` for the
    int8 files; ``tflite_pt2e`` = (quantizer, converted module) skips PT2E calibration.
    """
    from . import quantize

    formats = list(dict.fromkeys(formats))
    for fmt in formats:
        file_name(stem, fmt, False)  # validates
    if int8 and calibration is None and not (tflite_pt2e and formats == ["tflite"]):
        raise ExportError("int8 files need a calibration set (log features from training data)")
    out = prepare_output_dir(out_dir)
    folded = quantize.fold_batchnorm(network)
    int8_source = int8_network if int8_network is not None else network
    written = {}
    for fmt in formats:
        if float_files:
            name = file_name(stem, fmt, False)
            writer = write_onnx if fmt == "onnx" else write_tflite
            written[name] = writer(folded, info, out / name)
        if int8:
            name = file_name(stem, fmt, True)
            if fmt == "onnx":
                reuse = written.get(file_name(stem, "onnx", False)) \
                    if int8_network is None else None
                written[name] = quantize.quantize_onnx(int8_source, info, calibration,
                                                       out / name, float_onnx=reuse)
            else:
                written[name] = quantize.quantize_tflite(int8_source, info, calibration,
                                                         out / name, _prepared=tflite_pt2e)
    return written
