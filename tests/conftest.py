"""Shared fixtures: the shipped data, a small subsample of it, tiny parameters, CLI runners,
and the table of bad input files used by test_data.py and test_cli.py.

The suite must stay fast (well under a minute on two cores): every stage runs on a small CSV
with a small model for two epochs, except where a test needs the whole shipped file. Starting a
Python process that imports torch and scikit-learn costs several seconds here, so most CLI
tests call ``tcr_cli.main.main`` (the console-script entry point) in-process; a few run the
real ``python -m tcr_cli`` in a subprocess to check what a user's shell sees.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from dashboard_fixtures import copied_store, search_store  # noqa: F401  (a store from a real small search)
from flow_fixtures import prefect_api, workdir  # noqa: F401  (fixtures shared by the flow tests)
from slurm_fixtures import slurm_node  # noqa: F401  (skips without SLURM, fails without it in CI)

import tcr_cli.main as cli
from tcr_cli import options
from tcr_pipeline.config import DataParams, EvaluateParams, ModelParams, Params, PrepareParams, TrainParams
from tcr_pipeline.data import COLUMNS, load_pairs, tcr_keys
from tcr_pipeline.files import sha256_file
from tcr_pipeline.prepare import Prepared, encode_pairs
from tcr_pipeline.recipe import fit_and_save

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CSV = ROOT / "data" / "raw" / "viral_pairs.csv"
SMALL_TCRS = 40  # × 14 rows each

# ---------------------------------------------------------------------------------------------
# The shipped data and a small sample of it
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shipped_csv() -> Path:
    """The shipped raw pair table (8,932 rows, 638 TCRs × 14 epitopes, one positive each)."""
    assert SHIPPED_CSV.is_file(), f"shipped data missing: {SHIPPED_CSV}"
    return SHIPPED_CSV


@pytest.fixture(scope="session")
def shipped_frame(shipped_csv: Path) -> pd.DataFrame:
    """The shipped table as :func:`load_pairs` returns it (do not mutate: copy first)."""
    return load_pairs(shipped_csv)


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory: pytest.TempPathFactory, shipped_csv: Path) -> Path:
    """40 TCRs with all 14 of their rows (560 rows, 40 positive), written verbatim to a CSV.

    The TCRs of the shipped file's first five rows are among them, so an encoder fitted on the
    small CSV represents the rows that the bad-input files in ``BAD_INPUTS`` are made of.
    """
    raw = pd.read_csv(shipped_csv, dtype=str, keep_default_na=False)
    keys = tcr_keys(raw)
    first = list(dict.fromkeys(keys.head(5)))
    others = np.array(sorted(set(keys) - set(first)))
    rng = np.random.default_rng(0)
    chosen = {*first, *rng.choice(others, SMALL_TCRS - len(first), replace=False)}
    subset = raw[keys.isin(chosen)]
    labels = subset["Label"].astype(int)
    assert len(subset) == SMALL_TCRS * 14
    assert labels.sum() == SMALL_TCRS  # one positive per TCR: both classes present
    assert subset.loc[labels == 1, "Epitope"].nunique() >= 5  # several epitopes among positives
    path = tmp_path_factory.mktemp("small") / "small_pairs.csv"
    subset.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def small_params(small_csv: Path) -> Params:
    """Tiny but complete parameters: the small CSV, a small model, two epochs, CPU."""
    return Params(
        data=DataParams(raw=small_csv),
        prepare=PrepareParams(encoding="onehot", split="tcr", seed=42),
        train=TrainParams(
            model=ModelParams(kind="small", small_widths=(32, 16)),
            lr=0.01,
            epochs=2,
            batch_size=64,
            seed=0,
            device="cpu",
        ),
        evaluate=EvaluateParams(threshold=0.5),
    )


@pytest.fixture(scope="session")
def small_prepared(small_csv: Path, small_params: Params) -> Prepared:
    """The small CSV encoded (one-hot) and split by TCR, in memory."""
    frame = load_pairs(small_csv)
    return encode_pairs(frame, small_params.prepare, sha256_file(small_csv))


@pytest.fixture(scope="session")
def tiny_bundle(
    tmp_path_factory: pytest.TempPathFactory, small_prepared: Prepared, small_params: Params
) -> Path:
    """A model bundle trained in-process on the small CSV (for `predict` tests)."""
    out = tmp_path_factory.mktemp("bundle") / "model"
    fit_and_save(small_prepared, small_params.train, small_params.evaluate, out, splits=("val",))
    return out


# ---------------------------------------------------------------------------------------------
# Running the CLI
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class EscapedException(AssertionError):
    """An exception escaped ``main()``: a real process would print a traceback."""


def invoke_main(args: Sequence[object], cwd: Path) -> CliResult:
    """Run ``tcr_cli.main.main`` (the ``tcr-pipeline`` entry point) in-process, in ``cwd``.

    Both rich consoles are pinned to 80 columns, the width rich uses when not on a terminal.
    Raises :class:`EscapedException` for any exception other than the SystemExit of ``main``.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    widths = options.console.width, options.out.width
    argv, here = sys.argv, Path.cwd()
    options.console.width = options.out.width = 80
    sys.argv = ["tcr-pipeline", *map(str, args)]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        command = " ".join(map(str, args))
        raise EscapedException(f"tcr-pipeline {command} raised {exc!r} (a traceback for the user)") from exc
    else:
        code = 0
    finally:
        os.chdir(here)
        sys.argv = argv
        options.console.width, options.out.width = widths
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., CliResult]:
    """``run_cli(*args)``: :func:`invoke_main` in tmp_path (an escaping exception fails the test)."""

    def run(*args: object) -> CliResult:
        return invoke_main(args, tmp_path)

    return run


