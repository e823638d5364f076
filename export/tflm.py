"""Run an int8 .tflite under TensorFlow Lite Micro (the ``tflite-micro`` PyPI package), the
interpreter a microcontroller runs, and find the smallest tensor arena it needs.

    runner = TFLMRunner("model.int8.tflite")          # arena: smallest_arena() by default
    scores = runner.run(features)                      # log features [n_frames, bins] -> float
    smallest_arena(open("model.int8.tflite", "rb").read())

The edgeaudio metadata buffer is dropped before the file goes to TFLM (``strip_metadata``): a
board never needs it, and it is most of the bytes of a file with a stored filterbank matrix.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeaudio.backends import native_stderr_silenced
from edgeaudio.modelfile import METADATA_KEY

from .writers import ExportError

ARENA_ALIGN = 16


class TFLMError(ExportError):
    pass


def tensor_quantization(details: dict):
    """(scale, zero point) of a TFLM tensor's details, or None for a float tensor."""
    q = details.get("quantization_parameters") or {}
    scales, zeros = q.get("scales"), q.get("zero_points")
    if scales is None or len(scales) == 0:
        return None
    return float(scales[0]), int(zeros[0])


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as exc:
        raise TFLMError("TensorFlow Lite Micro is not installed (pip install tflite-micro)") \
            from exc
    return runtime


def strip_metadata(tflite_bytes: bytes) -> bytes:
    """The flatbuffer without the edgeaudio metadata entry and its buffer (graph only)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_bytes))
    keep, drop = [], set()
    for meta in model.metadata or []:
        name = meta.name.decode() if isinstance(meta.name, bytes) else meta.name
        (drop.add(meta.buffer) if name == METADATA_KEY else keep.append(meta))
    if not drop:
        return bytes(tflite_bytes)
    # buffers are referenced by index: empty the dropped ones rather than renumber
    for index in drop:
        model.buffers[index].data = None
    model.metadata = keep
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


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


def smallest_arena(tflite_bytes: bytes, high: int | None = None, step: int = 256) -> int:
    """The smallest tensor arena (bytes, a multiple of ``step``) in which TFLM allocates the
    model, by bisection between 0 and ``high`` (default: grows from 64 KiB until it fits)."""
    data = strip_metadata(tflite_bytes)
    high = int(high or 64 * 1024)
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

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """Set the input tensor as given (already in the input dtype), invoke, raw output."""
        self.interpreter.set_input(np.asarray(x).reshape(self.input_shape), 0)
        self.interpreter.invoke()
        return np.asarray(self.interpreter.get_output(0))

    def quantize_input(self, features: np.ndarray) -> np.ndarray:
        """Log features ``[n_frames, bins]`` -> the input tensor (int8 where the model is)."""
        x = np.asarray(features, np.float32)[None]
        dtype = np.dtype(self.inp["dtype"])
        q = tensor_quantization(self.inp)
        if dtype in (np.int8, np.uint8) and q:
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / q[0]) + q[1], info.min, info.max)
        return x.astype(dtype).reshape(self.input_shape)

    def run(self, features: np.ndarray) -> np.ndarray:
        """Log features ``[n_frames, bins]`` -> raw float outputs ``[classes]``."""
        return dequantized(self.run_raw(self.quantize_input(features)), self.out)


def dequantized(raw: np.ndarray, detail: dict) -> np.ndarray:
    """Raw output values as floats ``[classes]`` (int8 outputs through their scale and zero
    point)."""
    q = tensor_quantization(detail)
    y = raw
    if np.dtype(detail["dtype"]) in (np.int8, np.uint8) and q:
        y = (raw.astype(np.float32) - q[1]) * q[0]
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
        self.interpreter.set_tensor(self.inp["index"], np.asarray(x).reshape(self.inp["shape"]))
        self.interpreter.invoke()
        return np.asarray(self.interpreter.get_tensor(self.out["index"]))

    def run(self, runner: "TFLMRunner", features: np.ndarray) -> np.ndarray:
        """Raw float outputs for log features, quantized and dequantized as ``runner`` does."""
        return dequantized(self.run_raw(runner.quantize_input(features)), runner.out)
