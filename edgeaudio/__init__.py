"""edgeaudio: sound classification on small devices (torch-free runtime).

    import edgeaudio
    model = edgeaudio.load_model()                 # the bundled model, or a .onnx / .tflite path
    model.classify("dog.wav").top(3)               # [("dog", 0.91), ...]
    stream = model.stream(threshold=0.6)           # push(chunk) -> [Event, ...]
"""
__version__ = "0.1.0"

from .errors import AudioError, BackendError, DeviceError, EdgeAudioError, ModelFileError
from .model import ClipResult, Model, default_model_path, load_model
from .stream import Event, Stream

__all__ = ["AudioError", "BackendError", "ClipResult", "DeviceError", "EdgeAudioError", "Event",
           "Model", "ModelFileError", "Stream", "default_model_path", "load_model"]
