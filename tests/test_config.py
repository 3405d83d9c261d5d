"""params.yaml is resolved in one place, ``tcr_pipeline.config.resolve_params``: the CLI, the flows
and the benchmarks all go through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcr_cli.options import command_params, flow_params_file
from tcr_pipeline.config import (
    PARAMS_FILE,
    Params,
    TrainParams,
    apply_hyperparams,
    load_params,
    resolve_params,
)
from tcr_pipeline.errors import InputError


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text("prepare:\n  split: random\ntrain:\n  epochs: 3\n")
    return path


def test_a_params_file_is_read_with_overrides_on_top(params_file: Path) -> None:
    params = resolve_params(params_file, {"train.epochs": 7, "train.lr": None})
    assert params.prepare.split == "random"
    assert params.train.epochs == 7  # the override wins
    assert params.train.lr == Params().train.lr  # None: not given


def test_a_missing_file_means_the_defaults_unless_it_is_required(tmp_path: Path) -> None:
    absent = tmp_path / "absent.yaml"
    assert resolve_params(absent) == Params()
    with pytest.raises(InputError, match=r"absent\.yaml: no such params file"):
        resolve_params(absent, required=True)


def test_none_means_the_defaults_even_beside_a_params_file(
    params_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(params_file.parent)
    assert resolve_params(None) == Params()
    assert resolve_params("") == Params()
    assert resolve_params().prepare.split == "random"  # the default argument is ./params.yaml


def test_a_command_reads_the_working_directorys_params_file_or_the_one_it_is_given(
    params_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert command_params(None, {}).prepare.split == "random"
    assert flow_params_file(None) == PARAMS_FILE  # the flow reads the same file
    other = tmp_path / "other.yaml"
    other.write_text("prepare:\n  split: epitope\n")
    assert command_params(other, {}).prepare.split == "epitope"
    assert flow_params_file(other) == str(other)
    params_file.unlink()
    assert command_params(None, {}) == Params()  # no ./params.yaml: the defaults
    with pytest.raises(InputError, match="no such params file"):
        command_params(tmp_path / "params.yaml", {})  # but a file given by --params must exist


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("search:\n  batch_size: true\n", "search.batch_size: expected an integer, got true"),
        ("search:\n  batch_size: '3'\n", 'search.batch_size: expected an integer, got "3"'),
        ("search:\n  max_evals: 3.0\n", "search.max_evals: expected an integer, got 3.0"),
        ("search:\n  vectorise: 'yes'\n", 'search.vectorise: expected true or false, got "yes"'),
        ("search:\n  vectorise: 1\n", "search.vectorise: expected true or false, got 1"),
        ("train:\n  model:\n    genes: 'false'\n", 'train.model.genes: expected true or false, got "false"'),
        ("train:\n  model:\n    max_width: true\n", "train.model.max_width: expected an integer, got true"),
        (
            "train:\n  model:\n    kmer_sizes: [1, true]\n",
            "train.model.kmer_sizes.1: expected an integer, got true",
        ),
        ("train:\n  lr: true\n", "train.lr: expected a number, got true"),
        ("train:\n  lr: fast\n", 'train.lr: expected a number, got "fast"'),
        ("train:\n  lr: .inf\n", "train.lr: expected a finite number, got Infinity"),
        ("train:\n  lr: '1e999'\n", "train.lr: expected a finite number"),
        (
            "prepare:\n  fractions: [.nan, 0.1, 0.1]\n",
            "prepare.fractions.0: expected a finite number, got NaN",
        ),
        (
            "search:\n  space:\n    lr: {uniform: [0.001, .inf]}\n",
            "search.space.lr.uniform.1: expected a finite number",
        ),
        ("monitor:\n  since_hours: true\n", "monitor.since_hours: expected a number, got true"),
        ("monitor:\n  window: '100'\n", 'monitor.window: expected an integer, got "100"'),
        (
            "search:\n  space:\n    epochs: {integer: [true, 5]}\n",
            "search.space.epochs.integer.0: expected an integer",
        ),
    ],
)
def test_a_count_size_or_switch_of_another_type_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        resolve_params(path)
    assert str(caught.value).startswith(f"{path}: {message}")
    assert "\n" not in str(caught.value)


def test_yaml_ints_bools_and_numbers_and_overrides_still_pass(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(
        "search:\n  batch_size: 3\n  vectorise: no\n  seed: null\n"  # YAML 1.1: no is false
        "train:\n  lr: 1e-3\n  epochs: 4\n  model:\n    max_width: null\n    genes: false\n"
        "monitor:\n  since_hours: 2\n"
    )
    params = resolve_params(path, {"search.max_evals": 5, "monitor.window": 7})
    assert (params.search.batch_size, params.search.vectorise, params.search.seed) == (3, False, None)
    assert (params.train.lr, params.train.epochs) == (0.001, 4)  # PyYAML reads 1e-3 as a string
    assert (params.train.model.max_width, params.train.model.genes) == (None, False)
    assert (params.monitor.since_hours, params.search.max_evals, params.monitor.window) == (2.0, 5, 7)
    assert load_params(Path("params.yaml")) == resolve_params(Path("params.yaml"))  # the shipped file


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            "epochs: {choice: [true]}",
            "search.space.epochs: true is not a value of train.epochs (expected an integer)",
        ),
        (
            "batch_size: {choice: ['128']}",
            'search.space.batch_size: "128" is not a value of train.batch_size',
        ),
        (
            "model.kind:\n      branches:\n        kmer:\n          model.genes: {choice: ['yes']}",
            'search.space.model.kind.branches.kmer.model.genes: "yes" is not a value of train.model.genes',
        ),
        (
            "model.kind: {choice: [small, tiny]}",
            'search.space.model.kind: "tiny" is not a value of train.model.kind',
        ),
        ("model.colour: {choice: [1]}", "search.space: 'model.colour' is not a key of the train section"),
    ],
)
def test_a_search_space_value_the_train_section_would_refuse_is_refused_up_front(
    tmp_path: Path, space: str, message: str
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(f"search:\n  space:\n    {space}\n")
    with pytest.raises(InputError) as caught:
        resolve_params(path)
    assert str(caught.value).startswith(f"{path}: {message}")


def test_searched_values_keep_their_type() -> None:
    train = TrainParams()
    searched = apply_hyperparams(train, {"model.genes": False, "epochs": 7.0, "batch_size": 64, "lr": 1})
    assert searched.model.genes is False  # was int(False) = 0, which a strict bool refuses
    assert (searched.epochs, searched.batch_size, searched.lr) == (7, 64, 1.0)  # uniformint gives floats
