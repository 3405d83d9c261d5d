#!/usr/bin/env python
"""Orchestration efficiency of the hyperparameter search: Prefect + Dask against a plain loop.

The project's target (the issue): *orchestration efficiency* = (sum of trial compute time) /
(wall time × workers) for 32 trials with 2 workers on the ``local`` cluster profile, with the
per-trial overhead in milliseconds, against a plain Python loop over the same trials in the same
run; target ≥ 0.85.

What runs, in this order, in one invocation:

1. ``prepare_dataset`` on the shipped ``data/raw/viral_pairs.csv`` into a temporary directory.
2. **Plain loop** — a fresh subprocess (``OMP_NUM_THREADS=1`` and ``torch.set_num_threads(1)``)
   calls :func:`tcr_pipeline.trials.run_trial` for the N trials one after the other, writing to
   its own store. Compute = each record's ``seconds`` (the time inside ``run_trial``: prepared-data
   load on the first call, training, evaluation, bundle and record writes); wall = the loop.
3. **Prefect server** — a real ``prefect server start`` subprocess on a free loopback port with
   a temporary ``PREFECT_HOME`` (its start-up is timed and reported, never counted below).
4. **Orchestrated search** — the real :func:`flows.search.search_flow` (``promote=False``,
   ``baseline=False`` unless ``--with-baseline``) with the
   ``local`` profile, ``parallelism`` = workers and ``max_evals`` = N. Its params file searches a
   space with one choice per hyperparameter (``model.kind: [small]``, ``lr: [0.01]``,
   ``epochs: [E]``), so every TPE suggestion is the same trial as the plain loop's. Dask workers
   get one torch thread (``OMP_NUM_THREADS=1``: Dask's nanny sets it, and this script exports it).
   Compute = the store records' ``seconds``; wall = first trial start → last trial finish in the
   store, and also from the start of the Dask cluster, and the whole ``search_flow`` call.
5. **Diagnostics** (``--no-diagnose`` skips them) — zero-work tasks submitted the same way through
   Prefect + Dask and through plain Dask, TPE ask/tell timings, store write/read and
   prepared-data load timings.

To say where the orchestrated run's idle worker time goes, the benchmark process wraps at run time
(nothing in ``flows/`` or ``tcr_pipeline/`` is edited): ``EarlyDaskTaskRunner.client`` (the cluster
is created on its first access unless it started before) and ``__exit__``, ``Task.submit`` (of the
task named ``trial``) and
``SearchDriver.suggest``/``finish``; it reads each trial task run's state history (Pending,
Running, Completed timestamps, taken in the worker) from the Prefect API afterwards.

Run ``python bench/orchestration.py --help`` for the options; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch
import yaml
from rich.console import Console
from rich.table import Table

from tcr_pipeline.config import EvaluateParams, ModelParams, PrepareParams, SearchParams, TrainParams
from tcr_pipeline.files import write_json_atomic
from tcr_pipeline.store import Store, TrialRecord

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RAW = ROOT / "data" / "raw" / "viral_pairs.csv"
DEFAULT_OUT = ROOT / "bench" / "results" / "orchestration.json"
TARGET = 0.92  # issue 15: 3-epoch trials on the 2-core CPU machine
RUN_ID = "bench-orchestration"
LR = 0.01
MODEL_KIND = "small"
THREADS = 1  # torch threads per trial, in the plain loop and in every Dask worker

console = Console(width=None if sys.stdout.isatty() else 170)


# ----------------------------------------------------------------------------- the trials


def trial_settings(epochs: int, device: str) -> dict[str, Any]:
    """The one trial every run repeats: train section, evaluate section, hyperparameters."""
    train = TrainParams(model=ModelParams(kind=MODEL_KIND), lr=LR, epochs=epochs, device=device)
    hyperparams = {"model.kind": MODEL_KIND, "lr": LR, "epochs": epochs}
    # hyperopt's raw values of a one-option hp.choice: index 0 of each
    vals = {key: [0] for key in hyperparams}
    return {
        "train": train.model_dump(mode="json"),
        "evaluate": EvaluateParams().model_dump(mode="json"),
        "hyperparams": hyperparams,
        "vals": vals,
    }


def fixed_space(epochs: int) -> dict[str, Any]:
    """A search space with a single choice per hyperparameter: every suggestion is the same trial."""
    return {"model.kind": {"choice": [MODEL_KIND]}, "lr": {"choice": [LR]}, "epochs": {"choice": [epochs]}}


def write_params_file(
    path: Path, raw: Path, settings: dict[str, Any], trials: int, workers: int, batch_size: int = 1
) -> None:
    epochs = settings["hyperparams"]["epochs"]
    params = {
        "data": {"raw": str(raw)},
        "prepare": PrepareParams().model_dump(mode="json"),
        "train": settings["train"],
        "evaluate": settings["evaluate"],
        "search": {
            "max_evals": trials,
            "parallelism": workers,
            "batch_size": batch_size,
            "seed": 42,
            "n_startup": 5,
            "top_k": 3,
            "cluster": "local",
            "space": fixed_space(epochs),
        },
    }
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def record_row(record: TrialRecord) -> dict[str, Any]:
    return {
        "trial_id": record.trial_id,
        "status": record.status,
        "pid": record.hardware.pid,
        "started": record.started.timestamp(),
        "finished": record.finished.timestamp() if record.finished else None,
        "seconds": record.seconds,
        "train_seconds": record.train_seconds,
        "params": record.params,
        "batch": record.batch,
    }


# ----------------------------------------------------------------------------- statistics


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _p90(values: list[float]) -> float | None:
    return float(np.percentile(values, 90)) if values else None


def efficiency(compute_s: float, wall_s: float, workers: int) -> float:
    return compute_s / (wall_s * workers) if wall_s > 0 else float("nan")


def overhead_ms(compute_s: float, wall_s: float, workers: int, trials: int) -> float:
    """Worker time not spent inside a trial, per trial: (wall × workers − compute) / trials."""
    return 1000.0 * (wall_s * workers - compute_s) / max(trials, 1)


def steady_median(rows: list[dict[str, Any]], key: str = "seconds") -> float | None:
    """Median of ``key`` over the trials that were not the first of their process (no warm-up)."""
    first: dict[int, int] = {}
    for row in sorted(rows, key=lambda r: r["started"]):
        first.setdefault(row["pid"], row["trial_id"])
    firsts = set(first.values())
    return _median([r[key] for r in rows if r["trial_id"] not in firsts and r[key] is not None])


def first_trial_excess(rows: list[dict[str, Any]]) -> dict[str, float]:
    """How much longer each process's first trial took than the steady median (warm-up inside compute)."""
    median = steady_median(rows) or 0.0
    first: dict[int, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["started"]):
        first.setdefault(row["pid"], row)
    return {str(pid): row["seconds"] - median for pid, row in first.items()}


# ----------------------------------------------------------------------------- plain loop


