#!/usr/bin/env python3
"""Export benchmark: export a trained student (all four files + the parity report), then put
its int8 files side by side with YAMNet's TFLite file on the same machine and runtime, 1 thread.

    .venv/bin/python bench/export.py runs/esc50-f1 [--out models/esc50-f1] [--calibration 200]
        [--qat 2] [--json bench/results/export.json]
    .venv/bin/python bench/export.py --models models/esc50-f1      # re-measure, no export

Figures per file: size (whole file and graph alone), held-out accuracy, top-1 agreement with
torch float (from the export report), and compute per second of audio on 1 thread:

- *stream*: model (and model + numpy front end) per window divided by the stream hop: what
  `edgeaudio listen` spends per second of audio at the model's default hop;
- *no overlap*: model per window divided by the window length: throughput on back-to-back
  windows, the fairer comparison with YAMNet (which the waveform model runs on 0.96 s patches
  every 0.48 s, its own front end included).

YAMNet (`yamnet_waveform.tflite`, float32 waveform in, int8 weights) runs through LiteRT's
Interpreter with 1 thread on 10 s of a real recording; its figure is per second of audio.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: 1 thread, as the runtime

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("EDGEAUDIO_SHARED", REPO.parent / "shared"))

from edgeaudio import Model  # noqa: E402
from edgeaudio.audio import load_audio  # noqa: E402
from edgeaudio.backends import BACKENDS_FOR_FORMAT, native_stderr_silenced, \
    backend_available  # noqa: E402


def yamnet_row(path: Path, audio: Path, repeats: int) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    from edgeaudio.export.report import timed_ms

    wave = load_audio(audio, 16000)
    seconds = 10.0
    if len(wave) < seconds * 16000:
        wave = np.tile(wave, int(np.ceil(seconds * 16000 / len(wave))))
    wave = np.ascontiguousarray(wave[:int(seconds * 16000)], np.float32)
    with native_stderr_silenced():
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, [len(wave)])
        interpreter.allocate_tensors()

    def run():
        interpreter.set_tensor(index, wave)
        interpreter.invoke()

    ms = timed_ms(run, max(3, repeats // 20))
    scores = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return {"file": str(path), "bytes": path.stat().st_size, "backend": "litert",
            "audio_seconds": seconds, "frames": int(scores.shape[0]),
            "ms_per_audio_second": ms / seconds,
            "note": "waveform in (front end inside), 521 AudioSet classes, 0.96 s patches "
                    "every 0.48 s"}


def our_rows(models: Path, audio: Path, repeats: int) -> list:
    from edgeaudio.export.report import graph_bytes, timed_ms

    rows = []
    for name in ("model.onnx", "model.int8.onnx", "model.tflite", "model.int8.tflite"):
        path = models / name
        if not path.exists():
            continue
        fmt = path.suffix[1:]
        for backend in BACKENDS_FOR_FORMAT[fmt]:
            if not backend_available(backend):
                continue
            model = Model(path, backend=backend, threads=1)
            wave = load_audio(audio, model.sample_rate)
            window = wave[:model.info.window_samples]
            features = model.frontend(window)
            model_ms = timed_ms(lambda: model.backend.run(features), repeats)
            frontend_ms = timed_ms(lambda: model.frontend(window), repeats)
            hop, win = model.info.hop_seconds, model.info.window_seconds
            rows.append({"file": name, "backend": backend, "bytes": path.stat().st_size,
                         "graph_bytes": graph_bytes(path), "model_ms_per_window": model_ms,
                         "frontend_ms_per_window": frontend_ms, "hop_seconds": hop,
                         "window_seconds": win,
                         "stream_model_ms_per_audio_second": model_ms / hop,
                         "stream_total_ms_per_audio_second": (model_ms + frontend_ms) / hop,
                         "no_overlap_model_ms_per_audio_second": model_ms / win,
                         "no_overlap_total_ms_per_audio_second": (model_ms + frontend_ms) / win})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", help="checkpoint file or run folder to export")
    ap.add_argument("--out", type=Path, help="where the files go (default models/<run name>)")
    ap.add_argument("--models", type=Path, help="measure already exported files here instead")
    ap.add_argument("--calibration", type=int, default=200)
    ap.add_argument("--qat", type=int, default=0, help="QAT epochs when PTQ costs > 0.5 pt")
    ap.add_argument("--max-eval-clips", type=int, default=None)
    ap.add_argument("--audio", type=Path, default=REPO / "examples" / "scene.flac")
    ap.add_argument("--yamnet", type=Path,
                    default=SHARED / "weights" / "yamnet" / "yamnet_waveform.tflite")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "export.json")
    args = ap.parse_args()
    if not args.run and not args.models:
        ap.error("give a run to export, or --models with exported files")

    import torch
    torch.set_num_threads(1)
    from edgeaudio.export.report import JSON_NAME, machine

    models = args.models
    if args.run:
        from edgeaudio.export.cli import export_checkpoint

        models = args.out or REPO / "models" / Path(args.run).resolve().name
        export_checkpoint(args.run, models, int8=True, calibration=args.calibration,
                          qat_epochs=args.qat, max_eval_clips=args.max_eval_clips,
                          echo=lambda m: print(m, file=sys.stderr, flush=True))
    report = json.loads((models / JSON_NAME).read_text()) if (models / JSON_NAME).exists() \
        else None
    rows = our_rows(models, args.audio, args.repeats)
    if report:
        by_key = {(f["file"], b["backend"]): b for f in report["files"] for b in f["backends"]}
        for r in rows:
            b = by_key.get((r["file"], r["backend"]), {})
            r.update({k: b.get(k) for k in ("accuracy", "agreement_clips", "agreement_windows")})
    yamnet = yamnet_row(args.yamnet, args.audio, args.repeats) if args.yamnet.exists() else None

    print(f"machine: {machine()}; 1 thread; audio {args.audio.name}")
    if report:
        m = report["model"]
        print(f"student: {m['name']} {m['version']}, {m['params']:,} params, "
              f"{(m.get('macs_per_audio_second') or {}).get('network', 0) / 1e6:.1f} M MACs/s "
              f"of audio; torch float accuracy {report['torch_float'].get('accuracy')}")
    header = ("file", "backend", "KiB (graph)", "accuracy", "top-1 = torch", "model ms/window",
              "stream ms/s (model)", "stream ms/s (+front end)", "no-overlap ms/s (model)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        acc = "–" if r.get("accuracy") is None else f"{100 * r['accuracy']:.1f} %"
        agr = "–" if r.get("agreement_clips") is None else f"{100 * r['agreement_clips']:.1f} %"
        print(f"| {r['file']} | {r['backend']} | {r['bytes'] / 1024:.0f} "
              f"({r['graph_bytes'] / 1024:.0f}) | {acc} | {agr} | "
              f"{r['model_ms_per_window']:.3f} | {r['stream_model_ms_per_audio_second']:.2f} | "
              f"{r['stream_total_ms_per_audio_second']:.2f} | "
              f"{r['no_overlap_model_ms_per_audio_second']:.2f} |")
    if yamnet:
        print(f"| YAMNet yamnet_waveform.tflite | litert | {yamnet['bytes'] / 1024:.0f} | – | – "
              f"| – | – | {yamnet['ms_per_audio_second']:.2f} (front end inside) | – |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                                     "machine": machine(), "threads": 1,
                                     "audio": args.audio.name, "models": str(models),
                                     "report": report and {k: report[k] for k in (
                                         "model", "evaluation", "torch_float",
                                         "quantization") if k in report},
                                     "rows": rows, "yamnet": yamnet}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
