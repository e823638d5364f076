"""Teacher files run no code: a fitted teacher's members load with ``weights_only=True``, a
manifest's members stay inside their folder, and a file that is not a checkpoint is refused.

Each hostile file carries a real pickle payload (``__reduce__`` -> ``open(marker, "w")``); a
control load with ``weights_only=False`` shows that the payload is live, and every path the
CLI takes to a teacher file must refuse it with a user error (exit 2) before the marker exists.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")
sf = pytest.importorskip("soundfile")

from click.testing import CliRunner  # noqa: E402

from edgeaudio.cli import main  # noqa: E402
from edgeaudio.train.teachers.base import TeacherWeightsError  # noqa: E402
from edgeaudio.train.teachers.efficientat import EfficientATClassifier  # noqa: E402
from edgeaudio.train.teachers.fitted import (  # noqa: E402
    MANIFEST, MANIFEST_FORMAT, MEMBER_FORMAT, FittedTeacher, load_member, save_member)
from edgeaudio.train.teachers.registry import get_teacher, kd_head_for  # noqa: E402

from ..conftest import REPO, esc50_csv  # noqa: E402

LABELS = ["dog", "rooster"]


class CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: what a hostile checkpoint could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_member(path, marker, archive: bool = True):
    """A file shaped like a fitted-teacher member whose metrics carry the payload: a
    ``torch.save`` archive, or (``archive=False``) torch's legacy format (bare pickles)."""
    payload = {"format": MEMBER_FORMAT, "format_version": 1, "arch": "efficientat_mn04",
               "n_classes": 2, "frontend": {}, "pretrained": False, "labels": LABELS,
               "model_state": {}, "metrics": {"note": CreatesMarker(marker)}, "config": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path, _use_new_zipfile_serialization=archive)
    return path


def teacher_folder(folder, members):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT, "format_version": 1,
                                               "name": "hostile", "members": members}))
    return folder


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "payload-ran"


@pytest.mark.parametrize("archive", [True, False], ids=["torch-archive", "legacy-pickle"])
def test_the_payload_is_live_when_loaded_the_unsafe_way(tmp_path, archive):
    control = tmp_path / "control-ran"
    path = hostile_member(tmp_path / "control.pt", control, archive)
    torch.load(path, map_location="cpu", weights_only=False)
    assert control.exists()   # so the refusals below are refusals of a working payload


@pytest.mark.parametrize("archive", [True, False], ids=["torch-archive", "legacy-pickle"])
def test_member_file_as_teacher_is_refused(tmp_path, marker, archive):
    path = hostile_member(tmp_path / "member-0.pt", marker, archive)
    with pytest.raises(TeacherWeightsError, match="refused|not a PyTorch checkpoint"):
        get_teacher(str(path))             # --teacher file.pt
    assert not marker.exists()


def test_teacher_folder_is_refused(tmp_path, marker):
    folder = teacher_folder(tmp_path / "teacher", ["member-0.pt"])
    hostile_member(folder / "member-0.pt", marker)
    with pytest.raises(TeacherWeightsError, match="refused: it holds Python objects"):
        get_teacher(str(folder))           # --teacher DIR
    assert not marker.exists()


def test_kd_teacher_folder_is_refused(tmp_path, marker):
    folder = teacher_folder(tmp_path / "teacher", ["member-0.pt"])
    hostile_member(folder / "member-0.pt", marker)
    with pytest.raises(TeacherWeightsError, match="refused"):
        kd_head_for([str(folder)], LABELS)  # --kd-teacher DIR
    assert not marker.exists()


def test_member_reached_through_dotdot_is_refused(tmp_path, marker):
    hostile_member(tmp_path / "elsewhere" / "member.pt", marker)
    folder = teacher_folder(tmp_path / "teacher", ["../elsewhere/member.pt"])
    with pytest.raises(TeacherWeightsError, match="outside the teacher folder"):
        get_teacher(str(folder))
    absolute = teacher_folder(tmp_path / "absolute", [str(tmp_path / "elsewhere/member.pt")])
    with pytest.raises(TeacherWeightsError, match="outside the teacher folder"):
        FittedTeacher(absolute)
    assert not marker.exists()


@pytest.mark.parametrize("manifest", [True, False], ids=["listed", "globbed"])
def test_member_symlinked_out_of_the_folder_is_refused(tmp_path, marker, manifest):
    target = hostile_member(tmp_path / "elsewhere" / "member.pt", marker)
    folder = teacher_folder(tmp_path / "teacher", ["member-0.pt"]) if manifest \
        else tmp_path / "teacher"
    folder.mkdir(exist_ok=True)
    (folder / "member-0.pt").symlink_to(target)
    with pytest.raises(TeacherWeightsError, match="leads out of the teacher folder"):
        get_teacher(str(folder))
    assert not marker.exists()


