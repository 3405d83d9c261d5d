"""Registering a run's best trials and promoting the best model when it beats the current one.

A candidate replaces the current model only when the paired TCR bootstrap of their difference
on the same validation rows (:mod:`tcr_pipeline.comparison`) puts the 95 % interval above 0;
every comparison is kept in the registry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tcr_pipeline.bundle import load_bundle, load_card, load_validation, predict_frame
from tcr_pipeline.comparison import Interval, paired_bootstrap
from tcr_pipeline.config import EvaluateParams
from tcr_pipeline.monitoring.reference import save_reference
from tcr_pipeline.prepare import Prepared
from tcr_pipeline.store import Comparison, Promotion, RegistryEntry, Store, model_id_of, ranked_trials


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
