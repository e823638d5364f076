"""Export of the causal student (``mn02-stream``): a run of the online distillation loop on
real ESC-50 clips (one short epoch), ``edgeaudio export``-ed to the four files, each one
streaming call (a 32-frame chunk and the convolutions' carried states). The float files score
a recording as the torch network's one causal pass does; the int8 ones stay close to it.

One export is shared by the module (the conversions take tens of seconds)."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch", reason="export needs torch")
pytest.importorskip("litert_torch", reason="export needs litert-torch")
pytest.importorskip("onnxruntime", reason="export needs onnxruntime")

from edgeaudio import Model  # noqa: E402
from edgeaudio.audio import load_audio  # noqa: E402

from .mn_export_run import FILES, LABELS, train_and_export  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, esc50):
    run = train_and_export(tmp_path_factory.mktemp("stream_export"), "mn02-stream",
                           ["--calibration", "40", "--window", "1.28"])
    assert "streaming graph: 32-frame chunks" in run["output"]
    return {**run, "network": run["student"].network.eval()}


def torch_chunk_logits(network, model: Model, wave: np.ndarray, chunks: int) -> np.ndarray:
    """The torch network's logit rows over the first ``chunks`` chunks of one causal pass
    over the whole recording (zeros after its end), from the runtime's own front end."""
    padded = np.concatenate([wave, np.zeros(2 * model.info.chunk_samples, np.float32)])
    frames = model.frontend(padded)[:chunks * model.info.n_frames]
    with torch.no_grad():
        return network.head(network.embed(torch.from_numpy(frames[None])))[0].numpy()


@pytest.mark.parametrize("name", FILES)
def test_each_file_is_one_streaming_call_with_its_metadata(exported, name):
    info = Model(exported["out"] / name).info
    assert info.provenance["student"] == "mn02-stream" and info.n_frames == 32
    streaming = info.streaming
    assert (streaming["chunk_frames"], streaming["window_chunks"]) == (32, 4)
    assert len(streaming["states"]) == 16
    assert streaming["states"][0] == {"input": "state_0", "output": "next_state_0",
                                      "shape": [1, 1, 128, 2]}
    assert info.chunk_seconds == info.stream["hop_seconds"] == pytest.approx(0.32)


def test_float_files_score_a_recording_as_one_causal_torch_pass(exported):
    for name in ("model.onnx", "model.tflite"):
        model = Model(exported["out"] / name)
        wave = load_audio(exported["clips"][0], model.sample_rate)
        rows = model.chunk_logits([wave])
        assert len(rows) == -(-len(wave) // model.info.chunk_samples)
        expected = torch_chunk_logits(exported["network"], model, wave, len(rows))
        np.testing.assert_allclose(rows, expected, atol=2e-3)
        result = model.classify(wave, model.sample_rate)
        assert result.window_scores.shape == (len(rows) - 3, len(LABELS))


def test_int8_files_stay_close_to_float(exported):
    wave = load_audio(exported["clips"][1], 16000)
    reference = Model(exported["out"] / "model.onnx").chunk_logits([wave])
    spread = float(np.ptp(reference))
    for name in ("model.int8.onnx", "model.int8.tflite"):
        rows = Model(exported["out"] / name).chunk_logits([wave])
        # quantization noise, carried through the states chunk after chunk, stays a small
        # part of the logits' own spread
        assert np.abs(rows - reference).max() < 0.15 * spread + 0.02, name
