"""Running trials on a worker: one, or a batch of suggestions, each recorded in the store.

A trial's record is written ``running`` before it trains and rewritten ``ok`` or ``failed`` when
it ends, so only the death of the process leaves a ``running`` record (the flow resubmits it).
A write the store refuses (a full disk) is no trial's failure: :class:`StoreWriteError` stops the
search, and the attempts it cut short stay unfinished, like those of Ctrl-C, so a resume runs them
again instead of counting them against the budget as failed trials.
A batch's members that share an architecture train as one vectorised population
(:mod:`tcr_pipeline.population`) when ``vectorise`` is on; every member keeps its own record,
curves, bundle and metrics, as if it had trained alone.
"""

from __future__ import annotations

import functools
import secrets
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from tcr_pipeline.config import EvaluateParams, TrainParams
from tcr_pipeline.errors import InputError, store_writes
from tcr_pipeline.metrics import objective_value
from tcr_pipeline.prepare import Prepared, load_prepared
from tcr_pipeline.recipe import Fitted, fit_and_save, fit_and_save_population
from tcr_pipeline.search import Suggestion, apply_hyperparams
from tcr_pipeline.store import Hardware, Store, TrialRecord, new_attempt_id, now
from tcr_pipeline.training import TrainingError

# what training may raise for one trial: recorded as a failed trial (torch's OOM is a RuntimeError)
TRIAL_ERRORS = (TrainingError, RuntimeError, ValueError, InputError)
P = ParamSpec("P")
R = TypeVar("R")


@functools.lru_cache(maxsize=4)
def _cached_prepared(directory: str, mtime: float) -> Prepared:
    return load_prepared(directory)


def prepared_for_worker(directory: Path | str) -> Prepared:
    """Load prepared data once per worker process (reloaded when it changes on disk)."""
    directory = Path(directory)
    return _cached_prepared(str(directory), (directory / "dataset.pt").stat().st_mtime)


def _start(store: Store, run_id: str, member: Suggestion, batch: str | None, device: str) -> TrialRecord:
    """A new attempt's ``running`` record, written."""
    record = TrialRecord(
        run_id=run_id,
        trial_id=member.trial_id,
        attempt=new_attempt_id(),
        params=member.hyperparams,
        hyperopt_vals=member.vals,
        batch=batch,
        device=device,
    )
    store.write_trial(record)
    return record


def _outcome(fitted: Fitted | BaseException, evaluate: EvaluateParams) -> dict[str, Any]:
    """The fields a finished attempt's record gets from its fitted model or its exception."""
    if isinstance(fitted, BaseException):
        return {
            "status": "failed",
            "error": f"{type(fitted).__name__}: {fitted}"[:2000],
            "traceback": "".join(traceback.format_exception(fitted, limit=5)),
        }
    result, val, test = fitted.result, fitted.metrics["val"], fitted.metrics["test"]
    return {
        "status": "ok",
        "objective": objective_value(evaluate.objective, val),
        "history": result.history,
        "val_metrics": val,
        "test_metrics": test,
        "train_seconds": result.seconds,
        "best_epoch": result.best_epoch,
        "folds": int(fitted.card.train_params.get("folds", 1)),
        "data_sha256": fitted.card.data_sha256,
        "hardware": Hardware(device=result.device, gpu=fitted.card.device.get("gpu")),
        "device": result.device,
    }


def _finish(store: Store, record: TrialRecord, update: dict[str, Any], started: float) -> TrialRecord:
    record = record.model_copy(update={**update, "finished": now(), "seconds": time.perf_counter() - started})
    store.write_trial(record)
    return record


