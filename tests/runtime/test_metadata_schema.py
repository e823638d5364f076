"""The metadata contract, held by broken copies of real model files: the bundled ONNX and TFLite
student (a stored-matrix front end) and the ESC-10 placeholder (a mel front end). Every field
missing, of the wrong type or out of range is refused at load with one line naming the field;
most cases run through the library, a representative few through the CLI (exit 2)."""
import copy
import json
import shutil
import time
import tracemalloc

import pytest

from edgeaudio import Model, ModelFileError
from edgeaudio.modelfile import METADATA_KEY, read_onnx_metadata, read_tflite_metadata
from tests.conftest import PLACEHOLDER, REPO
from tests.runtime.cli_helpers import edgeaudio, error_lines

BUNDLED = {".onnx": REPO / "edgeaudio" / "models" / "esc50-student.int8.onnx",
           ".tflite": REPO / "edgeaudio" / "models" / "esc50-student.int8.tflite"}
MEL = {suffix: PLACEHOLDER.with_suffix(suffix) for suffix in BUNDLED}
MISSING = object()
SUFFIXES = [".onnx", ".tflite"]


class RawMetadata:
    """What the export writers store: anything with ``to_json``; here, any text at all."""

    def __init__(self, text: str):
        self.text = text

    def to_json(self) -> str:
        return self.text


def write_copy(source, text: str, out):
    """A copy of the model file ``source`` whose edgeaudio metadata is ``text`` (written by
    the export room's own metadata writers)."""
    writers = pytest.importorskip("edgeaudio.export.writers")
    if out.suffix == ".tflite":
        out.write_bytes(writers.add_tflite_metadata(source.read_bytes(), RawMetadata(text)))
    else:
        shutil.copy(source, out)
        writers.set_onnx_metadata(out, RawMetadata(text))
    return out


def metadata_of(path) -> dict:
    data = path.read_bytes()
    read = read_tflite_metadata if path.suffix == ".tflite" else read_onnx_metadata
    return json.loads(read(data)[METADATA_KEY])


def changed(doc: dict, fields: str, value) -> dict:
    """A copy of ``doc`` with each of the comma-separated dotted ``fields`` set to ``value``."""
    doc = copy.deepcopy(doc)
    for dotted in fields.split(","):
        *parents, last = dotted.split(".")
        node = doc
        for key in parents:
            node = node[key]
        if value is MISSING:
            del node[last]
        else:
            node[last] = value
    return doc


def n_labels(n):
    return [f"class{i}" for i in range(n)]


# the bundled student's stored filterbank: bands x FFT bins (n_fft // 2 + 1)
BANDS, BINS = metadata_of(BUNDLED[".tflite"])["frontend"]["filterbank"]["shape"]


