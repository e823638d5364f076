"""Datasets for the train CLI: folder-per-class, CSV (path,label[,fold]) and the ESC-50 layout.

A dataset is a list of ``Item`` (path, label, fold) plus the ordered class names. Loading it
checks everything a run would trip over later and raises ``DatasetError`` naming the file:
missing or unreadable audio, duplicate paths, empty classes, empty or unknown labels, bad
folds. Nothing is dropped silently: files that are not audio (by extension) in a class folder
are *skipped and listed* in ``Dataset.skipped`` (the train command writes them to
``data_report.json``), and unreadable audio is an error unless the caller asks to skip it, in
which case it too is listed.

A run may keep a subset of the classes (``select_classes``: names, or ``esc10``) and draw an
unlabeled pool for contrastive regularization (``unlabeled_items``: folders of audio, CSVs whose
labels are ignored, or the clips of the other classes outside the held-out fold).

Waveforms are decoded once (``load_waveforms``) at the student's sample rate, mono float32.
Training batches are random crops with random gain (``make_crops``); each crop remembers where
it came from so that the teacher frames covering it can be sliced from the cache.
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgeaudio.errors import AudioError, EdgeAudioError
from edgeaudio.files import atomic_path

from .progress import progress_bar

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".opus")
LAYOUTS = ("esc50",)   # known dataset layouts (--layout)


class DatasetError(EdgeAudioError):
    """A dataset the train CLI cannot use as given; the message names the file and the fix."""


@dataclass(frozen=True)
class Item:
    path: Path
    label: str
    fold: int | None = None
    where: str = ""          # "labels.csv line 7", for error messages


@dataclass
class Dataset:
    items: list[Item]
    labels: list[str]                      # class names in output order
    kind: str                              # "folder", "csv", "esc50"
    source: str                            # what --data pointed at
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def targets(self) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.labels)}
        return np.array([index[item.label] for item in self.items], dtype=np.int64)

    @property
    def folds(self) -> list[int]:
        return sorted({item.fold for item in self.items if item.fold is not None})

    @property
    def has_folds(self) -> bool:
        return any(item.fold is not None for item in self.items)

    def report(self) -> dict:
        counts = {label: 0 for label in self.labels}
        for item in self.items:
            counts[item.label] += 1
        return {"source": self.source, "kind": self.kind, "n_items": len(self.items),
                "n_classes": len(self.labels), "folds": self.folds, "per_class": counts,
                "skipped": list(self.skipped)}


def require_classes(dataset: Dataset, what: str = "training") -> Dataset:
    """A classifier needs two classes at least: one class would give a model that names that
    class for everything it hears, silence included."""
    present = sorted({item.label for item in dataset.items})
    if len(present) < 2:
        only = f" (only {present[0]!r})" if present else ""
        raise DatasetError(f"{dataset.source}: {what} needs recordings of at least two "
                           f"classes{only}; add recordings of other sounds, e.g. a "
                           f"'background' class of everything else the microphone hears")
    return dataset


# ------------------------------------------------------------------------------ loading


def load_dataset(data, layout: str | None = None) -> Dataset:
    """``data``: a folder with one sub-folder per class, a CSV file, or (``layout="esc50"``)
    the ESC-50 folder (``meta/esc50.csv`` + ``audio/``)."""
    path = Path(data)
    if layout is not None:
        if layout != "esc50":
            raise DatasetError(f"unknown dataset layout {layout!r} (known: "
                               f"{', '.join(LAYOUTS)})")
        return load_esc50(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "meta" / "esc50.csv").is_file():
            return load_esc50(path)
        return load_folder(path)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return load_csv(path)
    raise DatasetError(f"{path}: expected a folder (one sub-folder per class) or a CSV file "
                       f"(path,label[,fold])")


def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def audio_files_under(folder) -> list[Path]:
    """Audio files under ``folder`` (recursive, hidden files left out), sorted; DatasetError
    when the folder is missing or holds none."""
    folder = Path(folder)
    if not folder.exists():
        raise DatasetError(f"audio folder not found: {folder}")
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and _is_audio(p))
    if not files:
        raise DatasetError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in "
                           "this folder or below it")
    return files


def load_folder(root: Path) -> Dataset:
    root = Path(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{root}: no class sub-folders (expected one sub-folder per class, "
                           f"holding its recordings)")
    items, skipped = [], []
    for stray in sorted(p for p in root.iterdir() if p.is_file()):
        skipped.append({"path": str(stray), "reason": "file at the top level (not in a class "
                                                      "sub-folder)"})
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file())
        audio = []
        for f in files:
            if _is_audio(f) and not f.name.startswith("."):
                audio.append(f)
            else:
                skipped.append({"path": str(f), "reason": "not an audio file (extension "
                                                          f"{f.suffix or 'none'})"})
        if not audio:
            raise DatasetError(f"{class_dir}: class folder {class_dir.name!r} holds no audio "
                               f"files ({', '.join(AUDIO_EXTENSIONS)}); remove it or add "
                               f"recordings")
        items += [Item(f, class_dir.name, None, str(f)) for f in audio]
    _check_duplicates(items)
    return Dataset(items, [d.name for d in class_dirs], "folder", str(root), skipped)


def load_csv(path: Path, labels: Sequence[str] | None = None) -> Dataset:
    """``path,label[,fold]`` with a header row; paths relative to the CSV's folder. A leading
    byte-order mark (spreadsheet programs write one) is read as such."""
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle, delimiter=delimiter))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read labels file ({exc})") from exc
    rows = [(i + 1, r) for i, r in enumerate(rows) if r and any(c.strip() for c in r)]
    if not rows:
        raise DatasetError(f"{path}: empty labels file (expected a header path,label[,fold])")
    header = [c.strip().lower() for c in rows[0][1]]
    if "path" not in header or "label" not in header:
        raise DatasetError(f"{path}: the first row must be a header naming the columns "
                           f"path,label[,fold]; got {','.join(rows[0][1])!r}")
    col_path, col_label = header.index("path"), header.index("label")
    col_fold = header.index("fold") if "fold" in header else None
    items = []
    for line, row in rows[1:]:
        where = f"{path} line {line}"
        if len(row) < len(header):
            raise DatasetError(f"{where}: expected {len(header)} columns "
                               f"({','.join(header)}), got {len(row)}")
        rel, label = row[col_path].strip(), row[col_label].strip()
        if not rel:
            raise DatasetError(f"{where}: empty path")
        if not label:
            raise DatasetError(f"{where}: {rel}: empty label")
        if labels is not None and label not in labels:
            raise DatasetError(f"{where}: {rel}: unknown label {label!r} "
                               f"(known: {', '.join(labels)})")
        fold = None
        if col_fold is not None:
            text = row[col_fold].strip()
            try:
                fold = int(text)
            except ValueError:
                raise DatasetError(f"{where}: {rel}: fold must be an integer, got {text!r}") \
                    from None
        audio = Path(rel) if Path(rel).is_absolute() else path.parent / rel
        if not audio.is_file():
            raise DatasetError(f"{where}: audio file not found: {audio}")
        items.append(Item(audio, label, fold, where))
    if not items:
        raise DatasetError(f"{path}: no rows after the header")
    if col_fold is not None and any(i.fold is None for i in items):
        raise DatasetError(f"{path}: some rows lack a fold")
    _check_duplicates(items)
    class_names = list(labels) if labels is not None else sorted({i.label for i in items})
    return Dataset(items, class_names, "csv", str(path))


def load_esc50(root: Path) -> Dataset:
    """ESC-50: ``meta/esc50.csv`` (filename, fold, target, category, ...); the csv names
    ``*.wav`` files, this copy has ``*.flac`` files with the same stem: either is accepted."""
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise DatasetError(f"{root}: not an ESC-50 folder ({meta} is missing)")
    with open(meta, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    names: dict[int, str] = {}
    items = []
    for line, row in enumerate(rows, start=2):
        where = f"{meta} line {line}"
        try:
            target, fold, category = int(row["target"]), int(row["fold"]), row["category"]
            filename = row["filename"]
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: malformed row ({exc})") from None
        if names.setdefault(target, category) != category:
            raise DatasetError(f"{where}: target {target} is {category!r} here but "
                               f"{names[target]!r} elsewhere")
        audio = root / "audio" / filename
        if not audio.is_file():
            candidates = [audio.with_suffix(ext) for ext in AUDIO_EXTENSIONS]
            found = [c for c in candidates if c.is_file()]
            if not found:
                raise DatasetError(f"{where}: audio file not found: {audio} (nor .flac etc.)")
            audio = found[0]
        items.append(Item(audio, category, fold, where))
    if sorted(names) != list(range(len(names))):
        raise DatasetError(f"{meta}: targets are not 0..{len(names) - 1}")
    _check_duplicates(items)
    return Dataset(items, [names[t] for t in range(len(names))], "esc50", str(root))


def esc10_labels(root) -> list[str]:
    """The ten categories of ESC-50's ``esc10`` column (``meta/esc50.csv``), by target."""
    meta = Path(root) / "meta" / "esc50.csv"
    with open(meta, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("esc10", "").strip() == "True"]
    return [c for _, c in sorted({(int(r["target"]), r["category"]) for r in rows})]