def _guarding_store_writes(
    function: Callable[Concatenate[Store, P], R],
) -> Callable[Concatenate[Store, P], R]:
    """``function(store, …)`` with an OSError on a file of ``store`` raised as a
    :class:`StoreWriteError` naming it (:func:`~tcr_pipeline.errors.store_writes`)."""

    @functools.wraps(function)
    def guarded(store: Store, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with store_writes(store.root):
            return function(store, *args, **kwargs)

    return guarded


@_guarding_store_writes
def run_trial(
    store: Store,
    run_id: str,
    trial_id: int,
    vals: dict[str, list[Any]],
    hyperparams: dict[str, Any],
    prepared_dir: Path | str,
    train: TrainParams,
    evaluate: EvaluateParams,
    batch: str | None = None,
) -> TrialRecord:
    """Train and evaluate one trial, recording it in the store (with the ``batch`` it ran in).

    A trial that already finished (an earlier attempt got that far) is returned as it is,
    never run twice. Exceptions of training (NaN loss, out of memory, a bad configuration) are
    recorded as a failed trial; only the death of the process leaves a ``running`` record.
    """
    finished = store.finished_trial(run_id, trial_id)
    if finished is not None:
        return finished
    started = time.perf_counter()
    member = Suggestion(trial_id, vals, hyperparams)
    record = _start(store, run_id, member, batch, train.device)
    fitted = _fit_alone(prepared_dir, train, member, evaluate, store.model_dir(record))
    return _finish(store, record, _outcome(fitted, evaluate), started)


def new_batch_id(members: list[Suggestion]) -> str:
    """A batch's name: its first trial and a random suffix (a resumed run re-batches trials)."""
    return f"b{members[0].trial_id:04d}-{secrets.token_hex(3)}"


@_guarding_store_writes
def run_batch(
    store: Store,
    run_id: str,
    batch: str,
    members: list[Suggestion],
    prepared_dir: Path | str,
    train: TrainParams,
    evaluate: EvaluateParams,
    vectorise: bool = True,
) -> list[TrialRecord]:
    """Train one batch of suggested trials in this process, each recorded as :func:`run_trial`
    records it; the prepared data is loaded once per process.

    With ``vectorise``, the members not yet finished train together
    (:func:`~tcr_pipeline.recipe.fit_and_save_population`: one vectorised population per shared
    architecture, the others one by one); without, one after the other. Records, bundles and
    metrics are the same either way (up to float rounding).

    A write the store refuses (a full disk…) raises :class:`StoreWriteError` naming the file; the
    batch's unfinished attempts stay unfinished, for a resume to run again.
    """
    done = {m.trial_id: store.finished_trial(run_id, m.trial_id) for m in members}
    todo = [m for m in members if done[m.trial_id] is None]
    if not vectorise or len(todo) < 2:
        for m in todo:
            done[m.trial_id] = run_trial(store, run_id, *m, prepared_dir, train, evaluate, batch)
        return [record for record in done.values() if record is not None]
    started = time.perf_counter()
    records = [_start(store, run_id, m, batch, train.device) for m in todo]
    out_dirs = [store.model_dir(r) for r in records]
    fitted: Sequence[Fitted | BaseException]
    try:
        prepared = prepared_for_worker(prepared_dir)
        trains = [apply_hyperparams(train, m.hyperparams) for m in todo]
        fitted = fit_and_save_population(prepared, trains, evaluate, out_dirs)
    except TRIAL_ERRORS:  # the population as a whole (e.g. out of memory): each member alone
        fitted = [
            _fit_alone(prepared_dir, train, m, evaluate, out) for m, out in zip(todo, out_dirs, strict=True)
        ]
    for record, outcome in zip(records, fitted, strict=True):
        done[record.trial_id] = _finish(store, record, _outcome(outcome, evaluate), started)
    return [record for record in done.values() if record is not None]


def _fit_alone(
    prepared_dir: Path | str, train: TrainParams, member: Suggestion, evaluate: EvaluateParams, out: Path
) -> Fitted | BaseException:
    """One member fitted and saved on its own, or what it raised."""
    try:
        trial_train = apply_hyperparams(train, member.hyperparams)
        return fit_and_save(prepared_for_worker(prepared_dir), trial_train, evaluate, out)
    except TRIAL_ERRORS as exc:
        return exc
