"""The paired TCR bootstrap behind promotion: weighted AUCs, intervals, beyond-noise verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from tcr_pipeline.comparison import paired_bootstrap, weighted_epitope_aucs
from tcr_pipeline.metrics import compute_metrics


def _data(seed: int = 0, n_tcrs: int = 300, epitopes: int = 6) -> tuple[np.ndarray, ...]:
    """Every TCR paired with every epitope, one positive each (the shipped data's shape)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_tcrs), epitopes)
    epitope = np.tile(np.array([f"E{i}" for i in range(epitopes)]), n_tcrs)
    positive = rng.integers(0, epitopes, n_tcrs)
    labels = (np.tile(np.arange(epitopes), n_tcrs) == np.repeat(positive, epitopes)).astype(int)
    return labels, epitope, groups, rng


def test_weighted_aucs_with_unit_weights_equal_sklearn_ties_included() -> None:
    labels, epitope, _, rng = _data()
    scores = np.round(rng.random(len(labels)) + 0.3 * labels, 1)  # many ties
    ours = weighted_epitope_aucs(labels, scores, epitope, np.ones((1, len(labels))))[0]
    assert ours == pytest.approx(compute_metrics(labels, scores, epitope)["mean_epitope_auc"], abs=1e-12)


def test_integer_weights_equal_repeating_the_rows() -> None:
    labels, epitope, _, rng = _data(1, n_tcrs=80)
    scores = rng.random(len(labels)) + 0.5 * labels
    weights = rng.integers(0, 3, len(labels))
    repeated = np.repeat(np.arange(len(labels)), weights)
    expected = compute_metrics(labels[repeated], scores[repeated], epitope[repeated])["mean_epitope_auc"]
    assert weighted_epitope_aucs(labels, scores, epitope, weights[None, :])[0] == pytest.approx(expected)


def test_a_clearly_better_model_wins_beyond_noise() -> None:
    labels, epitope, groups, rng = _data(2)
    good = rng.random(len(labels)) + 1.0 * labels
    weak = rng.random(len(labels)) + 0.2 * labels
    interval = paired_bootstrap(labels, good, weak, epitope, groups, resamples=1000)
    assert interval.resamples == 1000
    assert interval.groups == 300
    assert interval.low <= interval.delta <= interval.high
    assert interval.beyond_noise
    assert not paired_bootstrap(labels, weak, good, epitope, groups).beyond_noise


def test_a_tie_is_inside_the_noise() -> None:
    labels, epitope, groups, rng = _data(3)
    base = rng.random(len(labels)) + 0.5 * labels
    jittered = base + rng.normal(0, 0.05, len(labels))
    interval = paired_bootstrap(labels, jittered, base, epitope, groups)
    assert interval.low < 0 < interval.high
    assert not interval.beyond_noise
    assert "inside" not in str(interval)  # the verdict is the caller's; the text states the numbers
    assert "[" in str(interval)


def test_the_interval_is_reproducible_and_counts_tcrs_not_rows() -> None:
    labels, epitope, groups, rng = _data(4, n_tcrs=120)
    a = rng.random(len(labels)) + 0.6 * labels
    b = rng.random(len(labels)) + 0.4 * labels
    first = paired_bootstrap(labels, a, b, epitope, groups, seed=0)
    assert first == paired_bootstrap(labels, a, b, epitope, groups, seed=0)
    assert first != paired_bootstrap(labels, a, b, epitope, groups, seed=1)
    assert first.groups == 120
    assert first.as_dict()["resamples"] == 1000
