#!/usr/bin/env python
"""Training throughput: our loop against the paper's straightforward DataLoader loop.

Part 1 (loops) trains the same model on the same prepared data (the shipped
``data/raw/viral_pairs.csv``, default prepare params, prepared in a temporary directory) with

* ours: :func:`tcr_pipeline.training.train_model`, which keeps the training split as one tensor
  and indexes whole batches from it;
* straightforward: the source paper's loop — ``TensorDataset`` + ``DataLoader(batch_size,
  sampler=WeightedRandomSampler(weights, num_samples=len(train), replacement=True))``, iterating
  batches with ``BCEWithLogitsLoss`` and ``Adam``.

Both loops evaluate on the validation split after every epoch exactly as ``train_model`` does
(the same ``predict_scores`` + BCE + ``compute_metrics`` calls), so an epoch is identical work in
both. The epoch is additionally split into its training and its validation phase:
``train_model`` is not modified; this script wraps ``tcr_pipeline.training.predict_scores`` at
run time to timestamp the start of validation. Every run is preceded by one warm-up run of
each loop; repeats alternate the order of the loops; the median over repeats is reported.

Part 2 (scaling) trains on the default (aligned) encoding of the shipped data resampled to
several sizes (rows drawn with replacement, a random 80/10/10 split), each in a fresh subprocess
so that its peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) is its own, with

* ours: this checkout's ``train_model`` on compact codes (uint8), batches indexed from the whole
  matrix through row indices;
* baseline: ``train_model`` of an earlier revision (``--baseline-rev``, default the commit before
  compact features), extracted with ``git archive`` into a temporary directory and imported from
  there: float32 codes, the training and validation splits copied out of the matrix;
* straightforward (optional): the paper's DataLoader loop on float32 codes.

Run ``python bench/train_throughput.py --help`` for the options; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from tcr_pipeline import training
from tcr_pipeline.config import EvaluateParams, ModelParams, PrepareParams, TrainParams
from tcr_pipeline.metrics import compute_metrics
from tcr_pipeline.models import build_model
from tcr_pipeline.prepare import Prepared, prepare_dataset

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RAW = ROOT / "data" / "raw" / "viral_pairs.csv"
DEFAULT_OUT = ROOT / "bench" / "results" / "train_throughput.json"
DEFAULT_SIZES = (125_000, 500_000, 1_000_000, 4_000_000)
QUICK_SIZES = (10_000, 20_000)
LOOPS = ("ours", "straightforward")
SCALING_LOOPS = ("ours", "baseline", "straightforward")
BASELINE_REV = "06f2827"  # the last commit before compact features: float32 codes copied per split
TARGET_BYTES_PER_ROW = 300  # peak RSS slope of ours (least squares over --sizes)
MIB = 1024 * 1024
TARGET_SPEEDUP = 3.0  # the project's target: ours ≥ 3× the straightforward loop (training rows/s)

# a log file or pipe gets wide tables rather than rich's 80-column default
console = Console(width=None if sys.stdout.isatty() else 170)


# ----------------------------------------------------------------------------- timing helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def phase_clock(device: torch.device) -> Iterator[tuple[list[float], Callable[[int, dict], None]]]:
    """Split ``train_model``'s epochs into training and validation seconds, without editing it.

    ``train_model`` calls ``predict_scores(model, x_val)`` once per epoch right after the last
    optimiser step, and ``on_epoch`` right after its record (whose ``seconds`` spans the whole
    epoch). The wrapped ``predict_scores`` timestamps the start of validation (after a device
    synchronisation, so queued GPU work is counted as training), the callback the end.
    Yields ``(phases, on_epoch)``; ``phases`` gets ``train_s, val_s`` appended per epoch.
    """
    original = training.predict_scores
    marks: list[float] = []
    phases: list[float] = []

    def timed_predict(*args: Any, **kwargs: Any) -> torch.Tensor:  # any version's signature
        _sync(device)
        marks.append(time.perf_counter())
        return original(*args, **kwargs)

    def on_epoch(epoch: int, record: dict[str, float]) -> None:
        ended = time.perf_counter()
        started = ended - record["seconds"]
        val_started = marks[-1]
        phases.extend((val_started - started, ended - val_started))

    training.predict_scores = timed_predict  # type: ignore[assignment]
    try:
        yield phases, on_epoch
    finally:
        training.predict_scores = original  # type: ignore[assignment]


def run_ours(prepared: Prepared, params: TrainParams, evaluate: EvaluateParams) -> dict[str, Any]:
    """Train with ``train_model``; per-epoch training/validation seconds and the final val metrics."""
    device = training.resolve_device(params.device)
    with phase_clock(device) as (phases, on_epoch):
        result = training.train_model(prepared, params, evaluate, on_epoch=on_epoch)
    return {
        "train_s": phases[0::2],
        "val_s": phases[1::2],
        "train_loss": [r["train_loss"] for r in result.history],
        "val_roc_auc": result.history[-1]["val_roc_auc"],
    }


def run_straightforward(prepared: Prepared, params: TrainParams, evaluate: EvaluateParams) -> dict[str, Any]:
    """The paper's loop: TensorDataset + DataLoader(WeightedRandomSampler), BCEWithLogitsLoss, Adam.

    Model, seed, optimiser, learning rate, batch size and the class-balanced weights are those of
    ``train_model``; after each epoch it runs ``train_model``'s validation verbatim.
    """
    device = training.resolve_device(params.device)
    torch.manual_seed(params.seed)
    train_rows, val_rows = prepared.rows("train"), prepared.rows("val")
    dataset = TensorDataset(prepared.features[train_rows], prepared.labels[train_rows])
    weights = training.balanced_weights(prepared.labels[train_rows])
    sampler = WeightedRandomSampler(
        weights,
        num_samples=len(dataset),
        replacement=True,
        generator=torch.Generator().manual_seed(params.seed),
    )
    loader = DataLoader(dataset, batch_size=params.batch_size, sampler=sampler)
    x_val = prepared.features[val_rows].to(device)
    y_val = prepared.labels[val_rows]
    val_epitopes = prepared.epitopes_of(val_rows)

    spec = prepared.encoder.input_spec() if prepared.encoder is not None else None
    model = build_model(prepared.features.shape[1], params.model, spec).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    out: dict[str, Any] = {"train_s": [], "val_s": [], "train_loss": []}
    for _ in range(params.epochs):
        started = time.perf_counter()
        model.train()
        running, seen = 0.0, 0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimiser.zero_grad()
            loss = loss_fn(model(xb).squeeze(1), yb)
            loss.backward()
            optimiser.step()
            running += loss.item() * len(xb)
            seen += len(xb)
        _sync(device)
        val_started = time.perf_counter()
        # train_model's per-epoch validation, verbatim
        scores = training.predict_scores(model, x_val)
        float(nn.functional.binary_cross_entropy(scores.clamp(1e-7, 1 - 1e-7), y_val))
        metrics = compute_metrics(y_val.numpy(), scores.numpy(), val_epitopes, evaluate.threshold)
        ended = time.perf_counter()
        out["train_s"].append(val_started - started)
        out["val_s"].append(ended - val_started)
        out["train_loss"].append(running / max(seen, 1))
    out["val_roc_auc"] = metrics["roc_auc"]
    return out


RUNNERS: dict[str, Callable[[Prepared, TrainParams, EvaluateParams], dict[str, Any]]] = {
    "ours": run_ours,
    "straightforward": run_straightforward,
}


# ----------------------------------------------------------------------------- part 1: loops


def bench_data_path(prepared: Prepared, device: str, repeats: int) -> dict[str, dict[str, float]]:
    """Seconds per epoch to produce the batches alone (no model), for both loops.

    ours: ``train_model``'s sampling and indexing (multinomial order, rows of the whole matrix);
    straightforward: iterating the paper's DataLoader and moving each batch to the device.
    """
    dev = training.resolve_device(device)
    params = TrainParams(device=device)
    train_rows = prepared.rows("train")
    n_train = len(train_rows)
    x_all, y_all, train_index = prepared.features.to(dev), prepared.labels.to(dev), train_rows.to(dev)
    weights = training.balanced_weights(prepared.labels[train_rows])
    generator = torch.Generator().manual_seed(params.seed)
    dataset = TensorDataset(prepared.features[train_rows], prepared.labels[train_rows])
    sampler = WeightedRandomSampler(weights, num_samples=n_train, replacement=True, generator=generator)
    loader = DataLoader(dataset, batch_size=params.batch_size, sampler=sampler)

    def ours() -> None:
        order = torch.multinomial(weights, n_train, replacement=True, generator=generator).to(dev)
        for start in range(0, n_train, params.batch_size):
            rows = train_index[order[start : start + params.batch_size]]
            _ = x_all[rows], y_all[rows]

    def straightforward() -> None:
        for xb, yb in loader:
            _ = xb.to(dev), yb.to(dev)

    out = {}
    for name, epoch in (("ours", ours), ("straightforward", straightforward)):
        epoch()  # warm-up
        seconds = []
        for _ in range(max(repeats, 3)):
            started = time.perf_counter()
            epoch()
            _sync(dev)
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        out[name] = {
            "s_per_epoch": median,
            "us_per_row": median / n_train * 1e6,
            "rows_per_s": n_train / median,
        }
    return out


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bench_loops(
    prepared: Prepared, models: list[str], device: str, epochs: int, repeats: int
) -> list[dict[str, Any]]:
    """Throughput of both loops for each model kind (median over ``repeats``, after a warm-up)."""
    evaluate = EvaluateParams()
    n_train = len(prepared.rows("train"))
    rows: list[dict[str, Any]] = []
    for kind in models:
        params = TrainParams(model=ModelParams(kind=kind), epochs=epochs, device=device)
        warmup = params.model_copy(update={"epochs": 1})
        for loop in LOOPS:
            RUNNERS[loop](prepared, warmup, EvaluateParams())
        runs: dict[str, list[dict[str, Any]]] = {loop: [] for loop in LOOPS}
        for repeat in range(repeats):
            order = LOOPS if repeat % 2 == 0 else LOOPS[::-1]
            for loop in order:
                runs[loop].append(RUNNERS[loop](prepared, params, evaluate))
            console.log(
                f"{kind} repeat {repeat + 1}/{repeats}: "
                + ", ".join(f"{loop} train {sum(runs[loop][-1]['train_s']):.3f}s" for loop in LOOPS)
            )
        for loop in LOOPS:
            train_rps = [n_train * epochs / sum(r["train_s"]) for r in runs[loop]]
            epoch_rps = [n_train * epochs / (sum(r["train_s"]) + sum(r["val_s"])) for r in runs[loop]]
            rows.append(
                {
                    "model": kind,
                    "loop": loop,
                    "n_train": n_train,
                    "epochs": epochs,
                    "repeats": repeats,
                    "train_rows_per_s": _summary(train_rps),
                    "epoch_rows_per_s": _summary(epoch_rps),
                    "train_s_per_epoch": statistics.median(
                        [statistics.median(r["train_s"]) for r in runs[loop]]
                    ),
                    "val_s_per_epoch": statistics.median([statistics.median(r["val_s"]) for r in runs[loop]]),
                    "final_train_loss": statistics.median([r["train_loss"][-1] for r in runs[loop]]),
                    "final_val_roc_auc": statistics.median([r["val_roc_auc"] for r in runs[loop]]),
                }
            )
    return rows


def speedups(loop_rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """ours / straightforward per model: training phase only, and whole epochs with validation."""
    by_key = {(r["model"], r["loop"]): r for r in loop_rows}
    out: dict[str, dict[str, float]] = {}
    for model in dict.fromkeys(r["model"] for r in loop_rows):
        ours, base = by_key[(model, "ours")], by_key[(model, "straightforward")]
        out[model] = {
            "train_only": ours["train_rows_per_s"]["median"] / base["train_rows_per_s"]["median"],
            "epoch_with_validation": ours["epoch_rows_per_s"]["median"] / base["epoch_rows_per_s"]["median"],
        }
    return out


# ----------------------------------------------------------------------------- part 2: scaling


def _rss_now_mib() -> float:
    """Current resident set size (VmRSS) of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _peak_rss_mib() -> float:
    """Peak resident set size of this process so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resampled_prepared(raw: Path, rows: int, seed: int = 0) -> Prepared:
    """The shipped data prepared (default params: aligned codes) and resampled to ``rows`` rows.

    Rows are drawn with replacement (≈ 7 % positives as in the data) and get a random 80/10/10
    split; the features keep the dtype this version's ``prepare`` gives them.
    """
    with tempfile.TemporaryDirectory(prefix="tcr-bench-") as tmp:
        base = prepare_dataset(raw, PrepareParams(), tmp)
    pick = torch.from_numpy(np.random.default_rng(seed).integers(0, len(base.labels), size=rows))
    split = np.random.default_rng(seed + 1).choice(3, size=rows, p=PrepareParams().fractions)
    prepared = Prepared(
        features=base.features[pick],
        labels=base.labels[pick],
        split=torch.from_numpy(split.astype(np.int8)),
        epitope=base.epitope[pick],
        epitope_names=base.epitope_names,
        encoder=base.encoder,
        meta={**base.meta, "rows": rows},
    )
    del pick, base
    return prepared


def _tensor_bytes(prepared: Prepared) -> int:
    tensors = (prepared.features, prepared.labels, prepared.split, prepared.epitope)
    return sum(t.numel() * t.element_size() for t in tensors)


def scaling_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One scaling measurement, run in its own process (see ``--_worker``).

    ``loop`` baseline runs ``train_model`` as ``ours`` does: the parent put the baseline
    revision's ``tcr_pipeline`` first on this process's path.
    """
    device = training.resolve_device(spec["device"])
    if device.type == "cuda":
        torch.zeros(1, device=device)  # initialise the CUDA context before the baseline RSS
    rss_start, peak_start = _rss_now_mib(), _peak_rss_mib()
    prepared = resampled_prepared(Path(spec["raw"]), spec["rows"])
    if spec["loop"] == "straightforward":  # the paper's loop on the paper's float32 features
        prepared = dataclasses.replace(prepared, features=prepared.features.float())
    gc.collect()
    rss_data = _rss_now_mib()
    peak_data = _peak_rss_mib()
    params = TrainParams(model=ModelParams(kind=spec["model"]), epochs=spec["epochs"], device=spec["device"])
    runner = RUNNERS["straightforward" if spec["loop"] == "straightforward" else "ours"]
    result = runner(prepared, params, EvaluateParams())
    n_train = len(prepared.rows("train"))
    out = {
        **spec,
        "n_train": n_train,
        "n_val": len(prepared.rows("val")),
        "feature_dtype": str(prepared.features.dtype).removeprefix("torch."),
        "train_s_per_epoch": statistics.median(result["train_s"]),
        "val_s_per_epoch": statistics.median(result["val_s"]),
        "train_rows_per_s": n_train / statistics.median(result["train_s"]),
        "features_mib": prepared.features.numel() * prepared.features.element_size() / MIB,
        "data_bytes_per_row": _tensor_bytes(prepared) / spec["rows"],
        "rss_start_mib": rss_start,
        "peak_rss_start_mib": peak_start,
        "rss_after_data_mib": rss_data,
        "peak_rss_building_data_mib": peak_data,
        "peak_rss_mib": _peak_rss_mib(),
    }
    out["training_bytes_per_row"] = (out["peak_rss_mib"] - rss_data) * MIB / spec["rows"]
    if device.type == "cuda":
        out["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    return out


def baseline_checkout(rev: str, into: Path) -> Path:
    """``tcr_pipeline/`` of git revision ``rev`` of this repository, extracted under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "tcr_pipeline"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def bench_scaling(
    sizes: list[int], loops: list[str], model: str, device: str, epochs: int, raw: Path, baseline_rev: str
) -> list[dict[str, Any]]:
    """Run :func:`scaling_worker` in a fresh interpreter per (size, loop)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="tcr-baseline-") as tmp:
        # no sizes (part 1 only): no baseline to extract, and no git checkout needed
        baseline = baseline_checkout(baseline_rev, Path(tmp)) if "baseline" in loops and sizes else None
        for size in sizes:
            for loop in loops:
                spec = {"rows": size, "loop": loop, "model": model, "device": device, "epochs": epochs}
                spec["raw"] = str(raw)
                env = dict(os.environ)
                if loop == "baseline":
                    assert baseline is not None
                    env["PYTHONPATH"] = os.pathsep.join([str(baseline), env.get("PYTHONPATH", "")])
                    spec["revision"] = baseline_rev
                started = time.perf_counter()
                proc = subprocess.run(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        f"--threads={torch.get_num_threads()}",
                        "--_worker",
                        json.dumps(spec),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                    env=env,
                )
                if proc.returncode != 0:
                    raise RuntimeError(f"scaling worker {spec} failed:\n{proc.stderr[-4000:]}")
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row["wall_s"] = time.perf_counter() - started
                console.log(
                    f"scaling {size:,} rows, {loop}: {row['train_s_per_epoch']:.2f} s/epoch, "
                    f"peak RSS {row['peak_rss_mib']:,.0f} MiB"
                )
                rows.append(row)
    return rows


