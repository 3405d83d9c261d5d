"""The statistics behind the monitoring checks (tcr_pipeline/monitoring/statistics.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tcr_pipeline.monitoring.statistics import (
    binned,
    chi_square_p,
    distinct_tcrs,
    length_bins,
    normalise_names,
    psi,
)


def test_psi_and_chi_square() -> None:
    same = {"a": 50, "b": 30, "c": 20}
    assert psi(same, same) == pytest.approx(0.0)
    assert psi(same, {"a": 5, "b": 3, "c": 2}) == pytest.approx(0.0)  # counts or shares alike
    # by hand: (0.2-0.5) ln(0.2/0.5) + (0.5-0.3) ln(0.5/0.3) + (0.3-0.2) ln(0.3/0.2)
    expected = -0.3 * np.log(0.4) + 0.2 * np.log(5 / 3) + 0.1 * np.log(1.5)
    assert psi(same, {"a": 20, "b": 50, "c": 30}) == pytest.approx(expected)
    # a category on one side only: large but finite
    assert 1 < psi({"a": 100}, {"a": 50, "new": 50}) < 10
    assert chi_square_p(same, same) == pytest.approx(1.0)
    assert chi_square_p({"a": 500, "b": 500}, {"a": 900, "b": 100}) < 1e-10
    assert chi_square_p({"a": 10}, {"a": 3}) == 1.0  # one category: nothing to test


def test_bins_of_scores_and_lengths() -> None:
    assert binned(np.array([0.0, 0.05, 0.1, 0.95, 1.0]), (0.0, 0.1, 0.5, 1.0)) == {0: 2, 1: 1, 2: 2}
    # lengths outside the training range fall in one bin below and one above it
    reference, recent = length_bins({12: 5, 13: 3}, np.array([10, 11, 12, 13, 14, 20]))
    assert reference == {12: 5, 13: 3}
    assert recent == {11: 2, 12: 1, 13: 1, 14: 2}


def test_genes_and_mhc_are_counted_by_their_imgt_names() -> None:
    frame = pd.DataFrame(
        {
            "CDR3_alpha": ["CAVF", "CAVF", "CAVF"],
            "CDR3_beta": ["CASSF", "CASSF", "CASSF"],
            "V_alpha": ["TRAV12-1*01", "TRAV12-01", ""],
            "V_beta": ["TRBV20-1*01", "TCRBV20-01", "TRBV99-9*01"],
            "J_alpha": ["TRAJ10*01", "TRAJ10", "TRAJ10"],
            "J_beta": ["TRBJ2-7*01", "TRBJ2-7", "TRBJ2-7"],
            "MHC": ["A*02:01", "HLA-A*02:01", "HLA-A*02:01"],
            "Epitope": ["GILGFVFTL"] * 3,
        }
    )
    names = normalise_names(frame)
    assert list(names["V_alpha"]) == ["TRAV12-1", "TRAV12-1", ""]  # an empty value stays empty
    assert list(names["V_beta"]) == ["TRBV20-1", "TRBV20-1", "TRBV99-9*01"]  # unrecognised: as written
    assert set(names["MHC"]) == {"HLA-A*02:01"}
    assert list(frame["V_alpha"]) == ["TRAV12-1*01", "TRAV12-01", ""]  # the input is not changed
    # written two ways, one receptor
    assert len(distinct_tcrs(names.iloc[:2])) == 1
    assert len(distinct_tcrs(frame.iloc[:2])) == 2
