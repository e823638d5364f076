"""Online distillation: the loss on hand-computable inputs, the teacher seeing the student's own
augmented batch, and the loop on the run scaffold (resume equivalence, the checkpoint that
load_student reads). A tiny real teacher (log band energies) keeps it to seconds."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.files import shared_dir  # noqa: E402
from edgeaudio.train.cache import EmbeddingCache  # noqa: E402
from edgeaudio.train.checkpoint import load_checkpoint, load_student  # noqa: E402
from edgeaudio.train.config import TrainError  # noqa: E402
from edgeaudio.train.distill import (DistillConfig, OnlineTeacher, distillation_loss,  # noqa: E402
                                     read_distill_config, train_distill)
from edgeaudio.train.mn_student import MNStudent  # noqa: E402
from edgeaudio.train.teachers.base import Teacher  # noqa: E402

from .test_loop import toy_csv  # noqa: E402,F401  (the fixture: 3 classes x 8 clips of 1 s)

MN04_WEIGHTS = shared_dir() / "weights" / "efficientat" / "mn04_as_mAP_432.pt"


class BandTeacher(Teacher):
    """A tiny real teacher: log energy in 4 frequency bands per 0.125 s frame; it tells the
    toy data's low tones, high tones and noise apart. Counts the samples it is shown."""

    name, sample_rate, hop_seconds, dim = "bands", 16000, 0.125, 4
    class_names: list = []
    _weights_hash = "bands-v1"

    def __init__(self):
        self.seen: list[np.ndarray] = []

    def embed(self, waveforms):
        out = []
        for w in waveforms:
            self.seen.append(np.asarray(w))
            hop = int(self.hop_seconds * self.sample_rate)
            frames = [w[i:i + hop] for i in range(0, max(1, len(w) - hop + 1), hop)]
            rows = []
            for f in frames:
                power = np.abs(np.fft.rfft(f)) ** 2
                rows.append(np.log(np.array([b.sum() for b in np.array_split(power, 4)]) + 1e-6))
            out.append(np.asarray(rows, np.float32))
        return out

    def predict(self, waveform):
        raise NotImplementedError


# --- the loss ----------------------------------------------------------------------------

