"""Write ``ea_frontend_config.h``: the constants and tables the C99 front end is built from.

The numbers come from ``edgeaudio.frontend`` (the single definition of the features), so the C
front end never re-derives the mel scale or the window: it reads the very float32 values the
numpy front end uses.

    python -m firmware_demo.gen_frontend_header --out build/ea_frontend_config.h \
        [--spec spec.json] [--input-scale 0.0784 --input-zero-point 51]

From Python: ``write_frontend_header(spec, path, input_scale=None, input_zero_point=None)``.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from edgeaudio.errors import EdgeAudioError
from edgeaudio.files import atomic_write_text
from edgeaudio.frontend import FrontendSpec, hann_window

HEADER_NAME = "ea_frontend_config.h"


def load_spec(spec) -> FrontendSpec:
    """A FrontendSpec from a FrontendSpec, a dict, or a JSON file (a spec, or an object holding
    one under ``"frontend"``, as model metadata does). Missing keys take the defaults."""
    if isinstance(spec, FrontendSpec):
        return spec
    if spec is None:
        return FrontendSpec()
    if isinstance(spec, (str, Path)):
        with open(spec, encoding="utf-8") as f:
            spec = json.load(f)
    if not isinstance(spec, dict):
        raise TypeError(f"front end spec must be a FrontendSpec, dict or JSON path, "
                        f"got {type(spec).__name__}")
    if "frontend" in spec and isinstance(spec["frontend"], dict):
        spec = spec["frontend"]
    merged = FrontendSpec().to_dict()
    merged.update(spec)
    return FrontendSpec.from_dict(merged)


def sparse_filterbank(fb: np.ndarray):
    """Each row as (start, length) of its non-zero span plus the span's weights, concatenated.

    Mel triangles touch a handful of FFT bins each, so this keeps a few per cent of the dense matrix (498 of 16448 weights by default).
    """
    starts, lengths, offsets, weights = [], [], [], []
    for row in np.asarray(fb, dtype=np.float32):
        nz = np.flatnonzero(row)
        start = int(nz[0]) if nz.size else 0
        length = int(nz[-1] - nz[0] + 1) if nz.size else 0
        starts.append(start)
        lengths.append(length)
        offsets.append(sum(len(w) for w in weights))
        weights.append(row[start:start + length])
    flat = np.concatenate(weights) if weights else np.zeros(0, np.float32)
    return starts, lengths, offsets, flat.astype(np.float32)


def _c_float(value) -> str:
    """Shortest literal that reads back as the same float32."""
    v = np.float32(value)
    if not np.isfinite(v):
        raise ValueError(f"cannot write non-finite value {value!r} into the header")
    text = str(v)
    if not any(c in text for c in ".e"):
        text += ".0"
    return text + "f"


def _c_fft_real(value) -> str:
    """Shortest float64 literal, cast to the FFT's type (the explicit cast keeps -Wconversion
    quiet in float builds; the rounding is the same as numpy's astype(float32))."""
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"cannot write non-finite value {value!r} into the header")
    return f"EA_TW({v!r})"


def _c_array(ctype: str, name: str, size: str, values, per_line: int, fmt) -> str:
    items = [fmt(v) for v in values]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(lines) if lines else "0"
    return f"static const {ctype} {name}[{size}] = {{\n    {body}\n}};\n"


def _index_type(max_value: int) -> str:
    return "uint16_t" if max_value <= 0xFFFF else "uint32_t"


