"""Inference backends: onnxruntime for .onnx; LiteRT, or tflite-runtime where that is what the
device has, for .tflite. Each takes log features ``[frames, bins]`` and returns raw outputs
``[classes]`` as float32, hiding int8 input/output quantization when a file has it."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from pathlib import Path

import numpy as np

from .errors import BackendError, ModelFileError
from .modelfile import ModelInfo, info_from_onnx, info_from_tflite
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


class Backend:
    name = "?"

    def __init__(self, path: Path, data: bytes, threads: int):
        self.path = path
        self.threads = threads

    info: ModelInfo
    input_shape: tuple
    output_shape: tuple   # dimensions the file declares; 0 where it leaves one open

    @property
    def output_size(self) -> int | None:
        """Values one window gives (the class count), or None when the file leaves it open."""
        return None if 0 in self.output_shape else int(np.prod(self.output_shape))

    def run(self, features: np.ndarray) -> np.ndarray:
        try:
            return self._run(features)
        except Exception as exc:  # native runtimes raise their own untyped errors
            raise ModelFileError(f"{self.path}: the model failed to run ({self.name}): "
                                 f"{_first_line(exc)}") from exc

    def _run(self, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path, data, threads):
        super().__init__(path, data, threads)
        import onnxruntime as ort

        self.info = info_from_onnx(path, data)  # checks the file before onnxruntime parses it

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            # on a failure onnxruntime prints a banner on stdout (where --json output goes) and
            # retries with the same CPU provider: silence it; the error below says it all
            with contextlib.redirect_stdout(io.StringIO()):
                self.session = ort.InferenceSession(data, sess_options=opts,
                                                    providers=["CPUExecutionProvider"])
            self.session.disable_fallback()
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelFileError(f"{path}: cannot load as ONNX (truncated, corrupt or foreign "
                                 f"file): {_first_line(exc)}") from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs or inputs[0].type != "tensor(float)":
            raise ModelFileError(f"{path}: an edgeaudio ONNX model has one float input and an "
                                 f"output; this one has {len(inputs)} inputs "
                                 f"({', '.join(i.type for i in inputs)}), {len(outputs)} outputs")
        self.input_name = inputs[0].name
        self.input_shape = tuple(d if isinstance(d, int) else 1 for d in inputs[0].shape)
        # a named (symbolic) first dimension is the batch: 1; any other one is left open
        self.output_shape = tuple(d if isinstance(d, int) else (1 if i == 0 else 0)
                                  for i, d in enumerate(outputs[0].shape or ()))

    def _run(self, features):
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
        except Exception as exc:  # the interpreters raise ValueError, RuntimeError and more
            raise ModelFileError(f"{path}: cannot load as TFLite: {_first_line(exc)}") from exc
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or not outputs:
            raise ModelFileError(f"{path}: an edgeaudio TFLite model has one input and an "
                                 f"output; this one has {len(inputs)} and {len(outputs)}")
        self.inp, self.out = inputs[0], outputs[0]
        self.input_shape = tuple(int(d) for d in self.inp["shape"])
        self.output_shape = tuple(int(d) for d in self.out["shape"])
        for edge in (self.inp, self.out):
            if is_quantized(edge["dtype"]) and not edge["quantization"][0] > 0:
                raise ModelFileError(f"{path}: int8 {edge['name']!r} has quantization scale "
                                     f"{edge['quantization'][0]}: corrupt file")

    def _run(self, features):
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
