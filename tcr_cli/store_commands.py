"""What is in a result store: ``runs``, ``best`` and ``store check``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from tcr_cli.options import StoreOption, console, existing_store, metrics_table, out
from tcr_pipeline.errors import InputError
from tcr_pipeline.metrics import always_negative
from tcr_pipeline.store import RegistryEntry, Store, check_store, mark_stale, summarize_run


def runs(store: StoreOption = None) -> None:
    """List the search runs in the store: status, progress, best objective."""
    result_store = existing_store(store)
    table = Table(title=f"runs in {result_store.root}")
    for column in ("run", "status", "trials", "failed", "best", "started", "finished", "data"):
        table.add_column(column)
    for manifest in result_store.list_runs():
        summary = summarize_run(manifest, result_store.list_trials(manifest.run_id))
        table.add_row(
            manifest.run_id,
            manifest.status,
            f"{summary.done}/{manifest.max_evals}",
            str(summary.failed),
            f"{summary.best:.4f}" if summary.best is not None else "-",
            f"{manifest.started:%Y-%m-%d %H:%M}",
            f"{manifest.finished:%H:%M}" if manifest.finished else "-",
            manifest.data_sha256[:12],
        )
    out.print(table)
    damage = check_store(result_store)
    if damage:
        console.print(
            f"{len(damage)} damaged record(s) or stale run(s), skipped: tcr-pipeline store check --store "
            f"{result_store.root}",
            markup=False,
            soft_wrap=True,
        )


def best(store: StoreOption = None) -> None:
    """Show the current best (promoted) model: hyperparameters, metrics, data version, history."""
    result_store = Store.from_env(store)
    registry = result_store.load_registry()
    entry = registry.current_entry
    if entry is None:
        raise InputError(f"{result_store.root}: no promoted model yet (run `tcr-pipeline search`)")
    out.print(f"current best: {entry.model_id}  ({entry.objective_name} {entry.objective:.4f})", markup=False)
    _print_against_baseline(result_store, entry)
    out.print(f"  hyperparameters: {json.dumps(entry.params)}", markup=False)
    out.print(
        f"  data sha256 {entry.data_sha256[:12]}  dvc md5 {entry.dvc_md5}  git {entry.git_commit}",
        markup=False,
    )
    out.print(f"  path: {result_store.root / entry.path}", markup=False)
    for promotion in registry.history:
        out.print(
            f"  {promotion.promoted:%Y-%m-%d %H:%M} {promotion.model_id} replaced {promotion.replaced}: "
            f"{promotion.reason}",
            markup=False,
        )
    kept = [c for c in registry.comparisons if not c.promoted][-3:]
    for comparison in kept:
        out.print(
            f"  {comparison.decided:%Y-%m-%d %H:%M} kept {comparison.current} over {comparison.candidate}: "
            f"{comparison.reason}",
            markup=False,
        )


def _print_against_baseline(result_store: Store, entry: RegistryEntry) -> None:
    """The model's validation and test metrics next to its run's baseline and always-negative."""
    columns = {"val": entry.val_metrics, "test": entry.test_metrics}
    baseline = result_store.load_baseline(entry.run_id)
    if baseline is not None:
        columns["baseline test"] = baseline.get("test", {})
    columns["always negative"] = always_negative(entry.test_metrics)
    out.print(metrics_table("current best (val: out-of-fold when train.folds > 1)", columns))
    if baseline is not None and "mean_epitope_auc" in baseline.get("test", {}):
        delta = (
            entry.test_metrics.get("mean_epitope_auc", float("nan")) - baseline["test"]["mean_epitope_auc"]
        )
        verdict = "beats" if delta > 0 else "does not beat"
        out.print(
            f"  test mean per-epitope AUC {verdict} the run's k-mer baseline by {delta:+.4f} "
            "(one small test split: see the README's cross-validated comparison for the noise)",
            markup=False,
        )


def store_check(
    store: StoreOption = None,
    mark: Annotated[
        bool, typer.Option("--mark", help="Record stale `running` runs as `interrupted` (resumable).")
    ] = False,
) -> None:
    """List damaged records and stale runs (`running`, but their process on this host is gone).

    Exit status 0 when there is nothing to report, 1 otherwise (after --mark: 1 only for damage
    that marking does not fix). Damaged records are skipped by every reader; a damaged trial is
    run again when its run is resumed.
    """
    result_store = existing_store(store)
    left = 0
    for damage in check_store(result_store):
        if mark and damage.stale and damage.run_id:
            mark_stale(result_store, damage.run_id)
            out.print(f"{damage} → marked interrupted", markup=False, highlight=False, soft_wrap=True)
            continue
        out.print(str(damage), markup=False, highlight=False, soft_wrap=True)
        left += 1
    console.print(f"{result_store.root}: {left or 'no'} problem(s) left", markup=False)
    raise typer.Exit(1 if left else 0)