def linear_fit(rows: list[dict[str, Any]], loop: str) -> dict[str, float] | None:
    """Least-squares fit of peak RSS (MiB) against rows: slope in bytes/row, intercept, R²."""
    points = [(r["rows"], r["peak_rss_mib"]) for r in rows if r["loop"] == loop]
    if len(points) < 2:
        return None
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - (residual**2).sum() / total if total > 0 else 1.0
    return {"bytes_per_row": slope * MIB, "intercept_mib": float(intercept), "r2": float(r2)}


# ----------------------------------------------------------------------------- machine, output


def machine_info(device: torch.device) -> dict[str, Any]:
    """The machine (bench/harness.py), versions and the device measured on."""
    info = harness.machine_info(
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        numpy=np.__version__,
        device=str(device),
    )
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def print_loops(rows: list[dict[str, Any]], ratios: dict[str, dict[str, float]]) -> None:
    table = Table(title="Part 1 — training loops on the prepared shipped data (median of repeats)")
    for column in ("model", "loop", "train rows/s", "min–max", "train s/epoch", "val s/epoch"):
        table.add_column(column, justify="right" if column not in ("model", "loop") else "left")
    for column in ("rows/s incl. val", "final loss", "val AUC", "speed-up train", "speed-up epoch"):
        table.add_column(column, justify="right")
    for r in rows:
        ratio = ratios[r["model"]]
        ours = r["loop"] == "ours"
        table.add_row(
            r["model"],
            r["loop"],
            f"{r['train_rows_per_s']['median']:,.0f}",
            f"{r['train_rows_per_s']['min']:,.0f}–{r['train_rows_per_s']['max']:,.0f}",
            f"{r['train_s_per_epoch']:.4f}",
            f"{r['val_s_per_epoch']:.4f}",
            f"{r['epoch_rows_per_s']['median']:,.0f}",
            f"{r['final_train_loss']:.4f}",
            f"{r['final_val_roc_auc']:.3f}",
            f"{ratio['train_only']:.2f}x" if ours else "",
            f"{ratio['epoch_with_validation']:.2f}x" if ours else "",
        )
    console.print(table)


