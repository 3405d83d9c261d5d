"""The ``search`` flow: asynchronous TPE trials on a Dask cluster, recorded in the result store.

``search`` resolves the settings (flow parameters > params.yaml > defaults), opens or resumes
the run's manifest and hands over to ``search-trials``, a subflow whose task runner is the
Dask cluster of the chosen profile. ``parallelism`` trials are in flight; as soon as one
finishes the next TPE suggestion is submitted (no batch barrier).
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture, as_completed, wait

from flows.runner import WorkerStartWatch, make_task_runner, plan_parallelism
from tcr_pipeline.baseline import evaluate_baseline
from tcr_pipeline.clusters import load_profile
from tcr_pipeline.config import EvaluateParams, PrepareParams, SearchParams, TrainParams, resolve_params
from tcr_pipeline.data import load_pairs
from tcr_pipeline.errors import InfrastructureError, InputError
from tcr_pipeline.prepare import load_prepared
from tcr_pipeline.provenance import dvc_md5, git_state, gpu_name, package_versions
from tcr_pipeline.search import SearchDriver, promote_best, register_top, run_trial
from tcr_pipeline.splits import split_pairs
from tcr_pipeline.store import (
    RunManifest,
    Store,
    TrialRecord,
    check_resume_budget,
    new_run_id,
    now,
)

INFRA_RETRIES = 2  # resubmissions of a trial whose worker died
# infrastructure failures in a row, per trial in flight, after which the search stops
INFRA_FAILURES_PER_SLOT = 3
WORKER_POLL_S = 5.0  # how often the search looks for its first worker while it waits for one


def _worker_device() -> str:
    """``auto``, or one GPU per Dask worker when a node has several (worker i → GPU i mod n)."""
    import torch
    from distributed import get_worker

    count = torch.cuda.device_count()
    if count <= 1:
        return "auto"
    try:
        name = get_worker().name
    except ValueError:  # not on a Dask worker
        return "auto"
    index = name if isinstance(name, int) else sum(map(ord, str(name)))
    return f"cuda:{index % count}"


@task(
    name="trial",
    task_run_name="trial-{trial_id}",
    retries=2,
    retry_delay_seconds=[2, 10],
    cache_policy=NO_CACHE,
)
def trial_task(
    store_root: str,
    run_id: str,
    trial_id: int,
    vals: dict[str, list[Any]],
    hyperparams: dict[str, Any],
    prepared_dir: str,
    train: dict[str, Any],
    evaluate: dict[str, Any],
) -> dict[str, Any]:
    """Train and evaluate one trial on a Dask worker; the record is in the store."""
    train_params = TrainParams.model_validate(train)
    if train_params.device == "auto":
        train_params = train_params.model_copy(update={"device": _worker_device()})
    record = run_trial(
        Store(store_root),
        run_id,
        trial_id,
        vals,
        hyperparams,
        prepared_dir,
        train_params,
        EvaluateParams.model_validate(evaluate),
    )
    return record.model_dump(mode="json")


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(
    store_root: str, run_id: str, prepared_dir: str, top_k: int, evaluate: dict[str, Any], force: bool = False
) -> dict[str, Any]:
    """Register the run's top trials and promote the best if it beats the current model."""
    logger = get_run_logger()
    store = Store(store_root)
    evaluate_params = EvaluateParams.model_validate(evaluate)
    prepared = load_prepared(prepared_dir)
    entries = register_top(store, run_id, top_k, evaluate_params.objective, prepared)
    promotion = promote_best(store, entries, prepared, evaluate_params, force=force)
    if promotion is None:
        logger.info("kept the current model %s", store.load_registry().current)
    else:
        logger.info("promoted %s (%s)", promotion.model_id, promotion.reason)
    return {
        "registered": [e.model_id for e in entries],
        "promoted": promotion.model_id if promotion else None,
        "current": store.load_registry().current,
    }


@task(name="baseline", cache_policy=NO_CACHE)
def baseline_task(store_root: str, run_id: str, raw: str, prepare: dict[str, Any], threshold: float) -> float:
    """The k-mer logistic-regression baseline on the run's own split; returns its test mean epitope AUC."""
    params = PrepareParams.model_validate(prepare)
    frame = load_pairs(raw, require_clone_id=params.use_clone_id)
    metrics = evaluate_baseline(frame, split_pairs(frame, params), threshold)
    Store(store_root).write_baseline(run_id, metrics)
    return metrics["test"]["mean_epitope_auc"]


