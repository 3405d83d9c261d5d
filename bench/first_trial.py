#!/usr/bin/env python
"""Command to first trial: ``tcr-pipeline search`` and ``pipeline`` as a user runs them, repeated,
from the command's start to its first trial starting, with where the time goes (issue 15).

Each repeat runs the real command (2 trials on 2 local Dask workers, 1-epoch small models, the
k-mer baseline included) and takes, from its Prefect INFO log lines, the seconds from the
command's start to: the flow's entry, (``pipeline``) the prepare task's end, the ``search`` flow's
entry, the Dask cluster's start, the run's manifest, the baseline's end, the ``search-trials``
subflow's entry, the first worker registering, the client connecting; and from the store, the
first trial record's ``started``. With ``--checkout`` the same commands run on other source trees
(``PYTHONPATH``), alternating with this one repeat by repeat, so that a before/after comparison
shares the machine's load. A real ``prefect server`` runs for the commands that reuse one
(``PREFECT_API_URL``); ``--temporary-server`` adds commands that start their own.

    python bench/first_trial.py                                  # this tree, 5 repeats
    python bench/first_trial.py --checkout /tmp/base --label-checkouts before,after

See bench/README.md (orchestration section).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from orchestration import (
    DEFAULT_RAW,
    ROOT,
    PrefectServer,
    console,
    time_to_first_trial,
    trial_settings,
    write_params_file,
)

from tcr_pipeline.config import PrepareParams
from tcr_pipeline.prepare import prepare_dataset

DEFAULT_OUT = ROOT / "bench" / "results" / "first_trial.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Seconds from `tcr-pipeline search`/`pipeline` to the first trial starting, repeated.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command on each tree")
    parser.add_argument("--workers", type=int, default=2, help="local Dask workers = trials")
    parser.add_argument("--commands", default="search,pipeline", help="comma-separated: search, pipeline")
    parser.add_argument(
        "--checkout", type=Path, action="append", default=[], help="another source tree to time too"
    )
    parser.add_argument(
        "--labels", default="", help="comma-separated names of this tree, then each --checkout"
    )
    parser.add_argument(
        "--temporary-server", action="store_true", help="also time `search` starting its own Prefect server"
    )
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="raw pair table to prepare")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    args.commands = [c for c in args.commands.split(",") if c]
    if args.repeats < 1 or not set(args.commands) <= {"search", "pipeline"} or not args.commands:
        parser.error("--repeats at least 1; --commands of search, pipeline")
    trees = [ROOT, *args.checkout]
    labels = [v for v in args.labels.split(",") if v] or ["this", *(p.name for p in args.checkout)]
    if len(labels) != len(trees):
        parser.error("--labels: one name for this tree and one per --checkout")
    args.trees = dict(zip(labels, trees, strict=True))
    return args


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Min and median of the first-trial and event times of ``rows`` (one command on one tree)."""
    firsts = [r["command_to_first_trial_s"] for r in rows]
    events: dict[str, list[float]] = {}
    for row in rows:
        for name, at in row["events_s"].items():
            events.setdefault(name, []).append(at)
    return {
        "runs": len(rows),
        "first_trial_min_s": min(firsts),
        "first_trial_median_s": statistics.median(firsts),
        "events_median_s": {k: statistics.median(v) for k, v in events.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = harness.load_at_start(console.print)
    work = Path(tempfile.mkdtemp(prefix="tcr-bench-first-"))
    server = PrefectServer(home=work / "prefect-home", log=work / "prefect-server.log")
    rows: dict[str, list[dict[str, Any]]] = {}
    try:
        prepared_dir = work / "prepared"
        prepare_dataset(args.raw, PrepareParams(), prepared_dir)
        params_file = work / "params.yaml"
        write_params_file(params_file, args.raw, trial_settings(1, "cpu"), args.workers, args.workers)
        server.start()
        console.log(f"Prefect server at {server.url} after {server.startup_s:.1f} s")
        runs = [(c, server.url) for c in args.commands]
        if args.temporary_server:
            runs.append(("search", None))
        for repeat in range(args.repeats):
            for command, url in runs:
                for label, tree in args.trees.items():
                    key = f"{command}/{'running' if url else 'temporary'}-server/{label}"
                    run_label = f"{key.replace('/', '-')}-{repeat}"
                    row = time_to_first_trial(
                        work, prepared_dir, params_file, args.workers, url, run_label, command, tree
                    )
                    row["load_1min"] = os.getloadavg()[0]
                    rows.setdefault(key, []).append(row)
                    console.log(
                        f"{key} #{repeat + 1}: first trial after {row['command_to_first_trial_s']:.2f} s "
                        f"(load {row['load_1min']:.1f}); events {row['events_s']}"
                    )
                    shutil.rmtree(work / f"store-first-{run_label}", ignore_errors=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    summary = {key: summarise(value) for key, value in rows.items()}
    for key, value in summary.items():
        console.print(
            f"{key}: command → first trial min {value['first_trial_min_s']:.2f} s, median "
            f"{value['first_trial_median_s']:.2f} s over {value['runs']} runs; median events "
            + ", ".join(f"{k} {v:.2f}" for k, v in value["events_median_s"].items())
        )
    settings = argparse.Namespace(**{**vars(args), "checkout": None, "trees": None})
    settings.trees = {k: str(v) for k, v in args.trees.items()}
    header = harness.results_header("first_trial", harness.machine_info(), settings)
    harness.write_results(
        args.out, {**header, "summary": summary, "runs": rows}, load_before, started, console.print
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
