"""The aligned encoding's integer codes: IMGT-style residue frames and the compact dtypes of codes.

A sequence is coded in a fixed frame (:data:`CDR3_FRAME` for CDR3α/β, :data:`EPITOPE_FRAME` for
the epitope) with residues 1–20 and 0 for the gap (:func:`align_codes`); genes, MHC and the epitope
are coded by their index in a vocabulary. Codes are kept as the smallest integer dtype that holds
them (:func:`code_dtype`): one byte per column while every vocabulary has at most 255 names, so a
row of 81 columns is 81 bytes — the models expand it to one-hot or BLOSUM vectors per batch.
"""

from __future__ import annotations

import numpy as np

from tcr_pipeline.data import AMINO_ACIDS

CDR3_FRAME = 30  # residues: longer CDR3s are a per-row error (real CDR3β rarely exceed 25)
EPITOPE_FRAME = 15  # residues: class I epitopes are 8–11, most class II cores fit
ALIGNED_SEQUENCES = {"CDR3_alpha": CDR3_FRAME, "CDR3_beta": CDR3_FRAME, "Epitope": EPITOPE_FRAME}
CODE_DTYPES = (np.uint8, np.int16, np.int32)
_ROWS_AT_ONCE = 65536


def code_dtype(largest: int) -> np.dtype:
    """The smallest of uint8, int16 and int32 that holds the codes 0…``largest``."""
    for dtype in CODE_DTYPES:
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"code {largest:,} exceeds int32")


def align_codes(values: list[str], frame: int, residues: str = AMINO_ACIDS) -> tuple[np.ndarray, np.ndarray]:
    """IMGT-style aligned residue codes (1…20, 0 = gap) of each sequence in a ``frame``-wide row.

    The first ⌈L/2⌉ residues fill the frame from the left, the last ⌊L/2⌋ from the right, so the
    conserved ends keep their positions and the length difference becomes a central gap.
    Returns the (n, frame) uint8 codes and each sequence's length (longer than ``frame``: all zero).
    """
    lookup = np.zeros(256, dtype=np.uint8)
    for i, c in enumerate(residues):
        lookup[ord(c)] = i + 1
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    codes = np.zeros((len(values), frame), dtype=np.uint8)
    position = np.arange(frame)[None, :]
    for start in range(0, len(values), _ROWS_AT_ONCE):  # vectorised, a block of rows at a time
        block = [v if len(v) <= frame and v.isascii() else "" for v in values[start : start + _ROWS_AT_ONCE]]
        raw = np.frombuffer("".join(v.ljust(frame, "\0") for v in block).encode("ascii"), dtype=np.uint8)
        left_aligned = lookup[raw.reshape(len(block), frame)]
        length = np.array([len(v) for v in block])[:, None]
        left = (length + 1) // 2
        right = position >= frame - (length - left)  # the last ⌊L/2⌋ residues, at the frame's end
        source = np.where(right, position - frame + length, position)
        aligned = np.take_along_axis(left_aligned, np.clip(source, 0, frame - 1), axis=1)
        codes[start : start + len(block)] = np.where(right | (position < left), aligned, 0)
    return codes, lengths
