"""Real CLI processes started in the background with the session: the end-to-end pipelines
(test_integration.py) and the failing commands (test_cli.py), run on the second core while the
in-process tests run on the first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from bad_inputs import set_field
from cli_fixtures import CliResult, invoke_main, run_cli_process

from tcr_pipeline.data import COLUMNS


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
    runs.bad_row.write_text("\n".join([header, first, set_field(second, "CDR3_beta", "CASSX1F")]) + "\n")
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
