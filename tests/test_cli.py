"""The command line: bad input exits with status 2 and one line naming file, row and column,
never a traceback; `predict` never leaves a partial output; every command has --help.

Most tests call ``tcr_cli.main.main`` in-process (see ``run_cli`` in cli_fixtures.py: an
exception escaping it fails the test, as it would print a traceback); one test runs real
``python -m tcr_cli`` processes to check the exit status and streams a shell sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
import typer
from bad_inputs import BAD_INPUTS, FILE_LEVEL_BAD_INPUTS, ROW_LEVEL_BAD_INPUTS, BadInput, case_id

import tcr_cli.main as cli
from tcr_pipeline.bundle import load_bundle, predict_file
from tcr_pipeline.config import PrepareParams
from tcr_pipeline.files import sha256_file
from tcr_pipeline.prepare import prepare_dataset

if TYPE_CHECKING:
    from cli_fixtures import CliResult
    from cli_process_fixtures import FailingRuns

    RunCli = Callable[..., CliResult]

COMMANDS = ("validate", "prepare", "train", "evaluate", "predict", "show")  # the ones tested here
ALL_COMMANDS = sorted(typer.main.get_command(cli.app).commands)  # --help must work for each


def _inputs(tmp_path: Path) -> Path:
    directory = tmp_path / "inputs"
    directory.mkdir()
    return directory


def _assert_one_error_line(result: CliResult, bad_input: BadInput, path: Path) -> None:
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {bad_input.prefix(path)}"), lines[0]
    assert bad_input.message in lines[0]


# ---- validate -----------------------------------------------------------------------------------


def test_validate_accepts_the_shipped_file(run_cli: RunCli, shipped_csv: Path) -> None:
    result = run_cli("validate", shipped_csv)
    assert result.code == 0, result.output
    assert result.stdout == ""
    assert "valid" in result.stderr


@pytest.mark.parametrize("bad_input", BAD_INPUTS, ids=case_id)
def test_validate_reports_bad_input(run_cli: RunCli, tmp_path: Path, bad_input: BadInput) -> None:
    path = bad_input.make(_inputs(tmp_path))
    result = run_cli("validate", path)
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    # every problem on its own stdout line, the first one being the expected one
    first = result.stdout.splitlines()[0]
    assert first.startswith(bad_input.prefix(path)), first
    assert bad_input.message in first
    assert "problem(s) in" in result.stderr


def test_synth_writes_a_valid_table_and_refuses_bad_options(
    run_cli: RunCli, tmp_path: Path, shipped_csv: Path
) -> None:
    out = tmp_path / "synthetic.csv"
    result = run_cli("synth", "--rows", 3000, "--out", out, "--seed", 3, "--source", shipped_csv)
    assert result.code == 0, result.output
    assert run_cli("validate", out).code == 0
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(frame) == 3000
    assert frame["Epitope"].nunique() > 14
    bad_options = (
        ("--rows", 0), ("--rows", 10, "--signal", 2), ("--rows", 10, "--seed", -1),
        ("--rows", 10, "--epitopes", 100_000),  # would need GBs per chunk: refused, not attempted
        ("--rows", 10, "--epitopes", 10, "--negatives", 10),  # more negatives than other epitopes
    )  # fmt: skip
    for bad in bad_options:
        refused = run_cli("synth", *bad, "--out", tmp_path / "bad.csv", "--source", shipped_csv)
        assert refused.code == 2, refused.output
        assert "Traceback" not in refused.output
        assert not (tmp_path / "bad.csv").exists()
    assert run_cli("synth", "--rows", 10, "--out", shipped_csv, "--source", shipped_csv).code == 2


def test_validate_without_label(run_cli: RunCli, tmp_path: Path, shipped_csv: Path) -> None:
    path = _inputs(tmp_path) / "unlabelled.csv"
    pd.read_csv(shipped_csv, dtype=str, keep_default_na=False).head(20).drop(columns="Label").to_csv(
        path, index=False
    )
    assert run_cli("validate", path).code == 2
    assert run_cli("validate", "--no-label", path).code == 0


def test_validate_summary_is_one_line_for_long_paths(run_cli: RunCli, tmp_path: Path) -> None:
    directory = tmp_path / ("a_directory_with_a_rather_long_name_" * 2)
    directory.mkdir()
    path = directory / "pairs.csv"
    path.write_text("")
    result = run_cli("validate", path)
    assert result.code == 2
    assert result.stderr.strip().splitlines() == [f"1 problem(s) in {path}"]


# ---- prepare ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_input", BAD_INPUTS, ids=case_id)
def test_prepare_rejects_bad_input(run_cli: RunCli, tmp_path: Path, bad_input: BadInput) -> None:
    path = bad_input.make(_inputs(tmp_path))
    result = run_cli("prepare", "--data", path, "--out", tmp_path / "prepared")
    _assert_one_error_line(result, bad_input, path)
    assert result.stdout == ""
    assert not (tmp_path / "prepared").exists()


def test_prepare_accepts_an_empty_clone_id(run_cli: RunCli, tmp_path: Path, small_csv: Path) -> None:
    raw = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    raw.loc[3, "clone_id"] = ""
    path = _inputs(tmp_path) / "pairs.csv"
    raw.to_csv(path, index=False)
    assert run_cli("validate", path).code == 0
    result = run_cli("prepare", "--data", path, "--out", tmp_path / "prepared")
    assert result.code == 0, result.output


def test_prepare_rejects_bad_parameters(run_cli: RunCli, tmp_path: Path, small_csv: Path) -> None:
    result = run_cli("prepare", "--data", small_csv, "--encoding", "morse", "--out", tmp_path / "p")
    assert result.code == 2, result.output
    assert result.stderr.startswith("error: params: prepare.encoding: ")
    assert "Traceback" not in result.output

    result = run_cli("prepare", "--params", tmp_path / "nope.yaml", "--data", small_csv)
    assert result.code == 2, result.output
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.yaml'}: no such params file"

    bad_yaml = tmp_path / "params.yaml"  # picked up from the working directory
    bad_yaml.write_text("prepare:\n  split: sideways\n")
    result = run_cli("prepare", "--data", small_csv)
    assert result.code == 2, result.output
    assert result.stderr.startswith("error: params.yaml: prepare.split: ")
    assert not (tmp_path / "data" / "prepared").exists()


# ---- train, evaluate, show ----------------------------------------------------------------------


def test_train_needs_a_prepared_directory(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("train", "--prepared", tmp_path / "nothing", "--out", tmp_path / "model")
    assert result.code == 2, result.output
    assert "not a prepared data directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "model").exists()


def test_evaluate_refuses_data_the_model_was_not_trained_on(
    run_cli: RunCli, tmp_path: Path, small_csv: Path, tiny_bundle: Path
) -> None:
    other = _inputs(tmp_path) / "other.csv"
    pd.read_csv(small_csv, dtype=str, keep_default_na=False).head(280).to_csv(other, index=False)
    prepare_dataset(other, PrepareParams(), tmp_path / "prepared")
    result = run_cli("evaluate", "--model", tiny_bundle, "--prepared", tmp_path / "prepared")
    assert result.code == 2, result.output
    assert "but the model was trained on" in result.stderr
    assert "Traceback" not in result.output


def test_show_prints_the_card(run_cli: RunCli, tmp_path: Path, tiny_bundle: Path, small_csv: Path) -> None:
    result = run_cli("show", tiny_bundle)
    assert result.code == 0, result.output
    card = json.loads(result.stdout)
    assert card["data_sha256"] == sha256_file(small_csv)
    assert card["model"]["kind"] == "small"

    result = run_cli("show", tmp_path)
    assert result.code == 2
    assert result.stderr.strip() == f"error: {tmp_path}: not a model bundle (no card.json)"


# ---- predict ------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_level_bad_input", FILE_LEVEL_BAD_INPUTS, ids=case_id)
def test_predict_refuses_unreadable_input(
    run_cli: RunCli, tmp_path: Path, tiny_bundle: Path, file_level_bad_input: BadInput
) -> None:
    path = file_level_bad_input.make(_inputs(tmp_path))
    output = tmp_path / "out" / "scores.csv"
    result = run_cli("predict", path, "--model", tiny_bundle, "--output", output)
    _assert_one_error_line(result, file_level_bad_input, path)
    assert not output.exists()
    assert not output.parent.exists() or list(output.parent.iterdir()) == []  # no temporary file either


@pytest.mark.parametrize("row_level_bad_input", ROW_LEVEL_BAD_INPUTS, ids=case_id)
def test_predict_reports_bad_rows_and_scores_the_others(
    run_cli: RunCli, tmp_path: Path, tiny_bundle: Path, row_level_bad_input: BadInput
) -> None:
    path = row_level_bad_input.make(_inputs(tmp_path))
    output = tmp_path / "scores.csv"
    result = run_cli("predict", path, "--model", tiny_bundle, "--output", output)
    assert result.code == 0, result.output
    assert "Traceback" not in result.output
    scored = pd.read_csv(output, dtype=str, keep_default_na=False)
    source = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(scored.columns) == [*source.columns, "score", "prediction", "warning", "error"]
    assert len(scored) == len(source)
    bad = int(row_level_bad_input.row) - 2
    for i, row in scored.iterrows():
        if i == bad and row_level_bad_input.predict_error is not None:
            assert row_level_bad_input.predict_error in row["error"]
            assert row["score"] == ""
            assert row["prediction"] == ""
        else:
            assert row["error"] == "", row["error"]
            assert 0.0 <= float(row["score"]) <= 1.0
            assert row["prediction"] == str(int(float(row["score"]) >= 0.5))
    invalid = int((scored["error"] != "").sum())
    assert (f"{invalid} invalid row(s)" in result.stderr) == (invalid > 0)


def test_predict_leaves_an_existing_output_alone_when_it_fails(
    run_cli: RunCli, tmp_path: Path, tiny_bundle: Path
) -> None:
    path = _inputs(tmp_path) / "pairs.csv"
    path.write_text("CDR3_alpha,CDR3_beta\nCAVF,CASSF\n")  # most columns missing
    output = tmp_path / "scores.csv"
    output.write_text("previous results\n")
    result = run_cli("predict", path, "--model", tiny_bundle, "--output", output)
    assert result.code == 2
    assert result.stderr.startswith(f"error: {path}:1:V_alpha: missing required column")
    assert output.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "scores.csv"]


def test_predict_without_a_model(run_cli: RunCli, tmp_path: Path, small_csv: Path) -> None:
    output = tmp_path / "scores.csv"
    result = run_cli("predict", small_csv, "--model", tmp_path / "no-model", "--output", output)
    assert result.code == 2
    assert "not a model bundle" in result.stderr
    assert not output.exists()


def test_interrupted_write_leaves_no_partial_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_bundle: Path, small_csv: Path
) -> None:
    """A crash half-way through writing (disk full, killed) leaves neither output nor temporary."""
    real_to_csv = pd.DataFrame.to_csv

    def half_then_fail(self: pd.DataFrame, path: Path, **kwargs: object) -> None:
        real_to_csv(self.head(len(self) // 2), path, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    output = tmp_path / "out" / "scores.csv"
    with pytest.raises(OSError, match="No space left"):
        predict_file(load_bundle(tiny_bundle), small_csv, output)
    assert list(output.parent.iterdir()) == []


# ---- help -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_help(run_cli: RunCli, command: str) -> None:
    result = run_cli(command, "--help")
    assert result.code == 0, result.output
    usage = next(line for line in result.stdout.splitlines() if "Usage:" in line)
    assert f" {command} " in usage, usage
    assert "--help" in result.stdout


def test_top_level_help_lists_every_command(run_cli: RunCli) -> None:
    assert set(COMMANDS) <= set(ALL_COMMANDS)
    result = run_cli("--help")
    assert result.code == 0, result.output
    for command in ALL_COMMANDS:
        assert f" {command} " in result.stdout


# ---- real processes ---------------------------------------------------------------------------


def test_real_processes_exit_2_with_one_line_and_no_traceback(failing_cli_processes: FailingRuns) -> None:
    """What a shell sees: status 2, one line on stderr, no traceback, no output.

    `prepare` and `predict` get their status 2 from ``main()`` turning an InputError into one
    line (`validate` raises typer.Exit(2) itself, which the in-process tests cover exactly).
    The processes start with the session (see cli_process_fixtures.run_failing_processes).
    """
    runs = failing_cli_processes
    for name, result in runs.results.items():
        assert result.code == 2, (name, result.output)
        assert "Traceback" not in result.output, name
        assert result.stdout == "", name
    problem = f"{runs.bad_row}:3:CDR3_beta: not an amino-acid sequence (bad characters: '1X')"
    assert runs.results["prepare"].stderr.splitlines() == [f"error: {problem}"]
    assert not (runs.directory / "prepared").exists()
    no_epitope = f"error: {runs.no_epitope}:1:Epitope: missing required column"
    assert runs.results["predict"].stderr.splitlines() == [no_epitope]
    assert not runs.output.exists()


def test_a_prefect_server_that_does_not_start_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, run_cli: Callable[..., CliResult]
) -> None:
    """Prefect's own error on a server that did not come up: one line, not a traceback."""

    def no_server() -> None:
        raise RuntimeError(
            "Timed out while attempting to connect to ephemeral Prefect API server. stdout: \nstderr: boom"
        )

    monkeypatch.setattr(cli, "app", no_server)
    result = run_cli("search")
    assert result.code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: Timed out while attempting to connect to ephemeral Prefect API server.")
    assert "PREFECT_API_URL" in line