def baseline_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The plain loop, in its own process: ``run_trial`` for each trial, one after the other."""
    torch.set_num_threads(spec["threads"])
    from tcr_pipeline.trials import run_trial

    store = Store(spec["store"])
    train = TrainParams.model_validate(spec["train"])
    evaluate = EvaluateParams.model_validate(spec["evaluate"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall_started = time.time()
    started = time.perf_counter()
    rows = []
    for trial_id in range(spec["trials"]):
        record = run_trial(
            store,
            spec["run_id"],
            trial_id,
            spec["vals"],
            spec["hyperparams"],
            spec["prepared_dir"],
            train,
            evaluate,
        )
        rows.append(record_row(record))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": wall,
        "wall_started": wall_started,
        "cpu_s": (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "pid": os.getpid(),
        "trials": rows,
    }


def run_baseline(work: Path, prepared_dir: Path, settings: dict[str, Any], trials: int) -> dict[str, Any]:
    spec = {
        "store": str(work / "store-loop"),
        "run_id": "plain-loop",
        "prepared_dir": str(prepared_dir),
        "trials": trials,
        "threads": THREADS,
        **settings,
    }
    spec_file, out_file = work / "loop-spec.json", work / "loop-result.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_loop",
        str(spec_file),
        "--out",
        str(out_file),
    ]
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    result = json.loads(out_file.read_text())
    rows = result["trials"]
    compute = sum(r["seconds"] for r in rows)
    window = max(r["finished"] for r in rows) - min(r["started"] for r in rows)
    result.update(
        compute_s=compute,
        train_s=sum(r["train_seconds"] or 0.0 for r in rows),
        window_s=window,
        efficiency=efficiency(compute, result["wall_s"], 1),
        overhead_ms=overhead_ms(compute, result["wall_s"], 1, len(rows)),
        median_trial_s=_median([r["seconds"] for r in rows]),
        steady_median_trial_s=steady_median(rows),
        first_trial_excess_s=first_trial_excess(rows),
        all_ok=all(r["status"] == "ok" for r in rows),
    )
    return result


# ----------------------------------------------------------------------------- Prefect server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrefectServer:
    """``prefect server start`` on a free loopback port, with its own temporary PREFECT_HOME."""

    home: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    startup_s: float = float("nan")

    def start(self, timeout: float = 240.0) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        executable = Path(sys.executable).with_name("prefect")
        base = [str(executable)] if executable.exists() else [sys.executable, "-m", "prefect"]
        command = [*base, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
        env = {
            key: value
            for key, value in os.environ.items()
            if key != "PREFECT_API_URL" and not key.startswith("PREFECT_SERVER_")
        }
        env.update(PREFECT_HOME=str(self.home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        self.home.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited ({self.process.returncode}); see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        self.startup_s = time.perf_counter() - started
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prefect server did not answer within {timeout:.0f} s; see {self.log}")

    def cpu_seconds(self) -> float:
        """CPU time of the server process and its children so far."""
        import psutil

        if self.process is None:
            return float("nan")
        try:
            proc = psutil.Process(self.process.pid)
            total = sum(proc.cpu_times()[:2])
            for child in proc.children(recursive=True):
                total += sum(child.cpu_times()[:2])
            return total
        except psutil.Error:
            return float("nan")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # its own session: only what it started
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


# ----------------------------------------------------------------------------- instrumentation


@dataclass
class Trace:
    """Timestamps (``time.time()``) taken in the benchmark process while a flow runs."""

    cluster: list[tuple[float, float]] = field(default_factory=list)  # EarlyDaskTaskRunner.client, 1st access
    teardown: list[tuple[float, float]] = field(default_factory=list)  # DaskTaskRunner.__exit__
    submits: dict[int, tuple[float, float, str]] = field(default_factory=dict)  # trial -> t0, t1, run id
    keys: dict[int, str] = field(default_factory=dict)  # trial -> Dask key
    suggests: dict[int, tuple[float, float]] = field(default_factory=dict)
    finishes: dict[int, tuple[float, float]] = field(default_factory=dict)
    task_stream: list[dict[str, Any]] = field(default_factory=list)  # Dask's record, taken in the workers


@contextmanager
def instrument(trace: Trace, patch_search: bool = True) -> Iterator[None]:
    """Wrap the task runner's cluster creation and teardown, trial submission and TPE ask/tell."""
    from prefect.tasks import Task
    from prefect_dask import DaskTaskRunner

    from flows.runner import EarlyDaskTaskRunner  # the search's runner: its client starts the cluster
    from tcr_pipeline.search import SearchDriver

    original_client = EarlyDaskTaskRunner.__dict__["client"]
    original_exit = DaskTaskRunner.__exit__
    original_submit = Task.submit
    original_suggest, original_finish = SearchDriver.suggest, SearchDriver.finish

    def client(self: Any) -> Any:
        if self._client:
            return original_client.fget(self)
        started = time.time()
        value = original_client.fget(self)
        trace.cluster.append((started, time.time()))
        with suppress(Exception):  # start the scheduler's task-stream record (a deque append per task)
            value.get_task_stream(count=1)
        return value

    def exit_(self: Any, *args: Any) -> None:
        if self._client:
            with suppress(Exception):
                trace.task_stream = list(self._client.get_task_stream())
        started = time.time()
        try:
            original_exit(self, *args)
        finally:
            trace.teardown.append((started, time.time()))

    def submit(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.time()
        future = original_submit(self, *args, **kwargs)
        if self.name == "trials":  # a batch: its first member stands for the task
            first = int(args[3][0].trial_id)
            trace.submits[first] = (started, time.time(), str(future.task_run_id))
            trace.keys[first] = str(getattr(getattr(future, "wrapped_future", None), "key", ""))
        return future

    def suggest(self: Any) -> Any:
        started = time.time()
        out = original_suggest(self)
        trace.suggests[int(out[0])] = (started, time.time())
        return out

    def finish(self: Any, record: TrialRecord) -> None:
        started = time.time()
        original_finish(self, record)
        trace.finishes[record.trial_id] = (started, time.time())

    EarlyDaskTaskRunner.client = property(client)  # type: ignore[method-assign,assignment]
    DaskTaskRunner.__exit__ = exit_  # type: ignore[method-assign]
    if patch_search:
        Task.submit = submit  # type: ignore[method-assign]
        SearchDriver.suggest = suggest  # type: ignore[method-assign]
        SearchDriver.finish = finish  # type: ignore[method-assign]
    try:
        yield
    finally:
        EarlyDaskTaskRunner.client = original_client  # type: ignore[method-assign]
        DaskTaskRunner.__exit__ = original_exit  # type: ignore[method-assign]
        Task.submit = original_submit  # type: ignore[method-assign]
        SearchDriver.suggest, SearchDriver.finish = original_suggest, original_finish  # type: ignore[method-assign]


def task_run_states(task_run_ids: dict[int, str], timeout: float = 60.0) -> dict[int, dict[str, float]]:
    """Timestamps of each trial task run's Pending, Running and Completed states (from the API).

    Task-run states reach the server as events, recorded asynchronously: wait until every run
    has a final state or ``timeout`` passes.
    """
    from uuid import UUID

    from prefect import get_client

    out: dict[int, dict[str, float]] = {}
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            for trial_id, run_id in task_run_ids.items():
                if trial_id in out and "COMPLETED" in out[trial_id]:
                    continue
                try:
                    states = client.read_task_run_states(UUID(run_id))
                except Exception:  # not recorded yet
                    continue
                stamps: dict[str, float] = {}
                for state in sorted(states, key=lambda s: s.timestamp):
                    stamps.setdefault(state.type.value, state.timestamp.timestamp())
                out[trial_id] = stamps
            complete = all("COMPLETED" in out.get(t, {}) for t in task_run_ids)
            if complete or time.monotonic() > deadline:
                return out
            time.sleep(0.5)


def flow_run_times() -> dict[str, dict[str, Any]]:
    """Start and end of each flow run on the (temporary) server, by flow name (latest run)."""
    from prefect import get_client

    out: dict[str, dict[str, Any]] = {}
    with get_client(sync_client=True) as client:
        flows_by_id = {}
        for run in client.read_flow_runs(limit=50):
            if run.flow_id not in flows_by_id:
                flows_by_id[run.flow_id] = client.read_flow(run.flow_id).name
            name = flows_by_id[run.flow_id]
            out.setdefault(
                name,
                {
                    "start": run.start_time.timestamp() if run.start_time else None,
                    "end": run.end_time.timestamp() if run.end_time else None,
                    "state": run.state.type.value if run.state else None,
                },
            )
    return out


# ----------------------------------------------------------------------------- orchestrated run


def _rusage_cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_orchestrated(
    work: Path,
    prepared_dir: Path,
    params_file: Path,
    trials: int,
    workers: int,
    server: PrefectServer,
    baseline: bool = False,
    batch_size: int = 1,
) -> dict[str, Any]:
    from flows.search import search_flow

    store = Store(work / f"store-flow-batch{batch_size}")
    trace = Trace()
    cpu_self, cpu_children, cpu_server = (
        _rusage_cpu(resource.RUSAGE_SELF),
        _rusage_cpu(resource.RUSAGE_CHILDREN),
        server.cpu_seconds(),
    )
    with instrument(trace):
        flow_started = time.time()
        started = time.perf_counter()
        outcome = search_flow(
            run_id=RUN_ID,
            max_evals=trials,
            parallelism=workers,
            cluster="local",
            store=str(store.root),
            prepared_dir=str(prepared_dir),
            params_file=str(params_file),
            promote=False,
            baseline=baseline,
        )
        flow_wall = time.perf_counter() - started
        flow_ended = time.time()
    cpu = {
        "flow_process_s": _rusage_cpu(resource.RUSAGE_SELF) - cpu_self,
        "dask_workers_s": _rusage_cpu(resource.RUSAGE_CHILDREN) - cpu_children,
        "prefect_server_s": server.cpu_seconds() - cpu_server,
    }
    rows = [record_row(r) for r in store.list_trials(RUN_ID)]
    states = task_run_states({t: s[2] for t, s in trace.submits.items()})
    flows_ = flow_run_times()
    return {
        "outcome": outcome,
        "flow_wall_s": flow_wall,
        "flow_started": flow_started,
        "flow_ended": flow_ended,
        "cpu": cpu,
        "trials": rows,
        "trace": {
            "cluster": trace.cluster,
            "teardown": trace.teardown,
            "submits": {str(k): v for k, v in trace.submits.items()},
            "keys": {str(k): v for k, v in trace.keys.items()},
            "task_stream": [
                {"key": str(t.get("key")), "worker": t.get("worker"), "startstops": t.get("startstops", [])}
                for t in trace.task_stream
            ],
            "suggests": {str(k): v for k, v in trace.suggests.items()},
            "finishes": {str(k): v for k, v in trace.finishes.items()},
        },
        "task_run_states": {str(k): v for k, v in states.items()},
        "flow_runs": flows_,
    }


# events of a `tcr-pipeline search`/`pipeline` log (Prefect's console lines, INFO): name → the
# substrings a line must hold; the first matching line of each counts
COMMAND_EVENTS = {
    "flow_entered": ("Beginning flow run",),
    "prepare_done": ("Task run 'prepare-data", "Finished in state"),
    "search_flow_entered": ("for flow 'search'",),
    "cluster_start": ("Dask cluster",),  # "Creating a new …" (Prefect) or "Starting a …" (early start)
    "run_opened": (" run ", " in "),  # "new run X in STORE" / "resuming run X"
    "baseline_done": ("Task run 'baseline-", "Finished in state"),
    "trials_flow_entered": ("for flow 'search-trials'",),
    "workers_registered": ("Register worker",),
    "client_connected": ("The Dask dashboard is available",),
}
_LOG_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \|")


def command_events(output: str, started: float) -> dict[str, float]:
    """Seconds from ``started`` (epoch) to each of :data:`COMMAND_EVENTS` in a command's log lines
    (``HH:MM:SS.mmm |``, local time of the day the command started)."""
    day = time.mktime((*time.localtime(started)[:3], 0, 0, 0, 0, 0, -1))
    events: dict[str, float] = {}
    for line in output.splitlines():
        match = _LOG_TIME.match(line)
        if not match:
            continue
        h, m, sec, ms = map(int, match.groups())
        at = day + 3600 * h + 60 * m + sec + ms / 1000 - started
        for name, needles in COMMAND_EVENTS.items():
            if name not in events and all(n in line for n in needles):
                if name == "run_opened" and not ("new run" in line or "resuming run" in line):
                    continue
                events[name] = round(at, 3)
    return events


def time_to_first_trial(
    work: Path,
    prepared_dir: Path,
    params_file: Path,
    workers: int,
    server_url: str | None,
    label: str,
    command_name: str = "search",
    checkout: Path | None = None,
) -> dict[str, Any]:
    """``tcr-pipeline search`` (or ``pipeline``) as a user runs it: seconds from the command to its
    first trial starting (the first trial record's ``started``) and to the command's end,
    ``workers`` trials (one batch each), with the times of the events of its log
    (:data:`COMMAND_EVENTS`, Prefect's INFO lines).

    With ``server_url`` the command reuses that Prefect server (``PREFECT_API_URL``); without, it
    starts its own temporary server (a fresh ``PREFECT_HOME``). The search runs its k-mer baseline,
    as the command does. ``pipeline`` prepares the params file's raw data into a directory of its
    own first. ``checkout``: the source tree whose code the command runs (``PYTHONPATH``; default:
    this one).
    """
    store = Store(work / f"store-first-{label}")
    executable = Path(sys.executable).with_name("tcr-pipeline")
    base = [str(executable)] if executable.exists() else [sys.executable, "-m", "tcr_cli"]
    if command_name == "pipeline":
        prepared_dir = work / f"prepared-first-{label}"
    command = [
        *base, command_name, "--run-id", "first", "--store", str(store.root), "--max-evals", str(workers),
        "--parallelism", str(workers), "--prepared", str(prepared_dir), "--params", str(params_file),
        "--seed", "1", *(["--no-promote"] if command_name == "search" else []),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "INFO"  # the events' lines
    env["PREFECT_LOGGING_LEVEL"] = "INFO"
    env["COLUMNS"] = "400"  # one log line per event
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout or ROOT), env.get("PYTHONPATH")]))
    if server_url:
        env["PREFECT_API_URL"] = server_url
    else:
        env["PREFECT_HOME"] = str(work / f"prefect-home-{label}")
    started = time.time()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    ended = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    records = store.list_trials("first")
    first = min(r.started.timestamp() for r in records)
    return {
        "command": command_name,
        "reuses_server": bool(server_url),
        "command_to_first_trial_s": first - started,
        "command_wall_s": ended - started,
        "trials": len(records),
        "events_s": command_events(done.stdout + "\n" + done.stderr, started),
    }


