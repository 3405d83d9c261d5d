"""The ``search`` flow: asynchronous TPE trials on a Dask cluster, recorded in the result store.

``search`` resolves the settings (flow parameters > params.yaml > defaults), opens or resumes
the run (``tcr_pipeline.search_run``) and hands over to ``search-trials``, a subflow whose task
runner is the Dask cluster of the chosen profile. ``parallelism`` tasks are in flight, each a
batch of ``batch_size`` TPE suggestions trained one after the other on one worker; as soon as
one finishes the next batch is submitted (no barrier across tasks).

One retry layer: a task lost to the infrastructure (its worker died, the Prefect API was out of
reach) is resubmitted by the flow, with its unfinished members only, at most ``INFRA_RETRIES``
times; the task itself has no Prefect retries. A trial thus runs at most 1 + ``INFRA_RETRIES``
= 3 times within one search command (a failed trial — NaN loss, out of memory — is a result and
runs once).
"""

from __future__ import annotations

import math
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture, as_completed, wait

from flows.runner import (
    EarlyDaskTaskRunner,
    WorkerStartWatch,
    make_task_runner,
    plan_parallelism,
    start_task_runner,
)
from tcr_pipeline.baseline import evaluate_baseline
from tcr_pipeline.clusters import ClusterProfile, load_profile
from tcr_pipeline.config import EvaluateParams, PrepareParams, SearchParams, TrainParams, resolve_params
from tcr_pipeline.data import load_pairs
from tcr_pipeline.errors import InfrastructureError, StoreWriteError, store_writes
from tcr_pipeline.prepare import load_prepared
from tcr_pipeline.promotion import promote_best, register_top
from tcr_pipeline.search import SearchDriver, Suggestion
from tcr_pipeline.search_run import RunStart, close_run, open_run
from tcr_pipeline.splits import split_pairs
from tcr_pipeline.store import Store, TrialRecord
from tcr_pipeline.trials import new_batch_id, run_batch

INFRA_RETRIES = 2  # resubmissions of a task whose worker died: a trial runs at most 3 times
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
    name="trials",
    task_run_name="batch-{batch}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def batch_task(
    store_root: str,
    run_id: str,
    batch: str,
    members: list[Suggestion],
    prepared_dir: str,
    train: dict[str, Any],
    evaluate: dict[str, Any],
    vectorise: bool = True,
) -> list[dict[str, Any]]:
    """Train and evaluate one batch of trials on a Dask worker; each record is in the store.

    No Prefect retries (the flow resubmits a lost task), no cache key, no persisted result.
    """
    train_params = TrainParams.model_validate(train)
    if train_params.device == "auto":
        train_params = train_params.model_copy(update={"device": _worker_device()})
    records = run_batch(
        Store(store_root),
        run_id,
        batch,
        members,
        prepared_dir,
        train_params,
        EvaluateParams.model_validate(evaluate),
        vectorise,
    )
    return [record.model_dump(mode="json") for record in records]


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(
    store_root: str, run_id: str, prepared_dir: str, top_k: int, evaluate: dict[str, Any], force: bool = False
) -> dict[str, Any]:
    """Register the run's top trials and promote the best if it beats the current model."""
    logger = get_run_logger()
    store = Store(store_root)
    evaluate_params = EvaluateParams.model_validate(evaluate)
    prepared = load_prepared(prepared_dir)
    try:
        with store_writes(store.root):
            entries = register_top(store, run_id, top_k, evaluate_params.objective, prepared)
            promotion = promote_best(store, entries, prepared, evaluate_params, force=force)
    except StoreWriteError as exc:  # a full disk: one line, and the resume registers again
        raise StoreWriteError(
            f"promotion stopped: {exc} (run {run_id} registers and promotes with --run-id {run_id} "
            "once the store can be written)"
        ) from None
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
    with store_writes(store_root):
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
    pending: dict[PrefectFuture[list[dict[str, Any]]], tuple[str, list[Suggestion], int]] = {}
    infra_failures = 0  # in a row; a finished batch resets it

    def submit(batch: str, members: list[Suggestion], tries: int = 0) -> None:
        future = batch_task.submit(
            store_root, run_id, batch, members, prepared_dir, train, evaluate, settings.vectorise
        )
        pending[future] = (batch, members, tries)

    def in_flight() -> int:
        return sum(len(members) for _, members, _ in pending.values())

    def tell(record: TrialRecord) -> None:
        nonlocal finished, best
        driver.finish(record)
        finished += 1
        best = max(best, record.score)
        logger.info(
            "trial %d %s (objective %s) — %d/%d done, best so far %.4f",
            record.trial_id,
            record.status,
            f"{record.objective:.4f}" if record.objective is not None else "-",
            finished,
            settings.max_evals,
            best,
        )

    resumed = [Suggestion(r.trial_id, r.hyperopt_vals, r.params) for r in existing if not r.done]
    resumed = resumed[: max(settings.max_evals - finished, 0)]
    if resumed:
        logger.info("resuming: %d finished, re-running %d interrupted trial(s)", finished, len(resumed))
    for start in range(0, len(resumed), settings.batch_size):
        members = resumed[start : start + settings.batch_size]
        submit(new_batch_id(members), members)

    while True:
        while (
            len(pending) < settings.parallelism and (left := settings.max_evals - finished - in_flight()) > 0
        ):
            members = driver.suggest_batch(min(settings.batch_size, left))
            submit(new_batch_id(members), members)
        if not pending:
            break
        future = _next_finished(list(pending), watch)
        batch, members, tries = pending.pop(future)
        try:
            records = [TrialRecord.model_validate(r) for r in future.result()]
        except StoreWriteError as exc:  # a full disk: not the worker's fault, and a retry cannot help
            raise StoreWriteError(
                f"search stopped: {exc} (run {run_id} resumes with --run-id {run_id} once the store "
                "can be written)"
            ) from None
        except Exception as exc:  # the worker died or the task crashed: infrastructure, not the trials
            # members that finished before it count; the others run again, or the search stops
            # (resumable) with the reason
            infra_failures += 1
            ids = ", ".join(str(m.trial_id) for m in members)
            if tries >= INFRA_RETRIES or infra_failures >= INFRA_FAILURES_PER_SLOT * settings.parallelism:
                raise InfrastructureError(
                    f"search stopped: {infra_failures} infrastructure failure(s) in a row, trial(s) {ids} "
                    f"lost {tries + 1} time(s) (workers dying, or unable to reach the Prefect API); "
                    f"last: {type(exc).__name__}: {str(exc)[:300]}"
                ) from exc
            rest: list[Suggestion] = []
            for member in members:
                done = store.finished_trial(run_id, member.trial_id)
                if done is None:
                    rest.append(member)
                else:
                    tell(done)
            logger.warning(
                "batch %s: %s; running trial(s) %s again",
                batch,
                exc,
                ", ".join(str(m.trial_id) for m in rest),
            )
            if rest:
                submit(batch, rest, tries + 1)
            continue
        infra_failures = 0
        for record in records:
            tell(record)
    return {"finished": finished, "best_objective": best}