# ------------------------------------------------------------------------------ subsets


UNLABELED_REST = "rest"    # --unlabeled rest: the clips of the classes outside --classes


def select_classes(dataset: Dataset, classes: str | None) -> tuple[Dataset, Dataset]:
    """(the dataset restricted to ``classes``, the rest of it).

    ``classes``: comma-separated class names, or ``esc10`` (the ESC-50 layout's ESC-10 subset);
    None keeps every class (the dataset itself is returned, the rest is empty).
    """
    if not classes:
        return dataset, Dataset([], [], dataset.kind, dataset.source)
    if classes.strip().lower() == "esc10":
        if dataset.kind != "esc50":
            raise DatasetError("--classes esc10 selects ESC-50's esc10 column: it needs the "
                               "ESC-50 folder (--layout esc50)")
        wanted = set(esc10_labels(dataset.source))
    else:
        wanted = {name.strip() for name in classes.split(",") if name.strip()}
        unknown = sorted(wanted - set(dataset.labels))
        if unknown or not wanted:
            raise DatasetError(f"--classes: unknown class(es) {', '.join(unknown) or classes!r} "
                               f"in {dataset.source} (known: {', '.join(dataset.labels[:10])}"
                               f"{' ...' if len(dataset.labels) > 10 else ''})")

    def part(keep: bool) -> Dataset:
        return Dataset([i for i in dataset.items if (i.label in wanted) == keep],
                       [label for label in dataset.labels if (label in wanted) == keep],
                       dataset.kind, dataset.source, dataset.skipped if keep else [])

    return part(True), part(False)