def frontend_header_text(spec, input_scale=None, input_zero_point=None) -> str:
    spec = load_spec(spec)
    n_fft = spec.n_fft
    if n_fft < 4 or n_fft & (n_fft - 1):
        raise ValueError(f"the C front end's FFT is radix-2: n_fft must be a power of two >= 4, "
                         f"got {n_fft}")
    if (input_scale is None) != (input_zero_point is None):
        raise ValueError("give both input_scale and input_zero_point, or neither")
    if input_scale is not None:
        if not (math.isfinite(float(input_scale)) and float(input_scale) > 0):
            raise ValueError(f"input_scale must be a positive number, got {input_scale!r}")
        if not -128 <= int(input_zero_point) <= 127:
            raise ValueError(f"input_zero_point must fit int8, got {input_zero_point!r}")

    n_freqs = n_fft // 2 + 1
    fb = spec.filterbank_matrix()
    starts, lengths, offsets, weights = sparse_filterbank(fb)
    window = hann_window(spec.win_length)
    k = np.arange(n_fft // 2, dtype=np.float64)
    # W_N^k = cos - i*sin, written in full double precision: the compiler rounds them to the
    # FFT's type (float, or double under EA_FFT_DOUBLE).
    tw_cos = np.cos(2.0 * np.pi * k / n_fft)
    tw_sin = np.sin(2.0 * np.pi * k / n_fft)
    idx_t = _index_type(n_freqs)
    off_t = _index_type(max(len(weights), 1))
    summary = spec.to_dict()
    if summary["filterbank"].get("kind") == "matrix":  # the matrix itself is in the tables
        summary["filterbank"] = {"kind": "matrix", "shape": list(fb.shape)}
    spec_json = json.dumps(summary, sort_keys=True).replace("*/", "* /")

    out = [
        "/* Generated by firmware_demo/gen_frontend_header.py from edgeaudio.frontend. Do not edit.",
        f" * spec: {spec_json}",
        " * Tables are defined only where EA_FRONTEND_DEFINE_TABLES is set (ea_frontend.c). */",
        "#ifndef EA_FRONTEND_CONFIG_H",
        "#define EA_FRONTEND_CONFIG_H",
        "",
        "#include <stdint.h>",
        "",
        f"#define EA_SAMPLE_RATE {spec.sample_rate}",
        f"#define EA_N_FFT {n_fft}",
        f"#define EA_LOG2_N_FFT {n_fft.bit_length() - 1}",
        f"#define EA_N_FREQS {n_freqs}",
        f"#define EA_WIN_LENGTH {spec.win_length}",
        f"#define EA_HOP_LENGTH {spec.hop_length}",
        f"#define EA_N_BINS {fb.shape[0]}",
        f"#define EA_LOG_OFFSET {_c_float(spec.log_offset)}",
        f"#define EA_FB_N_WEIGHTS {max(len(weights), 1)}",
    ]
    if input_scale is not None:
        out += [
            "",
            "/* The model's int8 input quantization: q = clamp(round(x / scale) + zero_point). */",
            "#define EA_HAS_INPUT_QUANT 1",
            f"#define EA_INPUT_SCALE {_c_float(input_scale)}",
            f"#define EA_INPUT_ZERO_POINT {int(input_zero_point)}",
        ]
    out += [
        "",
        "/* The FFT's arithmetic. float suits FPUs without double (Cortex-M4F/M33), but a float",
        " * radix-2 FFT leaks ~1e-7 of the mirror bin (k <-> N/2 - k) into each bin, which moves",
        " * near-silent log features of loud frames by up to 3e-3 (ESC-50). Build with",
        " * -DEA_FFT_DOUBLE to match the float64 numpy front end to 1e-6 where double is cheap",
        " * (host, Cortex-M7 with a double FPU). */",
        "#ifdef EA_FFT_DOUBLE",
        "typedef double ea_fft_real_t;",
        "#else",
        "typedef float ea_fft_real_t;",
        "#endif",
        "",
        f"typedef {idx_t} ea_fb_index_t;",
        f"typedef {off_t} ea_fb_offset_t;",
        "",
        "#ifdef EA_FRONTEND_DEFINE_TABLES",
        "/* Periodic Hann window, the float32 values of edgeaudio.frontend.hann_window. */",
        _c_array("float", "ea_window", "EA_WIN_LENGTH", window, 6, _c_float),
        "/* Twiddles W_N^k = cos(2*pi*k/N) - i*sin(2*pi*k/N), k < N/2. */",
        "#define EA_TW(x) ((ea_fft_real_t)(x))",
        _c_array("ea_fft_real_t", "ea_twiddle_cos", "EA_N_FFT / 2", tw_cos, 3, _c_fft_real),
        _c_array("ea_fft_real_t", "ea_twiddle_sin", "EA_N_FFT / 2", tw_sin, 3, _c_fft_real),
        "#undef EA_TW",
        "/* Sparse filterbank: bin b weights FFT bins [start, start + length) with",
        " * ea_fb_weights[offset .. offset + length). */",
        _c_array("ea_fb_index_t", "ea_fb_start", "EA_N_BINS", starts, 16, str),
        _c_array("ea_fb_index_t", "ea_fb_length", "EA_N_BINS", lengths, 16, str),
        _c_array("ea_fb_offset_t", "ea_fb_offset", "EA_N_BINS", offsets, 16, str),
        _c_array("float", "ea_fb_weights", "EA_FB_N_WEIGHTS",
                 weights if len(weights) else [0.0], 6, _c_float),
        "#endif /* EA_FRONTEND_DEFINE_TABLES */",
        "",
        "#endif /* EA_FRONTEND_CONFIG_H */",
        "",
    ]
    return "\n".join(out)


def write_frontend_header(spec, path, input_scale=None, input_zero_point=None) -> Path:
    """Write the header for ``spec`` (FrontendSpec, dict or JSON path) to ``path``.

    ``path`` may be a directory, in which case the file is ``ea_frontend_config.h`` inside it.
    With ``input_scale``/``input_zero_point`` (the model's int8 input quantization) the header
    also defines EA_HAS_INPUT_QUANT, EA_INPUT_SCALE and EA_INPUT_ZERO_POINT.
    """
    is_dir = Path(path).is_dir() or str(path).endswith(("/", "\\"))
    path = Path(path) / HEADER_NAME if is_dir else Path(path)
    text = frontend_header_text(spec, input_scale, input_zero_point)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path  # unchanged: keep the mtime so make does not rebuild
    return atomic_write_text(path, text)  # a build never sees half a header


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help=f"header path or directory (file {HEADER_NAME})")
    p.add_argument("--spec", help="JSON front end spec (default: edgeaudio's default spec)")
    p.add_argument("--input-scale", type=float, help="model int8 input scale")
    p.add_argument("--input-zero-point", type=int, help="model int8 input zero point")
    args = p.parse_args(argv)
    try:
        path = write_frontend_header(args.spec, args.out, args.input_scale, args.input_zero_point)
    except (ValueError, TypeError, OSError, EdgeAudioError) as exc:
        p.error(str(exc))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
