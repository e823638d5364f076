"""``edgeaudio train`` and ``edgeaudio evaluate``: thin click shells over ``train.loop``.

Mounted lazily by ``edgeaudio.cli`` (``train_command``, ``evaluate_command``). User errors are
``EdgeAudioError`` subclasses: the CLI prints one ``error:`` line and exits with code 2.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from edgeaudio.errors import EdgeAudioError

from .losses import METHODS, REGULARIZERS
from .teacher_fit import teacher_group  # noqa: F401  (mounted as `edgeaudio teacher`)


class UsageError(EdgeAudioError):
    pass


def _list_students(ctx, param, value):
    if not value or ctx.resilient_parsing:
        return
    from .students import list_students, student_frontend_settings
    rows = list_students()
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        settings = student_frontend_settings(row["name"])
        click.echo(f"{row['name']:{width}s} {row['params']:>9,d} params  embedding "
                   f"{row['embedding_dim']:>3d}  {row['n_bins']} bins @ "
                   f"{settings['sample_rate']} Hz  {row['description']}")
    click.echo("multiview  one CRNN branch per --views (~86 K params each) and a joint head, "
               "--blend adaptive|none|late|uniform (training-time comparison, not exported)")
    ctx.exit(0)


def _list_teachers(ctx, param, value):
    if not value or ctx.resilient_parsing:
        return
    from .teachers.registry import list_teachers
    notes = {"yamnet": "YAMNet (AudioSet, 1024-d every 0.48 s, LiteRT)",
             "efficientat": "EfficientAT mn04_as (AudioSet, 384-d every 0.32 s; alias mn04)"}
    for name in list_teachers():
        click.echo(f"{name:12s} {notes.get(name, '')}")
    click.echo("DIR          a teacher fitted by `edgeaudio teacher fit` (its folder)")
    click.echo("combine with '+' (yamnet+efficientat) or repeat --teacher")
    ctx.exit(0)


# (harmonic/log-mel students: TrainConfig; --student multiview: MultiViewConfig)
SETTINGS_OF_FLAG = {"--teacher": "teachers", "--kd-teacher": "kd_teachers",
                    "--crop": "crop_seconds", "--no-specaugment": "specaugment"}
# run options a configuration file may hold besides the settings, and what it may say for people
RUN_KEYS = ("folds", "out", "threads", "workers", "stream", "loader_workers")
NOTE_KEYS = ("description",)
LOOPS = ("distill", "student")


def flag_for(key: str) -> str:
    """The command-line option of a setting (``kd_teachers`` -> ``--kd-teacher``)."""
    for flag, name in SETTINGS_OF_FLAG.items():
        if name == key:
            return flag
    return "--" + key.replace("_", "-")


def _default(name: str, cls=None) -> str:
    """``[default: X]`` for an option whose default is the configuration class's."""
    from .config import TrainConfig
    value = (cls or TrainConfig).default(name)
    return f" [default: {value}]" if value not in (None, [], "") else ""


def _default_per_loop(name: str) -> str:
    """``[default: X]``, or both loops' defaults where they differ."""
    from .config import TrainConfig
    from .distill import DistillConfig
    distill, student = DistillConfig.default(name), TrainConfig.default(name)
    if distill == student:
        return _default(name)
    return f" [default: {distill} distilling, {student} in the student loop]"


def _default_multiview(name: str) -> str:
    from .multiview_train import MultiViewConfig
    return _default(name, MultiViewConfig)


def _default_out(cfg, folds) -> Path:
    stem = Path(cfg.data.rstrip("/")).stem or "data"
    parts = [stem, cfg.student, cfg.reg]
    if cfg.teachers:
        parts.append("+".join(Path(t).name for t in cfg.teachers))
    if cfg.kd:
        parts.append(f"kd{cfg.kd:g}")
    if cfg.classes:
        parts.append(cfg.classes.replace(",", "+"))
    if cfg.contrastive:
        parts.append("contrastive")
    if folds:
        parts.append(f"folds{folds[0]}-{folds[-1]}")
    elif cfg.fold is not None:
        parts.append(f"f{cfg.fold}")
    return Path("runs") / "-".join(parts)


