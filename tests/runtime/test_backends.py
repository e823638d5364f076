"""One suite, every backend, the same real model files (tests/data, made by
scripts/make_placeholder_model.py from real ESC-10 clips)."""
import numpy as np
import pytest

from edgeaudio import BackendError, Model
from edgeaudio.backends import available_backends
from tests.conftest import PLACEHOLDER, esc50_clip

DOG = "5-203128-A-0"  # ESC-10 dog clip from fold 5, which the placeholder did not train on


def test_backend_loads_and_scores(model_file_and_backend):
    path, backend = model_file_and_backend
    model = Model(path, backend=backend)
    assert model.backend_name == backend
    assert model.backend.input_shape == (1, 98, 64)
    feats = np.random.default_rng(0).normal(-5, 3, (98, 64)).astype(np.float32)
    scores = model.scores_for_features(feats)
    assert scores.shape == (10,) and abs(scores.sum() - 1) < 1e-5


def test_backends_agree_on_a_real_clip(model_file_and_backend, esc50):
    path, backend = model_file_and_backend
    reference = Model(PLACEHOLDER.with_suffix(".onnx"), backend="onnxruntime")
    model = Model(path, backend=backend)
    a = reference.classify(esc50_clip(DOG))
    b = model.classify(esc50_clip(DOG))
    assert b.frames == a.frames == len(model.window_starts(5 * 16000, 4000))  # 5 s, 0.25-s hops
    np.testing.assert_allclose(b.window_scores, a.window_scores, atol=1e-4)
    assert b.top(1)[0][0] == "dog"


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_setting(threads):
    model = Model(PLACEHOLDER.with_suffix(".tflite"), threads=threads)
    assert model.backend.threads == threads


def test_backend_choice_errors():
    with pytest.raises(BackendError, match="cannot run .onnx"):
        Model(PLACEHOLDER.with_suffix(".onnx"), backend="litert")
    with pytest.raises(BackendError, match="unknown backend"):
        Model(PLACEHOLDER.with_suffix(".onnx"), backend="tensorrt")
    if "tflite-runtime" not in available_backends():
        with pytest.raises(BackendError, match="not installed"):
            Model(PLACEHOLDER.with_suffix(".tflite"), backend="tflite-runtime")


def test_int8_edge_quantization_round_trip():
    from edgeaudio.quant import dequantize, quantize

    x = np.array([-100.0, -1.0, -0.26, 0.0, 0.24, 0.25, 1.0, 100.0], np.float32)
    q = quantize(x, 0.5, 3, np.int8)
    # round half to even, zero point added, saturated at the int8 range
    assert q.dtype == np.int8 and q.tolist() == [-128, 1, 2, 3, 3, 3, 5, 127]
    back = dequantize(q, 0.5, 3)
    assert back.dtype == np.float32
    inside = np.abs(x) < 60
    assert np.all(np.abs(back[inside] - x[inside]) <= 0.25)
    assert quantize(x, 1.0, 0, np.uint8).tolist()[:4] == [0, 0, 0, 0]