# (field, new value or MISSING, the field the error must name): on the bundled student
BUNDLED_CASES = [
    ("labels", MISSING, "labels"),
    ("labels", "dog", "labels"),
    ("labels", [], "labels"),
    ("labels", [1, 2], "labels[0]"),
    ("labels", n_labels(10), "labels"),   # 10 labels for 50 outputs
    ("labels", n_labels(60), "labels"),
    ("n_frames", MISSING, "n_frames"),
    ("n_frames", "199", "n_frames"),
    ("n_frames", 199.0, "n_frames"),
    ("n_frames", 0, "n_frames"),
    ("n_frames", 10 ** 9, "n_frames"),
    ("n_frames", 90_000, "n_frames"),            # a 30-minute window
    ("format_version", "1", "format_version"),
    ("format_version", 0, "format_version"),
    ("format_version", 99, "format_version"),
    ("name", 5, "name"),
    ("version", ["x"], "version"),
    ("sample_rate", 0, "sample_rate"),
    ("sample_rate", "16000", "sample_rate"),
    ("sample_rate", 8000, "sample_rate"),        # disagrees with frontend.sample_rate
    ("window_seconds", "3.992", "window_seconds"),
    ("window_seconds", 2.0, "window_seconds"),
    ("output_activation", "relu", "output_activation"),
    ("output_activation", 1, "output_activation"),
    ("clip_pooling", "median", "clip_pooling"),
    ("provenance", "trained", "provenance"),
    ("extra", [], "extra"),
    ("frontend", MISSING, "frontend"),
    ("frontend", [], "frontend"),
    ("frontend.sample_rate", MISSING, "frontend.sample_rate"),
    ("frontend.sample_rate", 0, "frontend.sample_rate"),
    ("frontend.sample_rate", "16000", "frontend.sample_rate"),
    ("frontend.n_fft", MISSING, "frontend.n_fft"),
    ("frontend.n_fft", "1024", "frontend.n_fft"),
    ("frontend.n_fft", 2 ** 30, "frontend.n_fft"),
    ("frontend.n_fft", 256, "frontend.win_length"),  # the window no longer fits the FFT
    ("frontend.win_length", MISSING, "frontend.win_length"),
    ("frontend.win_length", True, "frontend.win_length"),
    ("frontend.hop_length", MISSING, "frontend.hop_length"),
    ("frontend.hop_length", 0, "frontend.hop_length"),
    ("frontend.hop_length", 10 ** 9, "frontend.hop_length"),
    ("frontend.hop_length", 4096, "window_seconds"),  # no longer the window it states
    ("frontend.log_offset", MISSING, "frontend.log_offset"),
    ("frontend.log_offset", 0, "frontend.log_offset"),
    ("frontend.log_offset", -1e-6, "frontend.log_offset"),
    ("frontend.log_offset", "1e-6", "frontend.log_offset"),
    ("frontend.window", "hamming", "frontend.window"),
    ("frontend.filterbank", MISSING, "frontend.filterbank"),
    ("frontend.filterbank", "harmonic", "frontend.filterbank"),
    ("frontend.filterbank.kind", MISSING, "frontend.filterbank.kind"),
    ("frontend.filterbank.kind", "gammatone", "frontend.filterbank.kind"),
    ("frontend.filterbank.shape", MISSING, "frontend.filterbank.shape"),
    ("frontend.filterbank.shape", f"{BANDS}x{BINS}", "frontend.filterbank.shape"),
    ("frontend.filterbank.shape", [BANDS], "frontend.filterbank.shape"),
    ("frontend.filterbank.shape", [BANDS, 2 * 10 ** 9], "frontend.filterbank.shape[1]"),
    # as many FFT bins as a doubled n_fft would have, not n_fft // 2 + 1
    ("frontend.filterbank.shape", [BANDS, 2 * BINS - 1], "frontend.filterbank.shape"),
    ("frontend.filterbank.shape", [BANDS + 1, BINS], "frontend.filterbank.starts"),
    ("frontend.filterbank.encoding", "zip", "frontend.filterbank.encoding"),
    ("frontend.filterbank.dtype", "float16", "frontend.filterbank.dtype"),
    ("frontend.filterbank.data_b64", MISSING, "frontend.filterbank.data_b64"),
    ("frontend.filterbank.data_b64", 5, "frontend.filterbank.data_b64"),
    ("frontend.filterbank.data_b64", "not base64!", "frontend.filterbank.data_b64"),
    ("frontend.filterbank.data_b64", "AAAA", "frontend.filterbank.data_b64"),
    ("frontend.filterbank.starts", MISSING, "frontend.filterbank.starts"),
    ("frontend.filterbank.starts", "[2, 2]", "frontend.filterbank.starts"),
    ("frontend.filterbank.lengths", [1, 2], "frontend.filterbank.lengths"),
    ("frontend.filterbank.lengths", [BINS + 1] * BANDS, "frontend.filterbank.lengths[0]"),
    ("stream", [], "stream"),
    ("stream", "fast", "stream"),
    ("stream.hop_seconds", 0, "stream.hop_seconds"),
    ("stream.hop_seconds", -0.25, "stream.hop_seconds"),
    ("stream.hop_seconds", "0.25", "stream.hop_seconds"),
    ("stream.hop_seconds", 0.001, "stream.hop_seconds"),   # below one 20-ms frame
    ("stream.hop_seconds", 1e9, "stream.hop_seconds"),
    ("stream.smooth", "3", "stream.smooth"),
    ("stream.smooth", 0, "stream.smooth"),
    ("stream.smooth", 2.5, "stream.smooth"),
    ("stream.threshold", "0.5", "stream.threshold"),
    ("stream.threshold", 2.0, "stream.threshold"),
    ("stream.threshold", {"unicorn": 0.5}, "stream.threshold"),
    ("stream.threshold", {"dog": "high"}, "stream.threshold.dog"),
    ("stream.patience", "2", "stream.patience"),
    ("stream.patience", 0, "stream.patience"),
    ("stream.release_ratio", 0, "stream.release_ratio"),
    ("stream.release_ratio", 1.5, "stream.release_ratio"),
    ("stream.gate_db", 10, "stream.gate_db"),
    ("stream.gate_db", "quiet", "stream.gate_db"),
]
# on the placeholder, whose front end is a mel filterbank given by its parameters
MEL_CASES = [
    ("frontend.filterbank.n_bins", MISSING, "frontend.filterbank.n_bins"),
    ("frontend.filterbank.n_bins", "64", "frontend.filterbank.n_bins"),
    ("frontend.filterbank.n_bins", 0, "frontend.filterbank.n_bins"),
    ("frontend.filterbank.n_bins", 2 * 10 ** 9, "frontend.filterbank.n_bins"),
    ("frontend.filterbank.fmin", "50", "frontend.filterbank.fmin"),
    ("frontend.filterbank.fmin", 9000.0, "frontend.filterbank.fmin"),   # above fmax
    ("frontend.filterbank.fmax", 16000.0, "frontend.filterbank.fmax"),  # above Nyquist
    ("frontend.filterbank.fmax", "8k", "frontend.filterbank.fmax"),
    # an 8 kHz front end for a graph trained on 16 kHz mel bands up to 8 kHz
    ("frontend.sample_rate,sample_rate", 8000, "frontend.filterbank.fmax"),
    ("frontend.sample_rate", 8000, "sample_rate"),      # the two rates disagree
]


