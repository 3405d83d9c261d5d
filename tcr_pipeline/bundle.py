"""A model bundle: a directory with everything needed to predict, and nothing to unpickle.

``weights.pt``  the state dict, loadable with ``torch.load(weights_only=True)``
``encoder.json`` the fitted encoder
``card.json``   architecture, parameters, data sha256, per-epoch history and metrics
``validation.pt`` the prepared rows the model was validated on and its (out-of-fold) scores there
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from tcr_pipeline.config import EvaluateParams
from tcr_pipeline.config import ModelParams as ModelParams  # re-exported: the type of a card's `model`
from tcr_pipeline.data import (
    DEFAULT_CHUNK_ROWS,
    FEATURE_COLUMNS,
    check_columns,
    check_values,
    read_table_chunks,
)
from tcr_pipeline.encoding import AlignedEncoder, AnyEncoder, load_encoder
from tcr_pipeline.errors import InputError
from tcr_pipeline.files import write_atomic, write_bytes_atomic, write_text_atomic
from tcr_pipeline.models import Ensemble, build_model, scores_epitope
from tcr_pipeline.training import predict_scores

WEIGHTS_FILE = "weights.pt"
ENCODER_FILE = "encoder.json"
CARD_FILE = "card.json"
VALIDATION_FILE = "validation.pt"
CHUNK_ROWS_ENV = "TCR_PREDICT_CHUNK_ROWS"
# Rows per forward pass in predict_frame. An aligned model expands each row's codes to ≈ 7 kB of
# residue vectors and one-hots before its first layer; 8,192 rows keep that near 100 MB (65,536
# rows took ≈ 0.9 GB) at the same rows/s on a CPU.
SCORE_BATCH_ROWS = 8192


class ModelCard(BaseModel):
    """What a model is, what it saw and how it did."""

    model_config = ConfigDict(extra="allow")

    input_dim: int
    model: ModelParams
    train_params: dict[str, Any]
    evaluate: EvaluateParams = EvaluateParams()
    prepare_params: dict[str, Any] = Field(default_factory=dict)
    data_sha256: str
    created: float = Field(default_factory=time.time)
    device: dict[str, Any] = Field(default_factory=dict)
    history: list[dict[str, float]] = Field(default_factory=list)
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    input_spec: dict[str, Any] | None = None  # the encoder's description of the columns (aligned)
    members: int = 1  # >1: the mean of this many fold models (train.folds)
    best_epoch: int | None = None


@dataclass
class Bundle:
    """A loaded model ready to predict."""

    model: nn.Module
    encoder: AnyEncoder
    card: ModelCard
    path: Path


def save_bundle(
    directory: Path | str,
    model: nn.Module,
    encoder: AnyEncoder,
    card: ModelCard,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Path:
    """Write weights, encoder and card; the card goes last, so a bundle with a card is complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    write_bytes_atomic(directory / WEIGHTS_FILE, _serialised(state))
    if validation is not None:
        rows, scores = validation
        saved = {"rows": rows.cpu().long(), "scores": scores.cpu().float()}
        write_bytes_atomic(directory / VALIDATION_FILE, _serialised(saved))
    encoder.save(directory / ENCODER_FILE)
    write_text_atomic(directory / CARD_FILE, card.model_dump_json(indent=2) + "\n")
    return directory


def _serialised(tensors: dict[str, torch.Tensor]) -> bytes:
    """``torch.save`` into memory: written by Python, a full disk is an OSError (ENOSPC) naming the
    file; torch's own writer says only "unexpected pos 576 vs 534" (a RuntimeError)."""
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def load_card(directory: Path | str) -> ModelCard:
    """Read a bundle's card."""
    path = Path(directory) / CARD_FILE
    try:
        return ModelCard.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{directory}: not a model bundle (no {CARD_FILE})") from None
    except ValueError as exc:
        raise InputError(f"{path}: not a valid model card ({exc.__class__.__name__})") from None