def test_loss_is_weighted_t2_kl_plus_ce_on_hand_computed_values():
    # z / T = [ln 3, 0] -> student at T: [3/4, 1/4]; teacher at T: [1/2, 1/2]
    logits = torch.tensor([[2 * math.log(3.0), 0.0]])
    teacher = torch.tensor([[0.5, 0.5]])
    y0, y1 = torch.tensor([0]), torch.tensor([1])
    parts = distillation_loss(logits, teacher, y0, y0, 1.0, 0.98, 2.0)
    kd = 4 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))   # T^2 KL
    ce = math.log(10 / 9)                                                 # softmax(z) = [.9, .1]
    assert parts["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(0.98 * kd + 0.02 * ce, rel=1e-5)
    # mixup: lam CE(y_a) + (1 - lam) CE(y_b)
    mixed = distillation_loss(logits, teacher, y0, y1, 0.75, 0.98, 2.0)
    assert mixed["ce"].item() == pytest.approx(0.75 * ce + 0.25 * math.log(10), rel=1e-5)
    # the teacher agreeing with the student at T: no KD term
    same = distillation_loss(logits, torch.tensor([[0.75, 0.25]]), y0, y0, 1.0, 0.98, 2.0)
    assert same["kd"].item() == pytest.approx(0.0, abs=1e-6)
    alone = distillation_loss(logits, None, y0, y0, 1.0, 0.98, 2.0)
    assert alone["loss"].item() == pytest.approx(ce, rel=1e-5) and alone["kd"].item() == 0.0


# --- the loop ----------------------------------------------------------------------------

def config(csv_path, **kw):
    base = dict(data=str(csv_path), fold=2, student="mn01", init="random", teacher="bands",
                epochs=2, batch_size=4, steps_per_epoch=3, lr=3e-3, warmup_epochs=1,
                crop_seconds=0.64, seed=1, eval_every=1, con_reg=0.5)
    return DistillConfig(**{**base, **kw})


def run(cfg, out, tmp_path, teacher, **kw):
    torch.set_num_threads(1)
    return train_distill(cfg, out, progress=False, cache=EmbeddingCache(tmp_path / "cache"),
                         get_teacher=lambda name: teacher, **kw)


@pytest.mark.parametrize("init", ["random", "mn04"])
def test_resume_after_a_kill_reaches_the_uninterrupted_result(toy_csv, tmp_path,  # noqa: F811
                                                              init):
    if init == "mn04" and not MN04_WEIGHTS.exists():
        pytest.skip("mn04 weights not in the shared folder")
    cfg = config(toy_csv, init=init)
    full = run(cfg, tmp_path / "full", tmp_path, BandTeacher())
    stopped = run(cfg, tmp_path / "killed", tmp_path, BandTeacher(), stop_after_epoch=1)
    assert stopped == {"stopped_after_epoch": 1}
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed = run(cfg, tmp_path / "killed", tmp_path, BandTeacher(), resume=True)
    a, b = (load_checkpoint(tmp_path / r) for r in ("full", "killed"))
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    for key, value in a["train_state"]["aux"]["reg"].items():
        assert torch.equal(value, b["train_state"]["aux"]["reg"][key]), key
    timing = ("seconds", "cpu_seconds")
    strip = lambda h: [{k: v for k, v in e.items() if k not in timing} for e in h]  # noqa: E731
    assert strip(full["history"]) == strip(resumed["history"])
    assert full["accuracy"] == resumed["accuracy"] and full["confusion"] == resumed["confusion"]
    last = full["history"][-1]
    assert last["kd"] > 0 and last["con"] > 0 and last["ce"] > 0
    assert full["kd"]["source"].startswith("linear probes")
    if init == "mn04":
        kept = json.loads((tmp_path / "full" / "inherited_channels.json").read_text())
        assert len(kept["stream"][0]) == 8


def is_slice_of(crop: np.ndarray, clips: list) -> bool:
    for clip in clips:
        for offset in np.flatnonzero(clip == crop[0]):
            if np.array_equal(clip[offset:offset + len(crop)], crop):
                return True
    return False


@pytest.mark.parametrize("mixup", [0.0, 0.4])
def test_the_teacher_sees_each_steps_crops_online(toy_csv, tmp_path, mixup):  # noqa: F811
    teacher = BandTeacher()
    run(config(toy_csv, epochs=1, mixup=mixup, gain_db=0.0), tmp_path / "r", tmp_path, teacher)
    clips = [w for w in teacher.seen if len(w) == 16000]   # the probes' clean clips, once
    online = [w for w in teacher.seen if len(w) == int(0.64 * 16000)]
    assert len(clips) == 24 and len(online) == 3 * 4      # every crop of every step
    # without mixup each is a crop of a clip; with it, mixtures no clip holds (a row that
    # the batch permutation maps to itself stays a plain crop)
    plain = sum(is_slice_of(w, clips) for w in online)
    assert plain == len(online) if mixup == 0.0 else plain < len(online) // 2


def test_shifted_crops_reach_past_the_clips_ends_as_the_teacher_sees_them(toy_csv,  # noqa: F811
                                                                         tmp_path):
    teacher = BandTeacher()
    run(config(toy_csv, epochs=1, mixup=0.0, gain_db=0.0, shift_seconds=0.5), tmp_path / "r",
        tmp_path, teacher)
    clips = [w for w in teacher.seen if len(w) == 16000]
    online = [w for w in teacher.seen if len(w) == int(0.64 * 16000)]
    # a 0.64-s crop of a 1-s clip never holds 50 ms of digital silence unless it was moved
    # past the clip's start or end; what it holds of the clip is still the clip's own audio
    edge = 800
    moved = [w for w in online if not w[:edge].any() or not w[-edge:].any()]
    assert 0 < len(moved) < len(online)
    for w in moved:
        kept = np.trim_zeros(w)
        assert len(kept) < len(w) and is_slice_of(kept, clips)


def test_the_checkpoint_is_a_student_checkpoint(toy_csv, tmp_path):  # noqa: F811
    metrics = run(config(toy_csv, epochs=1, con_reg=0.0), tmp_path / "r", tmp_path,
                  BandTeacher())
    student, ckpt = load_student(tmp_path / "r")
    assert isinstance(student, MNStudent) and ckpt["student"] == "mn01"
    assert ckpt["labels"] == ["high", "low", "noise"]
    assert ckpt["window_frames"] == student.frontend.spec.n_frames(int(0.64 * 16000))
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"] and saved["n_test"] == 12
    assert saved["params"] == sum(p.numel() for p in student.network.parameters())
    assert saved["macs_per_second"]["network"] > 0


def test_a_background_class_and_validation_clips_that_export_sees_too(toy_csv, tmp_path,  # noqa: F811
                                                                   monkeypatch):
    from edgeaudio.export.cli import plan_data
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(tmp_path / "cache"))  # the quiet clips it makes
    cfg = config(toy_csv, epochs=1, con_reg=0.0, background=["silence"],
                 validation_fraction=0.25)
    metrics = run(cfg, tmp_path / "r", tmp_path, BandTeacher())
    assert metrics["labels"] == ["high", "low", "noise", "background"]
    # each fold: 12 clips + half of the 8 quiet ones; a quarter of each training class held out
    assert (metrics["n_train"], metrics["n_validation"], metrics["n_test"]) == (12, 4, 16)
    assert "val_acc" in metrics["history"][-1] and "test_acc" in metrics["history"][-1]
    assert metrics["validation_accuracy"] == metrics["history"][-1]["val_acc"]
    assert metrics["selected_epoch"] == 1
    plan = plan_data(metrics["labels"], metrics["config"])
    assert (len(plan.train), len(plan.validation), len(plan.test)) == (
        metrics["n_train"], metrics["n_validation"], metrics["n_test"])
    # calibration and QAT draw from plan.train: never the clips that choose the threshold
    assert not {c.path for c in plan.train} & {c.path for c in plan.validation}
    # without validation settings every training clip trains, as the ESC-50 rows did
    plain = run(config(toy_csv, epochs=1, con_reg=0.0), tmp_path / "p", tmp_path, BandTeacher())
    assert plain["n_validation"] == 0 and plain["n_train"] == 12
    assert plan_data(plain["labels"], plain["config"]).validation == []


