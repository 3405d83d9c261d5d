"""A hostile user's bad input, through the real command line: exit status 2, one line, no traceback,
and nothing written: no input, device node or other file changed, no file left behind.

Every case runs ``tcr_cli.main.main`` in-process (``run_cli``: an exception escaping it fails
the test, as it would print a traceback). The commands that run Prefect flows must refuse the
input before any Prefect server or Dask cluster starts: that is why these cases take milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from cli_fixtures import invoke_main

from tcr_pipeline.store import RunManifest, Store, TrialRecord, check_store

DEVICE = Path("/dev/full")  # only ever stat()ed: the check must refuse it before anything opens it


@dataclass
class Place:
    """The files of one case, in ``root`` (the working directory of the command)."""

    root: Path
    csv: Path  # a valid labelled pair table
    bundle: Path  # a copy of the tiny model bundle
    prepared: Path  # a prepared data directory
    params: Path  # the flow tests' tiny params.yaml

    def file(self, name: str, text: str = "x\n") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def link(self, name: str) -> Path:
        """A hard link to the CSV: the same file under another name."""
        path = self.root / name
        os.link(self.csv, path)
        return path

    def fifo(self, name: str) -> Path:
        path = self.root / name
        os.mkfifo(path)
        return path


@dataclass(frozen=True)
class Case:
    args: Callable[[Place], list[object]]
    message: str  # part of the one error line


def _weights(place: Place, damage: str) -> Path:
    weights = place.bundle / "weights.pt"
    if damage == "missing":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:200])
    elif damage == "wrong shape":
        state = torch.load(weights, weights_only=True)
        first = next(iter(state))
        state[first] = torch.zeros(3, 3)
        torch.save(state, weights)
    elif damage == "a pickle":
        torch.save({"weights": Place}, weights)  # a class: torch's weights_only loader refuses it
    return place.bundle


def _predict(place: Place, *, output: object, model: Path | None = None) -> list[object]:
    return ["predict", place.csv, "--model", model or place.bundle, "-o", output]


def _predict_csv(place: Place, edit: Callable[[list[str]], list[str]]) -> list[object]:
    """predict on an edited copy of the CSV's first lines."""
    lines = place.csv.read_text().splitlines()[:6]
    source = place.file("edited.csv", "\n".join(edit(lines)) + "\n")
    return ["predict", source, "--model", place.bundle, "-o", place.root / "scores.csv"]


def _search(place: Place, *extra: object) -> list[object]:
    return [
        "search",
        "--store",
        place.root / "store",
        "--prepared",
        place.prepared,
        "--params",
        place.params,
        *extra,
    ]


def _search_params(place: Place, section: str, line: str) -> list[object]:
    """search with the flow tests' params.yaml plus ``line`` under ``section``."""
    text = place.params.read_text().replace(f"{section}:\n", f"{section}:\n  {line}\n", 1)
    return [*_search(place)[:-1], place.file("params.yaml", text)]


