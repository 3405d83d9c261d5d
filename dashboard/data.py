"""What the dashboard reads, cached: the store (incrementally), prepared data and model bundles.

Everything comes through :mod:`tcr_pipeline.store`'s records, :func:`tcr_pipeline.prepare.load_prepared`
and :func:`tcr_pipeline.bundle.load_bundle`; nothing is read at import time.

:class:`StoreReader` re-reads only what changed since its last refresh. Files are written
atomically (a new inode per write), so a file whose ``(inode, mtime, size)`` is unchanged holds
the same record. A trial whose counted attempt has finished is final (the store's rule: the first
finished attempt counts, and a finished record is never rewritten), so a refresh looks only at
trials still running, at new trial directories, at manifests and at the registry. A run that is
not ``running`` is rescanned only when its manifest changes (a resume rewrites it first).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from tcr_pipeline.bundle import (
    CARD_FILE,
    ENCODER_FILE,
    WEIGHTS_FILE,
    Bundle,
    ModelCard,
    load_bundle,
    load_card,
)
from tcr_pipeline.data import COLUMNS
from tcr_pipeline.errors import InputError
from tcr_pipeline.metrics import HEADLINE_METRICS
from tcr_pipeline.monitoring import MonitoringReport, load_report, monitoring_dir, report_names
from tcr_pipeline.prepare import META_FILE, TENSORS_FILE, Prepared, load_prepared
from tcr_pipeline.querylog import QueryLog, query_log_path
from tcr_pipeline.splits import SPLITS
from tcr_pipeline.store import (
    BASELINE_FILE,
    MANIFEST_FILE,
    REGISTRY_FILE,
    TRIAL_FILE,
    Registry,
    RegistryEntry,
    RunManifest,
    Store,
    TrialRecord,
)
from tcr_pipeline.training import balanced_weights

StatKey = tuple[int, int, int]  # inode, mtime_ns, size
T = TypeVar("T")


def _stat_key(path: Path | str) -> StatKey | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _finish_key(record: TrialRecord) -> tuple[datetime, str]:
    return (record.finished or record.started, record.attempt)


def counted_attempt(attempts: list[TrialRecord]) -> TrialRecord | None:
    """The attempt that stands for a trial: the first finished one, else the latest started.

    The same rule as :meth:`tcr_pipeline.store.Store.list_trials` (tests check they agree).
    """
    done = [a for a in attempts if a.done]
    if done:
        return min(done, key=_finish_key)
    # the latest started; of equal start times the first by name (the store scans names in order)
    return min(attempts, key=lambda a: (-a.started.timestamp(), a.attempt), default=None)


@dataclass
class _RunState:
    manifest_key: StatKey | None = None
    manifest: RunManifest | None = None
    scanned_manifest_key: StatKey | None = None  # the manifest version the trials were last scanned at
    final: dict[int, TrialRecord] = field(default_factory=dict)  # trials whose counted attempt finished
    # trials still unfinished: trial id -> attempt name -> (file key, record)
    attempts: dict[int, dict[str, tuple[StatKey, TrialRecord]]] = field(default_factory=dict)
    trials: list[TrialRecord] = field(default_factory=list)


@dataclass
class ReadStats:
    """How much a reader has read (the tests and the benchmark check refreshes stay small)."""

    records_read: int = 0
    unreadable: int = 0
    refreshes: int = 0


class StoreReader:
    """Cached, incremental, thread-safe reads of one store.

    ``refresh()`` brings the cache up to date and returns a version number that grows whenever
    anything the dashboard shows changed; calls closer together than ``min_interval`` seconds
    return at once.
    """

    def __init__(self, store: Store, min_interval: float = 0.5) -> None:
        self.store = store
        self.min_interval = min_interval
        self.version = 0
        self.stats = ReadStats()
        self.problems: dict[str, str] = {}  # file -> why it could not be read
        self._unreadable: dict[str, StatKey] = {}  # not read again until the file changes
        self._runs: dict[str, _RunState] = {}
        self._registry_key: StatKey | None = None
        self._registry = Registry()
        self._lock = threading.Lock()
        self._last_refresh = -math.inf

    # public reads (each refreshes first, at most every min_interval) ---------------------------
    def runs(self) -> list[RunManifest]:
        """Every run with a readable manifest, oldest first."""
        self.refresh()
        with self._lock:
            manifests = [s.manifest for s in self._runs.values() if s.manifest is not None]
        return sorted(manifests, key=lambda m: m.started)

    def manifest(self, run_id: str) -> RunManifest | None:
        self.refresh()
        with self._lock:
            state = self._runs.get(run_id)
            return state.manifest if state else None

    def trials(self, run_id: str) -> list[TrialRecord]:
        """One record per trial (the counted attempt), by trial id."""
        self.refresh()
        with self._lock:
            state = self._runs.get(run_id)
            return list(state.trials) if state else []

    def registry(self) -> Registry:
        self.refresh()
        with self._lock:
            return self._registry

    # refreshing ------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> int:
        """Re-read what changed; returns the version (unchanged when nothing changed)."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_refresh < self.min_interval:
                return self.version
            self._last_refresh = now
            self.stats.refreshes += 1
            changed = self._refresh_registry()
            changed = self._refresh_runs() or changed
            if changed:
                self.version += 1
            return self.version

    def _refresh_registry(self) -> bool:
        key = _stat_key(self.store.root / REGISTRY_FILE)
        if key == self._registry_key:
            return False
        try:
            registry = self.store.load_registry()
        except InputError as exc:
            self.problems[REGISTRY_FILE] = str(exc)
            return False
        self._registry_key, self._registry = key, registry
        self.stats.records_read += 1
        return True

    def _refresh_runs(self) -> bool:
        runs_dir = self.store.root / "runs"
        try:
            names = sorted(e.name for e in os.scandir(runs_dir) if e.is_dir())
        except FileNotFoundError:
            names = []
        changed = False
        for gone in set(self._runs) - set(names):
            del self._runs[gone]
            changed = True
        for run_id in names:
            state = self._runs.setdefault(run_id, _RunState())
            changed = self._refresh_manifest(run_id, state) or changed
            if state.manifest is None:
                continue
            if state.manifest.status != "running" and state.scanned_manifest_key == state.manifest_key:
                continue  # a finished run changes only through its manifest (resume)
            changed = self._refresh_trials(run_id, state) or changed
            state.scanned_manifest_key = state.manifest_key
        return changed

    def _refresh_manifest(self, run_id: str, state: _RunState) -> bool:
        key = _stat_key(self.store.run_dir(run_id) / MANIFEST_FILE)
        if key == state.manifest_key:
            return False
        try:
            manifest = self.store.load_manifest(run_id)
        except InputError as exc:
            self.problems[f"{run_id}/{MANIFEST_FILE}"] = str(exc)
            return False
        state.manifest_key, state.manifest = key, manifest
        self.stats.records_read += 1
        return True

    def _refresh_trials(self, run_id: str, state: _RunState) -> bool:
        # Plain strings and os.scandir: with a thousand trials, pathlib's overhead would dominate.
        trials_dir = os.path.join(self.store.run_dir(run_id), "trials")
        try:
            trial_dirs = [(e.name, e.path) for e in os.scandir(trials_dir) if e.is_dir()]
        except FileNotFoundError:
            return False
        changed = False
        for name, trial_path in trial_dirs:
            try:
                trial_id = int(name)
            except ValueError:
                continue
            if trial_id in state.final:
                continue
            cached = state.attempts.setdefault(trial_id, {})
            records: list[TrialRecord] = []
            for attempt in os.scandir(trial_path):
                if not attempt.is_dir():
                    continue
                path = os.path.join(attempt.path, TRIAL_FILE)
                key = _stat_key(path)
                if key is None:
                    continue
                hit = cached.get(attempt.name)
                if hit is None or hit[0] != key:
                    if self._unreadable.get(path) == key:
                        continue
                    record = self._read_trial(path)
                    if record is None:
                        self._unreadable[path] = key
                        continue
                    hit = cached[attempt.name] = (key, record)
                    changed = True
                records.append(hit[1])
            counted = counted_attempt(records)
            if counted is not None and counted.done:
                state.final[trial_id] = counted
                del state.attempts[trial_id]
            elif not cached:
                del state.attempts[trial_id]
        if changed or len(state.trials) != len(state.final) + len(state.attempts):
            state.trials = self._counted_trials(state)
        return changed

    def _read_trial(self, path: str) -> TrialRecord | None:
        try:
            with open(path) as handle:
                record = TrialRecord.model_validate_json(handle.read())
        except FileNotFoundError:
            return None
        except ValidationError as exc:
            where = os.path.relpath(path, self.store.root)
            self.problems[where] = f"not a valid TrialRecord ({exc.error_count()} errors)"
            self.stats.unreadable += 1
            return None
        self.stats.records_read += 1
        return record

    @staticmethod
    def _counted_trials(state: _RunState) -> list[TrialRecord]:
        chosen = dict(state.final)
        for trial_id, attempts in state.attempts.items():
            counted = counted_attempt([record for _, record in attempts.values()])
            if counted is not None:
                chosen[trial_id] = counted
        return [chosen[t] for t in sorted(chosen)]


