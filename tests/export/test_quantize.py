"""Export pieces on their own: BatchNorm folding, calibration sets, the runtime's windows, clear
errors (unknown student, calibration folder without audio, a layer a converter refuses, an output
path that is not writable), quantization-aware fine-tuning, and int8 files for any network
(the placeholder log-mel CNN)."""
from __future__ import annotations

import os
import shutil

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch", reason="export needs torch")
pytest.importorskip("litert_torch", reason="export needs litert-torch")

from click.testing import CliRunner  # noqa: E402
from torch import nn  # noqa: E402

from edgeaudio import Model  # noqa: E402
from edgeaudio.cli import main  # noqa: E402
from edgeaudio.export.clips import (Clip, calibration_windows, labeled_windows,  # noqa: E402
                                    runtime_windows, unlabeled_clips)
from edgeaudio.export.errors import CalibrationError, ConversionError, ExportError  # noqa: E402
from edgeaudio.export.model_files import write_model_files  # noqa: E402
from edgeaudio.export.quantize import fold_batchnorm, qat_finetune  # noqa: E402
from edgeaudio.export.writers import prepare_output_dir, write_onnx, write_tflite  # noqa: E402
from edgeaudio.modelfile import ModelInfo  # noqa: E402
from edgeaudio.train.checkpoint import save_checkpoint  # noqa: E402
from edgeaudio.train.logmel_cnn import LogMelCNN  # noqa: E402
from edgeaudio.train.students import build_student  # noqa: E402

from ..conftest import PLACEHOLDER, REPO, esc50_clip, esc50_rows  # noqa: E402

torch.set_num_threads(1)


def with_trained_batchnorm(network, shape):
    """Every BatchNorm with non-trivial running statistics and affine parameters."""
    torch.manual_seed(1)
    for m in network.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    network.train()
    with torch.no_grad():
        for _ in range(3):
            network(torch.randn(*shape) * 3 - 5)
    return network.eval()


def placeholder_info() -> ModelInfo:
    return Model(PLACEHOLDER.with_suffix(".tflite")).info


# --- BatchNorm folding -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["tiny", "won2020", "logmel"])
def test_folding_is_exact_and_leaves_no_batchnorm(kind):
    if kind == "logmel":
        network, shape = LogMelCNN(64, 10), (4, 98, 64)
    else:
        network = build_student(kind, 10).network
        shape = (4, 49, network.n_bins)
    network = with_trained_batchnorm(network, shape)
    folded = fold_batchnorm(network)
    x = torch.randn(*shape) * 3 - 5
    with torch.no_grad():
        torch.testing.assert_close(folded(x), network(x), atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules()), \
        "the original network is left as it was"
    # the input normalisation became a per-channel 1x1 conv (won2020 also folds Linear-BN1d)
    first = folded.input_bn if kind != "logmel" else folded.input_norm
    assert isinstance(first, nn.Conv2d) and first.kernel_size == (1, 1) \
        and first.groups == first.in_channels


def test_a_batchnorm_that_follows_nothing_foldable_is_named():
    network = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.BatchNorm1d(8))
    with pytest.raises(ConversionError, match=r"layer '2' \(BatchNorm1d\)"):
        fold_batchnorm(network)


# --- calibration sets ------------------------------------------------------------------------

def test_calibration_folder_without_audio_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no audio here")
    (tmp_path / "sub").mkdir()
    with pytest.raises(CalibrationError, match="no audio files"):
        unlabeled_clips(tmp_path)
    with pytest.raises(CalibrationError, match="not found"):
        unlabeled_clips(tmp_path / "missing")


def test_calibration_windows_come_from_the_clips_and_skip_unreadable_ones(tmp_path, esc50):
    rows = [r for r in esc50_rows() if r["esc10"] == "True"][:3]
    for r in rows:
        shutil.copy(esc50_clip(r["filename"]), tmp_path / (r["filename"][:-4] + ".flac"))
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    info = placeholder_info()
    clips = unlabeled_clips(tmp_path)
    assert len(clips) == 4 and all(c.label is None for c in clips)
    x = calibration_windows(clips, info, n=7, seed=3)
    assert x.shape == (7, info.n_frames, info.frontend.n_bins) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= np.log(info.frontend.log_offset) - 1e-3
    # the same windows for the same seed
    np.testing.assert_array_equal(x, calibration_windows(clips, info, n=7, seed=3))
    with pytest.raises(CalibrationError, match="could be read"):
        calibration_windows([c for c in clips if c.path.name == "broken.wav"], info)