def unlabeled_items(sources: Sequence[str], rest: Dataset | None,
                    held_out_fold: int | None, option: str = "--unlabeled") -> list[Item]:
    """The unlabeled pool named by ``--unlabeled`` (each a folder of audio, searched
    recursively; a CSV path,label[,fold] whose labels are ignored; or ``rest``: the clips of
    ``rest`` outside ``held_out_fold``). A file named twice is kept once. ``option`` names the
    flag in error messages (``--background`` reads its folders the same way)."""
    items: list[Item] = []
    for source in sources:
        if source == UNLABELED_REST:
            if rest is None or not rest.items:
                raise DatasetError(f"{option} rest: no clips outside the selected classes "
                                   "(give --classes, e.g. esc10, leaving some classes out)")
            items += [Item(i.path, "", i.fold, i.where) for i in rest.items
                      if held_out_fold is None or i.fold != held_out_fold]
            continue
        path = Path(source)
        if path.is_dir():
            try:
                files = audio_files_under(path)
            except DatasetError as exc:
                raise DatasetError(f"{option} {exc}") from None
            items += [Item(f, "", None, str(f)) for f in files]
        elif path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
            items += [Item(i.path, "", None, i.where) for i in load_csv(path).items]
        elif not path.exists():
            raise DatasetError(f"{option} {source}: no such folder or file")
        else:
            raise DatasetError(f"{option} {source}: expected a folder of audio, a CSV "
                               f"(path,label; labels ignored) or '{UNLABELED_REST}'")
    seen: set[str] = set()
    unique = []
    for item in items:
        key = os.path.realpath(item.path)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


BACKGROUND_SILENCE = "silence"   # --background token: quiet clips the run synthesizes