# ---------------------------------------------------------------------------------------------
# Summaries the pages show
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    """A run as the overview lists it."""

    manifest: RunManifest
    done: int
    failed: int
    running: int
    best: float | None

    @property
    def progress(self) -> float:
        return self.done / self.manifest.max_evals if self.manifest.max_evals else 0.0


def summarize_run(manifest: RunManifest, trials: list[TrialRecord]) -> RunSummary:
    """Progress and best objective of a run."""
    scores = [t.objective for t in trials if t.status == "ok" and t.objective is not None]
    return RunSummary(
        manifest=manifest,
        done=sum(t.done for t in trials),
        failed=sum(t.status == "failed" for t in trials),
        running=sum(t.status == "running" for t in trials),
        best=max(scores) if scores else None,
    )


def prepared_dir_of(store: Store, manifest: RunManifest | None) -> Path | None:
    """The prepared data a run trained on, if it can be found.

    The manifest records the directory as the search was given it; a relative path is tried
    from the working directory, then beside the store.
    """
    if manifest is None:
        return None
    recorded = (manifest.model_extra or {}).get("prepared_dir")
    if not recorded:
        return None
    path = Path(recorded)
    candidates = [path] if path.is_absolute() else [path, store.root.parent / path, store.root / path]
    return next((c for c in candidates if (c / META_FILE).is_file()), None)


