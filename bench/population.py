#!/usr/bin/env python
"""Trials per minute of a vectorised population against training the same trials one by one.

For each model kind in ``--kinds`` and each population size N in ``--sizes``, N trials of that
kind — hyperparameters drawn (seeded) from the default search space's branch of the kind in
``params.yaml``, ``--epochs`` epochs each, the other training settings of ``params.yaml`` but
``train.folds = --folds`` — are trained by

* ``population``: :func:`tcr_pipeline.population.train_population` (one vectorised population);
* ``one by one``: :func:`tcr_pipeline.training.train_model` on each trial in turn (today's way),
  timed on the first ``--serial-trials`` trials of the same list (one-by-one trials do not
  share work, so their rate does not depend on how many are run).

on the shipped ``data/raw/viral_pairs.csv`` prepared with the default prepare parameters (in
memory). The ratio of the two rates, measured in the same run, is the speed-up. On a CUDA device
the GPU utilisation is sampled every 0.1 s during each timed run (``torch.cuda.utilization()``,
i.e. NVML; ``nvidia-smi`` when that is missing) and its mean reported.

    python bench/population.py                                   # CPU: small, medium; 1, 8, 32
    python bench/population.py --device cuda --sizes 1,8,32,128  # the GPU figures (≤ 6 min)
    python bench/population.py --quick --out /tmp/pop.json       # smoke test

See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from tcr_pipeline.config import Dimension, EvaluateParams, PrepareParams, TrainParams, load_params
from tcr_pipeline.data import load_pairs
from tcr_pipeline.files import sha256_file, write_json_atomic
from tcr_pipeline.population import shape_key, train_population
from tcr_pipeline.prepare import Prepared, encode_pairs
from tcr_pipeline.training import train_model

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw" / "viral_pairs.csv"
DEFAULT_OUT = ROOT / "bench" / "results" / "population.json"
console = Console(width=None if sys.stdout.isatty() else 150)


class UtilisationSampler:
    """Mean GPU utilisation (%) over a block, sampled every ``interval`` seconds in a thread."""

    def __init__(self, device: torch.device, interval: float = 0.1) -> None:
        self.device, self.interval = device, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float | None:
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # no pynvml: ask nvidia-smi
            index = self.device.index or 0
            command = [
                "nvidia-smi",
                f"--id={index}",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
            ]
            try:
                return float(
                    subprocess.run(command, capture_output=True, text=True, timeout=5).stdout.strip()
                )
            except (OSError, ValueError, subprocess.SubprocessError):
                return None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._sample()
            if value is not None:
                self.samples.append(value)
            self._stop.wait(self.interval)

    def __enter__(self) -> UtilisationSampler:
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def _draw(dimension: Dimension, rng: np.random.Generator) -> Any:
    if dimension.choice is not None:
        return dimension.choice[int(rng.integers(len(dimension.choice)))]
    if dimension.uniform is not None:
        return float(rng.uniform(*dimension.uniform))
    if dimension.loguniform is not None:
        low, high = np.log(dimension.loguniform)
        return float(np.exp(rng.uniform(low, high)))
    if dimension.integer is not None:
        return int(rng.integers(dimension.integer[0], dimension.integer[1] + 1))
    raise ValueError("nested branches are not drawn here")


def draw_trials(kind: str, count: int, epochs: int, folds: int, device: str, seed: int) -> list[TrainParams]:
    """``count`` trials of ``kind`` from the default space's branch (epochs and folds fixed)."""
    params = load_params(ROOT / "params.yaml")
    branches = params.search.space["model.kind"].branches or {}
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(count):
        model: dict[str, Any] = {"kind": kind}
        train: dict[str, Any] = {"epochs": epochs, "folds": folds, "device": device, "seed": seed + i}
        for key, dimension in branches.get(kind, {}).items():
            if key in ("epochs",):
                continue
            if key.startswith("model."):
                model[key.removeprefix("model.")] = _draw(dimension, rng)
            else:
                train[key] = _draw(dimension, rng)
        model_params = params.train.model.model_copy(update=model)
        trials.append(params.train.model_copy(update={**train, "model": model_params}))
    return trials


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Any, device: torch.device) -> tuple[float, float | None]:
    """(seconds, mean GPU utilisation) of ``run()``."""
    _sync(device)
    with UtilisationSampler(device) as sampler:
        started = time.perf_counter()
        run()
        _sync(device)
        seconds = time.perf_counter() - started
    return seconds, sampler.mean


