"""The checks (pure): input drift, prediction drift, concept drift, service health.

Categorical features: PSI with a chi-square test; numeric ones (CDR3 lengths, scores):
Kolmogorov–Smirnov with PSI on fixed bins as extra information; anything unseen in training:
a rate. A PSI or KS check alerts only when it exceeds its threshold *and* the difference is
significant. ``docs/monitoring.md`` explains every statistic and threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from tcr_pipeline.config import DriftThresholds
from tcr_pipeline.monitoring.statistics import (
    CDR3_FEATURES,
    GENE_FEATURES,
    PAIR_FEATURES,
    SCORE_BINS,
    UNSEEN,
    binned,
    category_counts,
    chi_square_p,
    distinct_tcrs,
    expand,
    finite,
    length_bins,
    normalise_names,
    psi,
    shifts,
    significant_crossing,
)
from tcr_pipeline.store.reports import Check, Group, Health, ReferenceProfile


def _check(
    group: Group, feature: str, statistic: str, value: float, threshold: float, crossed: bool, **fields: Any
) -> Check:
    """A check named ``group.feature.statistic``; a value that is not finite is None."""
    return Check(
        name=f"{group}.{feature}.{statistic}",
        group=group,
        feature=feature,
        statistic=statistic,
        value=finite(value),
        threshold=threshold,
        crossed=crossed,
        **fields,
    )


def _categorical_checks(
    feature: str, reference: Mapping[str, int], values: pd.Series, thresholds: DriftThresholds
) -> list[Check]:
    values = values[values != ""].astype(str)
    n = len(values)
    known = values.isin(list(reference))
    recent = category_counts(values.where(known, UNSEEN))
    unseen_rate = float((~known).mean()) if n else math.nan
    value = psi(reference, recent)
    p = chi_square_p(reference, recent)
    unseen_names = sorted(set(values[~known]))
    unseen_detail = ""
    if unseen_names:
        listed = ", ".join(unseen_names[:5]) + (" …" if len(unseen_names) > 5 else "")
        unseen_detail = f"{int((~known).sum())} of {n} unseen: {listed}"
    crossed = significant_crossing(value, thresholds.psi, p, thresholds.p_value)
    detail = shifts(reference, recent) if n else "no values"
    return [
        _check("input", feature, "psi", value, thresholds.psi, crossed, p_value=p, n=n, detail=detail),
        _check(
            "input",
            feature,
            "unseen",
            unseen_rate,
            thresholds.unseen_rate,
            n > 0 and unseen_rate > thresholds.unseen_rate,
            n=n,
            detail=unseen_detail,
        ),
    ]


def _cdr3_checks(
    feature: str, reference: ReferenceProfile, values: pd.Series, thresholds: DriftThresholds
) -> list[Check]:
    values = values[values != ""].astype(str)
    n = len(values)
    lengths = values.str.len().to_numpy()
    histogram = reference.lengths[feature]
    if n:
        result = stats.ks_2samp(expand(histogram), lengths)
        ks, p = float(result.statistic), float(result.pvalue)
        ref_bins, new_bins = length_bins(histogram, lengths)
        mean_ref = float(expand(histogram).mean())
        extra = {
            "psi": psi(ref_bins, new_bins),
            "mean_reference": mean_ref,
            "mean_recent": float(lengths.mean()),
        }
        detail = f"mean length {mean_ref:.1f} → {lengths.mean():.1f}"
    else:
        ks, p, extra, detail = math.nan, 1.0, {}, "no values"
    crossed = significant_crossing(ks, thresholds.ks, p, thresholds.p_value)
    checks = [
        _check(
            "input",
            feature,
            "length_ks",
            ks,
            thresholds.ks,
            crossed,
            p_value=p,
            n=n,
            extra=extra,
            detail=detail,
        )
    ]
    unseen_length = ~np.isin(lengths, list(histogram))
    residues = set(reference.residues[feature])
    unseen_residue = np.array([not set(v) <= residues for v in values], dtype=bool)
    for statistic, mask, what in (
        ("unseen_length", unseen_length, sorted({int(x) for x in lengths[unseen_length]})),
        ("unseen_residue", unseen_residue, sorted(set("".join(values[unseen_residue])) - residues)),
    ):
        rate = float(mask.mean()) if n else math.nan
        detail = f"{int(mask.sum())} of {n}: {', '.join(map(str, what[:8]))}" if mask.any() else ""
        crossed = n > 0 and rate > thresholds.unseen_rate
        checks.append(
            _check("input", feature, statistic, rate, thresholds.unseen_rate, crossed, n=n, detail=detail)
        )
    return checks


def input_checks(
    reference: ReferenceProfile, frame: pd.DataFrame, thresholds: DriftThresholds
) -> list[Check]:
    """Drift of the recent inputs from the rows the model trained on, feature by feature."""
    frame = normalise_names(frame)
    tcrs = distinct_tcrs(frame)
    checks = []
    for feature in PAIR_FEATURES:
        checks += _categorical_checks(feature, reference.categories[feature], frame[feature], thresholds)
    for feature in GENE_FEATURES:
        checks += _categorical_checks(feature, reference.categories[feature], tcrs[feature], thresholds)
    for feature in CDR3_FEATURES:
        checks += _cdr3_checks(feature, reference, tcrs[feature], thresholds)
    return checks


def prediction_checks(
    reference: ReferenceProfile, scores: np.ndarray, thresholds: DriftThresholds
) -> list[Check]:
    """Drift of the model's scores on recent inputs from its scores on its test split."""
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    ref = np.asarray(reference.test_scores, dtype=float)
    if n and len(ref):
        result = stats.ks_2samp(ref, scores)
        ks, p = float(result.statistic), float(result.pvalue)
        positives = int((scores >= reference.threshold).sum())
        rate = positives / n
        rate_p = float(
            stats.binomtest(positives, n, min(max(reference.test_positive_rate, 1e-9), 1 - 1e-9)).pvalue
        )
    else:
        ks, p, rate, rate_p = math.nan, 1.0, math.nan, 1.0
    delta = abs(rate - reference.test_positive_rate)
    score_extra = {
        "psi": psi(binned(ref, SCORE_BINS), binned(scores, SCORE_BINS)) if n else math.nan,
        "median_reference": float(np.median(ref)) if len(ref) else math.nan,
        "median_recent": float(np.median(scores)) if n else math.nan,
    }
    score_detail, rate_detail = "no scores", "no scores"
    if n:
        score_detail = f"median score {np.median(ref):.3f} (test split) → {np.median(scores):.3f}"
        rate_detail = f"predicted-positive rate {reference.test_positive_rate:.1%} (test split) → {rate:.1%}"
    limit = thresholds.positive_rate_delta
    return [
        _check(
            "prediction",
            "score",
            "ks",
            ks,
            thresholds.ks,
            significant_crossing(ks, thresholds.ks, p, thresholds.p_value),
            p_value=p,
            n=n,
            extra=score_extra,
            detail=score_detail,
        ),
        _check(
            "prediction",
            "positive_rate",
            "delta",
            delta,
            limit,
            significant_crossing(delta, limit, rate_p, thresholds.p_value),
            p_value=rate_p,
            n=n,
            extra={"reference": reference.test_positive_rate, "recent": rate},
            detail=rate_detail,
        ),
    ]


