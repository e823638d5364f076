#!/usr/bin/env python3
"""The two halves of the arm64 check (scripts/arm64_check.sh runs both): ``collect`` runs the
runtime's commands and its Python API on one machine and saves what they give; ``compare`` sets
the arm64 collection beside the x86-64 one and writes bench/results/arm64_check.json and .md.

    python bench/arm64_check.py collect OUTDIR --edgeaudio PATH/TO/edgeaudio
    python bench/arm64_check.py compare OUT [--out bench/results/arm64_check]

``collect`` imports only the runtime (it runs in an arm64 root where nothing else is installed)
and, run from outside a checkout's sys.path, the installed package. No timings are recorded:
under emulation they mean nothing.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from importlib import metadata
from pathlib import Path

import numpy as np

EXAMPLES = ["examples/crying_baby.flac", "examples/dog.flac", "examples/rooster.flac",
            "examples/scene.flac"]
RUNTIME_DISTRIBUTIONS = ["numpy", "onnxruntime", "ai-edge-litert", "tflite-runtime", "soundfile",
                         "soxr", "sounddevice", "click", "flatbuffers", "cffi", "pytest"]
# Top-1 must agree only where the x86-64 margin (top-1 minus top-2 score) is at least this: the
# int8 kernels round differently on AVX2 / AVX-512 / NEON, so near-ties may flip.
CLEAR_MARGIN = 0.05
# Largest score difference accepted between the two machines (int8 outputs step by ~1/256).
SCORE_TOLERANCE = 0.05


# ---------------------------------------------------------------- collect (either machine)

def _versions() -> dict:
    found = {}
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _commands(edgeaudio: str, onnx_model: str) -> dict:
    every_score = ["--top-k", "50"]  # the bundled model's 50 classes: every score compared
    return {
        "info": [edgeaudio, "info", "--json"],
        "classify": [edgeaudio, "classify", *EXAMPLES, "--json", *every_score],
        "classify_onnx": [edgeaudio, "classify", *EXAMPLES, "--json", *every_score,
                          "--model", onnx_model],
        "listen": [edgeaudio, "listen", "--input", "examples/scene.flac", "--fast", "--json"],
    }


def collect(out: Path, edgeaudio: str) -> None:
    import edgeaudio as runtime
    from edgeaudio.audio import load_audio
    from edgeaudio.backends import BACKENDS_FOR_FORMAT, available_backends
    from edgeaudio.windows import cut_windows, hop_samples

    out.mkdir(parents=True, exist_ok=True)
    tflite_model = runtime.default_model_path()
    onnx_model = tflite_model.with_suffix(".onnx")
    env = {"machine": platform.machine(), "python": platform.python_version(),
           "edgeaudio_package": str(Path(runtime.__file__).parent),
           "versions": _versions(), "backends": available_backends()}
    (out / "env.json").write_text(json.dumps(env, indent=2) + "\n")

    ran = {}
    for name, argv in _commands(edgeaudio, str(onnx_model)).items():
        done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
        ran[name] = {"argv": ["edgeaudio", *argv[1:]], "rc": done.returncode,
                     "stdout": done.stdout, "stderr": done.stderr}
        print(f"{name}: exit {done.returncode}", flush=True)
    (out / "commands.json").write_text(json.dumps(ran, indent=2) + "\n")

    # The Python API at full precision: every window's features and scores, every backend.
    arrays = {}
    for path in (tflite_model, onnx_model):
        for backend in BACKENDS_FOR_FORMAT[path.suffix[1:]]:
            if backend not in available_backends():
                continue
            model = runtime.load_model(path, backend=backend)
            for clip in EXAMPLES:
                key = f"{path.suffix[1:]}|{backend}|{clip}"
                result = model.classify(clip)
                arrays[f"scores|{key}"] = result.window_scores
                arrays[f"pooled|{key}"] = result.scores
                if path == tflite_model and backend == "litert":
                    wave = load_audio(clip, model.sample_rate)
                    hop = hop_samples(model.info.hop_seconds, model.sample_rate)
                    windows = cut_windows(wave, model.info.window_samples, hop)
                    arrays[f"features|{clip}"] = np.stack([model.frontend(w) for w in windows])
    np.savez(out / "api.npz", **arrays)
    print(f"collected in {out} ({env['machine']})")


# ---------------------------------------------------------------- compare (on the host)

def _json_lines(text: str) -> list:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _top_two(scores: dict) -> tuple:
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    return ranked[0][0], ranked[0][1] - ranked[1][1]


def _compare_scores(x86: dict, arm: dict) -> dict:
    """Two {label: score} dicts of one clip -> differences and the top-1 verdict."""
    diff = max(abs(x86[k] - arm[k]) for k in x86)
    top_x86, margin = _top_two(x86)
    top_arm, _ = _top_two(arm)
    return {"top1_x86_64": top_x86, "top1_arm64": top_arm, "margin_x86_64": round(margin, 4),
            "score_x86_64": x86[top_x86], "score_arm64": arm[top_x86],
            "max_abs_diff": round(diff, 6), "clear": margin >= CLEAR_MARGIN,
            "same_top1": top_x86 == top_arm}


def _classify_rows(x86_run: dict, arm_run: dict) -> list:
    x86 = {d["file"]: d for d in _json_lines(x86_run["stdout"])}
    arm = {d["file"]: d for d in _json_lines(arm_run["stdout"])}
    rows = []
    for clip in sorted(x86):
        if clip not in arm:
            rows.append({"file": clip, "missing_on_arm64": True})
            continue
        row = {"file": clip, "frames_equal": x86[clip]["frames"] == arm[clip]["frames"]}
        row.update(_compare_scores({t["label"]: t["score"] for t in x86[clip]["top"]},
                                   {t["label"]: t["score"] for t in arm[clip]["top"]}))
        rows.append(row)
    return rows


def _events(run: dict) -> list:
    return [(e["event"], e["label"], e["t_start"], e["t_end"]) for e in _json_lines(run["stdout"])]


def _event_spans(run: dict) -> list:
    return [f"{e['label']} {e['t_start']}-{e['t_end']} s (closing score {e['score']})"
            for e in _json_lines(run["stdout"]) if e["event"] == "end"]


def _listen(x86_run: dict, arm_run: dict) -> dict:
    x86, arm = _json_lines(x86_run["stdout"]), _json_lines(arm_run["stdout"])
    same = _events(x86_run) == _events(arm_run)
    summary = [r["stderr"].strip().splitlines()[-1:] for r in (x86_run, arm_run)]
    return {"events_equal": same, "events": _event_spans(x86_run),
            "events_arm64": None if same else _event_spans(arm_run),
            "max_event_score_diff": (round(max(abs(a["score"] - b["score"])
                                               for a, b in zip(x86, arm)), 6)
                                     if same and x86 else None),
            "summary_x86_64": summary[0], "summary_arm64": summary[1],
            "summary_equal": summary[0] == summary[1]}


def _api(x86_npz: Path, arm_npz: Path, labels: list) -> dict:
    x86, arm = np.load(x86_npz), np.load(arm_npz)
    out = {"missing_on_arm64": sorted(set(x86.files) - set(arm.files)), "features": {},
           "window_scores": {}, "clips": []}
    for key in sorted(set(x86.files) & set(arm.files)):
        kind, rest = key.split("|", 1)
        a, b = x86[key], arm[key]
        if a.shape != b.shape:
            out.setdefault("shape_mismatch", []).append(key)
            continue
        diff = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
        if kind == "features":
            out["features"][rest] = diff
        elif kind == "scores":
            fmt, backend, clip = rest.split("|")
            top = a.argmax(axis=1) == b.argmax(axis=1)
            ranked = np.sort(a, axis=1)
            clear = (ranked[:, -1] - ranked[:, -2]) >= CLEAR_MARGIN
            out["window_scores"][rest] = {
                "windows": int(len(a)), "max_abs_diff": diff,
                "same_top1": int(top.sum()), "clear": int(clear.sum()),
                "same_top1_where_clear": int((top & clear).sum())}
        elif kind == "pooled":
            fmt, backend, clip = rest.split("|")
            row = _compare_scores(dict(zip(labels, a.tolist())), dict(zip(labels, b.tolist())))
            out["clips"].append({"model": fmt, "backend": backend, "file": clip, **row})
    return out


def _pytest(xml: Path, log: Path, rc: Path) -> dict:
    if not xml.exists():
        return {"ran": False}
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed, skipped = [], Counter()
    for case in suite.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        for tag in ("failure", "error"):
            bad = case.find(tag)
            if bad is not None:
                failed.append({"test": name, tag: (bad.get("message") or "")[:300]})
        skip = case.find("skipped")
        if skip is not None:
            skipped[(skip.get("message") or "").strip()[:200]] += 1
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    n["passed"] = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    last = [line for line in log.read_text().splitlines() if line.strip()][-1:] if log.exists() else []
    return {"ran": True, "exit_code": int(rc.read_text()) if rc.exists() else None, **n,
            "failed": failed, "skip_reasons": [{"reason": r, "tests": c}
                                               for r, c in skipped.most_common()],
            "closing_line": last[0] if last else None}


def _stderr_only_on_arm64(x86_cmd: dict, arm_cmd: dict) -> dict:
    """What the arm64 run printed on stderr that the x86-64 one did not, once per line."""
    x86_lines = {line for run in x86_cmd.values() for line in run["stderr"].splitlines()}
    found = {}
    for name, run in arm_cmd.items():
        for line in run["stderr"].splitlines():
            if line not in x86_lines:
                found.setdefault(line, []).append(name)
    return {line: sorted(set(names)) for line, names in found.items()}


def _info_differences(x86_run: dict, arm_run: dict) -> list:
    try:
        x86, arm = json.loads(x86_run["stdout"]), json.loads(arm_run["stdout"])
    except json.JSONDecodeError:
        return ["unreadable"]
    keys = set(x86) | set(arm)
    return sorted(k for k in keys if k != "file" and x86.get(k) != arm.get(k))


def compare(out: Path) -> dict:
    x86_dir, arm_dir = out / "x86_64", out / "arm64"
    x86_cmd = json.loads((x86_dir / "commands.json").read_text())
    arm_cmd = json.loads((arm_dir / "commands.json").read_text())
    env = {side: json.loads((out / side / "env.json").read_text()) for side in ("x86_64", "arm64")}
    report = {
        "commit": (out / "commit").read_text().strip(),
        "root": json.loads((out / "root.json").read_text()),
        "emulation": json.loads((out / "run.json").read_text()),
        "env": env,
        "timings": "none: under qemu-user emulation run times say nothing about a Raspberry Pi",
        "commands": {name: {"argv": " ".join(run["argv"]), "exit_x86_64": x86_cmd[name]["rc"],
                            "exit_arm64": run["rc"], "stderr_arm64": run["stderr"][-500:]}
                     for name, run in arm_cmd.items()},
        "stderr_only_on_arm64": _stderr_only_on_arm64(x86_cmd, arm_cmd),
        "info_differences": _info_differences(x86_cmd["info"], arm_cmd["info"]),
        "classify": {name: _classify_rows(x86_cmd[name], arm_cmd[name])
                     for name in ("classify", "classify_onnx")},
        "listen": _listen(x86_cmd["listen"], arm_cmd["listen"]),
        "api": _api(x86_dir / "api.npz", arm_dir / "api.npz",
                    json.loads(x86_cmd["info"]["stdout"])["labels"]),
        "pytest_arm64": _pytest(arm_dir / "pytest.xml", arm_dir / "pytest.log",
                                arm_dir / "pytest.rc"),
        "criteria": {"clear_margin": CLEAR_MARGIN, "score_tolerance": SCORE_TOLERANCE},
    }
    report["checks"] = _checks(report)
    report["passed"] = all(report["checks"].values())
    return report


def _checks(r: dict) -> dict:
    cli_rows = [row for rows in r["classify"].values() for row in rows]
    api = r["api"]
    pytest_ = r["pytest_arm64"]
    return {
        "every command exits 0 on both machines":
            all(c["exit_x86_64"] == 0 and c["exit_arm64"] == 0 for c in r["commands"].values()),
        "info is the same": not r["info_differences"],
        "every clip classified, same number of windows":
            all(row.get("frames_equal") for row in cli_rows),
        f"scores within {SCORE_TOLERANCE} (CLI and API)":
            all(row.get("max_abs_diff", 1) <= SCORE_TOLERANCE for row in cli_rows + api["clips"])
            and all(w["max_abs_diff"] <= SCORE_TOLERANCE for w in api["window_scores"].values()),
        f"same top-1 where the margin is at least {CLEAR_MARGIN}":
            all(row["same_top1"] for row in cli_rows + api["clips"] if row.get("clear"))
            and all(w["same_top1_where_clear"] == w["clear"]
                    for w in api["window_scores"].values()),
        "listen: the same events": r["listen"]["events_equal"],
        "every backend compared": not api["missing_on_arm64"] and not api.get("shape_mismatch"),
        "runtime tests pass on arm64": bool(pytest_.get("ran")) and pytest_["exit_code"] == 0,
    }


def markdown(r: dict) -> str:
    root, emu, arm, x86 = r["root"], r["emulation"], r["env"]["arm64"], r["env"]["x86_64"]
    versions = ", ".join(
        f"{k} {arm['versions'][k]}" + ("" if x86["versions"].get(k) == arm["versions"][k]
                                       else f" (x86-64: {x86['versions'].get(k, 'absent')})")
        for k in sorted(arm["versions"]))
    lines = [
        "# arm64 check (emulated)",
        "",
        f"`scripts/arm64_check.sh` at commit `{r['commit'][:10]}`: Debian {root['suite']} arm64 "
        f"root ({root['tool']}, variant {root['variant']}, {root['debian_packages']} packages, "
        f"{root['size_mib']} MiB before the venv; built in {root['build_seconds'] // 60} min "
        f"{root['build_seconds'] % 60} s), qemu-user {emu['qemu']} binfmt emulation of a "
        f"{emu['qemu_cpu']}, Python {arm['python']}.",
        f"Debian packages added: {', '.join(root['include'])}. Then `pip install .` of the "
        f"checkout in a new venv (no torch): {versions}.",
        f"The venv takes {emu['venv_mib']} MiB, the whole root {emu['root_mib']} MiB after the run "
        f"(pip's cache included). Backends found: {', '.join(arm['backends'])}. Timings: none; {r['timings'].split(': ', 1)[1]}.",
        "",
        "| check | result |",
        "|---|---|",
        *[f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in r["checks"].items()],
        "",
        "## Scores, x86-64 beside arm64",
        "",
        f"Top-1 must agree where the x86-64 margin (top-1 minus top-2) is >= {CLEAR_MARGIN}. "
        "CLI scores are printed to 4 decimals; the API rows are full precision.",
        "",
        "| what | backend | clip | top-1 x86-64 | top-1 arm64 | score x86-64 / arm64 | margin | max abs diff (all 50) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"classify": "CLI, bundled .tflite", "classify_onnx": "CLI, bundled .onnx"}
    for name, rows in r["classify"].items():
        backend = "onnxruntime" if name.endswith("onnx") else "auto"
        for row in rows:
            lines.append(f"| {names[name]} | {backend} | {row['file']} | {row['top1_x86_64']} | "
                         f"{row['top1_arm64']} | {row['score_x86_64']:.4f} / {row['score_arm64']:.4f}"
                         f" | {row['margin_x86_64']:.3f} | {row['max_abs_diff']:.4f} |")
    for row in r["api"]["clips"]:
        lines.append(f"| API, .{row['model']} | {row['backend']} | {row['file']} | "
                     f"{row['top1_x86_64']} | {row['top1_arm64']} | {row['score_x86_64']:.6f} / {row['score_arm64']:.6f} | "
                     f"{row['margin_x86_64']:.3f} | {row['max_abs_diff']:.2e} |")
    lines += ["", "| API, every window | windows | max abs score diff | same top-1 | clear margin | same top-1 where clear |",
              "|---|---|---|---|---|---|"]
    for key, w in r["api"]["window_scores"].items():
        lines.append(f"| {key.replace('|', ', ')} | {w['windows']} | {w['max_abs_diff']:.2e} | "
                     f"{w['same_top1']} | {w['clear']} | {w['same_top1_where_clear']} |")
    feats = r["api"]["features"]
    if feats:
        lines += ["", "Front end (numpy, float64 to the log): max abs feature difference "
                  + ", ".join(f"{k} {d:.1e}" for k, d in feats.items()) + "."]
    ls = r["listen"]
    lines += ["", "## `listen --input examples/scene.flac --fast --json`", "",
              f"Events equal: {'yes' if ls['events_equal'] else '**no**'}; max event score "
              f"difference {ls['max_event_score_diff']}. Summary line equal: "
              f"{'yes' if ls['summary_equal'] else 'no'}.", ""]
    lines += [f"- {e}" for e in ls["events"]]
    if not ls["events_equal"]:
        lines += ["", "arm64:"] + [f"- {e}" for e in ls["events_arm64"]]
    p = r["pytest_arm64"]
    lines += ["", "## Runtime tests on arm64 (`pytest tests/runtime`)", ""]
    if not p.get("ran"):
        lines.append("Not run.")
    else:
        lines.append(f"{p['passed']} passed, {p['failures'] + p['errors']} failed, "
                     f"{p['skipped']} skipped (exit {p['exit_code']}).")
        lines += [f"- failed: `{f['test']}`: {f.get('failure') or f.get('error')}"
                  for f in p["failed"]]
        lines += [f"- skipped ({s['tests']}): {s['reason']}" for s in p["skip_reasons"]]
    extra = r["stderr_only_on_arm64"]
    if extra:
        lines += ["", "## Printed on stderr only on arm64", ""]
        lines += [f"- `{line}` ({', '.join(names)})" for line, names in extra.items()]
    bad = {k: c for k, c in r["commands"].items() if c["exit_arm64"] != 0 or c["exit_x86_64"] != 0}
    if bad:
        lines += ["", "## Commands that failed", ""]
        lines += [f"- `{c['argv']}`: exit x86-64 {c['exit_x86_64']}, arm64 {c['exit_arm64']}: "
                  f"{c['stderr_arm64'].strip()[-300:]}" for c in bad.values()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="run the commands and the API here, save the outputs")
    c.add_argument("outdir", type=Path)
    c.add_argument("--edgeaudio", required=True, help="the edgeaudio command to run")
    m = sub.add_parser("compare", help="the arm64 outputs beside the x86-64 ones")
    m.add_argument("out", type=Path, help="the folder holding x86_64/ and arm64/")
    m.add_argument("--out", dest="report", type=Path, default=Path("bench/results/arm64_check"))
    args = parser.parse_args(argv)
    if args.command == "collect":
        collect(args.outdir, args.edgeaudio)
        return 0

    from edgeaudio.files import atomic_write_json, atomic_write_text
    report = compare(args.out)
    text = markdown(report)
    atomic_write_json(args.report.with_suffix(".json"), report)
    atomic_write_text(args.report.with_suffix(".md"), text)
    print(text)
    print(f"arm64 check: {'PASSED' if report['passed'] else 'FAILED'}; report in "
          f"{args.report.with_suffix('.md')}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
