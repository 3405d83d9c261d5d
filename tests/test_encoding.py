"""Encodings: exact round trips, the paper's character values, per-row errors, JSON save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tcr_pipeline.data import FEATURE_COLUMNS
from tcr_pipeline.encoding import (
    PAPER_GROUPS,
    UNKNOWN,
    OneHotEncoder,
    PaperEncoder,
    fit_encoder,
    load_encoder,
)
from tcr_pipeline.errors import InputError

SETTINGS = [
    pytest.param("paper", False, id="paper"),
    pytest.param("paper", True, id="paper+clone_id"),
    pytest.param("onehot", False, id="onehot"),
    pytest.param("onehot", True, id="onehot+clone_id"),
]
STRING_COLUMNS = list(FEATURE_COLUMNS)  # CDR3α, CDR3β, V/J genes, epitope, MHC


@pytest.fixture(scope="module")
def frame(shipped_frame: pd.DataFrame) -> pd.DataFrame:
    return shipped_frame.reset_index(drop=True)


@pytest.mark.parametrize(("kind", "use_clone_id"), SETTINGS)
def test_round_trip_on_the_shipped_data(frame: pd.DataFrame, kind: str, use_clone_id: bool) -> None:
    encoder = fit_encoder(frame, kind, use_clone_id)
    encoded = encoder.encode(frame)
    assert encoded.errors == [None] * len(frame)
    assert encoded.valid.all()
    assert encoded.features.dtype == np.float32
    assert encoded.features.shape == (len(frame), encoder.dim)
    decoded = encoder.decode(encoded.features)
    pd.testing.assert_frame_equal(decoded[STRING_COLUMNS], frame[STRING_COLUMNS], check_dtype=False)
    if use_clone_id:
        # min-max scaled into float32: back to within a thousandth of the original ids (up to 20300)
        np.testing.assert_allclose(decoded["clone_id"], frame["clone_id"], rtol=0, atol=0.01)
        scaled = encoded.features[:, -1]
        assert scaled.min() == 0.0
        assert scaled.max() == 1.0
    else:
        assert "clone_id" not in decoded.columns


def test_paper_alphabet_is_every_character_sorted_by_unicode(frame: pd.DataFrame) -> None:
    encoder = fit_encoder(frame, "paper")
    assert isinstance(encoder, PaperEncoder)
    seen = {c for group in PAPER_GROUPS for column in group for value in frame[column] for c in value}
    assert set(encoder.alphabet) == seen
    assert len(encoder.alphabet) == len(seen)  # each character once
    assert [ord(c) for c in encoder.alphabet] == sorted(ord(c) for c in seen)
    assert encoder.alphabet[0] == "*"
    assert encoder.alphabet[-1] == "Y"


def test_paper_values_are_i_plus_one_over_n_and_zero_is_padding(frame: pd.DataFrame) -> None:
    encoder = fit_encoder(frame, "paper")
    n = len(encoder.alphabet)
    sample = frame.head(200)
    features = encoder.encode(sample).features
    offset = 0
    for group, length in zip(PAPER_GROUPS, encoder.group_lengths, strict=True):
        for column in group:
            expected = np.zeros((len(sample), length), dtype=np.float32)
            for row, value in enumerate(sample[column]):
                for position, char in enumerate(value):
                    expected[row, position] = (encoder.alphabet.index(char) + 1) / n
            np.testing.assert_array_equal(features[:, offset : offset + length], expected)
            offset += length
    assert offset == features.shape[1]
    values = np.unique(features)
    assert values[0] == 0.0  # padding
    assert values[1] > 0.0  # no character encodes to 0
    assert values[-1] == np.float32(1.0)  # the last character of the alphabet
    assert set(values[1:]) <= {np.float32((i + 1) / n) for i in range(n)}


@pytest.mark.parametrize("use_clone_id", [False, True])
def test_paper_dimension(frame: pd.DataFrame, use_clone_id: bool) -> None:
    encoder = fit_encoder(frame, "paper", use_clone_id)
    longest = {c: int(frame[c].str.len().max()) for c in STRING_COLUMNS}
    l_cdr3 = max(longest["CDR3_alpha"], longest["CDR3_beta"])
    l_epitope = longest["Epitope"]
    l_genes = max(longest[c] for c in ("V_alpha", "V_beta", "J_alpha", "J_beta", "MHC"))
    assert encoder.group_lengths == (l_cdr3, l_epitope, l_genes)
    assert encoder.dim == 2 * l_cdr3 + l_epitope + 5 * l_genes + int(use_clone_id)
    assert encoder.dim == (123 if use_clone_id else 122)  # 2·19 + 9 + 5·15 (+1): the paper's 123 inputs
    assert encoder.encode(frame.head(3)).features.shape == (3, encoder.dim)


def test_onehot_dimension(frame: pd.DataFrame) -> None:
    encoder = fit_encoder(frame, "onehot")
    assert isinstance(encoder, OneHotEncoder)
    expected = 20 * (19 + 19 + 9) + sum(frame[c].nunique() + 1 for c in encoder.vocabularies)
    assert encoder.dim == expected
    features = encoder.encode(frame.head(50)).features
    assert set(np.unique(features)) == {0.0, 1.0}
    # one 1 per residue, plus one per gene and MHC slot
    residues = frame.head(50)[["CDR3_alpha", "CDR3_beta", "Epitope"]].apply(lambda c: c.str.len()).sum(axis=1)
    np.testing.assert_array_equal(features.sum(axis=1), residues.to_numpy() + 5)


@pytest.mark.parametrize("kind", ["paper", "onehot"])
def test_unknown_character_is_an_error_of_that_row_only(frame: pd.DataFrame, kind: str) -> None:
    encoder = fit_encoder(frame, kind)
    rows = frame.head(3).copy()
    rows.loc[1, "CDR3_beta"] = "CASSX1F"  # X is in no alphabet; 1 only in the paper's (gene names)
    encoded = encoder.encode(rows)
    assert encoded.errors[0] is None
    assert encoded.errors[2] is None
    error = encoded.errors[1]
    assert error is not None
    assert error.startswith("CDR3_beta: ")
    assert "X" in error
    assert encoded.valid.tolist() == [True, False, True]
    assert not encoded.features[1].any()  # an invalid row is never silently encoded
    alone = encoder.encode(frame.iloc[[0, 2]]).features
    np.testing.assert_array_equal(encoded.features[[0, 2]], alone)


@pytest.mark.parametrize("kind", ["paper", "onehot"])
@pytest.mark.parametrize("column", ["CDR3_alpha", "Epitope"])
def test_sequence_longer_than_fitted_is_an_error(frame: pd.DataFrame, kind: str, column: str) -> None:
    encoder = fit_encoder(frame, kind)
    longest = int(frame[column].str.len().max())
    rows = frame.head(2).copy()
    rows.loc[0, column] = "A" * (longest + 1)
    encoded = encoder.encode(rows)
    assert encoded.errors[0] == f"{column}: length {longest + 1} exceeds the encoder's maximum {longest}"
    assert encoded.errors[1] is None
    assert not encoded.features[0].any()
    assert encoded.features[1].any()


def test_unknown_gene_is_the_unknown_token_in_onehot(frame: pd.DataFrame) -> None:
    encoder = fit_encoder(frame, "onehot")
    assert UNKNOWN == "<unk>"
    rows = frame.head(2).copy()
    rows.loc[0, "V_beta"] = "TRBV99*01"
    rows.loc[1, "MHC"] = "HLA-C*99:99"
    encoded = encoder.encode(rows)
    assert encoded.errors == [None, None]
    decoded = encoder.decode(encoded.features)
    assert decoded["V_beta"].tolist() == [UNKNOWN, frame.loc[1, "V_beta"]]
    assert decoded["MHC"].tolist() == [frame.loc[0, "MHC"], UNKNOWN]
    assert decoded.loc[0, "CDR3_beta"] == frame.loc[0, "CDR3_beta"]


def test_unseen_gene_of_known_characters_round_trips_in_paper(frame: pd.DataFrame) -> None:
    """The paper encoding has no unknown token: it encodes any string of known characters."""
    encoder = fit_encoder(frame, "paper")
    rows = frame.head(1).copy()
    rows.loc[0, "V_beta"] = "TRBV99*01"
    encoded = encoder.encode(rows)
    assert encoded.errors == [None]
    assert encoder.decode(encoded.features).loc[0, "V_beta"] == "TRBV99*01"


@pytest.mark.parametrize(("kind", "use_clone_id"), SETTINGS)
def test_save_and_load_give_the_same_encoding(
    frame: pd.DataFrame, tmp_path: Path, kind: str, use_clone_id: bool
) -> None:
    encoder = fit_encoder(frame, kind, use_clone_id, data_sha256="ab" * 32)
    path = encoder.save(tmp_path / "encoder.json")
    assert path.read_text().startswith("{")
    loaded = load_encoder(path)
    assert type(loaded) is type(encoder)
    assert loaded == encoder
    assert loaded.data_sha256 == "ab" * 32
    rows = frame.sample(300, random_state=1)
    before, after = encoder.encode(rows), loaded.encode(rows)
    np.testing.assert_array_equal(before.features, after.features)
    assert before.errors == after.errors
    assert list(tmp_path.iterdir()) == [path]  # the atomic write left no temporary file


def test_load_encoder_rejects_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such encoder file"):
        load_encoder(tmp_path / "absent.json")
    corrupt = tmp_path / "encoder.json"
    corrupt.write_text('{"kind": "paper", "alphabet": 3}')
    with pytest.raises(InputError, match="not a valid encoder"):
        load_encoder(corrupt)
    corrupt.write_text("{not json")
    with pytest.raises(InputError, match="not a valid encoder"):
        load_encoder(corrupt)


def test_fit_encoder_rejects_unknown_kind_and_missing_clone_id(frame: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="unknown encoding 'morse'"):
        fit_encoder(frame, "morse")
    with pytest.raises(InputError, match="clone_id: column required"):
        fit_encoder(frame.drop(columns="clone_id"), "paper", use_clone_id=True)


def test_missing_clone_id_is_a_row_error_when_the_model_uses_it(frame: pd.DataFrame) -> None:
    encoder = fit_encoder(frame, "paper", use_clone_id=True)
    rows = frame.head(2).copy()
    rows["clone_id"] = rows["clone_id"].astype(object)
    rows.loc[1, "clone_id"] = "n/a"
    encoded = encoder.encode(rows)
    assert encoded.errors[0] is None
    assert encoded.errors[1] is not None
    assert encoded.errors[1].startswith("clone_id:")
    no_column = encoder.encode(frame.head(2).drop(columns="clone_id"))
    assert all(e is not None and e.startswith("clone_id:") for e in no_column.errors)
