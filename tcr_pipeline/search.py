"""Asynchronous hyperopt TPE search in batches of suggestions, with its state kept in the store.

hyperopt has no ask/tell API. :class:`SearchDriver` drives ``tpe.suggest`` with a ``Trials``
object: ``suggest`` asks for one new point (seeded by ``seed + trial_id``, so the random startup
trials are reproducible), ``suggest_batch`` for several at once, ``finish`` tells a result. Its
state is rebuilt from the store's trial records, never from a pickle, so a search resumes on any
host. :func:`run_batch` trains one batch of suggestions (``tcr_pipeline.search_run`` opens and
closes a run).

The orchestration (parallel workers, resubmission) lives in ``flows/``; this module is pure.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import secrets
import time
import traceback
from pathlib import Path
from typing import Any, NamedTuple

import hyperopt
import numpy as np
import pandas as pd
import torch
from hyperopt import JOB_STATE_DONE, JOB_STATE_RUNNING, STATUS_FAIL, STATUS_OK, Trials, hp, tpe
from hyperopt.base import Domain

from tcr_pipeline.bundle import load_bundle, load_card, load_validation, predict_frame
from tcr_pipeline.comparison import Interval, paired_bootstrap
from tcr_pipeline.config import Dimension, EvaluateParams, SearchParams, TrainParams
from tcr_pipeline.errors import InputError
from tcr_pipeline.metrics import objective_value
from tcr_pipeline.monitoring.reference import save_reference
from tcr_pipeline.prepare import Prepared, load_prepared
from tcr_pipeline.recipe import fit_and_save
from tcr_pipeline.store import (
    Comparison,
    Hardware,
    Promotion,
    RegistryEntry,
    Store,
    TrialRecord,
    model_id_of,
    new_attempt_id,
    now,
    ranked_trials,
)
from tcr_pipeline.training import TrainingError

BRANCH_SEPARATOR = "/"  # hyperopt labels of a branch's dimensions: "cnn/lr"


def build_space(space: dict[str, Dimension], prefix: str = "") -> dict[str, Any]:
    """The hyperopt space of a ``search.space`` config (conditional ``branches`` included).

    A branch's dimensions get the label ``<branch>/<key>`` (hyperopt labels are unique); the
    hyperparameters a trial receives are flattened back to plain keys (:func:`flatten_point`).
    """
    out: dict[str, Any] = {}
    for name, dim in space.items():
        label = prefix + name
        if dim.choice is not None:
            out[name] = hp.choice(label, dim.choice)
        elif dim.uniform is not None:
            out[name] = hp.uniform(label, *dim.uniform)
        elif dim.loguniform is not None:
            low, high = dim.loguniform
            out[name] = hp.loguniform(label, math.log(low), math.log(high))
        elif dim.integer is not None:
            out[name] = hp.uniformint(label, *dim.integer)
        elif dim.branches is not None:
            out[name] = hp.choice(
                label,
                [
                    {name: value, **build_space(sub, f"{prefix}{value}{BRANCH_SEPARATOR}")}
                    for value, sub in dim.branches.items()
                ],
            )
    return out


def flatten_point(point: dict[str, Any]) -> dict[str, Any]:
    """A sampled point with the chosen branches' values merged in as plain keys."""
    flat: dict[str, Any] = {}
    for key, value in point.items():
        if isinstance(value, dict):
            flat.update(flatten_point(value))
        else:
            flat[key] = _plain(value)
    return flat


def apply_hyperparams(train: TrainParams, hyperparams: dict[str, Any]) -> TrainParams:
    """``train`` with dotted keys (``model.kind``, ``lr`` …) replaced by searched values."""
    data = train.model_dump()
    for key, value in hyperparams.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise InputError(f"search.space: {key!r} is not a key of the train section")
        node[leaf] = int(value) if isinstance(node[leaf], int) and not isinstance(value, str) else value
    return TrainParams.model_validate(data)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (for JSON records)."""
    return value.item() if isinstance(value, np.generic) else value


class Suggestion(NamedTuple):
    """One suggested trial: its id, hyperopt's raw values and the hyperparameters."""

    trial_id: int
    vals: dict[str, list[Any]]
    hyperparams: dict[str, Any]


