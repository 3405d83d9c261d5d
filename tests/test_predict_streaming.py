"""`predict` streams: the input is read, scored and written a chunk at a time
($TCR_PREDICT_CHUNK_ROWS, tiny here so that a small file spans many chunks).

What streaming must not change: the output (byte for byte that of scoring the whole table with
``predict_frame``), the summary line, the line numbers in error messages (quoted values spanning
lines included) and atomicity (a failure or an interrupt in a later chunk leaves the target as
it was and no temporary file).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from tcr_pipeline import bundle as bundle_module
from tcr_pipeline.bundle import CHUNK_ROWS_ENV, load_bundle, predict_frame
from tcr_pipeline.data import read_table, read_table_chunks
from tcr_pipeline.store.querylog import read_queries

if TYPE_CHECKING:
    from cli_fixtures import CliResult

    RunCli = Callable[..., CliResult]

CHUNK = 50  # rows per chunk in these tests: the inputs below span 10+ chunks


def _mixed_input(small_csv: Path, path: Path) -> Path:
    """The small CSV's 560 rows with a note column, some values spanning lines, invalid rows in
    late chunks and blank lines: everything whose line numbers streaming must keep."""
    frame = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    frame["note"] = ""
    frame.loc[3, "note"] = "two\nlines"
    frame.loc[400, "note"] = "three\nmore\nlines"
    frame.loc[420, "CDR3_beta"] = "CASS1X"  # not amino acids
    frame.loc[520, "V_alpha"] = "XYZ"  # not a gene name
    frame.loc[555, "Epitope"] = ""
    text = frame.to_csv(index=False)
    lines = text.split("\n")
    lines.insert(300, "")  # a blank line: skipped, but counted
    path.write_text("\n".join(lines))
    return path


def _temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_chunks_keep_read_tables_lines(tmp_path: Path, small_csv: Path) -> None:
    source = _mixed_input(small_csv, tmp_path / "pairs.csv")
    whole = read_table(source)
    chunks = list(read_table_chunks(source, chunk_rows=CHUNK))
    assert len(chunks) == -(-len(whole) // CHUNK)
    assert all(len(c) == CHUNK for c in chunks[:-1])
    pd.testing.assert_frame_equal(pd.concat(chunks), whole)
    assert whole.index[-1] > len(whole) + 1  # the quoted newlines and the blank line moved it down


def test_streamed_output_equals_in_memory(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_bundle: Path, small_csv: Path
) -> None:
    source = _mixed_input(small_csv, tmp_path / "pairs.csv")
    expected = predict_frame(load_bundle(tiny_bundle), read_table(source), str(source))
    monkeypatch.setenv(CHUNK_ROWS_ENV, str(CHUNK))
    output = tmp_path / "scored.csv"
    result = run_cli("predict", source, "-o", output, "--model", tiny_bundle)
    assert result.code == 0, result.output
    assert output.read_text() == expected.to_csv(index=False)
    invalid = int((expected["error"] != "").sum())
    assert invalid == 3
    assert f"scored {len(expected) - invalid} of {len(expected)} rows" in result.stdout
    assert f"{invalid} invalid row(s)" in result.stderr
    assert _temporaries(tmp_path) == []


def test_streamed_log_is_one_request_of_every_row(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_bundle: Path, small_csv: Path
) -> None:
    source = _mixed_input(small_csv, tmp_path / "pairs.csv")
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv(CHUNK_ROWS_ENV, str(CHUNK))
    monkeypatch.delenv("TCR_QUERY_LOG", raising=False)
    result = run_cli(
        "predict", source, "-o", tmp_path / "s.csv", "--model", tiny_bundle, "--store", store, "--log"
    )
    assert result.code == 0, result.output
    assert "logged 560 rows" in result.stdout
    queries = read_queries(store, limit=1000)
    assert len(queries) == 560
    assert len({q.request for q in queries}) == 1
    assert sorted(q.row for q in queries) == list(range(2, 562))
    by_row = {q.row: q for q in queries}
    assert by_row[2 + 420].error.startswith("CDR3_beta:")
    assert by_row[2 + 400].input["note"] == "three\nmore\nlines"
    assert sum(q.valid for q in queries) == 557


def test_bad_structure_in_a_later_chunk_names_its_line(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_bundle: Path, small_csv: Path
) -> None:
    """A row with too many fields after 10 chunks (and values spanning lines before it): one
    error line with the row's line as an editor counts it, exit 2, the old output untouched."""
    source = _mixed_input(small_csv, tmp_path / "pairs.csv")
    lines = source.read_text().split("\n")
    bad_line = 540
    assert lines[bad_line - 1].count(",") == 10  # a plain row, not inside a quoted value
    lines[bad_line - 1] += ",surplus"
    source.write_text("\n".join(lines))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "scored.csv"
    output.write_text("the previous output\n")
    monkeypatch.setenv(CHUNK_ROWS_ENV, str(CHUNK))
    result = run_cli("predict", source, "-o", output, "--model", tiny_bundle)
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    error = result.stderr.strip().splitlines()
    assert error == [
        f"error: {source}:{bad_line}:-: not a well-formed CSV (line {bad_line} has 12 fields, the header 11)"
    ]
    assert output.read_text() == "the previous output\n"
    assert os.listdir(out_dir) == ["scored.csv"]


