#!/usr/bin/env python
"""Bigger data: generate, prepare and train on 1M–4M synthetic pairs; time and peak memory.

For each of ``--sizes`` rows, three phases, each in its own subprocess so that its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) is its own:

1. generate: :func:`tcr_pipeline.synthetic.write_pairs` writes the CSV (``--epitopes`` epitopes,
   ≈ 7 % positives, per-epitope motifs; see the module) into a temporary directory;
2. prepare: :func:`tcr_pipeline.prepare.prepare_dataset` with the default parameters (aligned
   encoding, TCR split) — reading, validating, encoding and writing the tensors;
3. train: :func:`tcr_pipeline.prepare.load_prepared` then
   :func:`tcr_pipeline.training.train_model` for ``--epochs`` epochs of ``--model`` on
   ``--device``: seconds per epoch (training + validation), training rows/s, peak RSS and, on
   CUDA, peak allocated GPU memory.

Run ``python bench/bigdata.py --help``; results in ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from train_throughput import machine_info  # the bench scripts' one description of the machine

from tcr_pipeline.config import EvaluateParams, ModelParams, PrepareParams, TrainParams
from tcr_pipeline.files import write_json_atomic
from tcr_pipeline.training import resolve_device

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "bigdata.json"
DEFAULT_SIZES = (1_000_000, 4_000_000)
QUICK_SIZES = (50_000,)
MIB = 1024 * 1024
console = Console(width=None if sys.stdout.isatty() else 170)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase(spec: dict[str, Any]) -> dict[str, Any]:
    """One phase of one size, in this (fresh) process."""
    from tcr_pipeline.prepare import load_prepared, prepare_dataset
    from tcr_pipeline.synthetic import Options, write_pairs
    from tcr_pipeline.training import train_model

    work = Path(spec["work"])
    csv, prepared_dir = work / "pairs.csv", work / "prepared"
    started = time.perf_counter()
    out: dict[str, Any] = {}
    if spec["phase"] == "generate":
        write_pairs(csv, Options(rows=spec["rows"], seed=spec["seed"], epitopes=spec["epitopes"]))
        out["csv_mib"] = csv.stat().st_size / MIB
    elif spec["phase"] == "prepare":
        prepared = prepare_dataset(csv, PrepareParams(), prepared_dir)
        out["feature_dtype"] = str(prepared.features.dtype).removeprefix("torch.")
        out["features_mib"] = prepared.features.numel() * prepared.features.element_size() / MIB
        out["epitopes"] = len(prepared.epitope_names)
        out["positive_rate"] = float(prepared.labels.mean())
    else:
        device = resolve_device(spec["device"])
        if device.type == "cuda":
            torch.zeros(1, device=device)
        prepared = load_prepared(prepared_dir)
        out["load_s"] = time.perf_counter() - started
        params = TrainParams(
            model=ModelParams(kind=spec["model"]), epochs=spec["epochs"], device=spec["device"]
        )
        result = train_model(prepared, params, EvaluateParams())
        n_train = len(prepared.rows("train"))
        out["n_train"] = n_train
        out["epoch_s"] = [r["seconds"] for r in result.history]
        out["train_rows_per_s"] = [r["rows_per_second"] for r in result.history]
        out["val_mean_epitope_auc"] = result.history[-1]["val_mean_epitope_auc"]
        if device.type == "cuda":
            out["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    out["seconds"] = time.perf_counter() - started
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


def run_phase(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`phase` in a fresh interpreter."""
    script, threads = str(Path(__file__).resolve()), f"--threads={torch.get_num_threads()}"
    proc = subprocess.run(
        [sys.executable, script, threads, "--_phase", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"phase {spec['phase']} at {spec['rows']:,} rows failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_results(rows: list[dict[str, Any]]) -> None:
    table = Table(
        title="Bigger data: synthetic pairs generated, prepared and trained (one subprocess per phase)"
    )
    columns = ("rows", "epitopes", "dtype", "generate s", "peak MiB", "prepare s", "peak MiB")
    columns += ("epoch s (incl. val)", "rows/s", "train peak MiB", "peak CUDA MiB", "val AUC")
    for column in columns:
        table.add_column(column, justify="right")
    for r in rows:
        g, p, t = r["generate"], r["prepare"], r["train"]
        table.add_row(
            f"{r['rows']:,}",
            f"{p['epitopes']:,}",
            p["feature_dtype"],
            f"{g['seconds']:.0f}",
            f"{g['peak_rss_mib']:,.0f}",
            f"{p['seconds']:.0f}",
            f"{p['peak_rss_mib']:,.0f}",
            f"{min(t['epoch_s']):.0f}",
            f"{max(t['train_rows_per_s']):,.0f}",
            f"{t['peak_rss_mib']:,.0f}",
            f"{t['peak_cuda_allocated_mib']:,.0f}" if "peak_cuda_allocated_mib" in t else "—",
            f"{t['val_mean_epitope_auc']:.3f}",
        )
    console.print(table)


def _int_list(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Generate, prepare and train on synthetic pairs of growing size: time and peak memory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", type=_int_list, default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--model", default="medium", help="model kind trained")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--epitopes", type=int, default=1000, help="distinct epitopes generated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument(
        "--work", type=Path, default=None, help="directory for the CSVs (default: a temporary one)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--quick", action="store_true", help=f"smoke test: sizes {QUICK_SIZES}")
    parser.add_argument("--_phase", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = list(QUICK_SIZES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    if args._phase:  # a phase's own process (run_phase)
        print(json.dumps(phase(json.loads(args._phase))))
        return 0
    started, load_before = time.perf_counter(), os.getloadavg()
    info = machine_info(resolve_device(args.device))
    console.print(f"[bold]machine[/bold]: {info}; load average {load_before}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tcr-bigdata-", dir=args.work) as tmp:
        for size in args.sizes:
            work = Path(tmp) / str(size)
            work.mkdir()
            spec = {"rows": size, "seed": args.seed, "epitopes": args.epitopes, "work": str(work)}
            spec |= {"model": args.model, "epochs": args.epochs, "device": args.device}
            row: dict[str, Any] = {"rows": size, "load_average_start": os.getloadavg()}
            for name in ("generate", "prepare", "train"):
                row[name] = run_phase({**spec, "phase": name})
                seconds, peak = row[name]["seconds"], row[name]["peak_rss_mib"]
                console.log(f"{size:,} rows, {name}: {seconds:.0f} s, peak RSS {peak:,.0f} MiB")
            row["load_average_end"] = os.getloadavg()
            rows.append(row)
            for path in work.rglob("*"):  # the 4M CSV is ≈ 0.5 GB: free the disk before the next size
                if path.is_file():
                    path.unlink()
    print_results(rows)
    results = {
        "benchmark": "bigdata",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created_unix": time.time(),
        "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k not in ("_phase", "out", "work")}
        | {"torch_threads": torch.get_num_threads(), "prepare": PrepareParams().model_dump(mode="json")},
        "sizes": rows,
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "total_seconds": time.perf_counter() - started,
    }
    write_json_atomic(args.out, results)
    console.print(f"wrote {args.out} in {results['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
