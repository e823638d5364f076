#!/usr/bin/env bash
# Retrain and re-export the bundled default model (edgeaudio/models/esc50-student.int8.*).
#
#   bash recipes/esc50_default_model.sh     # ~100 min on one CPU thread, then ~13 min export
#
# The recipe is recipes/esc50_default_model.toml, the mn04-short320-inherit-distill row of
# bench/mn_student_esc50.py: mn04-short320 inherited from EfficientAT mn04, taught online by
# mn04 + a linear probe, 40 epochs, trained on ESC-50 folds 2-5 with fold 1 held out (the fold
# the streaming benchmark and the bundled-model test draw their clips from). int8 with two
# epochs of quantization-aware fine-tuning where post-training quantization costs over 0.5
# points. The run's whole config travels in the files' metadata (provenance.config):
# `edgeaudio info --json`.
set -eu
cd "$(dirname "$0")/.."
SHARED=${EDGEAUDIO_SHARED:-../shared}
RUN=${RUN:-runs/bench/mn_student_esc50/mn04-short320-inherit-distill/fold1}  # reused when trained
OUT=runs/default-model
export OMP_WAIT_POLICY=PASSIVE

if [ ! -f "$RUN/metrics.json" ]; then  # a killed run continues from its checkpoint
    .venv/bin/edgeaudio train --config recipes/esc50_default_model.toml \
        --data "$SHARED/data/esc50" --fold 1 --out "$RUN" \
        $( [ -f "$RUN/checkpoint.pt" ] && echo --resume )
fi
# --no-tflm: a 4-s window of mn04's early feature maps is no microcontroller graph (mn04-tiny,
# whose early maps are the same, needs a 189 KiB TFLM arena at 1 s: bench/firmware.py)
.venv/bin/edgeaudio export "$RUN" --int8 --calibration 200 --qat 2 --no-tflm \
    --name esc50-student --stem esc50-student --out "$OUT"
cp "$OUT/esc50-student.int8.tflite" "$OUT/esc50-student.int8.onnx" edgeaudio/models/
echo "bundled: edgeaudio/models/esc50-student.int8.{tflite,onnx} (report: $OUT/export_report.md)"
