"""Continuous training with DVC: a new labelled data version goes in with ``dvc add`` (and a local
DVC remote), the ``retrain`` flow runs prepare → search → promote on it, and the registry records
the data version every model was trained on. The old model stays when the new one is not better.

Everything runs offline in a temporary git + DVC repository (analytics off)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tcr_pipeline.data import TCR_COLUMNS
from tcr_pipeline.errors import InputError
from tcr_pipeline.files import sha256_file
from tcr_pipeline.store import Store, data_versions

SMALL = {"model": {"kind": "small", "small_widths": [32, 16]}, "batch_size": 128, "device": "cpu"}


def run(*args: object, cwd: Path) -> str:
    """Run a command (git, or dvc through this interpreter), offline; return its stdout."""
    command = [str(a) for a in args]
    if command[0] == "dvc":
        command = [sys.executable, "-m", "dvc", *command[1:]]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git + DVC repository with a local DVC remote, the default setting (docs/monitoring.md)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    run("git", "init", "-q", cwd=repo)
    run("dvc", "init", "-q", cwd=repo)
    run("dvc", "config", "core.analytics", "false", cwd=repo)
    run("dvc", "remote", "add", "-d", "local", tmp_path / "dvc-remote", cwd=repo)
    return repo


def tcr_subsets(csv: Path, sizes: tuple[int, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two nested subsets of whole TCRs (all 14 rows each): the first ``sizes[0]``, then more."""
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    tcr = table.groupby(list(TCR_COLUMNS), sort=True).ngroup().to_numpy()
    order = np.random.default_rng(7).permutation(tcr.max() + 1)
    first = table[np.isin(tcr, order[: sizes[0]])]
    second = table[np.isin(tcr, order[: sizes[1]])]
    return first, second


def dvc_md5(dvc_file: Path) -> str:
    return str(yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"])


def write_params(path: Path, lr: list[float], epochs: list[int]) -> None:
    params = {
        "train": SMALL,
        "search": {
            "max_evals": 2,
            "parallelism": 1,  # one Dask worker: the test stays light on a two-core machine
            "n_startup": 2,
            "top_k": 2,
            "space": {
                "model.kind": {"choice": ["small"]},
                "lr": {"choice": lr},
                "epochs": {"choice": epochs},
            },
        },
    }
    path.write_text(yaml.safe_dump(params))


@pytest.mark.slow
def test_retraining_on_a_new_data_version_records_it_and_keeps_the_better_model(
    prefect_api: str, repo: Path, shipped_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.retrain import retrain_flow

    monkeypatch.chdir(repo)
    data = Path("data/pairs.csv")
    data.parent.mkdir()
    v1, v2 = tcr_subsets(shipped_csv, (60, 90))
    store = Store(repo / "store")
    # a sensible search: its best model becomes the current one
    write_params(repo / "params-good.yaml", lr=[0.01, 0.02], epochs=[15])
    # a search that cannot learn (1 epoch at lr 1e-6): not better, so it must not replace it
    write_params(repo / "params-untrained.yaml", lr=[1e-6], epochs=[1])

    # version 1: dvc add, retrain
    v1.to_csv(data, index=False)
    run("dvc", "add", data, cwd=repo)
    md5_v1, sha_v1 = dvc_md5(Path("data/pairs.csv.dvc")), sha256_file(data)
    assert md5_v1 == hashlib.md5(data.read_bytes()).hexdigest()
    first = retrain_flow(
        data=str(data), store=str(store.root), prepared_dir="prepared", params_file="params-good.yaml"
    )
    assert first["data_version"]["dvc_md5"] == md5_v1
    registry = store.load_registry()
    assert registry.current == first["promoted"] == first["current"]
    assert {(m.data_sha256, m.dvc_md5) for m in registry.models} == {(sha_v1, md5_v1)}
    assert store.load_manifest(first["run_id"]).dvc_md5 == md5_v1  # type: ignore[union-attr]
    run("dvc", "push", cwd=repo)

    # version 2: more labelled TCRs at the same path; pushed to the remote, then gone from the
    # checkout (a fresh worker): the flow pulls it
    v2.to_csv(data, index=False)
    run("dvc", "add", data, cwd=repo)
    run("dvc", "push", cwd=repo)
    md5_v2, sha_v2 = dvc_md5(Path("data/pairs.csv.dvc")), sha256_file(data)
    assert md5_v2 != md5_v1
    data.unlink()
    second = retrain_flow(
        data=str(data),
        store=str(store.root),
        prepared_dir="prepared",
        params_file="params-untrained.yaml",
        pull=True,
    )
    assert sha256_file(data) == sha_v2
    assert (second["data_version"]["sha256"], second["data_version"]["dvc_md5"]) == (sha_v2, md5_v2)
    registry = store.load_registry()
    new = [m for m in registry.models if m.run_id == second["run_id"]]
    assert len(new) == 1  # its two trials have the same (only) hyperparameters: one model, once
    assert {(m.data_sha256, m.dvc_md5) for m in new} == {(sha_v2, md5_v2)}
    # the old model is kept: the new ones are not better on the same evaluation rows
    assert second["promoted"] is None
    assert registry.current == first["promoted"]
    assert len(registry.history) == 1
    versions = data_versions(store).set_index("model_id")
    assert versions.loc[registry.current, "dvc_md5"] == md5_v1
    assert bool(versions.loc[registry.current, "current"])
    assert set(versions["dvc_md5"]) == {md5_v1, md5_v2}
    assert set(versions["data_path"]) == {str(data)}


def test_retraining_refuses_data_dvc_does_not_track_or_that_changed(tmp_path: Path) -> None:
    from flows.retrain import version_task

    data = tmp_path / "pairs.csv"
    data.write_text("CDR3_alpha,Label\nCAV,1\n")
    with pytest.raises(InputError, match="not tracked by DVC"):
        version_task.fn(str(data), require_dvc=True)
    assert version_task.fn(str(data), require_dvc=False)["dvc_md5"] is None
    md5 = hashlib.md5(data.read_bytes()).hexdigest()
    Path(f"{data}.dvc").write_text(f"outs:\n- md5: {md5}\n  size: 24\n  hash: md5\n  path: pairs.csv\n")
    assert version_task.fn(str(data), require_dvc=True)["dvc_md5"] == md5
    data.write_text("CDR3_alpha,Label\nCAV,0\n")  # changed after `dvc add`
    with pytest.raises(InputError, match="changed since DVC recorded it"):
        version_task.fn(str(data), require_dvc=True)