def with_background(dataset: Dataset, sources: Sequence[str], label: str, *, seed: int = 0,
                    synth_root: Path | None = None) -> Dataset:
    """``dataset`` plus a "none of these" class ``label`` (last in the label order) of the audio
    ``sources`` name: folders of audio, CSVs whose labels are ignored, and ``silence`` (quiet
    clips synthesized under ``synth_root``: digital silence and low noise, -65 to -30 dBFS, as
    many as the median class has and as long as its median clip). With folds, the background
    clips are dealt over the folds (seeded), so every split holds some. A model trained with it
    names something the user did not record as background instead of one of their classes."""
    if label in dataset.labels:
        raise DatasetError(f"--background-label {label!r} is already a class of "
                           f"{dataset.source}; choose another name")
    files = [s for s in sources if s != BACKGROUND_SILENCE]
    items = [Item(i.path, label, None, i.where)
             for i in unlabeled_items(files, None, None, option="--background")] if files else []
    if BACKGROUND_SILENCE in sources:
        if synth_root is None:
            raise DatasetError("--background silence needs a folder for the clips it makes")
        counts = np.bincount(dataset.targets, minlength=len(dataset.labels))
        seconds = float(np.median([_seconds(i.path) for i in dataset.items[:200]]))
        items += [Item(p, label, None, str(p)) for p in
                  synthesize_quiet_clips(synth_root, int(np.median(counts)), seconds, seed)]
    if not items:
        raise DatasetError("--background: no audio found in " + ", ".join(sources))
    known = {os.path.realpath(i.path) for i in dataset.items}
    clash = [i for i in items if os.path.realpath(i.path) in known]
    if clash:
        raise DatasetError(f"--background {clash[0].path} is also a labelled clip; the "
                           f"background must be audio of none of the classes")
    if dataset.has_folds:
        folds = dataset.folds
        order = np.random.default_rng([seed, 4099]).permutation(len(items))
        items = [Item(items[k].path, label, folds[pos % len(folds)], items[k].where)
                 for pos, k in enumerate(order)]
    return Dataset(dataset.items + items, dataset.labels + [label], dataset.kind,
                   dataset.source, dataset.skipped)


def _seconds(path) -> float:
    import soundfile as sf
    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate
    except RuntimeError:
        return 1.0


def synthesize_quiet_clips(root: Path, n: int, seconds: float, seed: int,
                           sample_rate: int = 16000) -> list[Path]:
    """``n`` seeded quiet clips (16-bit WAV) in ``root/quiet-<n>x<ms>ms-seed<k>``, made once:
    a fifth digital silence, the rest white or brown noise at -65 to -30 dBFS RMS (a quiet room
    to a noisy one: loud enough to pass the stream engine's -60 dBFS gate)."""
    import soundfile as sf
    folder = Path(root) / f"quiet-{n}x{int(round(seconds * 1000))}ms-seed{seed}"
    paths = [folder / f"quiet-{k:04d}.wav" for k in range(n)]
    if all(p.exists() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 7207])
    length = max(1, int(round(seconds * sample_rate)))
    for k, path in enumerate(paths):
        if k % 5 == 0:
            wave = np.zeros(length, np.float32)
        else:
            noise = rng.standard_normal(length)
            if rng.random() < 0.5:  # brown: most of its power low, as room rumble is
                noise = np.cumsum(noise)
                noise -= np.linspace(noise[0], noise[-1], length)
            rms = 10.0 ** (rng.uniform(-65.0, -30.0) / 20.0)
            wave = (noise * rms / max(np.sqrt(np.mean(noise ** 2)), 1e-12)).astype(np.float32)
        with atomic_path(path) as tmp:
            sf.write(str(tmp), wave, sample_rate, subtype="PCM_16", format="WAV")
    return paths


def _check_duplicates(items: Iterable[Item]) -> None:
    seen: dict[str, Item] = {}
    for item in items:
        key = os.path.realpath(item.path)
        if key in seen:
            raise DatasetError(f"duplicate path {item.path}: listed at {seen[key].where} and "
                               f"at {item.where}")
        seen[key] = item


# ------------------------------------------------------------------------------ splits


def parse_folds(text: str | None) -> list[int]:
    """"1-5", "1,3", "2" -> [1, 2, 3, 4, 5], [1, 3], [2]."""
    if text is None or str(text).strip() == "":
        return []
    folds = []
    for part in str(text).split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            try:
                lo, hi = int(a), int(b)
            except ValueError:
                raise DatasetError(f"bad fold range {part!r} (expected e.g. 1-5)") from None
            if hi < lo:
                raise DatasetError(f"bad fold range {part!r}")
            folds += list(range(lo, hi + 1))
        else:
            try:
                folds.append(int(part))
            except ValueError:
                raise DatasetError(f"bad fold {part!r} (expected an integer)") from None
    return folds