PHASES = {
    # name: (where, start event, end event); events of the trial that freed the worker end in "_prev"
    "engine_completes": (
        "worker: Prefect task engine, run_trial returned → Completed state",
        "finished_prev",
        "completed_prev",
    ),
    "engine_exits": (
        "worker: Prefect engine after Completed → Dask task ends",
        "completed_prev",
        "compute_stop_prev",
    ),
    "result_to_flow": (
        "Dask: worker → scheduler → flow; as_completed wakes, result(), validate",
        "compute_stop_prev",
        "finish_prev",
    ),
    "tpe_and_loop": ("flow: SearchDriver.finish, log line, SearchDriver.suggest", "finish_prev", "submit"),
    "submit_call": (
        "flow: Task.submit (context serialisation, Dask tokenize + pickle)",
        "submit",
        "submitted",
    ),
    "dask_dispatch": ("Dask: client → scheduler → worker, run spec unpickled", "submitted", "compute_start"),
    "engine_start": (
        "worker: Prefect engine, context hydration → task run Pending",
        "compute_start",
        "pending",
    ),
    "pending_to_running": ("worker: Prefect engine Pending → Running", "pending", "running"),
    "task_body": ("worker: Running → run_trial's timer starts", "running", "started"),
}


def trial_events(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per trial: every timestamp known for it (flow process, Dask task stream, Prefect states, store)."""
    trace, states = run["trace"], run["task_run_states"]
    key_to_trial = {key: trial for trial, key in trace.get("keys", {}).items()}
    compute: dict[str, tuple[float, float]] = {}
    for entry in trace.get("task_stream", []):
        trial = key_to_trial.get(entry["key"])
        for startstop in entry["startstops"]:
            if trial is not None and startstop.get("action") == "compute":
                compute[trial] = (startstop["start"], startstop["stop"])
    events: dict[str, dict[str, float]] = {}
    for row in run["trials"]:
        trial = str(row["trial_id"])
        ev: dict[str, float] = {"started": row["started"], "finished": row["finished"]}
        if trial in trace["submits"]:
            ev["submit"], ev["submitted"] = trace["submits"][trial][:2]
        if trial in trace["finishes"]:
            ev["finish"] = trace["finishes"][trial][0]
        if trial in compute:
            ev["compute_start"], ev["compute_stop"] = compute[trial]
        for name, stamp in states.get(trial, {}).items():
            ev[name.lower()] = stamp
        events[trial] = ev
    return events


def analyse(run: dict[str, Any], workers: int) -> dict[str, Any]:
    """Efficiencies, per-trial overheads and where the idle worker time goes."""
    rows = sorted(run["trials"], key=lambda r: r["started"])
    n = len(rows)
    compute = sum(r["seconds"] for r in rows)
    first_start = min(r["started"] for r in rows)
    last_finish = max(r["finished"] for r in rows)
    cluster_start, cluster_ready = run["trace"]["cluster"][0]
    teardown = run["trace"]["teardown"][0] if run["trace"]["teardown"] else (float("nan"),) * 2
    spans = {
        "trials_window": last_finish - first_start,
        "with_cluster_startup": last_finish - cluster_start,
        "whole_flow": run["flow_wall_s"],
    }
    results = {
        name: {
            "wall_s": wall,
            "efficiency": efficiency(compute, wall, workers),
            "overhead_ms_per_trial": overhead_ms(compute, wall, workers, n),
        }
        for name, wall in spans.items()
    }

    # the worker-time budget of [cluster start, last finish] × workers, worker by worker
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_pid.setdefault(row["pid"], []).append(row)
    gaps = [b["started"] - a["finished"] for trs in by_pid.values() for a, b in itertools.pairwise(trs)]
    budget = {
        "workers_seen": len(by_pid),
        "compute_s": compute,
        "lead_in_from_cluster_start_s": sum(trs[0]["started"] - cluster_start for trs in by_pid.values()),
        "lead_in_from_first_trial_s": sum(trs[0]["started"] - first_start for trs in by_pid.values()),
        "between_trials_s": sum(gaps),
        "between_trials_median_ms": 1000 * (_median(gaps) or 0.0),
        "between_trials_p90_ms": 1000 * (_p90(gaps) or 0.0),
        "between_trials_count": len(gaps),
        "tail_imbalance_s": sum(last_finish - trs[-1]["finished"] for trs in by_pid.values()),
        "trials_per_worker": {str(pid): len(trs) for pid, trs in by_pid.items()},
    }

    # a trial submitted after a TPE `finish` was started by the worker that trial freed: split the
    # time from the freeing trial's run_trial return to this trial's run_trial start into phases
    events = trial_events(run)
    record = {str(r["trial_id"]): r for r in rows}
    finishes = sorted((v[0], k) for k, v in run["trace"]["finishes"].items())
    phases: dict[str, list[float]] = {name: [] for name in [*PHASES, "total"]}
    same_worker = 0
    initial: list[dict[str, Any]] = []
    for trial, ev in sorted(events.items(), key=lambda kv: kv[1].get("submit", kv[1]["started"])):
        if "submit" not in ev:
            continue
        earlier = [k for t, k in finishes if t <= ev["submit"]]
        if not earlier:  # one of the first `workers` trials: its lead-in from the cluster start
            steps = ("submit", "submitted", "compute_start", "pending", "running", "started")
            lead = {f"{a}→{b}": ev[b] - ev[a] for a, b in itertools.pairwise(steps) if a in ev and b in ev}
            initial.append(
                {
                    "trial_id": int(trial),
                    "pid": record[trial]["pid"],
                    "cluster_start_to_run_trial_s": ev["started"] - cluster_start,
                    "steps_s": lead,
                }
            )
            continue
        trigger = earlier[-1]
        both = {**ev, **{f"{name}_prev": value for name, value in events[trigger].items()}}
        same_worker += record[trigger]["pid"] == record[trial]["pid"]
        for name, (_, begin, end) in PHASES.items():
            if begin in both and end in both:
                phases[name].append(both[end] - both[begin])
        phases["total"].append(ev["started"] - events[trigger]["finished"])
    phase_summary = {
        name: {
            "median_ms": 1000 * (_median(values) or 0.0),
            "p90_ms": 1000 * (_p90(values) or 0.0),
            "total_s": sum(values),
            "count": len(values),
        }
        for name, values in phases.items()
    }
    suggest_ms = [1000 * (v[1] - v[0]) for v in run["trace"]["suggests"].values()]
    finish_ms = [1000 * (v[1] - v[0]) for v in run["trace"]["finishes"].values()]
    dask_compute = [
        ev["compute_stop"] - ev["compute_start"] - record[t]["seconds"]
        for t, ev in events.items()
        if "compute_start" in ev
    ]
    return {
        "trials": n,
        "all_ok": all(r["status"] == "ok" for r in rows),
        "compute_s": compute,
        "train_s": sum(r["train_seconds"] or 0.0 for r in rows),
        "median_trial_s": _median([r["seconds"] for r in rows]),
        "steady_median_trial_s": steady_median(rows),
        "first_trial_excess_s": first_trial_excess(rows),
        "efficiency": results,
        "cluster_startup_s": cluster_ready - cluster_start,
        "cluster_teardown_s": teardown[1] - teardown[0],
        "flow_start_to_cluster_start_s": cluster_start - run["flow_started"],
        "last_finish_to_flow_end_s": run["flow_ended"] - last_finish,
        "worker_time": budget,
        "turnaround_phases": phase_summary,
        "turnaround_same_worker": same_worker,
        "initial_trials": initial,
        "prefect_engine_in_dask_task_median_ms": 1000 * (_median(dask_compute) or 0.0),
        "tpe_suggest_ms": {"median": _median(suggest_ms), "max": max(suggest_ms, default=None)},
        "tpe_finish_ms": {"median": _median(finish_ms), "max": max(finish_ms, default=None)},
        "task_run_states_complete": sum("COMPLETED" in s for s in run["task_run_states"].values()),
        "task_stream_entries": len(run["trace"].get("task_stream", [])),
    }


# ----------------------------------------------------------------------------- diagnostics


def _noop_plain(i: int) -> dict[str, Any]:
    import os as os_

    import torch as torch_

    return {"i": i, "pid": os_.getpid(), "threads": torch_.get_num_threads()}


def _rolling(
    submit: Callable[[int], Any], wait_one: Callable[[list[Any]], Any], n: int, workers: int
) -> list:
    """Keep ``workers`` tasks in flight, submit the next as soon as one finishes (as search-trials)."""
    pending: dict[Any, tuple[int, float]] = {}
    done: list[dict[str, Any]] = []
    submitted = 0
    while True:
        while len(pending) < workers and submitted < n:
            started = time.time()
            pending[submit(submitted)] = (submitted, started)
            submitted += 1
        if not pending:
            return done
        future = wait_one(list(pending))
        index, started = pending.pop(future)
        value = future.result()
        done.append({**value, "index": index, "round_trip_s": time.time() - started})


def _round_trip_summary(rows: list[dict[str, Any]], workers: int, cluster: tuple[float, float]) -> dict:
    steady = [r["round_trip_s"] for r in rows if r["index"] >= workers]
    return {
        "tasks": len(rows),
        "cluster_startup_s": cluster[1] - cluster[0],
        "first_round_trip_s": [r["round_trip_s"] for r in rows if r["index"] < workers],
        "round_trip_median_ms": 1000 * (_median(steady) or 0.0),
        "round_trip_p90_ms": 1000 * (_p90(steady) or 0.0),
        "worker_torch_threads": sorted({r["threads"] for r in rows}),
        "workers_seen": len({r["pid"] for r in rows}),
    }


def noop_prefect(workers: int, n: int) -> dict[str, Any]:
    """Zero-work tasks through the same path as trials: Prefect task on the ``local`` DaskTaskRunner."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.futures import as_completed

    from flows.runner import make_task_runner

    noop = task(name="noop", cache_policy=NO_CACHE)(_noop_plain)

    @flow(name="bench-noop", task_runner=make_task_runner("local", workers))  # type: ignore[arg-type]
    def noop_flow() -> list[dict[str, Any]]:
        return _rolling(noop.submit, lambda fs: next(iter(as_completed(fs))), n, workers)

    trace = Trace()
    with instrument(trace, patch_search=False):
        rows = noop_flow()
    return _round_trip_summary(rows, workers, trace.cluster[0])


def noop_dask(workers: int, n: int) -> dict[str, Any]:
    """Zero-work tasks on a plain ``distributed.LocalCluster`` with the profile's keywords."""
    from distributed import Client, LocalCluster, as_completed

    from tcr_pipeline.clusters import load_profile, task_runner_kwargs

    kwargs = {**task_runner_kwargs(load_profile("local"))["cluster_kwargs"], "n_workers": workers}
    started = time.time()
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        ready = time.time()

        def wait_one(futures: list[Any]) -> Any:
            return next(iter(as_completed(futures)))

        rows = _rolling(lambda i: client.submit(_noop_plain, i, pure=False), wait_one, n, workers)
    return _round_trip_summary(rows, workers, (started, ready))


def tpe_timings(n: int, workers: int, epochs: int) -> dict[str, Any]:
    """TPE ask/tell in the flow process, for the benchmark's fixed space and the paper's space."""
    from tcr_pipeline.search import SearchDriver

    rng = np.random.default_rng(0)
    out = {}
    for label, space in (("fixed", fixed_space(epochs)), ("paper", None)):
        settings = SearchParams(max_evals=n, parallelism=workers, **({"space": space} if space else {}))
        driver = SearchDriver(settings)
        suggest, finish = [], []
        for _ in range(n):
            started = time.perf_counter()
            trial_id, vals, hyperparams = driver.suggest()
            suggest.append(time.perf_counter() - started)
            record = TrialRecord(
                run_id="tpe",
                trial_id=trial_id,
                attempt="a",
                status="ok",
                objective=float(rng.random()),
                hyperopt_vals=vals,
                params=hyperparams,
            )
            started = time.perf_counter()
            driver.finish(record)
            finish.append(time.perf_counter() - started)
        out[label] = {
            "suggest_median_ms": 1000 * statistics.median(suggest),
            "suggest_last_ms": 1000 * suggest[-1],
            "finish_median_ms": 1000 * statistics.median(finish),
        }
    return out


def prefect_internals(repeats: int = 5) -> dict[str, float]:
    """What Prefect does per task run, timed alone in this process (no flow, no Dask, no load of its own).

    ``Task.submit`` on a DaskTaskRunner serialises the settings context (every Prefect setting);
    the worker re-validates it into a ``SettingsContext`` (pydantic-settings reads the environment
    and dotenv sources again for each nested settings model) and builds Prefect API clients, each
    with a fresh ``ssl.create_default_context()``, before the task run exists.
    """
    import ssl

    from prefect.client.orchestration import get_client
    from prefect.context import SettingsContext

    def median_ms(call: Callable[[], Any]) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times)

    context = SettingsContext.get()
    assert context is not None
    serialised = context.serialize()
    return {
        "serialize_settings_context_ms": median_ms(context.serialize),
        "hydrate_settings_context_ms": median_ms(lambda: SettingsContext(**serialised)),
        "new_sync_client_ms": median_ms(lambda: get_client(sync_client=True)),
        "ssl_default_context_ms": median_ms(ssl.create_default_context),
    }


