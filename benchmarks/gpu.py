"""Trials per hour with 1 and with 4 trials per GPU, and the GPU's utilisation: ``make bench-gpu``.

``python -m benchmarks.gpu [--trials 16] [--epochs 10] [--channels 64] [--packing 0,1,4]``

The CNN experiment (experiments/digits_cnn.yaml) as users run it, FIFO and no early stopping so
every trial trains every epoch (unless its loss turns non-finite: the same configurations, so
the same trials, for every K), with ``gpus_per_trial`` 1/K for each K of ``--packing`` (K 0:
no GPU, a trial per CPU, for a small model the question before any other). Each
sweep runs in a process of its own while ``nvidia-smi`` samples the GPUs every 200 ms; the
utilisation is averaged over the sweep (start-up excluded), the memory is the peak.

Needs a CUDA build of torch and a CUDA device: without one it says so in one line, exit 2.
Results: benchmarks/results/gpu.json and gpu.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SWEEP = ROOT / "experiments" / "digits_cnn.yaml"
_SMI_QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "200"]


@dataclass(frozen=True)
class Sample:
    at: float  # time.time() when read
    utilization: float  # percent, mean over the machine's GPUs (those a sweep leaves idle too)
    memory_mib: float  # summed over the machine's GPUs


def parse_smi(at: float, lines: Sequence[str]) -> Sample | None:
    """One sample from one nvidia-smi report (a line per GPU: ``util, memory``); None if garbled."""
    values = []
    for line in lines:
        parts = [p.strip() for p in line.split(",")]
        try:
            values.append((float(parts[0]), float(parts[1])))
        except (ValueError, IndexError):
            return None
    if not values:
        return None
    return Sample(at, statistics.fmean(u for u, _ in values), sum(m for _, m in values))


def utilisation(samples: Iterable[Sample], start: float, end: float) -> dict[str, float | None]:
    """Mean and p90 utilisation within [start, end] (the sweep), peak memory over all samples."""
    taken = list(samples)
    inside = sorted(s.utilization for s in taken if start <= s.at <= end)
    return {
        "gpu_util_mean": statistics.fmean(inside) if inside else None,
        "gpu_util_p90": inside[int(0.9 * (len(inside) - 1))] if inside else None,
        "gpu_memory_peak_mib": max((s.memory_mib for s in taken), default=None),
        "samples": float(len(inside)),
    }


class Sampler:
    """``nvidia-smi`` in the background; a report is one line per GPU, every 200 ms."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self._gpus = 0
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        smi = shutil.which("nvidia-smi")
        # Without nvidia-smi the table says n/a; trials per hour are still measured.
        self._gpus = _gpu_count(smi) if smi is not None else 0
        if smi is not None and self._gpus > 0:
            self._proc = subprocess.Popen([smi, *_SMI_QUERY], stdout=subprocess.PIPE, text=True)
            assert self._proc.stdout is not None
            self._thread = threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True)
            self._thread.start()
        return self

    def _read(self, stream: IO[str]) -> None:
        report: list[str] = []
        for line in stream:
            report.append(line)
            if len(report) == self._gpus:
                sample = parse_smi(time.time(), report)
                if sample is not None:
                    self.samples.append(sample)
                report = []

    def __exit__(self, *_: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _gpu_count(smi: str) -> int:
    """The machine's GPUs as nvidia-smi counts them: every one reports, whatever
    CUDA_VISIBLE_DEVICES hides from torch. 0 if it cannot tell."""
    found = subprocess.run(
        [smi, "--query-gpu=count", "--format=csv,noheader"], capture_output=True, text=True
    )
    try:
        return int(found.stdout.split()[0]) if found.returncode == 0 else 0
    except (IndexError, ValueError):
        return 0


def one_sweep(per_gpu: int, trials: int, epochs: int, channels: int) -> dict[str, Any]:
    """One sweep in this process (the child's side): the CNN, 1/per_gpu GPU per trial; per_gpu
    0: on the CPUs alone, a trial per CPU."""
    from hypersweep.config import load_sweep
    from hypersweep.tuning import run_sweep

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"num_samples={trials}",
            f"max_epochs={epochs}",
            "scheduler.type=fifo",
            "search.type=random",
            "training.patience=null",
            "training.divergence_factor=1e9",  # only a non-finite loss stops a trial early
            f"fixed.channels={channels}",
            f"resources.gpus_per_trial={1 / per_gpu if per_gpu else 0}",
            "resources.cpus_per_trial=1",
            f"tracking_uri=sqlite:///{tmp}/mlflow.db",
            f"storage={tmp}/runs",
        ]
        spec = load_sweep(SWEEP, overrides)
        started = time.perf_counter()
        outcome = run_sweep(spec)
        wall, end = time.perf_counter() - started, time.time()
    return {
        "per_gpu": per_gpu,
        "trials": trials,
        "finished": sum(outcome.statuses.values()),
        "statuses": outcome.statuses,
        "cpu_fallbacks": outcome.cpu_fallbacks,
        "wall_s": wall,
        "sweep_s": outcome.wall_seconds,
        "sweep_end": end,
        "trial_s": outcome.trial_seconds,
    }


