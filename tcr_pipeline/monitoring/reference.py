"""The reference profile a model is monitored against: how it is built and where it comes from.

A profile summarises the rows the model **trained on** — the training split, or the training
and validation splits pooled when ``train.folds`` > 1 (each fold model learns from the others'
rows) — and holds the model's scores on its test split, the reference of its predictions.

It is built from the prepared data when the model is **registered**
(:func:`save_reference`, called by ``promotion.register_top``) and saved beside the model
(:func:`tcr_pipeline.store.reports.reference_path`), so monitoring never reads the raw
data again. A model registered before profiles were saved gets one on its first monitoring run,
from a training CSV passed explicitly (``reference_data``), else its run's prepared directory,
else the raw CSV its run manifest names (``data_path``) when that file still holds the model's
data version; else a one-line :class:`InputError` says what was tried.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from tcr_pipeline.bundle import Bundle, ModelCard, load_bundle, predict_frame
from tcr_pipeline.config import PrepareParams
from tcr_pipeline.data import load_pairs
from tcr_pipeline.errors import InputError
from tcr_pipeline.files import sha256_file
from tcr_pipeline.metrics import compute_metrics
from tcr_pipeline.monitoring.statistics import (
    CDR3_FEATURES,
    GENE_FEATURES,
    PAIR_FEATURES,
    category_counts,
    distinct_tcrs,
    length_counts,
    normalise_names,
)
from tcr_pipeline.prepare import Prepared, load_prepared
from tcr_pipeline.splits import SPLITS, split_pairs
from tcr_pipeline.store import RegistryEntry, Store
from tcr_pipeline.store.reports import ReferenceProfile, load_reference, write_reference


def trained_splits(card: ModelCard) -> tuple[str, ...]:
    """The splits a model learned from: train, plus val when it is K fold models (``train.folds`` > 1)."""
    return ("train", "val") if int(card.train_params.get("folds", 1)) > 1 else ("train",)


def score_labelled(
    bundle: Bundle, frame: pd.DataFrame, source: str, threshold: float
) -> tuple[pd.Series, dict[str, float]]:
    """A model's scores on labelled rows (NaN where it cannot score) and its overall metrics.

    Rows the model cannot represent count as a score of 0 in the metrics, as in promotion.
    Per-epitope metrics (``auc/<epitope>`` …) are left out.
    """
    result = predict_frame(bundle, frame.reset_index(drop=True), source)
    scores = pd.to_numeric(result["score"], errors="coerce")
    metrics = compute_metrics(
        frame["Label"].astype(int).to_numpy(),
        scores.fillna(0.0).to_numpy(),
        frame["Epitope"].astype(str).to_numpy(),
        threshold,
    )
    return scores, {k: v for k, v in metrics.items() if "/" not in k}


def build_reference(
    model_id: str,
    bundle: Bundle,
    trained: pd.DataFrame,
    test: pd.DataFrame,
    source: str,
    splits: tuple[str, ...] = ("train",),
) -> ReferenceProfile:
    """The reference profile of a model from the rows it trained on and its test rows (pair tables)."""
    trained = normalise_names(trained)
    tcrs = distinct_tcrs(trained)
    categories = {c: category_counts(trained[c]) for c in PAIR_FEATURES}
    categories |= {c: category_counts(tcrs[c]) for c in GENE_FEATURES}
    threshold = bundle.card.evaluate.threshold
    scores, metrics = score_labelled(bundle, test, f"{source} test split", threshold)
    values = scores.fillna(0.0).to_numpy()
    return ReferenceProfile(
        model_id=model_id,
        data_sha256=bundle.card.data_sha256,
        source=source,
        splits=list(splits),
        train_rows=len(trained),
        train_tcrs=len(tcrs),
        categories=categories,
        lengths={c: length_counts(tcrs[c]) for c in CDR3_FEATURES},
        residues={c: "".join(sorted(set("".join(tcrs[c].astype(str))))) for c in CDR3_FEATURES},
        threshold=threshold,
        test_scores=[round(float(s), 6) for s in values],
        test_positive_rate=float((values >= threshold).mean()) if len(values) else math.nan,
        test_metrics=metrics,
    )


def decoded_rows(prepared: Prepared, splits: tuple[str, ...]) -> pd.DataFrame:
    """The rows of ``splits`` as a labelled pair table, decoded from the prepared features."""
    frames = []
    for split in splits:
        rows = prepared.rows(split)
        frame = prepared.encoder.decode(prepared.features[rows].numpy())
        frame["Epitope"] = prepared.epitopes_of(rows)
        frame["Label"] = prepared.labels[rows].numpy().astype(int)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _same_data(card: ModelCard, prepared: Prepared) -> bool:
    return prepared.data_sha256 == card.data_sha256 and prepared.meta["params"] == card.prepare_params


def reference_from_prepared(
    model_id: str, bundle: Bundle, prepared: Prepared, source: str
) -> ReferenceProfile:
    """A model's reference profile from the prepared data it trained on (checked against its card)."""
    if not _same_data(bundle.card, prepared):
        raise InputError(
            f"model {model_id}: {source} holds data {prepared.data_sha256[:12]} or prepare settings "
            f"other than the model's (data {bundle.card.data_sha256[:12]})"
        )
    splits = trained_splits(bundle.card)
    return build_reference(
        model_id, bundle, decoded_rows(prepared, splits), decoded_rows(prepared, ("test",)), source, splits
    )


