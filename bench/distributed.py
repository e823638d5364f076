"""Scaling out on this machine (issue 20): the teachers' pass with 1 and 2 workers, one training
epoch with 1 and 2 torchrun processes, and a streamed dataset's peak memory beside the
in-memory path's.

    python bench/distributed.py extract [--clips 400]    # yamnet + efficientat, 1 and 2 workers
    python bench/distributed.py epoch                    # ESC-50 fold 1, 1 and 2 processes
    python bench/distributed.py memory                   # ESC-10 / ESC-50, stream / in memory
    python bench/distributed.py report                   # the table (from the results file)

Each row runs the real command (``edgeaudio teacher cache``, ``edgeaudio train``, under
``torchrun`` for 2 processes) in a subprocess with one torch thread per process and writes
its figures into ``bench/results/distributed.json`` as soon as it is done; the machine's load
average is recorded beside them (other work shares the cores: speed-ups are of this machine
as it was). Memory, sampled every 0.2 s from /proc: the peak over the run of the command's
processes together (the main process and its loader workers; proportional set size, so a page
the forked workers share with the main process counts once), and of the main process alone
(resident).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import ESC50, REPO, esc50_present  # noqa: E402

from edgeaudio.files import atomic_write_json  # noqa: E402

RESULTS = REPO / "bench" / "results" / "distributed.json"
EDGEAUDIO = str(Path(sys.executable).with_name("edgeaudio"))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version()}


def load_results() -> dict:
    if RESULTS.exists():
        return json.loads(RESULTS.read_text())
    return {"machine": machine(), "rows": {}}


def save_row(name: str, row: dict) -> None:
    results = load_results()
    results["machine"] = machine()
    results["rows"][name] = row
    atomic_write_json(RESULTS, results)
    print(json.dumps({name: row}, indent=1))


def tree_memory_kb(pid: int) -> tuple[int, int]:
    """(proportional set size of ``pid`` and all its descendants, resident memory of ``pid``
    alone), in KB, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, main, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                elif line.startswith("Rss:") and p == pid:
                    main = int(line.split()[1])
        except OSError:
            pass
        todo += children.get(p, [])
    return total, main


