"""The real microphone path: a PulseAudio server with a null sink, a real recording played into
it with paplay, captured by `edgeaudio listen --device pulse` through sounddevice and ALSA's
pulse plugin. No mock: this is the path a Raspberry Pi with a USB microphone takes."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import PLACEHOLDER, REPO, esc50_clip
from tests.runtime.cli_helpers import error_lines, json_lines

DOG = "5-203128-B-0"
MODEL = PLACEHOLDER.with_suffix(".tflite")
SINK = f"edgeaudio_test_{os.getpid()}"


def pactl(*args, check=True):
    return subprocess.run(["pactl", *args], capture_output=True, text=True, check=check)


def start_pulseaudio():
    if pactl("info", check=False).returncode != 0:
        subprocess.run(["pulseaudio", "-D", "--exit-idle-time=-1"], capture_output=True)
    for _ in range(50):
        if pactl("info", check=False).returncode == 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("PulseAudio did not start")
    module = pactl("load-module", "module-null-sink", f"sink_name={SINK}").stdout.strip()
    pactl("set-default-source", f"{SINK}.monitor")
    return module


def stop_pulseaudio():
    subprocess.run(["pulseaudio", "-k"], capture_output=True)
    for _ in range(50):
        if pactl("info", check=False).returncode != 0:
            return
        time.sleep(0.1)


@pytest.fixture(scope="module")
def pulse():
    missing = [t for t in ("pulseaudio", "pactl", "paplay") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make setup installs pulseaudio)")
    module = start_pulseaudio()
    yield SINK
    pactl("unload-module", module, check=False)


def listen(*args):
    proc = subprocess.Popen([sys.executable, "-m", "edgeaudio", "listen", "--device", "pulse",
                             "--model", str(MODEL), *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    banner = proc.stderr.readline()  # printed once the device is found, just before it opens
    assert banner.startswith("listening to pulse"), banner + proc.stderr.read()
    return proc


def test_listen_hears_a_recording_played_into_the_microphone(pulse, esc50):
    proc = listen("--json", "--duration", 7)
    time.sleep(0.5)
    subprocess.run(["paplay", f"--device={pulse}", str(esc50_clip(DOG))], check=True)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    starts = [e for e in json_lines(out) if e["event"] == "start"]
    assert "dog" in [e["label"] for e in starts], out
    assert "listened 7.0 s" in err and " 0 dropped block(s)" in err


def test_device_that_disappears_gives_a_clear_error(pulse):
    proc = listen("--json", "--duration", 30)
    time.sleep(1.0)
    stop_pulseaudio()
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        start_pulseaudio()
    assert proc.returncode == 2
    errors = error_lines(err)
    assert len(errors) == 1 and "stopped delivering audio" in errors[0], err


def test_reconnect_when_the_device_comes_back(pulse):
    proc = listen("--json", "--duration", 6, "--reconnect")
    time.sleep(1.0)
    stop_pulseaudio()
    time.sleep(1.0)
    start_pulseaudio()
    out, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, err
    assert "1 reconnect(s)" in err and "listened 6.0 s" in err


def test_devices_lists_the_pulse_input(pulse):
    r = subprocess.run([sys.executable, "-m", "edgeaudio", "devices", "--json"], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    devices = json.loads(r.stdout)
    pulse_in = [d for d in devices if d["name"] == "pulse"]
    assert pulse_in and pulse_in[0]["channels"] >= 1 and pulse_in[0]["default_rate"] > 0