def test_runtime_windows_are_the_windows_model_classify_scores():
    model = Model(PLACEHOLDER.with_suffix(".onnx"))
    from edgeaudio.audio import load_audio

    wave = load_audio(REPO / "examples" / "dog.flac", model.sample_rate)
    windows = runtime_windows(model.info, wave)
    scores = np.mean([model.scores_for_window(w) for w in windows], axis=0)
    result = model.classify(REPO / "examples" / "dog.flac")
    assert result.frames == len(windows)
    np.testing.assert_allclose(result.scores, scores, atol=1e-6)


# --- clear errors ----------------------------------------------------------------------------

class Bessel(nn.Module):
    def forward(self, x):
        return torch.special.i0(x)


class Refused(nn.Module):
    """features -> logits with an op neither converter takes, deep inside a block."""

    def __init__(self, bins=64, classes=3):
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(bins, 8), Bessel())
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(self.blocks(x).mean(dim=1))


@pytest.mark.parametrize("writer", [write_tflite, write_onnx], ids=["tflite", "onnx"])
def test_a_refused_op_names_its_layer(tmp_path, writer):
    with pytest.raises(ConversionError) as err:
        writer(Refused(), placeholder_info(), tmp_path / "x.model")
    message = str(err.value)
    assert "layer 'blocks.1' (Bessel)" in message and "i0" in message
    assert "\n" not in message
    assert not list(tmp_path.iterdir()), "nothing half-written is left behind"


def test_an_output_path_that_is_not_writable_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        prepare_output_dir(blocker)
    with pytest.raises(ExportError, match="not writable"):
        prepare_output_dir(blocker / "models")
    assert prepare_output_dir(tmp_path / "new" / "models").is_dir()


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    student = build_student("tiny", 3)
    save_checkpoint(root / "checkpoint.pt", student_name="tiny", frontend_settings={},
                    labels=["a", "b", "c"], window_frames=49, model_state=student.state_dict(),
                    epoch=1, config={})
    return root


def export_cli(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_cli_unknown_student_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", student_name="huge", frontend_settings={},
                    labels=["a"], window_frames=49, model_state={}, epoch=1, config={})
    line = one_error_line(export_cli(tmp_path, "--out", tmp_path / "models"))
    assert "unknown student 'huge'" in line and "tiny" in line


def test_cli_calibration_folder_without_audio(untrained_run, tmp_path):
    (tmp_path / "empty").mkdir()
    line = one_error_line(export_cli(untrained_run, "--int8", "--calibration-data",
                                     tmp_path / "empty", "--out", tmp_path / "models"))
    assert "no audio files" in line and "empty" in line


def test_cli_int8_without_any_data_says_what_to_pass(untrained_run, tmp_path):
    line = one_error_line(export_cli(untrained_run, "--int8", "--out", tmp_path / "models"))
    assert "--calibration-data" in line and "--data" in line


def test_cli_output_path_not_writable_and_missing_checkpoint(untrained_run, tmp_path):
    (tmp_path / "file").write_text("x")
    line = one_error_line(export_cli(untrained_run, "--out", tmp_path / "file" / "models"))
    assert "not writable" in line
    line = one_error_line(export_cli(tmp_path / "nothing-here", "--out", tmp_path / "m"))
    assert "not found" in line


# --- QAT and int8 files for any network ------------------------------------------------------

