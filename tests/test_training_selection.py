"""What training keeps and how it samples: the best epoch, TCR-grouped folds, balanced classes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from tcr_pipeline.config import EvaluateParams, ModelParams, Params, PrepareParams, TrainParams
from tcr_pipeline.data import load_pairs
from tcr_pipeline.files import sha256_file
from tcr_pipeline.metrics import compute_metrics
from tcr_pipeline.models import Ensemble
from tcr_pipeline.prepare import Prepared, encode_pairs
from tcr_pipeline.training import (
    fold_of_rows,
    predict_scores,
    train_model,
    validation_metrics,
)

EVALUATE = EvaluateParams(objective="mean_epitope_auc")


@pytest.fixture(scope="module")
def aligned(small_csv: object) -> Prepared:
    frame = load_pairs(small_csv)  # type: ignore[arg-type]
    return encode_pairs(frame, PrepareParams(encoding="aligned"), sha256_file(small_csv))  # type: ignore[arg-type]


def _kmer(**changes: object) -> TrainParams:
    base = TrainParams(model=ModelParams(kind="kmer"), lr=0.02, epochs=6, batch_size=64, seed=0, device="cpu")
    return base.model_copy(update=changes)


def test_the_best_epoch_is_kept_not_the_last(aligned: Prepared) -> None:
    result = train_model(aligned, _kmer(lr=0.2, epochs=8), EVALUATE)  # a high rate: the curve wanders
    values = [r["val_mean_epitope_auc"] for r in result.history]
    assert result.best_epoch == int(np.argmax(values)) + 1
    kept = validation_metrics(result, aligned, EVALUATE)["mean_epitope_auc"]
    assert kept == pytest.approx(max(values))
    rows = aligned.rows("val")
    rescored = compute_metrics(
        aligned.labels[rows].numpy(), predict_scores(result.model, aligned.features[rows]).numpy(),
        aligned.epitopes_of(rows),
    )["mean_epitope_auc"]  # fmt: skip
    assert rescored == pytest.approx(kept)  # the model returned is the best epoch's model


def test_folds_never_split_a_tcr_and_cover_train_plus_validation(aligned: Prepared) -> None:
    pooled = torch.cat([aligned.rows("train"), aligned.rows("val")])
    fold = fold_of_rows(aligned, pooled, 4, seed=0)
    assert aligned.groups is not None
    groups = aligned.groups[pooled].numpy()
    assert pd.Series(fold).groupby(groups).nunique().max() == 1  # every TCR in one fold
    assert sorted(set(fold)) == [0, 1, 2, 3]
    assert np.array_equal(fold, fold_of_rows(aligned, pooled, 4, seed=0))
    assert not np.array_equal(fold, fold_of_rows(aligned, pooled, 4, seed=1))


def test_k_folds_give_an_ensemble_scored_out_of_fold(aligned: Prepared) -> None:
    result = train_model(aligned, _kmer(folds=3, epochs=3), EVALUATE)
    assert isinstance(result.model, Ensemble)
    assert len(result.model.members) == 3
    pooled = torch.cat([aligned.rows("train"), aligned.rows("val")])
    assert result.val_rows is not None
    assert sorted(result.val_rows.tolist()) == sorted(pooled.tolist())  # every pooled row once
    assert not set(result.val_rows.tolist()) & set(aligned.rows("test").tolist())
    assert len(result.history) == 3


def test_balanced_sampling_really_balances_the_classes(
    small_prepared: Prepared, small_params: Params
) -> None:
    """On 1-in-14 positives a balanced model's mean score is near 0.5, an unbalanced one's near 1/14."""
    train = small_params.train.model_copy(update={"epochs": 6, "lr": 0.01})
    rows = small_prepared.rows("train")
    rate = float(small_prepared.labels[rows].mean())
    means = {}
    for balanced in (True, False):
        model = train_model(small_prepared, train.model_copy(update={"balanced": balanced}), EVALUATE).model
        means[balanced] = float(predict_scores(model, small_prepared.features[rows]).mean())
    assert means[True] > 3 * rate
    assert means[False] < 2 * rate


def test_redrawn_splits_keep_their_sizes(aligned: Prepared) -> None:
    """A Prepared with another split is still a Prepared (what bench/noise.py relies on)."""
    copy = dataclasses.replace(aligned, split=aligned.split.clone())
    assert len(copy.rows("val")) == len(aligned.rows("val"))
