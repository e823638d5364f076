"""Training settings: the configuration classes, their defaults, and configuration files.

Each kind of run has one dataclass of settings (``TrainConfig`` here for the harmonic and
log-mel students; ``MultiViewConfig`` and ``TeacherFitConfig`` beside their loops). Its field
defaults are the only definition of each default: the CLI's options default to "not given" and
take the class's value, and ``--help`` shows it from there.

``edgeaudio train --config FILE`` reads a TOML (``.toml``) or YAML (``.yaml`` / ``.yml``) file
whose keys are the field names (``epochs = 40``, ``teachers = ["yamnet", "efficientat"]``);
options given on the command line win over the file, the file over the defaults. A key that no
field has is refused with the known keys listed, so a typo never trains silently with a
default.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from edgeaudio.errors import EdgeAudioError

from .contrastive import LAMBDA
from .data import UNLABELED_REST
from .losses import DEFAULT_ALPHA, METHODS, REGULARIZERS


class ConfigError(EdgeAudioError):
    pass


class TrainError(EdgeAudioError):
    pass


class Settings:
    """What every configuration dataclass shares: JSON-safe dicts both ways, renamed keys of
    older runs (``RENAMED``: old -> new) read under their new names, and the defaults."""

    RENAMED: dict = {}

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        d = {cls.RENAMED.get(k, k): v for k, v in d.items()}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def default(cls, name: str):
        """The field's default (what an option not given means)."""
        for f in fields(cls):
            if f.name == name:
                if f.default is not MISSING:
                    return f.default
                if f.default_factory is not MISSING:
                    return f.default_factory()
                raise KeyError(f"{cls.__name__}.{name} has no default")
        raise KeyError(f"{cls.__name__} has no setting {name!r}")

    @classmethod
    def known_keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def build(cls, *layers: dict):
        """An instance from layers of settings, later layers winning (None = not given);
        unknown keys are refused."""
        merged: dict = {}
        for layer in layers:
            for key, value in layer.items():
                key = cls.RENAMED.get(key, key)
                if value is not None:
                    merged[key] = value
        unknown = sorted(set(merged) - set(cls.known_keys()))
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for {cls.__name__} "
                              f"(known: {', '.join(cls.known_keys())})")
        try:
            return cls(**merged)
        except TypeError as exc:  # a required field missing
            raise ConfigError(f"{cls.__name__}: {exc}") from None


