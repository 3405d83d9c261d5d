"""What the dashboard reads, cached: the store, prepared data, model bundles and reports.

Everything comes through :mod:`tcr_pipeline.store` (its cached :class:`StoreReader`, the run
summaries, a run's prepared data in :mod:`tcr_pipeline.store.run_data`) and
:func:`tcr_pipeline.bundle.load_bundle`; monitoring reports through :mod:`tcr_pipeline.monitoring`.
Nothing is read at import time.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tcr_pipeline.bundle import (
    CARD_FILE,
    ENCODER_FILE,
    WEIGHTS_FILE,
    Bundle,
    ModelCard,
    load_bundle,
    load_card,
)
from tcr_pipeline.errors import InputError
from tcr_pipeline.metrics import HEADLINE_METRICS
from tcr_pipeline.store import (
    BASELINE_FILE,
    Comparison,
    MonitoringReport,
    Promotion,
    QueryLog,
    RegistryEntry,
    RunManifest,
    StatKey,
    Store,
    StoreReader,
    TrialRecord,
    load_report,
    monitoring_dir,
    query_log_path,
    report_names,
    stat_key,
)
from tcr_pipeline.store.run_data import Prepared, PreparedCache, run_prepared


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
        key = (entry.model_id, stat_key(path / CARD_FILE))
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
        key = (entry.model_id, stat_key(path / CARD_FILE))
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
        key = stat_key(self._path(names[-1]))
        return [len(names), names[-1], list(key) if key else None]

    def reports(self) -> list[MonitoringReport]:
        """The newest ``limit`` reports, oldest first; unreadable ones are skipped (see ``problems``)."""
        names = report_names(self.store)[-self.limit :] if self.limit > 0 else []
        out = []
        with self._lock:
            for name in names:
                key = stat_key(self._path(name))
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
        return run_prepared(self.store, run_id, self.reader.manifest(run_id), self.prepared, data_sha256)

    def baseline(self, run_id: str) -> dict[str, dict[str, float]] | None:
        """The run's k-mer baseline metrics (``{"val": {...}, "test": {...}}``) through
        :meth:`Store.load_baseline`, read again only when ``baseline.json`` changes; None when the
        run has none (older runs, or the baseline task has not finished)."""
        key = stat_key(self.store.run_dir(run_id) / BASELINE_FILE)
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


def promotion_interval(promotion: Promotion | Comparison) -> dict[str, Any] | None:
    """The bootstrap interval a promotion or comparison carries (``interval``: metric, delta,
    low, high, resamples), or None when it has none or it is malformed."""
    interval: Any = promotion.interval
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
        "objective": trial.objective if trial.scored else None,
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