@flow(name="search-trials")
def search_trials(
    store_root: str,
    run_id: str,
    prepared_dir: str,
    search: dict[str, Any],
    train: dict[str, Any],
    evaluate: dict[str, Any],
    cluster: str | None = None,
    worker_start_timeout: float | None = None,
) -> dict[str, Any]:
    """Run trials until the run holds ``max_evals`` finished ones (resumed trials included).

    With ``worker_start_timeout`` the search stops (InfrastructureError) when no Dask worker of
    profile ``cluster`` has connected within that many seconds.
    """
    logger = get_run_logger()
    watch = WorkerStartWatch(cluster or "?", worker_start_timeout) if worker_start_timeout else None
    store = Store(store_root)
    settings = SearchParams.model_validate(search)
    driver = SearchDriver(settings)
    existing = store.list_trials(run_id)
    for record in existing:
        driver.restore(record)
    finished = sum(r.done for r in existing)
    best = max((r.score for r in existing), default=-math.inf)
    pending: dict[PrefectFuture[dict[str, Any]], tuple[int, dict[str, list[Any]], dict[str, Any], int]] = {}
    infra_failures = 0  # in a row; a finished trial (ok or failed) resets it

    def submit(
        trial_id: int, vals: dict[str, list[Any]], hyperparams: dict[str, Any], tries: int = 0
    ) -> None:
        future = trial_task.submit(
            store_root, run_id, trial_id, vals, hyperparams, prepared_dir, train, evaluate
        )
        pending[future] = (trial_id, vals, hyperparams, tries)

    resumed = [r for r in existing if not r.done]
    if resumed:
        logger.info("resuming: %d finished, re-running %d interrupted trial(s)", finished, len(resumed))
    for record in resumed[: max(settings.max_evals - finished, 0)]:
        submit(record.trial_id, record.hyperopt_vals, record.params)

    while True:
        while len(pending) < settings.parallelism and finished + len(pending) < settings.max_evals:
            submit(*driver.suggest())
        if not pending:
            break
        future = _next_finished(list(pending), watch)
        trial_id, vals, hyperparams, tries = pending.pop(future)
        try:
            record = TrialRecord.model_validate(future.result())
        except Exception as exc:  # the worker died or the task crashed: infrastructure, not the trial
            # never a finished trial: run it again, or stop the search (resumable) with the reason
            infra_failures += 1
            if tries >= INFRA_RETRIES or infra_failures >= INFRA_FAILURES_PER_SLOT * settings.parallelism:
                raise InfrastructureError(
                    f"search stopped: {infra_failures} infrastructure failure(s) in a row, trial "
                    f"{trial_id} lost {tries + 1} time(s) (workers dying, or unable to reach the "
                    f"Prefect API); last: {type(exc).__name__}: {str(exc)[:300]}"
                ) from exc
            logger.warning("trial %d: %s; running it again", trial_id, exc)
            submit(trial_id, vals, hyperparams, tries + 1)
            continue
        infra_failures = 0
        driver.finish(record)
        finished += 1
        best = max(best, record.score)
        logger.info(
            "trial %d %s (objective %s) — %d/%d done, best so far %.4f",
            trial_id,
            record.status,
            f"{record.objective:.4f}" if record.objective is not None else "-",
            finished,
            settings.max_evals,
            best,
        )
    return {"finished": finished, "best_objective": best}


def _next_finished(
    futures: list[PrefectFuture[dict[str, Any]]], watch: WorkerStartWatch | None
) -> PrefectFuture[dict[str, Any]]:
    """The next future to finish; until the first worker connects, ``watch`` is checked meanwhile."""
    while watch is not None and not watch.connected:
        watch.check()
        done = wait(futures, timeout=WORKER_POLL_S).done
        if done:
            return next(iter(done))
    return next(iter(as_completed(futures)))


