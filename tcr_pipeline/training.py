"""Training and evaluation of a classifier on prepared tensors.

The loop keeps the whole training split on the device and indexes batches from it: no
DataLoader, no per-sample Python work. Class balance is equivalent to the paper's
``WeightedRandomSampler``: each epoch draws ``n_train`` rows with replacement, with per-row
weights summing to 1 and each class drawn with probability 1/2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tcr_pipeline.config import EvaluateParams, TrainParams
from tcr_pipeline.metrics import compute_metrics
from tcr_pipeline.models import build_model
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


def predict_scores(model: nn.Module, features: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    """Probabilities of binding for each row (evaluation mode, no gradients), on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            batch = features[start : start + batch_size].to(device, non_blocking=True)
            out.append(torch.sigmoid(model(batch).squeeze(1)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def evaluate_model(
    model: nn.Module, prepared: Prepared, split: str, params: EvaluateParams
) -> dict[str, float]:
    """All metrics of ``model`` on one split of ``prepared``."""
    rows = prepared.rows(split)
    scores = predict_scores(model, prepared.features[rows])
    return compute_metrics(
        prepared.labels[rows].numpy(), scores.numpy(), prepared.epitopes_of(rows), params.threshold
    )


def train_model(
    prepared: Prepared,
    params: TrainParams,
    evaluate: EvaluateParams,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train a fresh model on the training split; record train/validation curves per epoch."""
    started = time.perf_counter()
    device = resolve_device(params.device)
    torch.manual_seed(params.seed)
    generator = torch.Generator().manual_seed(params.seed)

    train_rows, val_rows = prepared.rows("train"), prepared.rows("val")
    x_train = prepared.features[train_rows].to(device)
    y_train = prepared.labels[train_rows].to(device)
    x_val = prepared.features[val_rows].to(device)
    y_val = prepared.labels[val_rows]
    val_epitopes = prepared.epitopes_of(val_rows)
    n_train = len(train_rows)

    model = build_model(prepared.features.shape[1], params.model).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    weights = balanced_weights(prepared.labels[train_rows]) if params.balanced else None
    result = TrainResult(model=model, device=str(device))

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
            loss = loss_fn(model(x_train[batch]).squeeze(1), y_train[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.detach() * len(batch)
            seen += len(batch)
        train_loss = float(total) / max(seen, 1)
        if not math.isfinite(train_loss):
            raise TrainingError(f"training loss became {train_loss} at epoch {epoch}")

        scores = predict_scores(model, x_val)
        if not torch.isfinite(scores).all():
            raise TrainingError(f"validation scores became NaN or infinite at epoch {epoch}")
        val_loss = float(nn.functional.binary_cross_entropy(scores.clamp(1e-7, 1 - 1e-7), y_val))
        metrics = compute_metrics(y_val.numpy(), scores.numpy(), val_epitopes, evaluate.threshold)
        record: dict[str, float] = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "seconds": time.perf_counter() - epoch_started,
            "rows_per_second": n_train / max(time.perf_counter() - epoch_started, 1e-9),
        }
        record.update({f"val_{k}": metrics[k] for k in CURVE_METRICS})
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)

    result.seconds = time.perf_counter() - started
    return result


def describe_device(device: str) -> dict[str, Any]:
    """Human-readable facts about the device a model trained on."""
    info: dict[str, Any] = {"device": device, "torch": torch.__version__}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
