"""The CLI as a user runs it: real processes, real model files, real clips."""
import importlib
import json
import os
import pty
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import PLACEHOLDER, REPO, esc50_clip
from tests.runtime.cli_helpers import edgeaudio, error_lines, json_lines

DOG = "5-203128-B-0"
BABY = "5-151085-A-20"  # crying baby, fold 5
MODEL = PLACEHOLDER.with_suffix(".tflite")


def test_classify_json_one_object_per_file(esc50):
    r = edgeaudio("classify", "--json", "--top-k", 2, "--model", MODEL,
                  esc50_clip(DOG), esc50_clip(BABY))
    assert r.returncode == 0, r.stderr
    out = json_lines(r.stdout)
    assert [o["top"][0]["label"] for o in out] == ["dog", "crying_baby"]
    assert all(set(o) == {"file", "top", "windows", "frames"} and len(o["top"]) == 2
               for o in out)
    # 5 s at a 0.995 s window and 0.25 s hop: 17 windows, the 20 ms tail left (cover rule)
    assert out[0]["windows"] == 17 and out[0]["frames"] == out[0]["windows"]  # old key kept


def test_classify_text_uses_the_bundled_model_by_default(esc50):
    held_out_dog = esc50_clip("1-30344-A-0")  # fold 1: the bundled model did not train on it
    r = edgeaudio("classify", held_out_dog)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(held_out_dog)) and "dog" in r.stdout


def test_info_json_and_text():
    r = edgeaudio("info", MODEL, "--json")
    d = json.loads(r.stdout)
    assert d["sample_rate"] == 16000 and d["backend"] == "litert" and len(d["labels"]) == 10
    assert d["input_shape"] == [1, 98, 64] and d["size_bytes"] > 1000
    text = edgeaudio("info", PLACEHOLDER.with_suffix(".onnx")).stdout
    assert "onnxruntime" in text and "mel filterbank" in text


def test_listen_input_fast_json_events(esc50):
    r = edgeaudio("listen", "--input", esc50_clip(DOG), "--fast", "--json", "--model", MODEL)
    assert r.returncode == 0, r.stderr
    events = json_lines(r.stdout)
    assert events and events[0] == {**events[0], "event": "start", "label": "dog",
                                    "t_end": None}
    assert events[-1]["event"] == "end" and events[-1]["t_end"] >= events[-1]["t_start"]
    assert "listened 5.0 s" in r.stderr


def test_listen_plain_lines_when_not_a_terminal(esc50):
    r = edgeaudio("listen", "--input", esc50_clip(DOG), "--fast", "--model", MODEL)
    lines = r.stdout.splitlines()
    assert any(">> dog" in line for line in lines)
    assert sum("|" in line for line in lines) == 20  # one status line per hop, no \r


def test_listen_pcm_on_stdin(esc50):
    x, _ = sf.read(esc50_clip(DOG), dtype="int16")
    r = subprocess.run([sys.executable, "-m", "edgeaudio", "listen", "--input", "-", "--json",
                        "--model", str(MODEL)], input=x.astype("<i2").tobytes(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json_lines(r.stdout.decode())[0]["label"] == "dog"


def test_listen_real_time_takes_real_time(tmp_path, esc50):
    x, rate = sf.read(esc50_clip(DOG), dtype="float32")
    short = tmp_path / "short.wav"
    sf.write(short, x[: 2 * rate], rate)
    t0 = time.monotonic()
    r = edgeaudio("listen", "--input", short, "--json", "--model", MODEL)
    assert r.returncode == 0
    assert time.monotonic() - t0 >= 2.0


def bad_inputs(tmp_path, esc50):
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(esc50_clip(DOG).read_bytes()[:4000])
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, np.float32), 16000)
    return {"unreadable": (text, "cannot read audio"), "empty": (empty, "empty file"),
            "truncated flac": (cut, "cannot read audio"), "nan": (nan, "NaN"),
            "0-length": (zero, "0-length")}


@pytest.mark.parametrize("case", ["unreadable", "empty", "truncated flac", "nan", "0-length"])
def test_bad_audio_one_line_exit_2(tmp_path, esc50, case):
    path, message = bad_inputs(tmp_path, esc50)[case]
    r = edgeaudio("classify", path, "--model", MODEL)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and message in r.stderr, r.stderr


