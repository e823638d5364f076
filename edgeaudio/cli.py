"""The ``edgeaudio`` command: a thin shell over the library.

Runtime commands (classify, listen, devices, info) live here. Commands of the train and export
rooms are mounted lazily, so a runtime-only install answers them with what to install.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import signal
import sys
import time

import click

from . import __version__
from .errors import EdgeAudioError

EXIT_USAGE = 2

# command name -> (module, attribute, extra to install, short help). Their modules import
# torch (~2 s), so `edgeaudio --help` lists them from the short help kept here; a test holds it
# equal to each command's own.
LAZY_COMMANDS = {
    "train": ("edgeaudio.train.cli", "train_command", "train",
              "Train a student (teachers shape it at training time only)."),
    "evaluate": ("edgeaudio.train.cli", "evaluate_command", "train",
                 "Accuracy, per-class report and confusion matrix of a trained run."),
    "probe": ("edgeaudio.train.probe", "probe_command", "train",
              "Linear probes of pretrained teachers' embeddings on your data: how much each "
              "teacher already knows about your classes (and so which to distil from)."),
    "teacher": ("edgeaudio.train.cli", "teacher_group", "train",
                "Teachers fitted on your data (fine-tuned pretrained networks, deep ensembles)."),
    "export": ("edgeaudio.export.cli", "export_command", "export",
               "Export a trained student (checkpoint file or run folder) as .onnx / .tflite "
               "files."),
}
# An extra counts as installed when these import (checked without importing them).
EXTRA_MODULES = {"train": ("torch",), "export": ("torch", "onnx")}


def fail(message: str):
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


class EdgeAudioGroup(click.Group):
    def list_commands(self, ctx):
        lazy = [name for name, (module, *_) in LAZY_COMMANDS.items() if _module_exists(module)]
        return sorted(set(super().list_commands(ctx)) | set(lazy))

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None or name not in LAZY_COMMANDS:
            return command
        module_name, attr, extra, _ = LAZY_COMMANDS[name]
        if not _module_exists(module_name):
            return None
        try:
            return getattr(importlib.import_module(module_name), attr)
        except ImportError as exc:
            return _needs_extra(name, extra, exc)

    def format_commands(self, ctx, formatter):
        """Click's listing, but lazy commands come from LAZY_COMMANDS, not from an import."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows = []
        for name in names:
            if name in LAZY_COMMANDS:
                _, _, extra, short = LAZY_COMMANDS[name]
                if not all(_module_exists(m) for m in EXTRA_MODULES[extra]):
                    short = _needs_extra_help(extra)
                rows.append((name, click.utils.make_default_short_help(short, limit)))
            else:
                command = self.get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeAudioError as exc:
            fail(str(exc))


def _needs_extra(name: str, extra: str, exc: ImportError) -> click.Command:
    """Stands in for a command whose extra is not installed: running it says what to install."""
    message = (f"'edgeaudio {name}' needs the {extra} extra ({exc.name or exc} is missing): "
               f"pip install 'edgeaudio[{extra}]'")
    return click.Command(name, callback=lambda **_: fail(message), add_help_option=False,
                         context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True},
                         short_help=_needs_extra_help(extra))


def _needs_extra_help(extra: str) -> str:
    return f"(needs: pip install 'edgeaudio[{extra}]')"


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _load(model, backend, threads):
    from .model import Model
    return Model(model, backend=backend, threads=threads)


model_option = click.option("--model", "-m", type=click.Path(dir_okay=False), default=None,
                            help="Model file (.onnx or .tflite). Default: the bundled model.")
backend_option = click.option("--backend", default="auto", show_default=True,
                              type=click.Choice(["auto", "onnxruntime", "litert",
                                                 "tflite-runtime"]),
                              help="Inference backend.")
threads_option = click.option("--threads", default=1, show_default=True, type=click.IntRange(1),
                              help="Inference threads.")


