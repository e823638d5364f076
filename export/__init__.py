"""edgeaudio.export: int8 quantization and ONNX / TFLite model files (needs torch)."""
