"""Compact aligned features: the smallest integer dtype, read the same as float32 codes by every
model, old float32 prepared data still loading and training identically; the synthetic pairs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tcr_pipeline import synthetic
from tcr_pipeline.bundle import load_bundle, predict_frame
from tcr_pipeline.config import EvaluateParams, ModelParams, PrepareParams, TrainParams
from tcr_pipeline.data import load_pairs, tcr_keys
from tcr_pipeline.files import sha256_file
from tcr_pipeline.frames import code_dtype
from tcr_pipeline.prepare import Prepared, encode_pairs, load_prepared, write_prepared
from tcr_pipeline.recipe import fit_and_save
from tcr_pipeline.synthetic import Options, write_pairs
from tcr_pipeline.training import predict_scores, train_model


@pytest.fixture(scope="module")
def aligned(small_csv: Path) -> Prepared:
    """The small CSV, aligned encoding."""
    return encode_pairs(load_pairs(small_csv), PrepareParams(encoding="aligned"), sha256_file(small_csv))


def _as_float(prepared: Prepared) -> Prepared:
    """The same data as the previous version held it: float32 codes."""
    return dataclasses.replace(prepared, features=prepared.features.float())


def test_code_dtype_is_the_smallest_that_holds_the_codes() -> None:
    assert code_dtype(20) == np.uint8
    assert code_dtype(255) == np.uint8
    assert code_dtype(256) == np.int16
    assert code_dtype(32767) == np.int16
    assert code_dtype(32768) == np.int32


def test_aligned_features_are_uint8_codes(aligned: Prepared) -> None:
    assert aligned.encoder.code_dtype == np.uint8  # type: ignore[union-attr]
    assert aligned.features.dtype == torch.uint8
    assert aligned.meta["feature_dtype"] == "uint8"
    assert aligned.features.shape[1] == 81
    assert int(aligned.features.max()) <= 255


def test_clone_id_keeps_float_codes(small_csv: Path) -> None:
    params = PrepareParams(encoding="aligned", use_clone_id=True)
    prepared = encode_pairs(load_pairs(small_csv, require_clone_id=True), params, "x")
    assert prepared.features.dtype == torch.float32
    assert float(prepared.features[:, -1].max()) == pytest.approx(1.0)


def test_float32_prepared_data_loads_compact(aligned: Prepared, tmp_path: Path) -> None:
    write_prepared(_as_float(aligned), tmp_path)  # what the previous version wrote
    assert torch.load(tmp_path / "dataset.pt", weights_only=True)["features"].dtype == torch.float32
    loaded = load_prepared(tmp_path)
    assert loaded.features.dtype == torch.uint8
    assert torch.equal(loaded.features, aligned.features)


@pytest.mark.parametrize("kind", ["small", "medium", "kmer", "cnn"])
def test_training_on_codes_equals_training_on_float32_codes(aligned: Prepared, kind: str) -> None:
    params = TrainParams(model=ModelParams(kind=kind), epochs=2, batch_size=64, seed=3, device="cpu")
    compact = train_model(aligned, params, EvaluateParams())
    floats = train_model(_as_float(aligned), params, EvaluateParams())
    keys = ("train_loss", "val_loss", "val_roc_auc", "val_mean_epitope_auc")
    assert [[r[k] for k in keys] for r in compact.history] == [[r[k] for k in keys] for r in floats.history]
    for (name, a), (_, b) in zip(
        compact.model.state_dict().items(), floats.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    rows = aligned.rows("test")
    assert torch.equal(
        predict_scores(compact.model, aligned.features, rows=rows),
        predict_scores(floats.model, aligned.features.float()[rows]),
    )


def test_folds_match_the_float_path(aligned: Prepared) -> None:
    params = TrainParams(model=ModelParams(kind="small"), epochs=1, batch_size=64, folds=2, device="cpu")
    compact = train_model(aligned, params, EvaluateParams())
    floats = train_model(_as_float(aligned), params, EvaluateParams())
    assert compact.history == [{**r, **{k: compact.history[i][k] for k in ("seconds", "rows_per_second")}}
                               for i, r in enumerate(floats.history)]  # fmt: skip
    assert compact.val_scores is not None
    assert floats.val_scores is not None
    assert torch.equal(compact.val_scores, floats.val_scores)


def test_a_bundle_predicts_what_the_float_path_scored(
    aligned: Prepared, small_csv: Path, tmp_path: Path
) -> None:
    params = TrainParams(model=ModelParams(kind="small"), epochs=1, batch_size=64, device="cpu")
    fit_and_save(aligned, params, EvaluateParams(), tmp_path / "model", splits=("val",))
    bundle = load_bundle(tmp_path / "model")
    frame = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    scored = predict_frame(bundle, frame)
    expected = predict_scores(bundle.model, aligned.features.float())  # float32 codes, as before
    assert scored["score"].tolist() == [f"{s:.6f}" for s in expected.tolist()]


def test_synthetic_pairs_are_valid_deterministic_and_chunked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synthetic, "CHUNK_TCRS", 512)  # several chunks in a small file
    options = Options(rows=20_000, seed=5, epitopes=300)
    first, again = tmp_path / "a.csv", tmp_path / "b.csv"
    chunks: list[int] = []
    write_pairs(first, options, progress=chunks.append)
    write_pairs(again, options)
    assert first.read_bytes() == again.read_bytes()
    assert sum(chunks) == 20_000
    assert len(chunks) >= 2
    frame = load_pairs(first)  # validates: amino acids, gene names, no duplicate pair
    assert len(frame) == 20_000
    assert frame["Label"].mean() == pytest.approx(1 / 14, abs=0.002)
    assert frame["Epitope"].nunique() > 255
    assert tcr_keys(frame).nunique() == pytest.approx(20_000 / 14, abs=1)
    shipped = load_pairs(Path(__file__).parents[1] / "data" / "raw" / "viral_pairs.csv")
    assert set(frame["V_beta"]) <= set(shipped["V_beta"])
    assert set(frame["CDR3_beta"].str.len()) <= set(shipped["CDR3_beta"].str.len())
    other = tmp_path / "c.csv"
    write_pairs(other, dataclasses.replace(options, seed=6))
    assert other.read_bytes() != first.read_bytes()

    prepared = encode_pairs(frame, PrepareParams(encoding="aligned"), "synthetic")
    assert prepared.features.dtype == torch.int16  # > 255 epitopes: two bytes per code


def test_synthetic_motifs_are_learnable(tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs.csv", Options(rows=8_000, seed=1, epitopes=20))
    prepared = encode_pairs(load_pairs(tmp_path / "pairs.csv"), PrepareParams(encoding="aligned"), "x")
    params = TrainParams(model=ModelParams(kind="kmer"), epochs=3, batch_size=256, device="cpu")
    result = train_model(prepared, params, EvaluateParams())
    assert result.history[-1]["val_mean_epitope_auc"] > 0.7  # chance is 0.5