def case_id(case):
    field, value, _ = case
    shown = "missing" if value is MISSING else repr(value)
    return f"{field}={shown[:20]}"


def assert_refused_naming(path, field):
    with pytest.raises(ModelFileError) as err:
        Model(path)
    message = str(err.value)
    assert f"metadata field {field}:" in message and "\n" not in message, message
    return message


FIELD_CASES = [(BUNDLED, case) for case in BUNDLED_CASES] + [(MEL, case) for case in MEL_CASES]
FIELD_IDS = [("mel:" if src is MEL else "") + case_id(case) for src, case in FIELD_CASES]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("sources, case", FIELD_CASES, ids=FIELD_IDS)
def test_broken_field_is_named(tmp_path, suffix, sources, case):
    field, value, named = case
    doc = changed(metadata_of(sources[suffix]), field, value)
    assert_refused_naming(write_copy(sources[suffix], json.dumps(doc), tmp_path / f"m{suffix}"),
                          named)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_optional_fields_missing_take_their_defaults(tmp_path, suffix):
    doc = metadata_of(BUNDLED[suffix])
    for key in ("format_version", "name", "version", "sample_rate", "window_seconds",
                "output_activation", "clip_pooling", "stream", "provenance", "extra"):
        doc.pop(key, None)
    model = Model(write_copy(BUNDLED[suffix], json.dumps(doc), tmp_path / f"m{suffix}"))
    assert model.info.stream["hop_seconds"] == 0.25 and model.info.output_activation == "softmax"
    assert len(model.labels) == model.backend.output_size == 50


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_unchanged_copy_loads(tmp_path, suffix):
    """The writer itself breaks nothing: the same document written back loads and scores."""
    text = json.dumps(metadata_of(BUNDLED[suffix]))
    model = Model(write_copy(BUNDLED[suffix], text, tmp_path / f"m{suffix}"))
    assert model.info.to_dict() == Model(BUNDLED[suffix]).info.to_dict()


# --- hostile documents: not a field, the document itself -------------------------------------