class SearchDriver:
    """Ask/tell over hyperopt's TPE for one run.

    Batches follow the *constant liar* strategy of parallel Bayesian optimisation (Ginsbourger,
    Le Riche & Carraro 2010) with the worst value as the lie: a suggested trial is inserted into
    ``Trials`` as running before the next one is drawn, and hyperopt's ``tpe.suggest`` gives every
    running (and failed) trial an infinite loss. A pending trial thus sits in TPE's "worse" group,
    which steers the next suggestions away from it — within a batch and across the batches in
    flight (optuna's ``TPESampler(constant_liar=True)`` makes the same choice). Pending trials also
    count towards ``n_startup``, as with one trial per task. ``suggest_batch(1)`` is ``suggest()``.
    """

    def __init__(self, params: SearchParams) -> None:
        self.params = params
        self.space = build_space(params.space)
        self.domain = Domain(lambda _: 0.0, self.space)
        self.trials = Trials()
        self.algo = functools.partial(tpe.suggest, n_startup_jobs=params.n_startup, verbose=False)
        self.seed = params.seed if params.seed is not None else 0  # a run's seed is set by its flow

    @property
    def next_trial_id(self) -> int:
        return max((doc["tid"] for doc in self.trials._dynamic_trials), default=-1) + 1

    def _insert(self, trial_id: int, vals: dict[str, list[Any]], record: TrialRecord | None) -> None:
        idxs = {label: [trial_id] if vals.get(label) else [] for label in self.domain.params}
        misc = {
            "tid": trial_id,
            "cmd": self.domain.cmd,
            "workdir": None,
            "idxs": idxs,
            "vals": {label: list(vals.get(label, [])) for label in self.domain.params},
        }
        doc = self.trials.new_trial_docs([trial_id], [None], [{"status": "new"}], [misc])[0]
        doc["state"] = JOB_STATE_RUNNING
        self.trials.insert_trial_docs([doc])
        self.trials.refresh()
        if record is not None:
            self.finish(record)

    def restore(self, record: TrialRecord) -> None:
        """Add a trial from the store: finished ones with their result, others as running."""
        self._insert(record.trial_id, record.hyperopt_vals, record if record.done else None)

    def suggest(self) -> Suggestion:
        """The next trial, pending (running) from now on until :meth:`finish`."""
        trial_id = self.next_trial_id
        docs = self.algo([trial_id], self.domain, self.trials, self.seed + trial_id)
        vals = {k: [_plain(x) for x in v] for k, v in docs[0]["misc"]["vals"].items()}
        self._insert(trial_id, vals, None)
        return Suggestion(trial_id, vals, self.hyperparams(vals))

    def suggest_batch(self, size: int) -> list[Suggestion]:
        """``size`` trials at once, each drawn with the ones before it pending (the constant liar)."""
        return [self.suggest() for _ in range(size)]

    def hyperparams(self, vals: dict[str, list[Any]]) -> dict[str, Any]:
        """hyperopt's raw values (choice indices …) as the actual hyperparameters."""
        point = hyperopt.space_eval(self.space, {k: v[0] for k, v in vals.items() if v})
        return flatten_point(point)

    def finish(self, record: TrialRecord) -> None:
        """Tell TPE a trial's result (a failed trial is excluded from its model)."""
        for doc in self.trials._dynamic_trials:
            if doc["tid"] == record.trial_id:
                doc["state"] = JOB_STATE_DONE
                doc["result"] = (
                    {"status": STATUS_OK, "loss": record.loss}
                    if record.status == "ok"
                    else {"status": STATUS_FAIL}
                )
                doc["refresh_time"] = now()
        self.trials.refresh()


@functools.lru_cache(maxsize=4)
def _cached_prepared(directory: str, mtime: float) -> Prepared:
    return load_prepared(directory)


def prepared_for_worker(directory: Path | str) -> Prepared:
    """Load prepared data once per worker process (reloaded when it changes on disk)."""
    directory = Path(directory)
    return _cached_prepared(str(directory), (directory / "dataset.pt").stat().st_mtime)


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
    record = TrialRecord(
        run_id=run_id,
        trial_id=trial_id,
        attempt=new_attempt_id(),
        params=hyperparams,
        hyperopt_vals=vals,
        batch=batch,
        device=train.device,
    )
    store.write_trial(record)
    update: dict[str, Any]
    try:
        prepared = prepared_for_worker(prepared_dir)
        train_params = apply_hyperparams(train, hyperparams)
        fitted = fit_and_save(prepared, train_params, evaluate, store.model_dir(record))
        result, val, test = fitted.result, fitted.metrics["val"], fitted.metrics["test"]
        update = {
            "status": "ok",
            "objective": objective_value(evaluate.objective, val),
            "history": result.history,
            "val_metrics": val,
            "test_metrics": test,
            "train_seconds": result.seconds,
            "best_epoch": result.best_epoch,
            "folds": train_params.folds,
            "data_sha256": prepared.data_sha256,
            "hardware": Hardware(device=result.device, gpu=fitted.card.device.get("gpu")),
            "device": result.device,
        }
    except (TrainingError, RuntimeError, ValueError, InputError) as exc:  # torch OOM is a RuntimeError
        update = {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}"[:2000],
            "traceback": traceback.format_exc(limit=5),
        }
    record = record.model_copy(update={**update, "finished": now(), "seconds": time.perf_counter() - started})
    store.write_trial(record)
    return record


