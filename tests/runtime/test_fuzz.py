"""Fuzz: a few hundred mutated copies of the bundled model files (truncations, byte flips,
edits inside the metadata) through every installed backend. Each must either load and score a
window, or raise the project's error (the CLI's exit 2): never a crash, a traceback or a hang.

The interpreters run in a worker process (this file run as a script) that reports each case
before and after it, so a segfault fails the test, naming the file, instead of killing pytest;
the parent restarts the worker after the case that crashed or hung. The mutations are pure
bytes (seeded), so the test runs in the tflite-runtime venv too (no onnx, no LiteRT tools)."""
from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

BUNDLED = Path(__file__).resolve().parents[2] / "edgeaudio" / "models"
FILES = {"onnx": BUNDLED / "esc50-student.int8.onnx",
         "tflite": BUNDLED / "esc50-student.int8.tflite"}
SEED = 22
N_CUTS, N_FLIPS, N_METADATA_EDITS = 30, 45, 49   # per file: ~124 mutated copies of each
# the truncation that segfaulted tflite-runtime in issue 22: the first 322,221 bytes of the
# then bundled 341,536-byte file; the same share of the bundled file now
ISSUE_CUT_SHARE = 322_221 / 341_536


def issue_cut(n: int) -> int:
    """Where issue 22's truncation falls in a file of ``n`` bytes."""
    return int(n * ISSUE_CUT_SHARE)

CASE_TIMEOUT_S = 30      # one load and one window take milliseconds; a stall is a hang
TOTAL_TIMEOUT_S = 240
TAG = "fuzz-case "
_NUMBER = re.compile(rb"-?[0-9][0-9.eE+-]*")


# --- the worker: run as ``python test_fuzz.py BACKEND LISTING START`` --------------------------

def _say(message: dict) -> None:
    # unbuffered, so a crash loses nothing; tagged, since native code may print on fd 1 too
    os.write(1, (TAG + json.dumps(message) + "\n").encode())


def worker(backend: str, listing: str, start: int) -> None:
    import numpy as np

    from edgeaudio import Model
    from edgeaudio.errors import EdgeAudioError

    paths = Path(listing).read_text().splitlines()
    for i in range(start, len(paths)):
        _say({"start": i})
        try:
            model = Model(paths[i], backend=backend)
            n = model.info.window_samples
            wave = (0.1 * np.sin(0.05 * np.arange(n))).astype(np.float32)
            scores = model.scores_for_window(wave)
            _say({"done": i, "result": "scores", "classes": int(scores.size)})
        except EdgeAudioError as exc:
            _say({"done": i, "result": "error", "message": str(exc)})
        except BaseException:  # anything else is what this test hunts
            _say({"done": i, "result": "traceback", "message": traceback.format_exc(limit=4)})


# --- the mutations -----------------------------------------------------------------------------

def metadata_span(data: bytes, fmt: str) -> tuple:
    from edgeaudio.modelfile import METADATA_KEY, read_onnx_metadata, read_tflite_metadata

    meta = (read_tflite_metadata if fmt == "tflite" else read_onnx_metadata)(data)[METADATA_KEY]
    start = data.find(meta)
    assert start > 0 and data.count(meta) == 1
    return start, start + len(meta)