def real_windows(info, esc50, n_clips=6, labels=None):
    rows = [r for r in esc50_rows() if r["esc10"] == "True"]
    labels = labels or sorted({r["category"] for r in rows})
    clips = [Clip(esc50_clip(r["filename"]), labels.index(r["category"]))
             for r in rows if r["category"] in labels][:: max(1, len(rows) // n_clips)][:n_clips]
    return clips


def test_qat_finetune_writes_an_int8_tflite_that_matches_its_torch_twin(tmp_path, esc50):
    torch.manual_seed(0)
    student = build_student("tiny", 3)
    network = with_trained_batchnorm(student.network, (4, 49, student.network.n_bins))
    info = ModelInfo(labels=["a", "b", "c"], frontend=student.frontend.frozen_spec(),
                     n_frames=49, name="qat-test")
    clips = [Clip(c.path, i % 3) for i, c in enumerate(real_windows(info, esc50, 6))]
    x, y = labeled_windows(clips, info, per_clip=2)
    tuned = qat_finetune(network, info, x, y, epochs=1, lr=1e-3, batch_size=4,
                         calibration=x)
    assert len(tuned.losses) == 1 and np.isfinite(tuned.losses[0])
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                   for m in tuned.network.modules())
    with torch.no_grad():
        before, after = fold_batchnorm(network)(torch.from_numpy(x)), tuned.network(
            torch.from_numpy(x))
        fake_quant = tuned.converted(torch.from_numpy(x[:1]))
    assert not torch.allclose(before, after), "fine-tuning moved the weights"
    files = write_model_files(network, info, tmp_path, formats=["tflite"], float_files=False,
                              int8=True, calibration=x, int8_network=tuned.network,
                              tflite_pt2e=(tuned.quantizer, tuned.converted))
    model = Model(files["model.int8.tflite"])
    got = model.backend.run(x[0])
    step = model.backend.out["quantization"][0]
    assert np.abs(got - fake_quant.numpy()[0]).max() <= 3.01 * step


def test_int8_files_for_the_placeholder_log_mel_cnn(tmp_path, esc50):
    """``write_model_files`` takes any network features -> logits plus a ModelInfo: the
    bundled placeholder ships int8 files made this way."""
    info = placeholder_info()
    torch.manual_seed(0)
    network = with_trained_batchnorm(LogMelCNN(info.frontend.n_bins, len(info.labels)),
                                     (4, info.n_frames, info.frontend.n_bins))
    clips = real_windows(info, esc50, 8, info.labels)
    calibration = calibration_windows(clips, info, n=16)
    files = write_model_files(network, info, tmp_path, float_files=False, int8=True,
                              calibration=calibration, stem="esc10-placeholder")
    assert sorted(files) == ["esc10-placeholder.int8.onnx", "esc10-placeholder.int8.tflite"]
    with torch.no_grad():
        expected = network(torch.from_numpy(calibration)).numpy()
    for path in files.values():
        model = Model(path)
        assert model.info.labels == info.labels and model.info.name == info.name
        got = np.stack([model.backend.run(w) for w in calibration])
        agree = np.mean(got.argmax(1) == expected.argmax(1))
        assert agree >= 0.9, (path.name, agree)
        assert np.abs(got - expected).max() < 0.1 * np.abs(expected).max() + 0.05


def test_qat_or_ptq_is_chosen_on_the_runs_validation_clips_not_the_reported_ones(tmp_path,
                                                                                  esc50):
    """A run with validation clips: export weighs QAT against PTQ on those clips, so the
    held-out clips the report scores take no part in which int8 files are written."""
    from edgeaudio.export.cli import export_checkpoint
    from edgeaudio.train.cache import EmbeddingCache
    from edgeaudio.train.loop import TrainConfig, train

    from ..conftest import esc50_csv

    data = esc50_csv(tmp_path, ["dog", "rain", "clock_tick"], train_per_class=8,
                     test_per_class=3)
    cfg = TrainConfig(data=str(data), fold=5, student="tiny", epochs=2, batch_size=4, lr=3e-3,
                      warmup_epochs=0, crop_seconds=1.0, mixup=0.0, specaugment=False, seed=0,
                      validation_fraction=0.25)
    metrics = train(cfg, tmp_path / "run", progress=False,
                    cache=EmbeddingCache(tmp_path / "cache"))
    n_validation = metrics["n_validation"]
    assert n_validation == 6
    result = export_checkpoint(tmp_path / "run", tmp_path / "models", formats=["tflite"],
                               calibration=16, qat_epochs=1, qat_threshold=-1e9, repeats=1,
                               tflm=False)
    q = result["report"]["quantization"]
    assert q["choice"]["on"] == f"{n_validation} validation clips"
    assert result["report"]["evaluation"]["clips"] == 9  # the report still scores fold 5
    assert q["method"] in ("PTQ", "QAT")
    # the choice followed the validation figures
    assert (q["method"] == "QAT") == (q["choice"]["qat_drop_points"]
                                      < q["choice"]["ptq_drop_points"])