def store_timings(work: Path, prepared_dir: Path, repeats: int = 20) -> dict[str, float]:
    """One trial record write and read, and loading the prepared data (once per worker process)."""
    from tcr_pipeline.prepare import load_prepared

    store = Store(work / "store-micro")
    record = TrialRecord(
        run_id="micro",
        trial_id=0,
        attempt="a",
        status="ok",
        objective=0.5,
        history=[{"epoch": i, "train_loss": 0.1, "val_loss": 0.1} for i in range(5)],
    )
    writes, reads, loads = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        store.write_trial(record)
        writes.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.finished_trial("micro", 0)
        reads.append(time.perf_counter() - started)
    for _ in range(3):
        started = time.perf_counter()
        load_prepared(prepared_dir)
        loads.append(time.perf_counter() - started)
    return {
        "write_trial_median_ms": 1000 * statistics.median(writes),
        "finished_trial_median_ms": 1000 * statistics.median(reads),
        "load_prepared_median_ms": 1000 * statistics.median(loads),
    }


# ----------------------------------------------------------------------------- machine, output


def machine_info() -> dict[str, Any]:
    """The machine (bench/harness.py) and the versions of the orchestration stack."""
    import dask
    import distributed
    import prefect
    import prefect_dask

    return harness.machine_info(
        torch=torch.__version__,
        prefect=prefect.__version__,
        prefect_dask=getattr(prefect_dask, "__version__", "?"),
        dask=dask.__version__,
        distributed=distributed.__version__,
        dask_nanny_pre_spawn_environ=dask.config.get("distributed.nanny.pre-spawn-environ", {}),
    )


