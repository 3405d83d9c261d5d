"""A vectorised population trains each trial as train_model would, one by one (same seeds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_fixtures import TEST_DEVICE

from tcr_pipeline.bundle import load_bundle
from tcr_pipeline.config import EvaluateParams, ModelParams, Params, PrepareParams, TrainParams
from tcr_pipeline.data import load_pairs
from tcr_pipeline.models import Ensemble, FeedForward
from tcr_pipeline.population import AdamKind, shape_key, train_population
from tcr_pipeline.prepare import Prepared, encode_pairs
from tcr_pipeline.recipe import fit_and_save, fit_and_save_population
from tcr_pipeline.stacking import vectorised_adam_step
from tcr_pipeline.training import TrainingError, TrainResult, predict_scores, train_model

EVALUATE = EvaluateParams()
RANK_TOLERANCE = 0.012


@pytest.fixture(scope="module")
def aligned(small_csv: Path) -> Prepared:
    """The small CSV in the aligned encoding (codes the model expands to residue vectors)."""
    return encode_pairs(load_pairs(small_csv), PrepareParams(encoding="aligned", split="tcr", seed=42), "x")


def _trial(**changes: object) -> TrainParams:
    base = TrainParams(
        model=ModelParams(kind="small", small_widths=(32, 16)),
        epochs=3,
        batch_size=64,
        device=TEST_DEVICE,
        lr=0.01,
    )
    return base.model_copy(update=changes)


def _assert_same(population: TrainResult | TrainingError, alone: TrainResult, atol: float = 1e-4) -> None:
    """Same curves, best epoch, validation rows and scores, and weights, up to float rounding."""
    assert isinstance(population, TrainResult)
    assert len(population.history) == len(alone.history)
    for mine, theirs in zip(population.history, alone.history, strict=True):
        assert mine.keys() == theirs.keys()
        for key in ("epoch", "train_loss", "val_loss"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=atol), key
        for key in mine.keys() - {"epoch", "train_loss", "val_loss", "seconds", "rows_per_second"}:
            # ranks and thresholds: two scores a rounding error apart may swap; with one
            # positive of an epitope among 13 rows that moves its AUC by 1/13 and the mean of
            # 14 epitopes by 5e-3 (the scores themselves are compared to 1e-4 below)
            assert mine[key] == pytest.approx(theirs[key], abs=RANK_TOLERANCE), key
    assert population.best_epoch == alone.best_epoch
    assert population.val_rows is not None
    assert alone.val_rows is not None
    assert torch.equal(population.val_rows, alone.val_rows)
    assert population.val_scores is not None
    assert alone.val_scores is not None
    torch.testing.assert_close(population.val_scores, alone.val_scores, atol=atol, rtol=0)
    mine_state, their_state = population.model.state_dict(), alone.model.state_dict()
    assert mine_state.keys() == their_state.keys()
    for key, value in mine_state.items():
        torch.testing.assert_close(value, their_state[key], atol=atol, rtol=1e-4, msg=key)


def test_a_population_trains_each_trial_as_train_model_does(aligned: Prepared) -> None:
    # own seeds, learning rates, weight decays, numbers of epochs and residue vectors
    trains = [
        _trial(seed=1, lr=0.01, weight_decay=0.0, epochs=3),
        _trial(
            seed=2,
            lr=0.003,
            weight_decay=1e-3,
            epochs=2,
            model=ModelParams(kind="small", small_widths=(32, 16), residues="onehot"),
        ),
        _trial(seed=1, lr=0.03, weight_decay=1e-4, epochs=4),
        _trial(seed=1, lr=0.01, weight_decay=0.0, epochs=3, balanced=False),
    ]
    assert len({shape_key(t) for t in trains}) == 1
    population = train_population(aligned, trains, EVALUATE)
    for mine, params in zip(population, trains, strict=True):
        _assert_same(mine, train_model(aligned, params, EVALUATE))
    # the hyperparameters made a difference (so honouring them is tested)
    first, _, third, fourth = (r for r in population if isinstance(r, TrainResult))
    assert not torch.allclose(first.val_scores, third.val_scores)  # type: ignore[arg-type]
    assert not torch.allclose(first.val_scores, fourth.val_scores)  # type: ignore[arg-type]
    assert [len(r.history) for r in population if isinstance(r, TrainResult)] == [3, 2, 4, 3]


@pytest.mark.parametrize("adam", ["fused", "stacked"])
def test_folds_are_members_and_make_each_trials_ensemble(aligned: Prepared, adam: AdamKind) -> None:
    # folds differ in size: their last batches step in subgroups of the population
    trains = [
        _trial(seed=3, folds=3, epochs=2),
        _trial(seed=4, folds=3, epochs=3, lr=0.02, weight_decay=1e-3),
    ]
    calls: list[tuple[int, int, float]] = []
    population = train_population(
        aligned, trains, EVALUATE, lambda t, s, r: calls.append((t, s, r["fold"])), adam=adam
    )
    for mine, params in zip(population, trains, strict=True):
        seen: list[tuple[int, float]] = []

        def record(step: int, values: dict[str, float], seen: list[tuple[int, float]] = seen) -> None:
            seen.append((step, values["fold"]))

        alone = train_model(aligned, params, EVALUATE, record)
        assert isinstance(mine, TrainResult)
        assert isinstance(mine.model, Ensemble)
        assert len(mine.model.members) == 3
        _assert_same(mine, alone)
        trial = trains.index(params)
        assert sorted((s, f) for t, s, f in calls if t == trial) == sorted(seen)


def test_batchnorm_keeps_each_members_running_statistics(aligned: Prepared) -> None:
    model = ModelParams(kind="medium", medium_blocks=3, max_width=24)
    trains = [_trial(model=model, seed=s, lr=1e-3, epochs=2) for s in (5, 6)]
    population = train_population(aligned, trains, EVALUATE)
    for mine, params in zip(population, trains, strict=True):
        alone = train_model(aligned, params, EVALUATE)
        # A Linear layer feeding a BatchNorm has weights whose true gradient is zero (its bias,
        # and the weights of input columns constant in a batch: BatchNorm subtracts the mean);
        # their rounding-level gradients are scaled by Adam to steps of ±lr, so they wander the
        # same way in both runs but not to the same values. They do not change the trained
        # function; through the running means they move evaluation scores by about lr × steps.
        # So evaluation-mode curves and scores agree only to about 1e-2 here (a row of 56 may
        # cross the threshold); what training mode computes agrees to rounding.
        assert isinstance(mine, TrainResult)
        assert len(mine.history) == len(alone.history) == 2
        for record, their_record in zip(mine.history, alone.history, strict=True):
            assert record["train_loss"] == pytest.approx(their_record["train_loss"], rel=1e-5)
        assert mine.val_scores is not None
        assert alone.val_scores is not None
        torch.testing.assert_close(mine.val_scores, alone.val_scores, atol=2e-2, rtol=0)
        assert isinstance(mine.model, FeedForward)
        net = mine.model.net
        feeds_batchnorm = {
            f"net.{i}." for i in range(len(net) - 1) if isinstance(net[i + 1], torch.nn.BatchNorm1d)
        }
        theirs = alone.model.state_dict()
        for key, value in mine.model.state_dict().items():
            if key.endswith("num_batches_tracked"):
                assert int(value) == int(theirs[key]) > 0
            elif not key.endswith("running_mean") and not any(key.startswith(f) for f in feeds_batchnorm):
                torch.testing.assert_close(value, theirs[key], atol=1e-5, rtol=1e-3)
        # the same function in training mode (batch statistics) on the validation rows (whose
        # columns, unlike the training batches', may vary where those weights wandered)
        x = aligned.features[mine.val_rows].to(TEST_DEVICE)
        mine.model.train(), alone.model.train()
        with torch.no_grad():
            torch.testing.assert_close(mine.model(x), alone.model(x), atol=1e-3, rtol=1e-3)


def test_kmer_members_train_as_kmer_models_do(aligned: Prepared) -> None:
    def kmer(**changes: object) -> ModelParams:
        return ModelParams(kind="kmer", kmer_sizes=(1, 2)).model_copy(update=changes)

    trains = [
        _trial(model=kmer(), seed=1, lr=0.01, weight_decay=1e-4, epochs=3),
        _trial(model=kmer(), seed=2, lr=0.03, epochs=2, folds=2),
        _trial(model=kmer(head="sigmoid"), seed=3, epochs=2),
        _trial(model=kmer(head="sigmoid"), seed=4, epochs=3, lr=0.003, weight_decay=1e-3),
        _trial(model=kmer(genes=False), seed=5, epochs=2),
        _trial(model=kmer(genes=False), seed=6, epochs=2, lr=0.02),
    ]
    assert len({shape_key(t) for t in trains}) == 3  # one population per head / genes setting
    population = train_population(aligned, trains, EVALUATE)
    for mine, params in zip(population, trains, strict=True):
        _assert_same(mine, train_model(aligned, params, EVALUATE))


def test_vectorised_adam_is_torch_adam_per_member() -> None:
    torch.manual_seed(0)
    lrs, decays = [0.01, 0.003, 0.1], [0.0, 1e-2, 1e-4]
    start = torch.randn(3, 4, 5)
    grads = [torch.randn(3, 4, 5) for _ in range(4)]
    stacked = {"w": start.clone()}
    state = {"w": (torch.zeros(3, 4, 5), torch.zeros(3, 4, 5))}
    for step, grad in enumerate(grads, 1):
        vectorised_adam_step(stacked, {"w": grad}, state, [step] * 3, torch.tensor(lrs), torch.tensor(decays))
    for i in range(3):
        weight = start[i].clone().requires_grad_()
        optimiser = torch.optim.Adam([weight], lr=lrs[i], weight_decay=decays[i])
        for grad in grads:
            weight.grad = grad[i].clone()
            optimiser.step()
        torch.testing.assert_close(stacked["w"][i], weight.detach(), atol=1e-6, rtol=1e-6)


def test_shape_keys_group_only_what_can_share_a_population() -> None:
    small = _trial()
    assert shape_key(small) == shape_key(_trial(lr=0.1, seed=9, epochs=7, weight_decay=0.1, folds=5))
    assert shape_key(small) == shape_key(_trial(model=small.model.model_copy(update={"residues": "onehot"})))
    assert shape_key(small) != shape_key(_trial(batch_size=32))
    assert shape_key(small) != shape_key(_trial(model=ModelParams(kind="small", small_widths=(64, 16))))
    assert shape_key(_trial(model=ModelParams(kind="medium"))) != shape_key(
        _trial(model=ModelParams(kind="large"))
    )
    assert shape_key(_trial(model=ModelParams(kind="kmer"))) != shape_key(
        _trial(model=ModelParams(kind="small"))
    )
    assert shape_key(_trial(model=ModelParams(kind="cnn"))) is None


def test_a_mixed_batch_keeps_its_order_and_trains_the_rest_alone(aligned: Prepared) -> None:
    cnn = _trial(model=ModelParams(kind="cnn", cnn_filters=4, cnn_kernels=(3,), cnn_hidden=8), epochs=1)
    lone = _trial(batch_size=32, epochs=1)
    trains = [cnn, _trial(seed=1, epochs=1), lone, _trial(seed=2, epochs=1)]
    population = train_population(aligned, trains, EVALUATE)
    for mine, params in zip(population, trains, strict=True):
        _assert_same(mine, train_model(aligned, params, EVALUATE))


def test_a_diverging_trial_fails_alone(small_prepared: Prepared, small_params: Params) -> None:
    good = small_params.train.model_copy(update={"epochs": 2})
    trains = [good, good.model_copy(update={"lr": 1e30}), good.model_copy(update={"seed": 7})]
    population = train_population(small_prepared, trains, EVALUATE)
    assert isinstance(population[1], TrainingError)
    with pytest.raises(TrainingError) as alone:
        train_model(small_prepared, trains[1], EVALUATE)
    assert str(population[1]) == str(alone.value)
    _assert_same(population[0], train_model(small_prepared, trains[0], EVALUATE))
    _assert_same(population[2], train_model(small_prepared, trains[2], EVALUATE))


def test_fit_and_save_population_saves_what_fit_and_save_does(aligned: Prepared, tmp_path: Path) -> None:
    trains = [_trial(seed=1, folds=2, epochs=2), _trial(seed=2, folds=2, epochs=2, lr=0.02)]
    out = [tmp_path / "pop" / str(i) for i in range(2)]
    fitted = fit_and_save_population(aligned, trains, EVALUATE, out)
    for i, params in enumerate(trains):
        alone = fit_and_save(aligned, params, EVALUATE, tmp_path / "alone" / str(i))
        mine = fitted[i]
        assert not isinstance(mine, TrainingError)
        assert mine.card.members == alone.card.members == 2
        assert mine.card.best_epoch == alone.card.best_epoch
        for split in ("val", "test"):
            for key, value in alone.metrics[split].items():
                assert mine.metrics[split][key] == pytest.approx(value, abs=1e-4), (split, key)
        bundle = load_bundle(out[i])  # an ordinary bundle: loads and predicts as ever
        rows = aligned.rows("test")
        torch.testing.assert_close(
            predict_scores(bundle.model, aligned.features[rows]),
            predict_scores(alone.result.model, aligned.features[rows]),
            atol=1e-4,
            rtol=0,
        )
    with pytest.raises(ValueError, match="2 trials but 1 output folders"):
        fit_and_save_population(aligned, trains, EVALUATE, out[:1])
