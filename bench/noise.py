"""How noisy is one trial's objective, and how many folds make it trustworthy? (``train.folds``)

A search ranks trials by their validation objective (mean per-epitope ROC-AUC). On the shipped
data the validation split holds ~64 positives over 14 epitopes, so which receptors happen to
land in it moves the objective as much as the hyperparameters do. This study trains one fixed
configuration ``--repeats`` times, each time on a different random TCR-grouped draw of which
receptors validate (K = 1: a fresh train/validation split of the same 8:1 size; K > 1: the K
folds of ``train.fold_seed = r``), and reports the spread (standard deviation) of the objective
per K next to the time a trial takes. The test split is never touched.

    python bench/noise.py                  # ≈ 10 min on 2 cores
    python bench/noise.py --quick --out /tmp/noise.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tcr_pipeline.config import PrepareParams, resolve_params
from tcr_pipeline.files import write_json_atomic
from tcr_pipeline.metrics import objective_value
from tcr_pipeline.prepare import Prepared, prepare_dataset
from tcr_pipeline.training import train_model, validation_metrics


def redraw_validation(prepared: Prepared, seed: int) -> Prepared:
    """The same data with train and validation re-drawn by TCR (same sizes), test untouched."""
    assert prepared.groups is not None
    pooled = torch.cat([prepared.rows("train"), prepared.rows("val")])
    groups = prepared.groups[pooled].numpy()
    unique = np.unique(groups)
    n_val = len(np.unique(prepared.groups[prepared.rows("val")].numpy()))
    chosen = np.random.default_rng(seed).choice(unique, size=n_val, replace=False)
    split = prepared.split.clone()
    split[pooled] = torch.from_numpy(np.where(np.isin(groups, chosen), 1, 0).astype(split.numpy().dtype))
    return dataclasses.replace(prepared, split=split)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--params", default="params.yaml", help="train/evaluate settings (default: %(default)s)"
    )
    parser.add_argument("--data", default=None, help="raw pair table (default: params' data.raw)")
    parser.add_argument("--folds", default="1,3,5", help="values of K to compare (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=8, help="draws per K (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="2 draws, K = 1,3, 3 epochs: a smoke test")
    parser.add_argument(
        "--out", default="bench/results/noise.json", help="result JSON (default: %(default)s)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = resolve_params(args.params)
    ks = [int(k) for k in args.folds.split(",")]
    repeats = args.repeats
    train = params.train.model_copy(update={"device": "cpu"})
    if args.quick:
        ks, repeats, train = [1, 3], 2, train.model_copy(update={"epochs": 3})
    raw = args.data or str(params.data.raw)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_dataset(raw, params.prepare.model_copy(update={"encoding": "aligned"}), tmp)
    results: dict[str, Any] = {}
    print(f"{'K':>3} {'mean':>8} {'sd':>8} {'min':>8} {'max':>8} {'s/trial':>8}")
    for k in ks:
        values, seconds = [], []
        for r in range(repeats):
            data = redraw_validation(prepared, r) if k == 1 else prepared
            started = time.perf_counter()
            result = train_model(data, train.model_copy(update={"folds": k, "fold_seed": r}), params.evaluate)
            seconds.append(time.perf_counter() - started)
            values.append(
                objective_value(params.evaluate.objective, validation_metrics(result, data, params.evaluate))
            )
        results[str(k)] = {
            "values": values,
            "mean": statistics.mean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else float("nan"),
            "seconds_per_trial": statistics.mean(seconds),
        }
        row = results[str(k)]
        print(
            f"{k:>3} {row['mean']:8.4f} {row['sd']:8.4f} {min(values):8.4f} {max(values):8.4f} "
            f"{row['seconds_per_trial']:8.1f}",
            flush=True,
        )
    write_json_atomic(
        args.out,
        {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "torch": torch.__version__,
            },
            "load_average": os.getloadavg(),
            "objective": params.evaluate.objective,
            "train": train.model_dump(mode="json"),
            "prepare": PrepareParams.model_validate(params.prepare.model_dump()).model_dump(mode="json"),
            "results": results,
        },
    )
    print(f"wrote {args.out}")
    json.dumps(results)


if __name__ == "__main__":
    main()
