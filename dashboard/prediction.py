"""Predictions for pasted rows: parse the text, score what can be scored, explain the rest.

The text is a CSV in the paper's format with a header. A row is reported by its line in the
text (the header is line 1), as the command line reports rows of a file. A row that cannot be
read (wrong number of fields) or encoded (an empty value, a residue outside the encoder's
alphabet, a sequence longer than the model has seen) gets a message; the other rows are scored.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tcr_pipeline.bundle import Bundle, missing_input_columns, predict_frame
from tcr_pipeline.store.querylog import NewQuery


class TableError(ValueError):
    """The submission as a whole cannot be answered (too big, no header, missing columns)."""


@dataclass(frozen=True)
class Limits:
    """How much one submission may hold."""

    max_rows: int = 1000
    max_bytes: int = 256 * 1024


@dataclass(frozen=True)
class ParsedTable:
    """The rows of a submission: those with every field, and the lines that could not be read."""

    header: list[str]
    frame: pd.DataFrame  # one row per readable line, all values as strings
    lines: list[int]  # the text line of each row of ``frame``
    unreadable: dict[int, tuple[dict[str, str], str]]  # line -> (what was read, why not)


@dataclass(frozen=True)
class Answer:
    """The answer for one row."""

    line: int
    input: dict[str, str]
    score: float | None
    binding: bool | None
    error: str
    warning: str = ""  # the library's note on a scored row (a gene, epitope, … unseen in training)

    @property
    def valid(self) -> bool:
        return not self.error

    def as_query(self) -> NewQuery:
        output: dict[str, Any] = {}
        if self.valid:
            output = {"score": self.score, "prediction": int(bool(self.binding))}
            if self.warning:
                output["warning"] = self.warning
        return NewQuery(row=self.line, valid=self.valid, input=self.input, output=output, error=self.error)


def parse_table(text: str, limits: Limits) -> ParsedTable:
    """Read pasted CSV text; raise :class:`TableError` for a submission that cannot be answered."""
    size = len(text.encode("utf-8"))
    if size > limits.max_bytes:
        raise TableError(f"the input is {size:,} bytes; the limit is {limits.max_bytes:,} bytes")
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        raise TableError("no input: paste a header line and at least one row")
    if len(numbered) - 1 > limits.max_rows:
        raise TableError(
            f"the input has {len(numbered) - 1:,} rows; the limit is {limits.max_rows:,} rows per query "
            "(use `tcr-pipeline predict` for more)"
        )
    try:
        records = list(csv.reader(io.StringIO("\n".join(line for _, line in numbered))))
    except csv.Error as exc:
        raise TableError(f"not a well-formed CSV ({exc})") from None
    header = [h.strip() for h in records[0]]
    missing_columns = missing_input_columns(header)
    if missing_columns:
        missing = ", ".join(missing_columns)
        raise TableError(
            f"line 1: the header lacks required column(s) {missing} (expected the paper's format: "
            "CDR3_alpha,CDR3_beta,V_alpha,V_beta,J_alpha,J_beta,Epitope,clone_id,MHC,Label)"
        )
    if len(numbered) == 1:
        raise TableError("no rows after the header")
    rows: list[list[str]] = []
    lines: list[int] = []
    unreadable: dict[int, tuple[dict[str, str], str]] = {}
    for (line, _), fields in zip(numbered[1:], records[1:], strict=True):
        values = [f.strip() for f in fields]
        if len(values) != len(header):
            partial = dict(zip(header, values, strict=False))
            unreadable[line] = (partial, f"line {line}: expected {len(header)} fields, found {len(values)}")
            continue
        rows.append(values)
        lines.append(line)
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    return ParsedTable(header=header, frame=frame, lines=lines, unreadable=unreadable)


def answer_rows(bundle: Bundle, table: ParsedTable) -> list[Answer]:
    """Score every readable row with ``bundle``; one :class:`Answer` per row, in line order."""
    answers: list[Answer] = [
        Answer(line=line, input=values, score=None, binding=None, error=error)
        for line, (values, error) in table.unreadable.items()
    ]
    if len(table.frame):
        result = predict_frame(bundle, table.frame, "input")
        records: list[dict[str, str]] = table.frame.to_dict("records")  # type: ignore[assignment]
        # `warning` is newer than `predict_frame`'s other columns: a library without it warns of nothing
        warnings = result["warning"] if "warning" in result.columns else [""] * len(result)
        for line, values, score, prediction, error, warning in zip(
            table.lines,
            records,
            result["score"],
            result["prediction"],
            result["error"],
            warnings,
            strict=True,
        ):
            if error:
                answers.append(Answer(line, values, None, None, f"line {line}: {error}"))
            else:
                text = (
                    ""
                    if warning is None or (isinstance(warning, float) and warning != warning)
                    else str(warning)
                )
                answers.append(Answer(line, values, float(score), prediction == "1", "", text))
    return sorted(answers, key=lambda a: a.line)


def answers_frame(answers: list[Answer]) -> pd.DataFrame:
    """The answers as the table the Predict page shows."""
    return pd.DataFrame(
        [
            {
                "line": a.line,
                "CDR3_alpha": a.input.get("CDR3_alpha", ""),
                "CDR3_beta": a.input.get("CDR3_beta", ""),
                "Epitope": a.input.get("Epitope", ""),
                "MHC": a.input.get("MHC", ""),
                "given label": a.input.get("Label", ""),
                "score": "" if a.score is None else f"{a.score:.4f}",
                "binding": "" if a.binding is None else ("yes" if a.binding else "no"),
                "warning": a.warning,
                "message": a.error or "ok",
            }
            for a in answers
        ],
        columns=[
            "line",
            "CDR3_alpha",
            "CDR3_beta",
            "Epitope",
            "MHC",
            "given label",
            "score",
            "binding",
            "warning",
            "message",
        ],
    )


def rows_to_csv(frame: pd.DataFrame) -> str:
    """Rows as CSV text with a header (what the example button puts in the text area)."""
    return frame.to_csv(index=False, lineterminator="\n")