@click.group(cls=EdgeAudioGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeaudio")
@click.option("--quiet", "-q", is_flag=True, help="Hide warnings.")
def main(quiet):
    """Sound classification on small devices.

    \b
    Examples:
      edgeaudio listen                          # the microphone, bundled model
      edgeaudio listen --input dog.wav --json   # a recording through the same engine
      edgeaudio classify clips/*.wav --top-k 5
      edgeaudio info model.int8.tflite
    """
    logging.basicConfig(level=logging.ERROR if quiet else logging.WARNING,
                        format="warning: %(message)s", stream=sys.stderr)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@model_option
@click.option("--top-k", "-k", default=3, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
@backend_option
@threads_option
def classify(files, model, top_k, as_json, backend, threads):
    """Classify whole recordings (wav, flac, ogg; any rate and channel count).

    \b
    Examples:
      edgeaudio classify dog.wav
      edgeaudio classify --json --top-k 5 clips/*.flac
    """
    m = _load(model, backend, threads)
    failed = 0
    for path in files:
        try:
            result = m.classify(path)
        except EdgeAudioError as exc:
            click.echo(f"error: {exc}", err=True)
            failed += 1
            continue
        if as_json:
            click.echo(json.dumps(result.to_dict(top_k, file=path)))
        else:
            tops = "  ".join(f"{label} {score:.2f}" for label, score in result.top(top_k))
            click.echo(f"{path}: {tops}")
    if failed:
        sys.exit(EXIT_USAGE)


class LiveView:
    """Top labels updating in place on a terminal; plain lines elsewhere; JSON for programs."""

    def __init__(self, top_k: int, as_json: bool, out=None):
        self.top_k = top_k
        self.as_json = as_json
        self.out = out or sys.stdout
        self.tty = self.out.isatty() and not as_json
        self.status_shown = False

    def _write(self, text):
        self.out.write(text)
        self.out.flush()

    def event(self, event):
        if self.as_json:
            self._write(json.dumps(event.to_dict()) + "\n")
            return
        if event.kind == "start":
            line = f"{event.t_start:8.2f}s  >> {event.label}  {event.score:.2f}"
        else:
            line = f"{event.t_end:8.2f}s  << {event.label}  (peak {event.score:.2f}, " \
                   f"{event.t_end - event.t_start:.2f} s)"
        self._write(("\r\033[K" if self.status_shown else "") + line + "\n")
        self.status_shown = False

    def hop(self, stream):
        if self.as_json:
            return
        tops = " | ".join(f"{label} {score:.2f}" for label, score in stream.top(self.top_k))
        if self.tty:
            self._write(f"\r\033[K{stream.time:8.2f}s  {tops}")
            self.status_shown = True
        else:
            self._write(f"{stream.time:8.2f}s  {tops}\n")

    def notice(self, line):
        """A line on stderr that does not break the status line on a terminal."""
        if self.status_shown:
            self._write("\n")
            self.status_shown = False
        click.echo(line, err=True)

    def close(self):
        if self.status_shown:
            self._write("\n")


@main.command()
@model_option
@click.option("--device", "-d", default=None,
              help="Input device index or (part of) its name. Default: the system default.")
@click.option("--input", "-i", "input_path", default=None,
              help="Stream a recording instead of the microphone ('-': raw s16le mono PCM on "
                   "stdin at --rate).")
@click.option("--fast", is_flag=True, help="With --input FILE: as fast as possible, not in "
                                           "real time.")
@click.option("--rate", type=int, default=None, help="Sample rate of PCM on stdin "
                                                     "(default: the model's).")
@click.option("--threshold", "-t", type=float, default=None,
              help="Score that opens an event (default: the model's).")
@click.option("--patience", type=click.IntRange(1), default=None,
              help="Consecutive hops above threshold to open an event.")
@click.option("--smooth", type=click.IntRange(1), default=None,
              help="Average scores over this many hops.")
@click.option("--hop", "hop_seconds", type=click.FloatRange(0.01), default=None,
              help="Seconds between inferences (default: the model's).")
@click.option("--gate-db", type=float, default=None,
              help="Windows quieter than this RMS level (dBFS) score zero (default: the model's).")
@click.option("--top-k", "-k", default=3, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines: one when an event starts (t_end null), one when it ends.")
@click.option("--reconnect", is_flag=True, help="Retry when the device disappears.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@backend_option
@threads_option
def listen(model, device, input_path, fast, rate, threshold, patience, smooth, hop_seconds,
           gate_db, top_k, as_json, reconnect, duration, backend, threads):
    """Classify the microphone live (or a recording, in real time).

    \b
    Events: a class opens an event after --patience hops with a smoothed score at or above
    --threshold, and closes it when its score falls below 0.7 x threshold. With --json each
    event gives two lines:
      {"event": "start", "label": "dog", "score": 0.91, "t_start": 3.2, "t_end": null}
      {"event": "end",   "label": "dog", "score": 0.95, "t_start": 3.2, "t_end": 4.7}
    Times are seconds since listening began. Ctrl-C stops with a one-line summary.

    \b
    Examples:
      edgeaudio listen
      edgeaudio listen --device pulse --json
      edgeaudio listen --input examples/dog.flac --fast
      arecord -f S16_LE -c 1 -r 16000 | edgeaudio listen --input -
    """
    from .listen import Listener
    from .sources import FileSource, Microphone, StdinSource

    m = _load(model, backend, threads)
    if input_path == "-":
        source_rate = m.sample_rate if rate is None else rate
        make_source = lambda: StdinSource(source_rate)  # noqa: E731
    elif input_path is not None:
        make_source = lambda: FileSource(input_path, realtime=not fast)  # noqa: E731
    else:
        make_source = lambda: Microphone(device, preferred_rate=m.sample_rate)  # noqa: E731
    source = make_source()
    try:
        engine = m.stream(hop_seconds=hop_seconds, smooth=smooth, threshold=threshold,
                          patience=patience, gate_db=gate_db, input_rate=source.rate)
    except ValueError as exc:  # settings the model cannot serve (a hop below one frame, ...)
        fail(str(exc))
    view = LiveView(top_k, as_json)
    listener = Listener(engine, on_event=view.event, on_hop=view.hop,
                        on_notice=lambda message: view.notice(f"warning: {message}"))
    if duration is not None:
        source = _limited(source, duration)
    # on stderr, so JSON on stdout stays clean
    click.echo(f"listening to {source.device_name} at {source.rate} Hz with {m.info.name} "
               f"({m.backend_name}); Ctrl-C to stop", err=True)
    _stop_on_sigterm()
    try:
        while True:
            try:
                listener.run(source)
                break
            except EdgeAudioError as exc:
                if not (reconnect and input_path is None):
                    raise
                view.notice(f"warning: {exc}; retrying every {RETRY_SECONDS:g} s "
                            "(Ctrl-C to stop)")
                listener.source_closed()
                listener.summary.reconnects += 1
                source = _reopen(make_source, duration, listener)
                if source is None:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        listener.finish()
        view.close()
        click.echo(listener.summary.line(), err=True)


RETRY_SECONDS = 1.0


def _stop_on_sigterm():
    """SIGTERM (systemd, Docker, kill) ends `listen` the way Ctrl-C does: open events closed,
    summary printed, exit 0."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


def _reopen(make_source, duration, listener):
    """Retry the device every RETRY_SECONDS until it is back (Ctrl-C gives up), quietly: the
    audio libraries' own complaints about the missing device are hidden."""
    from .backends import native_stderr_silenced

    while True:
        time.sleep(RETRY_SECONDS)
        try:
            with native_stderr_silenced():   # ALSA: a dozen lines a try
                source = make_source()
        except EdgeAudioError:
            continue
        if duration is not None:
            remaining = duration - listener.stream.time
            if remaining <= 0:
                return None
            source = _limited(source, remaining)
        return source


class _limited:
    """A source that stops after ``seconds`` of audio."""

    def __init__(self, source, seconds):
        self.source = source
        self.limit = int(seconds * source.rate)

    def __getattr__(self, name):
        return getattr(self.source, name)

    def __enter__(self):
        self.source.__enter__()
        return self

    def __exit__(self, *exc):
        return self.source.__exit__(*exc)

    def __iter__(self):
        sent = 0
        for chunk in self.source:
            chunk = chunk[:self.limit - sent]
            sent += len(chunk)
            if len(chunk):
                yield chunk
            if sent >= self.limit:
                return


@main.command()
@click.option("--json", "as_json", is_flag=True)
def devices(as_json):
    """List audio input devices (index, name, channels, default rate)."""
    from .sources import list_input_devices

    found = list_input_devices()
    if as_json:
        click.echo(json.dumps(found))
        return
    if not found:
        click.echo("no input devices found", err=True)
        return
    for d in found:
        mark = "*" if d["default"] else " "
        click.echo(f"{mark}{d['index']:3d}  {d['name']}  ({d['channels']} ch, "
                   f"{d['default_rate']:.0f} Hz)")


@main.command()
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
@backend_option
def info(model, as_json, backend):
    """Describe a model file (default: the bundled model)."""
    import os

    m = _load(model, backend, 1)
    i = m.info
    d = i.to_dict()
    fb = dict(d["frontend"]["filterbank"])
    fb.pop("data_b64", None)  # the matrix itself is noise on a terminal
    d["frontend"]["filterbank"] = fb
    d.update({"file": str(m.path), "format": m.format, "backend": m.backend_name,
              "size_bytes": os.path.getsize(m.path), "input_shape": list(m.backend.input_shape)})
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    f = i.frontend
    click.echo(f"{i.name} {i.version}  ({m.format}, {d['size_bytes'] / 1024:.0f} KiB, "
               f"backend {m.backend_name})")
    click.echo(f"  sample rate   {i.sample_rate} Hz")
    click.echo(f"  front end     STFT n_fft {f.n_fft}, window {f.win_length}, hop {f.hop_length}; "
               f"{fb.get('kind')} filterbank, {f.n_bins} bins; log(x + {f.log_offset:g})")
    if i.streaming is None:
        click.echo(f"  window / hop  {i.window_seconds:.3f} s ({i.n_frames} frames) / "
                   f"{i.hop_seconds:.3f} s")
    else:
        st = i.streaming
        click.echo(f"  streaming     one {i.chunk_seconds:.3f}-s chunk ({st['chunk_frames']} "
                   f"frames) a call, {len(st['states'])} carried states; window "
                   f"{i.scored_window_seconds:.3f} s ({st['window_chunks']} chunks)")
    click.echo(f"  input         {list(m.backend.input_shape)}")
    click.echo(f"  labels ({len(i.labels)})   {', '.join(i.labels)}")
    if i.provenance:
        click.echo(f"  provenance    {json.dumps(i.provenance)}")


if __name__ == "__main__":
    main()
