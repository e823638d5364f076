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
    return subprocess.run(["pactl", *args], capture_output=True, text=True, check=check,
                          env={**os.environ, "LC_ALL": "C"})


def pulseaudio_running():
    return pactl("info", check=False).returncode == 0


def start_pulseaudio():
    if not pulseaudio_running():
        subprocess.run(["pulseaudio", "-D", "--exit-idle-time=-1"], capture_output=True)
    for _ in range(50):
        if pulseaudio_running():
            break
        time.sleep(0.1)
    else:
        pytest.fail("PulseAudio did not start")
    module = pactl("load-module", "module-null-sink", f"sink_name={SINK}").stdout.strip()
    pactl("set-default-source", f"{SINK}.monitor")
    return module


def unload_test_modules():
    """Unload the modules these tests loaded (they name SINK), on whichever server runs now."""
    for line in pactl("list", "modules", "short", check=False).stdout.splitlines():
        if SINK in line:
            pactl("unload-module", line.split()[0], check=False)


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
    already_running = pulseaudio_running()
    start_pulseaudio()
    yield SINK
    if already_running:   # someone's server: leave it, without our sink
        unload_test_modules()
    else:                 # the one we started: a later `make demo` must not find its silence
        stop_pulseaudio()


def test_the_server_these_tests_start_is_stopped_after_them():
    """Left running, its silent default source passed for a microphone in a later `make demo`
    (runs first in this file, before the module's own server exists)."""
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        pytest.skip("pulseaudio not installed (make setup installs it)")
    if pulseaudio_running():
        pytest.skip("a PulseAudio server already runs here: the tests leave it running")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"{__file__}::test_devices_lists_the_pulse_input"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr
    assert not pulseaudio_running()


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
    time.sleep(3.0)  # the pulse plugin's first audio comes about 2 s after it opens
    stop_pulseaudio()
    time.sleep(1.0)
    start_pulseaudio()
    out, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, err
    assert "1 reconnect(s)" in err and "listened 6.0 s" in err
    # quietly: one status line, no ALSA complaint per retry, and the audio missed is counted
    assert sum("retrying every" in line for line in error_lines(err)) == 1, err
    assert "ALSA lib" not in err, err
    lost = float(err.split(" s of audio lost")[0].rsplit(" ", 1)[1])
    assert 1.0 <= lost <= 15.0, err


def test_devices_lists_the_pulse_input(pulse):
    r = subprocess.run([sys.executable, "-m", "edgeaudio", "devices", "--json"], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    devices = json.loads(r.stdout)
    pulse_in = [d for d in devices if d["name"] == "pulse"]
    assert pulse_in and pulse_in[0]["channels"] >= 1 and pulse_in[0]["default_rate"] > 0


def test_listen_says_once_that_the_input_is_digital_silence(pulse):
    """The monitor of an idle null sink: what a headless machine's audio server offers."""
    proc = listen("--json", "--duration", 5)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    notices = [line for line in error_lines(err) if "digital silence" in line]
    assert len(notices) == 1 and "no microphone, a muted one" in notices[0], err


def demo_first_line():
    """`make demo`'s choice: its first line says what it listens to; then it is stopped."""
    proc = subprocess.Popen(["bash", "scripts/demo.sh"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        return proc.stdout.readline()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_demo_falls_back_to_the_example_when_the_default_source_is_a_monitor(pulse):
    assert pactl("get-default-source").stdout.strip() == f"{pulse}.monitor"
    line = demo_first_line()
    assert f"default input ({pulse}.monitor) is not a microphone" in line, line
    assert "streaming examples/scene.flac" in line


def test_demo_falls_back_when_the_default_source_has_no_hardware(pulse):
    module = pactl("load-module", "module-null-source", f"source_name={pulse}_src").stdout
    try:
        pactl("set-default-source", f"{pulse}_src")
        line = demo_first_line()
    finally:
        pactl("set-default-source", f"{pulse}.monitor")
        pactl("unload-module", module.strip(), check=False)
    assert f"default input ({pulse}_src) is not a microphone" in line, line
