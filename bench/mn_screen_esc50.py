"""Which shape of student keeps the most of mn04 before any training: a screen.

Each candidate is mn04 cut down to at most 250 K parameters in a different place (every
channel narrower, as ``mn02``; the expanded channels inside the blocks narrower, the residual
streams kept at mn04's width; the last blocks dropped; smaller SE squeezes and a smaller head),
with the channels it keeps inherited from mn04 by BatchNorm |gamma| (``inherit_from_mn04``) and
its BatchNorm statistics re-estimated on training clips. No weight is trained: a linear probe
on its pooled embedding (ESC-50, fold 1 held out: 1,600 / 400 clips) measures how much of
mn04's knowledge the cut kept, beside mn04 itself through the same 16 kHz front end and the
same network from random weights. Parameters count the network with a 50-class head; MACs
are per second of audio (network only).

    .venv/bin/python bench/mn_screen_esc50.py [--candidates NAME ...] [--json PATH]

About 2 CPU-minutes per candidate after the clips are decoded once (cached in runs/).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from _runs import ESC50, REPO, clip_path, esc50_present

RESULTS = REPO / "bench" / "results" / "mn_screen_esc50.json"
CACHE = REPO / "runs" / "cache" / "esc50_16k.npy"
RECALIBRATION_CLIPS = 400
# candidate -> MNConfig settings, or the name of the student in MN_STUDENTS it is (width 0.4
# is mn04's residual streams)
CANDIDATES = {
    "mn04": dict(width=0.4),
    "mn02": "mn02",
    "mn04-e20-d15": dict(width=0.4, expand_width=0.2, drop_blocks=(15,), head_hidden=128),
    "mn04-e20-se16": dict(width=0.4, expand_width=0.2, se_ratio=16, head_hidden=128),
    "mn04-late-e20-se16": dict(width=0.4, expand_width=0.2, expand_from=11, se_ratio=16,
                               head_hidden=128),
    "mn04-d1415-se16": "mn04-short",
    "mn04-late-e30-d1415-se16": dict(width=0.4, expand_width=0.3, expand_from=11,
                                     drop_blocks=(14, 15), se_ratio=16, head_hidden=128),
    "mn04-short-causal": "mn04-short-stream",
    # mn04-short with a narrower embedding (its 1x1 conv to 384 channels and the head's first
    # layer are a third of its parameters): int8 files under 300 KB
    "mn04-short-emb256": dict(width=0.4, drop_blocks=(14, 15), se_ratio=16, head_hidden=128,
                              embedding_dim=256),
    "mn04-short320": "mn04-short320",
    # the tiny row (<= 70 K): mn01 against mn04's streams with almost everything else cut
    "mn01": "mn01",
    "mn04-tiny": "mn04-tiny",
}


def candidate_config(name: str):
    """The candidate's MNConfig and its settings that differ from MNConfig's defaults."""
    from dataclasses import fields

    from edgeaudio.train.mn_student import MN_STUDENTS, MNConfig

    spec = CANDIDATES[name]
    config = MN_STUDENTS[spec] if isinstance(spec, str) else MNConfig(name, "", **spec)
    settings = {f.name: getattr(config, f.name) for f in fields(config)
                if f.name not in ("name", "description")
                and (f.name == "width" or getattr(config, f.name) != f.default)}
    return config, {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def esc50_fold1():
    from edgeaudio.audio import load_audio

    rows = list(csv.DictReader(open(ESC50 / "meta" / "esc50.csv")))
    if CACHE.exists():
        waves = np.load(CACHE)
    else:
        logging.getLogger("edgeaudio.audio").setLevel(logging.ERROR)  # ESC-50's clipped clips
        waves = np.stack([load_audio(clip_path(r), 16000) for r in rows]).astype(np.float32)
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        np.save(CACHE, waves)
    labels = np.array([int(r["target"]) for r in rows])
    test = np.array([r["fold"] == "1" for r in rows])
    return waves, labels, test


def screen(names: list[str]) -> dict:
    import torch

    from edgeaudio.train.frontend import TorchFrontend
    from edgeaudio.train.losses import fit_probe
    from edgeaudio.train.mn_student import (MNNetwork, MNStudent, inherit_from_mn04, load_mn04,
                                            mn_frontend_spec, recalibrate_batchnorm)
    from edgeaudio.train.students import count_macs_per_second, count_params

    torch.set_num_threads(1)
    waves, labels, test = esc50_fold1()
    teacher = load_mn04()
    recalibration = list(waves[~test][::len(waves[~test]) // RECALIBRATION_CLIPS])

    @torch.no_grad()
    def pooled(student):
        student.eval()
        return np.concatenate([student.embed(torch.from_numpy(waves[i:i + 25])).mean(1).numpy()
                               for i in range(0, len(waves), 25)])

    def probe_accuracy(x):
        probe = fit_probe(x[~test], labels[~test], 50, 10.0)
        return float((probe.logits(x[test]).argmax(1) == labels[test]).mean())

    results = {"clips": {"train": int((~test).sum()), "test": int(test.sum()),
                         "recalibration": len(recalibration)}, "candidates": {}}
    for name in names:
        started = time.process_time()
        config, settings = candidate_config(name)
        row = {"settings": settings}
        for init in ("mn04", "random"):
            torch.manual_seed(0)
            student = MNStudent(config, TorchFrontend(mn_frontend_spec()), MNNetwork(config, 50))
            if init == "mn04":
                inherit_from_mn04(student, teacher)
                if name != "mn04":  # mn04's own statistics describe its inputs already
                    recalibrate_batchnorm(student, recalibration)
            else:
                recalibrate_batchnorm(student, recalibration)
            row[f"probe_{init}"] = probe_accuracy(pooled(student))
        row["params"] = count_params(student.network)
        row["backbone_params"] = count_params(student.network.features)
        row["macs_per_second"] = count_macs_per_second(student)["network"]
        row["cpu_seconds"] = time.process_time() - started
        results["candidates"][name] = row
        print(f"{name:28s} {row['params']:>8,d} params {row['macs_per_second'] / 1e6:5.1f} M "
              f"MAC/s  probe: inherited {100 * row['probe_mn04']:.1f} %, random "
              f"{100 * row['probe_random']:.1f} %", flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES),
                        default=list(CANDIDATES))
    parser.add_argument("--json", default=str(RESULTS), help="where the results go")
    args = parser.parse_args(argv)
    if not esc50_present(ESC50):
        return 2
    results = screen(args.candidates)
    path = Path(args.json)
    if path.exists():  # candidates screened before and not now stay
        kept = json.loads(path.read_text()).get("candidates", {})
        results["candidates"] = {**kept, **results["candidates"]}
    from edgeaudio.files import atomic_write_json
    atomic_write_json(path, results)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
