"""Feature encodings of TCR–epitope pairs, saved as JSON and invertible.

Three encodings:

``paper``
    The source paper's method: every character present in the data, sorted by Unicode value,
    maps bijectively to an equidistant value in (0, 1] (the i-th of n characters to (i+1)/n);
    0 is padding. Strings are padded with zeros in three groups to the longest entry of their
    group: (CDR3_alpha, CDR3_beta), (Epitope,), (V_alpha, V_beta, J_alpha, J_beta, MHC). clone_id,
    min-max normalised to [0, 1], is appended only in the paper-reproduction setting.
``onehot``
    One-hot residues (20 standard amino acids) per position of CDR3α, CDR3β and the epitope,
    zeros for padding, and one-hot V/J genes and MHC with a final ``<unk>`` slot for a gene or
    MHC not seen when the encoder was fitted.
``aligned`` (default)
    Integer codes in a documented fixed frame that does not depend on the training file
    (:mod:`tcr_pipeline.frames`): CDR3α and CDR3β in ``CDR3_FRAME`` (30) positions, the epitope in
    ``EPITOPE_FRAME`` (15), IMGT-style — the first ⌈L/2⌉ residues from the left end of the frame,
    the last ⌊L/2⌋ at its right end, the gap in the middle, so the conserved N- and C-terminal
    residues stay in place whatever the length. Residues are 1–20 (0 = gap); genes are normalised
    with tidytcells to IMGT gene level (``TRBV20-1``, ``TRBV20-01``, ``TRBV20-1*01`` are one gene)
    and coded 1… in the fitted vocabulary (0 = unknown). The matrix holds the codes compactly, in
    the smallest integer dtype (uint8 while every vocabulary has ≤ 255 names); the models turn
    them into one-hot or BLOSUM62 vectors, k-mer counts or convolutions per batch, on the device
    (:mod:`tcr_pipeline.models`). The encoder remembers what the training rows held, so anything
    a model never saw in training (a gene, epitope, MHC, or a residue at a frame position) is a
    per-row *warning*.

What an encoder cannot represent is a per-row error, never a crash or silent garbage: a
character outside the alphabet, or a sequence longer than the fitted maximum. Rows with an error
get an all-zero feature vector and must not be scored.

Encoders are fitted on the whole prepared table (vocabulary and lengths only; labels are never
read), so every split is representable. Unknown values appear only on new data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from tcr_pipeline.data import AMINO_ACIDS
from tcr_pipeline.errors import InputError
from tcr_pipeline.files import write_text_atomic
from tcr_pipeline.frames import ALIGNED_SEQUENCES, align_codes, code_dtype
from tcr_pipeline.frames import CDR3_FRAME as CDR3_FRAME  # re-exported: the frame's documented here
from tcr_pipeline.frames import EPITOPE_FRAME as EPITOPE_FRAME

UNKNOWN = "<unk>"
PAPER_GROUPS: tuple[tuple[str, ...], ...] = (
    ("CDR3_alpha", "CDR3_beta"),
    ("Epitope",),
    ("V_alpha", "V_beta", "J_alpha", "J_beta", "MHC"),
)
SEQUENCE_FIELDS = ("CDR3_alpha", "CDR3_beta", "Epitope")
CATEGORY_FIELDS = ("V_alpha", "V_beta", "J_alpha", "J_beta", "MHC")


@dataclass(frozen=True)
class Encoded:
    """Encoded rows: a matrix (float32; aligned: integer codes) and, per row, ``None`` or the reason
    it cannot be encoded.

    ``warnings`` (aligned encoding only) names, per row, what the model never saw in training.
    """

    features: np.ndarray
    errors: list[str | None]
    warnings: list[str | None] | None = None

    @property
    def valid(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


def _char_codes(values: pd.Series, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Unicode code points of each string, zero-padded to ``length`` (longer strings cut).

    Returns the (n, length) code matrix and each string's true length.
    """
    strings = values.astype(str).tolist()
    lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
    padded = "".join(s[:length].ljust(length, "\0") for s in strings)
    codes = np.frombuffer(padded.encode("utf-32-le"), dtype=np.uint32).reshape(len(strings), length)
    return codes, lengths