def _multiview_out(cfg) -> Path:
    return Path("runs") / "-".join(
        [Path(str(cfg.data).rstrip("/")).stem or "data", "multiview",
         cfg.views.replace(",", "+"), cfg.blend] + ([f"f{cfg.fold}"] if cfg.fold is not None
                                                     else []))


def training_settings(config_file, given: dict):
    """(the run's configuration object, the run options) from a configuration file and the
    options given on the command line (None = not given), the command line winning. The
    ``student`` setting picks the configuration class."""
    from .config import ConfigError, TrainConfig, read_config_file
    from .distill import LOOP_KEY, DistillConfig
    from .multiview_train import MultiViewConfig

    from_file = read_config_file(config_file) if config_file else {}
    for key in NOTE_KEYS:
        from_file.pop(key, None)
    # loop = "distill": the online-distillation loop; a file without the key is the student
    # loop's, as every file written before the distillation loop was
    loop = from_file.pop(LOOP_KEY, "student" if config_file else None)
    if given.get(LOOP_KEY) is not None:
        loop = given[LOOP_KEY]
    given.pop(LOOP_KEY, None)
    if loop not in (None, *LOOPS):
        raise UsageError(f"--config {config_file}: loop = {loop!r}; known: {', '.join(LOOPS)}")
    run_options = {k: from_file.pop(k) for k in RUN_KEYS if k in from_file}
    run_options.update({k: given.pop(k) for k in RUN_KEYS if given.get(k) is not None})
    given = {k: v for k, v in given.items() if v is not None}
    if loop is None:
        loop = default_loop(given, run_options)
    student = given.get("student", from_file.get("student", TrainConfig.default("student")))
    cls = (DistillConfig if loop == "distill"
           else MultiViewConfig if student == "multiview" else TrainConfig)
    layers = [from_file, given]
    if cls is MultiViewConfig:
        layers = [{k: v for k, v in layer.items() if k != "student"} for layer in layers]
    known = set(cls.known_keys())
    for source, layer in (("--config " + str(config_file), layers[0]),
                          ("the command line", layers[1])):
        stray = [k for k in layer if cls.RENAMED.get(k, k) not in known]  # old names too
        if stray:
            names = ", ".join(flag_for(k) if source == "the command line" else k for k in stray)
            why = ("--student multiview trains without teachers and on one --fold"
                   if cls is MultiViewConfig else "the online-distillation loop has no such "
                   "setting" if cls is DistillConfig
                   else f"--student {student} has no such setting")
            raise UsageError(f"{why}: {names} (from {source}) do not apply"
                             + (f"; known keys: {', '.join(sorted(known))}"
                                if source != "the command line" else ""))
    if "data" not in layers[0] and "data" not in layers[1]:
        raise UsageError("--data is required (a folder of class sub-folders, a CSV, or the "
                         "ESC-50 folder with --layout esc50), on the command line or in "
                         "--config")
    try:
        return cls.build(*layers), run_options
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def default_loop(given: dict, run_options: dict) -> str:
    """The loop a command line without ``--config`` or ``--loop`` runs: the online
    distillation (the default recipe: ``mn04-short320`` from mn04's weights, taught by mn04 +
    probe; README, bench/mn_student_esc50.py) unless it names what only the student loop has:
    a student outside the mn family, a setting the distillation loop lacks (``--teacher``,
    ``--reg``, ``--kd``, ...) or cross-validation and the scaling options."""
    from .distill import DistillConfig
    from .mn_student import is_mn_student

    if "student" in given and not is_mn_student(given["student"]):
        return "student"
    known = set(DistillConfig.known_keys())
    if any(DistillConfig.RENAMED.get(k, k) not in known for k in given):
        return "student"
    if any(run_options.get(k) for k in ("folds", "workers", "stream", "loader_workers")):
        return "student"
    return "distill"