class PreparedCache:
    """Prepared data sets loaded once (reloaded when ``dataset.pt`` changes), with derived tables."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._cache: OrderedDict[tuple[str, int], Prepared] = OrderedDict()
        # (id of the data, table name) -> (the data, the table): holding the data keeps its id unique
        self._tables: OrderedDict[tuple[int, str], tuple[Prepared, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def table(self, prepared: Prepared, name: str, build: Callable[[Prepared], T]) -> T:
        """``build(prepared)``, computed once per data set and name."""
        key = (id(prepared), name)
        with self._lock:
            if key in self._tables:
                self._tables.move_to_end(key)
                return self._tables[key][1]
        value = build(prepared)
        with self._lock:
            self._tables[key] = (prepared, value)
            while len(self._tables) > 8 * self.size:
                self._tables.popitem(last=False)
        return value

    def get(self, directory: Path) -> Prepared:
        key = (str(directory.resolve()), (directory / TENSORS_FILE).stat().st_mtime_ns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        prepared = load_prepared(directory)
        with self._lock:
            self._cache[key] = prepared
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return prepared


@dataclass(frozen=True)
class ModelFiles:
    """Whether a registered model's bundle is on disk."""

    path: Path
    available: bool
    missing: tuple[str, ...]


def model_files(store: Store, entry: RegistryEntry) -> ModelFiles:
    """Check that a registered model's weights, encoder and card are all present."""
    path = store.root / entry.path
    missing = tuple(f for f in (WEIGHTS_FILE, ENCODER_FILE, CARD_FILE) if not (path / f).is_file())
    return ModelFiles(path=path, available=not missing, missing=missing)


