"""Training and evaluation of a classifier on prepared tensors.

Each training keeps the weights of its best epoch on its validation rows (by the objective),
not the last. With ``train.folds = K > 1`` a model is K models: the training and validation
splits are pooled and cut into K folds by αβ TCR (no receptor in two folds); fold k's model
trains on the other folds and is validated (best epoch, curves) on fold k. The out-of-fold
scores of all pooled rows give the validation metrics — K times the rows of one validation
split, so a trial's objective is far less noisy — and the bundle predicts with the mean
probability of the K models (:class:`tcr_pipeline.models.Ensemble`).

The loop moves the whole feature matrix to the device once (a no-op on the CPU) and indexes
each batch from it through row-index tensors: no DataLoader, no per-sample Python work, and no
per-split or per-fold copy of the matrix. Aligned features are compact integer codes (one byte
per column while every vocabulary has ≤ 255 names) that the model expands per batch, so training
holds the codes plus a few bytes of row indices per row. Class balance is equivalent to the paper's
``WeightedRandomSampler``: each epoch draws ``n_train`` rows with replacement, with per-row
weights summing to 1 and each class drawn with probability 1/2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tcr_pipeline.config import EvaluateParams, TrainParams
from tcr_pipeline.metrics import compute_metrics, objective_value
from tcr_pipeline.models import Ensemble, build_model
from tcr_pipeline.prepare import Prepared

EpochCallback = Callable[[int, dict[str, float]], None]
CURVE_METRICS = ("accuracy", "precision", "recall", "roc_auc", "mean_epitope_auc", "paper_objective")


class TrainingError(RuntimeError):
    """Training diverged (NaN or infinite loss)."""


@dataclass
class TrainResult:
    """A trained model with its per-epoch history."""

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = "cpu"
    seconds: float = 0.0
    best_epoch: int = 0
    val_rows: torch.Tensor | None = None  # the rows validation metrics come from
    val_scores: torch.Tensor | None = None  # their (out-of-fold) scores


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; any other name is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-row sampling weights summing to 1 with both classes equally likely (the paper's)."""
    positives = labels.sum()
    negatives = len(labels) - positives
    weights = torch.where(labels > 0.5, 0.5 / positives, 0.5 / negatives)
    return weights / weights.sum()


