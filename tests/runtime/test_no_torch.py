"""The runtime never imports torch: the device install has none."""
import subprocess
import sys

from tests.conftest import PLACEHOLDER, REPO

SCRIPT = f"""
import sys, numpy as np
import edgeaudio
for suffix in (".onnx", ".tflite"):
    m = edgeaudio.load_model({str(PLACEHOLDER)!r} + suffix)
    m.classify(np.random.default_rng(0).normal(0, 0.1, 32000).astype("float32"), 16000)
    s = m.stream()
    s.push(np.zeros(8000, "float32"))
from edgeaudio import cli, sources, listen
print("torch" in sys.modules)
"""


def test_runtime_does_not_import_torch():
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