def _f(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None or value != value else format(value, fmt)


def _mark(eff: float) -> str:
    return "[green]yes[/green]" if eff >= TARGET else "[red]no[/red]"


def print_efficiency(loop: dict[str, Any], flow: dict[str, Any], workers: int) -> None:
    table = Table(
        title=f"Orchestration efficiency = Σ trial compute / (wall × workers), target ≥ {TARGET}, "
        f"batch size {flow['batch_size']}"
    )
    for column in (
        "run",
        "workers",
        "trials",
        "Σ compute s",
        "wall s",
        "efficiency",
        "overhead ms/trial",
        f"≥ {TARGET}",
    ):
        table.add_column(column, justify="left" if column == "run" else "right")
    n = flow["trials"]
    table.add_row(
        "plain loop (one process, run_trial × N)",
        "1",
        str(len(loop["trials"])),
        _f(loop["compute_s"]),
        _f(loop["wall_s"]),
        _f(loop["efficiency"], ".3f"),
        _f(loop["overhead_ms"], ".1f"),
        _mark(loop["efficiency"]),
    )
    labels = {
        "trials_window": "search flow: first trial start → last trial finish",
        "with_cluster_startup": "search flow: incl. Dask cluster start-up",
        "whole_flow": "search flow: whole search_flow() call",
    }
    for key, label in labels.items():
        row = flow["efficiency"][key]
        table.add_row(
            label,
            str(workers),
            str(n),
            _f(flow["compute_s"]),
            _f(row["wall_s"]),
            _f(row["efficiency"], ".3f"),
            _f(row["overhead_ms_per_trial"], ".1f"),
            _mark(row["efficiency"]),
        )
    useful = flow["useful_work_efficiency"]
    table.add_row(
        "search flow window, compute at plain-loop speed",
        str(workers),
        str(n),
        _f(loop["compute_s"] * n / max(len(loop["trials"]), 1)),
        _f(flow["efficiency"]["trials_window"]["wall_s"]),
        _f(useful, ".3f"),
        "-",
        _mark(useful),
    )
    console.print(table)


def print_costs(server_s: float, flow: dict[str, Any], loop: dict[str, Any], workers: int) -> None:
    table = Table(title="Fixed costs and where the worker time goes (orchestrated run)")
    table.add_column("item")
    table.add_column("seconds", justify="right")
    table.add_column("note")
    budget = flow["worker_time"]
    span = flow["efficiency"]["with_cluster_startup"]["wall_s"] * workers
    table.add_row("Prefect server start-up", _f(server_s), "not counted in any efficiency")
    table.add_row(
        "flow start → Dask cluster start",
        _f(flow["flow_start_to_cluster_start_s"]),
        "flow run, params, manifest, git/package provenance, subflow run",
    )
    table.add_row(
        "Dask cluster start-up", _f(flow["cluster_startup_s"]), "LocalCluster + client, lazily on 1st submit"
    )
    table.add_row(
        "last trial finish → flow end", _f(flow["last_finish_to_flow_end_s"]), "incl. cluster teardown"
    )
    table.add_row("  of which cluster teardown", _f(flow["cluster_teardown_s"]), "")
    table.add_row(f"worker time, cluster start → last finish (× {workers})", _f(span), "100 %")
    for label, key in (
        ("  in trials (Σ record.seconds)", "compute_s"),
        ("  lead-in: cluster start → each worker's 1st trial", "lead_in_from_cluster_start_s"),
        ("  between trials on a worker", "between_trials_s"),
        ("  tail: worker done before the last trial", "tail_imbalance_s"),
    ):
        value = budget[key]
        table.add_row(label, _f(value), f"{100 * value / span:.1f} %" if span else "-")
    table.add_row(
        "  … lead-in from the first trial start only",
        _f(budget["lead_in_from_first_trial_s"]),
        "(the trials-window variant's lead-in)",
    )
    table.add_row(
        "median trial compute, orchestrated / plain loop",
        f"{_f(flow['steady_median_trial_s'], '.3f')} / {_f(loop['steady_median_trial_s'], '.3f')}",
        f"× {_f(flow['compute_inflation'], '.3f')} (each process's 1st trial excluded)",
    )
    table.add_row(
        "first trial of each process, above the median",
        ", ".join(_f(v) for v in flow["first_trial_excess_s"].values()),
        f"plain loop: {', '.join(_f(v) for v in loop['first_trial_excess_s'].values())} "
        "(warm-up, inside compute)",
    )
    console.print(table)


def print_phases(flow: dict[str, Any]) -> None:
    phases = flow["turnaround_phases"]
    table = Table(
        title=(
            "Between two trials on a worker: the freeing trial's run_trial returns → the next trial's "
            f"run_trial starts ({phases['total']['count']} turnarounds, {flow['turnaround_same_worker']} "
            "on the same worker)"
        )
    )
    for column in ("phase", "where", "median ms", "p90 ms", "Σ s"):
        table.add_column(column, justify="left" if column in ("phase", "where") else "right")
    for name, row in phases.items():
        where = (
            PHASES[name][0] if name in PHASES else "sum: idle worker time per turnaround (measured directly)"
        )
        table.add_row(name, where, _f(row["median_ms"], ".1f"), _f(row["p90_ms"], ".1f"), _f(row["total_s"]))
    console.print(table)
    table = Table(title="Lead-in of the first trials (seconds from the Dask cluster start, and its steps)")
    table.add_column("trial")
    table.add_column("cluster start → run_trial", justify="right")
    table.add_column(
        "steps (submit = Task.submit called, submitted = it returned, compute_start = Dask task starts)"
    )
    for row in flow["initial_trials"]:
        steps = ", ".join(f"{name} {value:.2f}" for name, value in row["steps_s"].items())
        table.add_row(str(row["trial_id"]), _f(row["cluster_start_to_run_trial_s"]), steps)
    console.print(table)


def print_diagnostics(diag: dict[str, Any]) -> None:
    table = Table(title="Diagnostics (same run, not part of any efficiency)")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    table.add_column("note")
    for label, key in (
        ("Prefect task on DaskTaskRunner", "noop_prefect"),
        ("plain Dask client.submit", "noop_dask"),
    ):
        row = diag.get(key)
        if not row:
            continue
        table.add_row(
            f"zero-work task round trip, {label}",
            f"{_f(row['round_trip_median_ms'], '.1f')} ms",
            f"median (p90 {_f(row['round_trip_p90_ms'], '.1f')} ms) of {row['tasks']} tasks, "
            f"first {len(row['first_round_trip_s'])} excluded",
        )
        table.add_row(
            f"  cluster start-up / first tasks ({label})",
            f"{_f(row['cluster_startup_s'])} s",
            "first round trips " + ", ".join(_f(v) for v in row["first_round_trip_s"]) + " s; "
            f"worker torch threads {row['worker_torch_threads']}",
        )
    for label, row in diag.get("tpe", {}).items():
        table.add_row(
            f"TPE suggest ({label} space)",
            f"{_f(row['suggest_median_ms'], '.1f')} ms",
            f"median; last {_f(row['suggest_last_ms'], '.1f')} ms; "
            f"finish {_f(row['finish_median_ms'], '.2f')} ms",
        )
    internals = diag.get("prefect_internals", {})
    for label, key, note in (
        (
            "Prefect: serialise the settings context",
            "serialize_settings_context_ms",
            "flow process, per Task.submit",
        ),
        ("Prefect: hydrate a settings context", "hydrate_settings_context_ms", "worker, per task run"),
        ("Prefect: new sync API client", "new_sync_client_ms", "worker, ≥ 1 per task run"),
        ("  of which ssl.create_default_context", "ssl_default_context_ms", "built even for an http:// API"),
    ):
        if key in internals:
            table.add_row(label, f"{_f(internals[key], '.1f')} ms", note + " (timed alone)")
    store = diag.get("store", {})
    if store:
        table.add_row(
            "Store.write_trial", f"{_f(store['write_trial_median_ms'], '.2f')} ms", "inside record.seconds"
        )
        table.add_row(
            "Store.finished_trial",
            f"{_f(store['finished_trial_median_ms'], '.2f')} ms",
            "before run_trial's timer",
        )
        table.add_row(
            "load_prepared",
            f"{_f(store['load_prepared_median_ms'], '.1f')} ms",
            "once per worker, in its 1st trial",
        )
    console.print(table)


def print_summary(
    loop: dict[str, Any], flows: dict[int, dict[str, Any]], first_trial: dict[str, Any]
) -> None:
    table = Table(title=f"Efficiency by batch size (search.batch_size), same invocation; target ≥ {TARGET}")
    for column in (
        "batch size",
        "tasks",
        "efficiency (trials window)",
        "overhead ms/trial",
        "incl. cluster start-up",
        "median trial s",
        "compute × plain loop",
    ):
        table.add_column(column, justify="right")
    for batch_size, entry in flows.items():
        flow = entry["flow"]
        window = flow["efficiency"]["trials_window"]
        table.add_row(
            str(batch_size),
            str(len(flow["batches"])),
            f"{_f(window['efficiency'], '.3f')} {_mark(window['efficiency'])}",
            _f(window["overhead_ms_per_trial"], ".0f"),
            _f(flow["efficiency"]["with_cluster_startup"]["efficiency"], ".3f"),
            _f(flow["median_trial_s"], ".3f"),
            _f(flow["compute_inflation"], ".2f"),
        )
    console.print(table)
    console.print(f"plain loop: median trial {_f(loop['median_trial_s'], '.3f')} s")
    for label, row in first_trial.items():
        console.print(
            f"tcr-pipeline search ({label.replace('_', ' ')}): command → first trial starts "
            f"{row['command_to_first_trial_s']:.1f} s; whole command {row['command_wall_s']:.1f} s "
            f"for {row['trials']} trials"
        )


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Orchestration efficiency of the search: Σ trial compute / (wall × workers) of the real "
            "search flow (Prefect + Dask local cluster) against a plain Python loop over the same "
            f"trials, with the per-trial overhead in ms; target ≥ {TARGET}."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--trials", type=int, default=32, help="trials in each run (max_evals)")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers = search parallelism")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each (small-model) trial")
    parser.add_argument("--device", default="cpu", help="train.device of the trials")
    parser.add_argument(
        "--batch-sizes",
        default="1,2,4",
        help="search.batch_size of each search-flow run, comma-separated (1 = one trial per task)",
    )
    parser.add_argument(
        "--no-first-trial",
        action="store_true",
        help="skip timing `tcr-pipeline search` from the command to its first trial",
    )
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="raw pair table to prepare")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument(
        "--no-diagnose", action="store_true", help="skip the zero-work task, TPE and store timings"
    )
    parser.add_argument(
        "--show-prefect-logs",
        action="store_true",
        help="keep Prefect's INFO logs on the console (API logging is on either way)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (stores, server log)"
    )
    parser.add_argument(
        "--with-baseline",
        action="store_true",
        help=(
            "let search_flow fit its k-mer logistic-regression baseline before the trials (its "
            "default); off here, since that fit is neither trial compute nor orchestration and "
            "would only lengthen the whole-flow wall time"
        ),
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 8 trials of 1 epoch")
    parser.add_argument("--_loop", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs = 8, 1
    if args.trials < 1 or args.workers < 1 or args.epochs < 1:
        parser.error("--trials, --workers and --epochs must be at least 1")
    try:
        args.batch_sizes = [int(v) for v in args.batch_sizes.split(",") if v.strip()]
    except ValueError:
        parser.error("--batch-sizes: comma-separated integers")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error("--batch-sizes: at least one, each at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._loop:
        write_json_atomic(args.out, baseline_worker(json.loads(Path(args._loop).read_text())))
        return 0

    total_started = time.perf_counter()
    load_before = harness.load_at_start(lambda message: console.print(f"[yellow]{message}[/yellow]"))
    work = Path(tempfile.mkdtemp(prefix="tcr-bench-orch-"))
    server = PrefectServer(home=work / "prefect-home", log=work / "prefect-server.log")
    try:
        from tcr_pipeline.prepare import prepare_dataset

        prepared_dir = work / "prepared"
        prepared = prepare_dataset(args.raw, PrepareParams(), prepared_dir)
        console.log(
            f"prepared {args.raw.name}: {len(prepared.labels):,} rows × "
            f"{prepared.features.shape[1]} features, "
            f"{len(prepared.rows('train')):,} train rows"
        )
        settings = trial_settings(args.epochs, args.device)
        params_files = {}
        for batch_size in args.batch_sizes:
            params_files[batch_size] = work / f"params-batch{batch_size}.yaml"
            write_params_file(
                params_files[batch_size], args.raw, settings, args.trials, args.workers, batch_size
            )
        console.log(
            f"each trial: {MODEL_KIND} model, lr {LR}, {args.epochs} epoch(s), device {args.device}, "
            f"{THREADS} torch thread (OMP_NUM_THREADS={THREADS}) in the plain loop and in every Dask worker"
        )

        console.log(f"plain loop: {args.trials} trials in one process …")
        loop = run_baseline(work, prepared_dir, settings, args.trials)
        console.log(
            f"plain loop: {loop['compute_s']:.1f} s compute in {loop['wall_s']:.1f} s, "
            f"torch threads {loop['torch_threads']}"
        )

        console.log("starting a Prefect server …")
        server.start()
        console.log(f"Prefect server at {server.url} after {server.startup_s:.1f} s")
        # before Prefect is imported: its settings (and the Dask workers') come from the environment
        os.environ.update(
            PREFECT_API_URL=server.url,
            PREFECT_HOME=str(server.home),
            OMP_NUM_THREADS=str(THREADS),
            MKL_NUM_THREADS=str(THREADS),
        )
        if not args.show_prefect_logs:
            os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
        info = machine_info()

        flows: dict[int, dict[str, Any]] = {}
        for batch_size in args.batch_sizes:
            console.log(
                f"search flow: {args.trials} trials, parallelism {args.workers}, batch size {batch_size}, "
                "cluster local …"
            )
            run = run_orchestrated(
                work,
                prepared_dir,
                params_files[batch_size],
                args.trials,
                args.workers,
                server,
                args.with_baseline,
                batch_size,
            )
            flow = analyse(run, args.workers)
            flow["batch_size"] = batch_size
            flow["batches"] = sorted({r["batch"] for r in run["trials"] if r.get("batch")})
            same_trial = all(r["params"] == settings["hyperparams"] for r in run["trials"])
            steady_loop = loop["steady_median_trial_s"]
            flow["compute_inflation"] = (
                flow["steady_median_trial_s"] / steady_loop
                if steady_loop and flow["steady_median_trial_s"]
                else None
            )
            flow["useful_work_efficiency"] = efficiency(
                loop["compute_s"] * flow["trials"] / len(loop["trials"]),
                flow["efficiency"]["trials_window"]["wall_s"],
                args.workers,
            )
            console.log(
                f"search flow, batch size {batch_size}: {flow['compute_s']:.1f} s compute, flow "
                f"{run['flow_wall_s']:.1f} s, {len(flow['batches'])} batches, all ok: {flow['all_ok']}, "
                f"every trial the plain loop's: {same_trial}"
            )
            flows[batch_size] = {"flow": flow, "run": run, "same_trial": same_trial}

        first_trial: dict[str, Any] = {}
        if not args.no_first_trial:
            first_params = params_files[args.batch_sizes[-1]]
            for label, url in (("running_server", server.url), ("temporary_server", None)):
                console.log(f"tcr-pipeline search, {args.workers} trials, command → first trial ({label}) …")
                first_trial[label] = time_to_first_trial(
                    work, prepared_dir, first_params, args.workers, url, label
                )

        diag: dict[str, Any] = {}
        if not args.no_diagnose:
            console.log("diagnostics: zero-work tasks, TPE, store …")
            diag["noop_prefect"] = noop_prefect(args.workers, args.trials)
            diag["noop_dask"] = noop_dask(args.workers, args.trials)
            diag["tpe"] = tpe_timings(args.trials, args.workers, args.epochs)
            diag["store"] = store_timings(work, prepared_dir)
            diag["prefect_internals"] = prefect_internals()
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    shares: dict[str, float] = {"plain_loop": loop["cpu_s"] / loop["wall_s"]}
    for batch_size, entry in flows.items():
        flow, run = entry["flow"], entry["run"]
        print_efficiency(loop, flow, args.workers)
        print_costs(server.startup_s, flow, loop, args.workers)
        print_phases(flow)
        cpu = run["cpu"]
        cores = os.cpu_count() or 1
        console.print(
            f"CPU seconds during the search flow, batch size {batch_size} ({run['flow_wall_s']:.1f} s wall × "
            f"{cores} cores = {run['flow_wall_s'] * cores:.1f} available): Dask workers "
            f"{cpu['dask_workers_s']:.1f}, flow process (flow + Dask scheduler + Prefect client) "
            f"{cpu['flow_process_s']:.1f}, Prefect server {cpu['prefect_server_s']:.1f}"
        )
        shares[f"search_flow_workers_batch{batch_size}"] = cpu["dask_workers_s"] / flow["compute_s"]
    if diag:
        print_diagnostics(diag)
    console.print(
        "CPU share of the trials: "
        + ", ".join(f"{name} {100 * share:.0f} %" for name, share in shares.items())
        + " (plain loop: of a core over its wall time; flows: Dask workers' CPU seconds / Σ trial seconds)"
    )
    if min(shares.values()) < 0.8:
        console.print(
            "[yellow]warning: the trials got well under one core each — other processes competed for the "
            "CPU, compute times are inflated and the efficiencies are not representative of an idle "
            "machine[/yellow]"
        )
    print_summary(loop, flows, first_trial)

    results: dict[str, Any] = {
        "benchmark": "orchestration",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created_unix": time.time(),
        "machine": info,
        "settings": {
            "trials": args.trials,
            "workers": args.workers,
            "epochs": args.epochs,
            "device": args.device,
            "batch_sizes": args.batch_sizes,
            "model": MODEL_KIND,
            "lr": LR,
            "torch_threads_per_trial": THREADS,
            "cluster_profile": "local",
            "promote": False,
            "baseline": args.with_baseline,
            "prepare": PrepareParams().model_dump(mode="json"),
            "raw": str(args.raw),
            "search_space": fixed_space(args.epochs),
            "prefect_console_logs": args.show_prefect_logs,
            "quick": args.quick,
            "target": TARGET,
        },
        "prefect_server_startup_s": server.startup_s,
        "plain_loop": loop,
        "search_flows": {
            str(batch_size): {
                **entry["flow"],
                "raw": entry["run"],
                "every_trial_same_as_plain_loop": entry["same_trial"],
            }
            for batch_size, entry in flows.items()
        },
        "command_to_first_trial": first_trial,
        "diagnostics": diag,
        "cpu_share": shares,
    }
    harness.write_results(args.out, results, load_before, total_started, console.print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
