"""The classifiers. Each maps a batch of encoded rows to one logit per row (a pair's binding).

``small``, ``medium``, ``large``
    The paper's feed-forward networks over the encoder's feature vector. On the ``aligned``
    encoding the integer codes are first expanded to one-hot or BLOSUM62 residue vectors and
    one-hot genes, MHC and epitope (:class:`AlignedInput`).
``kmer``
    A linear model on counts of CDR3α/β k-mers (1–3 by default) and V/J genes, with one output per
    training epitope: with the ``sigmoid`` head it is the k-mer logistic-regression baseline
    written in torch (class-balanced, L2 through weight decay), so the baseline is itself a
    candidate the search and the registry can pick.
``cnn``
    A NetTCR-2-style 1D-CNN (Montemurro et al. 2021, Commun. Biol. 4:1060): BLOSUM62 (or one-hot)
    residues of CDR3α and CDR3β through convolutions of several widths, global max-pooling, a
    dense layer, one output per training epitope.

Per-epitope outputs (``kmer``, ``cnn``) score only the epitopes in training; a row whose epitope
is unknown has no output and is refused by ``predict`` (see :func:`scores_epitope`). With the
``softmax`` head the outputs are one softmax over the training epitopes plus "binds none": the
pair's probability is p(epitope | TCR), which ranks receptors within an epitope better than
independent outputs when each receptor binds at most one of them (measured in the README).

BLOSUM62: Henikoff S, Henikoff JG (1992) PNAS 89:10915–10919, the table of the ``blosum`` package.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tcr_pipeline.config import ModelParams
from tcr_pipeline.data import AMINO_ACIDS
from tcr_pipeline.errors import InputError

PER_EPITOPE_KINDS = ("kmer", "cnn")
_CATEGORIES = ("V_alpha", "V_beta", "J_alpha", "J_beta", "MHC", "Epitope")
_GENES = ("V_alpha", "V_beta", "J_alpha", "J_beta")


def residue_table(kind: str) -> torch.Tensor:
    """(21, 20) residue vectors: row 0 (gap) zeros, then one-hot or BLOSUM62 rows scaled by 1/4."""
    if kind == "onehot":
        return torch.cat([torch.zeros(1, 20), torch.eye(20)])
    import blosum

    matrix = blosum.BLOSUM(62)
    rows = [[float(matrix[a][b]) / 4.0 for b in AMINO_ACIDS] for a in AMINO_ACIDS]
    return torch.cat([torch.zeros(1, 20), torch.tensor(rows)])


def _tapering_widths(input_dim: int, blocks: int, params: ModelParams) -> list[int]:
    """Widths after each hidden block.

    The first block maps to ``min(input_dim, max_width)`` less one step; each further block
    narrows by ``width_step``, never below ``min_width``. With ``max_width=None`` (or the paper
    encoding's 123 inputs) this is the paper's rule: start at the input width, minus ten per block.
    """
    start = input_dim if params.max_width is None else min(input_dim, params.max_width)
    return [max(start - params.width_step * (i + 1), params.min_width) for i in range(blocks - 1)]


def _feed_forward(input_dim: int, params: ModelParams) -> nn.Sequential:
    if params.kind == "small":
        first, second = params.small_widths
        return nn.Sequential(
            nn.Linear(input_dim, first),
            nn.ReLU(),
            nn.Linear(first, second),
            nn.ReLU(),
            nn.Linear(second, 1),
        )
    blocks = params.medium_blocks if params.kind == "medium" else params.large_blocks
    layers: list[nn.Module] = []
    width = input_dim
    for next_width in _tapering_widths(input_dim, blocks, params):
        layers += [nn.Linear(width, next_width), nn.BatchNorm1d(next_width), nn.ELU()]
        width = next_width
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class _AlignedColumns(nn.Module):
    """Slices of the aligned encoding's code matrix (see ``AlignedEncoder``)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        frames: dict[str, int] = spec["frames"]
        self.frames = frames
        offset = 0
        self.slices: dict[str, tuple[int, int]] = {}
        for column, width in frames.items():
            self.slices[column] = (offset, offset + width)
            offset += width
        self.category_offset = offset
        self.vocab_sizes: dict[str, int] = spec["vocab_sizes"]
        # codes of names never seen in training map to 0 (unknown): their weights stay untrained
        for column in _CATEGORIES:
            known = torch.tensor([True, *spec["trained"][column]], dtype=torch.bool)
            self.register_buffer(f"known_{column}", known, persistent=False)

    def sequence(self, x: torch.Tensor, column: str) -> torch.Tensor:
        start, end = self.slices[column]
        return x[:, start:end].long()

    def category(self, x: torch.Tensor, column: str) -> torch.Tensor:
        codes = x[:, self.category_offset + _CATEGORIES.index(column)].long()
        known: torch.Tensor = getattr(self, f"known_{column}")
        codes = codes.clamp(0, len(known) - 1)
        return codes * known[codes]


class AlignedInput(nn.Module):
    """Aligned codes → the flat float vector of the paper's networks (residue vectors, one-hots)."""

    table: torch.Tensor

    def __init__(self, spec: dict[str, Any], residues: str) -> None:
        super().__init__()
        self.columns = _AlignedColumns(spec)
        self.register_buffer("table", residue_table(residues), persistent=False)
        self.dim = sum(self.columns.frames.values()) * 20 + sum(
            self.columns.vocab_sizes[c] + 1 for c in _CATEGORIES
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [self.table[self.columns.sequence(x, c)].flatten(1) for c in self.columns.frames]
        for column in _CATEGORIES:
            size = self.columns.vocab_sizes[column] + 1
            parts.append(nn.functional.one_hot(self.columns.category(x, column), size).float())
        return torch.cat(parts, dim=1)


class FeedForward(nn.Module):
    """A paper network over the aligned codes, expanded to residue vectors and one-hots first."""

    def __init__(self, input_dim: int, params: ModelParams, spec: dict[str, Any]) -> None:
        super().__init__()
        self.expand = AlignedInput(spec, params.residues)
        self.net = _feed_forward(self.expand.dim, params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.expand(x))


def _gene_embeddings(columns: _AlignedColumns, width: int) -> nn.ModuleDict:
    """One embedding per V/J gene column (code 0, unknown, is the zero vector)."""
    return nn.ModuleDict({g: nn.Embedding(columns.vocab_sizes[g] + 1, width, padding_idx=0) for g in _GENES})


def compact(codes: torch.Tensor) -> torch.Tensor:
    """Aligned codes with the central gap removed: residues left-aligned, zeros after.

    Trailing columns that are zero in every row are dropped (less work for k-mers and convolutions).
    """
    order = torch.sort((codes == 0).to(torch.int8), dim=1, stable=True).indices
    longest = max(int((codes > 0).sum(1).max()) if len(codes) else 1, 1)
    return torch.gather(codes, 1, order)[:, :longest]


class PerEpitope(nn.Module):
    """Base of models with one output per training epitope (index 0: "binds none")."""

    def __init__(self, spec: dict[str, Any], params: ModelParams) -> None:
        super().__init__()
        if not _is_aligned(spec):
            raise InputError(f"model.kind={params.kind} needs prepare.encoding: aligned")
        self.columns = _AlignedColumns(spec)
        self.n_outputs = self.columns.vocab_sizes["Epitope"] + 1
        self.softmax = params.head == "softmax"

    def outputs(self, x: torch.Tensor) -> torch.Tensor:  # (n, n_outputs)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The pair's logit: ``logit(p(e|TCR))`` (softmax head) or the epitope's own logit."""
        return pair_logit(self.outputs(x), self.columns.category(x, "Epitope").unsqueeze(1), self.softmax)


def pair_logit(z: torch.Tensor, epitope: torch.Tensor, softmax: bool) -> torch.Tensor:
    """A pair's logit from per-epitope outputs ``z`` (…, n_outputs) and its epitope (…, 1)."""
    if not softmax:
        return z.gather(-1, epitope)
    log_p = torch.log_softmax(z, dim=-1)
    own = log_p.gather(-1, epitope)
    rest = torch.logsumexp(log_p.scatter(-1, epitope, -torch.inf), dim=-1, keepdim=True)
    return own - rest


class KmerLinear(PerEpitope):
    """Linear in CDR3α/β k-mer counts and V/J genes, one output per epitope (the baseline's model)."""

    def __init__(self, spec: dict[str, Any], params: ModelParams) -> None:
        super().__init__(spec, params)
        self.sizes = tuple(sorted(set(params.kmer_sizes)))
        per_chain = sum(21**k for k in self.sizes)
        self.per_chain = per_chain
        self.kmers = nn.EmbeddingBag(2 * per_chain + 1, self.n_outputs, mode="sum", padding_idx=0)
        nn.init.zeros_(self.kmers.weight)
        self.genes = _gene_embeddings(self.columns, self.n_outputs) if params.genes else None
        if self.genes is not None:
            for embedding in self.genes.values():
                nn.init.zeros_(embedding.weight)  # type: ignore[arg-type]
        self.bias = nn.Parameter(torch.zeros(self.n_outputs))

    def kmer_codes(self, x: torch.Tensor) -> torch.Tensor:
        """(n, m) indices of every k-mer of both chains into the count table; 0 = none."""
        out = []
        for chain, column in enumerate(("CDR3_alpha", "CDR3_beta")):
            codes = compact(self.columns.sequence(x, column))
            base = 1 + chain * self.per_chain
            for k in self.sizes:
                if codes.shape[1] < k:
                    continue
                windows = codes.unfold(1, k, 1)  # (n, positions, k)
                weights = 21 ** torch.arange(k - 1, -1, -1, device=x.device)
                index = (windows * weights).sum(2) + base
                out.append(torch.where((windows > 0).all(2), index, torch.zeros_like(index)))
                base += 21**k
        return torch.cat(out, dim=1)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        z = self.kmers(self.kmer_codes(x)) + self.bias
        if self.genes is not None:
            for gene, embedding in self.genes.items():
                z = z + embedding(self.columns.category(x, gene))
        return z


class ConvNet(PerEpitope):
    """NetTCR-2-style CNN over CDR3α and CDR3β (module docstring)."""

    table: torch.Tensor

    def __init__(self, spec: dict[str, Any], params: ModelParams) -> None:
        super().__init__(spec, params)
        self.register_buffer("table", residue_table(params.residues), persistent=False)
        self.convs = nn.ModuleList(
            nn.ModuleList(nn.Conv1d(20, params.cnn_filters, k, padding=k // 2) for k in params.cnn_kernels)
            for _ in range(2)
        )
        width = 2 * len(params.cnn_kernels) * params.cnn_filters
        self.genes = _gene_embeddings(self.columns, 8) if params.genes else None
        if self.genes is not None:
            width += 8 * len(_GENES)
            for embedding in self.genes.values():  # a gene no training row held stays at zero
                nn.init.zeros_(embedding.weight)  # type: ignore[arg-type]
        self.head = nn.Sequential(
            nn.Dropout(params.dropout),
            nn.Linear(width, params.cnn_hidden),
            nn.ReLU(),
            nn.Dropout(params.dropout),
            nn.Linear(params.cnn_hidden, self.n_outputs),
        )

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for chain, column in enumerate(("CDR3_alpha", "CDR3_beta")):
            codes = compact(self.columns.sequence(x, column))
            vectors = self.table[codes].transpose(1, 2)  # (n, 20, frame)
            convs: nn.ModuleList = self.convs[chain]  # type: ignore[assignment]
            for conv in convs:
                pooled.append(torch.relu(conv(vectors)).amax(dim=2))
        if self.genes is not None:
            pooled += [embedding(self.columns.category(x, g)) for g, embedding in self.genes.items()]
        return self.head(torch.cat(pooled, dim=1))


def _is_aligned(spec: dict[str, Any] | None) -> bool:
    return bool(spec) and spec is not None and spec.get("encoding") == "aligned"


def scores_epitope(model: nn.Module) -> bool:
    """Whether ``model`` scores only epitopes seen in training (per-epitope outputs)."""
    return isinstance(model, PerEpitope) or (
        isinstance(model, Ensemble) and any(isinstance(m, PerEpitope) for m in model.members)
    )


class Ensemble(nn.Module):
    """The mean probability of several models (the K fold models of a cross-validated trial)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.sigmoid(m(x)) for m in self.members]).mean(0).clamp(1e-7, 1 - 1e-7)
        return torch.log(p) - torch.log1p(-p)


def build_model(input_dim: int, params: ModelParams, spec: dict[str, Any] | None = None) -> nn.Module:
    """Build a classifier (module docstring); ``spec`` is the encoder's ``input_spec()``.

    ``small``: three linear layers separated by two ReLUs.
    ``medium``: ``medium_blocks`` blocks; each but the last is Linear + BatchNorm + ELU narrowing
    the width by ``width_step``; the last block is only a Linear to one logit.
    ``large``: the same with ``large_blocks`` (double the blocks of medium by default).
    """
    if params.kind == "kmer":
        return KmerLinear(spec or {}, params)
    if params.kind == "cnn":
        return ConvNet(spec or {}, params)
    if spec is not None and _is_aligned(spec):
        return FeedForward(input_dim, params, spec)
    return _feed_forward(input_dim, params)  # the paper's encodings: the same layout as ever