def reference_from_raw(model_id: str, bundle: Bundle, raw: Path) -> ReferenceProfile:
    """A model's reference profile from its raw training CSV, split again as the card says."""
    prepare = PrepareParams.model_validate(bundle.card.prepare_params)
    frame = load_pairs(raw, require_clone_id=prepare.use_clone_id)
    split = split_pairs(frame, prepare)
    splits = trained_splits(bundle.card)
    trained = np.isin(split, [SPLITS.index(s) for s in splits])
    test = split == SPLITS.index("test")
    return build_reference(model_id, bundle, frame[trained], frame[test], f"raw {raw}", splits)


def save_reference(store: Store, entry: RegistryEntry, prepared: Prepared) -> ReferenceProfile:
    """Build a registered model's reference profile from its prepared data and save it beside the
    model, unless it is saved already. Called when the model is registered."""
    saved = load_reference(store, entry)
    if saved is not None:
        return saved
    bundle = load_bundle(store.root / entry.path)
    source = f"prepared data of run {entry.run_id}, at registration"
    profile = reference_from_prepared(entry.model_id, bundle, prepared, source)
    write_reference(store, entry, profile)
    return profile


def _legacy_reference(
    store: Store, entry: RegistryEntry, bundle: Bundle, reference_data: Path | None
) -> ReferenceProfile:
    """The profile of a model registered before profiles were saved: from ``reference_data``
    (a CSV passed explicitly), its run's prepared directory, or its run's raw data (the
    manifest's ``data_path``), the first that holds the model's data version."""
    card = bundle.card
    tried: list[str] = []
    if reference_data is not None and (profile := _from_raw(entry, bundle, reference_data, tried)):
        return profile
    manifest = store.load_manifest(entry.run_id)
    prepared_dir = manifest.prepared_dir if manifest else None
    if prepared_dir:
        try:
            prepared = load_prepared(prepared_dir)
        except InputError:
            tried.append(f"{prepared_dir} (not a prepared directory)")
        else:
            if _same_data(card, prepared):
                return reference_from_prepared(entry.model_id, bundle, prepared, f"prepared {prepared_dir}")
            tried.append(f"{prepared_dir} (prepared from other data or parameters)")
    raw = Path(manifest.data_path) if manifest and manifest.data_path else None
    if raw is not None and raw != reference_data and (profile := _from_raw(entry, bundle, raw, tried)):
        return profile
    raise InputError(
        f"model {entry.model_id} has no saved reference profile (registered before they were saved) and "
        f"its training data (sha256 {card.data_sha256[:12]}) is not available: "
        f"tried {', '.join(tried) or 'nothing (no run manifest)'}; "
        "pass that data version's CSV as reference_data (monitor --reference-data)"
    )


def _from_raw(entry: RegistryEntry, bundle: Bundle, raw: Path, tried: list[str]) -> ReferenceProfile | None:
    """The profile from the raw CSV ``raw`` if it is the model's data version, else None (and why
    not, appended to ``tried``)."""
    if not raw.is_file():
        tried.append(f"{raw} (missing)")
    elif sha256_file(raw) != bundle.card.data_sha256:
        tried.append(f"{raw} (a different data version)")
    else:
        return reference_from_raw(entry.model_id, bundle, raw)
    return None


def reference_profile(
    store: Store, entry: RegistryEntry, bundle: Bundle, reference_data: Path | str | None = None
) -> ReferenceProfile:
    """A registered model's reference profile: the one saved at registration.

    A model registered before profiles were saved gets one built and saved now (see the module
    docstring); ``reference_data`` is read only then.
    """
    saved = load_reference(store, entry)
    if saved is not None:
        return saved
    profile = _legacy_reference(store, entry, bundle, Path(reference_data) if reference_data else None)
    write_reference(store, entry, profile)
    return profile


__all__ = [
    "build_reference",
    "decoded_rows",
    "reference_from_prepared",
    "reference_from_raw",
    "reference_profile",
    "save_reference",
    "score_labelled",
    "trained_splits",
]
