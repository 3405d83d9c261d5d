"""Metrics on hand-made arrays, the paper's objective, and the always-negative baseline."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tcr_pipeline.metrics import (
    compute_metrics,
    confusion_matrix,
    epitope_aucs,
    objective_value,
    paper_objective,
    positive_ratio_term,
)

# 8 rows, threshold 0.5:           predicted  outcome
LABELS = np.array([1, 1, 1, 0, 0, 0, 0, 0])
SCORES = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.4, 0.05])
#                  1 tp  1 tp 0 fn 1 fp 0 tn 0 tn 0 tn 0 tn
EPITOPES = np.array(["A", "A", "B", "A", "A", "B", "B", "C"])
# A: positives 0.9, 0.6 vs negatives 0.7, 0.1 → 3 of 4 pairs ordered → AUC 0.75
# B: positive 0.2 vs negatives 0.3, 0.4 → AUC 0.0
# C: negatives only → no AUC, skipped


def test_confusion_counts_and_rates() -> None:
    m = compute_metrics(LABELS, SCORES, EPITOPES, threshold=0.5)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 4)
    assert confusion_matrix(m) == [[4, 1], [1, 2]]
    assert m["n"] == 8
    assert m["accuracy"] == 6 / 8
    assert m["precision"] == 2 / 3
    assert m["recall"] == 2 / 3
    assert m["positive_ratio"] == 3 / 3
    assert m["roc_auc"] == pytest.approx(roc_auc_score(LABELS, SCORES))
    assert m["average_precision"] == pytest.approx(average_precision_score(LABELS, SCORES))


def test_roc_auc_is_sklearns_with_ties_and_small_groups() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 5, 13, 60, 900):
        for _ in range(50):
            labels = rng.integers(0, 2, n)
            if labels.min() == labels.max():
                continue
            scores = np.round(rng.random(n), 1)  # many ties
            m = compute_metrics(labels, scores, np.array(["A"] * n))
            expected = roc_auc_score(labels, scores)
            assert m["roc_auc"] == pytest.approx(expected, abs=1e-12)
            assert m["mean_epitope_auc"] == pytest.approx(expected, abs=1e-12)
    assert math.isnan(compute_metrics(np.zeros(4), np.arange(4.0))["roc_auc"])


def test_per_epitope_auc_skips_single_class_epitopes() -> None:
    m = compute_metrics(LABELS, SCORES, EPITOPES)
    assert epitope_aucs(m) == {"A": 0.75, "B": 0.0}
    assert "epitope_auc/C" not in m
    assert m["mean_epitope_auc"] == 0.375
    assert math.isnan(compute_metrics(LABELS, SCORES)["mean_epitope_auc"])  # no epitopes given


def test_all_positive_epitope_is_skipped_without_warning() -> None:
    labels = np.array([1, 0, 1, 1])
    scores = np.array([0.8, 0.3, 0.6, 0.9])
    epitopes = np.array(["A", "A", "B", "B"])  # B has positives only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(labels, scores, epitopes)
    assert epitope_aucs(m) == {"A": 1.0}


def test_threshold_is_inclusive_and_movable() -> None:
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.5, 0.49, 0.8, 0.8])
    m = compute_metrics(labels, scores, threshold=0.5)
    assert (m["tp"], m["fp"]) == (2, 1)  # 0.5 ≥ 0.5 counts as predicted binding
    m = compute_metrics(labels, scores, threshold=0.9)
    assert (m["tp"], m["fp"], m["precision"], m["positive_ratio"]) == (0, 0, 0.0, 0.0)


def test_positive_ratio() -> None:
    labels = np.array([1, 1, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.1, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1])  # 4 predicted, 2 actual
    assert compute_metrics(labels, scores)["positive_ratio"] == 2.0
    scores = np.array([0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])  # 1 predicted, 2 actual
    assert compute_metrics(labels, scores)["positive_ratio"] == 0.5
    no_positives = compute_metrics(np.zeros(4), np.array([0.9, 0.1, 0.1, 0.1]))
    assert math.isnan(no_positives["positive_ratio"])
    assert math.isnan(no_positives["recall"])


def test_positive_ratio_term_is_min_r_and_1_over_r() -> None:
    assert positive_ratio_term(1.0) == 1.0
    assert positive_ratio_term(2.0) == 0.5
    assert positive_ratio_term(0.25) == 0.25
    assert positive_ratio_term(4.0) == 0.25
    for degenerate in (0.0, -1.0, math.inf, math.nan):
        assert positive_ratio_term(degenerate) == 0.0


def test_paper_objective_worked_example() -> None:
    # 8 rows, 2 binding; the model predicts 4 binders of which 1 is right:
    # tp 1, fp 3, fn 1, tn 3 → accuracy 4/8 = 0.5, precision 1/4, ratio 4/2 = 2 → term 1/2
    labels = np.array([1, 1, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.2, 0.8, 0.7, 0.6, 0.1, 0.1, 0.1])
    m = compute_metrics(labels, scores)
    assert (m["accuracy"], m["precision"], m["positive_ratio"]) == (0.5, 0.25, 2.0)
    assert paper_objective(m) == 0.5 + 5 * 0.5 + 10 * 0.25 == 5.5
    assert m["paper_objective"] == 5.5
    assert objective_value("paper", m) == 5.5
    # the best possible model scores 1 + 5 + 10
    assert paper_objective({"accuracy": 1.0, "positive_ratio": 1.0, "precision": 1.0}) == 16.0


def test_objectives_never_pick_nan() -> None:
    m = compute_metrics(np.zeros(3), np.array([0.1, 0.2, 0.3]))
    assert math.isnan(m["roc_auc"])
    assert objective_value("roc_auc", m) == -math.inf
    assert objective_value("average_precision", m) == -math.inf
    assert objective_value("mean_epitope_auc", m) == -math.inf


def test_always_negative_predictor_on_the_shipped_labels(shipped_frame: pd.DataFrame) -> None:
    """92.9 % accuracy for a model that never predicts binding: why accuracy alone misleads."""
    labels = shipped_frame["Label"].to_numpy()
    m = compute_metrics(labels, np.zeros(len(labels)), shipped_frame["Epitope"].to_numpy())
    assert m["accuracy"] == 8294 / 8932
    assert m["accuracy"] == pytest.approx(0.9286, abs=1e-4)
    assert m["precision"] == 0.0
    assert m["recall"] == 0.0
    assert m["positive_ratio"] == 0.0
    assert m["roc_auc"] == 0.5
    assert m["paper_objective"] == m["accuracy"]  # ratio term and precision both 0
    assert len(epitope_aucs(m)) == 14
