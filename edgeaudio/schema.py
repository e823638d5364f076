"""The model metadata schema: the runtime's contract with every file it will ever load.

``validate_metadata(doc)`` checks a parsed metadata document once, in one place, before anything
is built from it: the type and range of every field (``FIELDS``, declared below), then the rules
that tie fields together (``CROSS_FIELD_RULES``). Every size a field can make the runtime
allocate has a bound, checked before allocating. A failure raises ``SchemaError`` whose
``field`` is the dotted name of the field (``stream.hop_seconds``, ``frontend.filterbank.n_bins``).

Keys the schema does not know are ignored (a reader of format 1 reads any format-1 file); a
change of meaning bumps ``format_version``.

What ``sample_rate`` means: the rate the front end's STFT and filterbank were designed for. A
graph does not record the rate it was trained at, so the runtime checks what can be checked: a
mel filterbank must lie below that rate's Nyquist frequency, a stored matrix must have one
column per FFT bin (``n_fft // 2 + 1``), the top-level ``sample_rate`` (written for readers of
the JSON) must equal ``frontend.sample_rate``, and ``window_seconds`` must equal the window the
front end fields give.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

# --- bounds (each far above any real model, far below what would exhaust a device) ------------
MAX_METADATA_BYTES = 16 * 2**20   # the bundled model's metadata is 60 KB
MAX_NESTING = 32                  # JSON levels; real files use 5
MAX_LABELS = 10_000
MAX_TEXT = 256                    # characters of a label, name or version
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000
MAX_N_FFT = 2**16
MAX_BINS = 4096                   # filterbank bands
MAX_FILTERBANK_VALUES = 2**21     # a stored matrix: 8 MiB of float32, 11 MB of base64
MAX_N_FRAMES = 100_000
MAX_WINDOW_SECONDS = 600.0        # one model window
MAX_WINDOW_SAMPLES = 2**24        # its ring buffer: 64 MiB of float32
MAX_SPECTRUM_VALUES = 2**23       # frames x FFT bins of one window: 64 MiB of float64
MAX_HOP_SECONDS = 600.0
MAX_SMOOTH = MAX_PATIENCE = 10_000
MIN_GATE_DB = -400.0              # below float64's smallest power: the gate is simply off
MAX_LOG_OFFSET = 1e3
MAX_WINDOW_CHUNKS = 10_000        # logit rows a streaming window averages
MAX_STATES = 256                  # state tensors a streaming graph carries
MAX_STATE_DIMS = 8
MAX_STATE_VALUES = 2**24          # all of them together: 64 MiB of float32


class SchemaError(ValueError):
    """A metadata field that breaks the schema: ``field`` is its dotted name."""

    def __init__(self, field: str, message: str):
        super().__init__(f"metadata field {field}: {message}")
        self.field = field


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- field types -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Int:
    lo: int
    hi: int

    def check(self, value, field):
        # bool is an int in Python, never in a model file; 3.0 is not an int either
        if type(value) is not int:
            raise SchemaError(field, f"must be an integer, got {_shown(value)}")
        if not self.lo <= value <= self.hi:
            raise SchemaError(field, f"must be in [{self.lo}, {self.hi}], got {_shown(value)}")


@dataclass(frozen=True)
class Number:
    lo: float
    hi: float
    lo_open: bool = False   # lo itself excluded

    def check(self, value, field):
        if type(value) not in (int, float) or not math.isfinite(value):
            raise SchemaError(field, f"must be a finite number, got {_shown(value)}")
        low_ok = value > self.lo if self.lo_open else value >= self.lo
        if not (low_ok and value <= self.hi):
            bracket = "(" if self.lo_open else "["
            raise SchemaError(field, f"must be in {bracket}{self.lo}, {self.hi}], "
                                     f"got {_shown(value)}")


@dataclass(frozen=True)
class Text:
    choices: tuple = ()
    max_len: int = MAX_TEXT

    def check(self, value, field):
        if not isinstance(value, str):
            raise SchemaError(field, f"must be a string, got {_shown(value)}")
        if self.choices and value not in self.choices:
            raise SchemaError(field, f"must be one of {', '.join(self.choices)}, "
                                     f"got {_shown(value)}")
        if len(value) > self.max_len:
            raise SchemaError(field, f"is longer than {self.max_len} characters")


@dataclass(frozen=True)
class Nullable:
    """``None`` or a value of ``of``."""
    of: object

    def check(self, value, field):
        if value is not None:
            self.of.check(value, field)


@dataclass(frozen=True)
class Labels:
    def check(self, value, field):
        if not isinstance(value, list) or not value:
            raise SchemaError(field, f"labels must be a non-empty list of strings, "
                                     f"got {_shown(value)}")
        if len(value) > MAX_LABELS:
            raise SchemaError(field, f"has {len(value)} labels, more than {MAX_LABELS}")
        for i, label in enumerate(value):
            if not isinstance(label, str) or not label:
                raise SchemaError(f"{field}[{i}]", f"labels must be a non-empty list of "
                                                   f"strings, got {_shown(label)}")
            Text().check(label, f"{field}[{i}]")
        if len(set(value)) != len(value):
            raise SchemaError(field, "labels contain duplicates")


class LabelList(Labels):
    """Some of the model's labels (may be empty): checked against ``labels`` across fields."""

    def check(self, value, field):
        if isinstance(value, list) and not value:
            return
        super().check(value, field)


