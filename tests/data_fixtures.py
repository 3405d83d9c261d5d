"""Fixtures of data: the shipped pair table, a small sample of it, tiny parameters, a tiny model.

The suite must stay fast: every stage runs on a small CSV with a small model for two epochs,
except where a test needs the whole shipped file.

``TCR_TEST_DEVICE`` (default ``cpu``) is the device of the tiny parameters and of
test_population.py's trials: ``TCR_TEST_DEVICE=cuda`` runs those tests on a GPU
(bench/gpu_check.sh).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tcr_pipeline.config import DataParams, EvaluateParams, ModelParams, Params, PrepareParams, TrainParams
from tcr_pipeline.data import load_pairs, tcr_keys
from tcr_pipeline.files import sha256_file
from tcr_pipeline.prepare import Prepared, encode_pairs
from tcr_pipeline.recipe import fit_and_save

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CSV = ROOT / "data" / "raw" / "viral_pairs.csv"
SMALL_TCRS = 40  # × 14 rows each
TEST_DEVICE = os.environ.get("TCR_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def shipped_csv() -> Path:
    """The shipped raw pair table (8,932 rows, 638 TCRs × 14 epitopes, one positive each)."""
    assert SHIPPED_CSV.is_file(), f"shipped data missing: {SHIPPED_CSV}"
    return SHIPPED_CSV


@pytest.fixture(scope="session")
def shipped_frame(shipped_csv: Path) -> pd.DataFrame:
    """The shipped table as :func:`load_pairs` returns it (do not mutate: copy first)."""
    return load_pairs(shipped_csv)


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory: pytest.TempPathFactory, shipped_csv: Path) -> Path:
    """40 TCRs with all 14 of their rows (560 rows, 40 positive), written verbatim to a CSV.

    The TCRs of the shipped file's first five rows are among them, so an encoder fitted on the
    small CSV represents the rows that the bad-input files in ``BAD_INPUTS`` are made of.
    """
    raw = pd.read_csv(shipped_csv, dtype=str, keep_default_na=False)
    keys = tcr_keys(raw)
    first = list(dict.fromkeys(keys.head(5)))
    others = np.array(sorted(set(keys) - set(first)))
    rng = np.random.default_rng(0)
    chosen = {*first, *rng.choice(others, SMALL_TCRS - len(first), replace=False)}
    subset = raw[keys.isin(chosen)]
    labels = subset["Label"].astype(int)
    assert len(subset) == SMALL_TCRS * 14
    assert labels.sum() == SMALL_TCRS  # one positive per TCR: both classes present
    assert subset.loc[labels == 1, "Epitope"].nunique() >= 5  # several epitopes among positives
    path = tmp_path_factory.mktemp("small") / "small_pairs.csv"
    subset.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def small_params(small_csv: Path) -> Params:
    """Tiny but complete parameters: the small CSV, a small model, two epochs, TEST_DEVICE (CPU)."""
    return Params(
        data=DataParams(raw=small_csv),
        prepare=PrepareParams(encoding="onehot", split="tcr", seed=42),
        train=TrainParams(
            model=ModelParams(kind="small", small_widths=(32, 16)),
            lr=0.01,
            epochs=2,
            batch_size=64,
            seed=0,
            device=TEST_DEVICE,
        ),
        evaluate=EvaluateParams(threshold=0.5),
    )


@pytest.fixture(scope="session")
def small_prepared(small_csv: Path, small_params: Params) -> Prepared:
    """The small CSV encoded (one-hot) and split by TCR, in memory."""
    frame = load_pairs(small_csv)
    return encode_pairs(frame, small_params.prepare, sha256_file(small_csv))


@pytest.fixture(scope="session")
def tiny_bundle(
    tmp_path_factory: pytest.TempPathFactory, small_prepared: Prepared, small_params: Params
) -> Path:
    """A model bundle trained in-process on the small CSV (for `predict` tests)."""
    out = tmp_path_factory.mktemp("bundle") / "model"
    fit_and_save(small_prepared, small_params.train, small_params.evaluate, out, splits=("val",))
    return out
