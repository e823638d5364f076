"""Export of the mn student family: a student trained one short epoch by the online
distillation loop on real ESC-50 clips, ``edgeaudio export``-ed to the four files, which
``edgeaudio info`` and ``classify`` read; the int8 TFLite is int8 from input to output (no
float islands: hardswish and residual adds quantized) and runs under TensorFlow Lite Micro.

One export is shared by the module (the conversions take tens of seconds)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch", reason="export needs torch")
pytest.importorskip("litert_torch", reason="export needs litert-torch")
pytest.importorskip("onnxruntime", reason="export needs onnxruntime")

from click.testing import CliRunner  # noqa: E402

from edgeaudio import Model  # noqa: E402
from edgeaudio.audio import load_audio  # noqa: E402
from edgeaudio.cli import main  # noqa: E402
from edgeaudio.export.clips import runtime_windows  # noqa: E402
from edgeaudio.train.mn_student import mn_frontend_spec  # noqa: E402

from ..conftest import REPO  # noqa: E402
from .mn_export_run import FILES, LABELS, train_and_export  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, esc50):
    return train_and_export(tmp_path_factory.mktemp("mn_export"), "mn01",
                            ["--calibration", "30", "--no-report"])


@pytest.mark.parametrize("name", FILES)
def test_info_reads_each_file_with_the_front_end_and_labels(exported, name):
    result = CliRunner().invoke(main, ["info", str(exported["out"] / name)])
    assert result.exit_code == 0, result.output
    assert "16000 Hz" in result.output and "128 bins" in result.output
    assert "dog, rain, rooster" in result.output
    info = Model(exported["out"] / name).info
    assert info.n_frames == exported["ckpt"]["window_frames"]
    assert info.provenance["student"] == "mn01"
    assert info.provenance["frontend"] == "the student's fixed filterbank, as trained"
    np.testing.assert_array_equal(info.frontend.filterbank_matrix(),
                                  mn_frontend_spec().filterbank_matrix())


def test_float_files_score_as_torch_does(exported):
    student = exported["student"]
    for name in ("model.onnx", "model.tflite"):
        model = Model(exported["out"] / name)
        wave = load_audio(exported["clips"][0], model.sample_rate)
        windows = runtime_windows(model.info, wave)
        with torch.no_grad():
            expected = torch.softmax(student(torch.from_numpy(windows)), -1).numpy()
        got = np.stack([model.scores_for_window(w) for w in windows])
        np.testing.assert_allclose(got, expected, atol=1e-3)


def test_int8_tflite_is_int8_from_input_to_output(exported):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(exported["out"] / "model.int8.tflite"))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    ops = interpreter._get_ops_details()
    float_ops = [op["op_name"] for op in ops
                 if any(tensors[i]["dtype"] == np.float32 for i in op["outputs"])]
    assert not float_ops
    assert {"HARD_SWISH", "DEPTHWISE_CONV_2D", "ADD"} <= {op["op_name"] for op in ops}


def test_int8_tflite_runs_under_tflm(exported):
    from edgeaudio.export.tflm import TFLMRunner, smallest_arena

    data = (exported["out"] / "model.int8.tflite").read_bytes()
    runner = TFLMRunner(data)
    model = Model(exported["out"] / "model.int8.tflite", backend="litert")
    window = runtime_windows(model.info, load_audio(exported["clips"][0], model.sample_rate))[0]
    out = runner.run(runner.quantize_input(model.frontend(window)))
    assert out.shape[-1] == len(LABELS) and smallest_arena(data) > 0


def test_classify_cli_works_with_the_int8_tflite(exported):
    proc = subprocess.run([sys.executable, "-m", "edgeaudio", "classify", "--model",
                           str(exported["out"] / "model.int8.tflite"), exported["clips"][0],
                           "--json"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["top"][0]["label"] in LABELS
