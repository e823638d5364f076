"""``edgeaudio export``: a trained student checkpoint -> self-describing model files + a report.

    edgeaudio export runs/esc50-f1 --format onnx --format tflite --int8 --calibration 200 \
        --out models/

writes ``model.onnx``, ``model.int8.onnx``, ``model.tflite``, ``model.int8.tflite`` (see
``writers.py`` for what each holds), ``export_report.json`` and ``export_report.md``. The click
command is a thin shell over ``export_checkpoint``, which is usable on its own.

Data: calibration windows come from the training clips, the report's accuracy from the held-out
clips. Both are found from the checkpoint's run settings (its data folder and held-out fold) or
given with ``--data`` / ``--test-fold``; ``--calibration-data`` points at any folder of audio
(labels not needed) for calibration alone.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from edgeaudio.modelfile import ModelInfo
from edgeaudio.stream_tuning import settings_for_event_length

from .errors import CalibrationError, ExportError, write_file
from .writers import FORMATS, file_name, prepare_output_dir

log = logging.getLogger("edgeaudio.export")
LOG_NAME = "export.log"

@dataclass
class DataPlan:
    """Where calibration (training) clips and evaluation (held-out) clips come from."""

    train: list = field(default_factory=list)
    test: list = field(default_factory=list)
    validation: list = field(default_factory=list)   # the run's own: streaming defaults
    calibration: list = field(default_factory=list)
    train_source: str = ""
    test_source: str = ""
    calibration_source: str = ""


def plan_data(labels: list, config: dict, data=None, test_fold=None, calibration_data=None,
              eval_data=None) -> DataPlan:
    """The run's own split (``edgeaudio.train``: its data, layout, classes, background class,
    test fold, seed and validation clips), or ``data`` / ``test_fold`` given here;
    ``calibration_data`` (any audio folder) and ``eval_data`` (a labeled data set) replace
    either side."""
    from edgeaudio.train.config import TrainConfig
    from edgeaudio.train.data import (DatasetError, load_dataset, split_indices,
                                      validation_split)
    from edgeaudio.train.preparation import load_run_dataset

    from .clips import dataset_clips, unlabeled_clips

    config = config or {}
    plan = DataPlan()
    source = data or config.get("data")
    if source:
        run_cfg = TrainConfig.from_dict(config) if config.get("data") else None
        if data or run_cfg is None:
            dataset = load_dataset(source)
        else:  # the run's own data: the classes it was trained on, its background class
            dataset = load_run_dataset(run_cfg)[0]
        fold = test_fold if test_fold is not None else config.get("fold")
        if test_fold is None and fold is not None and not dataset.has_folds:
            fold = None  # --data without folds replaces the run's: a seeded split
        train_idx, test_idx = split_indices(
            dataset, None if fold is None else int(fold), seed=int(config.get("seed", 0)),
            test_fraction=float(config.get("test_fraction", config.get("val_fraction", 0.2))),
            train_fraction=float(config.get("train_fraction", 1.0)))
        unknown = sorted({item.label for item in dataset.items} - set(labels))
        if unknown:
            raise DatasetError(f"{dataset.source}: label(s) {', '.join(unknown[:5])} unknown to "
                               f"the model (it knows {', '.join(labels[:10])}"
                               f"{' ...' if len(labels) > 10 else ''})")
        if run_cfg is not None and not data and test_fold is None and (
                run_cfg.validation_fold is not None or run_cfg.validation_fraction > 0):
            # the run's validation clips choose the stream threshold; as in training, neither
            # calibration nor quantization-aware fine-tuning sees them
            train_idx, val_idx = validation_split(dataset, train_idx,
                                                  fold=run_cfg.validation_fold,
                                                  fraction=run_cfg.validation_fraction,
                                                  seed=run_cfg.seed)
            plan.validation = dataset_clips(dataset, labels, val_idx)
        plan.train = dataset_clips(dataset, labels, train_idx)
        plan.test = dataset_clips(dataset, labels, test_idx)
        held_out = (f"fold {dataset.items[test_idx[0]].fold}" if dataset.has_folds
                    and len(test_idx) else "held-out split")
        plan.train_source = f"{dataset.source} (training split)"
        plan.test_source = f"{dataset.source} ({held_out})"
    if eval_data:
        dataset = load_dataset(eval_data)
        plan.test = dataset_clips(dataset, labels)
        plan.test_source = dataset.source
    if calibration_data:
        plan.calibration = unlabeled_clips(calibration_data)
        plan.calibration_source = str(calibration_data)
    else:
        plan.calibration, plan.calibration_source = plan.train, plan.train_source
    return plan


def model_info(student, ckpt: dict, name: str, checkpoint_path: Path) -> ModelInfo:
    """The metadata of the exported files: labels, the frozen front end, provenance."""
    from edgeaudio import __version__

    metrics = ckpt.get("metrics") or {}
    provenance = {"student": ckpt["student"], "epoch": ckpt.get("epoch"),
                  "checkpoint": checkpoint_path.name, "run": checkpoint_path.parent.name,
                  "config": ckpt.get("config") or {}, "metrics": metrics,
                  "exported_by": f"edgeaudio {__version__} export",
                  "frontend": ("learnable harmonic filterbank frozen into a stored matrix"
                               if getattr(student.frontend, "learnable_filterbank", None)
                               is not None else
                               "the student's fixed filterbank, as trained")}
    info = ModelInfo(labels=list(ckpt["labels"]), frontend=student.frontend.frozen_spec(),
                     n_frames=int(ckpt["window_frames"]), name=name,
                     version=f"{ckpt['student']}-epoch{ckpt.get('epoch', 0)}",
                     provenance=provenance)
    config = ckpt.get("config") or {}
    if config.get("background"):  # the run's "none of these" class: never an event
        info.stream["background"] = [config.get("background_label", "background")]
    return info


def window_frames(info: ModelInfo, seconds: float, min_frames: int) -> int:
    """Frames of an exported window of ``seconds``: the students pool time globally, so the
    window the files take need not be the training crop (shorter: less work per stream hop
    and a short event fills more of it)."""
    # the nearest window the frame grid allows (within half a front-end hop of ``seconds``)
    fe = info.frontend
    n = 1 + int(round((seconds * info.sample_rate - fe.win_length) / fe.hop_length))
    if n < min_frames:
        shortest = info.frontend.samples_for_frames(min_frames) / info.sample_rate
        raise ExportError(f"--window {seconds:g} s gives {n} frames; this student needs at "
                          f"least {min_frames} ({shortest:.3f} s)")
    return n


def streaming_step(network, info: ModelInfo, window_seconds: float):
    """A causal network's streaming call (``MNStreamStep``), with ``info`` made its file's:
    the input is one chunk, and a window of about ``window_seconds`` is that many chunks."""
    from edgeaudio.train.mn_student import MNStreamStep

    from .streaming import streaming_section

    step = MNStreamStep(network).eval()
    chunk_seconds = step.chunk_frames * info.frontend.hop_length / info.sample_rate
    info.n_frames = step.chunk_frames
    info.stream["hop_seconds"] = round(chunk_seconds, 6)  # what the engine will hop
    info.streaming = streaming_section(step.state_shapes(), step.chunk_frames,
                                       max(1, int(round(window_seconds / chunk_seconds))))
    return step


def median_clip_seconds(clips: list, most: int = 400) -> float | None:
    """The median length of (at most ``most`` of) the training clips: how long the model's
    sounds last, for the streaming defaults."""
    import soundfile as sf
    seconds = []
    for clip in clips[:most]:
        try:
            info = sf.info(str(clip.path))
        except RuntimeError:
            continue
        seconds.append(info.frames / info.samplerate)
    return float(np.median(seconds)) if seconds else None


def tune_stream_threshold(files: dict, info: ModelInfo, validation: list,
                          seed: int) -> dict | None:
    """The stream threshold chosen on the run's validation clips (``edgeaudio.stream_tuning``)
    with the first int8 file (else the first file) run as ``listen`` runs it; written into every
    file's metadata. None when the run has no validation clips."""
    from edgeaudio import load_model
    from edgeaudio.modelfile import info_from_onnx, info_from_tflite
    from edgeaudio.stream_tuning import tune_threshold

    from .clips import read_clip
    from .writers import add_tflite_metadata, set_onnx_metadata

    if not validation or not files:
        return None
    background = set(info.stream.get("background") or [])
    events, quiet = [], []
    for clip in validation:
        wave = read_clip(clip, info)
        if wave is None or clip.label is None:
            continue
        label = info.labels[clip.label]
        (quiet.append(wave) if label in background else events.append((wave, label)))
    if not events:
        return None
    int8 = [p for n, p in files.items() if ".int8." in n]
    model = load_model((int8 or list(files.values()))[0])
    tuning = tune_threshold(model, events, quiet, dict(info.stream), seed=seed)
    info.stream["threshold"] = tuning["threshold"]
    for path in files.values():  # each file keeps the rest of its own metadata
        data = path.read_bytes()
        if path.suffix == ".onnx":
            own = info_from_onnx(path, data)
            own.stream["threshold"] = tuning["threshold"]
            set_onnx_metadata(path, own)
        else:
            own = info_from_tflite(path, data)
            own.stream["threshold"] = tuning["threshold"]
            write_file(path, add_tflite_metadata(data, own))
    return tuning


