"""The prepare stage: raw pair table → encoder + encoded tensors with their split assignment."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tcr_pipeline.config import PrepareParams
from tcr_pipeline.data import COLUMNS, load_pairs, tcr_keys
from tcr_pipeline.encoding import AlignedEncoder, AnyEncoder, fit_encoder, load_encoder
from tcr_pipeline.errors import InputError
from tcr_pipeline.files import check_output_files, sha256_file, write_atomic, write_json_atomic
from tcr_pipeline.splits import SPLITS, split_pairs

ENCODER_FILE = "encoder.json"
TENSORS_FILE = "dataset.pt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class Prepared:
    """An encoded data set: features, labels, split (0/1/2), epitope index and TCR group per row.

    ``features`` of the aligned encoding are integer codes in the encoder's compact dtype (uint8
    while every vocabulary has ≤ 255 names): 81 bytes per row, expanded per batch by the models.
    """

    features: torch.Tensor
    labels: torch.Tensor
    split: torch.Tensor
    epitope: torch.Tensor
    epitope_names: list[str]
    encoder: AnyEncoder
    meta: dict[str, Any]
    groups: torch.Tensor | None = None  # αβ TCR id per row (None: prepared by an older version)

    @property
    def data_sha256(self) -> str:
        return str(self.meta["data_sha256"])

    def rows(self, split: str) -> torch.Tensor:
        """Row indices of one split (``train``, ``val`` or ``test``)."""
        return torch.nonzero(self.split == SPLITS.index(split)).squeeze(1)

    def epitopes_of(self, rows: torch.Tensor) -> np.ndarray:
        """Epitope names of the given rows."""
        return np.asarray(self.epitope_names)[self.epitope[rows].numpy()]


def class_counts(labels: np.ndarray, split: np.ndarray) -> dict[str, dict[str, int]]:
    """Positives and negatives per split."""
    return {
        name: {
            "positive": int(((split == i) & (labels == 1)).sum()),
            "negative": int(((split == i) & (labels == 0)).sum()),
        }
        for i, name in enumerate(SPLITS)
    }


def encode_pairs(frame: pd.DataFrame, params: PrepareParams, data_sha256: str) -> Prepared:
    """Fit the encoder on ``frame``, encode it and assign splits (pure: no file I/O)."""
    split = split_pairs(frame, params)
    # what a model may learn from: the training and validation rows (train.folds > 1 pools them)
    encoder = fit_encoder(frame, params.encoding, params.use_clone_id, data_sha256, training=split != 2)
    encoded = encoder.encode(frame)
    failed = [i for i, e in enumerate(encoded.errors) if e is not None]
    if failed:  # a validated table fits every frame but the aligned one's (CDR3 > 30 residues)
        raise InputError(f"row {failed[0] + 2}: {encoded.errors[failed[0]]}")
    _, groups = np.unique(tcr_keys(frame).to_numpy(), return_inverse=True)
    epitope_names = sorted(frame["Epitope"].unique().tolist())
    epitope_index = frame["Epitope"].map({e: i for i, e in enumerate(epitope_names)}).to_numpy()
    labels = frame["Label"].to_numpy()
    meta = {
        "data_sha256": data_sha256,
        "params": params.model_dump(mode="json"),
        "rows": len(frame),
        "feature_dim": int(encoded.features.shape[1]),
        "feature_dtype": str(encoded.features.dtype),
        "class_counts": class_counts(labels, split),
        "epitope_names": epitope_names,
    }
    return Prepared(
        features=torch.from_numpy(encoded.features),
        labels=torch.from_numpy(labels.astype(np.float32)),
        split=torch.from_numpy(split),
        epitope=torch.from_numpy(epitope_index.astype(np.int64)),
        epitope_names=epitope_names,
        encoder=encoder,
        meta=meta,
        groups=torch.from_numpy(groups.astype(np.int64)),
    )


def prepare_dataset(raw: Path | str, params: PrepareParams, out_dir: Path | str) -> Prepared:
    """Validate, encode and split ``raw``; write encoder, tensors and metadata to ``out_dir``."""
    out_dir = check_output_files(out_dir, (TENSORS_FILE, ENCODER_FILE, META_FILE), inputs=(raw,))
    frame = load_pairs(raw, require_label=True, require_clone_id=params.use_clone_id)
    prepared = encode_pairs(frame, params, sha256_file(raw))
    prepared.meta["raw"] = str(raw)
    return write_prepared(prepared, out_dir)


def write_prepared(prepared: Prepared, out_dir: Path | str) -> Prepared:
    """Write tensors, encoder and metadata (each atomically; the metadata's class counts are
    recomputed from the split, so a Prepared with a re-drawn split is written consistently)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared.meta["class_counts"] = class_counts(prepared.labels.numpy(), prepared.split.numpy())
    tensors = {
        "features": prepared.features,
        "labels": prepared.labels,
        "split": prepared.split,
        "epitope": prepared.epitope,
        "groups": prepared.groups,
    }
    write_atomic(out_dir / TENSORS_FILE, lambda tmp: torch.save(tensors, tmp))
    prepared.encoder.save(out_dir / ENCODER_FILE)
    write_json_atomic(out_dir / META_FILE, prepared.meta)
    return prepared


def read_prepared_meta(directory: Path | str) -> dict[str, Any]:
    """The metadata of a prepared data directory, checking that its three files are there (cheap)."""
    directory = Path(directory)
    missing = [f for f in (TENSORS_FILE, ENCODER_FILE, META_FILE) if not (directory / f).is_file()]
    if missing:
        raise InputError(
            f"{directory}: not a prepared data directory (missing {', '.join(missing)}; "
            "run `tcr-pipeline prepare` first)"
        )
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (ValueError, OSError) as exc:
        raise InputError(f"{directory / META_FILE}: not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("data_sha256"), str):
        raise InputError(f"{directory / META_FILE}: not prepared metadata (no data_sha256)")
    return meta


def compact_features(features: torch.Tensor, encoder: AnyEncoder) -> torch.Tensor:
    """Aligned codes in the encoder's compact dtype (data prepared before it held float32 codes:
    converted exactly, the models read the same integers); other encodings unchanged."""
    if not isinstance(encoder, AlignedEncoder) or not features.is_floating_point():
        return features
    dtype = encoder.code_dtype
    if dtype.kind == "f":
        return features
    return torch.from_numpy(np.rint(features.numpy()).astype(dtype))


def load_prepared(directory: Path | str) -> Prepared:
    """Load what :func:`prepare_dataset` wrote (tensors load with ``weights_only=True``)."""
    directory = Path(directory)
    meta = read_prepared_meta(directory)
    try:
        tensors = torch.load(directory / TENSORS_FILE, weights_only=True)
        features, labels, split, epitope = (
            tensors["features"], tensors["labels"], tensors["split"], tensors["epitope"]
        )  # fmt: skip
    except Exception as exc:  # truncated, corrupt, not ours: never a traceback, never weights_only=False
        raise InputError(
            f"{directory / TENSORS_FILE}: not readable prepared tensors ({exc.__class__.__name__}); "
            "run `tcr-pipeline prepare` again"
        ) from None
    encoder = load_encoder(directory / ENCODER_FILE)
    return Prepared(
        features=compact_features(features, encoder),
        labels=labels,
        split=split,
        epitope=epitope,
        epitope_names=list(meta["epitope_names"]),
        encoder=encoder,
        meta=meta,
        groups=tensors.get("groups"),
    )


__all__ = ["COLUMNS", "Prepared", "encode_pairs", "load_prepared", "prepare_dataset", "read_prepared_meta"]
