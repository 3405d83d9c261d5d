"""Evidence in one command: does the default search beat the k-mer baseline on receptors it never saw?

TCR-grouped K-fold **outer** cross-validation of the whole default search (params.yaml: encoding,
search space, ``max_evals``, ``train.folds``, objective, promotion rule) against the k-mer
logistic-regression baseline. For each outer fold the fold's receptors are the test set; the
rest is split into training and validation by TCR exactly as ``prepare`` does, the search runs
its ``max_evals`` trials on it (the library's TPE driver and ``run_trial``, sequentially — the
same trials a ``tcr-pipeline search`` would run, without Prefect and Dask) and its best trial
is the model the search would promote; the baseline is fitted on the same training + validation
receptors. Every receptor is scored exactly once, by models that never saw it.

Reported: the mean per-epitope ROC-AUC of each outer fold for both, and over the pooled
out-of-fold scores; per-epitope AUCs with 95 % bootstrap intervals (resampling TCRs); the
difference search − baseline with its paired 95 % interval (``tcr_pipeline.comparison``). Results
go to ``bench/results/quality.json`` and a plot to ``bench/results/quality.png``.

    python bench/quality.py --jobs 2                # the default budget, two outer folds at a time
    python bench/quality.py --max-evals 16          # another budget
    python bench/quality.py --quick --out /tmp/q.json   # smoke test: 2 folds, 2 trials, 2 epochs
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tcr_pipeline.baseline import fit_baseline
from tcr_pipeline.comparison import paired_bootstrap, weighted_epitope_aucs
from tcr_pipeline.config import Params, resolve_params
from tcr_pipeline.data import load_pairs, tcr_keys
from tcr_pipeline.files import sha256_file, write_json_atomic
from tcr_pipeline.metrics import compute_metrics, epitope_aucs
from tcr_pipeline.prepare import encode_pairs, write_prepared
from tcr_pipeline.promotion import register_top
from tcr_pipeline.search import SearchDriver
from tcr_pipeline.splits import _sizes
from tcr_pipeline.store import RunManifest, Store
from tcr_pipeline.trials import run_trial

ROOT = Path(__file__).resolve().parents[1]


def outer_folds(frame: pd.DataFrame, folds: int, seed: int) -> np.ndarray:
    """Outer fold of each row, grouped by αβ TCR."""
    _, groups = np.unique(tcr_keys(frame).to_numpy(), return_inverse=True)
    order = np.random.default_rng(seed).permutation(groups.max() + 1)
    fold_of_group = np.empty(len(order), dtype=np.int64)
    fold_of_group[order] = np.arange(len(order)) % folds
    return fold_of_group[groups]


def inner_split(
    frame: pd.DataFrame, test: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> np.ndarray:
    """0 train / 1 validation among the non-test receptors (prepare's proportions), 2 for test."""
    keys = tcr_keys(frame).to_numpy()
    rest = np.unique(keys[~test])
    share = fractions[1] / (fractions[0] + fractions[1])
    n_val = _sizes(len(rest), (1 - share, share, 0.0))[1] if share else 0
    validation = set(np.random.default_rng(seed).permutation(rest)[:n_val])
    split = np.where(test, 2, np.where(np.isin(keys, list(validation)), 1, 0))
    return split.astype(np.int8)


def run_search(prepared_dir: Path, params: Params, store: Store, run_id: str) -> dict[str, Any]:
    """The default search's trials, sequentially; returns the best trial's record and bundle path."""
    store.write_manifest(
        RunManifest(
            run_id=run_id,
            max_evals=params.search.max_evals,
            parallelism=1,
            objective=params.evaluate.objective,
        )
    )
    driver = SearchDriver(params.search)
    started = time.perf_counter()
    for _ in range(params.search.max_evals):
        trial_id, vals, hyperparams = driver.suggest()
        record = run_trial(
            store, run_id, trial_id, vals, hyperparams, prepared_dir, params.train, params.evaluate
        )
        driver.finish(record)
        shown = f"{record.objective:.4f}" if record.objective is not None else record.error
        print(f"    trial {trial_id}: {hyperparams.get('model.kind')} objective {shown}", flush=True)
    best = register_top(store, run_id, 1, params.evaluate.objective)
    if not best:
        raise SystemExit(f"{run_id}: no trial succeeded")
    return {"entry": best[0], "seconds": time.perf_counter() - started}


def per_epitope_intervals(
    labels: np.ndarray,
    scores: np.ndarray,
    epitopes: np.ndarray,
    groups: np.ndarray,
    resamples: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Per-epitope AUC with a 95 % TCR-bootstrap interval and its number of positives."""
    unique, group_of_row = np.unique(groups, return_inverse=True)
    counts = np.random.default_rng(seed).multinomial(
        len(unique), np.full(len(unique), 1 / len(unique)), resamples
    )
    weights = counts[:, group_of_row]
    out = {}
    for epitope in np.unique(epitopes):
        rows = epitopes == epitope
        auc = compute_metrics(labels[rows], scores[rows])["roc_auc"]
        boot = weighted_epitope_aucs(labels[rows], scores[rows], epitopes[rows], weights[:, rows])
        boot = boot[np.isfinite(boot)]
        low, high = np.percentile(boot, [2.5, 97.5]) if len(boot) else (np.nan, np.nan)
        out[str(epitope)] = {
            "auc": auc,
            "low": float(low),
            "high": float(high),
            "positives": int(labels[rows].sum()),
        }
    return out


def plot(path: Path, result: dict[str, Any]) -> None:
    """Per-epitope AUC of both with their intervals, and the per-fold means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    search, baseline = result["per_epitope"]["search"], result["per_epitope"]["baseline"]
    names = sorted(search, key=lambda e: -search[e]["positives"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(len(names))
    for offset, (label, values, color) in enumerate(
        (("default search", search, "#1f77b4"), ("k-mer baseline", baseline, "#ff7f0e"))
    ):
        auc = np.array([values[n]["auc"] for n in names])
        errors = np.array(
            [[values[n]["auc"] - values[n]["low"], values[n]["high"] - values[n]["auc"]] for n in names]
        ).T
        left.errorbar(
            x + (offset - 0.5) * 0.3, auc, yerr=errors, fmt="o", color=color, label=label, capsize=3
        )
    left.axhline(0.5, color="grey", lw=0.8, ls="--")
    left.set_xticks(x, [f"{n}\n({search[n]['positives']}+)" for n in names], rotation=60, fontsize=7)
    left.set_ylabel("ROC-AUC on unseen receptors (95 % CI)")
    left.set_title("Per epitope, pooled outer-fold scores (positives in brackets)")
    left.legend(loc="lower left")
    folds = result["folds"]
    right.plot(range(1, len(folds) + 1), [f["search"] for f in folds], "o-", label="default search")
    right.plot(range(1, len(folds) + 1), [f["baseline"] for f in folds], "s-", label="k-mer baseline")
    right.set_xticks(range(1, len(folds) + 1))
    right.set_xlabel("outer fold")
    right.set_ylabel("mean per-epitope ROC-AUC")
    right.set_title("Per outer fold")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default=str(ROOT / "params.yaml"), help="settings (default: %(default)s)")
    parser.add_argument("--data", default=None, help="raw pair table (default: the params' data.raw)")
    parser.add_argument("--folds", type=int, default=5, help="outer folds (default: %(default)s)")
    parser.add_argument("--max-evals", type=int, default=None, help="trials per search (default: params)")
    parser.add_argument("--seed", type=int, default=0, help="outer-fold seed (default: %(default)s)")
    parser.add_argument(
        "--search-seed", type=int, default=42, help="each search's TPE seed (default: %(default)s)"
    )
    parser.add_argument(
        "--resamples", type=int, default=1000, help="bootstrap resamples (default: %(default)s)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="outer folds at once (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="2 folds, 2 trials of 2 epochs: a smoke test")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality.json"), help="result JSON")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {
        "search.max_evals": args.max_evals,
        "search.seed": args.search_seed,
        "train.device": "cpu",
    }
    if args.quick:
        args.folds = 2
        overrides |= {"search.max_evals": 2, "search.n_startup": 2, "train.epochs": 2}
    params = resolve_params(args.params, overrides)
    if args.quick:  # every branch of the space trains for 2 epochs too
        space = params.search.model_copy(deep=True).space
        for dim in space.values():
            for sub in (dim.branches or {}).values():
                sub.pop("epochs", None)
        params = params.model_copy(update={"search": params.search.model_copy(update={"space": space})})
    raw = Path(args.data or params.data.raw)
    frame = load_pairs(raw)
    digest = sha256_file(raw)
    fold = outer_folds(frame, args.folds, args.seed)
    scores = {"search": np.full(len(frame), np.nan), "baseline": np.full(len(frame), np.nan)}
    folds: list[dict[str, Any]] = []
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        jobs = [
            pool.submit(run_outer_fold, k, args.folds, fold == k, frame, raw, digest, params, Path(tmp))
            for k in range(args.folds)
        ]
        for job in as_completed(jobs):
            row, test, found = job.result()
            for name in scores:
                scores[name][test] = found[name]
            folds.append(row)
            folds.sort(key=lambda r: r["fold"])
            write_json_atomic(Path(args.out).with_suffix(".partial.json"), {"folds": folds})
            print(
                f"outer fold {row['fold'] + 1}: best {row['best']['params']} → test mean epitope AUC "
                f"{row['search']:.4f}, baseline {row['baseline']:.4f}",
                flush=True,
            )
    labels, epitopes = frame["Label"].to_numpy(), frame["Epitope"].to_numpy()
    groups = np.unique(tcr_keys(frame).to_numpy(), return_inverse=True)[1]
    interval = paired_bootstrap(
        labels, scores["search"], scores["baseline"], epitopes, groups, args.resamples
    )
    pooled = {name: compute_metrics(labels, s, epitopes) for name, s in scores.items()}
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "load_average_end": os.getloadavg(),
        "seconds": time.perf_counter() - started,
        "data_sha256": digest,
        "settings": {
            "outer_folds": args.folds,
            "max_evals": params.search.max_evals,
            "train_folds": params.train.folds,
            "objective": params.evaluate.objective,
            "space": {k: v.model_dump(exclude_none=True) for k, v in params.search.space.items()},
        },
        "folds": folds,
        "pooled": {
            name: {k: m[k] for k in ("mean_epitope_auc", "roc_auc", "average_precision")}
            for name, m in pooled.items()
        },
        "difference": interval.as_dict(),
        "per_epitope": {
            name: per_epitope_intervals(labels, s, epitopes, groups, args.resamples, args.seed)
            for name, s in scores.items()
        },
        "per_epitope_point": {name: epitope_aucs(m) for name, m in pooled.items()},
    }
    out = Path(args.out)
    write_json_atomic(out, result)
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    plot(out.with_suffix(".png"), result)
    print(
        f"pooled out-of-fold mean per-epitope AUC: search {interval.a:.4f}, baseline {interval.b:.4f}; "
        f"difference {interval.delta:+.4f} [95 % CI {interval.low:+.4f}, {interval.high:+.4f}]"
    )
    print(f"wrote {out} and {out.with_suffix('.png')}")


def run_outer_fold(
    k: int,
    n_folds: int,
    test: np.ndarray,
    frame: pd.DataFrame,
    raw: Path,
    digest: str,
    params: Params,
    tmp: Path,
) -> tuple[dict[str, Any], np.ndarray, dict[str, np.ndarray]]:
    """One outer fold: the search on the other receptors, the baseline on them, both scored on these."""
    torch.set_num_threads(1)
    split = inner_split(frame, test, params.prepare.fractions, params.prepare.seed + k)
    prepared = encode_pairs(frame, params.prepare, digest)
    prepared = dataclasses.replace(prepared, split=torch.from_numpy(split))
    prepared_dir = tmp / f"prepared-{k}"
    prepared.meta["raw"] = str(raw)
    write_prepared(prepared, prepared_dir)
    print(f"outer fold {k + 1}/{n_folds}: {int(test.sum())} test rows", flush=True)
    store = Store(tmp / f"store-{k}")
    found = run_search(prepared_dir, params, store, f"outer-{k}")
    entry = found["entry"]
    scores = {
        "search": _score(store.root / entry.path, frame[test]),
        "baseline": fit_baseline(frame[~test]).score(frame[test]),
    }
    labels, epitopes = frame["Label"].to_numpy()[test], frame["Epitope"].to_numpy()[test]
    row = {
        "fold": k,
        "test_rows": int(test.sum()),
        "best": {"model_id": entry.model_id, "params": entry.params, "objective": entry.objective},
        "search_seconds": found["seconds"],
        **{name: compute_metrics(labels, s, epitopes)["mean_epitope_auc"] for name, s in scores.items()},
    }
    return row, test, scores


def _score(model_dir: Path, rows: pd.DataFrame) -> np.ndarray:
    from tcr_pipeline.bundle import load_bundle, predict_frame

    result = predict_frame(load_bundle(model_dir), rows.drop(columns=["Label"]))
    return pd.to_numeric(result["score"], errors="coerce").fillna(0.0).to_numpy()


if __name__ == "__main__":
    main()