def test_wav_renamed_pt_is_refused_cleanly(tmp_path):
    audio, rate = sf.read(REPO / "examples" / "dog.flac", dtype="float32")
    wav = tmp_path / "wav"
    sf.write(wav.with_suffix(".wav"), audio, rate, subtype="PCM_16")
    renamed = tmp_path / "member-0.pt"
    shutil.move(wav.with_suffix(".wav"), renamed)
    with pytest.raises(TeacherWeightsError, match=r"cannot read: not a PyTorch checkpoint "
                                                  r"archive \(it starts with b'RIFF'\)"):
        get_teacher(str(renamed))
    folder = teacher_folder(tmp_path / "teacher", ["member-0.pt"])
    shutil.copy(renamed, folder / "member-0.pt")
    with pytest.raises(TeacherWeightsError, match="b'RIFF'"):
        get_teacher(str(folder))


@pytest.mark.parametrize("members", ["member-0.pt", [3], [""], None],
                         ids=["string", "number", "empty", "null"])
def test_malformed_members_list_is_a_clean_error(tmp_path, members):
    folder = teacher_folder(tmp_path / "teacher", members)
    with pytest.raises(TeacherWeightsError, match="member"):
        get_teacher(str(folder))


def test_manifest_that_is_not_an_object_is_a_clean_error(tmp_path):
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / MANIFEST).write_text("[1, 2]")
    with pytest.raises(TeacherWeightsError, match="not a fitted-teacher manifest"):
        get_teacher(str(folder))


# ----------------------------------------------------------------------------- format

@pytest.fixture(scope="module")
def small_member():
    torch.manual_seed(0)
    return EfficientATClassifier(n_classes=2, pretrained=False).eval()


def test_saved_members_hold_only_what_weights_only_loads(tmp_path, small_member):
    path = save_member(tmp_path / "t" / "member-0.pt", small_member, LABELS,
                       metrics={"test_accuracy": np.float64(0.75), "epochs": 3},
                       config={"arch": "efficientat_mn04", "crop_seconds": None})
    raw = torch.load(path, map_location="cpu", weights_only=True)   # no exception: plain
    assert raw["metrics"] == {"test_accuracy": 0.75, "epochs": 3}
    assert type(raw["metrics"]["test_accuracy"]) is float
    model, info = load_member(path)
    assert info["labels"] == LABELS and info["config"]["crop_seconds"] is None
    for name, value in small_member.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    teacher = get_teacher(str(tmp_path / "t"))
    wave = np.asarray(sf.read(REPO / "examples" / "dog.flac", dtype="float32")[0][:16000])
    with torch.no_grad():
        expected = small_member(torch.from_numpy(wave)[None]).softmax(-1)[0].numpy()
    np.testing.assert_allclose(teacher.predict(wave), expected, atol=1e-6)
    assert not list((tmp_path / "t").glob("*.tmp"))  # written through atomic_path


def test_save_member_refuses_what_weights_only_cannot_load(tmp_path, small_member):
    with pytest.raises(ValueError, match="plain numbers, strings, lists and dicts"):
        save_member(tmp_path / "m.pt", small_member, LABELS,
                    metrics={"probs": np.zeros(3, np.float32)})
    assert not (tmp_path / "m.pt").exists()


def test_member_with_wrong_fields_is_a_clean_error(tmp_path, small_member):
    path = save_member(tmp_path / "m.pt", small_member, LABELS)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    for change in ({"arch": "resnet9000"}, {"n_classes": "2"}, {"labels": ["only one"]},
                   {"model_state": {"nothing": torch.zeros(1)}}):
        torch.save({**payload, **change}, tmp_path / "bad.pt")
        with pytest.raises(TeacherWeightsError):
            load_member(tmp_path / "bad.pt")


# ----------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def two_class_csv(esc50, tmp_path_factory):
    return esc50_csv(tmp_path_factory.mktemp("data"), LABELS, 1, 1)


@pytest.mark.parametrize("flags", [["--teacher", "{dir}", "--reg", "con"],
                                   ["--kd-teacher", "{dir}", "--kd", "0.5"]],
                         ids=["teacher", "kd-teacher"])
def test_train_with_a_hostile_teacher_exits_2_and_runs_nothing(two_class_csv, tmp_path, marker,
                                                                flags):
    folder = teacher_folder(tmp_path / "teacher", ["member-0.pt"])
    hostile_member(folder / "member-0.pt", marker)
    args = ["train", "--data", str(two_class_csv), "--fold", "5", "--student", "tiny",
            "--epochs", "1", "--batch-size", "2", "--crop", "1.0", "--quiet",
            "--out", str(tmp_path / "run")] + [f.format(dir=folder) for f in flags]
    result = CliRunner().invoke(main, args, env={"EDGEAUDIO_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 2, result.output
    assert "refused: it holds Python objects" in result.output
    assert "Traceback" not in result.output and not marker.exists()

