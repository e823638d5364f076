"""int8 edge quantization: the one definition of how float tensors cross an int8 model's edges.

An int8 model file carries, for its input and its output, a ``scale`` and a ``zero_point``
(affine per-tensor quantization, as TFLite and ONNX QDQ store it):

    q = clip(round(x / scale) + zero_point, dtype.min, dtype.max)
    x = (q - zero_point) * scale

The runtime backends, the export room and the microcontroller check all use these two
functions, so a bit-exactness test compares against the same arithmetic everywhere. Rounding
is numpy's (half to even), computed in float32 like the TFLite reference kernels.
"""
from __future__ import annotations

import numpy as np

INTEGER_DTYPES = (np.int8, np.uint8, np.int16)


def is_quantized(dtype) -> bool:
    """Whether a tensor of ``dtype`` needs (de)quantization at a model edge."""
    return np.dtype(dtype).type in INTEGER_DTYPES


def quantize(x, scale: float, zero_point: int, dtype=np.int8) -> np.ndarray:
    """Float values as integers of ``dtype``: ``clip(round(x / scale) + zero_point)``."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float32) / np.float32(scale)) + np.float32(zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q, scale: float, zero_point: int) -> np.ndarray:
    """Integers back to float32: ``(q - zero_point) * scale``."""
    return ((np.asarray(q).astype(np.float32) - np.float32(zero_point))
            * np.float32(scale)).astype(np.float32)
