"""EfficientAT ``mn04_as`` (Schmid et al.) as a teacher, in plain torch.

MobileNetV3 at width 0.4 with channel squeeze-excitation, trained on AudioSet (527 classes) by
distillation from a PaSST ensemble. The modules and their names follow fschmid56/EfficientAT
(models/mn/model.py, models/mn/block_types.py, models/preprocess.py) so that the released
``mn04_as_mAP_432.pt`` loads with ``load_state_dict(strict=True)``; torchvision and torchaudio
are not needed (ConvNormActivation and the Kaldi mel banks are re-written here).

Front end (AugmentMelSTFT in eval mode): 32 kHz audio, pre-emphasis y[n] = x[n+1] - 0.97 x[n],
|STFT|^2 with n_fft 1024, a symmetric 800-sample Hann window, hop 320, centre reflect padding;
128 Kaldi mel bands from 0 to 15 kHz; ``(log(mel + 1e-5) + 4.5) / 5``.

Network: input [B, 1, 128 mels, T frames]; stride 2 in the first conv and in four blocks, so
the last feature map is [B, 384, 4, ceil(T / 32)]. Embedding per clip: that map averaged over
frequency only, [ceil(T / 32), 384], one frame per 32 x 320 samples = 0.32 s. Its mean over time
is exactly the network's 384-d pooled feature (the classifier input), because global average
pooling = mean over time of the mean over frequency.

The classifier is an MLP (384 -> 512 -> hardswish -> 527), so there are no linear source-event
vectors in the 384-d embedding space; ``event_vectors`` says so.

Inputs are 16 kHz (the rate of the project's data) and are resampled to 32 kHz with soxr. On
16 kHz material the bands above 8 kHz stay empty; the model still tags such audio well.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import soxr
import torch
from torch import nn

from edgeaudio import files

from ..freezing import PartlyFrozen
from .base import Teacher, TeacherWeightsError, as_waveform, require_file

MODEL_SAMPLE_RATE = 32000
N_FFT = 1024
WIN_LENGTH = 800
HOP_LENGTH = 320
N_MELS = 128
FMIN = 0.0
FMAX = 15000.0  # EfficientAT: sr // 2 - fmax_aug_range // 2 with fmax_aug_range 2000
NETWORK_TIME_STRIDE = 32
N_CLASSES = 527

# YAMNet's 521 classes are the AudioSet 527 (class_labels_indices.csv order) minus these six.
# Inserting them at their AudioSet indices into YAMNet's class map rebuilds the 527 list.
# Checked by aligning the AudioSet ontology ids (mid) of both lists: every other id matches in
# order, and real ESC-50 dog clips score highest on index 74 "Dog" / 75 "Bark".
_AUDIOSET_ONLY_CLASSES = [
    (1, "/m/05zppz", "Male speech, man speaking"),
    (2, "/m/02zsn", "Female speech, woman speaking"),
    (12, "/m/04gy_2", "Battle cry"),
    (32, "/t/dd00003", "Male singing"),
    (33, "/t/dd00004", "Female singing"),
    (277, "/t/dd00032", "Funny music"),
]


def audioset_class_names(yamnet_class_map_csv: Path) -> list[str]:
    """The 527 AudioSet display names in class_labels_indices.csv order."""
    with open(yamnet_class_map_csv, newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: int(r["index"]))
    names = [row["display_name"] for row in rows]
    for index, _mid, display_name in _AUDIOSET_ONLY_CLASSES:  # ascending: indices stay valid
        names.insert(index, display_name)
    if len(names) != N_CLASSES:
        raise TeacherWeightsError(f"{yamnet_class_map_csv} does not give {N_CLASSES} AudioSet "
                                  f"classes ({len(names)})")
    return names


# ----------------------------------------------------------------------------- front end

def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: int, fmin: float,
                    fmax: float) -> np.ndarray:
    """Kaldi's triangular mel filters (torchaudio.compliance.kaldi.get_mel_banks, no VTLN).

    Mel = 1127 ln(1 + f / 700); triangles are linear in mel, over the n_fft / 2 bins below
    Nyquist. A zero column is appended for the Nyquist bin, as EfficientAT does, giving
    float32 [n_mels, n_fft // 2 + 1].
    """
    def mel(freq):
        return 1127.0 * np.log(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)

    mel_low, mel_high = mel(fmin), mel(fmax)
    mel_delta = (mel_high - mel_low) / (n_mels + 1)
    band = np.arange(n_mels, dtype=np.float64)[:, None]
    left = mel_low + band * mel_delta
    centre = mel_low + (band + 1.0) * mel_delta
    right = mel_low + (band + 2.0) * mel_delta
    bin_mel = mel(sample_rate / n_fft * np.arange(n_fft // 2))[None, :]
    up_slope = (bin_mel - left) / (centre - left)
    down_slope = (right - bin_mel) / (right - centre)
    banks = np.maximum(0.0, np.minimum(up_slope, down_slope))
    return np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)


class EfficientATMel(nn.Module):
    """EfficientAT's AugmentMelSTFT without its training-time augmentation: [B, S] -> [B, 128, T].

    T = 1 + (S - 1) // 320 (pre-emphasis drops one sample, the centred STFT adds one frame).
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("preemphasis", torch.tensor([[[-0.97, 1.0]]]), persistent=False)
        self.register_buffer("window", torch.hann_window(WIN_LENGTH, periodic=False),
                             persistent=False)
        self.register_buffer("mel_banks", torch.from_numpy(
            kaldi_mel_banks(N_MELS, N_FFT, MODEL_SAMPLE_RATE, FMIN, FMAX)), persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = nn.functional.conv1d(waveforms.unsqueeze(1), self.preemphasis).squeeze(1)
        spectrum = torch.stft(x, N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH,
                              window=self.window, center=True, pad_mode="reflect",
                              normalized=False, return_complex=True)
        power = spectrum.real ** 2 + spectrum.imag ** 2
        melspec = torch.matmul(self.mel_banks, power)
        return (torch.log(melspec + 1e-5) + 4.5) / 5.0


# ----------------------------------------------------------------------------- network

def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet channel rounding: to a multiple of divisor, never below 90 % of value."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvNormActivation(nn.Sequential):
    """conv (no bias) -> BatchNorm -> optional activation; indices 0, 1, 2 as in torchvision."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1,
                 activation=None):
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                            padding=(kernel_size - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(out_channels, eps=0.001, momentum=0.01)]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel squeeze-excitation: mean over (freq, time) -> fc1 -> ReLU -> fc2 -> sigmoid."""

    def __init__(self, channels: int, squeeze_channels: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze_channels)
        self.fc2 = nn.Linear(squeeze_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3))
        scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(scale))))
        return x * scale[:, :, None, None]


