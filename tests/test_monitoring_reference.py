"""The reference profile (tcr_pipeline/monitoring/reference.py): saved when a model is registered,
from the rows it trained on; monitoring reads it and never the raw data.

Uses the model and store of tests/test_monitoring.py (200 TCRs of the shipped data).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_monitoring import MODEL_ID, Monitored, from_training, log_stream, monitored, store  # noqa: F401

from tcr_pipeline.bundle import load_bundle
from tcr_pipeline.config import EvaluateParams, ModelParams, MonitorParams, PrepareParams, TrainParams
from tcr_pipeline.data import TCR_COLUMNS, load_pairs, tcr_keys
from tcr_pipeline.errors import InputError
from tcr_pipeline.files import sha256_file
from tcr_pipeline.monitoring import monitor_store, reference_profile, save_reference
from tcr_pipeline.monitoring.statistics import normalise_names
from tcr_pipeline.prepare import load_prepared
from tcr_pipeline.promotion import register_top
from tcr_pipeline.recipe import fit_and_save
from tcr_pipeline.splits import split_pairs
from tcr_pipeline.store import (
    ReferenceProfile,
    RegistryEntry,
    Store,
    TrialRecord,
    load_reference,
    reference_path,
)

# ruff: noqa: F811  (monitored and store, imported from test_monitoring, are parameters here)


def current(store: Store) -> RegistryEntry:
    entry = store.load_registry().current_entry
    assert entry is not None
    return entry


def forget_the_data(store: Store, tmp_path: Path) -> None:
    """Point the run's raw data and prepared directory at paths that do not exist."""
    manifest = store.load_manifest("run-1")
    assert manifest is not None
    update = {"data_path": str(tmp_path / "gone.csv"), "prepared_dir": str(tmp_path / "gone")}
    store.write_manifest(manifest.model_copy(update=update))


def test_monitor_reads_the_profile_saved_at_registration_not_the_data(
    store: Store, monitored: Monitored, tmp_path: Path
) -> None:
    entry = current(store)
    path = reference_path(store, entry)
    assert path == (store.root / entry.path).parent / "reference.json"  # beside the model's bundle
    saved = path.read_text()
    forget_the_data(store, tmp_path)
    log_stream(store, from_training(monitored.train, seed=10))
    report = monitor_store(store, MonitorParams())
    assert report.status == "healthy", [c.message for c in report.alerts]
    assert path.read_text() == saved  # read, not rebuilt
    profile = ReferenceProfile.model_validate_json(saved)
    assert profile.source == "prepared data of run run-1, at registration"
    assert not (store.root / "monitoring" / "reference").exists()  # the old cache is gone


def test_the_reference_is_the_training_split_of_a_single_model(store: Store, monitored: Monitored) -> None:
    entry = current(store)
    profile = reference_profile(store, entry, load_bundle(store.root / entry.path))
    train = normalise_names(monitored.train)
    assert profile.splits == ["train"]
    assert profile.train_rows == len(monitored.train)
    assert profile.train_tcrs == tcr_keys(train).nunique()
    assert profile.categories["Epitope"] == monitored.train["Epitope"].value_counts().to_dict()
    tcrs = train.loc[~train.duplicated(subset=list(TCR_COLUMNS))]  # genes: once per distinct TCR
    assert profile.categories["V_beta"] == tcrs["V_beta"].value_counts().to_dict()
    assert len(profile.test_scores) == len(monitored.test)
    assert profile.data_sha256 == sha256_file(monitored.raw)


def test_the_reference_of_fold_models_is_the_train_and_validation_rows(
    store: Store, monitored: Monitored
) -> None:
    """With train.folds > 1 each fold model learns from the others' train and val rows."""
    prepared = load_prepared(monitored.root / "prepared")
    small = ModelParams(kind="small", small_widths=(16, 8))
    folds = TrainParams(model=small, epochs=1, batch_size=256, seed=0, folds=2, device="cpu")
    record = TrialRecord(run_id="run-1", trial_id=1, attempt="host-1-def", status="ok")
    fit_and_save(prepared, folds, EvaluateParams(), store.model_dir(record), splits=("val",))
    entry = current(store).model_copy(
        update={
            "model_id": "run-1/0001",
            "trial_id": 1,
            "path": str(store.model_dir(record).relative_to(store.root)),
        }
    )
    profile = save_reference(store, entry, prepared)
    split = split_pairs(load_pairs(monitored.raw), PrepareParams())
    assert profile.splits == ["train", "val"]
    assert profile.train_rows == int((split == 0).sum() + (split == 1).sum())
    assert profile.train_rows > len(monitored.train)
    assert len(profile.test_scores) == int((split == 2).sum())
    assert load_reference(store, entry) == profile


