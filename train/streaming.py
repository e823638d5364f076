"""Data larger than memory: clips decoded from disk when a step needs them, not all up front.

The in-memory path decodes every clip once before the first epoch and keeps the waveforms
(fast for small sets: ESC-50 at 16 kHz is about 640 MB). ``--stream`` keeps only each clip's
path and length (``StreamedWaves``) and, every epoch, ``torch.utils.data.DataLoader`` workers
decode (and resample) the clips of the coming steps while the student trains on the current
one (``epoch_clips``). The crops are then cut from the step's decoded clips by the same
``make_crops`` call, in the main process, from the same epoch generator: the crop offsets,
gains, mixup partners and masks are the single sequence of draws the in-memory path makes
(which a worker cannot draw ahead without changing it), so a streamed run trains exactly the
run the in-memory path trains, and memory holds a few steps' clips whatever the number of
clips.

What streaming cannot do: teacher-labelled mixtures (``--kd-mixtures``: a mixture needs its
partner clip at any step) and ``--contrastive`` (its unlabeled pool is held in memory); both
are refused. Teacher frames for ``--reg`` / ``--kd`` are held in memory (their size is that of
the embeddings, e.g. 40 KB per 5-s clip for YAMNet, an eighth of the clip's samples), and the
teachers' pass and held-out scoring decode the clips they read.

Under torchrun each rank decodes the clips of its own rows of every global batch; with mixup
a row's partner may be any row, so each rank then decodes the whole global batch.

Lengths come from one decoding pass at the start (``index_dataset``, in the loader's
workers), which is also where unreadable audio is found, as the in-memory path finds it.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from .data import Dataset, DatasetError, drop_items, refuse_unreadable


class StreamedWaves(Sequence):
    """A dataset's clips, decoded (mono float32 at ``rate``) each time one is read."""

    def __init__(self, paths: Sequence, rate: int, lengths: Sequence[int]):
        self.paths, self.rate = [str(p) for p in paths], int(rate)
        self.lengths = np.asarray(lengths, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i) -> np.ndarray:
        from edgeaudio.audio import load_audio

        wave = np.ascontiguousarray(load_audio(self.paths[int(i)], self.rate), np.float32)
        if len(wave) != self.lengths[int(i)]:
            raise DatasetError(f"{self.paths[int(i)]} decoded to {len(wave)} samples, "
                               f"{self.lengths[int(i)]} when the run started: it changed")
        return wave

    def length(self, i) -> int:
        """The clip's length in samples, without decoding it."""
        return int(self.lengths[int(i)])

    def subset(self, positions: Sequence[int]) -> "StreamedWaves":
        positions = list(positions)
        return StreamedWaves([self.paths[i] for i in positions], self.rate,
                             self.lengths[positions])


def _loader(dataset, loader_workers: int):
    """A loader of one item at a time in order, with a generator of its own: a loader draws
    its workers' seed from torch's global generator otherwise, which would move the run's
    dropout masks away from the in-memory run's."""
    import torch
    from torch.utils.data import DataLoader

    # workers from a fork server, not forked from this process: its threads (torch's, or
    # JAX's once the export room is imported) would be copied mid-state into each worker
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=loader_workers,
                      collate_fn=_as_is, generator=torch.Generator().manual_seed(0),
                      prefetch_factor=2 if loader_workers else None,
                      multiprocessing_context="forkserver" if loader_workers else None)


def _as_is(sample):
    """The loader's collate: the worker's dict of arrays, not converted to tensors."""
    return sample


class _ClipLengths:
    """Loader items for the index pass: (position, decoded length or the decoding error)."""

    def __init__(self, paths: Sequence, rate: int):
        self.paths, self.rate = list(paths), rate

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from edgeaudio.audio import load_audio
        from edgeaudio.errors import AudioError

        try:
            return i, len(load_audio(self.paths[i], self.rate)), None
        except AudioError as exc:
            return i, None, str(exc)


def index_dataset(dataset: Dataset, rate: int, *, skip_unreadable: bool = False,
                  progress: bool = False, loader_workers: int = 2
                  ) -> tuple[Dataset, StreamedWaves]:
    """(the dataset less its unreadable items, its clips as ``StreamedWaves``): every clip
    decoded once, in the loader's workers, for its length; unreadable audio is an error
    unless ``skip_unreadable`` (then listed, as ``data.decode_dataset`` lists it)."""
    from .progress import progress_bar

    paths = [item.path for item in dataset.items]
    lengths: list = [None] * len(paths)
    bad = []
    bar = progress_bar(len(paths), "indexing audio", "clip", enabled=progress)
    for i, n, error in _loader(_ClipLengths(paths, rate), loader_workers):
        if error is None:
            lengths[i] = n
        else:
            bad.append({"path": str(paths[i]), "reason": error})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    refuse_unreadable(bad, skip_unreadable)
    dataset, kept = drop_items(dataset, lengths, bad)
    return dataset, StreamedWaves([item.path for item in dataset.items], rate, kept)


class _StepClips:
    """Loader items, one per step: the step's clips this rank needs, decoded."""

    def __init__(self, waves: StreamedWaves, order: np.ndarray, batch_size: int,
                 rows: slice | None):
        self.waves, self.order, self.batch_size, self.rows = waves, order, batch_size, rows

    def __len__(self) -> int:
        return len(self.order) // self.batch_size

    def __getitem__(self, step: int) -> dict:
        idx = self.order[step * self.batch_size:(step + 1) * self.batch_size]
        needed = idx if self.rows is None else idx[self.rows]
        return {int(i): self.waves[i] for i in np.unique(needed)}


def epoch_clips(waves: StreamedWaves, order: np.ndarray, steps: int, batch_size: int, *,
                rows: slice | None = None, loader_workers: int = 2) -> Iterator[dict]:
    """Per step of an epoch, ``{item: waveform}`` for every clip of its global batch: decoded
    by ``loader_workers`` loader processes ahead of the step; with ``rows`` only the clips of
    those rows are decoded and the others are zeros of their length (all ``make_crops`` reads
    of a clip it does not cut for this rank is its length)."""
    order = np.asarray(order)[:steps * batch_size]
    for step, decoded in enumerate(_loader(_StepClips(waves, order, batch_size, rows),
                                           loader_workers)):
        if rows is not None:
            for i in order[step * batch_size:(step + 1) * batch_size]:
                if int(i) not in decoded:  # zeros are not touched until written: no memory
                    decoded[int(i)] = np.zeros(waves.length(i), np.float32)
        yield decoded