def hostile_text(kind: str, doc: dict) -> str:
    if kind == "deep":
        return json.dumps({**doc, "provenance": "@"}).replace('"@"', "[" * 100_000 + "]" * 100_000)
    if kind == "nested-40":
        return json.dumps({**doc, "provenance": "@"}).replace('"@"', "[" * 40 + "]" * 40)
    if kind == "digits":
        return json.dumps({**doc, "n_frames": "@"}).replace('"@"', "7" * 5000)
    if kind == "nan":
        return json.dumps({**doc, "stream": {**doc["stream"], "hop_seconds": float("nan")}})
    raise ValueError(kind)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("kind, message", [("deep", "nests"), ("nested-40", "nests deeper"),
                                           ("digits", "not valid JSON"),
                                           ("nan", "stream.hop_seconds")])
def test_hostile_document_is_refused(tmp_path, suffix, kind, message):
    text = hostile_text(kind, metadata_of(BUNDLED[suffix]))
    with pytest.raises(ModelFileError, match=message) as err:
        Model(write_copy(BUNDLED[suffix], text, tmp_path / f"m{suffix}"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_invalid_utf8_in_the_metadata(tmp_path, suffix):
    doc = {**metadata_of(BUNDLED[suffix]), "name": "@@@@"}
    path = write_copy(BUNDLED[suffix], json.dumps(doc), tmp_path / f"m{suffix}")
    data = path.read_bytes()
    assert data.count(b'"@@@@"') == 1
    path.write_bytes(data.replace(b'"@@@@"', b'"\xff\xfe\xfd\xfc"'))  # same length: offsets hold
    with pytest.raises(ModelFileError, match="not valid UTF-8"):
        Model(path)


def peak_bytes_of_refusing(path, match: str) -> int:
    """Peak Python memory while ``Model(path)`` is refused with ``match``."""
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match=match):
            Model(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_oversized_metadata_refused_before_it_is_decoded(tmp_path, suffix):
    doc = {**metadata_of(BUNDLED[suffix]), "extra": {"padding": "x" * (17 * 2**20)}}
    path = write_copy(BUNDLED[suffix], json.dumps(doc), tmp_path / f"m{suffix}")
    peak = peak_bytes_of_refusing(path, "more than 16777216")
    # the file is read once (18 MB); the metadata is neither copied nor decoded nor parsed
    assert peak < 1.5 * path.stat().st_size, peak


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("field, value", [("frontend.filterbank.shape", [BANDS, 2 * 10 ** 9]),
                                          ("frontend.hop_length", 10 ** 9),
                                          ("n_frames", 10 ** 7)])
def test_huge_sizes_refused_before_allocating(tmp_path, suffix, field, value):
    doc = changed(metadata_of(BUNDLED[suffix]), field, value)
    path = write_copy(BUNDLED[suffix], json.dumps(doc), tmp_path / f"m{suffix}")
    t0 = time.perf_counter()
    peak = peak_bytes_of_refusing(path, "metadata field")
    assert peak < 20 * 2**20 and time.perf_counter() - t0 < 10, peak


# --- through the CLI: one error line, exit 2, no traceback ----------------------------------

@pytest.mark.parametrize("suffix, field, value, command", [
    (".tflite", "stream.hop_seconds", 0, "classify"),       # hung before
    (".onnx", "n_frames", "199", "info"),                   # a traceback before
    (".tflite", "labels", n_labels(10), "classify"),        # mislabelled scores before
    (".onnx", "frontend.filterbank.shape", [BANDS, 2 * 10 ** 9], "info"),
])
def test_cli_refuses_a_broken_field_with_exit_2(tmp_path, suffix, field, value, command):
    doc = changed(metadata_of(BUNDLED[suffix]), field, value)
    path = write_copy(BUNDLED[suffix], json.dumps(doc), tmp_path / f"m{suffix}")
    args = (["classify", "--model", path, REPO / "examples" / "dog.flac"] if command == "classify"
            else ["info", path])
    r = edgeaudio(*args, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and f"metadata field {field}" in errors[0], r.stderr


def test_cli_refuses_a_hostile_document_with_exit_2(tmp_path):
    text = hostile_text("deep", metadata_of(BUNDLED[".tflite"]))
    path = write_copy(BUNDLED[".tflite"], text, tmp_path / "m.tflite")
    r = edgeaudio("info", path, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert error_lines(r.stderr)[0].startswith("error: ") and "nests" in r.stderr
