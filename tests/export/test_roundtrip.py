"""The export round trip on real clips: train a tiny student briefly with the real training
loop, ``edgeaudio export`` it to all four files, load each through each backend of the runtime
and compare with the torch network (a different front end implementation: torch's, not numpy's).

Training is 3 short epochs (80 one-second crops each, ~3 s), not 1: after a single epoch of 10-20
steps the BatchNorm running statistics are still near their initial values and the eval-mode
network names the same class for every clip, which would make "top-1 agreement" trivially true.
``test_the_tiny_model_tells_classes_apart`` guards that.

One export is shared by the module (conversions take seconds each).
"""
from __future__ import annotations

import csv
import json
import os
import re
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
from edgeaudio.backends import BACKENDS_FOR_FORMAT, backend_available  # noqa: E402
from edgeaudio.cli import main  # noqa: E402
from edgeaudio.export.clips import runtime_windows  # noqa: E402
from edgeaudio.export.report import JSON_NAME, MARKDOWN_NAME, decided_top1  # noqa: E402
from edgeaudio.train.checkpoint import load_student  # noqa: E402

from ..conftest import REPO, esc50_csv  # noqa: E402

torch.set_num_threads(1)

LABELS = ["dog", "rooster", "rain", "crying_baby", "clock_tick"]  # ESC-10 classes (CC BY)
FILES = ["model.onnx", "model.int8.onnx", "model.tflite", "model.int8.tflite"]
# How far a file's logits may be from torch's before a top-1 is judged (see
# test_files_give_torchs_top1_on_every_clip_rounding_cannot_flip): float32 graphs are within
# 1e-5 of torch; int8 ones within a few output steps (median 2.5, 95 % within 8.5 here), and
# their kernels round by CPU (onnxruntime and XNNPACK take other paths on AVX2 / AVX-512 / NEON).
FLOAT_BOUND = 1e-3
INT8_BOUND_STEPS = 4