def split_indices(dataset: Dataset, test_fold: int | None, *, seed: int = 0,
                  test_fraction: float = 0.2, train_fraction: float = 1.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) item indices.

    With folds: ``test_fold`` is held out (default: the last fold). Without folds: a
    stratified, seeded ``test_fraction`` of every class is held out. ``train_fraction`` < 1
    keeps a stratified, seeded subset of the training items (the data-fraction ablation),
    at least one clip per class.
    """
    targets = dataset.targets
    n = len(targets)
    if dataset.has_folds:
        folds = np.array([item.fold for item in dataset.items])
        if test_fold is None:
            test_fold = max(dataset.folds)
        if test_fold not in dataset.folds:
            raise DatasetError(f"fold {test_fold} not in the dataset (folds: "
                               f"{', '.join(map(str, dataset.folds))})")
        test = np.flatnonzero(folds == test_fold)
        train = np.flatnonzero(folds != test_fold)
    else:
        if test_fold is not None:
            raise DatasetError(f"--fold {test_fold} given but {dataset.source} has no folds "
                               f"(a CSV can give them in a fold column)")
        rng = np.random.default_rng([seed, 7919])
        test_parts, train_parts = [], []
        for c in range(len(dataset.labels)):
            idx = np.flatnonzero(targets == c)
            idx = idx[rng.permutation(len(idx))]
            k = int(round(test_fraction * len(idx))) if len(idx) > 1 else 0
            k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
            test_parts.append(idx[:k])
            train_parts.append(idx[k:])
        test, train = np.sort(np.concatenate(test_parts)), np.sort(np.concatenate(train_parts))
    missing = [dataset.labels[c] for c in range(len(dataset.labels))
               if not np.any(targets[train] == c)]
    if missing:
        raise DatasetError(f"class(es) with no training clips: {', '.join(missing[:10])}"
                           + (" ..." if len(missing) > 10 else ""))
    if not 0.0 < train_fraction <= 1.0:
        raise DatasetError(f"train fraction must be in (0, 1], got {train_fraction}")
    if train_fraction < 1.0:
        rng = np.random.default_rng([seed, 104729])
        keep = []
        for c in range(len(dataset.labels)):
            idx = train[targets[train] == c]
            k = max(1, int(round(train_fraction * len(idx))))
            keep.append(np.sort(rng.choice(idx, size=k, replace=False)))
        train = np.sort(np.concatenate(keep))
    assert n == 0 or len(np.intersect1d(train, test)) == 0
    return train, test


def validation_split(dataset: Dataset, train_idx: np.ndarray, *, fold: int | None = None,
                     fraction: float = 0.1, seed: int = 0, stream: int = 6007
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) inside the training items: every choice a run makes (the epoch it
    keeps, thresholds, teachers) is made on the validation clips, never on the test split.

    With ``fold``: the training items of that fold (a dataset's own validation split).
    Otherwise ``fraction`` of every class, seeded (at least one clip of each class that has
    two or more; 0 gives no validation clips)."""
    train_idx = np.asarray(train_idx)
    targets = dataset.targets
    if fold is not None:
        folds = np.array([item.fold for item in dataset.items])
        if not dataset.has_folds or fold not in dataset.folds:
            raise DatasetError(f"validation fold {fold} not in {dataset.source} (folds: "
                               f"{', '.join(map(str, dataset.folds)) or 'none'})")
        val = train_idx[folds[train_idx] == fold]
        if not len(val):
            raise DatasetError(f"validation fold {fold} is the test fold; choose another")
        fit = np.setdiff1d(train_idx, val)
        missing = sorted({dataset.labels[c] for c in targets[train_idx]} -
                         {dataset.labels[c] for c in targets[fit]})
        if missing:
            raise DatasetError(f"with fold {fold} for validation, class(es) "
                               f"{', '.join(missing[:10])} have no training clips left")
        return fit, val
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"validation fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng([seed, stream])
    val = []
    for c in np.unique(targets[train_idx]):
        idx = train_idx[targets[train_idx] == c]
        k = min(len(idx) - 1, max(1, int(round(fraction * len(idx))))) if fraction > 0 else 0
        if k > 0:
            val.append(rng.choice(idx, size=k, replace=False))
    val = np.sort(np.concatenate(val)) if val else np.array([], dtype=np.int64)
    return np.setdiff1d(train_idx, val), val


