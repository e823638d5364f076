"""Inference backends: onnxruntime for .onnx; LiteRT, or tflite-runtime where that is what the
device has, for .tflite. Each takes log features ``[frames, bins]`` and returns raw outputs
``[classes]`` as float32, hiding int8 input/output quantization when a file has it.

A streaming-aware file (metadata ``streaming``) is run a chunk at a time instead:
``run_chunk(features, states) -> (logits, next_states)``, the states starting from
``initial_states()`` and carried by the caller from call to call. The carried states stay in
the form the graph takes them (an int8 state whose output and input share one quantization is
passed on as it is), so a hop costs one call and no conversions the graph does not need."""
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


def _shown_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class Backend:
    name = "?"

    def __init__(self, path: Path, data: bytes, threads: int):
        self.path = path
        self.threads = threads

    info: ModelInfo
    input_shape: tuple
    output_shape: tuple   # dimensions the file declares; 0 where it leaves one open
    # a streaming graph's edges, in the metadata's order: the features input, the state inputs
    # (``streaming.states[i].input``), the logits output, the state outputs
    streaming_inputs: list
    streaming_outputs: list

    @property
    def output_size(self) -> int | None:
        """Values one window gives (the class count), or None when the file leaves it open."""
        return None if 0 in self.output_shape else int(np.prod(self.output_shape))

    def run(self, features: np.ndarray) -> np.ndarray:
        if self.info.streaming is not None:
            raise ModelFileError(f"{self.path}: a streaming-aware model runs a chunk at a time "
                                 "with its states (run_chunk), not one window")
        try:
            return self._run(features)
        except Exception as exc:  # native runtimes raise their own untyped errors
            raise ModelFileError(f"{self.path}: the model failed to run ({self.name}): "
                                 f"{_first_line(exc)}") from exc

    def _run(self, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run_chunk(self, features: np.ndarray, states: list) -> tuple:
        """One call of a streaming graph: a chunk's features ``[chunk_frames, bins]`` and the
        carried states -> (raw logits ``[classes]`` float32, the next states to carry)."""
        try:
            return self._run_chunk(features, states)
        except Exception as exc:  # native runtimes raise their own untyped errors
            raise ModelFileError(f"{self.path}: the model failed to run ({self.name}): "
                                 f"{_first_line(exc)}") from exc

    def _run_chunk(self, features: np.ndarray, states: list) -> tuple:
        raise NotImplementedError

    def initial_states(self) -> list:
        """The states of a recording's or stream's first call: zeros."""
        raise NotImplementedError

    def _check_streaming_graph(self, inputs: dict, outputs: dict) -> None:
        """The metadata's ``streaming`` names against the graph (``{name: shape}``, None for a
        dimension the graph leaves open): one ModelFileError naming the field, or the order
        of the edges a call uses in ``streaming_inputs`` / ``streaming_outputs``."""
        spec, info = self.info.streaming, self.info
        states = spec["states"]
        named_inputs = [("streaming.features", spec["features"])] + [
            (f"streaming.states[{i}].input", state["input"]) for i, state in enumerate(states)]
        named_outputs = [("streaming.logits", spec["logits"])] + [
            (f"streaming.states[{i}].output", state["output"]) for i, state in enumerate(states)]
        for (field, name), kind, edges in ([(n, "input", inputs) for n in named_inputs]
                                           + [(n, "output", outputs) for n in named_outputs]):
            if name not in edges:
                raise self._streaming_error(field, f"the graph has no {kind} {name!r} (its "
                                                   f"{kind}s: {', '.join(map(repr, edges))})")
        unnamed = [name for name in inputs if name not in {n for _, n in named_inputs}]
        if unnamed:
            raise self._streaming_error("streaming.states", f"graph input(s) "
                                        f"{', '.join(map(repr, unnamed))} are not named in it")
        expected = [(1, spec["chunk_frames"], info.frontend.n_bins)]
        expected += [tuple(state["shape"]) for state in states]
        for (field, name), shape in zip(named_inputs, expected):
            self._check_shape(field, "input", name, inputs[name], shape)
        for (field, name), shape in zip(named_outputs[1:], expected[1:]):
            self._check_shape(field, "output", name, outputs[name], shape)
        self.streaming_inputs = [name for _, name in named_inputs]
        self.streaming_outputs = [name for _, name in named_outputs]
        self.input_shape = expected[0]
        self.output_shape = tuple(0 if d is None else d for d in outputs[spec["logits"]])

    def _check_class_count(self) -> None:
        """The logits output against the labels (once the backend can run a chunk)."""
        values = self.output_size
        if values is None:  # the file leaves the class count open: ask the graph itself
            values = self.run_chunk(np.zeros(self.input_shape[1:], np.float32),
                                    self.initial_states())[0].size
        if values != len(self.info.labels):
            name = self.info.streaming["logits"]
            shape = tuple(d or None for d in self.output_shape)
            raise self._streaming_error("streaming.logits", f"output {name!r} "
                                        f"{_shown_shape(shape)} has {values} values for "
                                        f"{len(self.info.labels)} labels")

    def _check_shape(self, field: str, kind: str, name: str, shape: tuple, expected: tuple):
        if len(shape) != len(expected) or any(d not in (None, e) for d, e in zip(shape, expected)):
            what = ("[1, chunk_frames, bins]" if field == "streaming.features"
                    else "streaming.states' shape")
            raise self._streaming_error(field, f"graph {kind} {name!r} is "
                                        f"{_shown_shape(shape)}, not {_shown_shape(expected)} "
                                        f"({what})")

    def _streaming_error(self, field: str, message: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: metadata field {field}: {message}")


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
        if self.info.streaming is not None:
            self._open_streaming(inputs, outputs)
            return
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

    def _open_streaming(self, inputs, outputs):
        def shapes(edges):
            return {e.name: tuple(d if isinstance(d, int) else None for d in e.shape or ())
                    for e in edges}
        self._check_streaming_graph(shapes(inputs), shapes(outputs))
        types = {e.name: e.type for e in (*inputs, *outputs)}
        for name in self.streaming_inputs + self.streaming_outputs:
            if types[name] != "tensor(float)":
                raise self._streaming_error("streaming", f"graph edge {name!r} is "
                                            f"{types[name]}; an ONNX edge must be float")
        self.state_inputs = self.streaming_inputs[1:]
        self.state_shapes = [tuple(s["shape"]) for s in self.info.streaming["states"]]
        self._check_class_count()

    def initial_states(self):
        return [np.zeros(shape, np.float32) for shape in self.state_shapes]

    def _run_chunk(self, features, states):
        feed = dict(zip(self.state_inputs, states))
        feed[self.streaming_inputs[0]] = np.asarray(features, np.float32)[None]
        logits, *next_states = self.session.run(self.streaming_outputs, feed)
        return logits.reshape(-1), next_states


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
        if self.info.streaming is not None:
            self._open_streaming()
            return
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or not outputs:
            raise ModelFileError(f"{path}: an edgeaudio TFLite model has one input and an "
                                 f"output; this one has {len(inputs)} and {len(outputs)}")
        self.inp, self.out = inputs[0], outputs[0]
        self.input_shape = tuple(int(d) for d in self.inp["shape"])
        self.output_shape = tuple(int(d) for d in self.out["shape"])
        for edge in (self.inp, self.out):
            self._check_quantization(edge)

    def _check_quantization(self, edge: dict) -> None:
        if is_quantized(edge["dtype"]) and not edge["quantization"][0] > 0:
            raise ModelFileError(f"{self.path}: int8 {edge['name']!r} has quantization scale "
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

    def _open_streaming(self):
        """Signature names mapped to tensor indices once, so that a call is set_tensor /
        invoke / get_tensor (the signature runner resizes and reallocates every call)."""
        signatures = self.interpreter.get_signature_list()
        if SIGNATURE_KEY not in signatures:
            raise self._streaming_error("streaming", f"the TFLite file has no signature "
                                        f"{SIGNATURE_KEY!r} (it has: "
                                        f"{', '.join(map(repr, signatures)) or 'none'})")
        inputs, outputs = _signature_edges(self.interpreter)

        def shapes(edges):
            return {name: tuple(int(d) for d in e["shape"]) for name, e in edges.items()}
        self._check_streaming_graph(shapes(inputs), shapes(outputs))
        edges = [inputs[n] for n in self.streaming_inputs] + [outputs[n] for n in
                                                               self.streaming_outputs]
        for name, edge in zip(self.streaming_inputs + self.streaming_outputs, edges):
            if not (edge["dtype"] == np.float32 or is_quantized(edge["dtype"])):
                raise self._streaming_error("streaming", f"graph edge {name!r} is "
                                            f"{np.dtype(edge['dtype']).name}; a TFLite edge "
                                            "must be float32 or int8")
            self._check_quantization(edge)
        features, *self.state_input_edges = edges[:len(self.streaming_inputs)]
        logits, *state_outputs = edges[len(self.streaming_inputs):]
        # what a call needs, looked up once: tensor indices, the edges that are quantized
        self.features_index, self.logits_index = features["index"], logits["index"]
        self.quantized_features = features if is_quantized(features["dtype"]) else None
        self.quantized_logits = logits if is_quantized(logits["dtype"]) else None
        self.state_input_indices = [edge["index"] for edge in self.state_input_edges]
        self.state_output_indices = [edge["index"] for edge in state_outputs]
        # how a state output becomes the next call's input: as it is, when both edges hold
        # the same type and quantization (the usual case), else through float
        self.state_carries = [
            None if (src["dtype"], src["quantization"]) == (dst["dtype"], dst["quantization"])
            else (src, dst) for src, dst in zip(state_outputs, self.state_input_edges)]
        self.states_carried_as_they_are = not any(self.state_carries)
        self._check_class_count()

    def initial_states(self):
        return [_to_edge(np.zeros(edge["shape"], np.float32), edge)
                for edge in self.state_input_edges]

    def _run_chunk(self, features, states):
        interpreter = self.interpreter
        x = np.asarray(features, np.float32)[None]
        if self.quantized_features is not None:
            x = _to_edge(x, self.quantized_features)
        interpreter.set_tensor(self.features_index, x)
        for index, state in zip(self.state_input_indices, states):
            interpreter.set_tensor(index, state)
        interpreter.invoke()
        logits = interpreter.get_tensor(self.logits_index)
        if self.quantized_logits is not None:
            logits = _from_edge(logits, self.quantized_logits)
        next_states = [interpreter.get_tensor(index) for index in self.state_output_indices]
        if not self.states_carried_as_they_are:
            next_states = [state if carry is None else _to_edge(_from_edge(state, carry[0]),
                                                                 carry[1])
                           for state, carry in zip(next_states, self.state_carries)]
        return logits.reshape(-1), next_states


SIGNATURE_KEY = "serving_default"   # the one signature a streaming TFLite file is called by


def _signature_edges(interpreter) -> tuple:
    """({name: input details}, {name: output details}) of the signature. The runner is let go
    here: while one is alive the interpreter refuses to invoke (it holds the native side)."""
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
    return runner.get_input_details(), runner.get_output_details()


def _to_edge(x: np.ndarray, edge: dict) -> np.ndarray:
    """Float values as a TFLite input edge takes them (quantized for an int8 edge)."""
    if is_quantized(edge["dtype"]):
        scale, zero = edge["quantization"]
        return quantize(x, scale, zero, edge["dtype"])
    return x


def _from_edge(y: np.ndarray, edge: dict) -> np.ndarray:
    """A TFLite output edge's values as float32."""
    if is_quantized(edge["dtype"]):
        scale, zero = edge["quantization"]
        return dequantize(y, scale, zero)
    return np.asarray(y, np.float32)


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