def cli_command(*args: object) -> list[str]:
    """The argv of a real ``python -m tcr_cli`` process."""
    return [sys.executable, "-m", "tcr_cli", *map(str, args)]


def cli_env() -> dict[str, str]:
    """The environment for CLI subprocesses: this checkout first on the path, plain output."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["NO_COLOR"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # tiny data: one thread, no spinning against the other processes
    return env


def run_cli_process(*args: object, cwd: Path, timeout: float = 300) -> CliResult:
    """Run ``python -m tcr_cli ARGS`` in a subprocess in ``cwd`` (thread-safe)."""
    done = subprocess.run(
        cli_command(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture(name="run_cli_process", scope="session")
def _run_cli_process() -> Callable[..., CliResult]:
    """:func:`run_cli_process` as a fixture."""
    return run_cli_process


# ---------------------------------------------------------------------------------------------
# End-to-end pipelines through the command line (test_integration.py)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineSpec:
    """prepare → train (2 epochs) → evaluate → predict on the whole shipped CSV."""

    name: str
    prepare: tuple[str, ...]
    train: tuple[str, ...]
    in_process: bool  # True: through invoke_main; False: one `python -m tcr_cli` per stage
    encoding: str
    split: str
    use_clone_id: bool
    dim: int
    model: str


PIPELINES = {
    # the paper's setting: paper encoding, random split, clone_id as a feature
    "paper": PipelineSpec(
        "paper",
        prepare=("--encoding", "paper", "--split", "random", "--clone-id"),
        train=("--model", "small"),
        in_process=False,
        encoding="paper",
        split="random",
        use_clone_id=True,
        dim=123,
        model="small",
    ),
    # the defaults (no params.yaml in the working directory): aligned codes (30 + 30 + 15
    # residues, 6 categories), split by TCR, the medium network over BLOSUM-expanded codes
    "default": PipelineSpec(
        "default",
        prepare=(),
        train=(),
        in_process=True,
        encoding="aligned",
        split="tcr",
        use_clone_id=False,
        dim=81,
        model="medium",
    ),
}
PREDICT_ROWS = [0, 700, 1500, 3000, 6000, 8931]  # rows of the shipped CSV, several epitopes
PREDICT_BAD_ROW = 2  # its CDR3β becomes CASSX1F
STAGES = ("prepare", "train", "evaluate", "predict")


@dataclass
class PipelineRun:
    spec: PipelineSpec
    directory: Path
    results: dict[str, CliResult] = field(default_factory=dict)
    card_after_train: bytes = b""

    def path(self, *parts: str) -> Path:
        return self.directory.joinpath(*parts)


def run_pipeline(spec: PipelineSpec, directory: Path, raw: Path) -> PipelineRun:
    """Run the four stages in ``directory``, stopping at the first failure."""
    rows = pd.read_csv(raw, dtype=str, keep_default_na=False).iloc[PREDICT_ROWS].reset_index(drop=True)
    rows.loc[PREDICT_BAD_ROW, "CDR3_beta"] = "CASSX1F"
    rows.insert(0, "sample", [f"s{i}" for i in range(len(rows))])  # an extra column, kept as is
    rows.to_csv(directory / "input.csv", index=False)
    commands = {
        "prepare": ("prepare", "--data", raw, "--out", "prepared", *spec.prepare),
        "train": (
            "train",
            "--prepared",
            "prepared",
            "--out",
            "model",
            "--epochs",
            2,
            "--device",
            "cpu",
            *spec.train,
        ),
        "evaluate": ("evaluate", "--model", "model", "--prepared", "prepared", "--metrics", "metrics.json"),
        "predict": ("predict", "input.csv", "--model", "model", "--output", "scores.csv"),
    }
    run = PipelineRun(spec, directory)
    for stage in STAGES:
        if spec.in_process:
            result = invoke_main(commands[stage], directory)
        else:
            result = run_cli_process(*commands[stage], cwd=directory)
        run.results[stage] = result
        if result.code != 0:
            break
        if stage == "train":
            run.card_after_train = (directory / "model" / "card.json").read_bytes()
    return run


@dataclass
class FailingRuns:
    """Real processes given bad input (test_cli.py): `prepare` on a bad row, `predict` on a file
    without an Epitope column."""

    directory: Path
    bad_row: Path
    no_epitope: Path
    output: Path
    results: dict[str, CliResult] = field(default_factory=dict)


def run_failing_processes(directory: Path, raw: Path, bundle: Path) -> FailingRuns:
    header, first, second = raw.read_text().splitlines()[:3]
    runs = FailingRuns(
        directory, directory / "bad_row.csv", directory / "no_epitope.csv", directory / "scores.csv"
    )
    runs.bad_row.write_text("\n".join([header, first, _set(second, "CDR3_beta", "CASSX1F")]) + "\n")
    drop = COLUMNS.index("Epitope")
    runs.no_epitope.write_text(
        "\n".join(",".join(f for i, f in enumerate(line.split(",")) if i != drop) for line in (header, first))
    )
    commands = {
        "prepare": ("prepare", "--data", runs.bad_row, "--out", directory / "prepared"),
        "predict": ("predict", runs.no_epitope, "--model", bundle, "--output", runs.output),
    }
    for name, args in commands.items():
        runs.results[name] = run_cli_process(*args, cwd=directory)
    return runs


BACKGROUND_FIXTURES = (  # fixtures whose results come from background processes
    "cli_pipelines",
    "failing_cli_processes",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that wait for background processes last (a stable sort: nothing else moves)."""
    items.sort(key=lambda item: any(f in getattr(item, "fixturenames", ()) for f in BACKGROUND_FIXTURES))