def read_config_file(path) -> dict:
    """The settings in a TOML or YAML file, as a flat dict (a table ``[train]`` may hold them)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    text = path.read_bytes()
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python < 3.11
                import tomli as tomllib
            data = tomllib.loads(text.decode("utf-8"))
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(f"--config {path}: YAML needs PyYAML (pip install pyyaml); "
                                  f"or write the file as TOML") from None
            data = yaml.safe_load(text.decode("utf-8"))
        else:
            raise ConfigError(f"--config {path}: use a .toml or .yaml file")
    except ConfigError:
        raise
    except Exception as exc:  # the parsers' own error types, and bad UTF-8
        raise ConfigError(f"--config {path}: cannot parse: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a table of settings, got "
                          f"{type(data).__name__}")
    if set(data) == {"train"} and isinstance(data["train"], dict):
        data = data["train"]
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise ConfigError(f"--config {path}: settings are flat keys; {', '.join(nested)} "
                          f"is a table")
    return data


@dataclass
class TrainConfig(Settings):
    """The settings of a student run (``edgeaudio train``; ``edgeaudio.train.loop``)."""

    RENAMED = {"recipe": "layout", "val_fraction": "test_fraction"}
    SELECT = ("best", "last")

    data: str
    layout: str | None = None                          # a known dataset layout: "esc50"
    fold: int | None = None                            # the test fold (default: the last)
    # the validation clips every choice is made on (the epoch kept, the streaming threshold,
    # the teachers): a fold of the data, else this share of the training clips (0: none)
    validation_fold: int | None = None
    validation_fraction: float = 0.1
    select: str = "best"                               # best validation epoch, or "last"
    test_curve: bool = False                           # test accuracy every eval (reporting only)
    student: str = "small"
    init: str = "random"                               # "mn04": an mn student inherits mn04
    teachers: list = field(default_factory=list)     # for the regulariser / fusion
    reg: str = "none"
    alpha: float | None = None                         # None: 5 for con, 1 for dis
    method: str = "student"                            # or a fusion baseline
    kd: float = 0.0                                    # weight of probe distillation
    kd_teachers: list = field(default_factory=list)   # default: efficientat
    kd_temperature: float = 2.0
    keep_teachers: bool = False                        # keep teachers that do not know the sounds
    # teacher-labelled mixtures: per training clip, this many mixtures with other clips are
    # planned (seeded) before training and run through the teachers once (cached); a batch
    # then draws each clip's mixture with ``mixture_prob`` and the KD / Con-Reg targets are
    # the teachers' own outputs on that mixture (not a blend of the clean targets).
    # 0 = off: mixup blends clean clips and their targets.
    kd_mixtures: int = 0
    mixture_prob: float = 0.8
    classes: str | None = None                         # labeled subset: "esc10" or "dog,rain"
    # a "none of these" class: audio of no class (folders, CSVs, "silence": quiet clips the
    # run makes); exported files name it, and listen reports it as no event
    background: list = field(default_factory=list)
    background_label: str = "background"
    # cross-domain contrastive regularization (Lee & Lee) on an unlabeled pool: folders of
    # audio, CSVs (labels ignored) or "rest" (the clips outside ``classes``, held-out fold
    # excluded)
    contrastive: bool = False
    unlabeled: list = field(default_factory=list)
    contrastive_weight: float = LAMBDA
    contrastive_warmup: int | None = None              # None: the first 10 % of the epochs
    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_epochs: int = 3
    seed: int = 0
    crop_seconds: float | None = None                  # None: min(4 s, longest clip)
    gain_db: float = 6.0
    speed: float = 0.0                                 # crops played at 1 +- this rate; 0 = off
    shift_seconds: float = 0.0                         # crops moved up to this far past a clip's ends
    mixup: float = 0.3                                 # Beta(a, a); 0 = off
    specaugment: bool = True
    time_masks: int = 2
    time_mask_frames: int = 20
    freq_masks: int = 2
    freq_mask_bins: int = 8                            # semitones, across all harmonics
    train_fraction: float = 1.0
    test_fraction: float = 0.2                         # the test split when data has no folds
    skip_unreadable: bool = False
    eval_every: int = 1
    steps_per_epoch: int | None = None                 # None: one pass over the training clips
    channels_last: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        if "validation_fraction" not in d:  # a run from before validation splits: as it was
            d = {**d, "validation_fraction": 0.0, "test_curve": True}
        return super().from_dict(d)

    def resolved_alpha(self) -> float:
        return DEFAULT_ALPHA[self.reg] if self.alpha is None else float(self.alpha)

    def resolved_contrastive_warmup(self) -> int:
        """Epochs on labels alone before the contrastive term joins."""
        if self.contrastive_warmup is not None:
            return int(self.contrastive_warmup)
        return int(round(0.1 * self.epochs))

    def validate(self) -> None:
        if self.reg not in REGULARIZERS:
            raise TrainError(f"unknown --reg {self.reg!r} (known: {', '.join(REGULARIZERS)})")
        if self.method not in METHODS:
            raise TrainError(f"unknown method {self.method!r} (known: {', '.join(METHODS)})")
        if (self.reg != "none" or self.method != "student") and not self.teachers:
            raise TrainError(f"--reg {self.reg} / method {self.method} needs at least one "
                             f"--teacher")
        if self.epochs < 1 or self.batch_size < 2:
            raise TrainError("--epochs must be >= 1 and the batch size >= 2")
        if not 0.0 <= self.kd <= 1.0:
            raise TrainError(f"--kd is a weight in [0, 1], got {self.kd}")
        if self.kd_mixtures < 0 or not 0.0 <= self.mixture_prob <= 1.0:
            raise TrainError("--kd-mixtures must be >= 0 and --mixture-prob in [0, 1]")
        if self.contrastive and not self.unlabeled:
            raise TrainError("--contrastive needs unlabeled audio: --unlabeled FOLDER "
                             "(repeatable; or a CSV, or 'rest' with --classes)")
        if self.unlabeled and not self.contrastive:
            raise TrainError("--unlabeled is used by --contrastive only: add --contrastive")
        if UNLABELED_REST in self.unlabeled and not self.classes:
            raise TrainError("--unlabeled rest means the clips of the classes outside "
                             "--classes: give --classes (e.g. esc10)")
        if self.contrastive and self.resolved_contrastive_warmup() >= self.epochs:
            raise TrainError(f"--contrastive-warmup {self.resolved_contrastive_warmup()} leaves "
                             f"no epoch of --epochs {self.epochs} for the contrastive term")
        if self.contrastive_weight < 0:
            raise TrainError(f"--contrastive-weight must be >= 0, got {self.contrastive_weight}")
        if self.init not in ("random", "mn04"):
            raise TrainError(f"--init {self.init!r}: choose random or mn04")
        if self.init == "mn04" and not self.student.startswith("mn"):
            raise TrainError(f"--init mn04 is for the mn students (mn02, mn01, ...), not "
                             f"--student {self.student}")
        if self.background and not self.background_label.strip():
            raise TrainError("--background-label must name the class")
        if self.select not in self.SELECT:
            raise TrainError(f"--select {self.select!r}: choose {' or '.join(self.SELECT)}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise TrainError(f"--validation-fraction must be in [0, 1), got "
                             f"{self.validation_fraction}")
        if self.validation_fold is not None and self.validation_fold == self.fold:
            raise TrainError(f"--validation-fold {self.validation_fold} is the test --fold")
        if self.shift_seconds < 0:
            raise TrainError(f"--shift must be >= 0 seconds, got {self.shift_seconds}")
        if not 0.0 <= self.speed < 0.5:
            raise TrainError(f"--speed is a rate change in [0, 0.5), got {self.speed}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise TrainError(f"--steps-per-epoch must be >= 1, got {self.steps_per_epoch}")