class ModelCache:
    """Model bundles loaded once each and kept (the current best and the last few used).

    A bundle is keyed by its model id and its card's ``(inode, mtime, size)``, so a model that
    is replaced on disk is loaded again; a newly promoted best is a new id, loaded on first use.
    """

    def __init__(self, store: Store, size: int = 4) -> None:
        self.store = store
        self.size = size
        self.loads = 0
        self._cache: OrderedDict[tuple[str, StatKey | None], Bundle] = OrderedDict()
        self._cards: dict[tuple[str, StatKey | None], ModelCard] = {}
        self._lock = threading.Lock()

    def get(self, entry: RegistryEntry) -> Bundle:
        path = self.store.root / entry.path
        key = (entry.model_id, _stat_key(path / CARD_FILE))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            bundle = load_bundle(path)
            self.loads += 1
            self._cache[key] = bundle
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
            return bundle

    def card(self, entry: RegistryEntry) -> ModelCard | None:
        """A model's card (cheap: no weights), or None when the bundle is gone."""
        path = self.store.root / entry.path
        key = (entry.model_id, _stat_key(path / CARD_FILE))
        if key[1] is None:
            return None
        with self._lock:
            if key not in self._cards:
                try:
                    self._cards[key] = load_card(path)
                except InputError:
                    return None
            return self._cards[key]


class ReportCache:
    """Monitoring reports, each read once (and again only if its file changes).

    A report is written once, atomically, by ``tcr-pipeline monitor``; :meth:`signature` is one
    directory listing and one ``stat``, so a page can poll it on every tick.
    """

    def __init__(self, store: Store, limit: int = 200) -> None:
        self.store = store
        self.limit = limit
        self.loads = 0
        self.problems: dict[str, str] = {}  # report name -> why it could not be read
        self._cache: dict[str, tuple[StatKey | None, MonitoringReport]] = {}
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        return monitoring_dir(self.store) / f"{name}.json"

    def signature(self) -> list[Any]:
        """Changes when a report is added or the newest one is rewritten (JSON-friendly)."""
        names = report_names(self.store)
        if not names:
            return [0, "", None]
        key = _stat_key(self._path(names[-1]))
        return [len(names), names[-1], list(key) if key else None]

    def reports(self) -> list[MonitoringReport]:
        """The newest ``limit`` reports, oldest first; unreadable ones are skipped (see ``problems``)."""
        names = report_names(self.store)[-self.limit :] if self.limit > 0 else []
        out = []
        with self._lock:
            for name in names:
                key = _stat_key(self._path(name))
                hit = self._cache.get(name)
                if hit is None or hit[0] != key:
                    try:
                        report = load_report(self.store, name)
                    except InputError as exc:
                        self.problems[name] = str(exc)
                        continue
                    if report is None:
                        continue
                    self.problems.pop(name, None)
                    hit = self._cache[name] = (key, report)
                    self.loads += 1
                out.append(hit[1])
            for gone in set(self._cache) - set(names):
                del self._cache[gone]
        return out


