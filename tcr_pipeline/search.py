"""Asynchronous hyperopt TPE search in batches of suggestions, with its state kept in the store.

hyperopt has no ask/tell API. :class:`SearchDriver` drives ``tpe.suggest`` with a ``Trials``
object: ``suggest`` asks for one new point (seeded by ``seed + trial_id``, so the random startup
trials are reproducible), ``suggest_batch`` for several at once, ``finish`` tells a result. Its
state is rebuilt from the store's trial records, never from a pickle, so a search resumes on any
host. :mod:`tcr_pipeline.trials` runs the suggestions, :mod:`tcr_pipeline.promotion` registers
and promotes the best, :mod:`tcr_pipeline.search_run` opens and closes a run.

The orchestration (parallel workers, resubmission) lives in ``flows/``; this module is pure.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import hyperopt
import numpy as np
from hyperopt import JOB_STATE_DONE, JOB_STATE_RUNNING, STATUS_FAIL, STATUS_OK, Trials, hp, tpe
from hyperopt.base import Domain

from tcr_pipeline.config import Dimension, SearchParams, apply_hyperparams
from tcr_pipeline.store import (
    TrialRecord,
    now,
)

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


__all__ = ["SearchDriver", "Suggestion", "apply_hyperparams", "build_space", "flatten_point"]