def print_data_path(data_path: dict[str, dict[str, float]], loop_rows: list[dict[str, Any]]) -> None:
    """Batches alone, and what that leaves for the model: why the speed-up is what it is."""
    table = Table(title="Part 1b — producing the batches alone (no model), per epoch")
    for column in ("loop", "s/epoch", "µs/row", "rows/s"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    for name, d in data_path.items():
        table.add_row(name, f"{d['s_per_epoch']:.4f}", f"{d['us_per_row']:.2f}", f"{d['rows_per_s']:,.0f}")
    console.print(table)
    for r in loop_rows:
        if r["loop"] == "ours":
            per_row = 1e6 / r["train_rows_per_s"]["median"]
            model_us = per_row - data_path["ours"]["us_per_row"]
            ceiling = (model_us + data_path["straightforward"]["us_per_row"]) / (
                model_us + data_path["ours"]["us_per_row"]
            )
            console.print(
                f"{r['model']}: {per_row:.1f} µs/row in our training phase, of which ≈{model_us:.1f} µs "
                f"are the model (forward, backward, Adam); replacing the DataLoader alone can give "
                f"at most ≈{ceiling:.2f}x on this device"
            )


def print_scaling(rows: list[dict[str, Any]], fits: dict[str, dict[str, float] | None]) -> None:
    cuda = any("peak_cuda_allocated_mib" in r for r in rows)
    table = Table(
        title="Part 2 — scaling on the resampled shipped data, aligned codes (one subprocess per row)"
    )
    columns = ["rows", "loop", "dtype", "train rows", "train s/epoch", "train rows/s", "val s/epoch"]
    columns += ["features MiB", "data B/row", "RSS start MiB", "RSS after data", "peak RSS MiB"]
    columns += ["peak − start", "training B/row"]
    columns += ["peak CUDA MiB"] if cuda else []
    for column in columns:
        table.add_column(column, justify="left" if column == "loop" else "right")
    for r in rows:
        cells = [
            f"{r['rows']:,}",
            r["loop"],
            r.get("feature_dtype", ""),
            f"{r['n_train']:,}",
            f"{r['train_s_per_epoch']:.2f}",
            f"{r['train_rows_per_s']:,.0f}",
            f"{r['val_s_per_epoch']:.2f}",
            f"{r['features_mib']:,.0f}",
            f"{r.get('data_bytes_per_row', math.nan):,.0f}",
            f"{r['rss_start_mib']:,.0f}",
            f"{r['rss_after_data_mib']:,.0f}",
            f"{r['peak_rss_mib']:,.0f}",
            f"{r['peak_rss_mib'] - r['rss_start_mib']:,.0f}",
            f"{r.get('training_bytes_per_row', math.nan):,.0f}",
        ]
        if cuda:
            cells.append(f"{r.get('peak_cuda_allocated_mib', math.nan):,.0f}")
        table.add_row(*cells)
    console.print(table)
    for loop, fit in fits.items():
        if fit is not None:
            console.print(
                f"peak RSS ≈ {fit['intercept_mib']:,.0f} MiB + {fit['bytes_per_row']:,.0f} bytes/row "
                f"({loop}, least squares, R² = {fit['r2']:.4f})"
            )
    ours = fits.get("ours")
    if ours is not None:
        met = ours["bytes_per_row"] <= TARGET_BYTES_PER_ROW
        console.print(
            f"ours: {ours['bytes_per_row']:,.0f} bytes/row; target ≤ {TARGET_BYTES_PER_ROW}: "
            + ("[green]met[/green]" if met else "[red]missed[/red]")
        )
    for size, ratio in scaling_speed(rows).items():
        console.print(f"{size:,} rows: ours / baseline training rows/s = {ratio:.2f}x")


def scaling_speed(rows: list[dict[str, Any]]) -> dict[int, float]:
    """Training rows/s of ours over the baseline revision's, per size measured with both."""
    by_key = {(r["rows"], r["loop"]): r["train_rows_per_s"] for r in rows}
    return {
        size: by_key[(size, "ours")] / by_key[(size, "baseline")]
        for size, loop in by_key
        if loop == "ours" and (size, "baseline") in by_key
    }


# ----------------------------------------------------------------------------- CLI


def _int_list(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part.strip()]


def _str_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark tcr_pipeline.training.train_model against the paper's DataLoader loop "
            "(rows/s per epoch, same model, data and epochs), then its time per epoch and peak "
            "memory on the shipped data resampled to growing sizes, against an earlier revision."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per run in part 1")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per loop and model in part 1")
    parser.add_argument(
        "--models", type=_str_list, default="small,medium", help="model kinds, part 1 (empty: skip part 1)"
    )
    parser.add_argument(
        "--sizes",
        type=_int_list,
        default=",".join(map(str, DEFAULT_SIZES)),
        help="comma-separated row counts for part 2 (empty string: skip part 2)",
    )
    parser.add_argument("--scaling-model", default="medium", help="model kind for part 2")
    parser.add_argument("--scaling-epochs", type=int, default=1, help="epochs per run in part 2")
    parser.add_argument(
        "--scaling-loops",
        type=_str_list,
        default="ours,baseline",
        help=f"loops measured in part 2, of {', '.join(SCALING_LOOPS)}",
    )
    parser.add_argument(
        "--baseline-rev",
        default=BASELINE_REV,
        help="git revision whose tcr_pipeline/ is part 2's baseline (extracted with git archive)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=(
            "torch CPU threads (also passed to the part-2 subprocesses); unset: torch's own choice. "
            "On a shared machine use 1: with other busy processes, torch's OpenMP threads wait on "
            "each other and every small op can be an order of magnitude slower"
        ),
    )
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="raw pair table to prepare")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: 1 epoch, 1 repeat, sizes {','.join(map(str, QUICK_SIZES))}",
    )
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats, args.sizes = 1, 1, list(QUICK_SIZES)
    unknown = {*args.models, args.scaling_model} - {"small", "medium", "large"}
    if unknown:
        parser.error(f"unknown model kind(s): {', '.join(sorted(unknown))}")
    if set(args.scaling_loops) - set(SCALING_LOOPS):
        parser.error(f"--scaling-loops: choose from {', '.join(SCALING_LOOPS)}")
    if args.epochs < 1 or args.repeats < 1 or args.scaling_epochs < 1:
        parser.error("--epochs, --repeats and --scaling-epochs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._worker:
        print(json.dumps(scaling_worker(json.loads(args._worker))))
        return 0

    started = time.perf_counter()
    load_before = harness.load_at_start(lambda message: console.print(f"[yellow]{message}[/yellow]"))
    device = training.resolve_device(args.device)
    info = machine_info(device)
    console.print(f"[bold]machine[/bold]: {info}")

    with tempfile.TemporaryDirectory(prefix="tcr-bench-") as tmp:
        prepared = prepare_dataset(args.raw, PrepareParams(encoding="onehot"), tmp)
    feature_dim = int(prepared.features.shape[1])
    ones_per_row = round(float((prepared.features != 0).sum(1).float().median()))
    console.log(
        f"prepared {args.raw.name}: {len(prepared.labels):,} rows × {feature_dim} features "
        f"({ones_per_row} non-zero per row), {len(prepared.rows('train')):,} train rows"
    )

    loop_rows = bench_loops(prepared, args.models, str(device), args.epochs, args.repeats)
    ratios = speedups(loop_rows)
    data_path = bench_data_path(prepared, str(device), args.repeats) if args.models else {}
    scaling_rows = bench_scaling(
        args.sizes,
        args.scaling_loops,
        args.scaling_model,
        str(device),
        args.scaling_epochs,
        args.raw,
        args.baseline_rev,
    )
    fits = {loop: linear_fit(scaling_rows, loop) for loop in args.scaling_loops}

    if loop_rows:
        print_loops(loop_rows, ratios)
        print_data_path(data_path, loop_rows)
    for model, ratio in ratios.items():
        met = ratio["train_only"] >= TARGET_SPEEDUP
        console.print(
            f"{model}: ours / straightforward = {ratio['train_only']:.2f}x (training phase), "
            f"{ratio['epoch_with_validation']:.2f}x (whole epochs incl. validation); "
            f"target ≥ {TARGET_SPEEDUP:.0f}x (training phase): "
            + ("[green]met[/green]" if met else "[red]missed[/red]")
        )
    if scaling_rows:
        print_scaling(scaling_rows, fits)

    results = {
        "benchmark": "train_throughput",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created_unix": time.time(),
        "machine": info,
        "settings": {
            "device": str(device),
            "epochs": args.epochs,
            "repeats": args.repeats,
            "models": args.models,
            "batch_size": TrainParams().batch_size,
            "prepare": PrepareParams().model_dump(mode="json"),
            "raw": str(args.raw),
            "feature_dim": feature_dim,
            "scaling_sizes": args.sizes,
            "scaling_model": args.scaling_model,
            "scaling_epochs": args.scaling_epochs,
            "scaling_loops": args.scaling_loops,
            "baseline_rev": args.baseline_rev,
            "quick": args.quick,
            "torch_threads": torch.get_num_threads(),
        },
        "loops": loop_rows,
        "speedup_ours_over_straightforward": ratios,
        "target": {
            "speedup_train_only": TARGET_SPEEDUP,
            "met": {model: ratio["train_only"] >= TARGET_SPEEDUP for model, ratio in ratios.items()},
        },
        "data_path_only": data_path,
        "scaling": scaling_rows,
        "scaling_peak_rss_fit": fits,
        "scaling_speed_ours_over_baseline": scaling_speed(scaling_rows),
        "scaling_target": {
            "bytes_per_row": TARGET_BYTES_PER_ROW,
            "met": fits["ours"]["bytes_per_row"] <= TARGET_BYTES_PER_ROW if fits.get("ours") else None,
        },
    }
    harness.write_results(args.out, results, load_before, started, console.print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
