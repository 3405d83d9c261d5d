"""Bad input files: one table for ``validate_file`` (test_data.py) and for `validate`,
`prepare --data` and `predict` (test_cli.py), one case per kind of problem.

Each case is made from the first five rows of the shipped file, which are among the rows of the
``small_csv`` fixture (data_fixtures.py), so an encoder fitted there represents them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from data_fixtures import SHIPPED_CSV

from tcr_pipeline.data import COLUMNS

HEADER, *ROWS = SHIPPED_CSV.read_text().splitlines()[:6]  # header = line 1, rows = lines 2..6
assert HEADER.split(",") == list(COLUMNS)


def _lines() -> list[str]:
    return [HEADER, *ROWS]


def set_field(line: str, column: str, value: str) -> str:
    """A CSV line of the pair table with the value of ``column`` replaced."""
    fields = line.split(",")
    fields[COLUMNS.index(column)] = value
    return ",".join(fields)


def _with_value(line_number: int, column: str, value: str) -> list[str]:
    """The base file with one value replaced on file line ``line_number`` (1 = header)."""
    lines = _lines()
    lines[line_number - 1] = set_field(lines[line_number - 1], column, value)
    return lines


def _without_column(column: str) -> list[str]:
    drop = COLUMNS.index(column)
    return [",".join(f for i, f in enumerate(line.split(",")) if i != drop) for line in _lines()]


def _flip_label(line: str) -> str:
    return set_field(line, "Label", "0" if line.split(",")[-1] == "1" else "1")


def _text(lines: list[str]) -> Callable[[Path], Path]:
    def make(directory: Path) -> Path:
        path = directory / "pairs.csv"
        path.write_text("\n".join(lines) + "\n")
        return path

    return make


def _bytes(content: bytes) -> Callable[[Path], Path]:
    def make(directory: Path) -> Path:
        path = directory / "pairs.csv"
        path.write_bytes(content)
        return path

    return make


def _missing(directory: Path) -> Path:
    return directory / "absent.csv"


def _directory(directory: Path) -> Path:
    path = directory / "pairs.csv"
    path.mkdir()
    return path


@dataclass(frozen=True)
class BadInput:
    """One bad input file and the first problem it must be reported with.

    ``row`` is the file line ("-" when there is none), ``column`` the column ("-" for the whole
    row or file). ``file_level``: the file is rejected as a whole, so `predict` must refuse it
    too (exit 2). Otherwise the problem is in one row: `predict` keeps going and reports
    ``predict_error`` in that row's error column, or scores the row when it is None (predict
    needs no label, does not look for duplicates, and ignores clone_id when the model does not use it).
    """

    id: str
    make: Callable[[Path], Path]
    row: str
    column: str
    message: str
    file_level: bool = False
    predict_error: str | None = None

    def prefix(self, path: Path) -> str:
        return f"{path}:{self.row}:{self.column}: "


def _bad_value(
    id: str, line: int, column: str, value: str, message: str, predict_error: str | None = None
) -> BadInput:
    """The base file with ``value`` in ``column`` on file line ``line``: a problem in that one row."""
    make = _text(_with_value(line, column, value))
    return BadInput(id, make, str(line), column, message, predict_error=predict_error)


BAD_INPUTS = [
    # ---- the file as a whole ------------------------------------------------------------------
    # a path that does not exist: no row, no column
    BadInput("missing-file", _missing, "-", "-", "no such file", file_level=True),
    # zero bytes
    BadInput("empty-file", _bytes(b""), "1", "-", "file is empty", file_level=True),
    # only blank lines: pandas sees no columns at all
    BadInput("blank-lines-only", _bytes(b"\n\n\n"), "1", "-", "file is empty", file_level=True),
    # a directory where a CSV should be
    BadInput("directory", _directory, "-", "-", "is a directory", file_level=True),
    # binary junk that is not UTF-8
    BadInput("binary-not-utf8", _bytes(bytes(range(256)) * 16), "1", "-", "not UTF-8 text", file_level=True),
    # binary junk that is UTF-8 but holds NUL bytes (e.g. a gzip of ASCII, a database page)
    BadInput(
        "binary-nul-bytes", _bytes(b"PK\x03\x04\x00\x00\x08\x00" * 64), "1", "-", "binary", file_level=True
    ),
    # the header lacks a required column
    BadInput(
        "missing-column-epitope",
        _text(_without_column("Epitope")),
        "1",
        "Epitope",
        "missing required column",
        file_level=True,
    ),
    # a header and no rows
    BadInput("header-only", _text([HEADER]), "2", "-", "no data rows"),
    # a row with one field too many
    BadInput(
        "ragged-row-too-many-fields",
        _text([*_lines()[:3], _lines()[3] + ",extra", *_lines()[4:]]),
        "4",
        "-",
        "not a well-formed CSV (line 4 has 11 fields, the header 10)",
        file_level=True,
    ),
    # ---- one row -------------------------------------------------------------------------------
    # a row with two fields too few: pandas pads it with empty values (MHC first, then Label)
    BadInput(
        "ragged-row-too-few-fields",
        _text([*_lines()[:3], ",".join(_lines()[3].split(",")[:-2]), *_lines()[4:]]),
        "4",
        "MHC",
        "empty value",
        predict_error="MHC: empty value",
    ),
    # a digit and an X in a CDR3β: bad characters listed sorted
    _bad_value(
        "non-amino-acid-cdr3-beta",
        4,
        "CDR3_beta",
        "CASSX1F",
        "not an amino-acid sequence (bad characters: '1X')",
        "CDR3_beta:",
    ),
    # lower case is not an amino-acid code here
    _bad_value("lower-case-epitope", 3, "Epitope", "gilgfvftl", "not an amino-acid sequence", "Epitope:"),
    # longer than any TCR or peptide (MAX_SEQUENCE_LENGTH = 50)
    _bad_value(
        "sequence-too-long",
        5,
        "CDR3_alpha",
        "C" + "A" * 60,
        "sequence of 61 residues exceeds 50",
        "CDR3_alpha: sequence of 61 residues exceeds 50",
    ),
    # a label that is neither 0 nor 1
    _bad_value("label-two", 4, "Label", "2", "label must be 0 or 1, got '2'"),
    # an empty label where labels are required
    _bad_value("label-empty", 4, "Label", "", "label must be 0 or 1"),
    # an empty sequence
    _bad_value("empty-cdr3-alpha", 4, "CDR3_alpha", "", "empty value", "CDR3_alpha: empty value"),
    # an empty MHC
    _bad_value("empty-mhc", 6, "MHC", "", "empty value", "MHC: empty value"),
    # a gene name that is not a gene name
    _bad_value(
        "bad-gene-name",
        4,
        "V_beta",
        "banana",
        "is not a TRBV gene name",
        "V_beta: 'banana' is not a TRBV gene name",
    ),
    # an α gene in the β column
    _bad_value(
        "alpha-gene-in-beta-column",
        3,
        "J_beta",
        "TRAJ44*01",
        "'TRAJ44*01' is not a TRBJ gene name",
        "J_beta: 'TRAJ44*01' is not a TRBJ gene name",
    ),
    # a clone_id that is not a number
    _bad_value("clone-id-not-a-number", 4, "clone_id", "abc", "'abc' is not a number"),
    # the row of line 3 again at the end (line 7)
    BadInput("duplicate-row", _text([*_lines(), _lines()[2]]), "7", "-", "duplicate of line 3"),
    # the pair of line 3 again with the other label
    BadInput(
        "conflicting-label",
        _text([*_lines(), _flip_label(_lines()[2])]),
        "7",
        "Label",
        "conflicting label for the pair on line 3",
    ),
]
FILE_LEVEL_BAD_INPUTS = [b for b in BAD_INPUTS if b.file_level]  # what a whole-file check rejects
ROW_LEVEL_BAD_INPUTS = [b for b in BAD_INPUTS if not b.file_level and b.id != "header-only"]  # one row


def case_id(case: BadInput) -> str:
    """The test id of a case (``@pytest.mark.parametrize(..., ids=case_id)``)."""
    return case.id