def bench_kind(
    prepared: Prepared, kind: str, sizes: list[int], args: argparse.Namespace, device: torch.device
) -> list[dict[str, Any]]:
    evaluate = EvaluateParams()
    trials = draw_trials(kind, max(sizes), args.epochs, args.folds, args.device, args.seed)
    grouped = len({shape_key(t) for t in trials}) == 1 and shape_key(trials[0]) is not None
    warm = [t.model_copy(update={"epochs": 1}) for t in trials[:2]]  # first-call costs off the clock
    train_population(prepared, warm, evaluate)
    train_model(prepared, warm[0], evaluate)
    serial = trials[: min(args.serial_trials, max(sizes))]
    serial_s, serial_util = timed(lambda: [train_model(prepared, t, evaluate) for t in serial], device)
    serial_rate = len(serial) / serial_s * 60
    rows = []
    for size in sizes:
        seconds, util = timed(lambda size=size: train_population(prepared, trials[:size], evaluate), device)
        rate = size / seconds * 60
        rows.append(
            {
                "kind": kind,
                "size": size,
                "vectorised": grouped,
                "population_seconds": seconds,
                "population_trials_per_minute": rate,
                "population_gpu_utilisation": util,
                "one_by_one_trials": len(serial),
                "one_by_one_seconds": serial_s,
                "one_by_one_trials_per_minute": serial_rate,
                "one_by_one_gpu_utilisation": serial_util,
                "speedup": rate / serial_rate,
            }
        )
        # each size's figures as they come (a run stopped part-way keeps them in its log)
        utilisation = ""
        if util is not None:
            utilisation = f", GPU util. {util:.0f} % (one by one {serial_util or 0:.0f} %)"
        console.print(
            f"{kind} N={size}: {rate:.1f} trials/min in {seconds:.1f} s (one by one {serial_rate:.1f}) "
            f"×{rate / serial_rate:.2f}{utilisation}"
        )
    return rows


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--kinds", default="small,medium", help="model kinds (default space branches)")
    parser.add_argument("--sizes", default="1,8,32", help="population sizes (trials)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--folds", type=int, default=1, help="train.folds of every trial")
    parser.add_argument("--serial-trials", type=int, default=4, help="trials timed one by one")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 2 epochs, sizes 1,4, 2 serial trials"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.sizes, args.serial_trials = 2, "1,4", 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    load_start = os.getloadavg()
    started = time.perf_counter()
    prepared = encode_pairs(load_pairs(RAW), PrepareParams(), sha256_file(RAW))
    console.print(
        f"{len(prepared.rows('train'))} training rows × {prepared.features.shape[1]} columns "
        f"({prepared.features.dtype}); device {device}; load average {load_start[0]:.1f}"
    )
    if load_start[0] > (os.cpu_count() or 1) / 2:
        console.print("[yellow]warning: the machine is busy: absolute times are pessimistic[/]")
    rows = [
        row
        for kind in args.kinds.split(",")
        if kind
        for row in bench_kind(prepared, kind, sizes, args, device)
    ]
    table = Table(title=f"trials per minute, {args.epochs}-epoch trials, folds={args.folds}, {device}")
    for column in ("kind", "N", "population", "one by one", "speed-up", "GPU util. pop / 1-by-1"):
        table.add_column(column, justify="right")
    for r in rows:
        util = "—"
        if r["population_gpu_utilisation"] is not None:
            util = f"{r['population_gpu_utilisation']:.0f} % / {r['one_by_one_gpu_utilisation'] or 0:.0f} %"
        table.add_row(
            r["kind"],
            str(r["size"]),
            f"{r['population_trials_per_minute']:.1f}",
            f"{r['one_by_one_trials_per_minute']:.1f}",
            f"×{r['speedup']:.2f}",
            util,
        )
    console.print(table)
    write_json_atomic(
        args.out,
        {
            "command": " ".join(
                ["python", "bench/population.py", *(argv if argv is not None else sys.argv[1:])]
            ),
            "machine": machine(device),
            "settings": {k: str(v) for k, v in vars(args).items()},
            "training_rows": len(prepared.rows("train")),
            "results": rows,
            "seconds": time.perf_counter() - started,
            "load_average": {"start": load_start, "end": os.getloadavg()},
        },
    )
    console.print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