def test_bad_file_among_good_ones_loses_nothing(tmp_path, esc50):
    path, _ = bad_inputs(tmp_path, esc50)["empty"]
    r = edgeaudio("classify", "--json", esc50_clip(DOG), path, "--model", MODEL)
    assert r.returncode == 2
    assert json_lines(r.stdout)[0]["top"][0]["label"] == "dog"
    assert len(error_lines(r.stderr)) == 1


@pytest.mark.parametrize("case", ["truncated", "no metadata", "missing"])
def test_bad_model_one_line_exit_2(tmp_path, case):
    if case == "truncated":
        model = tmp_path / "cut.tflite"
        model.write_bytes(MODEL.read_bytes()[:5000])
    elif case == "no metadata":
        onnx = pytest.importorskip("onnx")
        m = onnx.load(str(PLACEHOLDER.with_suffix(".onnx")))
        del m.metadata_props[:]
        model = tmp_path / "bare.onnx"
        onnx.save(m, str(model))
    else:
        model = tmp_path / "missing.onnx"
    r = edgeaudio("info", model)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr


def test_unknown_device_one_line_exit_2():
    r = edgeaudio("listen", "--device", "no-such-microphone-xyz", "--model", MODEL)
    assert r.returncode == 2
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and "no input device named" in errors[0], r.stderr


def test_help_has_examples():
    r = edgeaudio("listen", "--help")
    assert "Examples:" in r.stdout and "--threshold" in r.stdout


def test_live_view_updates_in_place_on_a_terminal(esc50):
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "edgeaudio", "listen", "--input",
                             str(esc50_clip(DOG)), "--fast", "--model", str(MODEL)],
                            stdout=follower, stderr=subprocess.PIPE, cwd=REPO)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(leader)
    screen = b"".join(chunks).decode()
    assert screen.count("\r\x1b[K") >= 20  # each hop rewrites the status line
    assert ">> dog" in screen


