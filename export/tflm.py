"""Run an int8 .tflite under TensorFlow Lite Micro (the ``tflite-micro`` PyPI package), the
interpreter a microcontroller runs, beside LiteRT's reference kernels; find the smallest tensor
arena it needs. Torch-free: the firmware scripts (``firmware_demo/``) import it.

    runner = TFLMRunner("model.int8.tflite")          # arena: smallest_arena() by default
    scores = runner.run(features)                      # log features [n_frames, bins] -> float
    smallest_arena(open("model.int8.tflite", "rb").read())
    LiteRTReference(data).run_raw(runner.quantize_input(features))   # TFLM's kernels, in LiteRT

The edgeaudio metadata buffer is dropped before the file goes to TFLM (``strip_metadata``): a
board never needs it, and it is most of the bytes of a file with a stored filterbank matrix.
The int8 edges (quantizing the input, dequantizing the output) are ``edgeaudio.quant``'s, the
runtime's own.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from edgeaudio.backends import native_stderr_silenced
from edgeaudio.modelfile import METADATA_KEY
from edgeaudio.quant import dequantize, is_quantized, quantize

from .errors import ExportError

ARENA_STEP = 256          # the arena search's resolution (bytes)
ARENA_FIRST_GUESS = 64 * 1024


class TFLMError(ExportError):
    pass


def tensor_quantization(details: dict):
    """(scale, zero point) of a TFLM tensor's details, or None for a float tensor."""
    q = details.get("quantization_parameters") or {}
    scales, zeros = q.get("scales"), q.get("zero_points")
    if scales is None or len(scales) == 0:
        return None
    return float(scales[0]), int(zeros[0])


def tflm_available() -> bool:
    return importlib.util.find_spec("tflite_micro") is not None


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as exc:
        raise TFLMError("TensorFlow Lite Micro is not installed (pip install tflite-micro)") \
            from exc
    return runtime


def shrink_zero_points(model) -> int:
    """Per-channel zero-point vectors that are all 0 become a single 0 (TFLM reads element 0
    for every channel when the vector is shorter than the scales); returns how many values went."""
    dropped = 0
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            q = tensor.quantization
            if q is None or q.zeroPoint is None or q.scale is None:
                continue
            zp = np.asarray(q.zeroPoint)
            if len(zp) > 1 and len(zp) == len(q.scale) and not zp.any():
                q.zeroPoint = zp[:1].copy()
                dropped += len(zp) - 1
    return dropped