def _submit(pool: ThreadPoolExecutor, job: Callable[..., Any], arguments: Callable[[], tuple]) -> Future[Any]:
    """``pool.submit(job, *arguments())``, or a future holding what ``arguments()`` raised."""
    try:
        args = arguments()
    except (Exception, pytest.fail.Exception, pytest.skip.Exception) as exc:
        failed: Future[Any] = Future()
        failed.set_exception(exc)
        return failed
    return pool.submit(job, *args)


@pytest.fixture(scope="session", autouse=True)
def _background_cli_processes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Any]]]:
    """Start the real CLI processes with the session, when a selected test needs them.

    Each `python -m tcr_cli` process spends seconds importing torch and scikit-learn.
    Started first, in two background threads, they run on the second core while the in-process
    tests run on the first: the subprocess pipelines of ``PIPELINES`` (for ``cli_pipelines``)
    and the failing commands of :func:`run_failing_processes` (for ``failing_cli_processes``).
    Whatever goes wrong here is raised by those two fixtures, never in other tests' setup.
    """
    needed: set[str] = set().union(*(getattr(item, "fixturenames", ()) for item in request.session.items))
    if not needed & set(BACKGROUND_FIXTURES):
        yield {}
        return
    # torch's default two threads would spin against the processes: one thread while they run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    futures: dict[str, Future[Any]] = {}
    with ThreadPoolExecutor(2, thread_name_prefix="cli-process") as pool:
        if BACKGROUND_FIXTURES[0] in needed:
            for spec in PIPELINES.values():
                if not spec.in_process:
                    futures[spec.name] = _submit(
                        pool,
                        run_pipeline,
                        lambda spec=spec: (
                            spec,
                            tmp_path_factory.mktemp(spec.name),
                            request.getfixturevalue("shipped_csv"),
                        ),
                    )
        if BACKGROUND_FIXTURES[1] in needed:
            futures["failing"] = _submit(
                pool,
                run_failing_processes,
                lambda: (
                    tmp_path_factory.mktemp("failing"),
                    request.getfixturevalue("shipped_csv"),
                    request.getfixturevalue("tiny_bundle"),
                ),
            )
        yield futures
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cli_pipelines(
    _background_cli_processes: dict[str, Future[Any]],
    tmp_path_factory: pytest.TempPathFactory,
    shipped_csv: Path,
) -> dict[str, PipelineRun]:
    """Every pipeline of ``PIPELINES``, run (the in-process ones now, the others waited for)."""
    runs = {
        spec.name: run_pipeline(spec, tmp_path_factory.mktemp(spec.name), shipped_csv)
        for spec in PIPELINES.values()
        if spec.in_process
    }
    for spec in PIPELINES.values():
        if not spec.in_process:
            runs[spec.name] = _background_cli_processes[spec.name].result(timeout=600)
    return {name: runs[name] for name in PIPELINES}


