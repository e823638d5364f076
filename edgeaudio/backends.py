"""Inference backends: onnxruntime for .onnx; LiteRT, or tflite-runtime where that is what the
device has, for .tflite. Each takes log features ``[frames, bins]`` and returns raw outputs
``[classes]`` as float32, hiding int8 input/output quantization when a file has it."""
from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

import numpy as np

from .errors import BackendError, ModelFileError
from .modelfile import ModelInfo, info_from_onnx_metadata, info_from_tflite
from .quant import dequantize, is_quantized, quantize

BACKENDS_FOR_FORMAT = {"onnx": ("onnxruntime",), "tflite": ("litert", "tflite-runtime")}
_MODULE_OF = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert",
              "tflite-runtime": "tflite_runtime"}


def backend_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(_MODULE_OF[name]) is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> list:
    return [b for b in _MODULE_OF if backend_available(b)]


@contextlib.contextmanager
def native_stderr_silenced():
    """The TFLite C++ runtime prints an INFO banner on fd 2 for every interpreter."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Backend:
    name = "?"

    def __init__(self, path: Path, data: bytes, threads: int):
        self.path = path
        self.threads = threads

    info: ModelInfo
    input_shape: tuple

    def run(self, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path, data, threads):
        super().__init__(path, data, threads)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(data, sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{path}: cannot load as ONNX (truncated, corrupt or foreign "
                                 f"file): {first[:200]}") from exc
        self.info = info_from_onnx_metadata(path, self.session.get_modelmeta().custom_metadata_map)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)

    def run(self, features):
        out = self.session.run(None, {self.input_name: features[None].astype(np.float32)})[0]
        return np.asarray(out, np.float32).reshape(-1)


class _TFLiteBackend(Backend):
    def _interpreter_class(self):
        raise NotImplementedError

    def __init__(self, path, data, threads):
        super().__init__(path, data, threads)
        self.info = info_from_tflite(path, data)  # validates the flatbuffer before the C++ side
        try:
            with native_stderr_silenced():
                self.interpreter = self._interpreter_class()(model_content=data,
                                                             num_threads=threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{path}: cannot load as TFLite: {str(exc)[:200]}") from exc
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self.inp["shape"])

    def run(self, features):
        x = features[None].astype(np.float32)
        if is_quantized(self.inp["dtype"]):
            scale, zero = self.inp["quantization"]
            x = quantize(x, scale, zero, self.inp["dtype"])
        self.interpreter.set_tensor(self.inp["index"], x.reshape(self.input_shape))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.out["index"])
        if is_quantized(self.out["dtype"]):
            scale, zero = self.out["quantization"]
            y = dequantize(y, scale, zero)
        return np.asarray(y, np.float32).reshape(-1)


class LiteRTBackend(_TFLiteBackend):
    name = "litert"

    def _interpreter_class(self):
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter


class TFLiteRuntimeBackend(_TFLiteBackend):
    name = "tflite-runtime"

    def _interpreter_class(self):
        from tflite_runtime.interpreter import Interpreter
        return Interpreter


BACKEND_CLASSES = {"onnxruntime": OnnxRuntimeBackend, "litert": LiteRTBackend,
                   "tflite-runtime": TFLiteRuntimeBackend}


def open_backend(path: Path, data: bytes, fmt: str, backend: str = "auto",
                 threads: int = 1) -> Backend:
    """The named backend, or for 'auto' the first installed one that runs this format."""
    candidates = BACKENDS_FOR_FORMAT[fmt]
    if backend != "auto":
        if backend not in BACKEND_CLASSES:
            raise BackendError(f"unknown backend {backend!r}; choose from auto, "
                               f"{', '.join(BACKEND_CLASSES)}")
        if backend not in candidates:
            raise BackendError(f"backend {backend} cannot run .{fmt} files; use "
                               f"{' or '.join(candidates)}")
        if not backend_available(backend):
            raise BackendError(f"backend {backend} is not installed (pip install "
                               f"{ {'tflite-runtime': 'edgeaudio[tflite]'}.get(backend, _MODULE_OF[backend].replace('_', '-'))})")
        return BACKEND_CLASSES[backend](path, data, threads)
    for name in candidates:
        if backend_available(name):
            return BACKEND_CLASSES[name](path, data, threads)
    raise BackendError(f"no backend installed for .{fmt} files: install one of "
                       f"{', '.join(candidates)}")
