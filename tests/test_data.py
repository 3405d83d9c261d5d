"""Validation of pair tables: every problem as ``file:row:column: message`` (row = file line).

The table of bad inputs (one case per kind of problem, with comments) is ``BAD_INPUTS`` in
bad_inputs.py; it is shared with test_cli.py, which feeds the same files to the command line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bad_inputs import BAD_INPUTS, BadInput, case_id

from tcr_pipeline.data import COLUMNS, Problem, load_pairs, tcr_keys, validate_file
from tcr_pipeline.errors import InputError


def test_shipped_file_is_valid(shipped_csv: Path) -> None:
    assert validate_file(shipped_csv) == []


def test_shipped_file_loads_typed(shipped_frame: pd.DataFrame) -> None:
    assert list(shipped_frame.columns) == list(COLUMNS)
    assert len(shipped_frame) == 8932
    assert shipped_frame["Label"].dtype.kind == "i"
    assert int(shipped_frame["Label"].sum()) == 638
    assert shipped_frame["clone_id"].dtype.kind == "f"
    # 638 TCRs, each paired with the 14 epitopes, exactly one of them binding
    per_tcr = shipped_frame.groupby(tcr_keys(shipped_frame))["Label"].agg(["size", "sum"])
    assert len(per_tcr) == 638
    assert (per_tcr["size"] == 14).all()
    assert (per_tcr["sum"] == 1).all()


@pytest.mark.parametrize("bad_input", BAD_INPUTS, ids=case_id)
def test_bad_input_is_reported_where_it_is(bad_input: BadInput, tmp_path: Path) -> None:
    path = bad_input.make(tmp_path)
    problems = validate_file(path)
    assert problems, f"{bad_input.id}: no problem reported"
    first = str(problems[0])
    assert first.startswith(bad_input.prefix(path)), first
    assert bad_input.message in first
    # every problem of a one-defect file is on the defective line
    assert {str(p.row) if p.row > 0 else "-" for p in problems} == {bad_input.row}


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("CDR3_alpha", "CAVX"),
        ("CDR3_beta", "CASS*F"),
        ("Epitope", "GILG FVFTL"),
        ("V_alpha", "TRBV19*01"),
        ("J_alpha", "TRAV8-1*01"),
        ("V_beta", ""),
        ("MHC", " "),
        ("Label", "yes"),
    ],
)
def test_each_bad_value_of_many_rows_is_reported(
    shipped_csv: Path, tmp_path: Path, column: str, value: str
) -> None:
    """A problem deep in a long file names its exact line (line 1000 = the 999th data row)."""
    raw = pd.read_csv(shipped_csv, dtype=str, keep_default_na=False).head(1500)
    raw.loc[998, column] = value
    path = tmp_path / "pairs.csv"
    raw.to_csv(path, index=False)
    problems = validate_file(path)
    assert [(p.row, p.column) for p in problems] == [(1000, column)]


def test_all_problems_are_reported(tmp_path: Path, shipped_csv: Path) -> None:
    raw = pd.read_csv(shipped_csv, dtype=str, keep_default_na=False).head(10)
    raw.loc[0, "CDR3_beta"] = "CASS1F"
    raw.loc[4, "Label"] = "2"
    raw.loc[4, "V_alpha"] = ""
    path = tmp_path / "pairs.csv"
    raw.to_csv(path, index=False)
    problems = validate_file(path)
    assert [(p.row, p.column) for p in problems] == [(2, "CDR3_beta"), (6, "V_alpha"), (6, "Label")]
    with pytest.raises(InputError, match=r":2:CDR3_beta: .*\(and 2 more; run `tcr-pipeline validate"):
        load_pairs(path)


def test_label_not_required_for_unlabelled_tables(tmp_path: Path, shipped_csv: Path) -> None:
    raw = pd.read_csv(shipped_csv, dtype=str, keep_default_na=False).head(5).drop(columns="Label")
    path = tmp_path / "pairs.csv"
    raw.to_csv(path, index=False)
    assert [(p.row, p.column) for p in validate_file(path)] == [(1, "Label")]
    assert validate_file(path, require_label=False) == []


def _five_rows_one_without_clone_id(directory: Path, shipped_csv: Path) -> Path:
    """The shipped file's first five rows, the third (file line 4) with an empty clone_id."""
    raw = pd.read_csv(shipped_csv, dtype=str, keep_default_na=False).head(5)
    raw.loc[2, "clone_id"] = ""
    path = directory / "pairs.csv"
    raw.to_csv(path, index=False)
    return path


