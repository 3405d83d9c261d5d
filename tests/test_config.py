"""params.yaml is resolved in one place, ``tcr_pipeline.config.resolve_params``: the CLI, the flows
and the benchmarks all go through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcr_cli.options import command_params, flow_params_file
from tcr_pipeline.config import PARAMS_FILE, Params, resolve_params
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
