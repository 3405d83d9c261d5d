"""Reading and validating TCR–epitope pair tables.

Rows are reported by their line number in the file (the header is line 1, the first data row
line 2), so ``file:row:column: message`` points an editor at the right place.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tcr_pipeline.columns import COLUMNS, FEATURE_COLUMNS, GENE_COLUMNS, SEQUENCE_COLUMNS, TCR_COLUMNS
from tcr_pipeline.errors import InputError

if TYPE_CHECKING:
    import _csv

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
MAX_SEQUENCE_LENGTH = 50
DEFAULT_CHUNK_ROWS = 50_000

_AA_RE = re.compile(f"^[{AMINO_ACIDS}]+$")
_GENE_PREFIX = {"V_alpha": "TRAV", "V_beta": "TRBV", "J_alpha": "TRAJ", "J_beta": "TRBJ"}
_GENE_RE = re.compile(r"^TR[AB][VJ][0-9A-Z\-/]*(\*\d+)?$")


@dataclass(frozen=True)
class Problem:
    """One problem in an input file, printable as ``file:row:column: message``."""

    file: str
    row: int
    column: str
    message: str

    def __str__(self) -> str:
        row = self.row if self.row > 0 else "-"
        return f"{self.file}:{row}:{self.column}: {self.message}"


class _TableError(InputError):
    """A file that cannot be read as a pair table at all."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def read_table(path: Path | str) -> pd.DataFrame:
    """Read a CSV as strings; raise :class:`InputError` for a file that cannot be a pair table.

    The frame's index is each row's line in the file, counted as an editor counts: a quoted
    value that spans lines moves the following rows down. A row with more fields than the
    header, a header naming a column twice and a file without data rows are refused (pandas
    would take surplus leading fields as an index and shift every column, and would rename a
    second ``Label`` to ``Label.1``). A row with fewer fields is padded with empty values,
    which the value checks then report.
    """
    path = Path(path)
    _check_file(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError:
        raise _TableError(Problem(str(path), 1, "-", "not a CSV file (not UTF-8 text)")) from None
    if "\x00" in text[: 1 << 16]:
        raise _TableError(Problem(str(path), 1, "-", "not a CSV file (binary content)"))
    header, rows, lines = _parse_csv(text, str(path))
    frame = pd.DataFrame(rows, columns=header, dtype=str) if rows else pd.DataFrame(columns=header, dtype=str)
    # index = the row's line in the file; blank lines are dropped but still counted
    frame.index = pd.Index(lines, dtype="int64")
    blank = (frame == "").all(axis=1) if len(frame.columns) else pd.Series(False, index=frame.index)
    frame = frame[~blank]
    if frame.empty:
        raise _TableError(Problem(str(path), 2, "-", "no data rows"))
    return frame


def read_table_chunks(path: Path | str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Generator[pd.DataFrame]:
    """:func:`read_table` as frames of at most ``chunk_rows`` rows, each parsed when it is asked for.

    Memory stays that of one frame whatever the file's size. The index, padding, blank rows and
    refusals are :func:`read_table`'s, but a fault in the file's body (a row with more fields
    than the header, a broken quote, text that is not UTF-8) is raised only when the reader
    reaches it, after the frames before it: whoever consumes the frames must make nothing
    final (rename an output into place, commit a log) before the last one.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    path = Path(path)
    _check_file(path)
    name = str(path)
    with open(path, "rb") as raw:
        start = raw.read(1 << 16)
    try:  # read_table's checks and their order, on the file's start (the rest: when it is reached)
        codecs.getincrementaldecoder("utf-8")().decode(start, final=False)
    except UnicodeDecodeError:
        raise _TableError(Problem(name, 1, "-", "not a CSV file (not UTF-8 text)")) from None
    if b"\x00" in start:
        raise _TableError(Problem(name, 1, "-", "not a CSV file (binary content)"))
    yielded = False
    with open(path, newline="", encoding="utf-8") as handle:
        try:
            reader = csv.reader(handle)
            header = _read_header(reader, name)
            rows: list[list[str]] = []
            lines: list[int] = []
            for line, record in _read_records(reader, header, name):
                if any(record):  # a row of empty fields is dropped, as a blank line is
                    rows.append(record)
                    lines.append(line)
                if len(rows) == chunk_rows:
                    yield _frame(header, rows, lines)
                    yielded = True
                    rows, lines = [], []
        except UnicodeDecodeError:
            raise _TableError(Problem(name, 1, "-", "not a CSV file (not UTF-8 text)")) from None
    if rows:
        yield _frame(header, rows, lines)
    elif not yielded:
        raise _TableError(Problem(name, 2, "-", "no data rows"))


def _frame(header: list[str], rows: list[list[str]], lines: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    frame.index = pd.Index(lines, dtype="int64")
    return frame


def _check_file(path: Path) -> None:
    """Refuse a path that is missing, a directory or empty."""
    if not path.exists():
        raise _TableError(Problem(str(path), 0, "-", "no such file"))
    if path.is_dir():
        raise _TableError(Problem(str(path), 0, "-", "is a directory, expected a CSV file"))
    if path.stat().st_size == 0:
        raise _TableError(Problem(str(path), 1, "-", "file is empty"))


def _parse_csv(text: str, path: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows padded to the header's width, and the line each row starts on."""
    reader = csv.reader(io.StringIO(text))
    header = _read_header(reader, path)
    rows: list[list[str]] = []
    lines: list[int] = []
    for line, record in _read_records(reader, header, path):
        rows.append(record)
        lines.append(line)
    return header, rows, lines


def _read_header(reader: _csv.Reader, path: str) -> list[str]:
    """The header (names stripped), after any leading blank lines; a name given twice is refused."""
    try:
        header: list[str] = []
        while not header:  # leading blank lines
            header = [c.strip() for c in next(reader)]
    except StopIteration:
        raise _TableError(Problem(path, 1, "-", "file is empty")) from None
    except csv.Error as exc:
        raise _TableError(Problem(path, reader.line_num, "-", f"not a well-formed CSV ({exc})")) from None
    header_line = reader.line_num
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if name in seen:
            raise _TableError(
                Problem(
                    path,
                    header_line,
                    name or "-",
                    f"column named twice (columns {seen[name]} and {position})",
                )
            )
        seen[name] = position
    return header


def _read_records(reader: _csv.Reader, header: list[str], path: str) -> Iterator[tuple[int, list[str]]]:
    """Each non-empty record, padded to the header's width, with the line it starts on."""
    start = reader.line_num + 1
    try:
        for record in reader:
            if len(record) > len(header):
                message = (
                    f"not a well-formed CSV (line {start} has {len(record)} fields, the header {len(header)})"
                )
                raise _TableError(Problem(path, start, "-", message))
            if record:
                yield start, record + [""] * (len(header) - len(record))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise _TableError(Problem(path, start, "-", f"not a well-formed CSV ({exc})")) from None


def check_columns(frame: pd.DataFrame, path: str, require_label: bool) -> list[Problem]:
    """Problems with the header: required columns missing."""
    required = [c for c in COLUMNS if c not in ("clone_id", "Label")]
    if require_label:
        required.append("Label")
    return [
        Problem(path, 1, column, "missing required column")
        for column in required
        if column not in frame.columns
    ]


def check_rows(
    frame: pd.DataFrame, path: str, require_label: bool, require_clone_id: bool = False
) -> list[Problem]:
    """Problems in the values of each row (the header must already be complete)."""
    problems: list[Problem] = []
    records: list[dict[str, str]] = frame.to_dict("records")  # type: ignore[assignment]
    for line, values in zip(frame.index, records, strict=True):
        problems.extend(check_values(values, path, int(line), require_label, require_clone_id))
    problems.extend(_check_duplicates(frame, path))
    return problems


def check_values(
    values: dict[str, str], path: str, line: int, require_label: bool, require_clone_id: bool
) -> list[Problem]:
    problems = []
    for column in SEQUENCE_COLUMNS:
        value = values[column].strip()
        if not value:
            problems.append(Problem(path, line, column, "empty value"))
        elif not _AA_RE.match(value):
            bad = sorted({c for c in value if c not in AMINO_ACIDS})
            problems.append(
                Problem(path, line, column, f"not an amino-acid sequence (bad characters: {''.join(bad)!r})")
            )
        elif len(value) > MAX_SEQUENCE_LENGTH:
            problems.append(
                Problem(
                    path, line, column, f"sequence of {len(value)} residues exceeds {MAX_SEQUENCE_LENGTH}"
                )
            )
    for column in GENE_COLUMNS:
        value = values[column].strip()
        if not value:
            problems.append(Problem(path, line, column, "empty value"))
        elif not _GENE_RE.match(value) or not value.startswith(_GENE_PREFIX[column]):
            problems.append(
                Problem(path, line, column, f"{value!r} is not a {_GENE_PREFIX[column]} gene name")
            )
    if not values["MHC"].strip():
        problems.append(Problem(path, line, "MHC", "empty value"))
    clone_id = values.get("clone_id")
    if clone_id is None or not clone_id.strip():
        if require_clone_id:
            problems.append(Problem(path, line, "clone_id", "empty value (the model uses clone_id)"))
    else:
        try:
            float(clone_id)
        except ValueError:
            problems.append(Problem(path, line, "clone_id", f"{clone_id!r} is not a number"))
    label = values.get("Label")
    if label is not None and (require_label or label.strip()) and label.strip() not in ("0", "1"):
        shown = label if label.strip() else "empty value"
        problems.append(Problem(path, line, "Label", f"label must be 0 or 1, got {shown!r}"))
    return problems


def _check_duplicates(frame: pd.DataFrame, path: str) -> list[Problem]:
    """Exact duplicate pairs, and the same TCR–epitope pair with two different labels."""
    problems = []
    key = [c for c in (*TCR_COLUMNS, "Epitope", "MHC") if c in frame.columns]
    first_line: dict[tuple[str, ...], tuple[int, str]] = {}
    for position, values in enumerate(frame[key].itertuples(index=False, name=None)):
        label = str(frame["Label"].iat[position]) if "Label" in frame.columns else ""
        line = int(frame.index[position])
        if values in first_line:
            other, other_label = first_line[values]
            if label != other_label:
                problems.append(
                    Problem(path, line, "Label", f"conflicting label for the pair on line {other}")
                )
            else:
                problems.append(Problem(path, line, "-", f"duplicate of line {other}"))
        else:
            first_line[values] = (line, label)
    return problems


def validate_file(
    path: Path | str, require_label: bool = True, require_clone_id: bool = False
) -> list[Problem]:
    """Every problem in a pair table; an empty list means the file is valid."""
    try:
        frame = read_table(path)
    except _TableError as exc:
        return [exc.problem]
    header = check_columns(frame, str(path), require_label)
    if header:
        return header
    if frame.empty:
        return [Problem(str(path), 2, "-", "no data rows")]
    return check_rows(frame, str(path), require_label, require_clone_id)


def load_pairs(path: Path | str, require_label: bool = True, require_clone_id: bool = False) -> pd.DataFrame:
    """Read and validate a labelled pair table; raise :class:`InputError` naming the first problem."""
    problems = validate_file(path, require_label, require_clone_id)
    if problems:
        more = (
            f" (and {len(problems) - 1} more; run `tcr-pipeline validate {path}`)"
            if len(problems) > 1
            else ""
        )
        raise InputError(f"{problems[0]}{more}")
    frame = read_table(path).reset_index(drop=True)
    for column in FEATURE_COLUMNS:
        frame[column] = frame[column].str.strip()
    if "Label" in frame.columns:
        frame["Label"] = frame["Label"].str.strip().astype(int)
    if "clone_id" in frame.columns:
        frame["clone_id"] = pd.to_numeric(frame["clone_id"], errors="coerce")  # empty → NaN
    return frame


def tcr_keys(frame: pd.DataFrame) -> pd.Series:
    """A string key per row identifying its αβ TCR (both CDR3s and all four genes)."""
    key = frame[TCR_COLUMNS[0]].astype(str)
    for column in TCR_COLUMNS[1:]:  # column-wise: a row-wise join took seconds per 100k rows
        key = key + "|" + frame[column].astype(str)
    return key.rename(None)