def load_validation(directory: Path | str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The rows a bundle was validated on and its scores there (None: an older bundle)."""
    path = Path(directory) / VALIDATION_FILE
    if not path.exists():
        return None
    saved = torch.load(path, weights_only=True)
    return saved["rows"], saved["scores"]


def build_card_model(card: ModelCard) -> nn.Module:
    """An untrained model of the architecture a card describes (fold ensembles included)."""
    if card.members > 1:
        return Ensemble(
            [build_model(card.input_dim, card.model, card.input_spec) for _ in range(card.members)]
        )
    return build_model(card.input_dim, card.model, card.input_spec)


def load_bundle(directory: Path | str, device: str = "cpu") -> Bundle:
    """Load a bundle's model (weights only, never arbitrary pickles) and encoder."""
    directory = Path(directory)
    card = load_card(directory)
    model = build_card_model(card)
    _load_weights(model, directory / WEIGHTS_FILE, device)
    model.to(device).eval()
    return Bundle(model=model, encoder=load_encoder(directory / ENCODER_FILE), card=card, path=directory)


def missing_input_columns(header: list[str]) -> list[str]:
    """The columns a table with ``header`` lacks for :func:`predict_frame` (``Label`` is optional)."""
    return [p.column for p in check_columns(pd.DataFrame(columns=header), "input", require_label=False)]


def predict_frame(bundle: Bundle, frame: pd.DataFrame, source: str = "input") -> pd.DataFrame:
    """Score every row: all input columns plus ``score``, ``prediction``, ``warning`` and ``error``.

    Rows that fail validation (bad characters, gene names, empty values) or that the encoder
    cannot represent (unknown characters, longer than the frame) get their message in ``error``
    and no score; so do rows whose epitope a per-epitope model (``kmer``, ``cnn``) never saw in
    training — it has no output for them. A row with anything else the model never saw in
    training (a gene, MHC or epitope, a residue at a frame position; aligned encoding) is scored
    with that named in ``warning``. ``frame``'s index gives the row numbers used in messages.
    """
    problems = check_columns(frame, source, require_label=False)
    if problems:
        raise InputError(str(problems[0]))
    # the same per-row checks as `validate` (amino acids, gene names, empty values), Label excepted:
    # an encoder's alphabet alone would accept e.g. digits in a CDR3 (they occur in gene names)
    # the row dicts built from column lists: DataFrame.to_dict("records") took ~20 % of the time
    skipped = {"Label"} if bundle.encoder.use_clone_id else {"Label", "clone_id"}
    names = [str(c) for c in frame.columns if c not in skipped]
    columns = [frame[c].astype(str).tolist() for c in names]
    errors: list[str | None] = []
    for line, row in zip(frame.index, zip(*columns, strict=True), strict=True):
        values = dict(zip(names, row, strict=True))
        problems = check_values(values, source, int(line), False, bundle.encoder.use_clone_id)
        errors.append(f"{problems[0].column}: {problems[0].message}" if problems else None)
    frame = frame.reset_index(drop=True)
    stripped = frame.copy()
    for column in FEATURE_COLUMNS:
        stripped[column] = frame[column].astype(str).str.strip()
    encoded = bundle.encoder.encode(stripped)
    errors = [mine or theirs for mine, theirs in zip(errors, encoded.errors, strict=True)]
    warnings = encoded.warnings or [None] * len(frame)
    if scores_epitope(bundle.model) and isinstance(bundle.encoder, AlignedEncoder):
        known = set(bundle.encoder.trained["Epitope"])
        for i, epitope in enumerate(stripped["Epitope"].tolist()):
            if errors[i] is None and epitope not in known:
                errors[i] = (
                    f"Epitope: {epitope!r} has no training data; this model scores only the "
                    f"{len(known)} epitopes it was trained on"
                )
    valid = np.array([e is None for e in errors], dtype=bool)
    scores = np.full(len(frame), np.nan)
    if valid.any():
        features = torch.from_numpy(encoded.features[valid])
        scores[valid] = predict_scores(bundle.model, features, SCORE_BATCH_ROWS).numpy()
    out = frame.copy()
    threshold = bundle.card.evaluate.threshold
    out["score"] = [f"{s:.6f}" if ok else "" for s, ok in zip(scores, valid, strict=True)]
    out["prediction"] = [str(int(s >= threshold)) if ok else "" for s, ok in zip(scores, valid, strict=True)]
    out["warning"] = [(w or "") if ok else "" for w, ok in zip(warnings, valid, strict=True)]
    out["error"] = [e or "" for e in errors]
    return out


@dataclass(frozen=True)
class PredictSummary:
    """What :func:`predict_file` wrote: rows in all, rows with an error, rows with a warning."""

    rows: int
    invalid: int
    warned: int


def chunk_rows_from_env(chunk_rows: int | None = None) -> int:
    """Rows per chunk of :func:`predict_file`: the argument, else ``$TCR_PREDICT_CHUNK_ROWS``, else 50,000."""
    if chunk_rows is not None:
        return chunk_rows
    value = os.environ.get(CHUNK_ROWS_ENV, "").strip()
    if not value:
        return DEFAULT_CHUNK_ROWS
    if not value.isdigit() or int(value) < 1:
        raise InputError(f"${CHUNK_ROWS_ENV}: expected a whole number of rows of at least 1, got {value!r}")
    return int(value)


def predict_file(
    bundle: Bundle, source: Path | str, target: Path | str, chunk_rows: int | None = None
) -> PredictSummary:
    """Score a CSV into another CSV a chunk of rows at a time; the output appears only when complete.

    Each chunk (``chunk_rows``, see :func:`chunk_rows_from_env`) is read, validated, encoded,
    scored by :func:`predict_frame` and appended to one temporary file beside ``target``, renamed
    into place after the last: memory is that of one chunk whatever the file's size, and the
    output is byte for byte that of scoring the whole table at once. The first chunk is scored
    before anything is created, so a bad header or first row leaves no trace; an error in a
    later chunk, or an interrupt, leaves ``target`` as it was and no temporary file.
    """
    name = str(source)
    chunks = read_table_chunks(source, chunk_rows_from_env(chunk_rows))
    counts = [0, 0, 0]

    def append(result: pd.DataFrame, handle: IO[str], header: bool) -> None:
        result.to_csv(handle, index=False, header=header)
        counts[0] += len(result)
        counts[1] += int((result["error"] != "").sum())
        counts[2] += int((result["warning"] != "").sum())

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            append(first, handle, header=True)
            for frame in chunks:
                append(predict_frame(bundle, frame, name), handle, header=False)

    try:
        first = predict_frame(bundle, next(chunks), name)
        write_atomic(target, write)
    finally:
        chunks.close()  # the input file is closed now, not when the generator is collected
    return PredictSummary(*counts)


def _load_weights(model: nn.Module, path: Path, device: str) -> None:
    """Load a state dict into ``model``; a missing, truncated, unsafe or mismatched file is an InputError."""
    import pickle
    import zipfile

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path.parent}: not a complete model bundle (no {path.name})") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a weights file") from None
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False, i.e. running the file's code: never do that
        raise InputError(
            f"{path}: refused, it holds more than tensors (only plain weights are loaded; "
            "train or save the model again with tcr-pipeline)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(
            f"{path}: not a readable weights file, truncated or corrupt ({_first(exc)})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: not a state dict of tensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{path}: does not fit the architecture in {CARD_FILE} ({_first(exc)})") from None


def _first(exc: BaseException) -> str:
    """The first line of an exception's message, without torch's indentation, at most 200 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(exc).__name__
    return text[:200]