@pytest.fixture(scope="module")
def exported(tmp_path_factory, esc50):
    from edgeaudio.train.cache import EmbeddingCache
    from edgeaudio.train.loop import TrainConfig, train

    root = tmp_path_factory.mktemp("roundtrip")
    data = esc50_csv(root, LABELS, train_per_class=16, test_per_class=4)
    cfg = TrainConfig(data=str(data), fold=5, student="tiny", epochs=3, batch_size=4, lr=3e-3,
                      warmup_epochs=0, crop_seconds=1.0, mixup=0.0, specaugment=False, seed=0)
    run = root / "run"
    train(cfg, run, progress=False, cache=EmbeddingCache(root / "cache"))
    out = root / "models"
    # as a user runs it: a process of its own, its terminal output as it would appear
    proc = subprocess.run([sys.executable, "-m", "edgeaudio", "export", str(run), "--format",
                           "onnx", "--format", "tflite", "--int8", "--calibration", "100",
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    student, ckpt = load_student(run)
    report = json.loads((out / JSON_NAME).read_text())
    test_clips = [r for r in csv.DictReader(open(data)) if r["fold"] == "5"]
    return {"run": run, "out": out, "student": student, "ckpt": ckpt, "report": report,
            "stdout": proc.stdout, "stderr": proc.stderr, "test_clips": test_clips}


def test_export_keeps_third_party_noise_out_of_the_terminal(exported):
    """The converters' own messages (torchvision, torchao and Triton notices, absl log lines,
    "converted in training mode") go to export.log in the output folder; the terminal shows
    what edgeaudio did, the files it wrote and the parity report."""
    err = exported["stderr"]
    noise = re.compile(r"torchvision|torchao|triton|training mode|absl|^[IWEF]\d{4} ",
                       re.IGNORECASE | re.MULTILINE)
    assert not noise.search(err), noise.findall(err)
    assert (exported["out"] / "export.log").is_file()
    assert "wrote model.onnx, model.int8.onnx, model.tflite, model.int8.tflite" in err
    assert "top-1 = torch" in err and "TensorFlow Lite Micro" in err


def torch_clip_scores(student, info, path):
    """Clip scores the way the runtime computes them, but with the torch front end."""
    wave = load_audio(path, info.sample_rate)
    windows = runtime_windows(info, wave)
    with torch.no_grad():
        logits = student(torch.from_numpy(windows))
    return torch.softmax(logits, -1).mean(0).numpy()


def test_export_writes_the_four_documented_files_and_both_reports(exported):
    out = exported["out"]
    for name in FILES + [JSON_NAME, MARKDOWN_NAME]:
        assert (out / name).is_file(), name
    printed = exported["stdout"].split()
    assert [p for p in printed if p.endswith((".onnx", ".tflite"))] == [str(out / n)
                                                                         for n in FILES]
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


@pytest.mark.parametrize("name", FILES)
def test_each_file_runs_through_each_backend_and_describes_itself(exported, name):
    path = exported["out"] / name
    student, ckpt = exported["student"], exported["ckpt"]
    frozen = student.frontend.frozen_spec()
    fmt = path.suffix[1:]
    backends = [b for b in BACKENDS_FOR_FORMAT[fmt] if backend_available(b)]
    assert backends
    clip = exported["test_clips"][0]["path"]
    for backend in backends:
        model = Model(path, backend=backend)
        info = model.info
        assert info.labels == ckpt["labels"] and info.n_frames == ckpt["window_frames"]
        assert info.provenance["student"] == "tiny"
        # the learnable front end travels frozen in the file
        np.testing.assert_array_equal(info.frontend.filterbank_matrix(),
                                      frozen.filterbank_matrix())
        result = model.classify(clip)
        assert result.scores.shape == (len(LABELS),) and abs(result.scores.sum() - 1) < 1e-4


def test_the_tiny_model_tells_classes_apart(exported):
    student, clips = exported["student"], exported["test_clips"]
    info = Model(exported["out"] / FILES[0]).info
    predicted = {int(np.argmax(torch_clip_scores(student, info, c["path"]))) for c in clips}
    assert len(predicted) >= 3, "agreement on a constant classifier would prove nothing"


def int8_output_scale(path) -> float:
    """The scale of an int8 file's output: the TFLite output tensor's, or that of the ONNX
    DequantizeLinear the output comes from."""
    if path.suffix == ".tflite":
        return float(Model(path, backend="litert").backend.out["quantization"][0])
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    constants = {init.name: init for init in graph.initializer}
    node = producer[graph.output[0].name]
    while node.op_type != "DequantizeLinear":  # through reshapes and the like
        node = producer[node.input[0]]
    return float(numpy_helper.to_array(constants[node.input[1]]))


def test_files_give_torchs_top1_on_every_clip_rounding_cannot_flip(exported):
    """Independent of the report's code: each file through the runtime (numpy front end)
    against the torch student (torch front end) on the same windows.

    Top-1 agreement is judged where torch's margin exceeds the rounding bound, not on
    near-ties: a clip counts when no error of up to FLOAT_BOUND (float files) or
    INT8_BOUND_STEPS output steps of the file's int8 output scale (int8 files) on every logit
    of every window could change torch's top-1 (``decided_top1``). On those clips every file
    must name torch's label; and a quarter of the clips at least must count, or agreement would
    prove little."""
    student, clips = exported["student"], exported["test_clips"]
    info = Model(exported["out"] / FILES[0]).info
    frontend = Model(exported["out"] / FILES[0]).frontend
    windows = [runtime_windows(info, load_audio(c["path"], info.sample_rate)) for c in clips]
    with torch.no_grad():
        torch_logits = [student(torch.from_numpy(w)).numpy() for w in windows]
    features = [np.stack([frontend(w) for w in clip]) for clip in windows]
    judged = {}
    for name in FILES:
        model = Model(exported["out"] / name)
        scores = [np.mean([model.scores_for_features(w) for w in f], axis=0) for f in features]
        # the same as the whole path Model.classify takes
        np.testing.assert_allclose(model.classify(clips[0]["path"]).scores, scores[0],
                                   atol=1e-6)
        bound = (INT8_BOUND_STEPS * int8_output_scale(exported["out"] / name) if ".int8." in name
                 else FLOAT_BOUND)
        decided = [decided_top1(t, info.output_activation, info.clip_pooling, bound)
                   for t in torch_logits]
        judged[name] = [(clip["path"], top, int(np.argmax(s)))
                        for clip, top, s in zip(clips, decided, scores) if top is not None]
        assert len(judged[name]) >= len(clips) // 4, (name, len(judged[name]))
    disagree = {name: [j for j in rows if j[1] != j[2]] for name, rows in judged.items()}
    assert not any(disagree.values()), disagree


def test_int8_tflite_has_int8_input_and_output_with_scale_and_zero_point(exported):
    model = Model(exported["out"] / "model.int8.tflite", backend="litert")
    inp, out = model.backend.inp, model.backend.out
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    q = model.info.extra["quantization"]
    assert q["input_scale"] == pytest.approx(inp["quantization"][0])
    assert q["input_zero_point"] == inp["quantization"][1]
    # log features of real audio fit the int8 range the calibration chose
    lo = (-128 - q["input_zero_point"]) * q["input_scale"]
    hi = (127 - q["input_zero_point"]) * q["input_scale"]
    assert lo < -5 and hi > 0
    onnx_model = Model(exported["out"] / "model.int8.onnx")
    assert onnx_model.info.extra["quantization"]["calibration_windows"] == 100


def test_tflite_files_leave_tensors_unnamed_but_keep_their_inputs_and_outputs(exported):
    from ai_edge_litert.tools import flatbuffer_utils
    for name in ("model.tflite", "model.int8.tflite"):
        graph = flatbuffer_utils.read_model(str(exported["out"] / name)).subgraphs[0]
        io = {int(i) for i in graph.inputs} | {int(i) for i in graph.outputs}
        names = [t.name.decode() if t.name else "" for t in graph.tensors]
        assert all(n == "" for i, n in enumerate(names) if i not in io), name
        assert all(len(names[i]) > 0 for i in io)


def test_report_has_sizes_macs_accuracy_agreement_and_latency(exported):
    report = exported["report"]
    assert report["model"]["params"] == sum(
        p.numel() for p in exported["student"].network.parameters())
    assert report["model"]["macs_per_audio_second"]["network"] > 1e5
    assert report["evaluation"]["clips"] == len(exported["test_clips"])
    assert 0.0 <= report["torch_float"]["accuracy"] <= 1.0
    rows = {f["file"]: f for f in report["files"]}
    assert sorted(rows) == sorted(FILES)
    for name, row in rows.items():
        assert row["bytes"] == (exported["out"] / name).stat().st_size > row["graph_bytes"]
        for b in row["backends"]:
            assert {"accuracy", "agreement_clips", "agreement_windows",
                    "model_ms_per_window", "model_ms_per_audio_second"} <= set(b)
            assert b["model_ms_per_audio_second"] == pytest.approx(
                b["model_ms_per_window"] / report["model"]["hop_seconds"])
            if not row["int8"]:
                assert b["agreement_clips"] == 1.0
    # int8 weights are a quarter of float ones; names and per-channel scales stay
    assert rows["model.int8.tflite"]["graph_bytes"] < 0.6 * rows["model.tflite"]["graph_bytes"]
    assert rows["model.int8.onnx"]["graph_bytes"] < 0.6 * rows["model.onnx"]["graph_bytes"]
    md = (exported["out"] / MARKDOWN_NAME).read_text()
    for name in FILES:
        assert name in md
    assert "parameters" in md and "MACs per second of audio" in md


def test_int8_tflite_runs_under_tflm_bit_exact_with_litert_reference_kernels(exported):
    from edgeaudio.export.tflm import (LiteRTReference, TFLMRunner, fits, smallest_arena,
                                       strip_metadata)

    tflm = exported["report"]["files"][FILES.index("model.int8.tflite")]["tflm"]
    assert tflm["agreement_clips"] >= 0.95 and tflm["agreement_reference"] == "litert"
    # TFLM runs the graph as LiteRT's reference kernels do (LiteRT's default optimized kernels
    # round differently: a few int8 steps after 20 layers, enough to flip near-ties); TFLM's
    # fully-connected kernel rounds its requantization differently now and then: one step
    assert tflm["bit_exact_with_litert_reference_kernels"] >= 0.95
    assert tflm["max_diff_vs_litert_reference_steps"] <= 1
    assert tflm["bit_exact_windows_checked"] >= 100
    assert tflm["agreement_windows_reference_kernels"] >= 0.95
    assert tflm["agreement_clips_reference_kernels"] >= 0.95
    data = (exported["out"] / "model.int8.tflite").read_bytes()
    arena = smallest_arena(data)
    assert arena == tflm["arena_bytes"] and fits(strip_metadata(data), arena)
    assert not fits(strip_metadata(data), arena - 1024)
    runner, reference = TFLMRunner(data), LiteRTReference(data)
    model = Model(exported["out"] / "model.int8.tflite", backend="litert")
    for clip in exported["test_clips"][:3]:
        wave = load_audio(clip["path"], model.sample_rate)
        for window in runtime_windows(model.info, wave)[:2]:
            x = runner.quantize_input(model.frontend(window))
            a, b = runner.run_raw(x).astype(int), reference.run_raw(x).astype(int)
            assert np.abs(a - b).max() <= 1


def test_classify_cli_just_works_with_the_int8_tflite(exported):
    clip = exported["test_clips"][0]["path"]
    proc = subprocess.run([sys.executable, "-m", "edgeaudio", "classify", "--model",
                           str(exported["out"] / "model.int8.tflite"), clip, "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["top"][0]["label"] in LABELS


def test_window_option_exports_a_shorter_window_the_runtime_uses(exported, tmp_path):
    """The students pool time globally, so the files may take a window shorter than the
    training crop; the metadata says so and the runtime frames audio by it."""
    out = tmp_path / "short"
    result = CliRunner().invoke(main, ["export", str(exported["run"]), "-f", "onnx",
                                       "--window", "0.5", "--no-report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = Model(out / "model.onnx")
    assert model.info.n_frames < exported["ckpt"]["window_frames"]
    # the nearest window the frame grid allows: within half a front-end hop of what was asked
    assert abs(model.info.window_seconds - 0.5) <= model.info.frontend.hop_length / 2 / 16000
    clip = exported["test_clips"][0]["path"]
    wave = load_audio(clip, model.sample_rate)
    windows = runtime_windows(model.info, wave)
    with torch.no_grad():
        expected = torch.softmax(exported["student"](torch.from_numpy(windows)), -1).mean(0)
    assert np.argmax(model.classify(clip).scores) == int(expected.argmax())


def test_window_shorter_than_the_student_allows_is_a_clear_error(exported, tmp_path):
    result = CliRunner().invoke(main, ["export", str(exported["run"]), "-f", "onnx",
                                       "--window", "0.05", "--no-report",
                                       "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert "needs at least" in result.output


def test_the_files_carry_streaming_defaults_from_the_run(exported):
    """Smoothing and patience from the run's clip length (5-s ESC-50 clips at a 0.25-s hop:
    3 and 2), the threshold chosen on the run's validation clips through the int8 file, the
    same in every file, and the choice in the report."""
    stream = exported["report"]["stream"]
    tuning = stream["threshold_tuning"]
    assert stream["event_seconds"] == pytest.approx(5.0, abs=0.05)
    assert tuning["events"] == 5 * 2  # 10 % of 16 training clips a class: 2 each
    assert tuning["threshold"] in [row["threshold"] for row in tuning["candidates"]]
    for name in FILES:
        info = Model(exported["out"] / name).info
        assert (info.stream["smooth"], info.stream["patience"]) == (3, 2), name
        assert info.stream["threshold"] == tuning["threshold"], name
    assert f"stream threshold {tuning['threshold']:g}" in exported["stderr"]
