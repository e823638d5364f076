"""The training loop on tiny synthetic data: resume equivalence, the checkpoint contract,
outputs, cross-validation, evaluation, baselines. Fake teachers keep it to seconds."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.train.cache import EmbeddingCache  # noqa: E402
from edgeaudio.train.checkpoint import load_checkpoint, load_student  # noqa: E402
from edgeaudio.train.augment import spec_augment  # noqa: E402
from edgeaudio.train.config import TrainConfig, TrainError  # noqa: E402
from edgeaudio.train.evaluation import evaluate_run  # noqa: E402
from edgeaudio.train.loop import train, train_cv  # noqa: E402
from edgeaudio.train.schedule import lr_factor  # noqa: E402

from .test_cache import FakeTeacher  # noqa: E402

SR = 16000


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory):
    """3 classes (low tone, high tone, noise) x 8 clips of 1 s, folds 1/2 alternating."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    rows = []
    t = np.arange(SR) / SR
    for c, name in enumerate(["low", "high", "noise"]):
        for i in range(8):
            if name == "noise":
                x = rng.normal(0, 0.1, SR)
            else:
                f = (200 if name == "low" else 2000) * (1 + 0.05 * i)
                x = 0.3 * np.sin(2 * np.pi * f * t) + rng.normal(0, 0.01, SR)
            path = root / f"{name}{i}.wav"
            sf.write(path, x.astype(np.float32), SR)
            rows.append((path.name, name, i % 2 + 1))
    with open(root / "labels.csv", "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["path", "label", "fold"])
        w.writerows(rows)
    return root / "labels.csv"


@pytest.fixture
def fakes():
    made = {"yamnet": FakeTeacher("yamnet", dim=6, hop=0.25),
            "efficientat": FakeTeacher("efficientat", dim=5, hop=0.125)}
    return lambda name: made[name]


def toy_config(csv_path, **kw):
    # the fake teachers know nothing of the toy sounds: kept, so the KD path is exercised
    base = dict(data=str(csv_path), fold=2, student="tiny", epochs=2, batch_size=4, lr=3e-3,
                warmup_epochs=1, crop_seconds=0.8, seed=1, keep_teachers=True)
    return TrainConfig(**{**base, **kw})


def run(cfg, out, tmp_path, fakes, **kw):
    torch.set_num_threads(1)
    return train(cfg, out, progress=False, cache=EmbeddingCache(tmp_path / "cache"),
                 get_teacher=fakes, **kw)


@pytest.mark.parametrize("mixtures", [0, 2])
def test_resume_after_a_kill_reaches_the_uninterrupted_result(toy_csv, tmp_path, fakes,
                                                              mixtures):
    cfg = toy_config(toy_csv, teachers=["yamnet", "efficientat"], reg="con", kd=0.5,
                     kd_teachers=["efficientat"], kd_mixtures=mixtures)
    full = run(cfg, tmp_path / "full", tmp_path, fakes)
    stopped = run(cfg, tmp_path / "killed", tmp_path, fakes, stop_after_epoch=1)
    assert stopped == {"stopped_after_epoch": 1}
    assert load_checkpoint(tmp_path / "killed")["epoch"] == 1
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed = run(cfg, tmp_path / "killed", tmp_path, fakes, resume=True)

    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    for name, state in a["train_state"]["aux"].items():
        for key, value in state.items():
            assert torch.equal(value, b["train_state"]["aux"][name][key]), (name, key)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(full["history"]) == strip(resumed["history"])
    assert full["accuracy"] == resumed["accuracy"]
    assert full["confusion"] == resumed["confusion"]
    assert full["history"][-1]["reg"] > 0 and full["history"][-1]["kd"] > 0


def test_a_run_folder_holds_the_checkpoint_contract_and_the_reports(toy_csv, tmp_path, fakes):
    cfg = toy_config(toy_csv, teachers=["yamnet"], reg="dis", epochs=1)
    metrics = run(cfg, tmp_path / "r", tmp_path, fakes)
    out = tmp_path / "r"
    for name in ("checkpoint.pt", "metrics.json", "curves.png", "confusion.png",
                 "data_report.json", "train.log"):
        assert (out / name).exists(), name
    student, ckpt = load_student(out)
    assert ckpt["labels"] == ["high", "low", "noise"] and ckpt["student"] == "tiny"
    assert ckpt["window_frames"] == student.frontend.spec.n_frames(int(0.8 * SR))
    assert set(ckpt["frontend_settings"]) >= {"sample_rate", "n_fft", "hop_length"}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"] and saved["n_test"] == 12
    assert saved["params"] == sum(p.numel() for p in student.network.parameters())
    assert saved["macs_per_second"]["network"] > 0 and saved["train_seconds"] > 0
    assert set(saved["per_class"]) == {"high", "low", "noise"}
    assert saved["teachers"]["teachers"] == ["yamnet"] and saved["reg"] == "dis"
    assert saved["alpha"] == 1.0
    report = json.loads((out / "data_report.json").read_text())
    # 10 % of the training clips of every class (at least one) validate, the test fold is 2
    assert report["train_items"] == 9 and report["validation_items"] == 3
    assert report["test_items"] == 12 and report["splits"]["test"] == "fold 2"
    assert report["cache"]["miss"] == 24
    # the same teacher again: all from the cache
    run(cfg, tmp_path / "r2", tmp_path, fakes)
    assert json.loads((tmp_path / "r2" / "data_report.json").read_text())["cache"]["hit"] == 24
    # evaluate reproduces the held-out figures from the checkpoint
    evaluation = evaluate_run(out, progress=False)
    assert evaluation["accuracy"] == metrics["accuracy"]
    assert (out / "evaluation.json").exists() and (out / "evaluation_confusion.png").exists()


def test_resume_and_overwrite_guards(toy_csv, tmp_path, fakes):
    cfg = toy_config(toy_csv, epochs=2)
    with pytest.raises(TrainError, match="no checkpoint"):
        run(cfg, tmp_path / "none", tmp_path, fakes, resume=True)
    run(cfg, tmp_path / "r", tmp_path, fakes, stop_after_epoch=1)
    with pytest.raises(TrainError, match="already holds a run"):
        run(cfg, tmp_path / "r", tmp_path, fakes)
    changed = toy_config(toy_csv, epochs=2, lr=1e-2)
    with pytest.raises(TrainError, match=r"lr \(0.003 -> 0.01\)"):
        run(changed, tmp_path / "r", tmp_path, fakes, resume=True)
    with pytest.raises(TrainError, match="needs at least one --teacher"):
        run(toy_config(toy_csv, reg="con"), tmp_path / "x", tmp_path, fakes)


def test_cross_validation_writes_mean_and_per_fold_figures(toy_csv, tmp_path, fakes):
    torch.set_num_threads(1)
    cfg = toy_config(toy_csv, epochs=1)
    summary = train_cv(cfg, [1, 2], tmp_path / "cv", progress=False,
                       cache=EmbeddingCache(tmp_path / "cache"), get_teacher=fakes)
    assert summary["folds"] == [1, 2]
    accs = [json.loads((tmp_path / "cv" / f"fold{k}" / "metrics.json").read_text())["accuracy"]
            for k in (1, 2)]
    assert summary["accuracy_mean"] == pytest.approx(np.mean(accs))
    assert (tmp_path / "cv" / "cv.png").exists() and (tmp_path / "cv" / "cv_metrics.json").exists()
    from click.testing import CliRunner
    from edgeaudio.cli import main
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "cv"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["accuracy_mean"] == pytest.approx(np.mean(accs))


@pytest.mark.parametrize("method", ["film", "feature-only"])
def test_fusion_baselines_train_and_say_they_need_the_teacher(toy_csv, tmp_path, fakes, method):
    cfg = toy_config(toy_csv, teachers=["yamnet"], method=method, epochs=1)
    metrics = run(cfg, tmp_path / method, tmp_path, fakes)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "teacher at inference" in metrics["note"]
    with pytest.raises(TrainError, match="needs the teacher at inference"):
        evaluate_run(tmp_path / method, progress=False)


def test_schedule_warms_up_then_decays_to_zero():
    values = [lr_factor(s, 10, 5, 1) for s in range(50)]
    assert values[0] < values[5] < values[9] <= 1.0
    assert values[10] == pytest.approx(1.0, abs=0.01) and values[-1] < 0.01
    assert all(a >= b for a, b in zip(values[10:], values[11:]))


def test_spec_augment_masks_whole_semitones_across_harmonics():
    cfg = TrainConfig(data="", time_masks=0, freq_masks=1, freq_mask_bins=3)
    feats = torch.arange(2 * 5 * 12, dtype=torch.float32).reshape(2, 5, 12)  # 3 harmonics x 4
    out = spec_augment(feats, np.random.default_rng(0), cfg, n_harmonics=3)
    changed = (out != feats)[0, 0].reshape(3, 4)
    assert torch.equal(changed[0], changed[1]) and torch.equal(changed[1], changed[2])
    assert changed[0].sum() <= 3


def test_training_features_equal_the_students_front_end():
    from edgeaudio.train.modules import training_features
    from edgeaudio.train.students import build_student
    student = build_student("tiny", 3)
    wave = torch.randn(2, SR) * 0.1
    with torch.no_grad():
        exact = student.features(wave)
    fast = training_features(student, wave)
    assert fast.shape == exact.shape and (fast - exact).abs().max() < 1e-4
    fast.sum().backward()
    assert student.frontend.learnable_filterbank.log_q.grad is not None  # Q still learns


def test_evaluate_on_other_data_rejects_labels_the_model_does_not_know(toy_csv, tmp_path, fakes):
    from edgeaudio.train.data import DatasetError
    run(toy_config(toy_csv, epochs=1), tmp_path / "r", tmp_path, fakes)
    other = tmp_path / "other.csv"
    other.write_text(f"path,label\n{toy_csv.parent / 'low0.wav'},low\n"
                     f"{toy_csv.parent / 'high0.wav'},whistle\n")
    with pytest.raises(DatasetError, match=r"other.csv line 3: label 'whistle' is unknown"):
        evaluate_run(tmp_path / "r", data=str(other), progress=False)
    ok = tmp_path / "ok.csv"
    ok.write_text(f"path,label\n{toy_csv.parent / 'low0.wav'},low\n"
                  f"{toy_csv.parent / 'noise1.wav'},noise\n")
    report = evaluate_run(tmp_path / "r", data=str(ok), progress=False, out=tmp_path / "ev")
    assert report["n_clips"] == 2 and (tmp_path / "ev" / "evaluation.json").exists()


def test_planned_mixtures_are_seeded_and_labelled_by_the_teacher_itself(toy_csv, tmp_path,
                                                                        fakes):
    from edgeaudio.train.preparation import mixture_wave, prepare
    cfg = toy_config(toy_csv, kd=1.0, kd_teachers=["efficientat"], kd_mixtures=3)
    cache = EmbeddingCache(tmp_path / "cache")
    prep = prepare(cfg, progress=False, cache=cache, get_teacher=fakes)
    again = prepare(cfg, progress=False, cache=cache, get_teacher=fakes)
    assert prep.mix_plan == again.mix_plan and set(prep.mix_plan) == set(prep.train_idx.tolist())
    assert again.cache_stats["hit"] >= 36 and again.cache_stats["miss"] == 0
    targets = prep.dataset.targets
    i, entries = next(iter(prep.mix_plan.items()))
    assert len(entries) == 3
    for m, (j, lam, offset) in enumerate(entries):
        assert targets[j] != targets[i] and 0.5 <= lam <= 1.0
        wave = mixture_wave(prep.waves, i, j, lam, offset)
        assert np.allclose(wave, lam * prep.waves[i] + (1 - lam) * prep.waves[j], atol=1e-6)
        # the KD target of a mixture is the teacher's output on that very mixture
        assert np.allclose(prep.mix_kd_frames[(i, m)], fakes("efficientat").embed([wave])[0],
                           atol=1e-5)
    metrics = run(cfg, tmp_path / "mix", tmp_path, fakes)
    assert metrics["history"][-1]["kd"] > 0


def test_the_validation_split_chooses_the_epoch_and_the_test_split_is_scored_once(
        toy_csv, tmp_path, fakes):
    cfg = toy_config(toy_csv, epochs=4, validation_fraction=0.25)
    metrics = run(cfg, tmp_path / "best", tmp_path, fakes)
    history = metrics["history"]
    vals = [h["val_acc"] for h in history]
    assert all("test_acc" not in h for h in history)  # the test split decides nothing
    assert metrics["selected_epoch"] == 1 + int(np.argmax(vals))  # the first of the best
    assert metrics["validation_accuracy"] == max(vals) and metrics["n_validation"] == 3
    ckpt = load_checkpoint(tmp_path / "best")
    if metrics["selected_epoch"] != cfg.epochs:  # the file holds the chosen epoch's weights
        last = ckpt["train_state"]["last_model_state"]
        assert any(not torch.equal(v, last[k]) for k, v in ckpt["model_state"].items())
    assert evaluate_run(tmp_path / "best", progress=False)["accuracy"] == metrics["accuracy"]
    # the last epoch on request; the test curve only when asked, for reporting
    kept = run(toy_config(toy_csv, epochs=2, select="last", test_curve=True),
               tmp_path / "last", tmp_path, fakes)
    assert kept["selected_epoch"] == 2 and all("test_acc" in h for h in kept["history"])
    none = run(toy_config(toy_csv, epochs=1, validation_fraction=0.0), tmp_path / "none",
               tmp_path, fakes)
    assert none["n_validation"] == 0 and none["selection"] == "the last epoch"


def test_a_validation_fold_of_the_data_validates(toy_csv, tmp_path, fakes):
    import shutil
    # the toy clips in three folds: 1 train, 2 test, 3 validation
    three = tmp_path / "three.csv"
    rows = toy_csv.read_text().splitlines()
    out = [rows[0]] + [f"{r.rsplit(',', 1)[0]},{3 if i % 4 == 3 else r.rsplit(',', 1)[1]}"
                       for i, r in enumerate(rows[1:])]
    for name in {r.split(",")[0] for r in rows[1:]}:
        shutil.copy(toy_csv.parent / name, tmp_path / name)
    three.write_text("\n".join(out) + "\n")
    metrics = run(toy_config(three, epochs=1, validation_fold=3), tmp_path / "r", tmp_path,
                  fakes)
    assert metrics["splits"]["validation"] == "fold 3" and metrics["n_validation"] == 6
    with pytest.raises(TrainError, match="is the test --fold"):
        run(toy_config(three, validation_fold=2), tmp_path / "x", tmp_path, fakes)


def test_a_teacher_that_does_not_know_the_sounds_is_left_out(toy_csv, tmp_path, fakes):
    """The fake teachers' embeddings carry nothing of the toy tones: their linear probe scores
    below a log-mel baseline on the validation clips, so KD is left out before training (and
    the run trains on the labels alone), unless --keep-teachers."""
    cfg = toy_config(toy_csv, kd=0.5, kd_teachers=["efficientat"], keep_teachers=False,
                     validation_fraction=0.5, epochs=1)
    metrics = run(cfg, tmp_path / "left", tmp_path, fakes)
    kd = metrics["kd"]
    assert "does not know these sounds" in kd["left_out"]
    assert kd["baseline_validation_accuracy"] > kd["teacher_validation_accuracy"] + 0.05
    assert metrics["history"][0]["kd"] == 0.0  # no distillation term was trained
    assert "left out" in (tmp_path / "left" / "train.log").read_text()
    kept = run(toy_config(toy_csv, kd=0.5, kd_teachers=["efficientat"], keep_teachers=True,
                          validation_fraction=0.5, epochs=1), tmp_path / "kept", tmp_path, fakes)
    assert "left_out" not in kept["kd"] and kept["history"][0]["kd"] > 0