def scaling_options(run_options: dict) -> dict:
    """``workers``, ``stream`` and ``loader_workers`` of a run, checked."""
    workers = run_options.get("workers")
    workers = 1 if workers is None else int(workers)
    loader_workers = run_options.get("loader_workers")
    loader_workers = 2 if loader_workers is None else int(loader_workers)
    stream = bool(run_options.get("stream") or False)
    if workers < 1:
        raise UsageError(f"--workers must be >= 1 (processes that share the teachers' pass), "
                         f"got {workers}")
    if loader_workers < 0:
        raise UsageError(f"--loader-workers must be >= 0, got {loader_workers}")
    if run_options.get("loader_workers") is not None and not stream:
        raise UsageError("--loader-workers is for --stream (the processes that decode the "
                         "streamed clips)")
    return {"workers": workers, "stream": stream, "loader_workers": loader_workers}


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="A TOML or YAML file of settings (keys: the options' names with "
                   "underscores, e.g. kd_teachers, crop_seconds); options given here win.")
@click.option("--data", type=click.Path(), default=None,
              help="Class folders, a CSV (path,label[,fold]), or the ESC-50 folder.")
@click.option("--loop", type=click.Choice(LOOPS), default=None,
              help="distill: online distillation from mn04 into an mn student (the default "
                   "recipe; student mn04-short320); student: the student loop (harmonic "
                   "students, teacher regularisers, cached KD, --folds). Default: distill, "
                   "unless the options given are the student loop's.")
@click.option("--layout", "--recipe", "layout", type=click.Choice(["esc50"]), default=None,
              help="A known dataset layout (esc50: meta/esc50.csv, predefined folds); "
                   "--recipe is its old name.")
@click.option("--fold", type=int, default=None,
              help="The test fold, scored once at the end (default: the last).")
@click.option("--folds", default=None, help="Cross-validation over these held-out folds, e.g. 1-5.")
@click.option("--validation-fold", type=int, default=None,
              help="A fold of the data as the validation clips every choice is made on "
                   "(default: --validation-fraction of the training clips).")
@click.option("--validation-fraction", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Share of the training clips held out for validation (0: none, the last "
                   "epoch is kept)." + _default_per_loop("validation_fraction"))
@click.option("--select", type=click.Choice(["best", "last"]), default=None,
              help="The epoch kept: best validation accuracy, or the last."
                   + _default("select"))
@click.option("--test-curve", is_flag=True, default=None,
              help="Also score the test split every --eval-every epochs, for plots and "
                   "papers' protocols (never used for a choice).")
@click.option("--student", default=None,
              help="Student size (--list-students). Default: mn04-short320 (distillation loop), "
                   "small (student loop).")
@click.option("--init", type=click.Choice(["random", "mn04"]), default=None,
              help="An mn student's starting weights: random, or mn04's channels kept by "
                   "importance." + _default("init"))
@click.option("--views", default=None,
              help="With --student multiview: one branch per view (mel, gammatone, cqt, raw)."
                   + _default_multiview("views"))
@click.option("--blend", type=click.Choice(["adaptive", "none", "late", "uniform"]),
              default=None,
              help="With --student multiview: adaptive gradient blending read out as the "
                   "self-ensemble; none = concatenation fusion; late = mean of view heads."
                   + _default_multiview("blend"))
@click.option("--blend-every", type=click.IntRange(1), default=None,
              help="With --blend adaptive: steps between weight updates (default: an epoch).")
@click.option("--blend-floor", type=click.FloatRange(0, 1), default=None,
              help="With --blend adaptive: smallest weight, as a fraction of an equal share "
                   "(0 lets a head stop learning; 0.1 keeps every head learning a little)."
                   + _default_multiview("blend_floor"))
@click.option("--teacher", "teachers", multiple=True, help="Teacher for the regulariser "
              "(repeatable; concatenated).")
@click.option("--reg", type=click.Choice(REGULARIZERS), default=None,
              help="Feature-informed regulariser: con (Con-Reg) or dis (Dis-Reg)."
                   + _default("reg"))
@click.option("--alpha", type=float, default=None, help="Regulariser weight (default 5 for "
              "con, 1 for dis).")
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="student, or a baseline that also uses the teacher at inference."
                   + _default("method"))