class ConcurrentSEBlock(nn.Module):
    """EfficientAT's container of concurrent SE layers, max-aggregated. mn04_as uses only the
    channel SE (se_dims "c"), so the max over one layer is that layer; the ModuleList keeps the
    state_dict names ("conc_se_layers.0.fc1")."""

    def __init__(self, channels: int, squeeze_ratio: int = 4):
        super().__init__()
        self.conc_se_layers = nn.ModuleList(
            [SqueezeExcitation(channels, make_divisible(channels // squeeze_ratio, 8))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([layer(x) for layer in self.conc_se_layers], dim=0)
        return outputs.max(dim=0).values


class InvertedResidual(nn.Module):
    """expand 1x1 (if widened) -> depthwise kxk (stride) -> SE (optional) -> project 1x1."""

    def __init__(self, in_ch, kernel, expanded_ch, out_ch, use_se, use_hardswish, stride):
        super().__init__()
        activation = nn.Hardswish if use_hardswish else nn.ReLU
        layers = []
        if expanded_ch != in_ch:
            layers.append(ConvNormActivation(in_ch, expanded_ch, 1, activation=activation))
        layers.append(ConvNormActivation(expanded_ch, expanded_ch, kernel, stride=stride,
                                         groups=expanded_ch, activation=activation))
        if use_se:
            layers.append(ConcurrentSEBlock(expanded_ch))
        layers.append(ConvNormActivation(expanded_ch, out_ch, 1, activation=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


# MobileNetV3-Large at width 1.0: input, kernel, expanded, output, SE, hardswish, stride.
MOBILENET_V3_LARGE = [
    (16, 3, 16, 16, False, False, 1),
    (16, 3, 64, 24, False, False, 2),
    (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2),
    (40, 5, 120, 40, True, False, 1),
    (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2),
    (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1),
    (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2),
    (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
]


class MobileNetV3Audio(nn.Module):
    """EfficientAT's MN with the "mlp" head. forward(mel [B, 1, F, T]) -> (logits, feature map)."""

    def __init__(self, width_mult: float = 0.4, num_classes: int = N_CLASSES):
        super().__init__()
        def channels(width_one: int) -> int:
            return make_divisible(width_one * width_mult, 8)

        first_out = channels(MOBILENET_V3_LARGE[0][0])
        layers = [ConvNormActivation(1, first_out, 3, stride=2, activation=nn.Hardswish)]
        for in_ch, kernel, expanded, out_ch, use_se, use_hs, stride in MOBILENET_V3_LARGE:
            layers.append(InvertedResidual(channels(in_ch), kernel, channels(expanded),
                                           channels(out_ch), use_se, use_hs, stride))
        last_in = channels(MOBILENET_V3_LARGE[-1][3])
        self.feature_dim = 6 * last_in
        layers.append(ConvNormActivation(last_in, self.feature_dim, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(start_dim=1),
            nn.Linear(self.feature_dim, channels(1280)),
            nn.Hardswish(),
            nn.Dropout(p=0.2),
            nn.Linear(channels(1280), num_classes),
        )

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature_map = self.features(mel)
        return self.classifier(feature_map), feature_map


class EfficientATClassifier(PartlyFrozen):
    """mn04 for fine-tuning on a sound task: 32 kHz waveform ``[B, S]`` -> logits.

    EfficientAT's own way to a new task (models/mn/model.py drops only ``classifier.5`` when
    the class count differs): the AudioSet network whole, its MLP head kept (384 -> 512 ->
    hardswish -> dropout) and only the last layer replaced by a new ``512 -> n_classes`` one.
    ``pretrained``: True loads ``mn04_as_mAP_432.pt`` from the shared folder, a path loads
    that file, False starts from random weights.

    The member interface of ``edgeaudio.train.teachers.fitted`` (shared with
    ``ImageNetAudioClassifier``): ``embed`` ``[B, T', 384]`` (feature map averaged over
    frequency, 0.32 s per frame), ``pooled`` (its mean over time), ``logits_from_pooled``,
    ``forward``, ``parameter_groups(freeze_blocks)``, ``settings()``.
    """

    arch = "efficientat_mn04"
    sample_rate = MODEL_SAMPLE_RATE
    embedding_hop_seconds = HOP_LENGTH * NETWORK_TIME_STRIDE / MODEL_SAMPLE_RATE
    linear_head = None  # the head is an MLP: no class vectors in the embedding space
    min_samples = N_FFT + 1  # the centred STFT's reflect padding needs this many

    def __init__(self, n_classes: int = 50, pretrained: bool | str | os.PathLike = True,
                 frontend: dict | None = None, shared_dir: str | os.PathLike | None = None):
        super().__init__()
        self.n_classes = int(n_classes)
        self.frontend = EfficientATMel()
        self.network = MobileNetV3Audio(width_mult=0.4)
        if pretrained is not False and pretrained is not None:
            path = Path(pretrained) if not isinstance(pretrained, bool) else require_file(
                files.shared_dir(shared_dir) / "weights" / "efficientat" /
                "mn04_as_mAP_432.pt", "EfficientAT mn04_as weights")
            self.network.load_state_dict(torch.load(path, map_location="cpu",
                                                    weights_only=True), strict=True)
        last = self.network.classifier[-1]
        self.network.classifier[-1] = nn.Linear(last.in_features, self.n_classes)
        self.pretrained = pretrained is not False and pretrained is not None
        self.feature_dim = self.network.feature_dim

    def settings(self) -> dict:
        return {"arch": self.arch, "n_classes": self.n_classes, "frontend": {}}

    def feature_map(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.shape[-1] < self.min_samples:
            wave = nn.functional.pad(wave, (0, self.min_samples - wave.shape[-1]))
        return self.network.features(self.frontend(wave).unsqueeze(1))

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` -> ``[B, T', 384]``."""
        return self.feature_map(wave).mean(dim=2).transpose(1, 2)

    def pooled(self, wave: torch.Tensor) -> torch.Tensor:
        return self.feature_map(wave).mean(dim=(2, 3))

    def logits_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.network.classifier[2:](pooled)  # after the classifier's own pooling

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.logits_from_pooled(self.pooled(wave))

    def parameter_groups(self, freeze_blocks: int = 0) -> list[nn.Parameter]:
        """Trainable parameters with the first conv and the first ``freeze_blocks`` inverted
        residual blocks (of 15) frozen; frozen modules keep their BatchNorm statistics."""
        if freeze_blocks <= 0:
            return [p for p in self.parameters() if p.requires_grad]
        modules = list(self.network.features.children())[:1 + freeze_blocks]
        return self.freeze(modules)


# ----------------------------------------------------------------------------- teacher

class EfficientATTeacher(Teacher):
    name = "efficientat"
    sample_rate = 16000  # what embed() takes; resampled to 32 kHz inside
    hop_seconds = HOP_LENGTH * NETWORK_TIME_STRIDE / MODEL_SAMPLE_RATE  # 0.32 s
    dim = 384
    # Shorter clips are zero-padded to this (at 32 kHz) so the STFT's reflect padding is valid.
    min_model_samples = N_FFT + 1

    def __init__(self, shared_dir: str | os.PathLike | None = None):
        shared = files.shared_dir(shared_dir)
        self.weights_path = require_file(shared / "weights" / "efficientat" / "mn04_as_mAP_432.pt",
                                         "EfficientAT mn04_as weights")
        self.class_names = audioset_class_names(require_file(
            shared / "weights" / "yamnet" / "yamnet_class_map.csv",
            "YAMNet class map (source of the AudioSet class names)"))
        self.frontend = EfficientATMel().eval()
        self.model = MobileNetV3Audio(width_mult=0.4).eval()
        state_dict = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state_dict, strict=True)
        if self.model.feature_dim != self.dim:
            raise TeacherWeightsError(f"unexpected feature size {self.model.feature_dim}")

    def _to_model_rate(self, waveform: np.ndarray) -> np.ndarray:
        resampled = soxr.resample(as_waveform(waveform), self.sample_rate, MODEL_SAMPLE_RATE)
        if resampled.size < self.min_model_samples:
            resampled = np.pad(resampled, (0, self.min_model_samples - resampled.size))
        return np.ascontiguousarray(resampled, dtype=np.float32)

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, S] at 32 kHz -> (logits [B, 527], feature map [B, 384, F', T'])."""
        mel = self.frontend(torch.from_numpy(batch))
        return self.model(mel.unsqueeze(1))

    def embed(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        # One clip per forward pass: on one thread, batching equal-length clips measured no
        # faster (8 x 5 s clips: 37 ms vs 31 ms per clip), and it keeps memory flat.
        embeddings = []
        for waveform in waveforms:
            _, feature_map = self._forward(self._to_model_rate(waveform)[None])
            per_frame = feature_map[0].mean(dim=1).transpose(0, 1)  # pool frequency, keep time
            embeddings.append(per_frame.numpy().astype(np.float32, copy=True))
        return embeddings

    def logits(self, waveform: np.ndarray) -> np.ndarray:
        logits, _ = self._forward(self._to_model_rate(waveform)[None])
        return logits[0].numpy().copy()

    def predict(self, waveform: np.ndarray) -> np.ndarray:
        """Clip-level AudioSet probabilities [527] (sigmoid of the logits)."""
        logits = self.logits(waveform).astype(np.float64)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
