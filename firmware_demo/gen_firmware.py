"""Turn an edgeaudio ``.tflite`` into the sources a microcontroller build needs.

    python -m firmware_demo.gen_firmware models/model.int8.tflite --out firmware_demo/build/gen

writes three files into ``--out``:

- ``ea_model_data.c`` / ``ea_model_data.h``: the model graph as a 16-byte-aligned ``const``
  byte array (TFLM reads it in place from flash), its length, the labels, the model window
  (``EA_N_FRAMES``), how the model's input is fed (``EA_INPUT_INT8`` with scale and zero point,
  or float), the TFLM ops the graph uses (``EA_ADD_MODEL_OPS(resolver)``) and, when the
  ``tflite-micro`` package is installed, the smallest tensor arena TFLM allocates it in on
  this host (``EA_ARENA_MIN_BYTES``);
- ``ea_frontend_config.h``: the front end's constants and tables (``gen_frontend_header``),
  from the spec inside the model file, with the input quantization above.

Everything comes from the model file itself (its ``edgeaudio`` metadata and its input tensor),
so the firmware and the Python runtime cannot disagree about the features.

The array is the graph only (``firmware_model_bytes``): the ``edgeaudio`` metadata buffer (the
labels and front end, already turned into C above; for a harmonic student it holds the stored
filterbank matrix) is dropped, and so are the strings TFLM never reads (tensor names, signature
definitions, the model description; ``--keep-names`` keeps them). Per-channel zero points that
are all 0 (every int8 weight and int32 bias tensor: weights are quantized symmetrically) shrink
to one value, a space saving TFLM's allocator supports (``micro_allocator.cc``: "zero point
arrays for weights can be reduced to a single value"); they are int64 in the flatbuffer, about a
fifth of a student's graph (``--keep-zero-points`` keeps them; full TFLite / LiteRT refuses the
shrunk form, so the array is for TFLM only). None of this changes a single output: TFLM runs the
array bit for bit as the original file.

Needs the installed runtime (``edgeaudio``, whose torch-free ``edgeaudio.export.tflm`` strips
the graph and searches the arena) and ``ai-edge-litert``; no torch.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeaudio.export.tflm import (smallest_arena, strip_metadata, tflite_io_details,
                                   tflm_available)
from edgeaudio.files import atomic_write_text
from edgeaudio.modelfile import info_from_tflite, read_model_bytes

from .gen_frontend_header import write_frontend_header

BYTES_PER_LINE = 16


def firmware_model_bytes(tflite_bytes: bytes, keep_names: bool = False,
                         keep_zero_points: bool = False) -> bytes:
    """The flatbuffer a board needs (``edgeaudio.export.tflm.strip_metadata``): without the
    ``edgeaudio`` metadata entry and its buffer; unless ``keep_names`` without tensor names,
    signature definitions and the description; unless ``keep_zero_points`` with all-zero
    per-channel zero points shrunk to one value (for TFLM only: LiteRT refuses that form)."""
    return strip_metadata(tflite_bytes, names=not keep_names, zero_points=not keep_zero_points)


def model_ops(model_bytes: bytes) -> list:
    """Builtin op names the graph uses (``CONV_2D``, ...), in first-use order."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    names = []
    for graph in model.subgraphs:
        for op in graph.operators:
            name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
            if name not in names:
                names.append(name)
    return names


# TFLM's MicroMutableOpResolver method for a builtin op: Add + the CamelCase name ("2D" parts
# stay upper case), except these
_RESOLVER_EXCEPTIONS = {"BATCH_MATMUL": "BatchMatMul", "PADV2": "PadV2",
                        "UNIDIRECTIONAL_SEQUENCE_LSTM": "UnidirectionalSequenceLSTM"}