@click.option("--kd", type=click.FloatRange(0, 1), default=None,
              help="Weight of distillation from a linear probe on teacher embeddings."
                   + _default("kd"))
@click.option("--kd-teacher", "kd_teachers", multiple=True,
              help="Teacher(s) of the probe for --kd (default: efficientat).")
@click.option("--keep-teachers", is_flag=True, default=None,
              help="Keep a distillation teacher whose linear probe scores well below a "
                   "log-mel baseline on the validation clips (left out by default).")
@click.option("--kd-temperature", type=float, default=None,
              help="Distillation temperature." + _default("kd_temperature"))
@click.option("--kd-mixtures", type=click.IntRange(0), default=None,
              help="Teacher-labelled mixtures planned per training clip (run through the "
                   "teachers once, cached); they replace batch mixup. 0: off."
                   + _default("kd_mixtures"))
@click.option("--mixture-prob", type=click.FloatRange(0, 1), default=None,
              help="With --kd-mixtures: chance that a clip is drawn as one of its mixtures."
                   + _default("mixture_prob"))
@click.option("--classes", default=None, help="Train on these classes only: comma-separated "
              "names, or esc10 (the ESC-10 subset of the ESC-50 layout).")
@click.option("--background", multiple=True,
              help="Audio of none of the classes, as a class of its own that listen reports as "
                   "no event: a folder (searched recursively), a CSV (labels ignored) or "
                   "'silence' (quiet clips the run makes). Repeatable.")
@click.option("--background-label", default=None,
              help="The background class's name." + _default("background_label"))
@click.option("--contrastive", is_flag=True, default=None,
              help="Cross-domain contrastive regularization (Lee & Lee) with the --unlabeled "
                   "audio.")
@click.option("--unlabeled", multiple=True, help="With --contrastive: unlabeled audio, a folder "
              "(searched recursively) or a CSV (labels ignored); 'rest' = the clips outside "
              "--classes, held-out fold excluded. Repeatable.")
@click.option("--contrastive-weight", type=click.FloatRange(0), default=None,
              help="Weight of the NT-Xent term." + _default("contrastive_weight"))
@click.option("--contrastive-warmup", type=click.IntRange(0), default=None,
              help="Epochs on labels alone before the contrastive term (default: 10 % of "
                   "--epochs).")
@click.option("--epochs", type=click.IntRange(1), default=None,
              help=_default_per_loop("epochs")[1:])
@click.option("--batch-size", type=click.IntRange(2), default=None,
              help=_default("batch_size")[1:])
@click.option("--lr", type=float, default=None, help=_default_per_loop("lr")[1:])
@click.option("--seed", type=int, default=None, help=_default("seed")[1:])
@click.option("--crop", "crop_seconds", type=float, default=None,
              help="Training crop in seconds (default: min(4, longest clip)).")
@click.option("--speed", type=float, default=None,
              help="Speed perturbation: each crop plays at a random rate in 1 +- SPEED, pitch "
                   "and tempo together (0.1 helps speech with unseen speakers; 0: off)."
                   + _default("speed"))
@click.option("--shift", "shift_seconds", type=float, default=None,
              help="Move each crop up to this many seconds past its clip's ends, so clips as "
                   "long as the crop are seen off-centre as a streaming window sees them "
                   "(0.2 for 1-s words; 0: off)." + _default("shift_seconds"))
@click.option("--mixup", type=float, default=None,
              help="Mixup Beta parameter (0: off)." + _default("mixup"))
@click.option("--no-specaugment", "specaugment", flag_value=False, default=None,
              help="Turn SpecAugment off.")
@click.option("--train-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Use this stratified share of the training clips."
                   + _default("train_fraction"))
