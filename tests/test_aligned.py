"""The aligned encoding: a fixed IMGT-style frame, tidytcells gene names, warnings for the unseen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tcr_pipeline.encoding import CDR3_FRAME, AlignedEncoder, align_codes, fit_encoder, load_encoder
from tcr_pipeline.genes import normalise_gene


@pytest.fixture(scope="module")
def frame(shipped_frame: pd.DataFrame) -> pd.DataFrame:
    return shipped_frame.reset_index(drop=True)


@pytest.fixture(scope="module")
def encoder(frame: pd.DataFrame) -> AlignedEncoder:
    training = np.arange(len(frame)) < len(frame) // 2
    fitted = fit_encoder(frame, "aligned", training=training)
    assert isinstance(fitted, AlignedEncoder)
    return fitted


def _row(frame: pd.DataFrame, **changes: str) -> pd.DataFrame:
    row = frame.iloc[[0]].copy().reset_index(drop=True)
    for column, value in changes.items():
        row[column] = value
    return row


def test_conserved_ends_keep_their_frame_positions_whatever_the_length() -> None:
    codes, lengths = align_codes(["CASSF", "CASSLGQF", "CASSLGQAYEQYF"], 12)
    assert list(lengths) == [5, 8, 13]
    assert codes[0, 0] == codes[1, 0] != 0  # the N-terminal C
    assert codes[0, -1] == codes[1, -1] != 0  # the C-terminal F at the frame's end
    assert codes[2].tolist() == [0] * 12  # longer than the frame: nothing encoded
    assert (codes[0] == 0).sum() == 12 - 5  # the gap is in the middle
    assert codes[0].tolist()[:3] != [0, 0, 0]
    assert codes[0, 3] == 0
    assert codes[0, -2] != 0


def test_round_trip_on_the_shipped_data(frame: pd.DataFrame, encoder: AlignedEncoder) -> None:
    encoded = encoder.encode(frame)
    assert encoded.errors == [None] * len(frame)
    assert encoded.features.shape == (len(frame), encoder.dim)
    decoded = encoder.decode(encoded.features)
    for column in ("CDR3_alpha", "CDR3_beta", "MHC"):
        assert decoded[column].tolist() == frame[column].tolist()
    assert decoded["V_beta"].tolist() == [normalise_gene(v)[0] for v in frame["V_beta"]]


def test_a_25_residue_cdr3_beta_is_encoded_and_one_over_the_frame_is_a_row_error(
    frame: pd.DataFrame, encoder: AlignedEncoder
) -> None:
    long_beta = "CASS" + "LGQ" * 7 + "F"
    assert len(long_beta) == 26
    too_long = "C" + "A" * CDR3_FRAME
    encoded = encoder.encode(pd.concat([_row(frame, CDR3_beta=long_beta), _row(frame, CDR3_beta=too_long)]))
    assert encoded.errors[0] is None
    assert encoded.errors[1] == f"CDR3_beta: length {CDR3_FRAME + 1} exceeds the model's frame of 30 residues"
    assert not encoded.features[1].any()


@pytest.mark.parametrize("spelling", ["TRBV20-1", "TRBV20-01", "TRBV20-1*01", "TCRBV20-01"])
def test_spellings_of_one_gene_encode_the_same(
    frame: pd.DataFrame, encoder: AlignedEncoder, spelling: str
) -> None:
    reference = encoder.encode(_row(frame, V_beta="TRBV20-1*01")).features
    assert np.array_equal(encoder.encode(_row(frame, V_beta=spelling)).features, reference)


def test_anything_unseen_in_training_is_a_warning_not_a_silent_code(
    frame: pd.DataFrame, encoder: AlignedEncoder
) -> None:
    seen = encoder.encode(frame.iloc[:5])
    assert seen.warnings == [None] * 5
    made_up = encoder.encode(_row(frame, V_beta="TRBV99*01")).warnings
    assert made_up is not None
    assert made_up[0] == "V_beta: 'TRBV99*01' is not a recognised IMGT name"
    untrained = sorted(set(encoder.vocabularies["J_alpha"]) - set(encoder.trained["J_alpha"]))
    if untrained:  # a real gene present only in the rows outside training
        warned = encoder.encode(_row(frame, J_alpha=untrained[0])).warnings
        assert warned is not None
        assert warned[0] == f"J_alpha: {untrained[0]!r} never seen in training"
    epitope = encoder.encode(_row(frame, Epitope="SIINFEKLV")).warnings
    assert epitope is not None
    assert "Epitope: 'SIINFEKLV' never seen in training" in str(epitope[0])
    long_beta = encoder.encode(_row(frame, CDR3_beta="CASSWWWWWWWWWWWWWWWWWWWWF")).warnings
    assert long_beta is not None
    assert "CDR3_beta: residue(s) at frame position(s)" in str(long_beta[0])


def test_the_encoder_saves_and_loads(tmp_path: Path, encoder: AlignedEncoder) -> None:
    path = encoder.save(tmp_path / "encoder.json")
    assert load_encoder(path) == encoder
