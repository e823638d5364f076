"""edgeaudio: sound classification on small devices (torch-free runtime).

    import edgeaudio
    model = edgeaudio.load_model()                 # the bundled model, or a .onnx / .tflite path
    model.classify("dog.wav").top(3)               # [("dog", 0.91), ...]
    stream = model.stream(threshold=0.6)           # push(chunk) -> [Event, ...]
"""
import os

# Real-time audio makes many small matrix products (the front end's filterbank). OpenBLAS's
# worker threads busy-wait between them: measured here, a whole core for no speed-up. One BLAS
# thread unless the user chose otherwise (effective when edgeaudio is imported before numpy).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"

from .errors import AudioError, BackendError, DeviceError, EdgeAudioError, ModelFileError
from .model import ClipResult, Model, default_model_path, load_model
from .stream import Event, Stream

__all__ = ["AudioError", "BackendError", "ClipResult", "DeviceError", "EdgeAudioError", "Event",
           "Model", "ModelFileError", "Stream", "default_model_path", "load_model"]