def _int8_drop(report_files: list, torch_accuracy) -> float | None:
    """Worst accuracy loss (points) of the int8 files against torch float."""
    if torch_accuracy is None:
        return None
    drops = [100 * (torch_accuracy - b["accuracy"]) for f in report_files if f["int8"]
             for b in f["backends"] if "accuracy" in b]
    return max(drops) if drops else None


def export_checkpoint(run, out="models", formats=FORMATS, int8: bool = True,
                      calibration: int = 200, *, data=None, test_fold=None,
                      calibration_data=None, eval_data=None, qat_epochs: int = 0,
                      qat_threshold: float = 0.5, name: str | None = None, stem: str = "model",
                      report: bool = True, max_eval_clips: int | None = None,
                      repeats: int = 100, tflm: bool = True, seed: int = 0,
                      window_seconds: float | None = None, echo=lambda msg: None) -> dict:
    """Export a checkpoint (file or run folder) as model files and a report; returns
    ``{"files": {name: path}, "report": dict | None, "report_files": [...]}``."""
    from edgeaudio.train.checkpoint import load_student, resolve_checkpoint
    from edgeaudio.train.students import count_macs_per_second, count_params

    from .clips import calibration_windows, labeled_windows
    from .model_files import write_model_files
    from .quantize import qat_finetune
    from .report import EvalSet, build_report, eval_set, int8_accuracy_drop, write_report
    from .streaming import streaming_calibration

    formats = list(dict.fromkeys(formats or FORMATS))
    for fmt in formats:
        file_name(stem, fmt, False)
    ckpt_path = resolve_checkpoint(run)
    out = prepare_output_dir(out)
    student, ckpt = load_student(ckpt_path)
    network = student.network.eval()
    info = model_info(student, ckpt, name or Path(run).resolve().name, ckpt_path)
    step = None
    if getattr(network, "causal", False):  # the files hold one streaming call, not a window
        step = streaming_step(network, info, window_seconds or info.window_seconds)
        echo(f"streaming graph: {step.chunk_frames}-frame chunks "
             f"({info.chunk_seconds:.2f} s), {len(info.streaming['states'])} carried states, "
             f"windows of {info.streaming['window_chunks']} chunks")
        if report or qat_epochs:
            echo("the export report and QAT do not handle streaming graphs yet: skipped "
                 "(score the files with edgeaudio classify / bench)")
        report, qat_epochs, tflm = False, 0, False
    elif window_seconds is not None:
        info.n_frames = window_frames(info, window_seconds, network.min_frames)
        echo(f"window: {info.window_seconds:.3f} s for the {window_seconds:g} s asked, the "
             f"nearest on the {info.frontend.hop_length / info.sample_rate * 1000:g}-ms frame "
             f"grid ({info.n_frames} frames; trained on {ckpt['window_frames']})")
    plan = plan_data(info.labels, ckpt.get("config") or {}, data, test_fold, calibration_data,
                     eval_data)
    event_seconds = median_clip_seconds(plan.train)
    if event_seconds:
        info.stream.update(settings_for_event_length(event_seconds, info.hop_seconds))
        echo(f"stream: smooth {info.stream['smooth']}, patience {info.stream['patience']} for "
             f"{event_seconds:.2f}-s sounds at a {info.hop_seconds:g}-s hop")

    cal = None
    if int8:
        if not plan.calibration:
            raise CalibrationError(
                "no calibration audio: the checkpoint's settings name no data folder; pass "
                "--data (the training data) or --calibration-data FOLDER")
        t0 = time.time()
        cal = (calibration_windows(plan.calibration, info, calibration, seed) if step is None
               else streaming_calibration(step, plan.calibration, info, calibration, seed))
        echo(f"calibration: {len(cal)} {'windows' if step is None else 'calls'} from "
             f"{plan.calibration_source} ({time.time() - t0:.0f} s)")
    t0 = time.time()
    files = write_model_files(network if step is None else step, info, out, formats=formats,
                              int8=int8, calibration=cal, stem=stem)
    echo(f"wrote {', '.join(files)} ({time.time() - t0:.0f} s)")
    tuning = tune_stream_threshold(files, info, plan.validation, seed)
    if tuning is not None:
        echo(f"stream threshold {tuning['threshold']:g}, chosen on {tuning['events']} "
             f"validation clips" + ("" if tuning["met"] else
                                    " (no threshold kept false events within the bound)"))

    test = plan.test[:max_eval_clips] if max_eval_clips else plan.test
    data_set = eval_set(test, info, plan.test_source) if test else None
    if data_set is None:
        echo("no held-out clips: the report has sizes and latencies but no accuracy "
             "(pass --data and --test-fold, or --eval-data)")
        data_set = EvalSet([], [], [], "")
    q = {"method": "PTQ", "calibration_windows": None if cal is None else len(cal),
         "calibration_source": plan.calibration_source} if int8 else None
    macs = count_macs_per_second(student)
    params = count_params(network)

    # the checkpoint's own figures (training evaluates whole clips in one pass; the report
    # scores the runtime's windows, as the files are used)
    extra = {"checkpoint": {"path": str(ckpt_path), "epoch": ckpt.get("epoch"),
                            "metrics": ckpt.get("metrics") or {}},
             "stream": {"settings": dict(info.stream), "event_seconds": event_seconds,
                        "threshold_tuning": tuning}}

    def make_report():
        return build_report(network=network, info=info, files=list(files.values()),
                            data=data_set, params=params, macs_per_second=macs,
                            repeats=repeats, tflm=tflm,
                            extra={**({"quantization": q} if q else {}), **extra})

    result = {"files": files, "report": None, "report_files": []}
    if not (report or (int8 and qat_epochs)):
        return result
    t0 = time.time()
    rep = make_report()
    echo(f"evaluated {len(data_set.features)} clips through every file and backend "
         f"({time.time() - t0:.0f} s)")
    drop = _int8_drop(rep["files"], rep["torch_float"].get("accuracy"))
    if int8 and q is not None:
        q["ptq_drop_points"] = drop
    # PTQ or QAT is chosen on the run's validation clips when it has them, so that the clips
    # the report scores take no part in which files are written; else on the report's clips
    chooser = eval_set(plan.validation, info, "validation clips") if (
        int8 and qat_epochs and plan.validation) else None
    if chooser is not None and not (chooser.features and chooser.labeled):
        chooser = None
    choice_on = (f"{len(chooser.features)} validation clips" if chooser is not None
                 else f"{len(data_set.features)} held-out clips (no validation clips used)")
    choice_drop = drop if chooser is None else int8_accuracy_drop(
        network, info, [p for n, p in files.items() if ".int8." in n], chooser)
    if int8 and qat_epochs and choice_drop is not None and choice_drop > qat_threshold:
        echo(f"PTQ costs {choice_drop:.2f} points on {choice_on} (> {qat_threshold}): "
             f"quantization-aware fine-tuning for {qat_epochs} epochs")
        x, y = labeled_windows(plan.train, info, per_clip=2, seed=seed)
        tuned = qat_finetune(network, info, x, y, epochs=qat_epochs, seed=seed,
                             calibration=cal)
        qat_dir = out / ".qat"
        try:
            qat_files = write_model_files(
                network, info, qat_dir, formats=formats, float_files=False, int8=True,
                calibration=cal, stem=stem, int8_network=tuned.network,
                tflite_pt2e=(tuned.quantizer, tuned.converted))
            q_qat = dict(q, method="QAT", qat_epochs=qat_epochs, qat_losses=tuned.losses)
            rep_qat = build_report(network=network, info=info,
                                   files=[files[n] for n in files if ".int8." not in n]
                                   + list(qat_files.values()), data=data_set, params=params,
                                   macs_per_second=macs, repeats=repeats, tflm=tflm,
                                   extra={"quantization": q_qat, **extra})
            drop_qat = _int8_drop(rep_qat["files"], rep_qat["torch_float"].get("accuracy"))
            choice_qat = drop_qat if chooser is None else int8_accuracy_drop(
                network, info, list(qat_files.values()), chooser)
            choice = {"on": choice_on, "ptq_drop_points": choice_drop,
                      "qat_drop_points": choice_qat}
            if choice_qat is not None and choice_qat < choice_drop:
                for n, p in qat_files.items():
                    write_file(files[n], p.read_bytes())
                rep, q = rep_qat, q_qat
                q["qat_drop_points"] = drop_qat
                echo(f"QAT: int8 now within {choice_qat:.2f} points on {choice_on}; kept")
            else:
                q["qat_tried"] = {"epochs": qat_epochs, "drop_points": drop_qat}
                rep["quantization"] = q
                echo(f"QAT did not help ({choice_qat} points on {choice_on}); kept the PTQ "
                     "files")
            q["choice"] = choice
        finally:
            shutil.rmtree(qat_dir, ignore_errors=True)
    result["report"] = rep
    if report:
        result["report_files"] = list(write_report(rep, out))
    return result