class _EncoderBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    use_clone_id: bool = False
    clone_id_range: tuple[float, float] | None = None
    data_sha256: str = ""

    def _clone_feature(self, frame: pd.DataFrame, errors: list[str | None]) -> np.ndarray:
        if not self.use_clone_id or self.clone_id_range is None:
            return np.zeros((len(frame), 0), dtype=np.float32)
        low, high = self.clone_id_range
        if "clone_id" not in frame.columns:
            values = np.full(len(frame), np.nan)
        else:
            values = pd.to_numeric(frame["clone_id"], errors="coerce").to_numpy(dtype=float)
        for i in np.flatnonzero(np.isnan(values)):
            errors[i] = errors[i] or "clone_id: missing or not a number (this model uses clone_id)"
        scaled = (np.nan_to_num(values, nan=low) - low) / ((high - low) or 1.0)
        return scaled.astype(np.float32)[:, None]

    def _finish(self, blocks: list[np.ndarray], frame: pd.DataFrame, errors: list[str | None]) -> Encoded:
        """The float blocks with the clone feature appended; rows with an error zeroed."""
        blocks.append(self._clone_feature(frame, errors))
        features = np.concatenate(blocks, axis=1)
        features[~np.array([e is None for e in errors], dtype=bool)] = 0.0
        return Encoded(features, errors)

    def _decode_clone(self, column: np.ndarray) -> np.ndarray:
        assert self.clone_id_range is not None
        low, high = self.clone_id_range
        return np.round(column * ((high - low) or 1.0) + low, 6)

    def input_spec(self) -> dict[str, object]:
        """What a model needs to know about the feature columns (stored on its card)."""
        return {"encoding": getattr(self, "kind", "")}

    def save(self, path: Path | str) -> Path:
        """Write the encoder as JSON (atomically)."""
        return write_text_atomic(path, self.model_dump_json(indent=2) + "\n")


class PaperEncoder(_EncoderBase):
    """The source paper's character-value encoding (see the module docstring)."""

    kind: Literal["paper"] = "paper"
    alphabet: str
    group_lengths: tuple[int, int, int]

    @property
    def dim(self) -> int:
        columns = sum(len(g) * n for g, n in zip(PAPER_GROUPS, self.group_lengths, strict=True))
        return columns + int(self.use_clone_id)

    def encode(self, frame: pd.DataFrame) -> Encoded:
        n = len(frame)
        errors: list[str | None] = [None] * n
        lookup = {ord(c): (i + 1) / len(self.alphabet) for i, c in enumerate(self.alphabet)}
        blocks = []
        for group, length in zip(PAPER_GROUPS, self.group_lengths, strict=True):
            for column in group:
                codes, lengths = _char_codes(frame[column], length)
                values = np.zeros(codes.shape, dtype=np.float32)
                unknown = np.zeros(codes.shape, dtype=bool)
                for code in np.unique(codes):
                    if code == 0:
                        continue
                    mask = codes == code
                    if int(code) in lookup:
                        values[mask] = lookup[int(code)]
                    else:
                        unknown |= mask
                for i in np.flatnonzero(lengths > length):
                    errors[i] = errors[i] or (
                        f"{column}: length {lengths[i]} exceeds the encoder's maximum {length}"
                    )
                for i in np.flatnonzero(unknown.any(axis=1)):
                    bad = sorted({chr(c) for c in codes[i][unknown[i]]})
                    errors[i] = (
                        errors[i] or f"{column}: character(s) {''.join(bad)!r} not in the encoder's alphabet"
                    )
                blocks.append(values)
        return self._finish(blocks, frame, errors)

    def decode(self, features: np.ndarray) -> pd.DataFrame:
        """Encoded rows back to the human-readable table."""
        features = np.asarray(features, dtype=np.float64)
        n_chars = len(self.alphabet)
        table = np.array(["", *self.alphabet], dtype=object)
        out: dict[str, list[str]] = {}
        offset = 0
        for group, length in zip(PAPER_GROUPS, self.group_lengths, strict=True):
            for column in group:
                block = features[:, offset : offset + length]
                index = np.clip(np.rint(block * n_chars).astype(int), 0, n_chars)
                out[column] = ["".join(chars) for chars in table[index]]
                offset += length
        frame = pd.DataFrame(out)
        if self.use_clone_id:
            frame["clone_id"] = self._decode_clone(features[:, offset])
        return frame


