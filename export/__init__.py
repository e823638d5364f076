"""edgeaudio.export: int8 quantization and ONNX / TFLite model files.

Imports point one way: ``errors`` <- ``clips``, ``tflm`` <- ``report``, ``writers`` <-
``quantize`` <- ``model_files`` <- ``cli``. ``errors``, ``clips``, ``tflm`` and ``report`` are
torch-free (the firmware scripts use ``tflm`` and ``report`` on a machine without torch);
``writers``, ``quantize`` and ``model_files`` need torch.
"""