def _writes_to_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def third_party_output_to(log_path):
    """Everything written to the process's stdout and stderr file descriptors while inside
    (the converters' native log lines, third-party Python warnings and loggers) goes to
    ``log_path`` instead of the user's terminal. Yields a stream on the terminal's stderr for
    what the user should see; edgeaudio's own warnings stay on it too."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    on_terminal = _writes_to_fd(sys.stderr, 2)
    # under a test runner sys.stderr is no file descriptor: it is already out of the terminal
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1) if on_terminal else sys.stderr
    ours = logging.getLogger("edgeaudio")
    handler = logging.StreamHandler(terminal)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    propagate = ours.propagate
    try:
        with open(log_path, "wb") as log_file:
            for fd in saved:
                os.dup2(log_file.fileno(), fd)
            ours.addHandler(handler)
            ours.propagate = False
            try:
                yield terminal
            finally:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
    finally:
        ours.removeHandler(handler)
        ours.propagate = propagate
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        if terminal is not sys.stderr:
            terminal.close()


@click.command("export")
@click.argument("run", type=click.Path(exists=False))
@click.option("--format", "-f", "formats", multiple=True, type=click.Choice(FORMATS),
              help="File format (repeatable). Default: onnx and tflite.")
@click.option("--int8/--no-int8", default=False, show_default=True,
              help="Also write int8 files (post-training quantization, calibrated on "
                   "training data).")
@click.option("--calibration", default=200, show_default=True, type=click.IntRange(1),
              help="Calibration windows drawn from the training clips.")
@click.option("--calibration-data", type=click.Path(file_okay=False),
              help="Calibrate on this folder of audio instead of the training clips.")
@click.option("--data", type=click.Path(),
              help="Data: ESC-50 folder, class sub-folders or a path,label[,fold] CSV. "
                   "Default: the run's own data.")
@click.option("--test-fold", type=int, help="Held-out fold. Default: the run's setting.")
@click.option("--eval-data", type=click.Path(),
              help="Evaluate on this labeled data (folder or CSV) instead of the held-out "
                   "split.")
@click.option("--qat", "qat_epochs", default=0, show_default=True, type=click.IntRange(0),
              help="Quantization-aware fine-tuning epochs, used when PTQ costs more than "
                   "--qat-threshold points of accuracy (on the run's validation clips when "
                   "it has them, else on the held-out clips).")
@click.option("--qat-threshold", default=0.5, show_default=True, type=float,
              help="Accuracy points int8 may lose before QAT is tried.")
@click.option("--out", "-o", default="models", show_default=True,
              type=click.Path(file_okay=False), help="Output folder.")
@click.option("--name", help="Model name in the metadata. Default: the run folder's name.")
@click.option("--stem", default="model", show_default=True, help="File name stem.")
@click.option("--no-report", is_flag=True, help="Skip the evaluation report.")
@click.option("--max-eval-clips", type=click.IntRange(1), help="Evaluate on at most N clips.")
@click.option("--no-tflm", is_flag=True, help="Skip the TensorFlow Lite Micro check.")
@click.option("--window", type=click.FloatRange(0, min_open=True), default=None,
              help="Window the files take, in seconds (default: the training crop). Shorter "
                   "windows cost less per stream hop and react faster to short events; "
                   "clips all of one length score best with a window of that length "
                   "(ESC-50: 5).")
def export_command(run, formats, int8, calibration, calibration_data, data, test_fold,
                   eval_data, qat_epochs, qat_threshold, out, name, stem, no_report,
                   max_eval_clips, no_tflm, window):
    """Export a trained student (checkpoint file or run folder) as .onnx / .tflite files.

    \b
    Writes model.onnx, model.tflite (float) and with --int8 model.int8.onnx, model.int8.tflite,
    plus export_report.json / .md (sizes, MACs, accuracy and agreement, latency, TFLM check).
    \b
    Examples:
      edgeaudio export runs/esc50-f1 --int8 --out models/
      edgeaudio export runs/esc50-f1 -f tflite --int8 --qat 3 --out models/
      edgeaudio export runs/mine/checkpoint.pt --int8 --calibration-data clips/ --no-report
      edgeaudio classify --model models/model.int8.tflite dog.wav
    """
    log_path = prepare_output_dir(out) / LOG_NAME
    with third_party_output_to(log_path) as terminal:
        def echo(msg):
            click.echo(msg, file=terminal)
            if terminal is not sys.stderr:
                print(msg, file=sys.stderr)  # into the log too, for context

        result = export_checkpoint(run, out, formats or FORMATS, int8, calibration, data=data,
                                   window_seconds=window,
                                   test_fold=test_fold, calibration_data=calibration_data,
                                   eval_data=eval_data, qat_epochs=qat_epochs,
                                   qat_threshold=qat_threshold, name=name, stem=stem,
                                   report=not no_report, max_eval_clips=max_eval_clips,
                                   tflm=not no_tflm, echo=echo)
        echo(f"converters' messages: {log_path}")
    for path in list(result["files"].values()) + list(result["report_files"]):
        click.echo(str(path))
    if result["report"] is not None and result["report_files"]:
        click.echo(Path(result["report_files"][1]).read_text(), err=True)


__all__ = ["export_command", "export_checkpoint", "plan_data", "ExportError"]