class OneHotEncoder(_EncoderBase):
    """One-hot residues per position and one-hot genes with an ``<unk>`` slot."""

    kind: Literal["onehot"] = "onehot"
    residues: str = AMINO_ACIDS
    sequence_lengths: dict[str, int]
    vocabularies: dict[str, list[str]]

    @property
    def dim(self) -> int:
        sequences = sum(self.sequence_lengths[c] for c in SEQUENCE_FIELDS) * len(self.residues)
        categories = sum(len(self.vocabularies[c]) + 1 for c in CATEGORY_FIELDS)
        return sequences + categories + int(self.use_clone_id)

    def encode(self, frame: pd.DataFrame) -> Encoded:
        n = len(frame)
        errors: list[str | None] = [None] * n
        index_of = np.full(256, -1, dtype=np.int64)
        for i, c in enumerate(self.residues):
            index_of[ord(c)] = i
        blocks: list[np.ndarray] = []
        n_res = len(self.residues)
        for column in SEQUENCE_FIELDS:
            length = self.sequence_lengths[column]
            codes, lengths = _char_codes(frame[column], length)
            in_range = codes < 256
            residue = np.where(in_range, index_of[np.minimum(codes, 255)], -1)
            residue[codes == 0] = -2  # padding
            for row in np.flatnonzero(lengths > length):
                errors[row] = (
                    errors[row] or f"{column}: length {lengths[row]} exceeds the encoder's maximum {length}"
                )
            for row in np.flatnonzero((residue == -1).any(axis=1)):
                bad = sorted({chr(c) for c in codes[row][residue[row] == -1]})
                errors[row] = errors[row] or f"{column}: {''.join(bad)!r} not a standard amino acid"
            one_hot = np.zeros((n, length, n_res), dtype=np.float32)
            rows, positions = np.nonzero(residue >= 0)
            one_hot[rows, positions, residue[rows, positions]] = 1.0
            blocks.append(one_hot.reshape(n, length * n_res))
        for column in CATEGORY_FIELDS:
            vocabulary = self.vocabularies[column]
            position = {name: i for i, name in enumerate(vocabulary)}
            index = frame[column].astype(str).map(position).fillna(len(vocabulary)).to_numpy(dtype=np.int64)
            block = np.zeros((n, len(vocabulary) + 1), dtype=np.float32)
            block[np.arange(n), index] = 1.0
            blocks.append(block)
        return self._finish(blocks, frame, errors)

    def decode(self, features: np.ndarray) -> pd.DataFrame:
        """Encoded rows back to the human-readable table (an unseen gene decodes to ``<unk>``)."""
        features = np.asarray(features)
        n = len(features)
        n_res = len(self.residues)
        table = np.array([*self.residues, ""], dtype=object)
        out: dict[str, list[str]] = {}
        offset = 0
        for column in SEQUENCE_FIELDS:
            length = self.sequence_lengths[column]
            block = features[:, offset : offset + length * n_res].reshape(n, length, n_res)
            index = np.where(block.max(axis=2) > 0.5, block.argmax(axis=2), n_res)
            out[column] = ["".join(chars) for chars in table[index]]
            offset += length * n_res
        for column in CATEGORY_FIELDS:
            vocabulary = [*self.vocabularies[column], UNKNOWN]
            block = features[:, offset : offset + len(vocabulary)]
            out[column] = [vocabulary[i] for i in block.argmax(axis=1)]
            offset += len(vocabulary)
        frame = pd.DataFrame(out)
        if self.use_clone_id:
            frame["clone_id"] = self._decode_clone(features[:, offset])
        return frame


ALIGNED_CATEGORIES = ("V_alpha", "V_beta", "J_alpha", "J_beta", "MHC", "Epitope")