def resolver_method(op_name: str) -> str:
    """``CONV_2D`` -> ``AddConv2D``, ``REDUCE_MAX`` -> ``AddReduceMax``."""
    return "Add" + _RESOLVER_EXCEPTIONS.get(op_name, "".join(
        part if part[:1].isdigit() else part[:1] + part[1:].lower()
        for part in op_name.split("_")))


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def model_sources(model_bytes: bytes, info, input_dtype: str, ops=(),
                  arena_bytes: int | None = None) -> tuple[str, str]:
    """(header text, source text) for the model array, labels, input description, the ops to
    register and the smallest arena."""
    labels = ", ".join(_c_string(label) for label in info.labels)
    adds = " ".join(f"(resolver).{resolver_method(op)}();" for op in ops)
    op_lines = (f"/* TFLM ops the graph uses: {', '.join(ops)} */\n"
                f"#define EA_N_MODEL_OPS {len(ops)}\n"
                f"#define EA_ADD_MODEL_OPS(resolver) do {{ {adds} }} while (0)\n")
    arena_lines = ("" if arena_bytes is None else
                   "/* smallest tensor arena TFLM allocated this graph in, on the host that "
                   "generated\n   this file (64-bit; a 32-bit board needs a little less) */\n"
                   f"#define EA_ARENA_MIN_BYTES {int(arena_bytes)}\n")
    # the scale and zero point themselves live in ea_frontend_config.h (EA_INPUT_SCALE, ...)
    input_lines = ("#define EA_INPUT_INT8 1  /* int8 features: ea_frontend_quantize_input */"
                   if input_dtype == "int8" else
                   "#define EA_INPUT_INT8 0  /* the model takes float32 features */")
    header = f"""/* Generated by firmware_demo/gen_firmware.py from {info.name} {info.version}. Do not edit. */
#ifndef EA_MODEL_DATA_H
#define EA_MODEL_DATA_H

#define EA_MODEL_NAME {_c_string(info.name)}
#define EA_N_LABELS {len(info.labels)}
#define EA_N_FRAMES {info.n_frames}          /* model window: frames per inference */
#define EA_HOP_SECONDS {info.hop_seconds!r}f  /* inference hop when streaming */
{input_lines}
{op_lines}{arena_lines}
extern const unsigned char ea_model_data[];
extern const unsigned int ea_model_data_len;
extern const char *const ea_labels[EA_N_LABELS];

#endif
"""
    rows = []
    for i in range(0, len(model_bytes), BYTES_PER_LINE):
        rows.append("  " + ", ".join(f"0x{b:02x}" for b in model_bytes[i:i + BYTES_PER_LINE]) + ",")
    source = f"""/* Generated by firmware_demo/gen_firmware.py from {info.name} {info.version}. Do not edit. */
#include "ea_model_data.h"

/* The model graph (edgeaudio metadata and names stripped); TFLM reads the flatbuffer in
   place: 16-byte alignment keeps its tensors aligned. */
#if defined(__GNUC__)
#define EA_ALIGNED __attribute__((aligned(16)))
#else
#define EA_ALIGNED
#endif

const unsigned char ea_model_data[] EA_ALIGNED = {{
{chr(10).join(rows)}
}};
const unsigned int ea_model_data_len = {len(model_bytes)}u;
const char *const ea_labels[EA_N_LABELS] = {{{labels}}};
"""
    return header, source


def generate(model_path, out_dir, keep_names: bool = False, arena: bool | None = None,
             keep_zero_points: bool = False) -> dict:
    """Write the three generated files; returns what was written, the flash bytes of the graph
    and the input description. ``arena``: search the smallest TFLM arena (default: when the
    ``tflite-micro`` package is installed)."""
    path, data, fmt = read_model_bytes(model_path)
    if fmt != "tflite":
        raise SystemExit(f"error: {path}: firmware needs a .tflite model (got {fmt})")
    info = info_from_tflite(path, data)  # labels and front end: from the metadata, before
    graph = firmware_model_bytes(data, keep_names=keep_names,  # it is stripped
                                 keep_zero_points=keep_zero_points)
    inp = tflite_io_details(data)[0]  # LiteRT reads the file
    input_dtype, scale, zero_point = inp["dtype"], inp["scale"], inp["zero_point"]
    ops = model_ops(graph)
    if arena is None:
        arena = tflm_available()
    arena_bytes = smallest_arena(graph) if arena else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header, source = model_sources(graph, info, input_dtype, ops, arena_bytes)
    atomic_write_text(out / "ea_model_data.h", header)
    atomic_write_text(out / "ea_model_data.c", source)
    int8 = input_dtype == "int8"
    write_frontend_header(info.frontend, out / "ea_frontend_config.h",
                          input_scale=scale if int8 else None,
                          input_zero_point=zero_point if int8 else None)
    return {"model": str(path), "file_bytes": len(data), "model_bytes": len(graph),
            "input_dtype": input_dtype, "input_scale": scale, "input_zero_point": zero_point,
            "n_frames": info.n_frames, "n_bins": info.frontend.n_bins,
            "labels": len(info.labels), "ops": ops, "arena_bytes": arena_bytes,
            "files": [str(out / n) for n in ("ea_model_data.h", "ea_model_data.c",
                                             "ea_frontend_config.h")]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="an edgeaudio .tflite model (int8 for a microcontroller)")
    ap.add_argument("--out", required=True, help="folder for the generated sources")
    ap.add_argument("--keep-names", action="store_true",
                    help="keep tensor names and signatures in the array (debugging)")
    ap.add_argument("--keep-zero-points", action="store_true",
                    help="keep per-channel zero-point vectors whole (a graph LiteRT also loads)")
    ap.add_argument("--no-arena", dest="arena", action="store_false", default=None,
                    help="skip the TFLM arena search (EA_ARENA_MIN_BYTES)")
    args = ap.parse_args(argv)
    result = generate(args.model, args.out, keep_names=args.keep_names, arena=args.arena,
                      keep_zero_points=args.keep_zero_points)
    arena = ("" if result["arena_bytes"] is None
             else f", smallest TFLM arena {result['arena_bytes']} bytes")
    print(f"{result['model']}: {result['model_bytes']} bytes in flash (file "
          f"{result['file_bytes']}), input {result['input_dtype']}, {result['labels']} labels"
          f"{arena} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