def test_ctrl_c_exits_cleanly_with_a_summary(esc50, tmp_path):
    # A 30 s recording, so "stopped early" holds even when a loaded machine delays the signal.
    audio, rate = sf.read(esc50_clip(DOG), dtype="float32")
    long_clip = tmp_path / "dog_30s.wav"
    sf.write(long_clip, np.tile(audio, 6), rate)
    proc = subprocess.Popen([sys.executable, "-m", "edgeaudio", "listen", "--input",
                             str(long_clip), "--json", "--model", str(MODEL)],
                            # A terminal's Ctrl-C: a CI shell's background job ignores SIGINT.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stderr.readline().startswith("listening to")
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "Traceback" not in err
    summary = [line for line in err.splitlines() if line.startswith("listened")]
    assert len(summary) == 1, err
    seconds = float(summary[0].split()[1])
    assert 1.0 <= seconds < 25.0


WITHOUT_TORCH = ("import sys; sys.modules['torch'] = None  # import torch raises ImportError\n"
                 "from edgeaudio.cli import main; main(sys.argv[1:])")


def test_help_lists_training_commands_without_torch_and_running_one_says_what_to_install():
    """A runtime-only install (no torch) still gets --help; train/export name their extra."""
    def run(*args):
        return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
    helped = run("--help")
    assert helped.returncode == 0, helped.stderr
    assert "classify" in helped.stdout and "pip install 'edgeaudio[train]'" in helped.stdout
    trained = run("train", "--data", "x")
    assert trained.returncode == 2
    assert error_lines(trained.stderr) == [
        "error: 'edgeaudio train' needs the train extra (torch is missing): "
        "pip install 'edgeaudio[train]'"]


def test_help_lists_training_commands_without_importing_torch():
    code = ("import sys\nfrom edgeaudio.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nprint('torch imported' if 'torch' in sys.modules "
            "else 'torch not imported')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "torch not imported"
    assert "train " in done.stdout and "export " in done.stdout


def test_lazy_commands_short_help_matches_the_commands_own():
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from edgeaudio.cli import LAZY_COMMANDS
    for name, (module, attr, _, short) in LAZY_COMMANDS.items():
        command = getattr(importlib.import_module(module), attr)
        assert command.get_short_help_str(10_000) == short, name


@pytest.mark.parametrize("rate", [-1, 0, 1, 3999, 10 ** 7])
def test_listen_stdin_rate_outside_what_can_be_served_exit_2(rate):
    """--rate -1 gave a traceback, --rate 1 hung: both are one error line and exit 2 now."""
    r = subprocess.run([sys.executable, "-m", "edgeaudio", "listen", "--input", "-", "--rate",
                        str(rate), "--model", str(MODEL)], input=b"\0" * 64000,
                       capture_output=True, timeout=30, cwd=REPO)
    assert r.returncode == 2, r.stderr
    errors = error_lines(r.stderr.decode())
    assert len(errors) == 1 and f"sample rate {rate} Hz is outside" in errors[0], r.stderr


def test_listen_hop_below_one_frame_exit_2():
    # the bundled model's front end hops 10 ms, the shortest --hop the option takes: a 5 ms
    # stream hop is refused by the option (the library's own check: tests/runtime/test_api_input)
    r = subprocess.run([sys.executable, "-m", "edgeaudio", "listen", "--input",
                        str(REPO / "examples" / "dog.flac"), "--fast", "--hop", "0.005"],
                       capture_output=True, timeout=30, cwd=REPO)
    assert r.returncode == 2, r.stderr
    stderr = r.stderr.decode()
    assert "Invalid value for '--hop'" in stderr and "Traceback" not in stderr, stderr


def test_sigterm_ends_listen_like_ctrl_c(esc50, tmp_path):
    """systemd and Docker stop with SIGTERM: the open event is closed and the summary printed."""
    audio, rate = sf.read(esc50_clip(DOG), dtype="float32")
    long_clip = tmp_path / "dog_30s.wav"
    sf.write(long_clip, np.tile(audio, 6), rate)
    proc = subprocess.Popen([sys.executable, "-m", "edgeaudio", "listen", "--input",
                             str(long_clip), "--json", "--threshold", "0.3", "--model",
                             str(MODEL)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    assert proc.stderr.readline().startswith("listening to")
    first = json.loads(proc.stdout.readline())            # the bark opens an event...
    assert first["event"] == "start" and first["label"] == "dog"
    proc.send_signal(signal.SIGTERM)                      # ...and SIGTERM comes while it is open
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err, err
    events = [first] + json_lines(out)
    opened = [e["label"] for e in events if e["event"] == "start"]
    closed = [e["label"] for e in events if e["event"] == "end"]
    assert sorted(opened) == sorted(closed), events
    summary = [line for line in err.splitlines() if line.startswith("listened")]
    assert len(summary) == 1 and float(summary[0].split()[1]) < 25.0, err


def test_classify_warns_about_a_wav_shorter_than_its_header(tmp_path, esc50):
    x, rate = sf.read(esc50_clip(DOG), dtype="float32")
    whole = tmp_path / "dog.wav"
    sf.write(whole, x, rate, subtype="PCM_16")
    data = whole.read_bytes()
    cut = tmp_path / "dog_cut.wav"
    cut.write_bytes(data[:44 + 2 * 3 * rate])                # the header, then 3 s of 5
    r = edgeaudio("classify", "--json", cut, "--model", MODEL)
    assert r.returncode == 0, r.stderr
    warnings = error_lines(r.stderr)
    assert len(warnings) == 1 and str(cut) in warnings[0], r.stderr
    assert f"{2 * rate} frames (2.00 s) are missing" in warnings[0]
    assert json_lines(r.stdout)[0]["windows"] == 9            # what is there is classified
    assert error_lines(edgeaudio("classify", whole, "--model", MODEL).stderr) == []


def test_listen_says_once_when_the_input_stays_digital_silence(esc50):
    """A muted capture piped in (arecord from a muted or missing microphone): zeros only."""
    def run(pcm):
        r = subprocess.run([sys.executable, "-m", "edgeaudio", "listen", "--input", "-",
                            "--json", "--model", str(MODEL)], input=pcm, capture_output=True,
                           timeout=60, cwd=REPO)
        assert r.returncode == 0, r.stderr
        return [line for line in error_lines(r.stderr.decode()) if "digital silence" in line]
    assert len(run(b"\0\0" * 16000 * 8)) == 1                  # 8 s of zeros: said once
    x, _ = sf.read(esc50_clip(DOG), dtype="int16")
    assert run(np.tile(x, 2).astype("<i2").tobytes()) == []     # a real recording: never
