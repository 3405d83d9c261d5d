"""The prepared data a run trained on, found through its manifest, and the tables shown of it.

A run's manifest records ``prepared_dir`` as the search was given it; the data itself lives
outside the store (``data/prepared`` by default) and may be gone or replaced, so every lookup
says why it found nothing. Not imported by ``tcr_pipeline.store`` itself (it needs torch):
``from tcr_pipeline.store.run_data import …``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from tcr_pipeline.data import COLUMNS
from tcr_pipeline.errors import InputError
from tcr_pipeline.prepare import META_FILE, TENSORS_FILE, Prepared, load_prepared
from tcr_pipeline.splits import SPLITS
from tcr_pipeline.store.file_store import Store
from tcr_pipeline.store.records import RunManifest
from tcr_pipeline.training import balanced_weights

T = TypeVar("T")

__all__ = [
    "COLUMNS",
    "Prepared",
    "PreparedCache",
    "epitope_counts",
    "epitope_positives",
    "example_rows",
    "prepared_dir_of",
    "run_prepared",
    "sampler_counts",
]


def prepared_dir_of(store: Store, manifest: RunManifest | None) -> Path | None:
    """The prepared data a run trained on, if it can be found.

    The manifest records the directory as the search was given it; a relative path is tried
    from the working directory, then beside the store.
    """
    if manifest is None or not manifest.prepared_dir:
        return None
    path = Path(manifest.prepared_dir)
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


def run_prepared(
    store: Store, run_id: str, manifest: RunManifest | None, cache: PreparedCache, data_sha256: str = ""
) -> tuple[Prepared | None, str]:
    """The prepared data of a run (checked against ``data_sha256``, else the manifest's), or None
    and why not."""
    directory = prepared_dir_of(store, manifest)
    if directory is None:
        recorded = manifest.prepared_dir if manifest else None
        where = recorded or "not recorded"
        return None, f"the prepared data of run {run_id} ({where}) is not on this machine"
    try:
        prepared = cache.get(directory)
    except (InputError, OSError, KeyError) as exc:
        return None, f"{directory}: {exc}"
    expected = data_sha256 or (manifest.data_sha256 if manifest else "")
    if expected and prepared.data_sha256 != expected:
        return None, (
            f"{directory} now holds data {prepared.data_sha256[:12]}, but run {run_id} used {expected[:12]}"
        )
    return prepared, ""


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


def epitope_positives(prepared: Prepared, split: str) -> dict[str, int]:
    """Positives per epitope in one split of the prepared data (every epitope of the data, zero
    when it has none in that split)."""
    counts = epitope_counts(prepared)
    chosen = counts[counts["split"] == split].groupby("epitope")["positive"].sum()
    return {str(e): int(chosen.get(e, 0)) for e in prepared.epitope_names}


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