def predict_scores(
    model: nn.Module, features: torch.Tensor, batch_size: int = 8192, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Probabilities of binding for each row (evaluation mode, no gradients), on the CPU.

    ``rows``: score only these rows of ``features``, indexed a batch at a time (no copy of them).
    An aligned model expands each row to ≈ 7 kB of residue vectors before its first layer: 8,192
    rows a batch keep that near 60 MB (65,536, the former default, took ≈ 0.5 GB at every epoch's
    validation once the validation split had that many rows).
    """
    model.eval()
    device = next(model.parameters()).device
    n = len(features) if rows is None else len(rows)
    out = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            if rows is None:
                batch = features[start : start + batch_size]
            else:
                batch = features[rows[start : start + batch_size].to(features.device)]
            batch = batch.to(device, non_blocking=True)
            out.append(torch.sigmoid(model(batch).squeeze(1)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def validation_metrics(result: TrainResult, prepared: Prepared, params: EvaluateParams) -> dict[str, float]:
    """Metrics of the best epoch's (out-of-fold) scores on the rows the model was validated on."""
    if result.val_rows is None or result.val_scores is None:
        raise ValueError("the training result holds no validation scores")
    rows = result.val_rows
    return compute_metrics(
        prepared.labels[rows].numpy(), result.val_scores.numpy(), prepared.epitopes_of(rows), params.threshold
    )


def evaluate_model(
    model: nn.Module, prepared: Prepared, split: str, params: EvaluateParams
) -> dict[str, float]:
    """All metrics of ``model`` on one split of ``prepared``."""
    rows = prepared.rows(split)
    scores = predict_scores(model, prepared.features, rows=rows)
    return compute_metrics(
        prepared.labels[rows].numpy(), scores.numpy(), prepared.epitopes_of(rows), params.threshold
    )


def fold_of_rows(prepared: Prepared, rows: torch.Tensor, folds: int, seed: int = 0) -> np.ndarray:
    """Fold (0…folds-1) of each of ``rows``, grouped by αβ TCR; the same for the same seed."""
    if prepared.groups is None:
        raise ValueError("train.folds > 1 needs data prepared by this version (re-run prepare)")
    groups = prepared.groups[rows].numpy()
    unique, inverse = np.unique(groups, return_inverse=True)
    if len(unique) < folds:
        raise ValueError(f"train.folds={folds}: only {len(unique)} TCRs to split")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = np.empty(len(unique), dtype=np.int64)
    fold_of_group[order] = np.arange(len(unique)) % folds
    return fold_of_group[inverse]


def train_model(
    prepared: Prepared,
    params: TrainParams,
    evaluate: EvaluateParams,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train on the training split (or K folds of train + validation, ``params.folds``).

    Returns the model at its best validation epoch with per-epoch curves (the mean over folds).
    ``on_epoch(step, record)`` is called after every epoch of every fold: ``step`` counts epochs
    across folds (1 … folds × epochs) and ``record`` names its ``fold``.
    """
    features = prepared.features.to(resolve_device(params.device))  # once for all folds
    if params.folds <= 1:
        train, val = prepared.rows("train"), prepared.rows("val")
        return train_once(prepared, params, evaluate, train, val, on_epoch, features)
    started = time.perf_counter()
    results = []
    for k, (train_rows, val_rows) in enumerate(fold_splits(prepared, params)):
        fold_params = params.model_copy(update={"seed": params.seed + k})
        report = None
        if on_epoch is not None:

            def report(
                epoch: int, record: dict[str, float], k: int = k, callback: EpochCallback = on_epoch
            ) -> None:
                callback(k * params.epochs + epoch, {**record, "fold": k + 1})

        results.append(train_once(prepared, fold_params, evaluate, train_rows, val_rows, report, features))
    return combine_folds(results, params.epochs, time.perf_counter() - started)


def fold_splits(prepared: Prepared, params: TrainParams) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(training rows, validation rows) of each of the ``params.folds`` folds of train + val."""
    pooled = torch.cat([prepared.rows("train"), prepared.rows("val")])
    fold = torch.from_numpy(fold_of_rows(prepared, pooled, params.folds, params.fold_seed))
    return [(pooled[fold != k], pooled[fold == k]) for k in range(params.folds)]


def combine_folds(results: list[TrainResult], epochs: int, seconds: float) -> TrainResult:
    """One trial's result from its fold models: an Ensemble, out-of-fold scores, mean curves."""
    val_rows = torch.cat([r.val_rows for r in results if r.val_rows is not None])
    val_scores = torch.cat([r.val_scores for r in results if r.val_scores is not None])
    history = [
        {key: float(np.mean([r.history[i][key] for r in results])) for key in results[0].history[i]}
        for i in range(epochs)
    ]
    return TrainResult(
        model=Ensemble([r.model for r in results]),
        history=history,
        device=results[0].device,
        seconds=seconds,
        best_epoch=round(float(np.mean([r.best_epoch for r in results]))),
        val_rows=val_rows,
        val_scores=val_scores,
    )


def train_once(
    prepared: Prepared,
    params: TrainParams,
    evaluate: EvaluateParams,
    train_rows: torch.Tensor,
    val_rows: torch.Tensor,
    on_epoch: EpochCallback | None = None,
    features: torch.Tensor | None = None,
) -> TrainResult:
    """Train one fresh model on ``train_rows``; curves and the best epoch on ``val_rows``.

    Batches are indexed from the whole of ``features`` (default: ``prepared.features`` moved to
    the device; pass it already there to share it between folds) through the row indices.
    """
    started = time.perf_counter()
    device = resolve_device(params.device)
    torch.manual_seed(params.seed)
    generator = torch.Generator().manual_seed(params.seed)

    x_all = prepared.features.to(device) if features is None else features
    y_all = prepared.labels.to(device)
    train_index = train_rows.to(device)
    y_val = prepared.labels[val_rows]
    val_epitopes = prepared.epitopes_of(val_rows)
    n_train = len(train_rows)

    spec = prepared.encoder.input_spec() if prepared.encoder is not None else None
    model = build_model(prepared.features.shape[1], params.model, spec).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    weights = balanced_weights(prepared.labels[train_rows]) if params.balanced else None
    result = TrainResult(model=model, device=str(device), val_rows=val_rows)
    best_value = -math.inf
    best_state: dict[str, torch.Tensor] | None = None

    for epoch in range(1, params.epochs + 1):
        epoch_started = time.perf_counter()
        if weights is not None:
            order = torch.multinomial(weights, n_train, replacement=True, generator=generator)
        else:
            order = torch.randperm(n_train, generator=generator)
        order = order.to(device)
        model.train()
        total = torch.zeros((), device=device)
        seen = 0
        for start in range(0, n_train, params.batch_size):
            batch = order[start : start + params.batch_size]
            if len(batch) < 2:  # BatchNorm cannot train on a single row
                continue
            rows = train_index[batch]
            loss = loss_fn(model(x_all[rows]).squeeze(1), y_all[rows])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.detach() * len(batch)
            seen += len(batch)
        train_loss = float(total) / max(seen, 1)
        scores = predict_scores(model, x_all, rows=val_rows)
        truth = (y_val, val_epitopes)
        record, value = epoch_record(epoch, train_loss, scores, truth, evaluate, epoch_started, n_train)
        result.history.append(record)
        if best_state is None or value > best_value:
            best_value, result.best_epoch, result.val_scores = value, epoch, scores
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, record)

    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - started
    return result


def epoch_record(
    epoch: int,
    train_loss: float,
    scores: torch.Tensor,
    truth: tuple[torch.Tensor, np.ndarray],
    evaluate: EvaluateParams,
    epoch_started: float,
    n_train: int,
) -> tuple[dict[str, float], float]:
    """One epoch's history record and its objective value; raises TrainingError on divergence.

    ``truth``: the validation rows' labels and epitopes; ``epoch_started``: ``perf_counter()``
    at the epoch's start (its ``seconds`` run until the metrics are computed).
    """
    y_val, val_epitopes = truth
    if not math.isfinite(train_loss):
        raise TrainingError(f"training loss became {train_loss} at epoch {epoch}")
    if not torch.isfinite(scores).all():
        raise TrainingError(f"validation scores became NaN or infinite at epoch {epoch}")
    val_loss = float(nn.functional.binary_cross_entropy(scores.clamp(1e-7, 1 - 1e-7), y_val))
    metrics = compute_metrics(y_val.numpy(), scores.numpy(), val_epitopes, evaluate.threshold)
    seconds = time.perf_counter() - epoch_started
    record: dict[str, float] = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "seconds": seconds,
        "rows_per_second": n_train / max(seconds, 1e-9),
    }
    record.update({f"val_{k}": metrics[k] for k in CURVE_METRICS})
    return record, objective_value(evaluate.objective, metrics)


def describe_device(device: str) -> dict[str, Any]:
    """Human-readable facts about the device a model trained on."""
    info: dict[str, Any] = {"device": device, "torch": torch.__version__}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
