#!/usr/bin/env bash
# The main job: `edgeaudio listen` with the bundled model. On a machine without a microphone
# (or given a file) it streams a recording in real time through the same engine.
set -eu
cd "$(dirname "$0")/.."
edgeaudio=.venv/bin/edgeaudio
input=${1:-}
if [ -z "$input" ]; then
    if .venv/bin/python -c "import sys; from edgeaudio.sources import list_input_devices as d; sys.exit(0 if d() else 1)" 2>/dev/null; then
        echo "Listening to the default microphone with the bundled model (Ctrl-C to stop)."
        exec "$edgeaudio" listen
    fi
    input=examples/scene.flac
    echo "No microphone found: streaming $input in real time instead (a dog, a rooster, a crying baby)."
fi
exec "$edgeaudio" listen --input "$input"
