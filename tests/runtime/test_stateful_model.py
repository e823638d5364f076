"""Streaming-aware model files (metadata ``streaming``): a causal network that carries its
convolution state from call to call, one call per chunk of front-end frames.

The fixtures are real files: a tiny causal torch network (two states of different shapes)
exported to ONNX and to TFLite by the same converters and metadata writers the export room
uses, with a 20-ms-hop mel front end. The runtime must score a recording as the torch
network does over the whole recording (states from zeros), stream it hop by hop to the same
scores, keep the states advancing under the gate, and refuse a file whose metadata does not
match its graph with one line naming the field."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from edgeaudio import Model, ModelFileError
from edgeaudio.model import activate
from edgeaudio.frontend import FrontendSpec
from edgeaudio.modelfile import DEFAULT_STREAM_SETTINGS, ModelInfo
from edgeaudio.windows import iter_chunks, window_starts
from tests.conftest import REPO
from tests.runtime.cli_helpers import edgeaudio, error_lines, json_lines

torch = pytest.importorskip("torch")
writers = pytest.importorskip("edgeaudio.export.writers")
from edgeaudio.export.streaming import NamedCall, calibration_calls  # noqa: E402

CHUNK_FRAMES, WINDOW_CHUNKS = 8, 4
# 32-ms windows every 20 ms (the frame counts below follow from it): a chunk is 0.16 s
FRONTEND = FrontendSpec(sample_rate=16000, n_fft=1024, win_length=512, hop_length=320,
                        filterbank={"kind": "mel", "n_bins": 64, "fmin": 50.0, "fmax": 8000.0},
                        log_offset=1e-6)
LABELS = ["dog", "rooster", "crying_baby"]
CHANNELS, TIME_KERNEL, MID_KERNEL = 4, 3, 4
SCENE = REPO / "examples" / "scene.flac"   # a dog, a rooster, a crying baby; 16 kHz
TFLITE_RUNTIME_PYTHON = REPO / ".venv-tflite-runtime" / "bin" / "python"


class CausalNet(torch.nn.Module):
    """A causal conv over time on the features (state: the last input frames), mean over
    frequency, a causal conv over the channels (state: the last hidden frames), mean over the
    chunk, a linear layer: ``(features, *states) -> (logits, *next_states)``, the form the
    export room's streaming writers take (``export.streaming``)."""

    chunk_frames = CHUNK_FRAMES

    def __init__(self, bins: int):
        super().__init__()
        self.conv_in = torch.nn.Conv2d(1, CHANNELS, (TIME_KERNEL, 5), padding=(0, 2))
        self.conv_mid = torch.nn.Conv1d(CHANNELS, CHANNELS, MID_KERNEL)
        self.head = torch.nn.Linear(CHANNELS, len(LABELS))
        self.state_shapes = [(1, TIME_KERNEL - 1, bins), (1, CHANNELS, MID_KERNEL - 1)]

    def hidden(self, x):
        return torch.relu(self.conv_in(x[:, None] / 4.0)).mean(dim=3)

    def forward(self, features, state_0, state_1):
        x = torch.cat((state_0, features), dim=1)
        h = torch.cat((state_1, self.hidden(x)), dim=2)
        y = torch.relu(self.conv_mid(h)).mean(dim=2)
        return self.head(y), x[:, -(TIME_KERNEL - 1):], h[:, :, -(MID_KERNEL - 1):]

    def zero_states(self):
        return [torch.zeros(shape) for shape in self.state_shapes]

    def whole_recording(self, features):
        """Logit rows ``[chunks, classes]`` of all the frames at once, the left context zeros
        (the states a recording starts from), one row per chunk of frames."""
        x = torch.cat((torch.zeros(self.state_shapes[0]), features), dim=1)
        h = torch.cat((torch.zeros(self.state_shapes[1]), self.hidden(x)), dim=2)
        y = torch.relu(self.conv_mid(h))[0]                           # [channels, frames]
        chunks = y.reshape(CHANNELS, -1, CHUNK_FRAMES).mean(dim=2).T  # [chunks, channels]
        return self.head(chunks)


def example_inputs(net, bins):
    return {"features": torch.zeros(1, CHUNK_FRAMES, bins),
            **{f"state_{i}": torch.zeros(shape) for i, shape in enumerate(net.state_shapes)}}


