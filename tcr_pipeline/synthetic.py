"""Synthetic TCR–epitope pairs shaped like a real pair table, for benchmarks at 1M–10M rows.

What is drawn from the source table (by default the shipped ``data/raw/viral_pairs.csv``; one
receptor per positive row):

* CDR3α and CDR3β: a source CDR3 of the chain (so their lengths follow the source's), whose
  middle residues (all but three at each end) are each replaced with probability ``mutation`` by
  a residue drawn from the source's middle-residue frequencies of that chain;
* V/J genes from the source's frequencies of each gene column;
* epitopes: the source's, plus mutants of them (one to three substituted residues) up to
  ``epitopes`` distinct peptides, each with its parent's MHC; how often an epitope is a
  receptor's target follows a log-normal popularity (a few frequent epitopes, a long tail).

The learnable signal: every epitope has a motif — three residues at the centre of CDR3β, two at
the centre of CDR3α, a preferred Vα and Vβ gene. A receptor's cognate epitope is drawn by
popularity; with probability ``signal`` its CDR3s carry the epitope's motif, and with probability
``signal / 2`` each V gene is the preferred one. Each receptor appears with its cognate epitope
(label 1) and ``negatives`` other epitopes drawn by popularity (label 0), as the source pairs
every receptor with every epitope: the positive rate is ``1 / (1 + negatives)`` (≈ 7 % with the
default 13, as in the shipped data). No two rows share a receptor and an epitope.

The output is deterministic given the source, ``seed`` and options, and is written a chunk of
receptors at a time (memory is one chunk's whatever the row count), atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tcr_pipeline.data import AMINO_ACIDS, COLUMNS, GENE_COLUMNS, load_pairs, tcr_keys
from tcr_pipeline.errors import InputError
from tcr_pipeline.files import write_atomic

DEFAULT_SOURCE = Path("data/raw/viral_pairs.csv")
CHUNK_TCRS = 8192  # receptors generated at a time (part of the output's definition: keep fixed)
CONSERVED = 3  # residues kept at each end of a CDR3
# a chunk draws negatives from a CHUNK_TCRS x epitopes matrix: 10,000 epitopes are 0.6 GB of it
MAX_EPITOPES = 10_000
_CODES = np.frombuffer(AMINO_ACIDS.encode(), dtype=np.uint8)


@dataclass(frozen=True)
class Options:
    """What to generate (module docstring)."""

    rows: int
    seed: int = 0
    epitopes: int = 1000
    negatives: int = 13
    signal: float = 0.8
    mutation: float = 0.5


@dataclass(frozen=True)
class _Chain:
    """One CDR3 chain of the source: padded residue bytes, lengths, middle-residue frequencies."""

    codes: np.ndarray  # (n, longest) uint8, 0 after the end
    lengths: np.ndarray
    residue_p: np.ndarray  # over AMINO_ACIDS

    @classmethod
    def of(cls, values: pd.Series) -> _Chain:
        strings = values.astype(str).tolist()
        longest = max(len(s) for s in strings)
        codes = np.frombuffer("".join(s.ljust(longest, "\0") for s in strings).encode(), dtype=np.uint8)
        codes = codes.reshape(len(strings), longest)
        counts = pd.Series(list("".join(s[CONSERVED:-CONSERVED] for s in strings))).value_counts()
        p = counts.reindex(list(AMINO_ACIDS), fill_value=0).to_numpy(dtype=float) + 1.0
        return cls(codes, np.array([len(s) for s in strings]), p / p.sum())


@dataclass(frozen=True)
class _World:
    """Everything drawn once per seed: source distributions, epitopes, their motifs."""

    alpha: _Chain
    beta: _Chain
    genes: dict[str, tuple[np.ndarray, np.ndarray]]  # column → (names, probabilities)
    epitopes: np.ndarray  # peptide strings
    mhc: np.ndarray  # per epitope
    popularity: np.ndarray  # per epitope, sums to 1
    motif_alpha: np.ndarray  # (epitopes, 2) residue bytes
    motif_beta: np.ndarray  # (epitopes, 3)
    preferred: dict[str, np.ndarray]  # V_alpha / V_beta → gene index per epitope


def _mutants(rng: np.random.Generator, parents: list[str], mhc: list[str], wanted: int) -> tuple[list, list]:
    """The parents and mutants of them (1–3 substitutions) up to ``wanted`` distinct peptides."""
    peptides, alleles = list(parents), list(mhc)
    seen = set(peptides)
    while len(peptides) < wanted:
        parent = int(rng.integers(len(parents)))
        residues = list(parents[parent])
        for position in rng.choice(len(residues), size=int(rng.integers(1, 4)), replace=False):
            residues[position] = AMINO_ACIDS[int(rng.integers(20))]
        peptide = "".join(residues)
        if peptide not in seen:
            seen.add(peptide)
            peptides.append(peptide)
            alleles.append(mhc[parent])
    return peptides[:wanted], alleles[:wanted]


def _world(source: pd.DataFrame, options: Options) -> _World:
    rng = np.random.default_rng([options.seed, 0])
    positives = source[source["Label"] == 1] if "Label" in source.columns else source
    if positives.empty:
        raise InputError("the source table has no positive rows to draw receptors from")
    pairs = source[["Epitope", "MHC"]].drop_duplicates("Epitope").sort_values("Epitope")
    peptides, alleles = _mutants(rng, pairs["Epitope"].tolist(), pairs["MHC"].tolist(), options.epitopes)
    genes = {}
    for column in GENE_COLUMNS:
        counts = positives[column].value_counts().sort_index()
        genes[column] = (counts.index.to_numpy(dtype=object), counts.to_numpy() / counts.sum())
    n = len(peptides)
    popularity = rng.lognormal(0.0, 1.5, size=n)
    return _World(
        alpha=_Chain.of(positives["CDR3_alpha"]),
        beta=_Chain.of(positives["CDR3_beta"]),
        genes=genes,
        epitopes=np.array(peptides, dtype=object),
        mhc=np.array(alleles, dtype=object),
        popularity=popularity / popularity.sum(),
        motif_alpha=_CODES[rng.integers(20, size=(n, 2))],
        motif_beta=_CODES[rng.integers(20, size=(n, 3))],
        preferred={g: rng.choice(len(genes[g][0]), size=n, p=genes[g][1]) for g in ("V_alpha", "V_beta")},
    )


def _cdr3s(
    rng: np.random.Generator, chain: _Chain, motif: np.ndarray | None, n: int, mutation: float
) -> np.ndarray:
    """``n`` CDR3 strings: source templates, middles mutated, the motif (rows not None) at the centre."""
    pick = rng.integers(len(chain.lengths), size=n)
    codes = chain.codes[pick].copy()
    lengths = chain.lengths[pick]
    position = np.arange(codes.shape[1])[None, :]
    middle = (position >= CONSERVED) & (position < lengths[:, None] - CONSERVED)
    mutate = middle & (rng.random(codes.shape) < mutation)
    codes[mutate] = _CODES[rng.choice(20, size=int(mutate.sum()), p=chain.residue_p)]
    if motif is not None:
        width = motif.shape[1]
        start = lengths // 2 - width // 2
        rows = np.flatnonzero(motif[:, 0] > 0)
        for k in range(width):
            codes[rows, start[rows] + k] = motif[rows, k]
    return np.frombuffer(codes.tobytes(), dtype=f"S{codes.shape[1]}").astype(str)


def _chunk(world: _World, options: Options, index: int, seen: set[str]) -> pd.DataFrame:
    """The pairs of chunk ``index``: CHUNK_TCRS receptors × (1 + negatives) epitopes."""
    rng = np.random.default_rng([options.seed, 1, index])
    n, n_epitopes = CHUNK_TCRS, len(world.epitopes)
    cognate = rng.choice(n_epitopes, size=n, p=world.popularity)
    carries = rng.random(n) < options.signal
    motifs = []
    for table in (world.motif_alpha, world.motif_beta):
        motif = table[cognate].copy()
        motif[~carries] = 0
        motifs.append(motif)
    columns: dict[str, np.ndarray] = {
        "CDR3_alpha": _cdr3s(rng, world.alpha, motifs[0], n, options.mutation),
        "CDR3_beta": _cdr3s(rng, world.beta, motifs[1], n, options.mutation),
    }
    for column in GENE_COLUMNS:
        names, p = world.genes[column]
        index_of = rng.choice(len(names), size=n, p=p)
        if column in world.preferred:
            prefer = rng.random(n) < options.signal / 2
            index_of = np.where(prefer, world.preferred[column][cognate], index_of)
        columns[column] = names[index_of]
    # negatives: `negatives` distinct other epitopes by popularity (Gumbel top-k, cognate excluded)
    negatives = options.negatives  # below the epitopes (write_pairs checks)
    keys = np.log(world.popularity)[None, :] + rng.gumbel(size=(n, n_epitopes))
    keys[np.arange(n), cognate] = -np.inf
    others = (
        np.argpartition(-keys, negatives - 1, axis=1)[:, :negatives] if negatives else np.empty((n, 0), int)
    )
    targets = np.concatenate([cognate[:, None], others], axis=1)
    keep = np.ones(n, dtype=bool)
    for i, key in enumerate(tcr_keys(pd.DataFrame(columns)).tolist()):
        keep[i] = key not in seen  # a receptor drawn twice (rare) is dropped: no duplicate pairs
        seen.add(key)
    per = targets.shape[1]
    frame = pd.DataFrame({c: np.repeat(v[keep], per) for c, v in columns.items()})
    chosen = targets[keep].ravel()
    frame["Epitope"] = world.epitopes[chosen]
    frame["clone_id"] = np.repeat(index * CHUNK_TCRS + np.flatnonzero(keep), per)
    frame["MHC"] = world.mhc[chosen]
    frame["Label"] = np.tile(np.arange(per) == 0, int(keep.sum())).astype(int)
    return frame[list(COLUMNS)]


def write_pairs(
    out: Path | str,
    options: Options,
    source: Path | str = DEFAULT_SOURCE,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``options.rows`` synthetic pairs to the CSV ``out`` (module docstring).

    ``progress(rows)`` is called after each chunk with the rows it added.
    """
    if options.rows < 1:
        raise InputError(f"--rows: at least 1, got {options.rows}")
    if not 1 <= options.epitopes <= MAX_EPITOPES:
        raise InputError(f"--epitopes: from 1 to {MAX_EPITOPES:,}, got {options.epitopes}")
    if not 0 <= options.negatives < options.epitopes:
        raise InputError(
            f"--negatives: from 0 to epitopes - 1 ({options.epitopes - 1}), got {options.negatives}"
        )
    if not 0 <= options.signal <= 1:
        raise InputError(f"--signal: within [0, 1], got {options.signal}")
    if options.seed < 0:
        raise InputError(f"--seed: 0 or more, got {options.seed}")
    world = _world(load_pairs(source), options)

    def write(tmp: Path) -> None:
        seen: set[str] = set()
        written, index = 0, 0
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            while written < options.rows:
                frame = _chunk(world, options, index, seen).head(options.rows - written)
                frame.to_csv(handle, index=False, header=index == 0)
                written += len(frame)
                index += 1
                if progress is not None:
                    progress(len(frame))

    return write_atomic(out, write)
