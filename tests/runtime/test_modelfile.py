"""Self-describing model files: metadata read from both formats, clear errors for bad files."""
import json

import pytest

from edgeaudio import Model, ModelFileError
from edgeaudio.modelfile import METADATA_KEY, ModelInfo, read_tflite_metadata
from tests.conftest import PLACEHOLDER, REPO, SHARED

BUNDLED_TFLITE = REPO / "edgeaudio" / "models" / "esc50-student.int8.tflite"


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


def _edited_tflite(tmp_path, edit):
    """The bundled TFLite file, re-serialized after ``edit(model object)``."""
    flatbuffer_utils = pytest.importorskip("ai_edge_litert.tools.flatbuffer_utils")
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(BUNDLED_TFLITE.read_bytes()))
    edit(model)
    path = tmp_path / "edited.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return path


def _weight_buffer(model):
    sizes = [0 if b.data is None else len(b.data) for b in model.buffers]
    return sizes.index(max(sizes))


def _move_buffer_past_the_end(model):
    buffer = model.buffers[_weight_buffer(model)]
    buffer.data, buffer.offset, buffer.size = None, 10 ** 6, 4096


def _operator_input_out_of_range(model):
    subgraph = model.subgraphs[0]
    subgraph.operators[0].inputs[0] = len(subgraph.tensors) + 7


def _tensor_names_a_missing_buffer(model):
    model.subgraphs[0].tensors[0].buffer = len(model.buffers) + 3


def _per_channel_scales_do_not_fit(model):
    for tensor in model.subgraphs[0].tensors:
        q = tensor.quantization
        if q is not None and q.scale is not None and len(q.scale) > 1:
            q.quantizedDimension = len(tensor.shape)  # past the last dimension
            return
    raise AssertionError("the bundled model has per-channel weights")


@pytest.mark.parametrize("edit, message", [
    (_move_buffer_past_the_end, r"buffer \d+ \(offset and size\) lies outside the file"),
    (_operator_input_out_of_range, "operator 0 names tensor"),
    (_tensor_names_a_missing_buffer, "tensor 0 names buffer"),
    (_per_channel_scales_do_not_fit, "per-channel scales do not fit"),
], ids=["buffer-offset", "operator-input", "tensor-buffer", "quantized-dimension"])
def test_tflite_structure_checked_before_the_interpreter(tmp_path, edit, message):
    """What the legacy interpreter would follow blindly is checked first (both TFLite backends
    run the same check before creating their interpreter; the message shows it was ours)."""
    with pytest.raises(ModelFileError, match=message):
        Model(_edited_tflite(tmp_path, edit))