def streaming_info(frontend, graph_names, net) -> ModelInfo:
    """The metadata for a graph whose inputs and outputs are ``graph_names`` (features and
    logits first, then the states in order)."""
    inputs, outputs = graph_names
    streaming = {"chunk_frames": CHUNK_FRAMES, "window_chunks": WINDOW_CHUNKS,
                 "features": inputs[0], "logits": outputs[0],
                 "states": [{"input": i, "output": o, "shape": list(shape)}
                            for i, o, shape in zip(inputs[1:], outputs[1:], net.state_shapes)]}
    return ModelInfo(labels=list(LABELS), frontend=frontend, n_frames=CHUNK_FRAMES,
                     name="stateful-fixture", stream=dict(DEFAULT_STREAM_SETTINGS),
                     streaming=streaming)


def with_metadata(source, info: ModelInfo, out):
    """A copy of the model file ``source`` carrying ``info`` (the export room's writers)."""
    if out.suffix == ".tflite":
        out.write_bytes(writers.add_tflite_metadata(source.read_bytes(), info))
    else:
        shutil.copy(source, out)
        writers.set_onnx_metadata(out, info)
    return out


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    """(network, {suffix: file}, {suffix: graph bytes without metadata}, info per suffix)."""
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    root = tmp_path_factory.mktemp("stateful")
    frontend = FRONTEND
    torch.manual_seed(0)
    net = CausalNet(frontend.n_bins).eval()
    example = example_inputs(net, frontend.n_bins)
    names = (list(example), ["logits", "next_state_0", "next_state_1"])
    graphs, files, infos = {}, {}, {}
    with writers.converters_silenced(), torch.no_grad():
        program = torch.onnx.export(net, (), kwargs=example, dynamo=True,
                                    input_names=names[0], output_names=names[1])
        program.save(str(root / "graph.onnx"))
        (root / "graph.tflite").write_bytes(
            bytes(litert_torch.convert(NamedCall(net, 2).eval(), (), example).model_content()))
    # the TFLite signature names come from the keyword inputs and the dict's keys: read back
    signature = Interpreter(model_path=str(root / "graph.tflite")).get_signature_list()
    tflite_names = (signature["serving_default"]["inputs"],
                    signature["serving_default"]["outputs"])
    assert tflite_names == names
    for suffix, graph_names in ((".onnx", names), (".tflite", tflite_names)):
        graphs[suffix] = root / ("graph" + suffix)
        infos[suffix] = streaming_info(frontend, graph_names, net)
        files[suffix] = with_metadata(graphs[suffix], infos[suffix], root / ("model" + suffix))
    return net, files, graphs, infos


@pytest.fixture(scope="module")
def int8_file(fixture, tmp_path_factory):
    """The network through the export room's int8 TFLite writer: int8 features, logits and
    states, calibrated on calls with the states a real recording leaves."""
    from edgeaudio.export.quantize import quantize_tflite

    net, files, _, infos = fixture
    model = Model(files[".tflite"])
    calls = calibration_calls(net, [model.frontend(scene(19.5))], 64)
    path = tmp_path_factory.mktemp("stateful_int8") / "model.int8.tflite"
    return quantize_tflite(net, infos[".tflite"], calls, path)


BACKENDS = [(".onnx", "onnxruntime"), (".tflite", "litert")]


@pytest.fixture(params=BACKENDS, ids=[b for _, b in BACKENDS])
def model(request, fixture):
    suffix, backend = request.param
    return Model(fixture[1][suffix], backend=backend)


def scene(seconds: float) -> np.ndarray:
    wave, rate = sf.read(SCENE, dtype="float32")
    assert rate == 16000
    return wave[:int(seconds * rate)]