# ------------------------------------------------------------------------------ audio


def load_waveforms(items: Sequence[Item], sample_rate: int, *, skip_unreadable: bool = False,
                   progress: bool = False) -> tuple[list[np.ndarray], list[dict]]:
    """Decode every item (mono float32 at ``sample_rate``).

    Returns (waveforms, skipped). Unreadable audio raises ``DatasetError`` naming every bad
    file, unless ``skip_unreadable``: then the bad items get ``None`` and are listed in
    ``skipped``.
    """
    from edgeaudio.audio import load_audio

    waves: list[np.ndarray | None] = []
    bad = []
    bar = progress_bar(len(items), "decoding audio", "clip", enabled=progress)
    clipped: list[str] = []
    quiet = _Collect(clipped)
    logger = logging.getLogger("edgeaudio")
    logger.addFilter(quiet)
    try:
        for item in items:
            try:
                wave = load_audio(item.path, sample_rate)
            except AudioError as exc:
                bad.append({"path": str(item.path), "reason": str(exc)})
                waves.append(None)
                continue
            finally:
                if bar is not None:
                    bar.update(1)
            waves.append(np.ascontiguousarray(wave, dtype=np.float32))
    finally:
        logger.removeFilter(quiet)
        if bar is not None:
            bar.close()
    if clipped:
        logger.warning("%d of %d clips have clipped samples (e.g. %s); kept as they are",
                       len(clipped), len(items), clipped[0])
    refuse_unreadable(bad, skip_unreadable)
    return waves, bad