@dataclass
class Dashboard:
    """Everything the pages' callbacks read, made once per app."""

    store: Store
    reader: StoreReader
    models: ModelCache
    prepared: PreparedCache
    queries: QueryLog
    reports: ReportCache
    refresh_ms: int = 5000
    max_rows: int = 1000
    max_bytes: int = 256 * 1024
    _baselines: dict[str, tuple[StatKey | None, dict[str, dict[str, float]] | None]] = field(
        default_factory=dict, repr=False, init=False
    )

    @classmethod
    def open(cls, store_root: Path | str, refresh_ms: int = 5000, **limits: int) -> Dashboard:
        store = Store(store_root)
        return cls(
            store=store,
            reader=StoreReader(store),
            models=ModelCache(store),
            prepared=PreparedCache(),
            queries=QueryLog(query_log_path(store.root)),
            reports=ReportCache(store),
            refresh_ms=refresh_ms,
            **limits,
        )

    # registry helpers ------------------------------------------------------------------------
    def ranked_models(self) -> list[RegistryEntry]:
        """Registered models, best objective first."""
        return sorted(self.reader.registry().models, key=lambda e: (-e.objective, e.model_id))

    def predict_choices(self, top: int = 3) -> list[RegistryEntry]:
        """The models the Predict page offers: the current best first, then the top ``top``."""
        registry = self.reader.registry()
        ranked = self.ranked_models()[:top]
        current = registry.current_entry
        if current is None:
            return ranked
        return [current, *(e for e in ranked if e.model_id != current.model_id)]

    def entry(self, model_id: str | None) -> RegistryEntry | None:
        registry = self.reader.registry()
        if not model_id:
            return registry.current_entry
        return registry.get(model_id)

    def prepared_for(self, entry: RegistryEntry) -> tuple[Prepared | None, str]:
        """The prepared data a model was trained on, or None and why not."""
        return self.prepared_for_run(entry.run_id, entry.data_sha256)

    def prepared_for_run(self, run_id: str, data_sha256: str = "") -> tuple[Prepared | None, str]:
        """The prepared data of a run (checked against ``data_sha256`` when given), or None and why not."""
        manifest = self.reader.manifest(run_id)
        directory = prepared_dir_of(self.store, manifest)
        if directory is None:
            recorded = (manifest.model_extra or {}).get("prepared_dir") if manifest else None
            return (
                None,
                f"the prepared data of run {run_id} ({recorded or 'not recorded'}) is not on this machine",
            )
        try:
            prepared = self.prepared.get(directory)
        except (InputError, OSError, KeyError) as exc:
            return None, f"{directory}: {exc}"
        expected = data_sha256 or (manifest.data_sha256 if manifest else "")
        if expected and prepared.data_sha256 != expected:
            return None, (
                f"{directory} now holds data {prepared.data_sha256[:12]}, "
                f"but run {run_id} used {expected[:12]}"
            )
        return prepared, ""

    def baseline(self, run_id: str) -> dict[str, dict[str, float]] | None:
        """The run's k-mer baseline metrics (``{"val": {...}, "test": {...}}``) through
        :meth:`Store.load_baseline`, read again only when ``baseline.json`` changes; None when the
        run has none (older runs, or the baseline task has not finished)."""
        key = _stat_key(self.store.run_dir(run_id) / BASELINE_FILE)
        hit = self._baselines.get(run_id)
        if hit is not None and hit[0] == key:
            return hit[1]
        try:
            metrics = self.store.load_baseline(run_id) if key is not None else None
        except (InputError, OSError, ValueError):
            metrics = None
        self._baselines[run_id] = (key, metrics)
        return metrics

    def latest_run(self) -> RunManifest | None:
        runs = self.reader.runs()
        return runs[-1] if runs else None


# ---------------------------------------------------------------------------------------------
# Tables derived from prepared data (pure)
# ---------------------------------------------------------------------------------------------