@dataclass(frozen=True)
class IntList:
    item: Int
    max_items: int
    min_items: int = 0

    def check(self, value, field):
        if not isinstance(value, list):
            raise SchemaError(field, f"must be a list of integers, got {_shown(value)}")
        if len(value) > self.max_items:
            raise SchemaError(field, f"has {len(value)} items, more than {self.max_items}")
        if len(value) < self.min_items:
            raise SchemaError(field, f"has {len(value)} items, fewer than {self.min_items}")
        for i, item in enumerate(value):
            self.item.check(item, f"{field}[{i}]")


@dataclass(frozen=True)
class NumberOrMap:
    """One number, or ``{label: number}`` (per-class thresholds)."""
    number: Number

    def check(self, value, field):
        if isinstance(value, dict):
            for key, item in value.items():
                self.number.check(item, f"{field}.{key}")
        else:
            self.number.check(value, field)


@dataclass(frozen=True)
class AnyObject:
    """A JSON object with any content (provenance, extras); bounded by the document's limits."""

    def check(self, value, field):
        if not isinstance(value, dict):
            raise SchemaError(field, f"must be a JSON object, got {_shown(value)}")


@dataclass(frozen=True)
class Table:
    """A JSON object: ``{key: (type, required)}``; keys not listed are ignored."""
    fields: dict

    def check(self, value, field):
        if not isinstance(value, dict):
            raise SchemaError(field, f"must be a JSON object, got {_shown(value)}")
        for key, (kind, required) in self.fields.items():
            name = f"{field}.{key}" if field else key
            if key not in value:
                if required:
                    raise SchemaError(name, "is missing")
                continue
            kind.check(value[key], name)


@dataclass(frozen=True)
class TableList:
    """A JSON list of objects, each described by ``item``."""
    item: Table
    max_items: int

    def check(self, value, field):
        if not isinstance(value, list):
            raise SchemaError(field, f"must be a list of objects, got {_shown(value)}")
        if len(value) > self.max_items:
            raise SchemaError(field, f"has {len(value)} items, more than {self.max_items}")
        for i, item in enumerate(value):
            self.item.check(item, f"{field}[{i}]")


@dataclass(frozen=True)
class Tagged:
    """A JSON object whose ``tag`` key picks which ``Table`` describes the rest."""
    tag: str
    variants: dict

    def check(self, value, field):
        if not isinstance(value, dict):
            raise SchemaError(field, f"must be a JSON object, got {_shown(value)}")
        kind = value.get(self.tag)
        if kind not in self.variants:
            raise SchemaError(f"{field}.{self.tag}", f"unknown {_shown(kind)} (known: "
                                                     f"{', '.join(self.variants)})")
        self.variants[kind].check(value, field)