class AlignedEncoder(_EncoderBase):
    """Integer codes in a fixed IMGT-style frame, genes normalised by tidytcells (module docstring).

    Column layout of :meth:`encode`'s matrix (integers of :attr:`code_dtype`): CDR3α
    (``CDR3_FRAME``), CDR3β (``CDR3_FRAME``), epitope (``EPITOPE_FRAME``), then one code each for
    V_alpha, V_beta, J_alpha, J_beta, MHC and the epitope as a category; clone_id last, if used.
    """

    kind: Literal["aligned"] = "aligned"
    residues: str = AMINO_ACIDS
    frames: dict[str, int] = Field(default_factory=lambda: dict(ALIGNED_SEQUENCES))
    vocabularies: dict[str, list[str]]  # normalised names, sorted; code = index + 1
    trained: dict[str, list[str]]  # the names the rows a model learns from held (train + validation)
    trained_residues: dict[str, list[str]]  # per sequence column, per frame position: residues seen

    @property
    def dim(self) -> int:
        return sum(self.frames.values()) + len(ALIGNED_CATEGORIES) + int(self.use_clone_id)

    @property
    def code_dtype(self) -> np.dtype:
        """The dtype of :meth:`encode`'s matrix: the smallest integer type holding every code
        (:func:`~tcr_pipeline.frames.code_dtype`); float32 with clone_id (a scaled float)."""
        if self.use_clone_id:
            return np.dtype(np.float32)
        return code_dtype(max(len(self.residues), *(len(v) for v in self.vocabularies.values())))

    def input_spec(self) -> dict[str, object]:
        """What a model needs to know about the columns (stored on its card)."""
        return {
            "encoding": "aligned",
            "frames": dict(self.frames),
            "vocab_sizes": {c: len(self.vocabularies[c]) for c in ALIGNED_CATEGORIES},
            "trained": {c: self._trained_flags(c) for c in ALIGNED_CATEGORIES},
        }

    def _trained_flags(self, column: str) -> list[bool]:
        trained = set(self.trained[column])
        return [name in trained for name in self.vocabularies[column]]

    @staticmethod
    def normalised(column: str, values: pd.Series) -> tuple[list[str], list[bool]]:
        """Normalised names of one category column and whether tidytcells recognised each."""
        from tcr_pipeline.genes import normalise_gene, normalise_mhc

        strings = values.astype(str).str.strip().tolist()
        if column == "Epitope":
            return strings, [True] * len(strings)
        normalise = normalise_mhc if column == "MHC" else normalise_gene
        pairs = [normalise(v) for v in strings]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def encode(self, frame: pd.DataFrame) -> Encoded:
        n = len(frame)
        errors: list[str | None] = [None] * n
        notes: list[list[str]] = [[] for _ in range(n)]
        blocks: list[np.ndarray] = []
        for column, width in self.frames.items():
            values = frame[column].astype(str).str.strip().tolist()
            codes, lengths = align_codes(values, width, self.residues)
            for row in np.flatnonzero(lengths > width):
                errors[row] = errors[row] or (
                    f"{column}: length {lengths[row]} exceeds the model's frame of {width} residues"
                )
            for i, value in enumerate(values):
                bad = sorted({c for c in value if c not in self.residues})
                if bad and errors[i] is None:
                    errors[i] = f"{column}: {''.join(bad)!r} not a standard amino acid"
            seen = self.trained_residues.get(column)
            if seen is not None:
                table = np.zeros((width, len(self.residues) + 1), dtype=bool)
                for position, letters in enumerate(seen):
                    table[position, [self.residues.index(c) + 1 for c in letters]] = True
                table[:, 0] = True
                unseen = ~table[np.arange(width)[None, :], codes]
                for row in np.flatnonzero(unseen.any(axis=1)):
                    positions = np.flatnonzero(unseen[row]) + 1
                    notes[row].append(
                        f"{column}: residue(s) at frame position(s) {', '.join(map(str, positions))} "
                        "never seen there in training"
                    )
            blocks.append(codes.astype(self.code_dtype))
        categories = np.zeros((n, len(ALIGNED_CATEGORIES)), dtype=self.code_dtype)
        for j, column in enumerate(ALIGNED_CATEGORIES):
            names, recognised = self.normalised(column, frame[column])
            code_of = {name: i + 1 for i, name in enumerate(self.vocabularies[column])}
            trained = set(self.trained[column])
            categories[:, j] = [code_of.get(name, 0) for name in names]
            for i, (name, known) in enumerate(zip(names, recognised, strict=True)):
                if not known:
                    notes[i].append(f"{column}: {name!r} is not a recognised IMGT name")
                elif name not in trained:
                    notes[i].append(f"{column}: {name!r} never seen in training")
        blocks.append(categories)
        if self.use_clone_id:  # an empty float32 block would promote the codes to float32
            blocks.append(self._clone_feature(frame, errors))
        features = np.concatenate(blocks, axis=1)
        features[~np.array([e is None for e in errors], dtype=bool)] = 0
        warnings = ["; ".join(n) if n else None for n in notes]
        return Encoded(features, errors, warnings)

    def decode(self, features: np.ndarray) -> pd.DataFrame:
        """Codes back to the readable table (normalised gene names; unknown → ``<unk>``)."""
        codes = np.rint(np.asarray(features, dtype=np.float64)).astype(np.int64)
        table = np.array(["", *self.residues], dtype=object)
        out: dict[str, list[str]] = {}
        offset = 0
        for column, width in self.frames.items():
            block = np.clip(codes[:, offset : offset + width], 0, len(self.residues))
            out[column] = ["".join(chars) for chars in table[block]]
            offset += width
        for j, column in enumerate(ALIGNED_CATEGORIES):
            vocabulary = np.array([UNKNOWN, *self.vocabularies[column]], dtype=object)
            names = vocabulary[np.clip(codes[:, offset + j], 0, len(vocabulary) - 1)].tolist()
            if column != "Epitope":
                out[column] = names
        frame = pd.DataFrame(out)
        if self.use_clone_id:
            frame["clone_id"] = self._decode_clone(np.asarray(features)[:, offset + len(ALIGNED_CATEGORIES)])
        return frame