def new_batch_id(members: list[Suggestion]) -> str:
    """A batch's name: its first trial and a random suffix (a resumed run re-batches trials)."""
    return f"b{members[0].trial_id:04d}-{secrets.token_hex(3)}"


def run_batch(
    store: Store,
    run_id: str,
    batch: str,
    members: list[Suggestion],
    prepared_dir: Path | str,
    train: TrainParams,
    evaluate: EvaluateParams,
) -> list[TrialRecord]:
    """Train one batch of suggested trials in this process, one after the other, each recorded
    as :func:`run_trial` records it; the prepared data is loaded once per process.

    This is the one place where a vectorised population of same-shape members (one model for
    the whole batch) takes the place of the loop; the records stay per trial.
    """
    return [run_trial(store, run_id, *member, prepared_dir, train, evaluate, batch) for member in members]


def model_fingerprint(params: dict[str, Any], settings: dict[str, Any], data_sha256: str) -> str:
    """What makes a trained model: its hyperparameters, the run's train and prepare settings (seeds
    included) and the data. Two trials with the same fingerprint train the same model."""
    payload = {
        "hyperparameters": params,
        "train": settings.get("train"),
        "prepare": settings.get("prepare"),
        "data": data_sha256,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def register_top(
    store: Store, run_id: str, top_k: int, objective_name: str, prepared: Prepared | None = None
) -> list[RegistryEntry]:
    """Register the ``top_k`` successful trials of a run by objective (the paper passes three).

    A trial that would train the same model as one already registered (same fingerprint: a rerun
    with the same seed and settings) is not registered twice; the registered one stands for it.
    With ``prepared`` (the run's prepared data), each model's reference profile for monitoring is
    saved beside it before it is registered (:func:`tcr_pipeline.monitoring.save_reference`).
    """
    manifest = store.load_manifest(run_id)
    settings = manifest.params if manifest else {}
    top = ranked_trials(store.list_trials(run_id))[:top_k]
    entries = [
        RegistryEntry(
            model_id=model_id_of(run_id, t.trial_id),
            run_id=run_id,
            trial_id=t.trial_id,
            path=str(store.model_dir(t).relative_to(store.root)),
            objective=t.score,
            objective_name=objective_name,
            params=t.params,
            val_metrics=t.val_metrics,
            test_metrics=t.test_metrics,
            data_sha256=t.data_sha256,
            dvc_md5=manifest.dvc_md5 if manifest else None,
            git_commit=manifest.git_commit if manifest else None,
            trained=t.finished,
            fingerprint=model_fingerprint(t.params, settings, t.data_sha256),
        )
        for t in top
    ]
    if prepared is not None:
        for entry in entries:
            save_reference(store, entry, prepared)
    with store.registry_lock():
        registry = store.load_registry()
        by_id = {m.model_id: m for m in registry.models}
        by_fingerprint = {m.fingerprint: m for m in registry.models if m.fingerprint}
        registered = []
        for entry in entries:
            fingerprint = entry.fingerprint or entry.model_id
            known = by_id.get(entry.model_id) or by_fingerprint.get(fingerprint)
            if known is None:
                registry.models.append(entry)
                by_fingerprint[fingerprint] = entry
                known = entry
            if known not in registered:
                registered.append(known)
        store.save_registry(registry)
    return registered


def _scores_on(model_dir: Path, prepared: Prepared, rows: torch.Tensor) -> np.ndarray:
    """A model's scores on prepared rows, decoded and re-encoded by the model's own encoder
    (rows it cannot score count as 0)."""
    frame = prepared.encoder.decode(prepared.features[rows].numpy())
    frame["Epitope"] = prepared.epitopes_of(rows)
    result = predict_frame(load_bundle(model_dir), frame)
    return pd.to_numeric(result["score"], errors="coerce").fillna(0.0).to_numpy()


def _validated_here(model_dir: Path, prepared: Prepared) -> tuple[torch.Tensor, np.ndarray] | None:
    """The bundle's own validation rows and scores, if they index this very prepared data."""
    saved = load_validation(model_dir)
    card = load_card(model_dir)
    same_data = card.data_sha256 == prepared.data_sha256 and card.prepare_params == prepared.meta["params"]
    if saved is None or not same_data:
        return None
    return saved[0], saved[1].numpy().astype(float)


def compare_to_current(
    candidate_dir: Path, current_dir: Path, prepared: Prepared, resamples: int = 1000
) -> tuple[Interval, str]:
    """Candidate − current mean per-epitope AUC with a paired TCR bootstrap, on the same rows.

    The rows are the candidate's validation rows (out-of-fold rows with ``train.folds`` > 1).
    The current model's scores on them are its own saved validation scores when it was
    validated on exactly these rows of the same data (a search on the same data and folds);
    otherwise it scores the decoded rows itself — rows it may have trained on, which favours it,
    so a candidate then has to beat it by more (said in the returned description).
    """
    mine = _validated_here(candidate_dir, prepared)
    if mine is None:
        rows = prepared.rows("val")
        scores_a = _scores_on(candidate_dir, prepared, rows)
    else:
        rows, scores_a = mine
    order = torch.argsort(rows)
    rows, scores_a = rows[order], scores_a[order.numpy()]
    theirs = _validated_here(current_dir, prepared)
    if theirs is not None and torch.equal(torch.sort(theirs[0]).values, rows):
        scores_b = theirs[1][torch.argsort(theirs[0]).numpy()]
        where = f"the same {len(rows)} held-out validation rows"
    else:
        scores_b = _scores_on(current_dir, prepared, rows)
        where = f"{len(rows)} validation rows (the current model may have trained on some)"
    groups = prepared.groups[rows].numpy() if prepared.groups is not None else rows.numpy()
    interval = paired_bootstrap(
        prepared.labels[rows].numpy(), scores_a, scores_b, prepared.epitopes_of(rows), groups, resamples
    )
    return interval, where


def promote_best(
    store: Store,
    candidates: list[RegistryEntry],
    prepared: Prepared,
    evaluate: EvaluateParams,
    force: bool = False,
    resamples: int = 1000,
) -> Promotion | None:
    """Promote the best candidate if it beats the current model beyond the noise.

    The candidate with the best objective is compared with the current model by
    :func:`compare_to_current`: the mean per-epitope ROC-AUC difference on the same rows with a
    95 % paired bootstrap interval over TCRs. It is promoted only when the interval lies above
    zero (or with ``force``). Every comparison is recorded in the registry, promoted or not.
    Returns the promotion, or None when the current model stays.
    """
    if not candidates:
        return None
    best = max(candidates, key=lambda e: e.objective)
    with store.registry_lock():
        registry = store.load_registry()
        current = registry.current_entry
        if current is not None and current.model_id == best.model_id:
            return None
        interval: Interval | None = None
        if current is None:
            reason = "first model"
        else:
            old_path = store.root / current.path
            if old_path.exists():
                interval, where = compare_to_current(store.root / best.path, old_path, prepared, resamples)
                verdict = "beyond noise" if interval.beyond_noise else "inside the noise"
                reason = f"{interval} on {where}: {verdict}"
            else:
                reason = f"the current model's files are gone ({current.path})"
            won = interval is None or interval.beyond_noise
            if interval is not None:
                registry.comparisons.append(
                    Comparison(
                        candidate=best.model_id,
                        current=current.model_id,
                        promoted=won or force,
                        reason=reason + (" (forced)" if force and not won else ""),
                        interval=interval.as_dict(),
                    )
                )
            if not won and not force:
                store.save_registry(registry)
                return None
            if not won:
                reason = f"forced: {reason}"
        promotion = Promotion(
            model_id=best.model_id,
            replaced=current.model_id if current else None,
            reason=reason,
            objective=interval.a if interval is not None else best.objective,
            previous_objective=interval.b if interval is not None else None,
            eval_data_sha256=prepared.data_sha256,
            interval=interval.as_dict() if interval is not None else None,
        )
        registry.current = best.model_id
        registry.history.append(promotion)
        store.save_registry(registry)
    return promotion


__all__ = [
    "SearchDriver",
    "Suggestion",
    "apply_hyperparams",
    "build_space",
    "promote_best",
    "register_top",
    "run_batch",
    "run_trial",
]
