"""The firmware path against the Python runtime on real clips: a tiny student, trained briefly
on real ESC-50 clips and exported int8 (as ``edgeaudio export --int8`` writes it), goes through
gen_firmware.py; the C front end built from the generated header (float FFT, 16-bit PCM pushed
one hop at a time, as the board sketch does) feeds int8 features to TensorFlow Lite Micro
running the compiled model array in the smallest arena; its top-1 must be the reference's on
every held-out clip that kernel rounding cannot decide either way.

Training: 5 short epochs on 80 one-second crops (~7 s; the export round trip explains why not
1: the BatchNorm statistics must move, or the model names one class for every clip and agreement
proves nothing; ``test_the_model_tells_classes_apart`` guards that). The model file scores a
window every 0.5 s (its stream hop), so the 15 held-out clips make 150 windows. One model and
one check are shared by the module (~25 s in all).

Where the paths can part: TFLM runs the reference kernels (checked bit-exact with LiteRT's
``BUILTIN_REF`` here), the runtime LiteRT's optimized ones (XNNPACK), whose requantization
rounds differently layer after layer and by CPU (AVX2, AVX-512 and NEON take different code
paths: 7 int8 output steps apart on this student here). A clip whose scores are a near-tie
between two labels can flip on one CPU and not on another, so top-1 labels are judged only on
clips a bound of so many output steps on every logit cannot change (``decided_top1``): against
the reference path (numpy features through LiteRT's reference kernels, the same on every CPU)
within 2 steps, against the runtime within 16.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.conftest import REPO, esc50_csv  # noqa: E402

LABELS = ["dog", "rooster", "rain", "crying_baby", "clock_tick"]  # ESC-10 classes (CC BY)
TRAIN_PER_CLASS, TEST_PER_CLASS = 16, 3

if shutil.which("gcc") is None:
    pytest.skip("gcc not found: the check builds the C front end on the host",
                allow_module_level=True)
for module, why in (("tflite_micro", "the check runs TensorFlow Lite Micro (tflite-micro)"),
                    ("ai_edge_litert", "the runtime side runs LiteRT (ai-edge-litert)")):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed: {why}", allow_module_level=True)

from firmware_demo import gen_firmware, tflm_check  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory, esc50):
    """A tiny student, trained briefly and written as int8 TFLite the way export does."""
    torch = pytest.importorskip("torch", reason="training and exporting the student needs torch")
    pytest.importorskip("litert_torch", reason="the int8 export needs litert-torch")

    from edgeaudio.export.cli import model_info
    from edgeaudio.export.clips import Clip, calibration_windows
    from edgeaudio.export.quantize import quantize_tflite
    from edgeaudio.train.cache import EmbeddingCache
    from edgeaudio.train.checkpoint import load_student, resolve_checkpoint
    from edgeaudio.train.loop import TrainConfig, train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tflm_check")
    data = esc50_csv(root, LABELS, TRAIN_PER_CLASS, TEST_PER_CLASS)
    cfg = TrainConfig(data=str(data), fold=5, student="tiny", epochs=5, batch_size=4, lr=3e-3,
                      warmup_epochs=0, crop_seconds=1.0, mixup=0.0, specaugment=False, seed=0)
    run = root / "run"
    train(cfg, run, progress=False, cache=EmbeddingCache(root / "cache"))
    student, ckpt = load_student(run)
    info = model_info(student, ckpt, "tflm-check-tiny", resolve_checkpoint(run))
    info.stream["hop_seconds"] = 0.5  # a window every 0.5 s: half the windows of the default
    clips = list(csv.DictReader(open(data)))
    train_clips = [Clip(Path(r["path"])) for r in clips if r["fold"] != "5"]
    calibration = calibration_windows(train_clips, info, n=60)
    path = quantize_tflite(student.network.eval(), info, calibration,
                           root / "model.int8.tflite")
    return {"path": path, "test_clips": [r["path"] for r in clips if r["fold"] == "5"],
            "rain_clips": [r["path"] for r in clips if r["fold"] == "5" and r["label"] == "rain"],
            "root": root}


@pytest.fixture(scope="module")
def report(exported):
    return tflm_check.check(exported["path"], exported["test_clips"],
                            exported["root"] / "build")


def test_export_writes_int8_input_and_the_header_carries_its_quantization(exported, report):
    """What `edgeaudio export --int8` writes takes int8 features: the C front end's output."""
    from edgeaudio import Model

    backend = Model(exported["path"], backend="litert").backend
    assert backend.inp["dtype"] == np.int8 and backend.out["dtype"] == np.int8
    scale, zero_point = backend.inp["quantization"]
    assert report["input"] == "int8"
    assert report["input_scale"] == pytest.approx(scale)
    assert report["input_zero_point"] == zero_point
    header = (exported["root"] / "build" / "ea_model_data.h").read_text()
    assert "#define EA_INPUT_INT8 1" in header
    config = (exported["root"] / "build" / "ea_frontend_config.h").read_text()
    assert "EA_INPUT_SCALE" in config and f"EA_INPUT_ZERO_POINT {zero_point}" in config


def test_the_model_tells_classes_apart(report):
    predicted = {row["runtime"] for row in report["rows"]}
    assert len(predicted) >= 3, "agreement on a constant classifier would prove nothing"


