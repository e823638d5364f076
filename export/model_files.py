"""All the model files of a network at once: the float writers (``writers.py``) and the int8
ones (``quantize.py``) under their documented names, BatchNorm folded first."""
from __future__ import annotations

import numpy as np
import torch

from edgeaudio.modelfile import ModelInfo

from .errors import ExportError
from .quantize import fold_batchnorm, quantize_onnx, quantize_tflite
from .writers import FORMATS, file_name, prepare_output_dir, write_onnx, write_tflite


def write_model_files(network: torch.nn.Module, info: ModelInfo, out_dir, *,
                      formats=FORMATS, float_files: bool = True, int8: bool = False,
                      calibration: np.ndarray | None = None, stem: str = "model",
                      int8_network: torch.nn.Module | None = None,
                      tflite_pt2e=None) -> dict:
    """Write the model files of ``network`` (any torch network log features -> logits) into
    ``out_dir``: float files with BatchNorm folded, and with ``int8`` the int8 files calibrated
    on ``calibration`` (``[N, n_frames, bins]`` log features from training data, see
    ``clips.calibration_windows``). Returns ``{file name: path}``.

    ``int8_network`` (e.g. after quantization-aware fine-tuning) replaces ``network`` for the
    int8 files; ``tflite_pt2e`` = (quantizer, converted module) skips PT2E calibration.
    """
    formats = list(dict.fromkeys(formats))
    for fmt in formats:
        file_name(stem, fmt, False)  # validates
    if int8 and calibration is None and not (tflite_pt2e and formats == ["tflite"]):
        raise ExportError("int8 files need a calibration set (log features from training data)")
    out = prepare_output_dir(out_dir)
    folded = fold_batchnorm(network)
    int8_source = int8_network if int8_network is not None else network
    written = {}
    for fmt in formats:
        if float_files:
            name = file_name(stem, fmt, False)
            writer = write_onnx if fmt == "onnx" else write_tflite
            written[name] = writer(folded, info, out / name)
        if int8:
            name = file_name(stem, fmt, True)
            if fmt == "onnx":
                reuse = written.get(file_name(stem, "onnx", False)) \
                    if int8_network is None else None
                written[name] = quantize_onnx(int8_source, info, calibration, out / name,
                                              float_onnx=reuse)
            else:
                written[name] = quantize_tflite(int8_source, info, calibration, out / name,
                                                prepared=tflite_pt2e)
    return written
