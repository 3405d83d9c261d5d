"""What the benchmark scripts share: the machine they ran on, the load around them, the result file.

Imported as ``harness`` by the scripts in this folder (``python bench/<script>.py`` puts the
folder first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcr_pipeline.files import write_json_atomic

LoadAverage = tuple[float, float, float]


def machine_info(**versions: Any) -> dict[str, Any]:
    """CPU model, cores (all and usable), memory, platform, Python, then ``versions`` (name: version)."""
    cpu = platform.processor() or "unknown"
    meminfo: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            meminfo[key] = value.strip()
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_total": meminfo.get("MemTotal"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **versions,
    }


def load_at_start(say: Callable[[str], object]) -> LoadAverage:
    """The load average now; a warning through ``say`` when the 1-minute one is above half the cores."""
    load = os.getloadavg()
    if load[0] > 0.5 * (os.cpu_count() or 1):
        say(f"warning: 1-minute load average {load[0]:.2f} — other processes compete for the CPU; "
            "timings will be noisy")  # fmt: skip
    return load


def results_header(benchmark: str, machine: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The first fields of every result file: the benchmark, its command, when, the machine, the settings."""
    return {
        "benchmark": benchmark,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created_unix": time.time(),
        "machine": machine,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def write_results(
    path: Path,
    results: dict[str, Any],
    load_before: LoadAverage,
    started: float,
    say: Callable[[str], object],
) -> None:
    """Add the load average at start and end and the total time, write ``path`` atomically, say so."""
    results["load_average"] = {"start": load_before, "end": os.getloadavg()}
    results["total_seconds"] = time.perf_counter() - started
    write_json_atomic(path, results)
    say(
        "load average (1, 5, 15 min): start "
        + ", ".join(f"{v:.2f}" for v in load_before)
        + "; end "
        + ", ".join(f"{v:.2f}" for v in results["load_average"]["end"])
        + f" on {os.cpu_count()} CPUs"
    )
    say(f"wrote {path} in {results['total_seconds']:.0f} s")