def refuse_unreadable(bad: list[dict], skip_unreadable: bool) -> None:
    """The error for unreadable clips (``{"path", "reason"}`` each), unless they are skipped."""
    if bad and not skip_unreadable:
        listed = "; ".join(b["reason"] for b in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise DatasetError(f"{len(bad)} unreadable audio file(s): {listed}{more}. Fix or remove "
                           f"them, or pass --skip-unreadable to skip them (they are then "
                           f"listed in data_report.json)")


def drop_items(dataset: Dataset, waves: list, skipped: list[dict]) -> tuple[Dataset, list]:
    """Remove items whose waveform is None (after ``skip_unreadable``), recording them."""
    if not skipped:
        return dataset, waves
    keep = [i for i, w in enumerate(waves) if w is not None]
    items = [dataset.items[i] for i in keep]
    reasons = [dict(s, reason=f"unreadable audio: {s['reason']}") for s in skipped]
    new = Dataset(items, dataset.labels, dataset.kind, dataset.source,
                  dataset.skipped + reasons)
    counts = {label: 0 for label in new.labels}
    for item in items:
        counts[item.label] += 1
    empty = [label for label, count in counts.items() if count == 0]
    if empty:
        raise DatasetError(f"class(es) left without readable audio: {', '.join(empty)}")
    return new, [waves[i] for i in keep]


def decode_dataset(dataset: Dataset, sample_rate: int, *, skip_unreadable: bool = False,
                   progress: bool = False) -> tuple[Dataset, list]:
    """(the dataset less its unreadable items, their waveforms): ``load_waveforms`` then
    ``drop_items``, as every run decodes its clips."""
    waves, bad = load_waveforms(dataset.items, sample_rate, skip_unreadable=skip_unreadable,
                                progress=progress)
    return drop_items(dataset, waves, bad)


class _Collect(logging.Filter):
    """Gathers the runtime's per-file clipping warnings into one summary line."""

    def __init__(self, sink: list):
        super().__init__()
        self.sink = sink

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "full scale (clipping)" in message:
            self.sink.append(message.split(":")[0])
            return False
        return True


@dataclass
class Crops:
    """A batch of training crops: ``waves [B, crop]`` and, per crop, its clip and the span
    it covers in seconds of that clip (for slicing teacher frames)."""

    waves: np.ndarray
    clip_index: np.ndarray       # dataset item index of each crop
    start_s: np.ndarray          # crop start within the clip (s); may be < 0 (zero padding)
    end_s: np.ndarray
    clip_s: np.ndarray           # clip duration (s)


def make_crops(waves: Sequence[np.ndarray], indices: np.ndarray, crop_samples: int,
               sample_rate: int, rng: np.random.Generator, *, gain_db: float = 0.0,
               speed: float = 0.0, shift_seconds: float = 0.0) -> Crops:
    """Random crops of ``crop_samples`` (clips shorter than that are zero-padded at a random
    offset), each scaled by a random gain in ``[-gain_db, +gain_db]`` dB. ``speed`` > 0 plays
    each crop at a random rate in ``[1 - speed, 1 + speed]`` (pitch and tempo together, as
    speech recipes perturb speakers): a crop spans ``crop_samples * rate`` samples of the clip,
    resampled linearly to ``crop_samples``. ``shift_seconds`` > 0 moves each crop up to that far
    beyond the clip's ends (zeros there), so a clip as long as the crop is also seen shifted, as a
    streaming window sees a sound it is not aligned with."""
    batch = np.zeros((len(indices), crop_samples), dtype=np.float32)
    starts = np.zeros(len(indices))
    spans = np.full(len(indices), crop_samples / sample_rate)
    clip_s = np.zeros(len(indices))
    # drawn for every crop when on (one stream of draws whatever the clips are); none when off
    rates = rng.uniform(1.0 - speed, 1.0 + speed, size=len(indices)) if speed > 0 else None
    for row, idx in enumerate(indices):
        wave = waves[idx]
        n = len(wave)
        clip_s[row] = n / sample_rate
        span = crop_samples if rates is None else max(2, int(round(crop_samples * rates[row])))
        segment = np.zeros(span, dtype=np.float32)
        if shift_seconds > 0:  # the start anywhere from shift before the plain range to after it
            reach = int(round(shift_seconds * sample_rate))
            start = int(rng.integers(min(0, n - span) - reach, max(0, n - span) + reach + 1))
            lo, hi = max(0, start), min(n, start + span)
            if hi > lo:
                segment[lo - start:hi - start] = wave[lo:hi]
            starts[row] = start / sample_rate
        elif n >= span:
            offset = int(rng.integers(0, n - span + 1))
            segment[:] = wave[offset:offset + span]
            starts[row] = offset / sample_rate
        else:
            pad = int(rng.integers(0, span - n + 1))
            segment[pad:pad + n] = wave
            starts[row] = -pad / sample_rate
        if span != crop_samples:
            segment = np.interp(np.linspace(0.0, span - 1, crop_samples),
                                np.arange(span), segment).astype(np.float32)
            spans[row] = span / sample_rate
        batch[row] = segment
    if gain_db > 0:
        gains = 10.0 ** (rng.uniform(-gain_db, gain_db, size=len(indices)) / 20.0)
        batch *= gains[:, None].astype(np.float32)
    return Crops(batch, np.asarray(indices), starts, starts + spans, clip_s)


def wave_length(waves: Sequence, i) -> int:
    """A clip's length in samples: a streamed set's from its index, without decoding
    (``edgeaudio.train.streaming``), else the array's."""
    return waves.length(i) if hasattr(waves, "length") else len(waves[i])


def clip_batches(waves: Sequence[np.ndarray], indices: np.ndarray, min_samples: int,
                 batch_size: int = 32):
    """Whole clips (zero-padded to ``min_samples``) in batches of equal length, for
    evaluation: yields (positions into ``indices``, float32 tensor ``[b, S]``)."""
    import torch

    by_length: dict[int, list[int]] = {}
    for pos, idx in enumerate(indices):
        by_length.setdefault(max(wave_length(waves, idx), min_samples), []).append(pos)
    for length, positions in sorted(by_length.items()):
        for start in range(0, len(positions), batch_size):
            chunk = positions[start:start + batch_size]
            batch = np.zeros((len(chunk), length), dtype=np.float32)
            for row, pos in enumerate(chunk):
                wave = waves[indices[pos]]
                batch[row, :len(wave)] = wave
            yield chunk, torch.from_numpy(batch)


def frames_covering(n_frames: int, clip_s: float, start_s: float, end_s: float
                    ) -> tuple[int, int]:
    """Indices [a, b) of the teacher frames (``n_frames`` spread evenly over the clip, the
    convention of ``align_frames``) that a crop [start_s, end_s) touches; at least one."""
    if clip_s <= 0:
        return 0, n_frames
    lo = max(0.0, start_s) / clip_s * n_frames
    hi = min(clip_s, end_s) / clip_s * n_frames
    a = int(np.floor(lo + 1e-9))
    b = int(np.ceil(hi - 1e-9))
    a = min(max(a, 0), n_frames - 1)
    b = min(max(b, a + 1), n_frames)
    return a, b