@flow(name="search")
def search_flow(
    run_id: str | None = None,
    max_evals: int | None = None,
    parallelism: int | None = None,
    cluster: str | None = None,
    store: str | None = None,
    prepared_dir: str = "data/prepared",
    params_file: str | None = "params.yaml",
    objective: str | None = None,
    seed: int | None = None,
    promote: bool = True,
    force: bool = False,
    baseline: bool = True,
    cluster_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Hyperparameter search (resumes ``run_id`` when it exists), then registration and promotion."""
    logger = get_run_logger()
    params = resolve_params(
        params_file,
        {
            "search.max_evals": max_evals,
            "search.parallelism": parallelism,
            "search.cluster": cluster,
            "search.seed": seed,
            "evaluate.objective": objective,
        },
    )
    # before anything is written or submitted: a profile whose workers cannot reach the Prefect
    # API is refused, and the trials in flight are at most what the profile allows
    parallelism = plan_parallelism(params.search.cluster, params.search.parallelism, cluster_overrides)
    params = params.model_copy(
        update={"search": params.search.model_copy(update={"parallelism": parallelism})}
    )
    result_store = Store.from_env(store)
    run_id = run_id or new_run_id()
    prepared = load_prepared(prepared_dir)
    manifest = result_store.load_manifest(run_id)
    # a new run draws its seed unless one is given; a resumed run keeps the seed it started with
    run_seed = manifest.seed if manifest is not None else params.search.seed
    if run_seed is None:
        run_seed = secrets.randbelow(2**31)
    if manifest is not None and params.search.seed not in (None, run_seed):
        logger.warning("run %s keeps its seed %d (asked for %d)", run_id, run_seed, params.search.seed)
    params = params.model_copy(update={"search": params.search.model_copy(update={"seed": run_seed})})
    if manifest is None:
        commit, dirty = git_state()
        manifest = RunManifest(
            run_id=run_id,
            max_evals=params.search.max_evals,
            parallelism=params.search.parallelism,
            cluster=params.search.cluster,
            objective=params.evaluate.objective,
            seed=params.search.seed,
            params=params.model_dump(mode="json"),
            search_space={k: v.model_dump(exclude_none=True) for k, v in params.search.space.items()},
            git_commit=commit,
            git_dirty=dirty,
            data_path=str(prepared.meta.get("raw", "")),
            data_sha256=prepared.data_sha256,
            dvc_md5=dvc_md5(prepared.meta.get("raw", params.data.raw)),
            packages=package_versions(),
            gpu=gpu_name(),
            prepared_dir=str(prepared_dir),
        )
        logger.info("new run %s in %s", run_id, result_store.root)
    else:
        if manifest.data_sha256 != prepared.data_sha256:
            raise InputError(
                f"run {run_id} was started on data {manifest.data_sha256[:12]}, "
                f"but {prepared_dir} holds {prepared.data_sha256[:12]}"
            )
        check_resume_budget(result_store, run_id, params.search.max_evals)
        manifest = manifest.model_copy(
            update={
                "status": "running",
                "finished": None,
                "error": None,
                "max_evals": params.search.max_evals,
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
        )
        logger.info("resuming run %s", run_id)
    result_store.write_manifest(manifest)
    try:
        if baseline and result_store.load_baseline(run_id) is None and prepared.meta.get("raw"):
            baseline_task(
                str(result_store.root),
                run_id,
                str(prepared.meta["raw"]),
                prepared.meta["params"],
                params.evaluate.threshold,
            )
        profile = load_profile(params.search.cluster, cluster_overrides)
        runner = make_task_runner(params.search.cluster, params.search.parallelism, cluster_overrides, run_id)
        summary = search_trials.with_options(task_runner=runner)(  # type: ignore[arg-type]
            str(result_store.root),
            run_id,
            str(prepared_dir),
            params.search.model_dump(mode="json"),
            params.train.model_dump(mode="json"),
            params.evaluate.model_dump(mode="json"),
            profile.name,
            profile.worker_start_timeout,
        )
        outcome: dict[str, Any] = {"run_id": run_id, "store": str(result_store.root), **summary}
        if promote:
            outcome |= promote_task(
                str(result_store.root),
                run_id,
                str(prepared_dir),
                params.search.top_k,
                params.evaluate.model_dump(mode="json"),
                force,
            )
    except BaseException as exc:
        # Ctrl-C, or SIGTERM (Prefect's engine turns it into TerminationSignal): resumable, not failed
        status = "interrupted" if isinstance(exc, (KeyboardInterrupt, TerminationSignal)) else "failed"
        result_store.write_manifest(
            manifest.model_copy(
                update={"status": status, "finished": now(), "error": f"{type(exc).__name__}: {exc}"}
            )
        )
        raise
    result_store.write_manifest(manifest.model_copy(update={"status": "completed", "finished": now()}))
    return outcome