def run(cmd: list, env: dict | None = None, timeout: float = 3600) -> dict:
    """Run ``cmd``; its wall time, peak memory, load average before, output tail."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
    load = os.getloadavg()[0]
    import resource
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    peak = [0, 0]

    def sample():
        while proc.poll() is None:
            total, main = tree_memory_kb(proc.pid)
            peak[0], peak[1] = max(peak[0], total), max(peak[1], main)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate(timeout=timeout)
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # every process of the command, reaped
    return {"wall_seconds": round(time.time() - t0, 1),
            "cpu_seconds": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime,
                                 1),
            "peak_memory_mb": round(peak[0] / 1024), "peak_main_rss_mb": round(peak[1] / 1024),
            "load_before": round(load, 2), "output": out.strip().splitlines()[-1:]}


def extract(clips: int) -> None:
    """The teachers' pass (yamnet + efficientat) over the first ``clips`` ESC-50 clips into a
    fresh cache, with 1 and then 2 worker processes; the cache entries compared."""
    rows = {}
    caches = []
    for workers in (1, 2):
        cache = Path(tempfile.mkdtemp(prefix=f"bench-cache-{workers}-"))
        caches.append(cache)
        rows[workers] = run([EDGEAUDIO, "teacher", "cache", "--teacher", "yamnet",
                             "--teacher", "efficientat", "--data", str(ESC50), "--layout",
                             "esc50", "--first", str(clips), "--workers", str(workers),
                             "--quiet"], env={"EDGEAUDIO_CACHE": str(cache)})
    same = all((caches[0] / p.relative_to(caches[1])).read_bytes() == p.read_bytes()
               for p in caches[1].rglob("*.npz"))
    n = len(list(caches[1].rglob("*.npz")))
    for cache in caches:
        shutil.rmtree(cache, ignore_errors=True)
    save_row("teacher_extraction", {
        "what": f"edgeaudio teacher cache --teacher yamnet --teacher efficientat over "
                + ("all 2000" if clips >= 2000 else f"the first {clips} of the 2000")
                + " ESC-50 clips, fresh cache, 1 torch thread per worker; wall time includes "
                  "decoding (in the main process, once per row) and the workers' start",
        "clips": clips, "entries": n, "entries_equal_1_vs_2_workers": same,
        "workers_1": rows[1], "workers_2": rows[2],
        "speedup": round(rows[1]["wall_seconds"] / rows[2]["wall_seconds"], 2)})


def epoch_row(processes: int, out: Path) -> dict:
    cmd = [EDGEAUDIO, "train", "--data", str(ESC50), "--layout", "esc50", "--fold", "1",
           "--student", "small", "--epochs", "1", "--batch-size", "32",
           "--validation-fraction", "0", "--seed", "0", "--out", str(out), "--quiet"]
    if processes > 1:
        cmd = TORCHRUN + [f"--nproc_per_node={processes}"] + cmd
    row = run(cmd)
    metrics = json.loads((out / "metrics.json").read_text())
    row.update(epoch_seconds=metrics["history"][0]["seconds"],
               epoch_loss=metrics["history"][0]["loss"],
               steps=metrics["n_train"] // 32, test_accuracy=metrics.get("accuracy"))
    return row


def epoch(repeats: int = 2) -> None:
    """One epoch of the small student on ESC-50 fold 1 (1600 training clips, global batch 32,
    50 steps), alone and as 2 torchrun processes (gloo, 1 thread each), the two alternated
    ``repeats`` times (other work comes and goes on a shared machine); the fastest of each."""
    runs: dict = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench-epoch-") as tmp:
        for k in range(repeats):
            for processes in (1, 2):
                runs[processes].append(epoch_row(processes, Path(tmp) / f"p{processes}-{k}"))
    rows = {p: min(r, key=lambda row: row["epoch_seconds"]) for p, r in runs.items()}
    save_row("training_epoch", {
        "runs_epoch_seconds": {p: [r["epoch_seconds"] for r in rs] for p, rs in runs.items()},
        "runs_load_before": {p: [r["load_before"] for r in rs] for p, rs in runs.items()},
        "what": "edgeaudio train --student small --epochs 1 --batch-size 32 on ESC-50 fold 1 "
                "(1600 training clips, 4-s crops), alone and under torchrun --nproc_per_node 2 "
                "(gloo, 1 thread each); epoch_seconds is the epoch's training time "
                "(metrics.json), wall_seconds the whole command (decoding, test fold)",
        "processes_1": rows[1], "processes_2": rows[2],
        "speedup": round(rows[1]["epoch_seconds"] / rows[2]["epoch_seconds"], 2)})


def memory() -> None:
    """Peak memory of a short run (3 steps of the small student) on ESC-10 (400 clips) and
    ESC-50 (2000 clips), in memory and streamed; the streamed run's loss is the in-memory
    run's."""
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for classes in ("esc10", None):
            for stream in (False, True):
                name = f"{'esc10' if classes else 'esc50'}_{'stream' if stream else 'memory'}"
                out = Path(tmp) / name
                cmd = [EDGEAUDIO, "train", "--data", str(ESC50), "--layout", "esc50",
                       "--fold", "1", "--student", "small", "--epochs", "1",
                       "--steps-per-epoch", "3", "--validation-fraction", "0", "--seed", "0",
                       "--out", str(out), "--quiet"] + (["--classes", classes] if classes
                                                        else []) + (["--stream"] if stream
                                                                    else [])
                row = run(cmd)
                metrics = json.loads((out / "metrics.json").read_text())
                row.update(clips=metrics["n_train"] + metrics["n_test"],
                           epoch_loss=metrics["history"][0]["loss"])
                rows[name] = row
    save_row("streamed_memory", {
        "what": "edgeaudio train --student small --epochs 1 --steps-per-epoch 3 on ESC-10 "
                "(400 clips) and ESC-50 (2000 clips), fold 1 held out and scored, in memory "
                "and with --stream (2 loader workers): peak memory of the command's processes "
                "together (proportional set size) and of the main process (resident)",
        **rows,
        "stream_loss_equals_memory": all(
            rows[f"{d}_stream"]["epoch_loss"] == rows[f"{d}_memory"]["epoch_loss"]
            for d in ("esc10", "esc50"))})


def report() -> None:
    rows = load_results()["rows"]
    lines = ["| row | 1 | 2 | speed-up |", "| --- | --- | --- | --- |"]
    if "teacher_extraction" in rows:
        r = rows["teacher_extraction"]
        lines.append(f"| teachers' pass, {r['clips']} clips (workers) | "
                     f"{r['workers_1']['wall_seconds']} s | {r['workers_2']['wall_seconds']} s "
                     f"| {r['speedup']}x |")
    if "training_epoch" in rows:
        r = rows["training_epoch"]
        lines.append(f"| one ESC-50 epoch (processes) | {r['processes_1']['epoch_seconds']} s | "
                     f"{r['processes_2']['epoch_seconds']} s | {r['speedup']}x |")
    if "streamed_memory" in rows:
        r = rows["streamed_memory"]
        lines += ["", "| data | in memory | streamed (all processes / main) |",
                  "| --- | --- | --- |"]
        for d, label in (("esc10", "ESC-10, 400 clips"), ("esc50", "ESC-50, 2000 clips")):
            m, st = r[f"{d}_memory"], r[f"{d}_stream"]
            lines.append(f"| {label} | {m['peak_memory_mb']} MB | {st['peak_memory_mb']} MB / "
                         f"{st['peak_main_rss_mb']} MB |")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["extract", "epoch", "memory", "report"])
    parser.add_argument("--clips", type=int, default=400)
    args = parser.parse_args()
    if args.what != "report" and not esc50_present(ESC50):
        raise SystemExit(2)
    {"extract": lambda: extract(args.clips), "epoch": epoch, "memory": memory,
     "report": report}[args.what]()