def test_clone_id_required_only_when_used(tmp_path: Path, shipped_csv: Path) -> None:
    path = _five_rows_one_without_clone_id(tmp_path, shipped_csv)
    assert validate_file(path) == []
    assert [(p.row, p.column) for p in validate_file(path, require_clone_id=True)] == [(4, "clone_id")]
    with pytest.raises(InputError, match=r":4:clone_id: empty value"):
        load_pairs(path, require_clone_id=True)


def test_empty_clone_id_loads_as_nan(tmp_path: Path, shipped_csv: Path) -> None:
    path = _five_rows_one_without_clone_id(tmp_path, shipped_csv)
    assert validate_file(path) == []
    frame = load_pairs(path)
    assert np.isnan(frame.loc[2, "clone_id"])
    assert frame["clone_id"].notna().sum() == 4


def test_load_pairs_strips_whitespace(tmp_path: Path, shipped_csv: Path) -> None:
    raw = pd.read_csv(shipped_csv, dtype=str, keep_default_na=False).head(3)
    padded = raw.copy()
    padded["CDR3_beta"] = " " + padded["CDR3_beta"] + " "
    padded["Label"] = padded["Label"] + " "
    path = tmp_path / "pairs.csv"
    padded.to_csv(path, index=False)
    frame = load_pairs(path)
    assert frame["CDR3_beta"].tolist() == raw["CDR3_beta"].tolist()
    assert frame["Label"].tolist() == raw["Label"].astype(int).tolist()


def test_problem_prints_a_dash_for_no_row() -> None:
    assert str(Problem("f.csv", 0, "-", "no such file")) == "f.csv:-:-: no such file"
    assert str(Problem("f.csv", 12, "Label", "bad")) == "f.csv:12:Label: bad"


def test_row_numbers_count_blank_lines(tmp_path: Path, shipped_csv: Path) -> None:
    header, first, second, third = shipped_csv.read_text().splitlines()[:4]
    fields = second.split(",")
    fields[COLUMNS.index("CDR3_beta")] = "CASSX1F"
    bad = ",".join(fields)
    path = tmp_path / "pairs.csv"
    path.write_text("\n".join([header, first, "", bad, third]) + "\n")  # the bad row is line 4
    problems = validate_file(path)
    assert [(p.row, p.column) for p in problems] == [(4, "CDR3_beta")]


# ---- CSV structure: surplus fields, repeated columns, quoted line breaks -----------------------


def _shipped_lines(shipped_csv: Path, count: int = 6) -> list[str]:
    return shipped_csv.read_text().splitlines()[:count]


def test_surplus_fields_in_the_first_row_are_one_problem(tmp_path: Path, shipped_csv: Path) -> None:
    """pandas would take the two surplus leading fields as an index and shift every column."""
    header, *rows = _shipped_lines(shipped_csv)
    path = tmp_path / "twelve.csv"
    path.write_text("\n".join([header, rows[0] + ",x,y", *rows[1:]]) + "\n")
    assert [str(p) for p in validate_file(path)] == [
        f"{path}:2:-: not a well-formed CSV (line 2 has 12 fields, the header 10)"
    ]


@pytest.mark.parametrize("column", ["Label", "Epitope", "CDR3_beta"])
def test_a_column_named_twice_is_refused(tmp_path: Path, shipped_csv: Path, column: str) -> None:
    header, *rows = _shipped_lines(shipped_csv)
    second = COLUMNS.index(column) + 1
    path = tmp_path / "twice.csv"
    path.write_text(
        "\n".join([f"{header},{column}", *(f"{row},{row.split(',')[second - 1]}" for row in rows)])
    )
    assert [str(p) for p in validate_file(path)] == [
        f"{path}:1:{column}: column named twice (columns {second} and 11)"
    ]


def test_rows_after_a_quoted_line_break_keep_their_file_line(tmp_path: Path, shipped_csv: Path) -> None:
    header, *rows = _shipped_lines(shipped_csv)
    bad = rows[2].replace(rows[2].split(",")[1], "CASSX1F", 1)  # CDR3_beta
    path = tmp_path / "note.csv"
    # line 2-3: one row whose note spans two lines; line 4: a row; line 5: the bad row
    path.write_text(f'{header},note\n{rows[0]},"two\nlines"\n{rows[1]},\n{bad},\n')
    [problem] = validate_file(path)
    assert (problem.row, problem.column) == (5, "CDR3_beta")


def test_a_header_without_rows_is_refused_everywhere(tmp_path: Path, shipped_csv: Path) -> None:
    from tcr_pipeline.data import read_table

    path = tmp_path / "header.csv"
    path.write_text(_shipped_lines(shipped_csv)[0] + "\n\n")
    with pytest.raises(InputError, match=r"header\.csv:2:-: no data rows"):
        read_table(path)  # what predict reads
