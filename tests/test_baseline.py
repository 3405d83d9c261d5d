"""The k-mer logistic-regression baseline every search run is measured against."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tcr_pipeline.baseline import evaluate_baseline, fit_baseline
from tcr_pipeline.config import PrepareParams
from tcr_pipeline.metrics import compute_metrics
from tcr_pipeline.splits import split_pairs


def _motif_pairs(n_tcrs: int = 120, seed: int = 0) -> pd.DataFrame:
    """Every TCR × three epitopes; a TCR binds AAA when its CDR3β holds WW, else BBB or CCC."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVY"))  # no W outside the motif
    rows = []
    for i in range(n_tcrs):
        core = "".join(rng.choice(letters, 6))
        motif = i % 3 == 0
        beta = "CASS" + (core[:3] + "WW" + core[3:] if motif else core) + "F"
        binds = "AAAAAAAAA" if motif else ("BBBBBBBBB" if i % 3 == 1 else "CCCCCCCCC")
        alpha = "CAV" + "".join(rng.choice(letters, 7)) + "F"
        for epitope in ("AAAAAAAAA", "BBBBBBBBB", "CCCCCCCCC"):
            rows.append(
                {
                    "CDR3_alpha": alpha, "CDR3_beta": beta, "V_alpha": "TRAV1-1", "V_beta": "TRBV2",
                    "J_alpha": "TRAJ1", "J_beta": "TRBJ1-1", "Epitope": epitope, "MHC": "HLA-A*02:01",
                    "Label": int(epitope == binds),
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_a_kmer_motif_is_learned_per_epitope() -> None:
    frame = _motif_pairs()
    train, test = frame.iloc[: 90 * 3], frame.iloc[90 * 3 :]
    baseline = fit_baseline(train)
    assert set(baseline.classifiers) == {"AAAAAAAAA", "BBBBBBBBB", "CCCCCCCCC"}
    scores = baseline.score(test)
    assert ((scores >= 0) & (scores <= 1)).all()
    auc = compute_metrics(test["Label"].to_numpy(), scores, test["Epitope"].to_numpy())[
        "epitope_auc/AAAAAAAAA"
    ]
    assert auc > 0.95  # WW in CDR3β is a 2-mer feature


def test_an_epitope_without_positives_scores_its_base_rate_and_an_unknown_one_zero() -> None:
    frame = _motif_pairs()
    train = frame[~((frame["Epitope"] == "CCCCCCCCC") & (frame["Label"] == 1))]
    baseline = fit_baseline(train)
    assert baseline.classifiers["CCCCCCCCC"] == 0.0
    unseen = frame.iloc[:3].assign(Epitope="DDDDDDDDD")
    assert baseline.score(unseen).tolist() == [0.0, 0.0, 0.0]


def test_evaluate_baseline_scores_validation_and_test(shipped_frame: pd.DataFrame) -> None:
    frame = shipped_frame.reset_index(drop=True)
    assignment = split_pairs(frame, PrepareParams(split="tcr"))
    metrics = evaluate_baseline(frame, assignment)
    assert set(metrics) == {"val", "test"}
    for split, name in ((1, "val"), (2, "test")):
        assert metrics[name]["n"] == (assignment == split).sum()
        assert 0.5 < metrics[name]["mean_epitope_auc"] < 0.95
