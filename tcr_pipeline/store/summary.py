"""What a run amounts to, by one rule each: which attempt counts for a trial, which trial is best.

- **Counted attempt**: a trial counts by its first finished attempt (``ok`` or ``failed``, the
  earliest ``finished``, then the first by name); while none has finished, by the latest started
  (of equal start times, the first by name). A worker presumed dead that comes back and finishes
  too is ignored: a trial is never counted twice. :meth:`Store.list_trials`, the cached
  :class:`~tcr_pipeline.store.reader.StoreReader` and ``run_trial`` all use :func:`counted_attempt`.
- **Best trial**: of the trials that are :attr:`TrialRecord.scored` (``ok`` with an objective),
  the highest objective; of equal objectives, the lowest trial id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from tcr_pipeline.store.records import RunManifest, TrialRecord

if TYPE_CHECKING:
    import pandas as pd

    from tcr_pipeline.store.file_store import Store


def _finish_key(record: TrialRecord) -> tuple[datetime, str]:
    return (record.finished or record.started, record.attempt)


def counted_attempt(attempts: Iterable[TrialRecord]) -> TrialRecord | None:
    """The attempt that stands for a trial: the first finished one, else the latest started."""
    attempts = list(attempts)
    done = [a for a in attempts if a.done]
    if done:
        return min(done, key=_finish_key)
    return min(attempts, key=lambda a: (-a.started.timestamp(), a.attempt), default=None)


def scored_trials(trials: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The trials that can be the best: ``ok`` with an objective (:attr:`TrialRecord.scored`)."""
    return [t for t in trials if t.scored]


def ranked_trials(trials: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The scored trials, best first (highest objective, then lowest trial id)."""
    return sorted(scored_trials(trials), key=lambda t: (-t.score, t.trial_id))


def best_trial(trials: Iterable[TrialRecord]) -> TrialRecord | None:
    """The best trial of a run, None when no trial is scored."""
    ranked = ranked_trials(trials)
    return ranked[0] if ranked else None


def best_objective(trials: Iterable[TrialRecord]) -> float | None:
    """The best trial's objective, None when no trial is scored."""
    best = best_trial(trials)
    return best.objective if best else None


@dataclass(frozen=True)
class RunSummary:
    """A run at a glance: progress, failures, the best trial."""

    manifest: RunManifest
    trials: int  # counted trials (one per trial id)
    done: int
    ok: int  # scored: ok with an objective
    failed: int
    running: int
    best_trial: TrialRecord | None

    @property
    def best(self) -> float | None:
        """The best objective, None when no trial is scored."""
        return self.best_trial.objective if self.best_trial else None

    @property
    def progress(self) -> float:
        return self.done / self.manifest.max_evals if self.manifest.max_evals else 0.0


def summarize_run(manifest: RunManifest, trials: list[TrialRecord]) -> RunSummary:
    """A run's summary from its counted trials (``Store.list_trials`` or ``StoreReader.trials``)."""
    return RunSummary(
        manifest=manifest,
        trials=len(trials),
        done=sum(t.done for t in trials),
        ok=len(scored_trials(trials)),
        failed=sum(t.status == "failed" for t in trials),
        running=sum(t.status == "running" for t in trials),
        best_trial=best_trial(trials),
    )


DATA_VERSION_COLUMNS = ["model_id", "current", "promoted", "objective", "trained", "data_sha256", "dvc_md5",
                        "data_path"]  # fmt: skip


def data_versions(store: Store) -> pd.DataFrame:
    """Every registered model with the data version it was trained on (sha256, DVC md5, path)."""
    import pandas as pd  # not at import: `import tcr_pipeline.store` stays light

    registry = store.load_registry()
    promoted = {p.model_id: p.promoted for p in registry.history}
    manifests = {m.run_id: m for m in store.list_runs()}
    rows = []
    for entry in registry.models:
        manifest = manifests.get(entry.run_id)
        rows.append(
            {
                "model_id": entry.model_id,
                "current": entry.model_id == registry.current,
                "promoted": promoted.get(entry.model_id),
                "objective": entry.objective,
                "trained": entry.trained,
                "data_sha256": entry.data_sha256,
                "dvc_md5": entry.dvc_md5,
                "data_path": manifest.data_path if manifest else None,
            }
        )
    return pd.DataFrame(rows, columns=DATA_VERSION_COLUMNS)