Encoder = Annotated[PaperEncoder | OneHotEncoder | AlignedEncoder, Field(discriminator="kind")]
AnyEncoder = PaperEncoder | OneHotEncoder | AlignedEncoder
_ENCODER_ADAPTER: TypeAdapter[AnyEncoder] = TypeAdapter(Encoder)


def _fit_aligned(
    frame: pd.DataFrame,
    training: np.ndarray | None,
    use_clone_id: bool,
    clone_range: tuple[float, float] | None,
    data_sha256: str,
) -> AlignedEncoder:
    trained_rows = np.ones(len(frame), dtype=bool) if training is None else np.asarray(training, bool)
    vocabularies: dict[str, list[str]] = {}
    trained: dict[str, list[str]] = {}
    for column in ALIGNED_CATEGORIES:
        names, _ = AlignedEncoder.normalised(column, frame[column])
        vocabularies[column] = sorted(set(names))
        trained[column] = sorted({n for n, t in zip(names, trained_rows, strict=True) if t})
    trained_residues: dict[str, list[str]] = {}
    for column, width in ALIGNED_SEQUENCES.items():
        values = frame.loc[trained_rows, column].astype(str).str.strip().tolist()
        codes, _ = align_codes(values, width)
        letters = np.array(["", *AMINO_ACIDS], dtype=object)
        trained_residues[column] = [
            "".join(sorted(set(letters[np.unique(codes[:, p])]) - {""})) for p in range(width)
        ]
    return AlignedEncoder(
        vocabularies=vocabularies,
        trained=trained,
        trained_residues=trained_residues,
        use_clone_id=use_clone_id,
        clone_id_range=clone_range,
        data_sha256=data_sha256,
    )


def _clone_range(frame: pd.DataFrame, use_clone_id: bool) -> tuple[float, float] | None:
    if not use_clone_id:
        return None
    if "clone_id" not in frame.columns:
        raise InputError("clone_id: column required when prepare.use_clone_id is true")
    values = pd.to_numeric(frame["clone_id"], errors="coerce")
    return float(values.min()), float(values.max())


def fit_encoder(
    frame: pd.DataFrame,
    kind: str,
    use_clone_id: bool = False,
    data_sha256: str = "",
    training: np.ndarray | None = None,
) -> AnyEncoder:
    """Fit an encoder's vocabulary and lengths on a (validated) pair table.

    ``training`` (aligned only): a boolean mask of the training rows, whose genes, epitopes,
    MHCs and residues are what the model will have seen (the rest is a warning at prediction).
    """
    clone_range = _clone_range(frame, use_clone_id)
    if kind == "aligned":
        return _fit_aligned(frame, training, use_clone_id, clone_range, data_sha256)
    if kind == "paper":
        chars: set[str] = set()
        for group in PAPER_GROUPS:
            for column in group:
                chars.update("".join(frame[column].astype(str)))
        lengths = tuple(
            int(max(frame[c].astype(str).str.len().max() for c in group)) for group in PAPER_GROUPS
        )
        return PaperEncoder(
            alphabet="".join(sorted(chars)),
            group_lengths=(lengths[0], lengths[1], lengths[2]),
            use_clone_id=use_clone_id,
            clone_id_range=clone_range,
            data_sha256=data_sha256,
        )
    if kind == "onehot":
        return OneHotEncoder(
            sequence_lengths={c: int(frame[c].astype(str).str.len().max()) for c in SEQUENCE_FIELDS},
            vocabularies={c: sorted(frame[c].astype(str).unique().tolist()) for c in CATEGORY_FIELDS},
            use_clone_id=use_clone_id,
            clone_id_range=clone_range,
            data_sha256=data_sha256,
        )
    raise InputError(f"unknown encoding {kind!r} (choose aligned, onehot or paper)")


def load_encoder(path: Path | str) -> AnyEncoder:
    """Read an encoder saved by :meth:`save`."""
    path = Path(path)
    try:
        return _ENCODER_ADAPTER.validate_python(json.loads(path.read_text()))
    except FileNotFoundError:
        raise InputError(f"{path}: no such encoder file") from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a valid encoder ({exc.__class__.__name__})") from None
