"""Train/validation/test splits of a pair table.

``random``  the paper's: rows shuffled with ``torch.utils.data.random_split`` (seed 42 by
            default). It leaks: each TCR's 14 rows land in several splits.
``tcr``     grouped by αβ TCR (both CDR3s and all four genes): no TCR is in two splits. Default.
``epitope`` grouped by epitope: the test epitopes are never seen in training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tcr_pipeline.config import PrepareParams
from tcr_pipeline.data import tcr_keys
from tcr_pipeline.errors import InputError

SPLITS = ("train", "val", "test")


def _sizes(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Split sizes as ``torch.utils.data.random_split`` computes them for fractions."""
    sizes = [int(np.floor(n * f)) for f in fractions]
    for i in range(n - sum(sizes)):
        sizes[i % len(sizes)] += 1
    return sizes


def split_pairs(frame: pd.DataFrame, params: PrepareParams) -> np.ndarray:
    """Assign every row a split: 0 train, 1 validation, 2 test."""
    if params.split == "random":
        generator = torch.Generator().manual_seed(params.seed)
        rows: list[int] = list(range(len(frame)))
        subsets: list[torch.utils.data.Subset[int]] = torch.utils.data.random_split(
            rows,  # type: ignore[arg-type]  # any sequence works as a dataset here
            list(params.fractions),
            generator,
        )
        assignment = np.empty(len(frame), dtype=np.int8)
        for split, subset in enumerate(subsets):
            assignment[list(subset.indices)] = split
        return assignment
    keys = tcr_keys(frame) if params.split == "tcr" else frame["Epitope"].astype(str)
    groups, codes = np.unique(keys.to_numpy(), return_inverse=True)
    if len(groups) < 3:
        raise InputError(f"split={params.split}: needs at least 3 groups, found {len(groups)}")
    order = np.random.default_rng(params.seed).permutation(len(groups))
    group_split = np.empty(len(groups), dtype=np.int8)
    if params.split == "tcr":
        sizes = _sizes(len(groups), params.fractions)
        group_split[order[: sizes[0]]] = 0
        group_split[order[sizes[0] : sizes[0] + sizes[1]]] = 1
        group_split[order[sizes[0] + sizes[1] :]] = 2
    else:
        # few, unequal groups: fill test, then validation, to their share of rows
        rows_per_group = np.bincount(codes)
        targets = np.array(params.fractions) * len(frame)
        group_split[:] = 0
        filled = [0.0, 0.0, 0.0]
        for split in (2, 1):
            for g in order:
                if group_split[g] != 0 or filled[split] >= targets[split]:
                    continue
                if sum(group_split == 0) <= 1:
                    break
                group_split[g] = split
                filled[split] += rows_per_group[g]
    assignment = group_split[codes]
    for split, name in enumerate(SPLITS):
        if not (assignment == split).any():
            raise InputError(f"split={params.split}: the {name} split is empty; use more data")
    return assignment