# --- the schema, format 1 ----------------------------------------------------------------------

OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "none")
CLIP_POOLINGS = ("mean", "max")

MEL_FILTERBANK = Table({
    "kind": (Text(("mel",)), True),
    "n_bins": (Int(1, MAX_BINS), True),
    "fmin": (Number(0.0, MAX_SAMPLE_RATE / 2), False),
    "fmax": (Nullable(Number(0.0, MAX_SAMPLE_RATE / 2, lo_open=True)), False),
})
MATRIX_FILTERBANK = Table({
    "kind": (Text(("matrix",)), True),
    "shape": (IntList(Int(1, MAX_N_FFT // 2 + 1), max_items=2), True),
    "dtype": (Text(("float32",)), False),
    "encoding": (Text(("dense", "row-spans")), False),
    # base64 of at most MAX_FILTERBANK_VALUES float32 values
    "data_b64": (Text(max_len=4 * MAX_FILTERBANK_VALUES * 4 // 3 + 4), True),
    "starts": (IntList(Int(0, MAX_N_FFT // 2 + 1), max_items=MAX_BINS), False),
    "lengths": (IntList(Int(0, MAX_N_FFT // 2 + 1), max_items=MAX_BINS), False),
})
FRONTEND = Table({
    "sample_rate": (Int(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE), True),
    "n_fft": (Int(2, MAX_N_FFT), True),
    "win_length": (Int(1, MAX_N_FFT), True),
    "hop_length": (Int(1, MAX_N_FFT), True),
    "window": (Text(("hann",)), False),
    "filterbank": (Tagged("kind", {"mel": MEL_FILTERBANK, "matrix": MATRIX_FILTERBANK}), True),
    # log(power + log_offset): 0 or below gives log(0) = -inf or NaN on silence
    "log_offset": (Number(0.0, MAX_LOG_OFFSET, lo_open=True), True),
})
STREAM = Table({
    "hop_seconds": (Number(0.0, MAX_HOP_SECONDS, lo_open=True), False),
    "smooth": (Int(1, MAX_SMOOTH), False),
    "threshold": (NumberOrMap(Number(-1e6, 1e6)), False),
    "patience": (Int(1, MAX_PATIENCE), False),
    "release_ratio": (Number(0.0, 1.0, lo_open=True), False),
    "gate_db": (Number(MIN_GATE_DB, 0.0), False),
    # classes that mean "none of these" (a trained background / unknown class): scored like
    # any other, never an event
    "background": (LabelList(), False),
})
# A streaming-aware graph: one chunk of features and its carried states in, the chunk's logits
# and the next states out (see edgeaudio.backends.StatefulRunner). Names are the graph's own
# tensor (ONNX) or signature (TFLite) names.
STATE = Table({
    "input": (Text(), True),
    "output": (Text(), True),
    "shape": (IntList(Int(1, MAX_STATE_VALUES), max_items=MAX_STATE_DIMS, min_items=1), True),
})
STREAMING = Table({
    "chunk_frames": (Int(1, MAX_N_FRAMES), True),
    "window_chunks": (Int(1, MAX_WINDOW_CHUNKS), True),
    "features": (Text(), True),
    "logits": (Text(), True),
    "states": (TableList(STATE, MAX_STATES), True),
})
FIELDS = Table({
    "format_version": (Int(1, 2**31), False),
    "name": (Text(), False),
    "version": (Text(), False),
    "labels": (Labels(), True),
    "sample_rate": (Int(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE), False),
    "window_seconds": (Number(0.0, MAX_WINDOW_SECONDS, lo_open=True), False),
    "n_frames": (Int(1, MAX_N_FRAMES), True),
    "frontend": (FRONTEND, True),
    "output_activation": (Text(OUTPUT_ACTIVATIONS), False),
    "clip_pooling": (Text(CLIP_POOLINGS), False),
    "stream": (STREAM, False),
    "streaming": (Nullable(STREAMING), False),
    "provenance": (AnyObject(), False),
    "extra": (AnyObject(), False),
})


# --- rules across fields (run after every field has its type and range) -----------------------

def _window_samples(doc) -> int:
    fe = doc["frontend"]
    return fe["win_length"] + (doc["n_frames"] - 1) * fe["hop_length"]


def _frontend_rules(doc):
    fe = doc["frontend"]
    if fe["win_length"] > fe["n_fft"]:
        raise SchemaError("frontend.win_length", f"{fe['win_length']} exceeds "
                                                 f"frontend.n_fft {fe['n_fft']}")
    if "sample_rate" in doc and doc["sample_rate"] != fe["sample_rate"]:
        raise SchemaError("sample_rate", f"{doc['sample_rate']} differs from "
                                         f"frontend.sample_rate {fe['sample_rate']}")


def _window_rules(doc):
    fe = doc["frontend"]
    samples = _window_samples(doc)
    seconds = samples / fe["sample_rate"]
    if seconds > MAX_WINDOW_SECONDS or samples > MAX_WINDOW_SAMPLES:
        raise SchemaError("n_frames", f"{doc['n_frames']} frames of {fe['hop_length']} samples "
                                      f"(frontend.hop_length) make a window of {samples} "
                                      f"samples ({seconds:.0f} s), more than {MAX_WINDOW_SAMPLES} "
                                      f"or {MAX_WINDOW_SECONDS:.0f} s")
    spectrum = doc["n_frames"] * (fe["n_fft"] // 2 + 1)
    if spectrum > MAX_SPECTRUM_VALUES:
        raise SchemaError("n_frames", f"{doc['n_frames']} frames of {fe['n_fft'] // 2 + 1} FFT "
                                      f"bins (frontend.n_fft) are {spectrum} values a window, "
                                      f"more than {MAX_SPECTRUM_VALUES}")
    if "window_seconds" in doc and abs(doc["window_seconds"] - seconds) > 1e-5:
        raise SchemaError("window_seconds", f"{doc['window_seconds']} differs from the "
                                            f"{seconds:.6f} s that n_frames and the front end give")


def _filterbank_rules(doc):
    fe = doc["frontend"]
    fb = fe["filterbank"]
    nyquist = fe["sample_rate"] / 2
    columns = fe["n_fft"] // 2 + 1
    if fb["kind"] == "mel":
        fmin, fmax = fb.get("fmin", 0.0), fb.get("fmax")
        if fmax is not None and fmax > nyquist:
            raise SchemaError("frontend.filterbank.fmax", f"{fmax} Hz is above the Nyquist "
                                                          f"frequency of frontend.sample_rate "
                                                          f"{fe['sample_rate']} ({nyquist:g} Hz)")
        if fmin >= (nyquist if fmax is None else fmax):
            raise SchemaError("frontend.filterbank.fmin", f"{fmin} Hz is not below fmax")
        return
    if len(fb["shape"]) != 2:
        raise SchemaError("frontend.filterbank.shape", f"must be [bins, {columns}], "
                                                       f"got {_shown(fb['shape'])}")
    rows, cols = fb["shape"]
    if rows > MAX_BINS:
        raise SchemaError("frontend.filterbank.shape", f"{rows} bands, more than {MAX_BINS}")
    if cols != columns:
        raise SchemaError("frontend.filterbank.shape", f"{cols} columns, but frontend.n_fft "
                                                       f"{fe['n_fft']} gives {columns} bins")
    if rows * cols > MAX_FILTERBANK_VALUES:
        raise SchemaError("frontend.filterbank.shape", f"{rows} x {cols} values, more than "
                                                       f"{MAX_FILTERBANK_VALUES}")
    # bytes the base64 text decodes to, known from its length (no decoding yet)
    text = fb["data_b64"]
    if len(text) % 4 or not _BASE64.fullmatch(text):
        raise SchemaError("frontend.filterbank.data_b64", "is not base64 text")
    stored = len(text) // 4 * 3 - len(text[-2:]) + len(text[-2:].rstrip("="))
    if fb.get("encoding", "dense") == "dense":
        values = rows * cols
    else:
        for key in ("starts", "lengths"):
            if key not in fb:
                raise SchemaError(f"frontend.filterbank.{key}", "is missing (row-spans encoding)")
            if len(fb[key]) != rows:
                raise SchemaError(f"frontend.filterbank.{key}", f"has {len(fb[key])} rows, "
                                                                f"shape says {rows}")
        for r, (start, length) in enumerate(zip(fb["starts"], fb["lengths"])):
            if start + length > cols:
                raise SchemaError(f"frontend.filterbank.lengths[{r}]",
                                  f"row {r} spans past column {cols}")
        values = sum(fb["lengths"])
    if stored != 4 * values:
        raise SchemaError("frontend.filterbank.data_b64", f"holds {stored} bytes, the shape "
                                                          f"needs {4 * values}")


def _stream_rules(doc):
    stream, fe = doc.get("stream", {}), doc["frontend"]
    if "hop_seconds" in stream:
        frame_hop = fe["hop_length"] / fe["sample_rate"]
        if stream["hop_seconds"] < frame_hop:
            raise SchemaError("stream.hop_seconds", f"{stream['hop_seconds']} s is below one "
                                                    f"front-end frame ({frame_hop:g} s)")
    background = stream.get("background") or []
    unknown = sorted(set(background) - set(doc["labels"]))
    if unknown:
        raise SchemaError("stream.background", f"names unknown labels {_shown(unknown)}")
    if background and set(background) >= set(doc["labels"]):
        raise SchemaError("stream.background", "names every label: nothing could be an event")
    threshold = stream.get("threshold")
    if isinstance(threshold, dict):
        unknown = sorted(set(threshold) - set(doc["labels"]))
        if unknown:
            raise SchemaError("stream.threshold", f"names unknown labels {_shown(unknown)}")
    if doc.get("output_activation", "softmax") != "none" and threshold is not None:
        values = threshold.values() if isinstance(threshold, dict) else [threshold]
        if any(not 0.0 <= v <= 1.0 for v in values):
            raise SchemaError("stream.threshold", "must be in [0, 1] for softmax or sigmoid "
                                                  f"scores, got {_shown(threshold)}")


def _streaming_rules(doc):
    streaming = doc.get("streaming")
    if streaming is None:
        return
    if streaming["chunk_frames"] != doc["n_frames"]:
        raise SchemaError("streaming.chunk_frames", f"{streaming['chunk_frames']} differs from "
                                                    f"n_frames {doc['n_frames']}")
    states = streaming["states"]
    for end, graph_name in (("input", "features"), ("output", "logits")):
        names = [streaming[graph_name]] + [state[end] for state in states]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise SchemaError("streaming.states", f"{end} names {_shown(repeated)} more than "
                                                   "once")
    values = sum(math.prod(state["shape"]) for state in states)
    if values > MAX_STATE_VALUES:
        raise SchemaError("streaming.states", f"hold {values} values, more than "
                                              f"{MAX_STATE_VALUES}")


_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")

CROSS_FIELD_RULES = (_frontend_rules, _filterbank_rules, _window_rules, _stream_rules,
                     _streaming_rules)


def nesting_depth(doc) -> int:
    """Levels of lists and objects in a parsed JSON document (iterative: no recursion)."""
    deepest, todo = 0, [(doc, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_NESTING:
                items = value.values() if isinstance(value, dict) else value
                todo.extend((item, depth + 1) for item in items)
    return deepest


def validate_metadata(doc, current_version: int) -> None:
    """Raise ``SchemaError`` (naming the field) unless ``doc`` is a valid format-1 document."""
    if not isinstance(doc, dict):
        raise SchemaError("(document)", "is not a JSON object")
    if nesting_depth(doc) > MAX_NESTING:
        raise SchemaError("(document)", f"nests deeper than {MAX_NESTING} levels")
    version = doc.get("format_version", 1)
    Int(1, 2**31).check(version, "format_version")
    if version > current_version:
        raise SchemaError("format_version", f"model format {version} is newer than this "
                                            f"edgeaudio understands ({current_version}); "
                                            "upgrade edgeaudio")
    FIELDS.check(doc, "")
    for rule in CROSS_FIELD_RULES:
        rule(doc)