def measure(per_gpu: int, trials: int, epochs: int, channels: int) -> dict[str, Any]:
    """One sweep in a fresh process, the GPUs sampled meanwhile."""
    command = [sys.executable, "-m", "benchmarks.gpu", "--one", str(per_gpu)]
    command += ["--trials", str(trials), "--epochs", str(epochs), "--channels", str(channels)]
    with Sampler() as sampler:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{per_gpu} per GPU failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("BENCH "))
    result["trials_per_hour"] = 3600 * result["finished"] / result["sweep_s"]
    end = result["sweep_end"]
    result.update(utilisation(sampler.samples, end - result["sweep_s"], end))
    print(
        f"  {per_gpu} per GPU: {result['sweep_s']:.1f} s, {result['trials_per_hour']:.0f} trials/h",
        flush=True,
    )
    return result


def markdown(data: dict[str, Any]) -> str:
    runs = data["runs"]
    base = next((r["trials_per_hour"] for r in runs if r["per_gpu"] == 1), runs[0]["trials_per_hour"])
    lines = [
        f"# hypersweep GPU benchmark ({time.strftime('%Y-%m-%d %H:%M')}, {data['device']})",
        "",
        f"experiments/digits_cnn.yaml, channels {data['channels']}, {data['trials']} trials x "
        f"{data['epochs']} epochs, FIFO, no early stopping, {data['gpus']} GPU(s).",
        "",
        "| trials per GPU (0: CPUs only) | trials (completed) | sweep (s) | trials/hour | vs 1 per GPU "
        "| GPU util mean (%) | GPU util p90 (%) | GPU memory peak (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        completed = run["statuses"].get("completed", 0)
        lines.append(
            f"| {run['per_gpu']} | {run['finished']} ({completed}) | {run['sweep_s']:.1f} "
            f"| {run['trials_per_hour']:.0f} | {run['trials_per_hour'] / base:.2f} "
            f"| {_num(run['gpu_util_mean'])} | {_num(run['gpu_util_p90'])} "
            f"| {_num(run['gpu_memory_peak_mib'])} |"
        )
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--channels", type=int, default=64, help="the CNN's width: more, more GPU work")
    parser.add_argument("--packing", default="0,1,4", help="trials per GPU (0: CPUs only), comma-separated")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child: one sweep, K per GPU
    args = parser.parse_args(argv)
    if args.one is not None:
        result = one_sweep(args.one, args.trials, args.epochs, args.channels)
        sys.stdout.write("BENCH " + json.dumps(result) + "\n")
        return
    import torch

    if not torch.cuda.is_available():
        sys.stderr.write(f"error: benchmarks.gpu: needs a CUDA device; torch {torch.__version__} sees none\n")
        sys.exit(2)
    gpus = torch.cuda.device_count()
    packing = [int(k) for k in args.packing.split(",")]
    print(f"{args.trials} trials x {args.epochs} epochs on {gpus} GPU(s), {packing} per GPU", flush=True)
    runs = [measure(k, args.trials, args.epochs, args.channels) for k in packing]
    data = {
        "device": torch.cuda.get_device_name(0),
        "host": platform.node(),
        "gpus": gpus,
        "trials": args.trials,
        "epochs": args.epochs,
        "channels": args.channels,
        "runs": runs,
    }
    report = markdown(data)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(data, indent=2))
    (args.out / "gpu.md").write_text(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
