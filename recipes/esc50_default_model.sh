#!/usr/bin/env bash
# Retrain and re-export the bundled default model (edgeaudio/models/esc50-student.int8.*).
#
#   bash recipes/esc50_default_model.sh            # ~35 min on one CPU thread, then export
#
# The recipe is recipes/esc50_default_model.toml, the best row of bench/train_esc50.py
# ("kd+con"): the `small` harmonic student, 40 epochs, KD (weight 0.7) from a linear probe on
# EfficientAT mn04 embeddings plus Con-Reg from YAMNet + EfficientAT, trained on ESC-50 folds
# 2-5 with fold 1 held out (the fold the streaming benchmark and the bundled-model test draw
# their clips from). The run's whole config travels in the files' metadata
# (provenance.config): `edgeaudio info --json`.
set -eu
cd "$(dirname "$0")/.."
SHARED=${EDGEAUDIO_SHARED:-../shared}
RUN=${RUN:-runs/bench/train_esc50/kd+con/fold1}    # reused when already trained
WINDOW=${WINDOW:-}     # seconds per model window; empty: the 4-s training crop (see README)
OUT=runs/default-model
export OMP_WAIT_POLICY=PASSIVE

if [ ! -f "$RUN/metrics.json" ]; then
    .venv/bin/edgeaudio train --config recipes/esc50_default_model.toml \
        --data "$SHARED/data/esc50" --fold 1 --out "$RUN" \
        $( [ -f "$RUN/checkpoint.pt" ] && echo --resume )
fi
.venv/bin/edgeaudio export "$RUN" --int8 --calibration 200 ${WINDOW:+--window "$WINDOW"} \
    --name esc50-student --stem esc50-student --out "$OUT"
cp "$OUT/esc50-student.int8.tflite" "$OUT/esc50-student.int8.onnx" edgeaudio/models/
echo "bundled: edgeaudio/models/esc50-student.int8.{tflite,onnx} (report: $OUT/export_report.md)"