def _next_finished(
    futures: list[PrefectFuture[list[dict[str, Any]]]], watch: WorkerStartWatch | None
) -> PrefectFuture[list[dict[str, Any]]]:
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
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Hyperparameter search (resumes ``run_id`` when it exists), then registration and promotion."""
    logger = get_run_logger()
    params = resolve_params(
        params_file,
        {
            "search.max_evals": max_evals,
            "search.parallelism": parallelism,
            "search.batch_size": batch_size,
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
    profile = load_profile(params.search.cluster, cluster_overrides)
    # where it pays, the Dask cluster starts now, in a thread, while the prepared data, the
    # manifest and the baseline load (or it started before, in the pipeline flow, while the data
    # was prepared); otherwise it starts with the trials
    runner = start_task_runner(params.search.cluster, params.search.parallelism, cluster_overrides, run_id)
    try:
        prepared = load_prepared(prepared_dir)
        run = open_run(result_store, run_id, params, prepared, prepared_dir)
        for warning in run.warnings:
            logger.warning(warning)
        for note in run.notes:
            logger.info(note)
        params, run_id = run.params, run.manifest.run_id
        if runner is None:  # started with the trials (SLURM jobs are named after the run)
            runner = make_task_runner(
                params.search.cluster, params.search.parallelism, cluster_overrides, run_id
            )
        outcome = _search_run(
            result_store, run, runner, profile, str(prepared_dir), promote, force, baseline, prepared.meta
        )
    finally:
        if runner is not None:
            runner.discard()  # a cluster started for trials that never ran
    return outcome


def _search_run(
    result_store: Store,
    run: RunStart,
    runner: EarlyDaskTaskRunner,
    profile: ClusterProfile,
    prepared_dir: str,
    promote: bool,
    force: bool,
    baseline: bool,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Baseline, trials and promotion of the opened ``run``; its manifest closed as completed,
    failed or interrupted."""
    params, manifest, run_id = run.params, run.manifest, run.manifest.run_id
    try:
        if baseline and result_store.load_baseline(run_id) is None and meta.get("raw"):
            baseline_task(
                str(result_store.root), run_id, str(meta["raw"]), meta["params"], params.evaluate.threshold
            )
        summary = search_trials.with_options(task_runner=runner)(  # type: ignore[arg-type]
            str(result_store.root),
            run_id,
            prepared_dir,
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
                prepared_dir,
                params.search.top_k,
                params.evaluate.model_dump(mode="json"),
                force,
            )
    except BaseException as exc:
        # Ctrl-C, or SIGTERM (Prefect's engine turns it into TerminationSignal): resumable, not failed
        interrupted = isinstance(exc, (KeyboardInterrupt, TerminationSignal))
        try:
            close_run(result_store, manifest, "interrupted" if interrupted else "failed", exc)
        except OSError as closing:  # a full disk takes no manifest either: the reason is exc's
            get_run_logger().warning("run %s not recorded as ended: %s", run_id, closing)
        raise
    close_run(result_store, manifest, "completed")
    return outcome