def epitope_counts(prepared: Prepared) -> pd.DataFrame:
    """Positives and negatives per epitope and split: columns epitope, split, positive, negative."""
    frame = pd.DataFrame(
        {
            "epitope": np.asarray(prepared.epitope_names)[prepared.epitope.numpy()],
            "split": np.asarray(SPLITS)[prepared.split.numpy()],
            "label": prepared.labels.numpy().astype(int),
        }
    )
    counts = frame.groupby(["epitope", "split"])["label"].agg(positive="sum", total="count").reset_index()
    counts["negative"] = counts["total"] - counts["positive"]
    return counts[["epitope", "split", "positive", "negative"]]


def sampler_counts(prepared: Prepared, balanced: bool, seed: int = 0) -> pd.DataFrame:
    """What one training epoch draws, per epitope and class, next to the training split itself.

    With ``balanced`` the draw is the training loop's: ``n_train`` rows with replacement,
    weighted by :func:`tcr_pipeline.training.balanced_weights`; without, each row once.
    Columns: epitope, label (``positive``/``negative``), split_rows, drawn, distinct.
    """
    import torch

    rows = prepared.rows("train")
    labels = prepared.labels[rows]
    epitopes = prepared.epitope[rows].numpy()
    if balanced and len(rows):
        generator = torch.Generator().manual_seed(seed)
        order = torch.multinomial(balanced_weights(labels), len(rows), replacement=True, generator=generator)
        drawn = np.bincount(order.numpy(), minlength=len(rows))
    else:
        drawn = np.ones(len(rows), dtype=np.int64)
    frame = pd.DataFrame(
        {
            "epitope": np.asarray(prepared.epitope_names)[epitopes],
            "label": np.where(labels.numpy() > 0.5, "positive", "negative"),
            "split_rows": 1,
            "drawn": drawn,
            "distinct": (drawn > 0).astype(int),
        }
    )
    return frame.groupby(["epitope", "label"], as_index=False)[["split_rows", "drawn", "distinct"]].sum()


def example_rows(prepared: Prepared, n: int = 10, seed: int | None = None) -> pd.DataFrame:
    """``n`` rows sampled from the test split, decoded back to readable form by the encoder.

    Columns in the paper's CSV order; ``Label`` is the true label, ``clone_id`` is decoded when
    the encoder carries it and empty otherwise.
    """
    rows = prepared.rows("test").numpy()
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False))
    decoded = prepared.encoder.decode(prepared.features[chosen].numpy())
    decoded["Epitope"] = np.asarray(prepared.epitope_names)[prepared.epitope[chosen].numpy()]
    if "clone_id" not in decoded.columns:
        decoded["clone_id"] = ""
    decoded["Label"] = prepared.labels[chosen].numpy().astype(int).astype(str)
    return decoded[list(COLUMNS)].reset_index(drop=True)


def metric_value(metrics: dict[str, float], name: str) -> float | None:
    """A metric as a finite float, or None."""
    value = metrics.get(name)
    return float(value) if value is not None and math.isfinite(value) else None


def describe_entry(entry: RegistryEntry) -> dict[str, Any]:
    """The hyperparameters of a registered model, flat and readable."""
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in entry.params.items()}


# ---------------------------------------------------------------------------------------------
# Reference points for a model's metrics: the k-mer baseline and "always negative"
# ---------------------------------------------------------------------------------------------


def positive_rate(metrics: dict[str, float]) -> float | None:
    """The share of positives in the split the metrics were computed on (from the confusion
    counts ``tp``, ``fn``, ``tn``, ``fp``), or None when the counts are not stored."""
    try:
        tp, fn, tn, fp = (float(metrics[k]) for k in ("tp", "fn", "tn", "fp"))
    except KeyError:
        return None
    total = tp + fn + tn + fp
    return (tp + fn) / total if total else None


