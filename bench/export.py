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

With ``--mn04`` the AudioSet teacher EfficientAT mn04 is exported exactly as a student is
(``write_model_files``: BatchNorm folded, float and int8 ONNX / TFLite, calibrated on 100
ESC-50 windows) into ``runs/bench/export/mn04`` and measured by the same code. Its files take
the runtime's numpy log-mel (32 kHz, n_fft 1024, window 800, hop 320, EfficientAT's 128 Kaldi
mel bands, log(x + 1e-5)); its ``(x + 4.5) / 5`` scaling is the first op of the graph. Left out:
its pre-emphasis filter (one multiply-add per sample; the runtime's front end has none), so
its scores differ slightly from the PyTorch teacher's; the bench prints both top-3 on a dog clip.

Also per file: MACs per window counted from the TFLite graph (conv, depthwise conv and fully
connected ops; the same count for every file, YAMNet included), and the peak resident memory
(max RSS) of a whole ``edgeaudio classify`` process on the audio file.
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

from edgeaudio import Model  # noqa: E402
from edgeaudio.audio import load_audio  # noqa: E402
from edgeaudio.backends import BACKENDS_FOR_FORMAT, native_stderr_silenced, \
    backend_available  # noqa: E402
from edgeaudio.files import atomic_write_json, shared_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = shared_dir()


STUDENT_FILES = ("model.onnx", "model.int8.onnx", "model.tflite", "model.int8.tflite")


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


def tflite_macs(path: Path, input_length: int | None = None) -> int:
    """Multiply-accumulates of one invocation, from the graph's conv / depthwise / FC ops
    (``input_length``: resize a 1-D waveform input first, as YAMNet's)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # No delegate, and one invocation on zeros: dynamic shapes (YAMNet's patch count) are
    # only resolved when the graph runs, and delegated ops keep their static shapes.
    with native_stderr_silenced():
        interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=
                                  OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        detail = interpreter.get_input_details()[0]
        if input_length:
            interpreter.resize_tensor_input(detail["index"], [input_length])
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
    shapes = {t["index"]: t["shape"] for t in interpreter.get_tensor_details()}
    macs = 0
    for op in interpreter._get_ops_details():
        name, inputs, outputs = op["op_name"], op["inputs"], op["outputs"]
        out = int(np.prod(shapes[outputs[0]]))
        if name == "CONV_2D":          # weights [out_ch, kh, kw, in_ch]
            macs += out * int(np.prod(shapes[inputs[1]][1:]))
        elif name == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, ch]
            macs += out * int(np.prod(shapes[inputs[1]][1:3]))
        elif name == "FULLY_CONNECTED":    # weights [out, in]
            macs += out * int(shapes[inputs[1]][-1])
    return macs


def peak_rss_mib(argv: list) -> float:
    """Max resident memory of a child process running ``argv``, in MiB."""
    import subprocess

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed: {proc.stderr.read().decode()}")
    return usage.ru_maxrss / 1024.0


def yamnet_peak_rss_mib(path: Path, audio: Path) -> float:
    script = ("import sys, numpy as np; from ai_edge_litert.interpreter import Interpreter; "
              "from edgeaudio.audio import load_audio; "
              "w = load_audio(sys.argv[2], 16000).astype(np.float32); "
              "i = Interpreter(model_path=sys.argv[1], num_threads=1); "
              "i.resize_tensor_input(i.get_input_details()[0]['index'], [len(w)]); "
              "i.allocate_tensors(); i.set_tensor(i.get_input_details()[0]['index'], w); "
              "i.invoke()")
    return peak_rss_mib([sys.executable, "-c", script, str(path), str(audio)])


def export_mn04(out: Path, n_calibration: int = 100) -> Path:
    """EfficientAT mn04 as the four model files (see the module docstring); reused if there."""
    if all((out / name).exists() for name in STUDENT_FILES):
        return out
    import torch
    from torch import nn

    from edgeaudio.export.clips import Clip, calibration_windows
    from edgeaudio.export.model_files import write_model_files
    from edgeaudio.frontend import FrontendSpec, encode_matrix
    from edgeaudio.modelfile import ModelInfo
    from edgeaudio.train.teachers import efficientat as eat

    teacher = eat.EfficientATTeacher()

    class MN04OnLogMel(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):  # [B, frames, 128] log-mel -> [B, 527] logits
            return self.net(((x + 4.5) / 5.0).transpose(1, 2).unsqueeze(1))[0]

    banks = eat.kaldi_mel_banks(eat.N_MELS, eat.N_FFT, eat.MODEL_SAMPLE_RATE, eat.FMIN, eat.FMAX)
    spec = FrontendSpec(sample_rate=eat.MODEL_SAMPLE_RATE, n_fft=eat.N_FFT,
                        win_length=eat.WIN_LENGTH, hop_length=eat.HOP_LENGTH,
                        filterbank={"kind": "matrix", **encode_matrix(banks)}, log_offset=1e-5)
    info = ModelInfo(labels=teacher.class_names, frontend=spec, n_frames=398,  # 4 s, as ours
                     name="efficientat-mn04-as", version="mAP432",
                     output_activation="sigmoid", clip_pooling="mean",
                     provenance={"source": "EfficientAT mn04_as_mAP_432.pt (shared weights)",
                                 "note": "bench/export.py --mn04: speed comparison only"})
    clips = [Clip(path) for path in sorted((SHARED / "data" / "esc50" / "audio").glob("*"))[::20]]
    calibration = calibration_windows(clips, info, n=n_calibration)
    network = MN04OnLogMel(teacher.model).eval()
    with torch.no_grad():
        write_model_files(network, info, out, int8=True, calibration=calibration)
    return out


def mn04_sanity(models: Path, audio: Path) -> dict:
    """Top-3 AudioSet classes of the PyTorch teacher and of each exported mn04 file."""
    from edgeaudio.train.teachers.efficientat import EfficientATTeacher

    teacher = EfficientATTeacher()
    wave = load_audio(audio, 16000)
    top = {"pytorch": [teacher.class_names[i] for i in np.argsort(-teacher.logits(wave))[:3]]}
    for name in STUDENT_FILES:
        result = Model(models / name, threads=1).classify(audio)
        top[name] = [label for label, _ in result.top(3)]
    return top


def speed_ratios(rows: list, mn04: dict | None, yamnet: dict | None) -> list:
    """Per student int8 file: peer time / student time per second of audio (front end
    included), against YAMNet and against the mn04 file of the same format on the same backend."""
    peers = {(r["file"], r["backend"]): r for r in (mn04 or {}).get("rows", [])}
    out = []
    for r in rows:
        if ".int8." not in r["file"]:
            continue
        ours = r["no_overlap_total_ms_per_audio_second"]
        ratio = {"file": r["file"], "backend": r["backend"]}
        if yamnet:
            ratio["yamnet_x"] = yamnet["ms_per_audio_second"] / ours
            ratio["yamnet_bytes_x"] = yamnet["bytes"] / r["bytes"]
        peer = peers.get((r["file"], r["backend"]))
        if peer:
            ratio["mn04_x"] = peer["no_overlap_total_ms_per_audio_second"] / ours
            ratio["mn04_bytes_x"] = peer["bytes"] / r["bytes"]
        out.append(ratio)
    return out


def our_rows(models: Path, audio: Path, repeats: int) -> list:
    from edgeaudio.export.report import graph_bytes, timed_ms

    rows = []
    for name in STUDENT_FILES:
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
            tflite_twin = path.with_suffix(".tflite")
            macs = tflite_macs(tflite_twin) if tflite_twin.exists() else None
            rss = peak_rss_mib([str(Path(sys.executable).parent / "edgeaudio"), "classify",
                                "--model", str(path), "--backend", backend, str(audio)])
            rows.append({"file": name, "backend": backend, "bytes": path.stat().st_size,
                         "macs_per_window": macs,
                         "macs_per_audio_second": macs and macs / win,
                         "classify_peak_rss_mib": rss,
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
    ap.add_argument("--mn04", action="store_true",
                    help="also export and measure EfficientAT mn04 the same way")
    ap.add_argument("--mn04-dir", type=Path, default=REPO / "runs" / "bench" / "export" / "mn04")
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
    yamnet = None
    if args.yamnet.exists():
        yamnet = yamnet_row(args.yamnet, args.audio, args.repeats)
        yamnet["macs_per_audio_second"] = tflite_macs(args.yamnet, 160000) / 10.0
        yamnet["classify_peak_rss_mib"] = yamnet_peak_rss_mib(args.yamnet, args.audio)
    mn04 = None
    if args.mn04:
        mn04_dir = export_mn04(args.mn04_dir)
        mn04 = {"files": str(mn04_dir), "rows": our_rows(mn04_dir, args.audio, args.repeats),
                "top3_on_audio": mn04_sanity(mn04_dir, args.audio)}

    print(f"machine: {machine()}; 1 thread; audio {args.audio.name}")
    if report:
        m = report["model"]
        print(f"student: {m['name']} {m['version']}, {m['params']:,} params, "
              f"{(m.get('macs_per_audio_second') or {}).get('network', 0) / 1e6:.1f} M MACs/s "
              f"of audio; torch float accuracy {report['torch_float'].get('accuracy')}")
    header = ("model", "file", "backend", "KiB (graph)", "accuracy", "top-1 = torch",
              "M MACs/s audio", "model ms/window", "stream ms/s (+front end)",
              "no-overlap ms/s (model)", "no-overlap ms/s (+front end)", "classify peak MiB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))

    def line(who, r):
        acc = "–" if r.get("accuracy") is None else f"{100 * r['accuracy']:.1f} %"
        agr = "–" if r.get("agreement_clips") is None else f"{100 * r['agreement_clips']:.1f} %"
        macs = "–" if not r.get("macs_per_audio_second") else \
            f"{r['macs_per_audio_second'] / 1e6:.1f}"
        print(f"| {who} | {r['file']} | {r['backend']} | {r['bytes'] / 1024:.0f} "
              f"({r['graph_bytes'] / 1024:.0f}) | {acc} | {agr} | {macs} | "
              f"{r['model_ms_per_window']:.3f} | {r['stream_total_ms_per_audio_second']:.2f} | "
              f"{r['no_overlap_model_ms_per_audio_second']:.3f} | "
              f"{r['no_overlap_total_ms_per_audio_second']:.3f} | "
              f"{r['classify_peak_rss_mib']:.0f} |")

    for r in rows:
        line("student", r)
    for r in (mn04 or {}).get("rows", []):
        line("mn04", r)
    if yamnet:
        print(f"| YAMNet | {Path(yamnet['file']).name} | litert | {yamnet['bytes'] / 1024:.0f} "
              f"| – | – | {yamnet['macs_per_audio_second'] / 1e6:.1f} | – | – | – | "
              f"{yamnet['ms_per_audio_second']:.3f} (front end inside) | "
              f"{yamnet['classify_peak_rss_mib']:.0f} |")
    ratios = speed_ratios(rows, mn04, yamnet)
    if ratios:
        print("\nhow many times less compute per second of audio than the student "
              "(no overlap, front end included; same runtime, 1 thread):")
        for r in ratios:
            print(f"  {r['file']} ({r['backend']}): " + ", ".join(
                f"{k} {v:.1f}x" for k, v in r.items() if k.endswith("_x")))
        if mn04:
            print("mn04 top-3 on the audio:", mn04["top3_on_audio"])
    atomic_write_json(args.json, {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                                  "machine": machine(), "threads": 1,
                                  "audio": args.audio.name, "models": str(models),
                                  "report": report and {k: report[k] for k in (
                                      "model", "evaluation", "torch_float",
                                      "quantization") if k in report},
                                  "rows": rows, "yamnet": yamnet, "mn04": mn04,
                                  "ratios": ratios})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
