"""edgeaudio: sound classification on small devices (torch-free runtime)."""
__version__ = "0.1.0"