def always_negative(rate: float | None) -> dict[str, float]:
    """The headline metrics of a model that never predicts binding, on data with positive share
    ``rate``: accuracy ``1 - rate``, ROC-AUCs 0.5 (a constant score ranks nothing), precision,
    recall and predicted/actual positives 0, average precision ``rate`` (a constant score's
    precision at every recall), the paper objective ``1 - rate`` (accuracy alone: no ratio or
    precision term). Without ``rate`` only the rate-free values."""
    values = {"precision": 0.0, "recall": 0.0, "positive_ratio": 0.0, "roc_auc": 0.5, "mean_epitope_auc": 0.5}
    if rate is not None:
        values.update(accuracy=1.0 - rate, average_precision=rate, paper_objective=1.0 - rate)
    return values


@dataclass(frozen=True)
class Reference:
    """A model's headline metrics on one split beside the k-mer baseline's and always-negative's."""

    split: str
    model: dict[str, float]
    baseline: dict[str, float] | None
    negative: dict[str, float]

    def rows(self) -> list[dict[str, Any]]:
        """One row per headline metric: model, baseline, always negative, model − baseline."""
        out = []
        for name in HEADLINE_METRICS:
            model = metric_value(self.model, name)
            base = metric_value(self.baseline, name) if self.baseline else None
            out.append(
                {
                    "metric": name,
                    "model": model,
                    "baseline": base,
                    "always_negative": self.negative.get(name),
                    "delta": model - base if model is not None and base is not None else None,
                }
            )
        return out


def reference(split: str, model: dict[str, float], baseline: dict[str, dict[str, float]] | None) -> Reference:
    """The reference points for a model's metrics on ``split`` (``val`` or ``test``)."""
    return Reference(
        split=split,
        model=model,
        baseline=(baseline or {}).get(split) or None,
        negative=always_negative(positive_rate(model)),
    )