CASES: dict[str, Case] = {
    # output paths
    "predict -o a device": Case(lambda p: _predict(p, output=DEVICE), "is a character device"),
    "predict -o a FIFO": Case(lambda p: _predict(p, output=p.fifo("pipe")), "is a FIFO"),
    "predict -o the input": Case(lambda p: _predict(p, output=p.csv), "is the input file"),
    "predict -o the input by another name": Case(
        lambda p: _predict(p, output=p.link("same.csv")), "is the input file"
    ),
    "predict -o a directory": Case(lambda p: _predict(p, output=p.root), "is a directory"),
    "predict -o under a file": Case(
        lambda p: _predict(p, output=p.file("plain") / "scores.csv"), "is not a directory"
    ),
    "prepare --out a file": Case(
        lambda p: ["prepare", "--data", p.csv, "--out", p.file("prepared.txt")],
        "exists and is not a directory",
    ),
    "prepare --out under a file": Case(
        lambda p: ["prepare", "--data", p.csv, "--out", p.file("plain") / "prepared"], "is not a directory"
    ),
    "train --out a file": Case(
        lambda p: ["train", "--prepared", p.prepared, "--out", p.file("model.txt")],
        "exists and is not a directory",
    ),
    "evaluate --metrics a directory": Case(
        lambda p: ["evaluate", "--model", p.bundle, "--prepared", p.prepared, "--metrics", p.root],
        "is a directory",
    ),
    "baseline --metrics the data": Case(
        lambda p: ["baseline", "--data", p.csv, "--metrics", p.csv], "is the input file"
    ),
    "runs --store a file": Case(lambda p: ["runs", "--store", p.file("store.txt")], "not a directory"),
    "runs --store missing": Case(lambda p: ["runs", "--store", p.root / "none"], "no such store"),
    "store check --store a file": Case(
        lambda p: ["store", "check", "--store", p.file("store.txt")], "not a directory"
    ),
    "search --store a file": Case(
        lambda p: ["search", "--store", p.file("store.txt"), "--prepared", p.prepared], "is not a directory"
    ),
    # run ids
    "search --run-id ../../x": Case(lambda p: _search(p, "--run-id", "../../x"), "not a valid run id"),
    "search --run-id a/b": Case(lambda p: _search(p, "--run-id", "a/b"), "not a valid run id"),
    "search --run-id ..": Case(lambda p: _search(p, "--run-id", ".."), "not a valid run id"),
    "search --run-id .hidden": Case(lambda p: _search(p, "--run-id", ".hidden"), "not a valid run id"),
    "pipeline --run-id /abs": Case(
        lambda p: ["pipeline", "--data", p.csv, "--run-id", "/tmp/x", "--store", p.root / "s"],
        "not a valid run id",
    ),
    # flow commands: refused before a Prefect server starts
    "search --parallelism 0": Case(lambda p: _search(p, "--parallelism", 0), "search.parallelism"),
    "search --max-evals 0": Case(lambda p: _search(p, "--max-evals", 0), "search.max_evals"),
    "search.batch_size: true": Case(
        lambda p: _search_params(p, "search", "batch_size: true"),
        "search.batch_size: expected an integer, got true",
    ),
    "search.batch_size: '3'": Case(
        lambda p: _search_params(p, "search", "batch_size: '3'"),
        'search.batch_size: expected an integer, got "3"',
    ),
    "search.vectorise: 'yes'": Case(
        lambda p: _search_params(p, "search", "vectorise: 'yes'"),
        'params.yaml: search.vectorise: expected true or false, got "yes"',
    ),
    "search --cluster nope": Case(
        lambda p: _search(p, "--cluster", "nope"), "unknown cluster profile 'nope'"
    ),
    "search without prepared data": Case(
        lambda p: ["search", "--store", p.root / "store", "--prepared", p.root / "nothing"],
        "not a prepared data directory",
    ),
    "pipeline --data bad rows": Case(
        lambda p: [
            "pipeline",
            "--data",
            p.file("bad.csv", p.csv.read_text().replace("CASS", "CAS1", 1)),
            "--store",
            p.root / "s",
            "--prepared",
            p.root / "prep",
        ],
        "not an amino-acid sequence",
    ),
    "pipeline --data missing": Case(
        lambda p: ["pipeline", "--data", p.root / "none.csv", "--store", p.root / "s"], "no such file"
    ),
    "pipeline --prepared a file": Case(
        lambda p: ["pipeline", "--data", p.csv, "--store", p.root / "s", "--prepared", p.file("prep.txt")],
        "exists and is not a directory",
    ),
    "monitor --labels bad file": Case(
        lambda p: ["monitor", "--store", p.root, "--labels", p.file("labels.csv", "a,b\n1,2\n")],
        "missing required column",
    ),
    "monitor without a store": Case(lambda p: ["monitor", "--store", p.root / "none"], "no such store"),
    # CSV structure (predict used to score these, shifted or empty, with exit status 0)
    "predict a first row with 12 fields": Case(
        lambda p: _predict_csv(p, lambda lines: [lines[0], lines[1] + ",x,y", *lines[2:]]),
        ":2:-: not a well-formed CSV (line 2 has 12 fields, the header 10)",
    ),
    "predict a header without rows": Case(
        lambda p: _predict_csv(p, lambda lines: lines[:1]), ":2:-: no data rows"
    ),
    "predict a Label column twice": Case(
        lambda p: _predict_csv(p, lambda lines: [lines[0] + ",Label", *(line + ",0" for line in lines[1:])]),
        ":1:Label: column named twice (columns 10 and 11)",
    ),
    # model weights
    **{
        f"predict with weights {damage}": Case(
            lambda p, damage=damage: _predict(p, output=p.root / "scores.csv", model=_weights(p, damage)),
            message,
        )
        for damage, message in {
            "missing": "not a complete model bundle (no weights.pt)",
            "truncated": "not a readable weights file",
            "wrong shape": "does not fit the architecture in card.json",
            "a pickle": "refused, it holds more than tensors",
        }.items()
    },
}


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under root (FIFOs included, never opened) with its mode, size and content hash."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else ""
        found[str(path.relative_to(root))] = (info.st_mode, info.st_size, digest)
    return found


@pytest.fixture
def place(tmp_path: Path, small_csv: Path, tiny_bundle: Path, workdir: Path) -> Place:
    root = tmp_path / "work"
    root.mkdir()
    csv = root / "pairs.csv"
    shutil.copy(small_csv, csv)
    bundle = root / "model"
    shutil.copytree(tiny_bundle, bundle)
    return Place(root, csv, bundle, workdir / "prepared", workdir / "params.yaml")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_exit_2_and_changes_nothing(place: Place, case: Case) -> None:
    args = case.args(place)
    before = _snapshot(place.root)
    device = DEVICE.stat()
    started = time.monotonic()
    result = invoke_main(args, place.root)
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert case.message in line, line
    assert time.monotonic() - started < 20  # no Prefect server was started
    assert _snapshot(place.root) == before  # nothing written, changed or left behind
    after = DEVICE.stat()
    assert (after.st_mode, after.st_rdev) == (device.st_mode, device.st_rdev)
    assert stat.S_ISCHR(after.st_mode)