def test_other_runtime_errors_are_not_disguised(monkeypatch: pytest.MonkeyPatch) -> None:
    def bug() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "app", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main()


@pytest.mark.parametrize("command", ["search", "pipeline"])
def test_a_bad_objective_is_refused_before_any_server_starts(
    command: str, run_cli: Callable[..., CliResult]
) -> None:
    result = run_cli(command, "--objective", "nonsense", "--store", "store")
    assert result.code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: params: evaluate.objective: Input should be 'paper'")


def test_help_shows_the_defaults_it_names() -> None:
    """Square brackets in a help text are rich markup and vanish: defaults are in parentheses."""
    import inspect

    assert "[default:" not in inspect.getsource(cli)


def test_prefects_logs_of_a_one_line_error_are_dropped() -> None:
    """Prefect logs a failed task twice (its exception with the traceback, then its final state)
    and a failed flow once more; the command prints the error itself, last, in one line."""
    import logging

    from tcr_pipeline.errors import InputError, OneLineErrorLogFilter

    def record(message: str, error: BaseException | None = None) -> logging.LogRecord:
        exc_info = (type(error), error, None) if error else None
        return logging.LogRecord("prefect.task_runs", logging.ERROR, "x", 1, message, (), exc_info)

    keep = OneLineErrorLogFilter().filter
    assert not keep(record("Task run failed with exception: InputError('x')", InputError("x")))
    assert not keep(record("Finished in state Failed('Task run encountered an exception InputError: x')"))
    assert not keep(
        record("Finished in state Failed('Flow run encountered an exception: StoreWriteError: x')")
    )
    assert keep(record("Task run failed with exception: ValueError('x')", ValueError("x")))  # a bug: shown
    assert keep(record("Finished in state Failed('Task run encountered an exception ValueError: x')"))