def promotion_interval(promotion: Any) -> dict[str, Any] | None:
    """The optional bootstrap interval a promotion record may carry (``interval``: metric, delta,
    low, high, resamples), or None when the record has none or it is malformed."""
    # an extra field today; a typed field (a dict or a pydantic model) once the store declares it
    interval: Any = getattr(promotion, "interval", None)
    if interval is None:
        interval = (getattr(promotion, "model_extra", None) or {}).get("interval")
    if isinstance(interval, BaseModel):
        interval = interval.model_dump()
    if not isinstance(interval, dict):
        return None
    try:
        return {
            "metric": str(interval.get("metric", "objective")),
            "delta": float(interval["delta"]),
            "low": float(interval["low"]),
            "high": float(interval["high"]),
            "resamples": int(interval["resamples"]) if interval.get("resamples") is not None else None,
        }
    except (KeyError, TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Every trial of every run as one table (the Trials page)
# ---------------------------------------------------------------------------------------------

SPLIT_PREFIX = {"val": "val", "test": "test"}


def trial_key(run_id: str, trial_id: int) -> str:
    """A trial's id across runs (the registry's model id format)."""
    return f"{run_id}/{trial_id:04d}"


def trial_row(trial: TrialRecord) -> dict[str, Any]:
    """One trial flattened: ids, status, objective, times, host, every hyperparameter
    (``param:NAME``) and every metric (``val:NAME`` / ``test:NAME``)."""
    history = trial.history
    losses = [h.get("val_loss", math.nan) for h in history]
    finite = [(v, i) for i, v in enumerate(losses) if math.isfinite(v)]
    row: dict[str, Any] = {
        "key": trial_key(trial.run_id, trial.trial_id),
        "run": trial.run_id,
        "trial": trial.trial_id,
        "status": trial.status,
        "objective": trial.objective if trial.status == "ok" else None,
        "epochs": len(history),
        "best_val_loss_epoch": int(history[min(finite)[1]].get("epoch", min(finite)[1] + 1))
        if finite
        else None,
        "seconds": trial.seconds,
        "host": trial.hardware.host,
        "device": trial.hardware.device,
        "started": trial.started,
        "error": trial.error or "",
    }
    for name, value in trial.params.items():
        row[f"param:{name}"] = value
    for split, metrics in (("val", trial.val_metrics), ("test", trial.test_metrics)):
        for name, value in metrics.items():
            row[f"{split}:{name}"] = value
    return row


def all_trial_rows(ctx: Dashboard) -> list[dict[str, Any]]:
    """Every trial of every run, newest run first, by trial id."""
    rows = []
    for manifest in sorted(ctx.reader.runs(), key=lambda m: m.started, reverse=True):
        rows += [trial_row(t) for t in ctx.reader.trials(manifest.run_id)]
    return rows


# ---------------------------------------------------------------------------------------------
# Hyperparameter importance
# ---------------------------------------------------------------------------------------------

MIN_IMPORTANCE_TRIALS = 5


@dataclass(frozen=True)
class Importance:
    """Permutation importance of each hyperparameter for a run's objective."""

    names: list[str]
    mean: list[float]
    std: list[float]
    trials: int
    r2: float  # the forest's fit on the trials it was fitted on (how much there is to explain)
    reason: str = ""  # why there is no result, when there is none


def encode_hyperparameters(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Hyperparameters as numbers: numeric columns as they are, others as category codes (a
    tree splits on codes as well as on numbers; order does not matter for permutation)."""
    encoded = {}
    for name in names:
        numeric = pd.to_numeric(frame[name], errors="coerce")
        if numeric.notna().all():
            encoded[name] = numeric.astype(float)
        else:
            encoded[name] = frame[name].astype(str).astype("category").cat.codes.astype(float)
    return pd.DataFrame(encoded, index=frame.index)


IMPORTANCE_TREES = 100
IMPORTANCE_REPEATS = 10


def hyperparameter_importance(
    frame: pd.DataFrame, names: list[str], repeats: int = IMPORTANCE_REPEATS, seed: int = 0
) -> Importance:
    """Which hyperparameters the objective depends on, as a random forest sees it.

    A random forest (scikit-learn, 100 trees) is fitted to predict the objective from the
    hyperparameters of the run's successful trials; each hyperparameter's importance is the mean
    drop in the forest's R² when that column alone is shuffled (``permutation_importance``,
    ``repeats`` shuffles; the spread is their standard deviation), on the same trials. It ranks
    what the forest relies on, not a causal effect; hyperparameters the search held constant
    get 0; with few trials it is noisy. ``frame`` has ``objective`` and a column per name.
    """
    ok = frame[frame["objective"].notna()] if "objective" in frame else frame.iloc[0:0]
    names = [n for n in names if n in ok.columns and ok[n].notna().all()]
    if len(ok) < MIN_IMPORTANCE_TRIALS or not names:
        why = (
            f"needs at least {MIN_IMPORTANCE_TRIALS} successful trials (this run has {len(ok)})"
            if len(ok) < MIN_IMPORTANCE_TRIALS
            else "no hyperparameter recorded on every successful trial"
        )
        return Importance([], [], [], len(ok), math.nan, why)
    from sklearn.ensemble import RandomForestRegressor  # here, not at import: ≈ 1 s
    from sklearn.inspection import permutation_importance

    x = encode_hyperparameters(ok, names)
    y = ok["objective"].astype(float).to_numpy()
    forest = RandomForestRegressor(n_estimators=IMPORTANCE_TREES, random_state=seed, n_jobs=1)
    forest.fit(x, y)
    result = permutation_importance(forest, x, y, n_repeats=repeats, random_state=seed, n_jobs=1)
    return Importance(
        names=names,
        mean=[float(v) for v in result.importances_mean],
        std=[float(v) for v in result.importances_std],
        trials=len(ok),
        r2=float(forest.score(x, y)),
    )


def epitope_positives(prepared: Prepared, split: str) -> dict[str, int]:
    """Positives per epitope in one split of the prepared data (every epitope of the data, zero
    when it has none in that split)."""
    counts = epitope_counts(prepared)
    chosen = counts[counts["split"] == split].groupby("epitope")["positive"].sum()
    return {str(e): int(chosen.get(e, 0)) for e in prepared.epitope_names}
