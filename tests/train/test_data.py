"""Datasets: folder-per-class, CSV, the ESC-50 layout; errors name the file; nothing dropped
silently; splits, crops and teacher-frame slicing."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.train.data import (  # noqa: E402
    DatasetError, drop_items, frames_covering, load_dataset, load_waveforms, make_crops,
    parse_folds, require_classes, split_indices, validation_split)

from ..conftest import ESC50  # noqa: E402

SR = 16000


def tone(freq=440.0, seconds=0.5, rate=SR):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_folder(root, classes=("cat", "dog"), per_class=3):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            sf.write(root / name / f"{name}{i}.wav", tone(300 + 100 * c + 10 * i), SR)
    return root


def write_csv(path, rows, header=("path", "label", "fold")):
    with open(path, "w", newline="") as handle:
        w = csv.writer(handle)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def test_folder_per_class_lists_what_it_skips(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "dog" / "notes.txt").write_text("recorded in the park")
    (root / "README.md").write_text("top-level file")
    ds = load_dataset(root)
    assert ds.kind == "folder" and ds.labels == ["cat", "dog"] and len(ds) == 6
    assert list(ds.targets) == [0, 0, 0, 1, 1, 1]
    skipped = {s["path"]: s["reason"] for s in ds.skipped}
    assert str(root / "dog" / "notes.txt") in skipped and str(root / "README.md") in skipped
    assert ds.report()["per_class"] == {"cat": 3, "dog": 3}


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "bird").mkdir()
    (root / "bird" / "list.txt").write_text("nothing yet")
    with pytest.raises(DatasetError, match=r"bird.*holds no audio"):
        load_dataset(root)
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_dataset(tmp_path / "data" / "cat")


def test_csv_with_folds_and_relative_paths(tmp_path):
    root = make_folder(tmp_path / "data")
    path = write_csv(tmp_path / "data" / "labels.csv",
                     [("cat/cat0.wav", "cat", 1), ("cat/cat1.wav", "cat", 2),
                      ("dog/dog0.wav", "dog", 1), ("dog/dog1.wav", "dog", 2)])
    ds = load_dataset(path)
    assert ds.kind == "csv" and ds.labels == ["cat", "dog"] and ds.folds == [1, 2]
    train, test = split_indices(ds, 2)
    assert [ds.items[i].fold for i in test] == [2, 2]
    assert set(train) | set(test) == set(range(4))
    assert ds.items[0].path == root / "cat" / "cat0.wav"


def test_a_csv_saved_with_a_byte_order_mark_is_read(tmp_path):
    make_folder(tmp_path / "data")
    path = tmp_path / "data" / "labels.csv"
    # what spreadsheet programs write: UTF-8 with a BOM before the header
    path.write_bytes("\ufeffpath,label\ncat/cat0.wav,cat\ndog/dog0.wav,dog\n".encode("utf-8"))
    ds = load_dataset(path)
    assert ds.labels == ["cat", "dog"] and len(ds.items) == 2


def test_training_needs_two_classes(tmp_path):
    root = make_folder(tmp_path / "one", classes=("dog",))
    with pytest.raises(DatasetError, match=r"at least two classes \(only 'dog'\)"):
        require_classes(load_dataset(root))
    from click.testing import CliRunner
    from edgeaudio.cli import main
    result = CliRunner().invoke(main, ["train", "--data", str(root), "--student", "tiny",
                                       "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 2 and "at least two classes" in result.output
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert require_classes(load_dataset(make_folder(tmp_path / "two")))  # two are enough


@pytest.mark.parametrize("rows, header, message", [
    ([("cat/cat0.wav", "cat"), ("cat/../cat/cat0.wav", "cat")], ("path", "label"),
     r"duplicate path .*cat0.wav.*line 2.*line 3"),
    ([("cat/missing.wav", "cat")], ("path", "label"), r"line 2: audio file not found: .*missing.wav"),
    ([("cat/cat0.wav", "")], ("path", "label"), r"line 2: cat/cat0.wav: empty label"),
    ([("cat/cat0.wav", "cat", "one")], ("path", "label", "fold"), r"fold must be an integer"),
    ([("cat/cat0.wav", "cat")], ("file", "class"), r"header naming the columns"),
    ([], ("path", "label"), r"no rows after the header"),
])
def test_csv_errors_name_the_file_and_line(tmp_path, rows, header, message):
    make_folder(tmp_path / "data")
    path = write_csv(tmp_path / "data" / "labels.csv", rows, header)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_csv_unknown_label_against_a_known_label_set(tmp_path):
    from edgeaudio.train.data import load_csv
    make_folder(tmp_path / "data")
    path = write_csv(tmp_path / "data" / "labels.csv", [("cat/cat0.wav", "kat")],
                     ("path", "label"))
    with pytest.raises(DatasetError, match=r"line 2: cat/cat0.wav: unknown label 'kat'"):
        load_csv(path, labels=["cat", "dog"])


def test_a_class_without_training_clips_is_an_error(tmp_path):
    make_folder(tmp_path / "data")
    path = write_csv(tmp_path / "data" / "labels.csv",
                     [("cat/cat0.wav", "cat", 1), ("dog/dog0.wav", "dog", 2),
                      ("cat/cat1.wav", "cat", 2)])
    with pytest.raises(DatasetError, match="no training clips: dog"):
        split_indices(load_dataset(path), 2)
    with pytest.raises(DatasetError, match="fold 3 not in the dataset"):
        split_indices(load_dataset(path), 3)


def test_unreadable_audio_is_an_error_or_skipped_and_listed(tmp_path):
    root = make_folder(tmp_path / "data")
    bad = root / "dog" / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    empty = root / "cat" / "empty.flac"
    empty.write_bytes(b"")
    ds = load_dataset(root)
    with pytest.raises(DatasetError, match=r"2 unreadable audio file\(s\).*(broken|empty)"):
        load_waveforms(ds.items, SR)
    waves, skipped = load_waveforms(ds.items, SR, skip_unreadable=True)
    assert {s["path"] for s in skipped} == {str(bad), str(empty)}
    ds2, waves2 = drop_items(ds, waves, skipped)
    assert len(ds2) == 6 and all(w is not None for w in waves2)
    assert {s["path"] for s in ds2.skipped} >= {str(bad), str(empty)}


def test_waveforms_come_at_the_students_rate_mono(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    stereo = np.stack([tone(440, 1.0, 8000), tone(440, 1.0, 8000)], axis=1)
    sf.write(root / "a" / "x.wav", stereo, 8000)
    sf.write(root / "b" / "y.flac", tone(660, 0.5, 44100), 44100)
    waves, _ = load_waveforms(load_dataset(root).items, SR)
    assert [w.shape for w in waves] == [(16000,), (8000,)]
    assert all(w.dtype == np.float32 for w in waves)


def test_splits_without_folds_are_stratified_and_seeded(tmp_path):
    ds = load_dataset(make_folder(tmp_path / "data", per_class=10))
    train, test = split_indices(ds, None, seed=3, test_fraction=0.2)
    assert len(test) == 4 and sorted(ds.targets[test].tolist()) == [0, 0, 1, 1]
    again = split_indices(ds, None, seed=3, test_fraction=0.2)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    small, _ = split_indices(ds, None, seed=3, train_fraction=0.25)
    assert len(small) == 4 and set(small) <= set(train)
    assert sorted(ds.targets[small].tolist()) == [0, 0, 1, 1]
    with pytest.raises(DatasetError, match="has no folds"):
        split_indices(ds, 1)


def test_parse_folds():
    assert parse_folds("1-5") == [1, 2, 3, 4, 5]
    assert parse_folds("1,3") == [1, 3]
    assert parse_folds("2") == [2] and parse_folds(None) == []
    with pytest.raises(DatasetError):
        parse_folds("a-b")


def test_crops_pad_short_clips_and_remember_their_span():
    waves = [np.ones(SR * 2, np.float32), np.ones(SR // 2, np.float32)]
    rng = np.random.default_rng(0)
    crops = make_crops(waves, np.array([0, 1]), SR, SR, rng, gain_db=0.0)
    assert crops.waves.shape == (2, SR)
    assert 0.0 <= crops.start_s[0] <= 1.0 and crops.end_s[0] - crops.start_s[0] == 1.0
    assert crops.waves[1].sum() == SR // 2            # the half-second clip, zero-padded
    assert crops.start_s[1] <= 0 and crops.clip_s.tolist() == [2.0, 0.5]
    loud = make_crops(waves, np.array([0]), SR, SR, np.random.default_rng(1), gain_db=6.0)
    assert 10 ** (-6 / 20) - 1e-6 <= loud.waves[0, 0] <= 10 ** (6 / 20) + 1e-6
    # the same seed gives the same crops
    a = make_crops(waves, np.array([0, 0]), SR, SR, np.random.default_rng(5), gain_db=3)
    b = make_crops(waves, np.array([0, 0]), SR, SR, np.random.default_rng(5), gain_db=3)
    assert np.array_equal(a.waves, b.waves)


def test_speed_perturbation_resamples_a_longer_or_shorter_span():
    # a 100 Hz sine: played at rate r, the crop holds a 100 * r Hz sine over r seconds of clip
    t = np.arange(SR * 3) / SR
    waves = [np.sin(2 * np.pi * 100 * t).astype(np.float32)]
    crops = make_crops(waves, np.zeros(8, int), SR, SR, np.random.default_rng(0), speed=0.2)
    spans = crops.end_s - crops.start_s
    assert crops.waves.shape == (8, SR) and np.all(spans >= 0.8) and np.all(spans <= 1.2)
    assert np.ptp(spans) > 0.05                               # rates differ from crop to crop
    for wave, span in zip(crops.waves, spans):
        peak_hz = np.argmax(np.abs(np.fft.rfft(wave)))         # 1-Hz bins over a 1-s crop
        assert abs(peak_hz - 100 * span) <= 1.5
    # a clip shorter than the span is padded within it, its span still the played one
    short = make_crops([waves[0][:SR // 2]], np.zeros(2, int), SR, SR,
                       np.random.default_rng(1), speed=0.2)
    assert np.all(short.start_s <= 0) and np.all(np.abs(short.waves).sum(1) > 0)


def test_shifted_crops_of_a_clip_as_long_as_the_crop_move_past_its_ends():
    waves = [np.ones(SR, np.float32)]
    crops = make_crops(waves, np.zeros(64, int), SR, SR, np.random.default_rng(0),
                       shift_seconds=0.25)
    assert np.all(np.abs(crops.start_s) <= 0.25) and np.ptp(crops.start_s) > 0.3
    for wave, start in zip(crops.waves, crops.start_s):
        # the clip's samples where the crop overlaps it, zeros where it hangs past an end
        assert wave.sum() == pytest.approx(SR - abs(round(start * SR)))
        assert wave[0 if start < 0 else -1] == (0.0 if start != 0 else 1.0)
    plain = make_crops(waves, np.zeros(8, int), SR, SR, np.random.default_rng(0))
    assert np.all(plain.start_s == 0) and np.all(plain.waves == 1.0)


def test_frames_covering_slices_the_teacher_frames_of_a_crop():
    # 10 frames over 5 s (0.5 s each): the crop 1.0-3.0 s touches frames 2..5
    assert frames_covering(10, 5.0, 1.0, 3.0) == (2, 6)
    assert frames_covering(10, 5.0, 1.2, 3.1) == (2, 7)
    assert frames_covering(10, 5.0, 0.0, 5.0) == (0, 10)
    assert frames_covering(10, 5.0, -1.0, 9.0) == (0, 10)      # padded crop of a short clip
    assert frames_covering(10, 5.0, 4.99, 5.0) == (9, 10)


def test_esc50_layout_maps_wav_names_to_flac_files(tmp_path):
    root = tmp_path / "esc"
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    rows = [("1-1-A-0.wav", 1, 0, "dog"), ("2-1-A-1.wav", 2, 1, "rooster"),
            ("1-2-A-1.wav", 1, 1, "rooster"), ("2-2-A-0.wav", 2, 0, "dog")]
    with open(root / "meta" / "esc50.csv", "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        for name, fold, target, cat in rows:
            w.writerow([name, fold, target, cat, "True", "1", "A"])
            sf.write(root / "audio" / name.replace(".wav", ".flac"), tone(), SR)
    ds = load_dataset(root, layout="esc50")
    assert ds.labels == ["dog", "rooster"] and ds.folds == [1, 2]
    assert all(item.path.suffix == ".flac" for item in ds.items)
    (root / "audio" / "2-2-A-0.flac").unlink()
    with pytest.raises(DatasetError, match=r"esc50.csv line 5: audio file not found: .*2-2-A-0"):
        load_dataset(root, layout="esc50")
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        load_dataset(root, layout="us8k")


def test_the_real_esc50(esc50):
    ds = load_dataset(esc50, layout="esc50")
    assert len(ds) == 2000 and len(ds.labels) == 50 and ds.folds == [1, 2, 3, 4, 5]
    assert ds.labels[0] == "dog" and ds.skipped == []
    train, test = split_indices(ds, 1)
    assert (len(train), len(test)) == (1600, 400)
    tenth, _ = split_indices(ds, 1, train_fraction=0.1)
    assert len(tenth) == 150 and np.bincount(ds.targets[tenth]).tolist() == [3] * 50


def test_the_validation_split_is_stratified_inside_training_or_a_given_fold(tmp_path):
    root = make_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=10)
    ds = load_dataset(root)
    targets = ds.targets
    train = np.arange(30)[np.arange(30) % 10 != 0]   # 9 per class
    fit, val = validation_split(ds, train, fraction=0.2, seed=0)
    assert len(np.intersect1d(fit, val)) == 0 and set(fit) | set(val) == set(train)
    assert [int((targets[val] == c).sum()) for c in range(3)] == [2, 2, 2]
    assert np.array_equal(validation_split(ds, train, fraction=0.2, seed=0)[1], val)
    assert len(validation_split(ds, train, fraction=0.0)[1]) == 0
    rows = [(f"{c}/{c}{i}.wav", c, i % 3 + 1) for c in ("a", "b", "c") for i in range(10)]
    folded = load_dataset(write_csv(tmp_path / "data" / "labels.csv", rows))
    train, test = split_indices(folded, 3)
    fit, val = validation_split(folded, train, fold=2)
    assert {folded.items[i].fold for i in val} == {2} and {folded.items[i].fold for i in fit} == {1}
    with pytest.raises(DatasetError, match="is the test fold"):
        validation_split(folded, train, fold=3)
    with pytest.raises(DatasetError, match="not in"):
        validation_split(folded, train, fold=7)


def test_a_background_class_joins_the_dataset_dealt_over_the_folds(tmp_path):
    from edgeaudio.train.data import synthesize_quiet_clips, with_background
    rows = [(f"{c}/{c}{i}.wav", c, i % 2 + 1) for c in ("cat", "dog") for i in range(3)]
    make_folder(tmp_path / "data")
    ds = load_dataset(write_csv(tmp_path / "data" / "labels.csv", rows))
    other = make_folder(tmp_path / "other", classes=("hum",), per_class=3)
    both = with_background(ds, [str(other), "silence"], "background", seed=1,
                           synth_root=tmp_path / "synth")
    assert both.labels == ["cat", "dog", "background"]
    extra = [i for i in both.items if i.label == "background"]
    assert len(extra) == 3 + 3  # the folder's clips + as many quiet clips as a class has
    assert sorted(i.fold for i in extra) == [1, 1, 1, 2, 2, 2]  # dealt over the folds
    again = synthesize_quiet_clips(tmp_path / "synth", 3, 0.5, 1)
    assert [p for p in again] == sorted(p for p in (tmp_path / "synth").rglob("*.wav"))
    levels = [float(np.sqrt(np.mean(sf.read(p)[0] ** 2))) for p in again]
    assert levels[0] == 0.0 and all(1e-4 < v < 0.05 for v in levels[1:])  # -80..-26 dBFS
    with pytest.raises(DatasetError, match="already a class"):
        with_background(ds, ["silence"], "dog", synth_root=tmp_path / "synth")
    with pytest.raises(DatasetError, match="also a labelled clip"):
        with_background(ds, [str(tmp_path / "data" / "cat")], "background")


def test_train_with_a_background_class_and_its_export_metadata(tmp_path):
    from click.testing import CliRunner
    from edgeaudio.cli import main
    from edgeaudio.export.cli import model_info
    from edgeaudio.train.checkpoint import load_student
    root = make_folder(tmp_path / "one", classes=("dog",), per_class=4)
    out = tmp_path / "run"
    env = {"EDGEAUDIO_CACHE": str(tmp_path / "cache")}
    # one class of the user's own plus "none of these" is a classifier
    result = CliRunner().invoke(main, ["train", "--data", str(root), "--student", "tiny",
                                       "--background", "silence", "--epochs", "1",
                                       "--batch-size", "2", "--out", str(out), "--quiet"],
                                env=env)
    assert result.exit_code == 0, result.output
    student, ckpt = load_student(out)
    assert ckpt["labels"] == ["dog", "background"]
    info = model_info(student, ckpt, "m", out / "checkpoint.pt")
    assert info.stream["background"] == ["background"]
