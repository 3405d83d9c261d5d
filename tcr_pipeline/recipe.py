"""The training recipe — train → evaluate → model card → bundle — used by the CLI and the search."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tcr_pipeline.bundle import ModelCard, save_bundle
from tcr_pipeline.config import EvaluateParams, TrainParams
from tcr_pipeline.models import Ensemble
from tcr_pipeline.population import PopulationCallback, train_population
from tcr_pipeline.prepare import Prepared
from tcr_pipeline.training import (
    EpochCallback,
    TrainingError,
    TrainResult,
    describe_device,
    evaluate_model,
    train_model,
    validation_metrics,
)


@dataclass(frozen=True)
class Fitted:
    """A trained and saved model: the training result, its card and its metrics per split."""

    result: TrainResult
    card: ModelCard
    metrics: dict[str, dict[str, float]]


def fit_and_save(
    prepared: Prepared,
    train: TrainParams,
    evaluate: EvaluateParams,
    out_dir: Path | str,
    on_epoch: EpochCallback | None = None,
    splits: tuple[str, ...] = ("val", "test"),
) -> Fitted:
    """Train on ``prepared``, measure it on ``splits`` and save the bundle in ``out_dir``.

    ``val`` metrics are those of the best epoch's (out-of-fold, with ``train.folds`` > 1) scores;
    other splits are scored by the saved model. The validation scores are kept in the bundle so
    promotion can compare two models on the same rows.
    """
    result = train_model(prepared, train, evaluate, on_epoch)
    return _measure_and_save(prepared, train, evaluate, out_dir, result, splits)


def fit_and_save_population(
    prepared: Prepared,
    trains: Sequence[TrainParams],
    evaluate: EvaluateParams,
    out_dirs: Sequence[Path | str],
    on_epoch: PopulationCallback | None = None,
    splits: tuple[str, ...] = ("val", "test"),
) -> list[Fitted | TrainingError]:
    """:func:`fit_and_save` for each of ``trains`` (bundle ``i`` in ``out_dirs[i]``), trained together.

    Trials of one architecture train as one vectorised population
    (:func:`tcr_pipeline.population.train_population`); each result, card, metrics and bundle is
    what :func:`fit_and_save` gives for that trial (same seeds: the same curves and scores up to
    float rounding), and a bundle holds an ordinary model that loads as ever. A trial whose
    training diverged gets the ``TrainingError`` that :func:`fit_and_save` would raise, in its
    place; the others are fitted and saved. ``on_epoch(trial, step, record)``: after each epoch
    of each trial (``trial`` indexes ``trains``; ``step`` and ``record`` as for fit_and_save).
    """
    if len(out_dirs) != len(trains):
        raise ValueError(f"{len(trains)} trials but {len(out_dirs)} output folders")
    results = train_population(prepared, trains, evaluate, on_epoch)
    return [
        result
        if isinstance(result, TrainingError)
        else _measure_and_save(prepared, train, evaluate, out, result, splits)
        for train, out, result in zip(trains, out_dirs, results, strict=True)
    ]


def _measure_and_save(
    prepared: Prepared,
    train: TrainParams,
    evaluate: EvaluateParams,
    out_dir: Path | str,
    result: TrainResult,
    splits: tuple[str, ...],
) -> Fitted:
    """Metrics on ``splits``, the model card and the bundle of one trained model."""
    metrics = {
        split: validation_metrics(result, prepared, evaluate)
        if split == "val"
        else evaluate_model(result.model, prepared, split, evaluate)
        for split in splits
    }
    model = result.model
    card = ModelCard(
        input_dim=int(prepared.features.shape[1]),
        model=train.model,
        train_params=train.model_dump(mode="json"),
        evaluate=evaluate,
        prepare_params=prepared.meta["params"],
        data_sha256=prepared.data_sha256,
        device=describe_device(result.device),
        history=result.history,
        metrics=metrics,
        input_spec=prepared.encoder.input_spec(),
        members=len(model.members) if isinstance(model, Ensemble) else 1,
        best_epoch=result.best_epoch,
    )
    validation = None
    if result.val_rows is not None and result.val_scores is not None:
        validation = (result.val_rows, result.val_scores)
    save_bundle(out_dir, model, prepared.encoder, card, validation)
    return Fitted(result, card, metrics)