def concept_checks(
    reference_metrics: Mapping[str, float], metrics: Mapping[str, float], thresholds: DriftThresholds
) -> list[Check]:
    """The drop of each watched metric from the test split to newly labelled data."""
    checks = []
    for metric in thresholds.metrics:
        before, after = reference_metrics.get(metric, math.nan), metrics.get(metric, math.nan)
        drop = before - after
        computable = math.isfinite(drop)
        detail = (
            f"{before:.3f} on the test split → {after:.3f} on the new labels"
            if computable
            else "needs both classes in the labelled rows"
        )
        crossed = computable and drop > thresholds.metric_drop
        extra = {"test": before, "labelled": after}
        n = int(metrics.get("n", 0))
        checks.append(
            _check(
                "concept",
                metric,
                "drop",
                drop,
                thresholds.metric_drop,
                crossed,
                n=n,
                extra=extra,
                detail=detail,
            )
        )
    return checks


def health_checks(health: Health, thresholds: DriftThresholds, enough: bool) -> list[Check]:
    """Invalid-row rate (when the window is large enough) and request latency."""
    checks = []
    if enough and health.invalid_rate is not None:
        columns = ", ".join(f"{c} {n}" for c, n in list(health.invalid_columns.items())[:4])
        rate, limit = health.invalid_rate, thresholds.invalid_rate
        detail = f"{health.invalid} of {health.queries} rows invalid" + (f" ({columns})" if columns else "")
        checks.append(
            _check(
                "health", "invalid_rate", "rate", rate, limit, rate > limit, n=health.queries, detail=detail
            )
        )
    if health.latency_p95_ms is not None:
        p95, limit = health.latency_p95_ms, thresholds.latency_p95_ms
        detail = f"p50 {health.latency_p50_ms:.0f} ms, max {health.latency_max_ms:.0f} ms "
        detail += f"over {health.requests} requests"
        checks.append(
            _check("health", "latency", "p95_ms", p95, limit, p95 > limit, n=health.requests, detail=detail)
        )
    return checks


__all__ = ["concept_checks", "health_checks", "input_checks", "prediction_checks"]
