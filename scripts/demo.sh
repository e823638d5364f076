#!/usr/bin/env bash
# The main job: `edgeaudio listen` with the bundled model. On a machine without a microphone
# (or given a file) it streams a recording in real time through the same engine.
set -eu
cd "$(dirname "$0")/.."
edgeaudio=.venv/bin/edgeaudio
input=${1:-}

# The audio server's default source, when one runs: on a headless machine it is the monitor of
# a (null) sink, or some other source with no hardware behind it, which delivers only silence.
default_pulse_source() {
    LC_ALL=C pactl get-default-source 2>/dev/null \
        || LC_ALL=C pactl info 2>/dev/null | sed -n 's/^Default Source: //p'
}

# Exit status 0 when the audio server's default source is a real capture device (a HARDWARE
# source, not a monitor); 0 as well when no audio server runs (ALSA's device list decides).
default_source_is_capture_device() {
    command -v pactl >/dev/null 2>&1 || return 0
    LC_ALL=C pactl info >/dev/null 2>&1 || return 0
    local source
    source=$(default_pulse_source)
    case "$source" in
        "" | *.monitor) return 1 ;;
    esac
    LC_ALL=C pactl list sources | awk -v name="$source" '
        $1 == "Name:" { mine = ($2 == name) }
        mine && $1 == "Flags:" { for (i = 2; i <= NF; i++) if ($i == "HARDWARE") found = 1 }
        END { exit found ? 0 : 1 }'
}

if [ -z "$input" ]; then
    if ! .venv/bin/python -c "import sys; from edgeaudio.sources import list_input_devices as d; sys.exit(0 if d() else 1)" 2>/dev/null; then
        reason="No microphone found"
    elif ! default_source_is_capture_device; then
        reason="The default input ($(default_pulse_source)) is not a microphone"
    else
        echo "Listening to the default microphone with the bundled model (Ctrl-C to stop)."
        exec "$edgeaudio" listen
    fi
    input=examples/scene.flac
    echo "$reason: streaming $input in real time instead (a dog, a rooster, a crying baby)."
fi
exec "$edgeaudio" listen --input "$input"
