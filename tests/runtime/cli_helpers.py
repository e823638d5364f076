import json
import subprocess
import sys

from tests.conftest import REPO


def edgeaudio(*args, timeout=60, **kw):
    """Run the real CLI in a fresh process."""
    return subprocess.run([sys.executable, "-m", "edgeaudio", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, **kw)


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def error_lines(stderr):
    """stderr lines that are ours (PortAudio's C library may add its own diagnostics)."""
    return [line for line in stderr.splitlines() if line.startswith(("error:", "warning:"))]
