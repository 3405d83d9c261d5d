"""``search`` and ``pipeline``: Prefect flows on a Dask cluster, checked before anything starts,
watched with a progress bar, recorded as ``interrupted`` when stopped."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from tcr_cli import interruption
from tcr_cli.options import (
    DataOption,
    ParamsOption,
    StoreOption,
    command_params,
    flow_params_file,
    out,
    progress_bar,
)
from tcr_cli.prefect_server import prefect_server
from tcr_pipeline.config import Params
from tcr_pipeline.data import load_pairs
from tcr_pipeline.errors import InputError
from tcr_pipeline.files import check_output_files, check_output_target
from tcr_pipeline.store import Store, best_objective, check_resume_budget, check_run_id, new_run_id, now

MaxEvalsOption = Annotated[
    int | None, typer.Option(help="Trials in the run, resumed ones included (default: search.max_evals).")
]
ParallelismOption = Annotated[int | None, typer.Option(help="Trials in flight at once.")]
ClusterOption = Annotated[str | None, typer.Option(help="Cluster profile: local, slurm-local, slurm-gpu …")]
RunIdOption = Annotated[str | None, typer.Option(help="Resume this run, or name a new one.")]
ObjectiveOption = Annotated[
    str | None,
    typer.Option(help="paper, mean_epitope_auc, roc_auc, average_precision (default: evaluate.objective)."),
]
ForceOption = Annotated[bool, typer.Option(help="Promote even if not better than the current model.")]
SeedOption = Annotated[
    int | None,
    typer.Option(help="The run's seed, to repeat a run (default: a new one per run, kept in its manifest)."),
]


def search(
    max_evals: MaxEvalsOption = None,
    parallelism: ParallelismOption = None,
    cluster: ClusterOption = None,
    store: StoreOption = None,
    run_id: RunIdOption = None,
    prepared_dir: Annotated[Path, typer.Option("--prepared", help="Output of `prepare`.")] = Path(
        "data/prepared"
    ),
    params_file: ParamsOption = None,
    objective: ObjectiveOption = None,
    promote: Annotated[bool, typer.Option("--promote/--no-promote", help="Register and promote.")] = True,
    seed: SeedOption = None,
    force: ForceOption = False,
) -> None:
    """Hyperparameter search (hyperopt TPE) as a Prefect flow on a Dask cluster; resumable by --run-id."""
    from flows.search import search_flow

    # read (and check) the configuration and the inputs here, before a Prefect server starts
    params = command_params(params_file, _search_overrides(max_evals, parallelism, cluster, objective))
    result_store, run_id = _checked_run(params, cluster, store, run_id, prepared_dir, prepared=True)
    with _watched_run(result_store, run_id, params.search.max_evals):
        outcome = search_flow(
            promote=promote,
            **_flow_arguments(
                result_store, run_id, prepared_dir, params_file, max_evals, parallelism, cluster, objective
            ),
            seed=seed,
            force=force,
        )
        interruption.work_done()  # the run is complete: a late Ctrl-C does not undo that
    out.print_json(json.dumps(outcome, default=str))


def pipeline(
    data: DataOption = None,
    max_evals: MaxEvalsOption = None,
    parallelism: ParallelismOption = None,
    cluster: ClusterOption = None,
    store: StoreOption = None,
    run_id: RunIdOption = None,
    prepared_dir: Annotated[Path, typer.Option("--prepared", help="Where to prepare the data.")] = Path(
        "data/prepared"
    ),
    params_file: ParamsOption = None,
    objective: ObjectiveOption = None,
    seed: SeedOption = None,
    force: ForceOption = False,
) -> None:
    """The whole `tcr-pipeline` flow: prepare → search → promote."""
    from flows.pipeline import pipeline_flow

    # read (and check) the configuration and the inputs here, before a Prefect server starts
    overrides = _search_overrides(max_evals, parallelism, cluster, objective)
    params = command_params(params_file, {**overrides, "data.raw": str(data) if data else None})
    result_store, run_id = _checked_run(params, cluster, store, run_id, prepared_dir, prepared=False)
    load_pairs(params.data.raw, require_clone_id=params.prepare.use_clone_id)  # the data, row by row
    with _watched_run(result_store, run_id, params.search.max_evals):
        outcome = pipeline_flow(
            data=str(data) if data else None,
            **_flow_arguments(
                result_store, run_id, prepared_dir, params_file, max_evals, parallelism, cluster, objective
            ),
            seed=seed,
            force=force,
        )
        interruption.work_done()
    out.print_json(json.dumps(outcome, default=str))
    out.print(
        f"results: store {result_store.root}; best model: tcr-pipeline best --store {result_store.root}",
        markup=False,
    )


def _search_overrides(
    max_evals: int | None, parallelism: int | None, cluster: str | None, objective: str | None
) -> dict[str, Any]:
    return {
        "search.max_evals": max_evals,
        "search.parallelism": parallelism,
        "search.cluster": cluster,
        "evaluate.objective": objective,
    }


def _flow_arguments(
    result_store: Store,
    run_id: str,
    prepared_dir: Path,
    params_file: Path | None,
    max_evals: int | None,
    parallelism: int | None,
    cluster: str | None,
    objective: str | None,
) -> dict[str, Any]:
    """The parameters the search and pipeline flows share (None: what params.yaml says)."""
    return {
        "run_id": run_id,
        "max_evals": max_evals,
        "parallelism": parallelism,
        "cluster": cluster,
        "store": str(result_store.root),
        "prepared_dir": str(prepared_dir),
        "params_file": flow_params_file(params_file),
        "objective": objective,
    }


def _checked_run(
    params: Params,
    cluster: str | None,
    store: Path | None,
    run_id: str | None,
    prepared_dir: Path,
    *,
    prepared: bool,
) -> tuple[Store, str]:
    """Everything about a search that can be checked before a Prefect server or Dask cluster starts.

    ``prepared``: the prepared directory must already hold data (``search``), else it is an
    output (``pipeline`` prepares it). Returns the store and the run id (a new one when none was
    given).
    """
    from flows.runner import check_cluster
    from tcr_pipeline.clusters import load_profile
    from tcr_pipeline.prepare import ENCODER_FILE as PREPARED_ENCODER
    from tcr_pipeline.prepare import META_FILE, TENSORS_FILE, read_prepared_meta

    check_cluster(cluster or params.search.cluster)  # workers on other nodes need a reachable API
    result_store = Store.from_env(store)
    run_id = check_run_id(run_id) if run_id is not None else new_run_id()
    check_output_target(result_store.root, directory=True)
    load_profile(params.search.cluster)
    manifest = result_store.load_manifest(run_id)
    if manifest is not None:
        check_resume_budget(result_store, run_id, params.search.max_evals)
    if prepared:
        meta = read_prepared_meta(prepared_dir)
        if manifest is not None and manifest.data_sha256 != meta["data_sha256"]:
            raise InputError(
                f"{prepared_dir}: holds data {meta['data_sha256'][:12]}, but run {run_id} was started on "
                f"{manifest.data_sha256[:12]} (prepare that data again, or start a new run)"
            )
    else:
        check_output_files(prepared_dir, (TENSORS_FILE, PREPARED_ENCODER, META_FILE))
    return result_store, run_id


@contextmanager
def _watched_run(store: Store, run_id: str, total: int) -> Iterator[None]:
    """A flow of run ``run_id`` on a Prefect server, with a progress bar, recorded as stopped if stopped."""
    with _interrupted_run(store, run_id), prefect_server(), _search_progress(store, run_id, total):
        yield


@contextmanager
def _search_progress(store: Store, run_id: str, total: int) -> Iterator[None]:
    """A progress bar fed by polling the store (trials done / total, best objective so far)."""
    stop = threading.Event()
    with progress_bar("search") as progress:
        bar = progress.add_task("search", total=total, info="")

        def poll() -> None:
            while not stop.wait(1.0):
                try:
                    trials = store.list_trials(run_id)
                except InputError:
                    continue
                done = sum(t.done for t in trials)
                score = best_objective(trials)
                best = f"best {score:.4f}" if score is not None else "best -"
                progress.update(bar, completed=done, info=f"{best}, {len(trials) - done} running")

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


@contextmanager
def _interrupted_run(store: Store, run_id: str) -> Iterator[None]:
    """On an interruption, make sure the run is recorded as ``interrupted`` and say how to resume it."""
    try:
        yield
    except KeyboardInterrupt:
        manifest = store.load_manifest(run_id)
        if manifest is not None:
            if manifest.status == "running":  # stopped before the flow could record it
                store.write_manifest(manifest.model_copy(update={"status": "interrupted", "finished": now()}))
            interruption.state["note"] = (
                f"run {run_id} recorded as interrupted in {store.root}; resume it with --run-id {run_id}"
            )
        raise