def reference_rows(net, model, wave) -> np.ndarray:
    """The torch network over the whole recording, zero-padded to whole chunks."""
    fe = model.info.frontend
    frames = max(1, -(-fe.n_frames(len(wave)) // CHUNK_FRAMES)) * CHUNK_FRAMES
    padded = np.zeros(fe.samples_for_frames(frames), np.float32)
    padded[:min(len(wave), len(padded))] = wave[:len(padded)]
    features = torch.from_numpy(model.frontend(padded))[None]
    with torch.no_grad():
        return net.whole_recording(features).numpy()


def window_means(rows, hop=1):
    window = min(WINDOW_CHUNKS, len(rows))
    return np.stack([rows[s:s + window].mean(axis=0)
                     for s in window_starts(len(rows), window, hop)])


def streamed(stream, wave, pieces=(777, 1234, 3001, 97)):
    """Push ``wave`` in pieces of odd sizes; the raw scores of every hop."""
    raw, pos, i = [], 0, 0
    while pos < len(wave):
        size = pieces[i % len(pieces)]
        before = stream.n_inferences
        stream.push(wave[pos:pos + size])
        hops = stream.n_inferences - before
        assert hops <= len(stream.recent)
        raw += list(stream.recent)[len(stream.recent) - hops:]
        pos, i = pos + size, i + 1
    return np.array(raw)


# --- classify ---------------------------------------------------------------------------------

def test_classify_equals_the_network_over_the_whole_recording(fixture, model):
    wave = scene(3.3)
    rows = reference_rows(fixture[0], model, wave)
    assert len(rows) == 21             # 3.3 s: 164 frames, 20 whole chunks and a padded one
    np.testing.assert_allclose(model.chunk_logits([wave]), rows, atol=1e-4)
    result = model.classify(wave, 16000)
    expected = activate(window_means(rows), "softmax")
    assert result.windows == len(rows) - WINDOW_CHUNKS + 1
    np.testing.assert_allclose(result.window_scores, expected, atol=1e-5)
    np.testing.assert_allclose(result.scores, expected.mean(axis=0), atol=1e-5)


def test_classify_reads_a_file_in_blocks_as_one_waveform(fixture, model, tmp_path):
    wave = scene(19.5)
    sf.write(tmp_path / "scene.wav", wave, 16000, subtype="FLOAT")
    from_file = model.classify(tmp_path / "scene.wav")
    np.testing.assert_allclose(from_file.window_scores, model.classify(wave, 16000).window_scores,
                               atol=1e-6)


def test_classify_hops_and_short_recordings(fixture, model):
    wave = scene(3.3)
    every_chunk = model.classify(wave, 16000).window_scores
    two_chunks = model.classify(wave, 16000, hop_seconds=2.2 * model.info.chunk_seconds)
    starts = window_starts(21, WINDOW_CHUNKS, 2)
    assert starts[-1] == 17            # the cover rule: a last window ends at the last row
    np.testing.assert_allclose(two_chunks.window_scores, every_chunk[starts], atol=1e-6)
    short = scene(0.3)                 # 2 chunks, fewer than a window: one window of both
    rows = reference_rows(fixture[0], model, short)
    assert len(rows) == 2
    np.testing.assert_allclose(model.classify(short, 16000).window_scores,
                               activate(rows.mean(axis=0, keepdims=True), "softmax"), atol=1e-5)
    tiny = model.classify(scene(0.01), 16000)   # under one frame: one padded chunk
    assert tiny.windows == 1


def test_chunks_pad_the_recording_to_whole_chunks():
    span, chunk, frame = 512 + 7 * 320, 8 * 320, 512
    wave = np.arange(1, 20_001, dtype=np.float32)
    chunks = list(iter_chunks([wave[:5000], wave[5000:5001], wave[5001:]], span, chunk, frame))
    # 61 frames (20000 samples) need 8 chunks; the last one's first frame ends at 18432
    assert len(chunks) == 8 and all(len(c) == span for c in chunks)
    for k, c in enumerate(chunks):
        np.testing.assert_array_equal(c[:max(0, 20_000 - k * chunk)],
                                      wave[k * chunk:k * chunk + span])
        assert not c[max(0, 20_000 - k * chunk):].any()
    assert len(list(iter_chunks([wave[:10]], span, chunk, frame))) == 1


# --- the streaming engine ----------------------------------------------------------------------

def test_stream_in_odd_pieces_scores_as_classify(fixture, model):
    wave = scene(5.0)                  # sound throughout: no window is gated
    stream = model.stream(gate_db=-400.0)
    raw = streamed(stream, wave)
    rows = model.chunk_logits([wave])
    # every whole chunk is one hop; the padded last chunk of classify is not streamed
    assert len(raw) == stream.n_inferences == (len(wave) - stream.window) // stream.hop + 1
    assert stream.logit_rows.shape == (WINDOW_CHUNKS, 3)        # bounded, however long
    assert len(stream.hop_powers) == WINDOW_CHUNKS and len(stream.ring) == stream.window
    windows = model.classify(wave, 16000).window_scores
    np.testing.assert_allclose(raw[WINDOW_CHUNKS - 1:], windows[:len(raw) - WINDOW_CHUNKS + 1],
                               atol=1e-5)
    for k in range(WINDOW_CHUNKS - 1):   # before a whole window: the rows so far
        np.testing.assert_allclose(raw[k], activate(rows[:k + 1].mean(axis=0), "softmax"),
                                   atol=1e-5)


def test_gate_zeroes_quiet_windows_while_the_states_advance(fixture, model):
    quiet_chunks = 12
    quiet = np.zeros(quiet_chunks * model.info.chunk_samples, np.float32)
    wave = np.concatenate((quiet, scene(4.0)))
    stream = model.stream()
    raw = streamed(stream, wave)
    windows = model.classify(wave, 16000).window_scores
    # hop k ends at sample window + k * hop: the gate is shut while its chunks are silent
    # (and at the first hop with sound in, whose 0.012 s of it are too quiet to count)
    silent_hops = int(np.sum(stream.window + np.arange(len(raw)) * stream.hop <= len(quiet)))
    gated = ~raw.any(axis=1)
    assert silent_hops >= WINDOW_CHUNKS
    assert gated[:silent_hops + 1].all() and not gated[silent_hops + 1:].any()
    # past the silence the scores are those of the whole recording: the network ran through
    # the silence, so its states hold the silence's context, not zeros
    sound = np.arange(silent_hops + 1, len(raw))
    np.testing.assert_allclose(raw[sound], windows[sound - WINDOW_CHUNKS + 1], atol=1e-5)
    # ... and that context counts: a stream starting at the sound scores otherwise
    fresh = streamed(model.stream(), scene(4.0))
    first_whole_window = quiet_chunks + WINDOW_CHUNKS - 1
    assert np.abs(fresh[WINDOW_CHUNKS - 1] - raw[first_whole_window]).max() > 1e-3


def test_stream_hop_is_one_chunk(model):
    chunk = model.info.chunk_samples
    stream = model.stream()
    assert stream.hop == chunk and stream.hop_seconds == pytest.approx(0.16)
    assert stream.window_seconds == model.info.scored_window_seconds == pytest.approx(0.64)
    frame = model.info.frontend.hop_length / model.sample_rate
    assert model.stream(hop_seconds=0.16 + 0.4 * frame).hop == chunk
    for hop in (0.25, 0.32, 0.16 + 0.6 * frame):
        with pytest.raises(ValueError, match=r"hops one chunk of 0\.16 s \(8 frames\)"):
            model.stream(hop_seconds=hop)
    with pytest.raises(ValueError, match="at least one front-end frame"):
        model.stream(hop_seconds=float("nan"))


def test_listen_runs_a_streaming_file(fixture, tmp_path):
    sf.write(tmp_path / "scene.wav", scene(19.5), 16000)
    model_file = fixture[1][".tflite"]
    # three softmax scores: the top one is at least 1/3, so some class opens an event
    r = edgeaudio("listen", "--input", tmp_path / "scene.wav", "--fast", "--json",
                  "--backend", "litert", "--threshold", "0.34", "--model", model_file)
    assert r.returncode == 0, r.stderr
    events = json_lines(r.stdout)
    assert events and {e["event"] for e in events} == {"start", "end"}
    assert "121 inferences" in r.stderr     # (19.5 s - one chunk's span) / 0.16 s + 1
    r = edgeaudio("listen", "--input", tmp_path / "scene.wav", "--fast", "--hop", "0.25",
                  "--model", model_file)
    assert r.returncode == 2
    assert error_lines(r.stderr) == ["error: hop_seconds 0.25: this streaming-aware model hops "
                                     "one chunk of 0.16 s (8 frames)"]


def test_int8_edges_and_states(fixture, int8_file):
    model = Model(int8_file, backend="litert")
    backend = model.backend
    assert backend.quantized_logits["dtype"] == np.int8
    # the converter leaves the first state float and makes the second int8 with an output
    # scale of its own: one state carried as it is, one through float
    assert [edge["dtype"] for edge in backend.state_input_edges] == [np.float32, np.int8]
    assert backend.state_carries[0] is None and backend.state_carries[1] is not None
    wave = scene(5.0)
    # int8 against the float network: close; the engine against classify: the same arithmetic
    rows = reference_rows(fixture[0], model, wave)
    result = model.classify(wave, 16000)
    np.testing.assert_allclose(result.window_scores, activate(window_means(rows), "softmax"),
                               atol=0.05)
    raw = streamed(model.stream(gate_db=-400.0), wave)
    np.testing.assert_allclose(raw[WINDOW_CHUNKS - 1:],
                               result.window_scores[:len(raw) - WINDOW_CHUNKS + 1], atol=1e-6)


@pytest.mark.skipif(not TFLITE_RUNTIME_PYTHON.exists(), reason="no .venv-tflite-runtime")
def test_tflite_runtime_backend_scores_as_litert(fixture, int8_file, tmp_path):
    """tflite-runtime needs numpy < 2, so it runs in its own venv (torch-free: the files are
    built here)."""
    wave = scene(5.0)                  # sound throughout: no window is gated
    np.save(tmp_path / "wave.npy", wave)
    files = [str(fixture[1][".tflite"]), str(int8_file)]
    script = f"""
import json, numpy as np
from edgeaudio import Model
from edgeaudio.backends import backend_available
if not backend_available("tflite-runtime"):
    raise SystemExit(77)
wave = np.load({str(tmp_path / "wave.npy")!r})
out = []
for path in {files!r}:
    m = Model(path, backend="tflite-runtime")
    s = m.stream(gate_db=-400.0)
    raw = []
    for i in range(0, len(wave), 1234):
        n = s.n_inferences
        s.push(wave[i:i + 1234])
        raw += [r.tolist() for r in list(s.recent)[len(s.recent) - (s.n_inferences - n):]]
    out.append({{"classify": m.classify(wave, 16000).window_scores.tolist(), "raw": raw}})
print(json.dumps(out))
"""
    r = subprocess.run([str(TFLITE_RUNTIME_PYTHON), "-c", script], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    if r.returncode == 77:
        pytest.skip("tflite-runtime is not installed in .venv-tflite-runtime")
    assert r.returncode == 0, r.stderr
    # float: the same scores; int8: the two runtimes' kernels may round a step apart
    for path, out, atol in zip(files, json.loads(r.stdout), (1e-6, 1e-2)):
        litert = Model(path, backend="litert")
        np.testing.assert_allclose(out["classify"], litert.classify(wave, 16000).window_scores,
                                   atol=atol)
        np.testing.assert_allclose(out["raw"], streamed(litert.stream(gate_db=-400.0), wave,
                                                        (1234,)), atol=atol)
        # within each runtime, the engine scores as classify does
        np.testing.assert_allclose(np.array(out["raw"])[WINDOW_CHUNKS - 1:],
                                   np.array(out["classify"])[:len(out["raw"]) - WINDOW_CHUNKS + 1],
                                   atol=1e-6)


# --- metadata and load-time checks -------------------------------------------------------------

def test_streaming_metadata_round_trips(fixture):
    info = Model(fixture[1][".onnx"]).info
    assert info.streaming == fixture[3][".onnx"].streaming
    assert ModelInfo.from_json(info.to_json()).to_dict() == info.to_dict()
    plain = Model().info
    assert plain.streaming is None and "streaming" not in plain.to_dict()


@pytest.mark.parametrize("change, message", [
    ({"chunk_frames": 9}, "streaming.chunk_frames: 9 differs from n_frames 8"),
    ({"window_chunks": 0}, r"streaming.window_chunks: must be in \[1, "),
    ({"window_chunks": 2.0}, "streaming.window_chunks: must be an integer"),
    ({"features": 3}, "streaming.features: must be a string"),
    ({"logits": None}, "streaming.logits: must be a string"),
    ({"states": {}}, "streaming.states: must be a list of objects"),
    ({"states": [{"input": "a", "output": "b"}]}, r"streaming.states\[0\].shape: is missing"),
    ({"states": [{"input": "a", "output": "b", "shape": [1, 0]}]},
     r"streaming.states\[0\].shape\[1\]: must be in \[1, "),
    ({"states": [{"input": "a", "output": "b", "shape": []}]},
     r"streaming.states\[0\].shape: has 0 items, fewer than 1"),
    ({"states": [{"input": "features", "output": "b", "shape": [1]}]},
     r"streaming.states: input names \['features'\] more than once"),
    ({"states": [{"input": "a", "output": "b", "shape": [2**13, 2**13]}]},
     "streaming.states: hold 67108864 values, more than"),
])
def test_bad_streaming_metadata_is_named(fixture, change, message):
    doc = json.loads(fixture[3][".onnx"].to_json())
    doc["streaming"] = {**doc["streaming"], **change}
    with pytest.raises(ModelFileError, match=message):
        ModelInfo.from_json(json.dumps(doc))


def _renamed(name):
    def edit(streaming):
        streaming[name] = "nope"
    return edit


def _state(i, key, value):
    def edit(streaming):
        streaming["states"][i][key] = value
    return edit


def _more_frames(streaming):
    streaming["chunk_frames"] = 9


def _state_left_out(streaming):
    del streaming["states"][1]


BROKEN_FILES = [
    (_renamed("features"), r"streaming.features: the graph has no input 'nope' \(its inputs: "),
    (_renamed("logits"), "streaming.logits: the graph has no output 'nope'"),
    (_state(0, "input", "nope"), r"streaming.states\[0\].input: the graph has no input 'nope'"),
    (_state(1, "output", "nope"), r"streaming.states\[1\].output: the graph has no output"),
    (_state(0, "shape", [1, 3, 64]), r"streaming.states\[0\].input: graph input 'state_0' is "
                                     r"\[1, 2, 64\], not \[1, 3, 64\]"),
    (_more_frames, r"streaming.features: graph input 'features' is \[1, 8, 64\], not "
                   r"\[1, 9, 64\] \(\[1, chunk_frames, bins\]\)"),
    (_state_left_out, "streaming.states: graph input.s. 'state_1' are not named in it"),
]


@pytest.mark.parametrize("suffix, backend", BACKENDS, ids=[b for _, b in BACKENDS])
@pytest.mark.parametrize("edit, message", BROKEN_FILES,
                         ids=["features", "logits", "state-input", "state-output", "state-shape",
                              "chunk-frames", "unnamed-input"])
def test_load_refuses_metadata_that_does_not_match_the_graph(fixture, tmp_path, suffix,
                                                              backend, edit, message):
    doc = json.loads(fixture[3][suffix].to_json())
    edit(doc["streaming"])
    doc["n_frames"] = doc["streaming"]["chunk_frames"]
    doc.pop("window_seconds")
    broken = with_metadata(fixture[2][suffix], ModelInfo.from_json(json.dumps(doc)),
                           tmp_path / ("broken" + suffix))
    with pytest.raises(ModelFileError, match=message) as caught:
        Model(broken, backend=backend)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(broken))


@pytest.mark.parametrize("suffix, backend", BACKENDS, ids=[b for _, b in BACKENDS])
def test_load_refuses_a_class_count_the_logits_do_not_have(fixture, tmp_path, suffix, backend):
    info = fixture[3][suffix]
    more = ModelInfo.from_json(json.dumps({**info.to_dict(), "labels": LABELS + ["siren"]}))
    broken = with_metadata(fixture[2][suffix], more, tmp_path / ("labels" + suffix))
    with pytest.raises(ModelFileError, match=r"streaming.logits: output 'logits' \[1, 3\] has "
                                             "3 values for 4 labels"):
        Model(broken, backend=backend)


@pytest.mark.parametrize("suffix, backend", BACKENDS, ids=[b for _, b in BACKENDS])
def test_a_stateful_graph_without_streaming_metadata_is_refused_as_before(fixture, tmp_path,
                                                                           suffix, backend):
    doc = json.loads(fixture[3][suffix].to_json())
    del doc["streaming"]
    plain = with_metadata(fixture[2][suffix], ModelInfo.from_json(json.dumps(doc)),
                          tmp_path / ("plain" + suffix))
    with pytest.raises(ModelFileError, match="has one (float )?input and an output"):
        Model(plain, backend=backend)


def test_info_describes_the_chunk_and_the_scored_window(fixture):
    r = edgeaudio("info", fixture[1][".onnx"])
    assert r.returncode == 0, r.stderr
    assert (f"streaming     one 0.160-s chunk ({CHUNK_FRAMES} frames) a call, 2 carried states; "
            f"window 0.640 s ({WINDOW_CHUNKS} chunks)") in r.stdout
