"""The bundled default model (edgeaudio/models, made by recipes/esc50_default_model.sh): both
files load through every backend that takes them, describe themselves completely, and name the
right class for known clips of ESC-50 fold 1, the fold the model did not train on."""
import pytest

from edgeaudio import Model, default_model_path
from edgeaudio.backends import BACKENDS_FOR_FORMAT, backend_available
from tests.conftest import esc50_clip

BUNDLED = default_model_path()
FILES = [BUNDLED, BUNDLED.with_suffix(".onnx")]
# fold 1 was held out of the model's training (provenance.config.fold == 1)
KNOWN_CLIPS = {"1-30344-A-0": "dog", "1-39923-A-1": "rooster", "1-60997-B-20": "crying_baby",
               "1-40154-A-46": "church_bells"}


def file_and_backend():
    for path in FILES:
        for backend in BACKENDS_FOR_FORMAT[path.suffix[1:]]:
            yield pytest.param((path, backend), id=f"{path.suffix[1:]}-{backend}")


@pytest.fixture(params=list(file_and_backend()))
def bundled(request):
    path, backend = request.param
    if not backend_available(backend):
        pytest.skip(f"backend {backend} is not installed here")
    return Model(path, backend=backend)


def test_the_default_is_the_int8_esc50_student():
    assert BUNDLED.name == "esc50-student.int8.tflite" and all(p.exists() for p in FILES)
    assert Model().info.name == "esc50-student"


def test_metadata_is_complete(bundled):
    info = bundled.info
    assert len(info.labels) == 50 and len(set(info.labels)) == 50 and "dog" in info.labels
    assert info.sample_rate == 16000 and info.n_frames > 0 and info.window_seconds > 1
    assert info.frontend.filterbank["kind"] == "matrix"  # mel bands, pre-emphasis folded in
    assert {"hop_seconds", "threshold", "smooth", "patience"} <= set(info.stream)
    config = info.provenance["config"]  # recipes/esc50_default_model.toml
    assert config["fold"] == 1 and config["student"] == "mn04-short320"
    assert config["init"] == "mn04" and config["teacher"] == "efficientat"
    assert config["kd_weight"] > 0.9
    assert info.provenance["metrics"]["accuracy"] > 0.85
    assert "quantization" in info.extra


@pytest.mark.parametrize("stem,label", KNOWN_CLIPS.items())
def test_known_held_out_clip_gets_its_class_in_the_top_3(bundled, esc50, stem, label):
    top = [name for name, _ in bundled.classify(esc50_clip(stem)).top(3)]
    assert label in top, top