def test_register_top_saves_the_profile_before_registering(store: Store, monitored: Monitored) -> None:
    entry = current(store)
    reference_path(store, entry).unlink()
    (store.root / "registry.json").unlink()
    trial = TrialRecord(
        run_id="run-1", trial_id=0, attempt="host-1-abc", status="ok", objective=0.7,
        data_sha256=entry.data_sha256,
    )  # fmt: skip
    store.write_trial(trial)
    [registered] = register_top(store, "run-1", 1, "paper")  # no prepared data: no profile
    assert registered.model_id == MODEL_ID
    assert not reference_path(store, registered).exists()
    prepared = load_prepared(monitored.root / "prepared")
    register_top(store, "run-1", 1, "paper", prepared)
    profile = load_reference(store, registered)
    assert profile is not None
    assert profile.model_id == MODEL_ID
    assert profile.train_rows == len(monitored.train)


def test_a_model_registered_before_profiles_gets_one_from_its_prepared_dir(
    store: Store, monitored: Monitored, tmp_path: Path
) -> None:
    entry = current(store)
    path = reference_path(store, entry)
    path.unlink()  # registered by an earlier version: no profile beside it
    manifest = store.load_manifest("run-1")
    assert manifest is not None
    store.write_manifest(manifest.model_copy(update={"data_path": str(tmp_path / "gone.csv")}))
    assert monitor_store(store, MonitorParams()).status == "insufficient_data"
    profile = ReferenceProfile.model_validate_json(path.read_text())  # saved for the next run
    assert profile.source == f"prepared {monitored.root / 'prepared'}"
    assert profile.train_rows == len(monitored.train)


def test_a_model_registered_before_profiles_gets_one_from_its_runs_raw_data(
    store: Store, monitored: Monitored, tmp_path: Path
) -> None:
    """The prepared directory is gone (re-prepared, cleaned up) but the manifest's data_path still
    holds the model's data version: split again as its card says, as --reference-data would."""
    entry = current(store)
    reference_path(store, entry).unlink()
    manifest = store.load_manifest("run-1")
    assert manifest is not None
    store.write_manifest(manifest.model_copy(update={"prepared_dir": str(tmp_path / "gone")}))
    assert manifest.data_path == str(monitored.raw)
    assert monitor_store(store, MonitorParams()).status == "insufficient_data"
    profile = load_reference(store, entry)
    assert profile is not None
    assert profile.source == f"raw {monitored.raw}"
    assert profile.train_rows == len(monitored.train)
    # the same file holding another data version is not used
    reference_path(store, entry).unlink()
    changed = tmp_path / "changed.csv"
    changed.write_bytes(monitored.raw.read_bytes()[:-200])
    store.write_manifest(manifest.model_copy(update={"prepared_dir": None, "data_path": str(changed)}))
    with pytest.raises(InputError, match=f"tried {changed} \\(a different data version\\)"):
        monitor_store(store, MonitorParams())


def test_without_a_profile_or_its_data_monitor_says_so_in_one_line(
    store: Store, monitored: Monitored, tmp_path: Path
) -> None:
    entry = current(store)
    reference_path(store, entry).unlink()
    forget_the_data(store, tmp_path)
    other = tmp_path / "other.csv"
    other.write_bytes(monitored.raw.read_bytes()[:-200])  # another data version
    with pytest.raises(InputError) as error:
        monitor_store(store, MonitorParams(), reference_data=other)
    message = str(error.value)
    assert "\n" not in message
    assert f"model {MODEL_ID} has no saved reference profile" in message
    assert f"{other} (a different data version)" in message
    assert f"{tmp_path / 'gone'} (not a prepared directory)" in message
    assert f"{tmp_path / 'gone.csv'} (missing)" in message  # the run's raw data, tried last
    assert "reference_data" in message
    # …unless the model's own data version is passed explicitly: split again as its card says
    assert monitor_store(store, MonitorParams(), reference_data=monitored.raw).status == "insufficient_data"
    profile = load_reference(store, entry)
    assert profile is not None
    assert profile.source == f"raw {monitored.raw}"
    assert profile.train_rows == len(monitored.train)


@pytest.mark.slow
def test_the_monitor_command_without_a_profile_or_its_data_prints_only_the_one_line(
    prefect_api: str, store: Store, tmp_path: Path
) -> None:
    """A real process, whose Prefect logs reach its stderr: no task-failure log before the line."""
    from cli_fixtures import run_cli_process

    reference_path(store, current(store)).unlink()
    forget_the_data(store, tmp_path)
    result = run_cli_process("monitor", "--store", store.root, cwd=tmp_path, timeout=240)
    assert result.code == 2, result.stderr[-3000:]
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert not [x for x in lines if "ERROR" in x or "Traceback" in x or "InputError" in x], result.stderr
    assert [x for x in lines if "| INFO" not in x] == lines[-1:], result.stderr  # Prefect's start lines
    line = lines[-1]
    assert line.startswith(f"error: model {MODEL_ID} has no saved reference profile"), line
    assert "(monitor --reference-data)" in line