def test_bad_header_writes_nothing(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_bundle: Path, small_csv: Path
) -> None:
    source = tmp_path / "pairs.csv"
    source.write_text(small_csv.read_text().replace("CDR3_beta", "CDR3_b", 1))
    monkeypatch.setenv(CHUNK_ROWS_ENV, str(CHUNK))
    output = tmp_path / "new" / "scored.csv"
    result = run_cli("predict", source, "-o", output, "--model", tiny_bundle)
    assert result.code == 2, result.output
    assert result.stderr.strip().splitlines() == [f"error: {source}:1:CDR3_beta: missing required column"]
    assert not output.parent.exists()


def test_interrupt_in_a_later_chunk_leaves_the_target(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_bundle: Path, small_csv: Path
) -> None:
    """Ctrl-C while the 4th chunk is scored: exit 130, the target as it was, no temporary file."""
    source = _mixed_input(small_csv, tmp_path / "pairs.csv")
    output = tmp_path / "scored.csv"
    output.write_text("the previous output\n")
    real = bundle_module.predict_frame
    calls = []

    def interrupted(*args: object, **kwargs: object) -> pd.DataFrame:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bundle_module, "predict_frame", interrupted)
    monkeypatch.setenv(CHUNK_ROWS_ENV, str(CHUNK))
    result = run_cli("predict", source, "-o", output, "--model", tiny_bundle)
    assert result.code == 130, result.output
    assert len(calls) == 4
    assert output.read_text() == "the previous output\n"
    assert _temporaries(tmp_path) == []


def test_sigint_to_a_real_process_leaves_the_target(
    tmp_path: Path, tiny_bundle: Path, small_csv: Path
) -> None:
    """A real ``tcr-pipeline predict`` process gets SIGINT once its temporary output exists."""
    from cli_fixtures import cli_command, cli_env

    frame = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    source = tmp_path / "pairs.csv"
    pd.concat([frame] * 40).to_csv(source, index=False)  # 22,400 rows in 224 chunks
    output = tmp_path / "scored.csv"
    output.write_text("the previous output\n")
    env = {**cli_env(), CHUNK_ROWS_ENV: "100"}
    process = subprocess.Popen(
        cli_command("predict", source, "-o", output, "--model", tiny_bundle),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _temporaries(tmp_path) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert _temporaries(tmp_path), "the temporary output never appeared"
        assert process.poll() is None, "predict finished before it could be interrupted"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert output.read_text() == "the previous output\n", stderr
    assert _temporaries(tmp_path) == [], stderr


def test_chunk_rows_must_be_a_number(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_bundle: Path, small_csv: Path
) -> None:
    monkeypatch.setenv(CHUNK_ROWS_ENV, "lots")
    result = run_cli("predict", small_csv, "-o", tmp_path / "s.csv", "--model", tiny_bundle)
    assert result.code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: ${CHUNK_ROWS_ENV}: expected a whole number of rows of at least 1, got 'lots'"
    ]
