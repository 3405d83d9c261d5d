"""The statistics behind the checks (pure): what is counted, PSI, chi-square, bins.

Receptor features (CDR3 lengths and residues, V/J genes) are counted once per distinct αβ TCR
(a TCR is queried against many epitopes; counting it per row would make every test far too
confident); pair features (epitope, MHC) are counted per row. Gene and MHC names are counted
as the encoder sees them, normalised to IMGT names (:func:`normalise_names`), so the rows a
model trained on (decoded from its prepared data) and the logged queries (as users wrote them)
are counted alike. ``docs/monitoring.md`` explains each statistic.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from tcr_pipeline.data import TCR_COLUMNS
from tcr_pipeline.genes import normalise_gene, normalise_mhc

PAIR_FEATURES = ("Epitope", "MHC")  # counted per row
GENE_FEATURES = ("V_alpha", "V_beta", "J_alpha", "J_beta")  # counted per distinct TCR
CDR3_FEATURES = ("CDR3_alpha", "CDR3_beta")  # lengths and residues, per distinct TCR
PSI_EPSILON = 1e-4  # stands in for a zero proportion, so a category new on one side has a finite PSI
SCORE_BINS = tuple(np.linspace(0.0, 1.0, 11).round(1))
UNSEEN = "<unseen>"


def normalise_names(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its V/J genes and MHC as IMGT names (``TRBV20-01`` and ``TRBV20-1*01`` are
    one gene); a name tidytcells does not recognise stays as written."""
    frame = frame.copy()
    for column in (*GENE_FEATURES, "MHC"):
        normalise = normalise_mhc if column == "MHC" else normalise_gene
        values = frame[column].astype(str)
        names = {v: normalise(v)[0] if v else v for v in values.unique()}
        frame[column] = values.map(names)
    return frame


def distinct_tcrs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct αβ TCR (both CDR3s and all four genes)."""
    return frame.loc[~frame.duplicated(subset=list(TCR_COLUMNS))]


def category_counts(values: pd.Series) -> dict[str, int]:
    """Rows per value, as strings."""
    return {str(k): int(v) for k, v in values.astype(str).value_counts().items()}


def length_counts(values: pd.Series) -> dict[int, int]:
    """Values per string length."""
    counts = Counter(len(v) for v in values.astype(str))
    return {int(k): int(v) for k, v in counts.items()}


def psi(reference: Mapping[Any, float], recent: Mapping[Any, float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index ``Σ (q − p) ln(q / p)`` of two count (or share) tables.

    Proportions below ``epsilon`` are raised to it, so a category present on one side only
    contributes a large but finite term.
    """
    keys = sorted(set(reference) | set(recent), key=str)
    p = np.array([reference.get(k, 0.0) for k in keys], dtype=float)
    q = np.array([recent.get(k, 0.0) for k in keys], dtype=float)
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    p = np.clip(p / p.sum(), epsilon, None)
    q = np.clip(q / q.sum(), epsilon, None)
    return float(np.sum((q - p) * np.log(q / p)))


def chi_square_p(reference: Mapping[Any, float], recent: Mapping[Any, float]) -> float:
    """p-value of a chi-square test that two count tables come from one distribution."""
    keys = sorted(set(reference) | set(recent), key=str)
    table = np.array([[reference.get(k, 0) for k in keys], [recent.get(k, 0) for k in keys]], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(stats.chi2_contingency(table).pvalue)


def binned(values: np.ndarray, edges: Sequence[float]) -> dict[int, int]:
    """Counts per bin of ``edges`` (bin i: edges[i] ≤ v < edges[i+1]; the last bin is closed)."""
    counts, _ = np.histogram(np.asarray(values, dtype=float), bins=np.asarray(edges, dtype=float))
    return {i: int(c) for i, c in enumerate(counts)}


def length_bins(reference: Mapping[int, int], values: np.ndarray) -> tuple[dict[int, int], dict[int, int]]:
    """Reference and recent counts on fixed bins: each training length, plus below and above."""
    low, high = min(reference), max(reference)
    recent: Counter[int] = Counter()
    for v in np.asarray(values, dtype=int):
        recent[int(min(max(v, low - 1), high + 1))] += 1
    return dict(reference), dict(recent)


def expand(histogram: Mapping[int, int]) -> np.ndarray:
    """The values of a histogram (value -> count), each repeated count times, sorted."""
    lengths = np.array(sorted(histogram), dtype=float)
    return np.repeat(lengths, [histogram[int(k)] for k in lengths])


def shifts(reference: Mapping[str, int], recent: Mapping[str, int], top: int = 3) -> str:
    """The categories whose share moved most, as ``name 7.1% → 62.0%``."""
    total_ref = sum(reference.values()) or 1
    total_new = sum(recent.values()) or 1
    keys = set(reference) | set(recent)
    moves = sorted(
        keys,
        key=lambda k: (-abs(recent.get(k, 0) / total_new - reference.get(k, 0) / total_ref), str(k)),
    )
    return ", ".join(
        f"{k} {reference.get(k, 0) / total_ref:.1%} → {recent.get(k, 0) / total_new:.1%}" for k in moves[:top]
    )


def significant_crossing(value: float, threshold: float, p_value: float, alpha: float) -> bool:
    """Over the threshold and significant at ``alpha`` (a NaN value never crosses)."""
    return math.isfinite(value) and value > threshold and p_value < alpha


def finite(value: float) -> float | None:
    """``value``, or None when it is NaN or infinite (a check's value that could not be computed)."""
    return value if math.isfinite(value) else None


__all__ = [
    "CDR3_FEATURES",
    "GENE_FEATURES",
    "PAIR_FEATURES",
    "SCORE_BINS",
    "UNSEEN",
    "binned",
    "category_counts",
    "chi_square_p",
    "distinct_tcrs",
    "expand",
    "finite",
    "length_bins",
    "length_counts",
    "normalise_names",
    "psi",
    "shifts",
    "significant_crossing",
]
