"""YAMNet (AudioSet, 521 sound events; MobileNetV1) as a teacher, run by LiteRT.

The file ``weights/yamnet/yamnet_waveform.tflite`` takes a float32 waveform of any length at
16 kHz and returns, per 0.96 s patch every 0.48 s, scores [N, 521] and embeddings [N, 1024]
(plus the log-mel frames [M, 64]). Outputs are told apart by their last dimension, not by their
order in the file.

Frames: YAMNet pads the clip to at least 15600 samples (0.975 s) and then up to a whole number
of 0.48 s hops, so N = 1 + ceil((n_samples - 15600) / 7680) (10 frames for 5 s); frame i covers
[0.48 i, 0.48 i + 0.96] s.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeaudio import files

from .base import Teacher, TeacherWeightsError, as_waveform, require_file

N_CLASSES = 521
EMBEDDING_DIM = 1024
N_MELS = 64


def load_yamnet_class_names(class_map_csv: Path) -> list[str]:
    """display_name column of yamnet_class_map.csv (index, mid, display_name), in index order."""
    with open(class_map_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    names = [row["display_name"] for row in sorted(rows, key=lambda r: int(r["index"]))]
    if len(names) != N_CLASSES:
        raise TeacherWeightsError(f"{class_map_csv} lists {len(names)} classes, "
                                  f"YAMNet has {N_CLASSES}")
    return names


class YamnetTeacher(Teacher):
    name = "yamnet"
    sample_rate = 16000
    hop_seconds = 0.48
    dim = EMBEDDING_DIM

    def __init__(self, shared_dir: str | os.PathLike | None = None, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        folder = files.shared_dir(shared_dir) / "weights" / "yamnet"
        self.weights_path = require_file(folder / "yamnet_waveform.tflite", "YAMNet weights")
        self.class_names = load_yamnet_class_names(
            require_file(folder / "yamnet_class_map.csv", "YAMNet class map"))
        self._interpreter = Interpreter(model_path=str(self.weights_path),
                                        num_threads=num_threads)
        self._input_index = self._interpreter.get_input_details()[0]["index"]
        self._output_index = self._map_outputs_by_shape()
        self._input_length = None

    def _map_outputs_by_shape(self) -> dict[str, int]:
        by_last_dim = {int(d["shape"][-1]): d["index"]
                       for d in self._interpreter.get_output_details()}
        wanted = {"scores": N_CLASSES, "embeddings": EMBEDDING_DIM, "log_mel": N_MELS}
        missing = [k for k, size in wanted.items() if size not in by_last_dim]
        if missing:
            raise TeacherWeightsError(f"{self.weights_path} is not the YAMNet waveform model: "
                                      f"no output for {missing} (last dims {sorted(by_last_dim)})")
        return {k: by_last_dim[size] for k, size in wanted.items()}

    def run(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
        """One clip through the interpreter: {"scores", "embeddings", "log_mel"}."""
        waveform = as_waveform(waveform)
        if waveform.size != self._input_length:
            # Re-allocating is the costly part; clips of one length (a dataset) pay it once.
            self._interpreter.resize_tensor_input(self._input_index, [waveform.size])
            self._interpreter.allocate_tensors()
            self._input_length = waveform.size
        self._interpreter.set_tensor(self._input_index, waveform)
        self._interpreter.invoke()
        return {k: self._interpreter.get_tensor(i).astype(np.float32, copy=True)
                for k, i in self._output_index.items()}

    def embed(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self.run(w)["embeddings"] for w in waveforms]

    def frame_scores(self, waveform: np.ndarray) -> np.ndarray:
        """Per-frame class scores [N, 521] (sigmoid outputs)."""
        return self.run(waveform)["scores"]

    def predict(self, waveform: np.ndarray) -> np.ndarray:
        """Clip scores: the mean of the frame scores, as in YAMNet's own inference example."""
        return self.frame_scores(waveform).mean(axis=0)

    def output_layer(self) -> tuple[np.ndarray, np.ndarray]:
        """The final dense layer, scores = sigmoid(embeddings @ W.T + b): (W [521, 1024], b [521]).

        The converter stored W as an int8 constant with one scale per output row
        (per-channel quantization along dimension 0). We find the only tensor shaped
        [521, 1024] among the interpreter's tensors and dequantize it as
        (q - zero_point[row]) * scale[row]; the bias is the only float tensor shaped [521].
        """
        weight = bias = None
        for detail in self._interpreter.get_tensor_details():
            shape = tuple(int(s) for s in detail["shape"])
            if shape == (N_CLASSES, EMBEDDING_DIM):
                weight = self._dequantized(detail)
            elif shape == (N_CLASSES,) and detail["dtype"] == np.float32 and bias is None:
                values = self._interpreter.get_tensor(detail["index"])
                bias = values.astype(np.float32, copy=True)
        if weight is None or bias is None:
            raise TeacherWeightsError(f"no [{N_CLASSES}, {EMBEDDING_DIM}] output layer found "
                                      f"in {self.weights_path}")
        return weight, bias

    def _dequantized(self, detail: dict) -> np.ndarray:
        values = self._interpreter.get_tensor(detail["index"])
        if values.dtype == np.float32:
            return values.copy()
        params = detail["quantization_parameters"]
        scales = np.asarray(params["scales"], dtype=np.float32)
        zero_points = np.asarray(params["zero_points"], dtype=np.float32)
        if scales.size == 1:  # per-tensor quantization
            return ((values.astype(np.float32) - zero_points[0]) * scales[0]).astype(np.float32)
        axis = params["quantized_dimension"]
        shape = [1] * values.ndim
        shape[axis] = -1
        return ((values.astype(np.float32) - zero_points.reshape(shape))
                * scales.reshape(shape)).astype(np.float32)

    def event_vectors(self) -> np.ndarray:
        """YAMNet's 521 source-event vectors [521, 1024]: the rows of its final dense layer."""
        return self.output_layer()[0]