def test_c_frontend_and_tflm_give_the_reference_top1_on_every_decided_clip(report):
    """Top-1 agreement judged where the margin exceeds the rounding bound (not on near-ties):
    the firmware against the reference path (bit-exact kernels by design, 2 output steps for
    TFLM's fully-connected rounding and the C front end's rare one-step features) and against
    the runtime (16 steps: the optimized kernels' drift on any CPU). Most clips must be
    decided by the reference, or agreement would prove little."""
    print("\n" + tflm_check.summary(report))
    assert report["clips"] == len(LABELS) * TEST_PER_CLASS
    assert all(row["pcm16"] for row in report["rows"])  # ESC-50 is 16-bit: the board's path
    assert report["reference_decided_clips"] >= report["clips"] // 2, report["rows"]
    assert report["passed"], [r for r in report["rows"] if not r["same_top1"]
                              or not r["same_top1_as_reference"]]
    # window by window, the same judgement (99 %: a window is one 1-s guess, not a clip)
    assert report["windows_decided_by_reference"] >= report["windows"] // 2
    assert report["windows_same_top1_as_reference_decided"] >= 0.99
    # the inputs themselves: the C front end's int8 features are the runtime's, or one step off
    assert report["int8_features_max_step_diff"] <= 1
    assert report["int8_features_equal_to_runtime"] >= 0.999
    assert report["windows_same_top1"] >= 0.85


def test_tflm_runs_the_c_inputs_as_litert_reference_kernels_do(report):
    """The firmware graph and kernels are the reference ones: a different top-1 could only
    come from the runtime's optimized kernels, not from the front end or the array. (TFLM's
    fully-connected kernel rounds its requantization differently now and then: one step.)"""
    assert report["tflm_bit_exact_with_litert_reference_kernels"] >= 0.95
    assert report["tflm_max_diff_vs_litert_reference_steps"] <= 1


def test_tflm_ran_in_the_smallest_arena_from_the_flashed_bytes(exported, report):
    assert report["arena_is_smallest"]
    header = (exported["root"] / "build" / "ea_model_data.h").read_text()
    assert f"#define EA_ARENA_MIN_BYTES {report['arena_bytes']}" in header
    # the array is the graph alone: the metadata (a stored 384-row filterbank) stays behind
    assert report["flash_model_bytes"] < report["file_bytes"]
    # tiny is a microcontroller-class student: its int8 graph is around 100 KB
    assert report["flash_model_bytes"] < 128 * 1024


def test_zero_points_shrink_and_tflm_gives_the_same_outputs(exported, report):
    """The array keeps one zero point per weight / bias tensor instead of one per channel
    (all 0: symmetric weights); TFLM reads element 0 for every channel, so the outputs are
    those of the whole graph, bit for bit."""
    from ai_edge_litert.tools import flatbuffer_utils

    from edgeaudio.export.tflm import TFLMRunner

    data = exported["path"].read_bytes()
    flash = gen_firmware.firmware_model_bytes(data)
    whole = gen_firmware.firmware_model_bytes(data, keep_zero_points=True)
    assert len(flash) == report["flash_model_bytes"] < len(whole) - 10_000
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flash))
    per_channel = [t.quantization for t in model.subgraphs[0].tensors
                   if t.quantization is not None and t.quantization.scale is not None
                   and len(t.quantization.scale) > 1]
    assert per_channel and all(len(q.zeroPoint) == 1 and q.zeroPoint[0] == 0
                               for q in per_channel)
    a = TFLMRunner(flash, report["arena_bytes"])
    b = TFLMRunner(whole, report["arena_bytes"] + 16 * 1024)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.integers(-128, 128, a.input_shape).astype(np.int8)
        np.testing.assert_array_equal(a.run_raw(x), b.run_raw(x))


def test_the_script_runs_end_to_end(exported, tmp_path):
    """On two rain clips: the class this model names with its widest margins (about 0.9), so
    both paths decide them on any CPU."""
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "firmware_demo.tflm_check",
                           str(exported["path"]), *exported["rain_clips"][:2], "--json",
                           str(out), "-q"], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PASS" in proc.stdout and "smallest TFLM arena" in proc.stdout
    saved = json.loads(out.read_text())
    assert saved["clips"] == 2 and saved["passed"]


def test_script_says_what_is_missing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "firmware_demo.tflm_check",
                           str(REPO / "tests/data/esc10-placeholder.onnx"),
                           str(REPO / "examples/dog.flac")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode != 0 and "needs a .tflite" in (proc.stderr + proc.stdout)


def test_a_float_input_model_gets_the_c_front_ends_float_features(tmp_path):
    """The committed placeholder takes float32 features: the check feeds it the C front end's
    float output (no int8 step), and TFLM still names what the runtime names."""
    report = tflm_check.check(REPO / "tests/data/esc10-placeholder.tflite",
                              [REPO / "examples/dog.flac"], tmp_path)
    assert report["input"] == "float32" and report["passed"]
    assert report["int8_features_equal_to_runtime"] is None
    assert report["max_score_diff"] < 1e-3
    assert report["tflm_max_diff_vs_litert_reference_steps"] is None
    assert report["tflm_max_abs_diff_vs_litert_reference"] < 1e-4
