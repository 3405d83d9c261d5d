"""Training: balanced sampling weights, per-epoch history, reproducibility, divergence."""

from __future__ import annotations

import math

import pytest
import torch
from data_fixtures import TEST_DEVICE

from tcr_pipeline.config import EvaluateParams, ModelParams, Params, TrainParams
from tcr_pipeline.prepare import Prepared
from tcr_pipeline.training import (
    CURVE_METRICS,
    TrainingError,
    balanced_weights,
    evaluate_model,
    predict_scores,
    resolve_device,
    train_model,
)


def _train(prepared: Prepared, params: TrainParams, **changes: object) -> list[dict[str, float]]:
    return train_model(prepared, params.model_copy(update=changes), EvaluateParams()).history


def test_balanced_weights_give_each_class_half() -> None:
    labels = torch.tensor([1, 0, 0, 0, 0, 0, 1, 0, 0, 0], dtype=torch.float32)
    weights = balanced_weights(labels)
    assert weights.shape == labels.shape
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(weights[labels == 1].sum()) == pytest.approx(0.5, abs=1e-6)
    assert float(weights[labels == 0].sum()) == pytest.approx(0.5, abs=1e-6)
    assert float(weights[0]) == pytest.approx(0.25)
    assert float(weights[1]) == pytest.approx(0.5 / 8)
    assert (weights > 0).all()


def test_balanced_weights_on_the_small_training_split(small_prepared: Prepared) -> None:
    labels = small_prepared.labels[small_prepared.rows("train")]
    weights = balanced_weights(labels)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(weights[labels == 1].sum()) == pytest.approx(0.5, abs=1e-5)
    # sampling with them draws binders about half the time (the data hold 1 in 14)
    draws = torch.multinomial(weights, 20000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert float(labels[draws].mean()) == pytest.approx(0.5, abs=0.02)


def test_two_epochs_give_two_finite_records(small_prepared: Prepared, small_params: Params) -> None:
    seen: list[int] = []
    result = train_model(
        small_prepared, small_params.train, small_params.evaluate, on_epoch=lambda e, _: seen.append(e)
    )
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert seen == [1, 2]
    for record in result.history:
        assert math.isfinite(record["train_loss"])
        assert record["train_loss"] > 0
        assert math.isfinite(record["val_loss"])
        assert record["val_loss"] > 0
        for name in CURVE_METRICS:
            assert f"val_{name}" in record
    assert result.device == TEST_DEVICE
    scores = predict_scores(result.model, small_prepared.features[:10])
    assert scores.shape == (10,)
    assert ((scores >= 0) & (scores <= 1)).all()
    metrics = evaluate_model(result.model, small_prepared, "test", small_params.evaluate)
    assert metrics["n"] == len(small_prepared.rows("test"))


def test_training_is_reproducible_with_the_same_seed(small_prepared: Prepared, small_params: Params) -> None:
    params = small_params.train.model_copy(update={"model": ModelParams(kind="medium", max_width=16)})
    first = _train(small_prepared, params)
    second = _train(small_prepared, params)
    losses = [(r["train_loss"], r["val_loss"]) for r in first]
    assert losses == [(r["train_loss"], r["val_loss"]) for r in second]
    other_seed = _train(small_prepared, params, seed=params.seed + 1)
    assert losses != [(r["train_loss"], r["val_loss"]) for r in other_seed]


def test_unbalanced_training_also_runs(small_prepared: Prepared, small_params: Params) -> None:
    history = _train(small_prepared, small_params.train, balanced=False, epochs=1)
    assert len(history) == 1
    assert math.isfinite(history[0]["train_loss"])


def test_a_diverging_loss_raises_training_error(small_prepared: Prepared, small_params: Params) -> None:
    # lr 1e30: Adam's first step moves every weight by ~1e30 and the next batch's loss is NaN
    assert small_params.train.batch_size < len(small_prepared.rows("train")) / 2  # several steps per epoch
    with pytest.raises(TrainingError, match="training loss became nan at epoch 1"):
        _train(small_prepared, small_params.train, lr=1e30)


def test_divergence_in_the_last_step_of_an_epoch_raises_training_error(
    small_prepared: Prepared, small_params: Params
) -> None:
    n_train = len(small_prepared.rows("train"))
    for seed in range(6):
        with pytest.raises(TrainingError):
            _train(small_prepared, small_params.train, lr=1e30, batch_size=n_train, seed=seed)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_cuda_follows_the_cpu(small_prepared: Prepared, small_params: Params) -> None:
    # The batches are drawn on the CPU from the seed, so both devices see the same rows in the
    # same order and differ only by float rounding (float32, no TF32 by default). The small
    # model: no BatchNorm, whose zero-gradient weights Adam moves by ±lr on rounding noise
    # (test_population.py's BatchNorm test), which would differ between the devices.
    params = small_params.train
    cpu = train_model(small_prepared, params.model_copy(update={"device": "cpu"}), EvaluateParams())
    gpu = train_model(small_prepared, params.model_copy(update={"device": "cuda"}), EvaluateParams())
    assert gpu.device == "cuda"
    assert all(p.is_cuda for p in gpu.model.parameters())
    for mine, theirs in zip(gpu.history, cpu.history, strict=True):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-3)
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-3)
    assert gpu.val_scores is not None
    assert cpu.val_scores is not None
    torch.testing.assert_close(gpu.val_scores.cpu(), cpu.val_scores.cpu(), atol=1e-3, rtol=0)
