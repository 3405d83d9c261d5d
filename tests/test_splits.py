"""Splits of the shipped data: complete, sized, grouped (tcr, epitope) and reproducible."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tcr_pipeline.config import PrepareParams
from tcr_pipeline.data import tcr_keys
from tcr_pipeline.errors import InputError
from tcr_pipeline.splits import split_pairs

KINDS = ("random", "tcr", "epitope")


@pytest.fixture(scope="module")
def keys(shipped_frame: pd.DataFrame) -> pd.Series:
    return tcr_keys(shipped_frame)


@pytest.fixture(scope="module")
def assignments(shipped_frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {kind: split_pairs(shipped_frame, PrepareParams(split=kind, seed=42)) for kind in KINDS}


def _spanning(keys: pd.Series, assignment: np.ndarray) -> int:
    """How many distinct keys have rows in more than one split."""
    return int((pd.Series(assignment).groupby(keys.to_numpy()).nunique() > 1).sum())


@pytest.mark.parametrize("kind", KINDS)
def test_every_row_is_assigned_and_no_split_is_empty(
    shipped_frame: pd.DataFrame, assignments: dict[str, np.ndarray], kind: str
) -> None:
    assignment = assignments[kind]
    assert assignment.shape == (len(shipped_frame),)
    assert set(np.unique(assignment)) == {0, 1, 2}
    assert np.bincount(assignment).sum() == len(shipped_frame)


@pytest.mark.parametrize("kind", ["random", "tcr"])
def test_sizes_are_about_80_10_10(assignments: dict[str, np.ndarray], kind: str) -> None:
    shares = np.bincount(assignments[kind]) / len(assignments[kind])
    np.testing.assert_allclose(shares, [0.8, 0.1, 0.1], atol=0.01)


def test_random_sizes_are_random_splits(assignments: dict[str, np.ndarray]) -> None:
    # 8932 × (0.8, 0.1, 0.1) floored to 7145 + 893 + 893, the one row left over goes to train
    assert np.bincount(assignments["random"]).tolist() == [7146, 893, 893]


def test_tcr_split_keeps_each_tcr_in_one_split(keys: pd.Series, assignments: dict[str, np.ndarray]) -> None:
    assert _spanning(keys, assignments["tcr"]) == 0
    per_split = [set(keys[assignments["tcr"] == s]) for s in range(3)]
    assert not (per_split[0] & per_split[1])
    assert not (per_split[0] & per_split[2])
    assert not (per_split[1] & per_split[2])
    # 638 TCRs: 511 / 64 / 63 of them, 14 rows each
    assert [len(s) for s in per_split] == [511, 64, 63]


def test_epitope_split_keeps_each_epitope_in_one_split(
    shipped_frame: pd.DataFrame, assignments: dict[str, np.ndarray]
) -> None:
    epitopes = shipped_frame["Epitope"]
    assignment = assignments["epitope"]
    assert _spanning(epitopes, assignment) == 0
    train = set(epitopes[assignment == 0])
    assert not train & set(epitopes[assignment == 1])
    assert not train & set(epitopes[assignment == 2])
    # 14 epitopes of 638 rows: validation and test each get enough epitopes for ~10 % of the rows
    shares = np.bincount(assignment) / len(assignment)
    assert shares[1] >= 0.1
    assert shares[2] >= 0.1
    assert shares[0] >= 0.6


def test_random_split_leaks_tcrs(keys: pd.Series, assignments: dict[str, np.ndarray]) -> None:
    """The paper's split: a TCR's 14 rows land in several splits (documented leak)."""
    leaked = _spanning(keys, assignments["random"])
    assert leaked > 0
    assert leaked > keys.nunique() // 2  # in fact most TCRs: 14 draws rarely all land in train


def test_random_split_is_torch_random_split_with_seed_42(
    shipped_frame: pd.DataFrame, assignments: dict[str, np.ndarray]
) -> None:
    subsets = torch.utils.data.random_split(
        range(len(shipped_frame)), [0.8, 0.1, 0.1], generator=torch.Generator().manual_seed(42)
    )
    expected = np.empty(len(shipped_frame), dtype=np.int8)
    for split, subset in enumerate(subsets):
        expected[list(subset.indices)] = split
    np.testing.assert_array_equal(assignments["random"], expected)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_given_the_seed(
    shipped_frame: pd.DataFrame, assignments: dict[str, np.ndarray], kind: str
) -> None:
    again = split_pairs(shipped_frame, PrepareParams(split=kind, seed=42))
    np.testing.assert_array_equal(again, assignments[kind])
    other = split_pairs(shipped_frame, PrepareParams(split=kind, seed=7))
    assert not np.array_equal(other, assignments[kind])


def test_fractions_are_respected(shipped_frame: pd.DataFrame) -> None:
    assignment = split_pairs(shipped_frame, PrepareParams(split="tcr", fractions=(0.6, 0.2, 0.2)))
    np.testing.assert_allclose(np.bincount(assignment) / len(assignment), [0.6, 0.2, 0.2], atol=0.01)


def test_too_few_groups_is_an_input_error(shipped_frame: pd.DataFrame, keys: pd.Series) -> None:
    two_epitopes = shipped_frame[shipped_frame["Epitope"].isin(["GILGFVFTL", "NLVPMVATV"])]
    with pytest.raises(InputError, match="split=epitope: needs at least 3 groups, found 2"):
        split_pairs(two_epitopes, PrepareParams(split="epitope"))
    three_tcrs = shipped_frame[keys.isin(keys.unique()[:3])]
    with pytest.raises(InputError, match="split=tcr: the val split is empty"):
        split_pairs(three_tcrs, PrepareParams(split="tcr"))
