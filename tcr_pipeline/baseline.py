"""A simple, strong baseline: per-epitope logistic regression on CDR3 k-mers and V/J genes.

Features per TCR: counts of the 2- and 3-mers of CDR3α and of CDR3β (separately) plus one-hot
V/J genes. A linear model over TCR features alone cannot tell epitopes apart, so, as is usual
for TCR specificity, one classifier is fitted per epitope (class-weighted for the imbalance);
an epitope without positives in training scores its training base rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder

from tcr_pipeline.data import GENE_COLUMNS


@dataclass
class KmerBaseline:
    """Fitted featurisers and one classifier (or a constant) per epitope."""

    alpha: CountVectorizer
    beta: CountVectorizer
    genes: OneHotEncoder
    classifiers: dict[str, LogisticRegression | float]

    def features(self, frame: pd.DataFrame) -> sparse.csr_matrix:
        return sparse.hstack(
            [
                self.alpha.transform(frame["CDR3_alpha"]),
                self.beta.transform(frame["CDR3_beta"]),
                self.genes.transform(frame[list(GENE_COLUMNS)]),
            ]
        ).tocsr()

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of binding per row."""
        scores = np.zeros(len(frame))
        features = self.features(frame)
        epitopes = frame["Epitope"].to_numpy()
        for epitope in np.unique(epitopes):
            rows = np.flatnonzero(epitopes == epitope)
            model = self.classifiers.get(str(epitope), 0.0)
            if isinstance(model, LogisticRegression):
                scores[rows] = model.predict_proba(features[rows])[:, 1]
            else:
                scores[rows] = model
        return scores


def fit_baseline(train: pd.DataFrame, c: float = 1.0, seed: int = 42) -> KmerBaseline:
    """Fit the k-mer featurisers on the training rows and one classifier per epitope."""

    def kmers() -> CountVectorizer:
        return CountVectorizer(analyzer="char", ngram_range=(2, 3), lowercase=False)

    baseline = KmerBaseline(
        alpha=kmers().fit(train["CDR3_alpha"]),
        beta=kmers().fit(train["CDR3_beta"]),
        genes=OneHotEncoder(handle_unknown="ignore").fit(train[list(GENE_COLUMNS)]),
        classifiers={},
    )
    features = baseline.features(train)
    labels = train["Label"].to_numpy().astype(int)
    epitopes = train["Epitope"].to_numpy()
    for epitope in np.unique(epitopes):
        rows = np.flatnonzero(epitopes == epitope)
        if labels[rows].min() == labels[rows].max():
            baseline.classifiers[str(epitope)] = float(labels[rows].mean())
            continue
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
        baseline.classifiers[str(epitope)] = model.fit(features[rows], labels[rows])
    return baseline


def evaluate_baseline(
    frame: pd.DataFrame, assignment: np.ndarray, threshold: float = 0.5
) -> dict[str, dict[str, float]]:
    """Fit on the training rows (split 0); metrics on validation (1) and test (2)."""
    from tcr_pipeline.metrics import compute_metrics

    model = fit_baseline(frame[assignment == 0])
    metrics = {}
    for split, name in ((1, "val"), (2, "test")):
        rows = frame[assignment == split]
        metrics[name] = compute_metrics(
            rows["Label"].to_numpy(), model.score(rows), rows["Epitope"].to_numpy(), threshold
        )
    return metrics
