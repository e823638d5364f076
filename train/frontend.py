"""The torch twin of ``edgeaudio.frontend``: same steps, same constants, differentiable.

A test holds it equal to the numpy front end (max abs diff <= 1e-4 on real clips). The
filterbank can be a fixed buffer (mel) or a module that builds the matrix from learnable
parameters (the harmonic filterbank); either way ``filterbank_matrix()`` is what export freezes
into the model file.
"""
from __future__ import annotations

import torch
from torch import nn

from edgeaudio.frontend import FrontendSpec, encode_matrix, hann_window


class TorchFrontend(nn.Module):
    """``[batch, samples]`` waveform -> ``[batch, frames, bins]`` log features."""

    def __init__(self, spec: FrontendSpec, filterbank: nn.Module | None = None):
        super().__init__()
        self.spec = spec
        self.register_buffer("window", torch.from_numpy(hann_window(spec.win_length)),
                             persistent=False)
        self.learnable_filterbank = filterbank
        if filterbank is None:
            self.register_buffer("fixed_filterbank",
                                 torch.from_numpy(spec.filterbank_matrix()), persistent=False)

    def filterbank_matrix(self) -> torch.Tensor:
        if self.learnable_filterbank is not None:
            return self.learnable_filterbank()
        return self.fixed_filterbank

    def power_spectrum(self, wave: torch.Tensor) -> torch.Tensor:
        s = self.spec
        # float64 like the numpy front end: quiet bins are beyond float32's reach
        frames = wave.double().unfold(-1, s.win_length, s.hop_length)  # [B, frames, win]
        spec = torch.fft.rfft(frames * self.window.double(), n=s.n_fft, dim=-1)
        return spec.real ** 2 + spec.imag ** 2

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        power = self.power_spectrum(wave)
        fb = self.filterbank_matrix().double()
        return torch.log(power @ fb.T + self.spec.log_offset).float()

    def frozen_spec(self) -> FrontendSpec:
        """The spec with the current filterbank frozen into a stored matrix (for export)."""
        if self.learnable_filterbank is None:
            return self.spec
        with torch.no_grad():
            matrix = self.filterbank_matrix().detach().cpu().numpy()
        fb = {"kind": "matrix", **encode_matrix(matrix),
              "source": getattr(self.learnable_filterbank, "describe", lambda: {})()}
        return FrontendSpec(sample_rate=self.spec.sample_rate, n_fft=self.spec.n_fft,
                            win_length=self.spec.win_length, hop_length=self.spec.hop_length,
                            filterbank=fb, log_offset=self.spec.log_offset)
