"""Streaming-aware model files: the graph is one call of a causal network on a chunk of
frames, with the convolution context it carries from call to call as extra inputs and outputs
(the ``streaming`` field of ``edgeaudio.modelfile.ModelInfo``; the runtime feeds each call's
``next_state_i`` back as the next call's ``state_i``, zeros at the start of a recording).

Here: the names of the graph's inputs and outputs, its example inputs, and the calibration
calls for the int8 writers (chunks of real recordings with the states the audio before them
left, not zeros).
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from edgeaudio.modelfile import ModelInfo

FEATURES, LOGITS = "features", "logits"


def state_input(i: int) -> str:
    return f"state_{i}"


def state_output(i: int) -> str:
    return f"next_state_{i}"


def streaming_section(state_shapes, chunk_frames: int, window_chunks: int) -> dict:
    """The metadata's ``streaming`` field for a graph with these states."""
    return {"chunk_frames": int(chunk_frames), "window_chunks": int(window_chunks),
            "features": FEATURES, "logits": LOGITS,
            "states": [{"input": state_input(i), "output": state_output(i),
                        "shape": [int(d) for d in shape]}
                       for i, shape in enumerate(state_shapes)]}


def input_names(info: ModelInfo) -> list[str]:
    return [FEATURES] + [s["input"] for s in (info.streaming or {}).get("states", [])]


def output_names(info: ModelInfo) -> list[str]:
    return [LOGITS] + [s["output"] for s in (info.streaming or {}).get("states", [])]


def example_call(info: ModelInfo) -> tuple[torch.Tensor, ...]:
    """The graph's inputs for one call: the features, and a streaming graph's states (zeros)."""
    features = torch.zeros(1, info.n_frames, info.frontend.n_bins)
    states = (info.streaming or {}).get("states", [])
    return (features, *(torch.zeros(s["shape"]) for s in states))


class NamedCall(nn.Module):
    """A streaming call with keyword inputs and a dict of outputs: litert-torch names a
    TFLite signature's inputs and outputs after them (positional ones become args_0, ...)."""

    def __init__(self, step: nn.Module, n_states: int):
        super().__init__()
        self.step, self.n_states = step, int(n_states)

    def forward(self, features: torch.Tensor, **states: torch.Tensor) -> dict:
        out = self.step(features, *(states[state_input(i)] for i in range(self.n_states)))
        return {LOGITS: out[0], **{state_output(i): s for i, s in enumerate(out[1:])}}


def converter_call(network: nn.Module, info: ModelInfo):
    """(module, args, kwargs) to hand a converter: the network on its window, or for a
    streaming graph the named call on keyword inputs."""
    example = example_call(info)
    if info.streaming is None:
        return network, example, {}
    named = NamedCall(network, len(info.streaming["states"])).eval()
    return named, (), dict(zip(input_names(info), example))


def calibration_calls(step: nn.Module, feature_runs: list[np.ndarray], n: int,
                      seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    """``n`` calls' inputs (each a tuple of float32 arrays with their batch dimension, in
    ``input_names`` order) drawn from running the float ``step`` over whole recordings'
    features ``[frames, bins]`` from zero states."""
    chunk = int(step.chunk_frames)
    calls = []
    with torch.no_grad():
        for frames in feature_runs:
            states = step.zero_states()
            for start in range(0, len(frames) - chunk + 1, chunk):
                x = torch.from_numpy(np.ascontiguousarray(frames[None, start:start + chunk],
                                                          np.float32))
                calls.append((x.numpy(), *(s.numpy() for s in states)))
                _, *states = step(x, *states)
    random.Random(seed).shuffle(calls)
    return calls[:n]


def streaming_calibration(step: nn.Module, clips: list, info: ModelInfo, n: int = 200,
                          seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    """``n`` calibration calls from training clips (shuffled; whole clips through the numpy
    front end, as the runtime computes them), for ``calibration_calls``."""
    from edgeaudio.frontend import Frontend

    from .clips import read_clip
    from .errors import CalibrationError

    frontend = Frontend(info.frontend)
    order = list(clips)
    random.Random(seed).shuffle(order)
    runs, calls = [], 0
    for clip in order:
        wave = read_clip(clip, info)
        if wave is None or len(wave) < info.chunk_samples:
            continue
        runs.append(frontend(wave))
        calls += len(runs[-1]) // int(step.chunk_frames)
        if calls >= 4 * n:  # a spread of positions in many clips, not every chunk of a few
            break
    if not runs:
        raise CalibrationError(f"none of the {len(order)} calibration clips could be read "
                               f"(or all are shorter than one {info.chunk_seconds:.2f}-s chunk)")
    return calibration_calls(step, runs, n, seed)
