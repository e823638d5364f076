"""A "none of these" class (issue 21): a model whose metadata names a background class
(``stream.background``) scores it like any other class but never reports it as an event, in
the stream engine and in ``edgeaudio listen``; the schema refuses background labels the model
does not have."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeaudio import load_model
from edgeaudio.errors import ModelFileError
from tests.conftest import PLACEHOLDER, REPO

from .test_metadata_schema import metadata_of, write_copy

MODEL = PLACEHOLDER.with_suffix(".tflite")
DOG = REPO / "examples" / "dog.flac"


def with_background(tmp_path, labels, name="bg.tflite"):
    doc = metadata_of(MODEL)
    doc["stream"] = {**doc.get("stream", {}), "background": labels}
    return write_copy(MODEL, json.dumps(doc), tmp_path / name)


def listen_events(model_path) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "edgeaudio", "listen", "--input", str(DOG),
                        "--fast", "--json", "--model", str(model_path), "--threshold", "0.3"],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def test_a_background_class_is_scored_but_never_an_event(tmp_path):
    plain = listen_events(MODEL)
    assert any(e["label"] == "dog" for e in plain)  # the recording's dog is an event...
    quiet = listen_events(with_background(tmp_path, ["dog"]))
    assert not any(e["label"] == "dog" for e in quiet)  # ...unless dog means "none of these"
    model = load_model(with_background(tmp_path, ["dog"], "api.tflite"))
    assert model.info.stream["background"] == ["dog"]
    import soundfile as sf
    wave, rate = sf.read(DOG, dtype="float32")
    stream = model.stream(input_rate=rate, threshold=0.3)
    events = stream.push(wave) + stream.flush()
    assert not any(e.label == "dog" for e in events)
    assert "dog" in [label for label, _ in stream.top(3)]  # still scored
    assert np.isclose(sum(model.classify(wave, rate).scores), 1.0, atol=1e-3)


@pytest.mark.parametrize("labels, message", [
    (["whistle"], "names unknown labels"),
    ("dog", "stream.background"),
])
def test_the_schema_refuses_a_background_the_model_does_not_have(tmp_path, labels, message):
    with pytest.raises(ModelFileError, match=message):
        load_model(with_background(tmp_path, labels))


def test_every_label_as_background_is_refused(tmp_path):
    labels = load_model(MODEL).labels
    with pytest.raises(ModelFileError, match="names every label"):
        load_model(with_background(tmp_path, labels))