def test_a_lower_max_evals_on_resume_is_refused(place: Place) -> None:
    """Four finished trials and --max-evals 2: refused, not shown as 4/2."""
    store = Store(place.root / "store")
    sha = json.loads((place.prepared / "meta.json").read_text())["data_sha256"]
    store.write_manifest(
        RunManifest(run_id="r", max_evals=4, parallelism=1, data_sha256=sha, status="interrupted")
    )
    for trial_id in range(4):
        store.write_trial(TrialRecord(run_id="r", trial_id=trial_id, attempt="a", status="ok", objective=1.0))
    before = _snapshot(place.root)
    result = invoke_main(_search(place, "--run-id", "r", "--max-evals", 2), place.root)
    assert result.code == 2
    [line] = result.stderr.strip().splitlines()
    assert line == (
        "error: run r: already has 4 finished trials, --max-evals 2 is below that "
        "(max_evals counts every trial of the run)"
    )
    assert _snapshot(place.root) == before


@pytest.mark.slow
def test_an_input_error_inside_a_flow_is_one_line(prefect_api: str, place: Place, tmp_path: Path) -> None:
    """Found only once the flow runs (the tensors file is truncated): still one line, no traceback."""
    from cli_fixtures import run_cli_process

    prepared = tmp_path / "prepared"
    shutil.copytree(place.prepared, prepared)
    tensors = prepared / "dataset.pt"
    tensors.write_bytes(tensors.read_bytes()[:100])
    args = ["search", "--store", tmp_path / "store", "--prepared", prepared, "--params", place.params]
    result = run_cli_process(*args, "--run-id", "t", cwd=tmp_path, timeout=240)
    assert result.code == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tensors}: not readable prepared tensors (RuntimeError); run `tcr-pipeline prepare` again"
    )
    assert (
        Store(tmp_path / "store").load_manifest("t") is None
    )  # nothing recorded for a run that never started


@pytest.mark.slow
def test_a_damaged_trial_does_not_block_the_resume(prefect_api: str, workdir: Path, tmp_path: Path) -> None:
    """A truncated trial.json (a disk that filled up) is skipped: the resume runs that trial again."""
    from flows.search import search_flow

    store = Store(tmp_path / "store")
    common = {
        "run_id": "damaged",
        "store": str(store.root),
        "prepared_dir": str(workdir / "prepared"),
        "params_file": str(workdir / "params.yaml"),
        "promote": False,
        "baseline": False,
    }
    search_flow(**common)
    victim = store.list_trials("damaged")[1]
    record = store.attempt_dir("damaged", 1, victim.attempt) / "trial.json"
    record.write_text(record.read_text()[:50])
    store.write_manifest(store.load_manifest("damaged").model_copy(update={"status": "interrupted"}))

    search_flow(**common)
    finished = [t for t in store.list_trials("damaged") if t.done]
    assert len(finished) == 4  # max_evals of the flow tests' params
    assert store.load_manifest("damaged").status == "completed"
    assert [d.path for d in check_store(store)] == [record]  # left as it was, for `store check`


def test_a_write_the_system_refuses_is_one_line(place: Place) -> None:
    """/proc takes no new files, even from root: the failure is one line (exit 1), not a traceback."""
    before = _snapshot(place.root)
    result = invoke_main(_predict(place, output="/proc/scores.csv"), place.root)
    assert result.code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: /proc/"), line
    assert line.endswith("No such file or directory"), line
    assert _snapshot(place.root) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any directory")
def test_a_directory_without_write_permission_is_refused_first(place: Place) -> None:
    locked = place.root / "locked"
    locked.mkdir(mode=0o555)
    result = invoke_main(_predict(place, output=locked / "scores.csv"), place.root)
    assert result.code == 2
    assert result.stderr.strip() == (
        f"error: {locked / 'scores.csv'}: cannot write here, no permission to write in {locked}"
    )


def test_predict_by_path_ignores_a_damaged_registry(place: Place) -> None:
    """`predict --model DIR` (also with --log) does not read registry.json: damage there cannot stop it."""
    store = place.root / "store"
    store.mkdir()
    (store / "registry.json").write_text("{ truncated")
    output = place.root / "scores.csv"
    args = _predict(place, output=output)
    result = invoke_main([*args, "--store", store, "--log"], place.root)
    assert result.code == 0, result.output
    assert output.is_file()
    best = invoke_main(["predict", place.csv, "-o", place.root / "b.csv", "--store", store], place.root)
    assert best.code == 2
    assert best.stderr.strip() == f"error: {store / 'registry.json'}: not a valid Registry (1 errors)"