def mutations(data: bytes, fmt: str, rng) -> list:
    """(name, bytes) for every mutated copy of one file."""
    n = len(data)
    out = []
    cuts = set(rng.integers(16, n, N_CUTS - 4).tolist()) | {17, n // 2, n - 1, issue_cut(n)}
    out += [(f"cut-{c}", data[:c]) for c in sorted(cuts) if c < n]
    regions = [(0, n), (0, 4096), (n - 16384, n)]  # anywhere; the root tables; the tail
    for i in range(N_FLIPS):
        lo, hi = regions[i % 3]
        b = bytearray(data)
        for pos in rng.integers(lo, hi, 1 + i % 3):
            b[pos] ^= int(rng.integers(1, 256))
        out.append((f"flip-{i}", bytes(b)))
    m0, m1 = metadata_span(data, fmt)
    meta = data[m0:m1]
    b64 = meta.find(b'"data_b64"')
    b64_end = meta.find(b'"', meta.find(b'"', b64 + 11) + 1) if b64 >= 0 else -1
    # positions of the document's structure: digits, quotes, brackets outside the matrix data
    structure = [i for i, c in enumerate(meta) if chr(c) in '0123456789".[]{}:,-'
                 and not b64 <= i <= b64_end]
    numbers = [m for m in _NUMBER.finditer(meta) if not b64 <= m.start() <= b64_end]
    for i in range(N_METADATA_EDITS):
        doc = bytearray(meta)
        pos = int(rng.choice(structure))
        number = numbers[int(rng.integers(0, len(numbers)))]
        kind = i % 7
        if kind == 0:    # a digit becomes another: still JSON, another value (n_frames 799...)
            at = number.start() + int(rng.integers(0, len(number.group())))
            if chr(doc[at]).isdigit():
                doc[at] = ord(str(int(rng.integers(0, 10))))
        elif kind == 1:  # a number becomes a string of the same length (or a bare letter)
            k = len(number.group())
            doc[number.start():number.end()] = (b'"' + b"x" * (k - 2) + b'"') if k > 1 else b"x"
        elif kind == 2:  # a digit, quote or bracket becomes another character
            doc[pos] = ord(rng.choice(list('x-.e9 "{[}]')))
        elif kind == 3:  # any byte, matrix data included
            doc[int(rng.integers(0, len(doc)))] ^= int(rng.integers(1, 256))
        elif kind == 4:  # deep nesting in place of a stretch of the document
            k = min(int(rng.integers(50, 5000)), len(doc) - pos)
            doc[pos:pos + k] = b"[" * k
        elif kind == 5:  # invalid UTF-8
            doc[pos] = 0xFF
        else:            # a long run of digits: a huge number where one was
            k = min(int(rng.integers(5, 400)), len(doc) - number.start())
            doc[number.start():number.start() + k] = b"9" * k
        out.append((f"meta-{i}-{kind}", data[:m0] + bytes(doc) + data[m1:]))
    return out


# --- the parent: cases through one worker, restarted after a crash or a hang -------------------

def run_cases(backend: str, paths: list, listing: Path, log: Path) -> dict:
    listing.write_text("\n".join(map(str, paths)))
    outcomes, start = {}, 0
    deadline = time.monotonic() + TOTAL_TIMEOUT_S
    while start < len(paths) and time.monotonic() < deadline:
        with open(log, "ab") as err:
            proc = subprocess.Popen([sys.executable, __file__, backend, str(listing), str(start)],
                                    stdout=subprocess.PIPE, stderr=err, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: ([lines.put(x) for x in proc.stdout], lines.put(None)),
                         daemon=True).start()
        first, current, start = start, None, len(paths)
        while True:
            try:
                line = lines.get(timeout=CASE_TIMEOUT_S)
            except queue.Empty:
                proc.kill()
                proc.wait()
                current = first if current is None else current
                outcomes[current] = {"result": "hang"}
                start = current + 1
                break
            if line is None:
                proc.wait()
                if current is not None or proc.returncode:
                    current = first if current is None else current
                    outcomes[current] = {"result": f"crash (exit status {proc.returncode})"}
                    start = current + 1
                break
            if not line.startswith(TAG):
                continue
            message = json.loads(line[len(TAG):])
            if "start" in message:
                current = message["start"]
            else:
                outcomes[message.pop("done")] = message
                current = None
    return outcomes


def test_fuzzed_model_files_never_crash(tmp_path_factory):
    import numpy as np
    import pytest

    from edgeaudio.backends import BACKENDS_FOR_FORMAT, backend_available

    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(SEED)
    failures, counts, t0 = [], {}, time.monotonic()
    ran = []
    for fmt, source in FILES.items():
        cases = mutations(source.read_bytes(), fmt, rng)
        paths = []
        for name, blob in cases:
            path = root / f"{name}.{fmt}"
            path.write_bytes(blob)
            paths.append(path)
        for backend in BACKENDS_FOR_FORMAT[fmt]:
            if not backend_available(backend):
                continue
            ran.append(backend)
            outcomes = run_cases(backend, paths, root / f"{backend}.txt", root / f"{backend}.log")
            for i, path in enumerate(paths):
                outcome = outcomes.get(i, {"result": "not run (time budget spent)"})
                counts[outcome["result"]] = counts.get(outcome["result"], 0) + 1
                if outcome["result"] not in ("scores", "error"):
                    failures.append(f"{backend} {path.name}: {outcome['result']} "
                                    f"{outcome.get('message', '')}")
                elif outcome["result"] == "error" and "\n" in outcome["message"]:
                    failures.append(f"{backend} {path.name}: multi-line error")
    if not ran:
        pytest.skip("no backend installed")
    assert not failures, "\n".join(failures[:20])
    # the mutations reached both ends: files the runtime refused and files that still ran
    assert counts.get("error", 0) > 0 and counts.get("scores", 0) > 0, counts
    assert time.monotonic() - t0 < TOTAL_TIMEOUT_S


def test_truncated_tflite_through_the_cli_exit_2(tmp_path):
    """A file cut where issue 22's cut segfaulted tflite-runtime (ISSUE_CUT_SHARE)."""
    import pytest

    from edgeaudio.backends import BACKENDS_FOR_FORMAT, backend_available

    cut = tmp_path / "cut.tflite"
    data = FILES["tflite"].read_bytes()
    cut.write_bytes(data[:issue_cut(len(data))])
    backends = [b for b in BACKENDS_FOR_FORMAT["tflite"] if backend_available(b)]
    if not backends:
        pytest.skip("no TFLite backend installed")
    for backend in backends:
        r = subprocess.run([sys.executable, "-m", "edgeaudio", "info", "--backend", backend,
                            str(cut)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (backend, r.stderr)
        assert r.stderr.startswith("error: ") and "truncated or corrupt" in r.stderr


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