def strip_metadata(tflite_bytes: bytes, *, names: bool = False,
                   zero_points: bool = False) -> bytes:
    """The flatbuffer without the edgeaudio metadata entry and its buffer (graph only).

    ``names``: also without the strings TFLM never reads (tensor names, signature definitions,
    the description); ``zero_points``: all-zero per-channel zero points shrunk to one value
    (``shrink_zero_points``; TFLM only, LiteRT refuses that form). Outputs do not change."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_bytes))
    keep, drop = [], set()
    for meta in model.metadata or []:
        name = meta.name.decode() if isinstance(meta.name, bytes) else meta.name
        (drop.add(meta.buffer) if name == METADATA_KEY else keep.append(meta))
    shrunk = shrink_zero_points(model) if zero_points else 0
    if not drop and not names and not shrunk:
        return bytes(tflite_bytes)
    # buffers are referenced by index: empty the dropped ones rather than renumber
    for index in drop:
        model.buffers[index].data = None
    model.metadata = keep
    if names:
        flatbuffer_utils.strip_strings(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def tflite_io_details(tflite_bytes: bytes) -> tuple:
    """({dtype, scale, zero_point, shape} of the input, the same of the output), as LiteRT
    reads the file."""
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_silenced():
        interpreter = Interpreter(model_content=bytes(tflite_bytes))

    def describe(d):
        scale, zero = d["quantization"]
        return {"dtype": np.dtype(d["dtype"]).name, "scale": float(scale),
                "zero_point": int(zero), "shape": [int(s) for s in d["shape"]]}

    return (describe(interpreter.get_input_details()[0]),
            describe(interpreter.get_output_details()[0]))


def _interpreter(data: bytes, arena_size: int):
    runtime = _runtime()
    with native_stderr_silenced():
        return runtime.Interpreter.from_bytes(data, arena_size=int(arena_size))


def fits(data: bytes, arena_size: int) -> bool:
    """Whether TFLM can allocate every tensor of the model in ``arena_size`` bytes."""
    try:
        _interpreter(data, arena_size)
        return True
    except RuntimeError:
        return False


def smallest_arena(tflite_bytes: bytes, high: int | None = None, step: int = ARENA_STEP) -> int:
    """The smallest tensor arena (bytes, a multiple of ``step``) in which TFLM allocates the
    model, by bisection between 0 and ``high`` (default: grows from 64 KiB until it fits). The
    figure for this host: on 64 bits TFLM's own structs take a little more room than on a
    32-bit microcontroller."""
    data = strip_metadata(tflite_bytes)
    high = int(high or ARENA_FIRST_GUESS)
    while not fits(data, high):
        if high > 512 * 1024 * 1024:
            raise TFLMError("TFLM cannot allocate this model in 512 MiB; does it use ops "
                            "TFLM lacks?")
        high *= 2
    low = 0  # does not fit
    while high - low > step:
        mid = (low + high) // 2 // step * step or step
        if mid <= low:
            break
        if fits(data, mid):
            high = mid
        else:
            low = mid
    return high


class TFLMRunner:
    """One TFLM interpreter for a .tflite file (path or bytes); int8 I/O handled like the
    runtime's TFLite backend (quantize the features, dequantize the outputs)."""

    def __init__(self, model, arena_size: int | None = None):
        data = Path(model).read_bytes() if isinstance(model, (str, Path)) else bytes(model)
        self.data = strip_metadata(data)
        self.arena_size = int(arena_size or smallest_arena(self.data) + 4 * 1024)
        try:
            self.interpreter = _interpreter(self.data, self.arena_size)
        except RuntimeError as exc:
            raise TFLMError(f"TFLM cannot load this model: {exc}") from exc
        self.inp = self.interpreter.get_input_details(0)
        self.out = self.interpreter.get_output_details(0)
        self.input_shape = tuple(int(d) for d in self.inp["shape"])
        self.input_dtype = np.dtype(self.inp["dtype"])

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """Set the input tensor as given (already in the input dtype), invoke, raw output."""
        self.interpreter.set_input(np.asarray(x, self.input_dtype).reshape(self.input_shape), 0)
        self.interpreter.invoke()
        return np.asarray(self.interpreter.get_output(0))

    def quantize_input(self, features: np.ndarray) -> np.ndarray:
        """Log features ``[n_frames, bins]`` -> the input tensor (int8 where the model is)."""
        x = np.asarray(features, np.float32)
        q = tensor_quantization(self.inp)
        if is_quantized(self.input_dtype) and q:
            x = quantize(x, q[0], q[1], self.input_dtype)
        return x.astype(self.input_dtype).reshape(self.input_shape)

    def run(self, features: np.ndarray) -> np.ndarray:
        """Log features ``[n_frames, bins]`` -> raw float outputs ``[classes]``."""
        return dequantized(self.run_raw(self.quantize_input(features)), self.out)


def dequantized(raw: np.ndarray, detail: dict) -> np.ndarray:
    """Raw output values as floats ``[classes]`` (int8 outputs through their scale and zero
    point)."""
    q = tensor_quantization(detail)
    y = raw
    if is_quantized(detail["dtype"]) and q:
        y = dequantize(raw, q[0], q[1])
    return np.asarray(y, np.float32).reshape(-1)


class LiteRTReference:
    """LiteRT with its reference kernels (``OpResolverType.BUILTIN_REF``): the kernels TFLM
    shares, so TFLM must match it bit for bit. LiteRT's default (optimized / XNNPACK) kernels
    round differently and may differ by a few int8 steps after many layers."""

    def __init__(self, tflite_bytes: bytes):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        with native_stderr_silenced():
            self.interpreter = Interpreter(
                model_content=strip_metadata(tflite_bytes), num_threads=1,
                experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
            self.interpreter.allocate_tensors()
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.inp["index"],
                                    np.asarray(x, self.inp["dtype"]).reshape(self.inp["shape"]))
        self.interpreter.invoke()
        return np.asarray(self.interpreter.get_tensor(self.out["index"]))

    def run(self, runner: "TFLMRunner", features: np.ndarray) -> np.ndarray:
        """Raw float outputs for log features, quantized and dequantized as ``runner`` does."""
        return dequantized(self.run_raw(runner.quantize_input(features)), runner.out)