@click.option("--steps-per-epoch", type=click.IntRange(1), default=None,
              help="Optimizer steps per epoch (default: one pass over the training clips; "
                   "more reshuffles them again).")
@click.option("--eval-every", type=click.IntRange(1), default=None,
              help="Validation accuracy every this many epochs (and after the last)."
                   + _default_per_loop("eval_every"))
@click.option("--skip-unreadable", is_flag=True, default=None,
              help="Skip unreadable audio (listed in data_report.json) instead of stopping.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder (default: runs/<data>-<student>-<reg>...).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="torch threads (two 1-thread runs beat one 2-thread run). [default: 1]")
@click.option("--workers", type=int, default=None,
              help="Processes that share the teachers' pass over the clips (the cache they "
                   "build is the one a single process builds). [default: 1]")
@click.option("--stream", is_flag=True, default=None,
              help="Leave the clips on disk: loader workers decode each step's clips as it "
                   "comes (data larger than memory; the same run as in memory).")
@click.option("--loader-workers", type=int, default=None,
              help="With --stream: decoding processes (0: in this process). [default: 2]")
@click.option("--stop-after", type=click.IntRange(1), default=None, hidden=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--list-students", is_flag=True, expose_value=False, is_eager=True,
              callback=_list_students, help="List the student sizes and exit.")
@click.option("--list-teachers", is_flag=True, expose_value=False, is_eager=True,
              callback=_list_teachers, help="List the teachers and exit.")
def train_command(config_file, resume, stop_after, quiet, **options):
    """Train a student (teachers shape it at training time only).

    \b
    Examples:
      edgeaudio train --data my_recordings/           # one sub-folder per class: the
                                                      # default recipe (mn04-short320)
      edgeaudio train --data labels.csv               # path,label[,fold]
      edgeaudio train --data ../shared/data/esc50 --layout esc50 --fold 1 \\
          --student small --teacher yamnet --teacher efficientat --reg con --out runs/f1
      edgeaudio train --data ../shared/data/esc50 --layout esc50 --folds 1-5 \\
          --teacher yamnet --teacher efficientat --reg con --kd 0.7 --out runs/cv
      edgeaudio train --config recipes/esc50_default_model.toml \\
          --data ../shared/data/esc50 --fold 1 --out runs/f1   # the bundled model's run
      edgeaudio train --data ../shared/data/esc50 --layout esc50 --classes esc10 \\
          --contrastive --unlabeled rest --out runs/esc10-contrastive   # ESC-40 unlabeled
      edgeaudio train --out runs/f1 --resume ...      # same flags; continues a killed run
      edgeaudio train --data big.csv --stream --workers 2 ...  # clips stay on disk
      torchrun --nproc_per_node 2 $(which edgeaudio) train --data ... --batch-size 64
          # the same run on 2 processes (DDP; --batch-size is the global batch)
      edgeaudio train --list-students / --list-teachers
    Then: edgeaudio evaluate RUN, edgeaudio export RUN --int8.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .data import parse_folds
    from .loop import train, train_cv
    from .distill import DistillConfig, train_distill
    from .mn_student import MN_STUDENTS
    from .multiview_train import MultiViewConfig, train_multiview
    from .students import STUDENTS
    from .distributed import is_main_process, launched_by_torchrun

    # None is "not given", for repeatable options and flags too, so a --config file's value
    # stands unless the command line names it
    given = {k: (list(v) or None) if isinstance(v, tuple) else v for k, v in options.items()}
    cfg, run_options = training_settings(config_file, given)
    threads = int(run_options.get("threads") or 1)
    scale = scaling_options(run_options)
    fold_list = parse_folds(run_options.get("folds"))
    out = run_options.get("out")
    if isinstance(cfg, (MultiViewConfig, DistillConfig)):
        if fold_list:
            raise UsageError("--student multiview and the distillation loop train on one "
                             "--fold")
        if scale != scaling_options({}):
            raise UsageError("--workers and --stream are options of the student loop; "
                             "--student multiview and the distillation loop decode in memory")
        if launched_by_torchrun() and isinstance(cfg, MultiViewConfig):
            raise UsageError("--student multiview trains in one process (run it without "
                             "torchrun); the student and distillation loops and `edgeaudio "
                             "teacher fit` train on several")
        if isinstance(cfg, DistillConfig):
            out = Path(out) if out else Path("runs") / f"{Path(cfg.data).stem}-distill"
            if not quiet and is_main_process():
                click.echo(f"online distillation: {cfg.student} ({cfg.init} weights) taught "
                           f"by {cfg.teacher or 'no teacher'}, {cfg.epochs} epochs -> {out} "
                           f"(--loop student: the student loop)", err=True)
            metrics = train_distill(cfg, out, resume=resume, progress=not quiet,
                                    stop_after_epoch=stop_after, threads=threads)
        else:
            out = Path(out) if out else _multiview_out(cfg)
            metrics = train_multiview(cfg, out, resume=resume, progress=not quiet,
                                      stop_after_epoch=stop_after, threads=threads)
        if not is_main_process():  # under torchrun rank 0 reports
            return
        if "stopped_after_epoch" in metrics:
            click.echo(f"stopped after epoch {metrics['stopped_after_epoch']}; continue with "
                       f"--resume --out {out}")
        elif "accuracy" in metrics:
            click.echo(f"held-out accuracy {metrics['accuracy']:.4f} "
                       f"({metrics.get('readout') or getattr(cfg, 'student', '')}) on "
                       f"{metrics['n_test']} clips; {out / 'metrics.json'}")
        return
    if cfg.student not in STUDENTS and cfg.student not in MN_STUDENTS:
        raise UsageError(f"unknown student {cfg.student!r} (known: "
                         f"{', '.join([*STUDENTS, *MN_STUDENTS])}, multiview)")
    from .teachers.registry import UnknownTeacherError, validate_teacher_names
    try:
        validate_teacher_names(list(cfg.teachers) + list(cfg.kd_teachers))
    except UnknownTeacherError as exc:
        raise UsageError(str(exc)) from None
    if cfg.reg != "none" and not cfg.teachers:
        raise UsageError(f"--reg {cfg.reg} needs at least one --teacher")
    if fold_list and cfg.fold is not None:
        raise UsageError("give --fold or --folds, not both")
    out = Path(out) if out else _default_out(cfg, fold_list)
    progress = not quiet
    if fold_list:
        summary = train_cv(cfg, fold_list, out, resume=resume, progress=progress,
                           threads=threads, **scale)
        if not is_main_process():
            return
        click.echo(f"cross-validation over folds {fold_list}: accuracy "
                   f"{summary['accuracy_mean']:.4f} ± {summary['accuracy_std']:.4f} "
                   f"(per fold: " + ", ".join(f"{k}: {v:.3f}" for k, v in
                                             summary["per_fold_accuracy"].items())
                   + f"); {out / 'cv_metrics.json'}")
        return
    metrics = train(cfg, out, resume=resume, progress=progress, stop_after_epoch=stop_after,
                    threads=threads, **scale)
    if not is_main_process():  # under torchrun rank 0 reports
        return
    if "stopped_after_epoch" in metrics:
        click.echo(f"stopped after epoch {metrics['stopped_after_epoch']}; continue with "
                   f"--resume --out {out}")
        return
    if "accuracy" in metrics:
        click.echo(f"held-out accuracy {metrics['accuracy']:.4f} on {metrics['n_test']} clips; "
                   f"{out / 'metrics.json'}")
    else:
        click.echo(f"trained; {out / 'checkpoint.pt'}")


@click.command("evaluate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run", type=click.Path(), required=False)
@click.option("--data", type=click.Path(), default=None,
              help="Score on this dataset instead of the run's held-out split.")
@click.option("--layout", "--recipe", "recipe", type=click.Choice(["esc50"]), default=None,
              help="With --data: a known dataset layout (esc50); --recipe is its old name.")
@click.option("--fold", type=int, default=None, help="With --data: only this fold.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Where evaluation.json and the confusion PNG go (default: the run folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@click.option("--model", "model_file", type=click.Path(dir_okay=False), default=None,
              help="With --events: an exported .onnx / .tflite file, scored on streams.")
@click.option("--events", "events_csv", type=click.Path(dir_okay=False), default=None,
              help="With --model: CSV recording,label,onset,offset (seconds; paths relative to "
                   "the CSV; a row with only a recording: no events in it).")
@click.option("--threshold", type=float, default=None,
              help="With --events: the stream threshold (default: the model file's).")
def evaluate_command(run, data, recipe, fold, out, as_json, threads, model_file, events_csv,
                     threshold):
    """Accuracy, per-class report and confusion matrix of a trained run.

    With --model FILE --events CSV: the exported file's stream engine on annotated recordings
    (detections, latency from the true onset to the emitted start, false alarms per hour; see
    edgeaudio.event_scoring), written to <out or the model's folder>/<FILE>.streams.json.

    \b
    Examples:
      edgeaudio evaluate runs/esc50-f1                # its held-out fold
      edgeaudio evaluate runs/esc50-f1 --json
      edgeaudio evaluate runs/mine --data other_recordings/
      edgeaudio evaluate --model runs/f1/models/model.int8.tflite --events annotations.csv
    """
    if model_file or events_csv or threshold is not None:
        if not (model_file and events_csv) or run or data or recipe or fold is not None:
            raise UsageError("score streams with --model FILE --events CSV alone (no RUN, "
                             "--data, --layout or --fold)")
        from edgeaudio.event_scoring import evaluate_streams, streams_table
        from edgeaudio.model import Model
        json_path = Path(out or Path(model_file).parent) / f"{Path(model_file).name}.streams.json"
        report = evaluate_streams(Model(model_file, threads=threads), events_csv,
                                  {} if threshold is None else {"threshold": threshold},
                                  json_path=json_path)
        click.echo(json.dumps(report) if as_json else streams_table(report))
        click.echo(str(json_path), err=True)
        return
    if run is None:
        raise UsageError("give a RUN folder (or --model FILE --events CSV)")
    import torch
    from .evaluation import evaluate_run

    torch.set_num_threads(threads)
    run_path = Path(run)
    fold_runs = sorted(p for p in run_path.glob("fold*") if (p / "checkpoint.pt").exists()) \
        if run_path.is_dir() and not (run_path / "checkpoint.pt").exists() else []
    if fold_runs and data is None:  # a cross-validation folder: every fold on its own split
        reports = {p.name: evaluate_run(p, progress=not as_json) for p in fold_runs}
        accs = [r["accuracy"] for r in reports.values()]
        summary = {"folds": {k: r["accuracy"] for k, r in reports.items()},
                   "accuracy_mean": sum(accs) / len(accs)}
        if as_json:
            click.echo(json.dumps(summary))
        else:
            for name, acc in summary["folds"].items():
                click.echo(f"{name}: accuracy {acc:.4f}")
            click.echo(f"mean accuracy {summary['accuracy_mean']:.4f} over {len(accs)} folds")
        return
    report = evaluate_run(run, data, recipe, fold, progress=not as_json, out=out)
    if as_json:
        click.echo(json.dumps({k: v for k, v in report.items() if k != "confusion"}))
        return
    click.echo(f"accuracy {report['accuracy']:.4f}  macro F1 {report['macro_f1']:.4f}  "
               f"({report['n_clips']} clips, checkpoint epoch {report['checkpoint_epoch']})")
    click.echo(f"{'class':24s} {'prec':>6s} {'recall':>6s} {'f1':>6s} {'n':>4s}")
    for label, row in report["per_class"].items():
        click.echo(f"{label[:24]:24s} {row['precision']:6.3f} {row['recall']:6.3f} "
                   f"{row['f1']:6.3f} {row['support']:4d}")
    where = Path(out) if out else Path(run)
    click.echo(f"{where / 'evaluation.json'}, {where / 'evaluation_confusion.png'}",
               err=True)
