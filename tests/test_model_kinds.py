"""The k-mer linear model, the CNN and fold ensembles on the aligned encoding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from tcr_pipeline.config import ModelParams
from tcr_pipeline.encoding import AlignedEncoder, fit_encoder
from tcr_pipeline.errors import InputError
from tcr_pipeline.models import ConvNet, Ensemble, KmerLinear, build_model, scores_epitope

Encoded = tuple[AlignedEncoder, torch.Tensor, pd.DataFrame]


@pytest.fixture(scope="module")
def encoded(shipped_frame: pd.DataFrame) -> Encoded:
    frame = shipped_frame.reset_index(drop=True).iloc[:200]
    encoder = fit_encoder(frame, "aligned")
    assert isinstance(encoder, AlignedEncoder)
    return encoder, torch.from_numpy(encoder.encode(frame).features), frame


def test_kmer_codes_count_the_same_kmers_as_the_baselines_vectoriser(encoded: Encoded) -> None:
    encoder, x, frame = encoded
    model = KmerLinear(encoder.input_spec(), ModelParams(kind="kmer", kmer_sizes=(1, 2, 3)))
    codes = model.kmer_codes(x[:20])
    for row in range(20):
        found = Counter(int(c) for c in codes[row] if c > 0)
        expected: Counter[int] = Counter()
        for chain, column in enumerate(("CDR3_alpha", "CDR3_beta")):
            sequence = frame[column].iloc[row]
            base = 1 + chain * model.per_chain
            for k in (1, 2, 3):
                for i in range(len(sequence) - k + 1):
                    index = sum(
                        ("ACDEFGHIKLMNPQRSTVWY".index(c) + 1) * 21 ** (k - 1 - j)
                        for j, c in enumerate(sequence[i : i + k])
                    )
                    expected[base + index] += 1
                base += 21**k
        assert found == expected


def test_the_softmax_head_gives_p_of_the_epitope_given_the_tcr(encoded: Encoded) -> None:
    encoder, x, frame = encoded
    torch.manual_seed(0)
    model = KmerLinear(encoder.input_spec(), ModelParams(kind="kmer", head="softmax"))
    with torch.no_grad():
        model.kmers.weight.normal_()
        pair = torch.sigmoid(model(x)).squeeze(1)
        probabilities = torch.softmax(model.outputs(x), dim=1)
    epitope = model.columns.category(x, "Epitope")
    assert torch.allclose(pair, probabilities.gather(1, epitope[:, None]).squeeze(1), atol=1e-5)
    same_tcr = frame.index[frame["CDR3_beta"] == frame["CDR3_beta"].iloc[0]]
    assert len(same_tcr) > 1  # the shipped data pairs each TCR with every epitope
    assert float(pair[same_tcr].sum()) < 1.0  # probabilities over epitopes of one TCR, "none" aside


def test_sigmoid_head_is_one_logistic_output_per_epitope(encoded: Encoded) -> None:
    encoder, x, _ = encoded
    model = KmerLinear(encoder.input_spec(), ModelParams(kind="kmer", head="sigmoid"))
    with torch.no_grad():
        model.bias.copy_(torch.arange(model.n_outputs, dtype=torch.float32))
        logits = model(x).squeeze(1)
    assert torch.equal(logits, model.columns.category(x, "Epitope").float())


@pytest.mark.parametrize("residues", ["blosum", "onehot"])
def test_the_cnn_and_the_paper_networks_run_on_aligned_codes(encoded: Encoded, residues: str) -> None:
    encoder, x, _ = encoded
    spec = encoder.input_spec()
    cnn = build_model(x.shape[1], ModelParams(kind="cnn", residues=residues, cnn_filters=4), spec)
    assert isinstance(cnn, ConvNet)
    assert scores_epitope(cnn)
    for kind in ("small", "medium"):
        network = build_model(x.shape[1], ModelParams(kind=kind, residues=residues), spec)
        assert not scores_epitope(network)
        assert network(x).shape == (len(x), 1)
    assert cnn(x).shape == (len(x), 1)


def test_per_epitope_models_need_the_aligned_encoding(shipped_frame: pd.DataFrame) -> None:
    onehot = fit_encoder(shipped_frame.iloc[:50], "onehot")
    with pytest.raises(InputError, match=r"needs prepare\.encoding: aligned"):
        build_model(onehot.dim, ModelParams(kind="cnn"), onehot.input_spec())


def test_an_ensemble_averages_probabilities(encoded: Encoded) -> None:
    encoder, x, _ = encoded
    torch.manual_seed(1)
    members = [KmerLinear(encoder.input_spec(), ModelParams(kind="kmer")) for _ in range(3)]
    for member in members:
        torch.nn.init.normal_(member.kmers.weight)
    ensemble = Ensemble(list(members))
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(m(x)) for m in members]).mean(0)
        assert torch.allclose(torch.sigmoid(ensemble(x)), expected, atol=1e-5)
    assert scores_epitope(ensemble)
    assert np.isfinite(ensemble(x).detach().numpy()).all()
