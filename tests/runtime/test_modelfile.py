"""Self-describing model files: metadata read from both formats, clear errors for bad files."""
import json

import pytest

from edgeaudio import Model, ModelFileError
from edgeaudio.modelfile import METADATA_KEY, ModelInfo, read_tflite_metadata
from tests.conftest import PLACEHOLDER, SHARED


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_metadata_is_complete_and_equal_in_both_formats(suffix):
    info = Model(PLACEHOLDER.with_suffix(suffix)).info
    d = info.to_dict()
    for key in ("labels", "sample_rate", "frontend", "n_frames", "window_seconds", "version",
                "provenance", "stream", "output_activation"):
        assert d[key] not in (None, "", [], {}), key
    assert info.labels == sorted(info.labels) and len(info.labels) == 10
    other = Model(PLACEHOLDER.with_suffix(".tflite" if suffix == ".onnx" else ".onnx")).info
    assert other.to_dict() == d


def test_tflite_metadata_entry_holds_the_json():
    entries = read_tflite_metadata(PLACEHOLDER.with_suffix(".tflite").read_bytes())
    assert METADATA_KEY in entries
    assert json.loads(entries[METADATA_KEY])["labels"][4] == "dog"


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_truncated_model_file(tmp_path, suffix):
    data = PLACEHOLDER.with_suffix(suffix).read_bytes()
    bad = tmp_path / ("cut" + suffix)
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError, match="truncated|corrupt|cannot load"):
        Model(bad)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        Model(tmp_path / "nope.tflite")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty or truncated"):
        Model(tmp_path / "empty.onnx")


def test_foreign_tflite_without_edgeaudio_metadata():
    yamnet = SHARED / "weights" / "yamnet" / "yamnet_spectra_in.tflite"
    if not yamnet.exists():
        pytest.skip(f"{yamnet} not found")
    with pytest.raises(ModelFileError, match="not an edgeaudio model: no metadata 'edgeaudio'"):
        Model(yamnet)


def test_foreign_onnx_without_edgeaudio_metadata(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(PLACEHOLDER.with_suffix(".onnx")))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ModelFileError, match="not an edgeaudio model: no metadata 'edgeaudio'"):
        Model(bare)


@pytest.mark.parametrize("broken, message", [
    ({"labels": []}, "labels must be a non-empty list"),
    ({"labels": None}, "labels must be"),
    ({"format_version": 99}, "newer than this edgeaudio"),
    ({"output_activation": "relu"}, "output_activation: must be one of"),
])
def test_bad_metadata_is_named(broken, message):
    good = Model(PLACEHOLDER.with_suffix(".onnx")).info.to_dict()
    with pytest.raises(ModelFileError, match=message):
        ModelInfo.from_json(json.dumps({**good, **broken}))


def test_metadata_lacking_labels():
    good = Model(PLACEHOLDER.with_suffix(".onnx")).info.to_dict()
    del good["labels"]
    with pytest.raises(ModelFileError, match="labels: is missing"):
        ModelInfo.from_json(json.dumps(good))