@pytest.fixture(scope="session")
def failing_cli_processes(_background_cli_processes: dict[str, Future[Any]]) -> FailingRuns:
    """The results of :func:`run_failing_processes`."""
    return _background_cli_processes["failing"].result(timeout=600)


# ---------------------------------------------------------------------------------------------
# Bad input files: one table for validate_file, `validate`, `prepare --data` and `predict`
# ---------------------------------------------------------------------------------------------

HEADER, *ROWS = SHIPPED_CSV.read_text().splitlines()[:6]  # header = line 1, rows = lines 2..6
assert HEADER.split(",") == list(COLUMNS)


def _lines() -> list[str]:
    return [HEADER, *ROWS]


def _set(line: str, column: str, value: str) -> str:
    fields = line.split(",")
    fields[COLUMNS.index(column)] = value
    return ",".join(fields)


def _with_value(line_number: int, column: str, value: str) -> list[str]:
    """The base file with one value replaced on file line ``line_number`` (1 = header)."""
    lines = _lines()
    lines[line_number - 1] = _set(lines[line_number - 1], column, value)
    return lines


def _without_column(column: str) -> list[str]:
    drop = COLUMNS.index(column)
    return [",".join(f for i, f in enumerate(line.split(",")) if i != drop) for line in _lines()]


def _flip_label(line: str) -> str:
    return _set(line, "Label", "0" if line.split(",")[-1] == "1" else "1")


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
    BadInput(
        "non-amino-acid-cdr3-beta",
        _text(_with_value(4, "CDR3_beta", "CASSX1F")),
        "4",
        "CDR3_beta",
        "not an amino-acid sequence (bad characters: '1X')",
        predict_error="CDR3_beta:",
    ),
    # lower case is not an amino-acid code here
    BadInput(
        "lower-case-epitope",
        _text(_with_value(3, "Epitope", "gilgfvftl")),
        "3",
        "Epitope",
        "not an amino-acid sequence",
        predict_error="Epitope:",
    ),
    # longer than any TCR or peptide (MAX_SEQUENCE_LENGTH = 50)
    BadInput(
        "sequence-too-long",
        _text(_with_value(5, "CDR3_alpha", "C" + "A" * 60)),
        "5",
        "CDR3_alpha",
        "sequence of 61 residues exceeds 50",
        predict_error="CDR3_alpha: sequence of 61 residues exceeds 50",
    ),
    # a label that is neither 0 nor 1
    BadInput("label-two", _text(_with_value(4, "Label", "2")), "4", "Label", "label must be 0 or 1, got '2'"),
    # an empty label where labels are required
    BadInput("label-empty", _text(_with_value(4, "Label", "")), "4", "Label", "label must be 0 or 1"),
    # an empty sequence
    BadInput(
        "empty-cdr3-alpha",
        _text(_with_value(4, "CDR3_alpha", "")),
        "4",
        "CDR3_alpha",
        "empty value",
        predict_error="CDR3_alpha: empty value",
    ),
    # an empty MHC
    BadInput(
        "empty-mhc",
        _text(_with_value(6, "MHC", "")),
        "6",
        "MHC",
        "empty value",
        predict_error="MHC: empty value",
    ),
    # a gene name that is not a gene name
    BadInput(
        "bad-gene-name",
        _text(_with_value(4, "V_beta", "banana")),
        "4",
        "V_beta",
        "is not a TRBV gene name",
        predict_error="V_beta: 'banana' is not a TRBV gene name",
    ),
    # an α gene in the β column
    BadInput(
        "alpha-gene-in-beta-column",
        _text(_with_value(3, "J_beta", "TRAJ44*01")),
        "3",
        "J_beta",
        "'TRAJ44*01' is not a TRBJ gene name",
        predict_error="J_beta: 'TRAJ44*01' is not a TRBJ gene name",
    ),
    # a clone_id that is not a number
    BadInput(
        "clone-id-not-a-number",
        _text(_with_value(4, "clone_id", "abc")),
        "4",
        "clone_id",
        "'abc' is not a number",
    ),
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``bad_input`` with every case, ``file_level_bad_input`` / ``row_level_bad_input``
    with the cases a whole-file check rejects / the cases confined to one row."""
    tables = {
        "bad_input": BAD_INPUTS,
        "file_level_bad_input": [b for b in BAD_INPUTS if b.file_level],
        "row_level_bad_input": [b for b in BAD_INPUTS if not b.file_level and b.id != "header-only"],
    }
    for name, cases in tables.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, cases, ids=[c.id for c in cases])