def test_settings_are_checked_and_a_run_is_never_overwritten(toy_csv, tmp_path):  # noqa: F811
    with pytest.raises(TrainError, match="init mn04 needs an mn student"):
        config(toy_csv, student="tiny", init="mn04").validate()
    with pytest.raises(TrainError, match="con_reg needs a teacher"):
        config(toy_csv, teacher="").validate()
    plain = config(toy_csv, epochs=1, teacher="", con_reg=0.0)
    assert run(plain, tmp_path / "r", tmp_path, BandTeacher())["kd"] is None
    with pytest.raises(TrainError, match="already holds a run"):
        run(plain, tmp_path / "r", tmp_path, BandTeacher())


def test_fitted_teacher_heads_are_used_when_its_classes_are_the_runs(toy_csv):  # noqa: F811
    # a registry teacher gets probes; kd_head_for (tested in test_teacher_registry) returns
    # the fitted heads only for a fitted folder with the run's labels
    teacher = OnlineTeacher("bands", ["high", "low", "noise"], 16000, lambda n: BandTeacher())
    assert teacher.head is None and teacher.dim == 4


def test_config_file_keys_are_the_settings(tmp_path):
    path = tmp_path / "row.toml"
    path.write_text('description = "x"\nstudent = "mn02"\nkd_weight = 0.9\n')
    cfg = read_distill_config(path, data="d", fold=1)
    assert (cfg.student, cfg.kd_weight, cfg.fold, cfg.kd_temperature) == ("mn02", 0.9, 1, 2.0)
    path.write_text("kd_wieght = 0.9\n")
    with pytest.raises(Exception, match="unknown setting"):
        read_distill_config(path, data="d")
