"""The ``retrain`` flow: prepare → search → promote on a new DVC-tracked version of the labelled data.

The new version is added first, by a person or a job (``dvc add`` + ``git commit`` + ``dvc
push``; docs/monitoring.md). The flow optionally ``dvc pull``s it, checks that the file is the
version DVC records, runs the ``tcr-pipeline`` flow on it and records that version (sha256 and
DVC md5) on the run and on every model it registered. Promotion is the search's own: the new
best replaces the current model only when it scores better on the same evaluation rows (the new
version's validation split); otherwise the current model is kept.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.pipeline import pipeline_flow
from tcr_pipeline.dataversion import DataVersion, data_version, stamp_data_version
from tcr_pipeline.errors import InputError
from tcr_pipeline.store import Store


@task(name="dvc-pull", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30])
def pull_task(data: str) -> None:
    """Fetch the data file's tracked version from the DVC remote (``dvc pull <file>.dvc``)."""
    target = f"{data}.dvc" if Path(f"{data}.dvc").exists() else data
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "pull", target], capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f"dvc pull {target} failed: {(done.stderr or done.stdout).strip()[-2000:]}")


@task(name="data-version", cache_policy=NO_CACHE)
def version_task(data: str, require_dvc: bool) -> dict[str, Any]:
    """The data file's sha256 and DVC md5; refuse an untracked or changed file when required."""
    version = data_version(data)
    if require_dvc and not version.tracked:
        raise InputError(f"{data}: not tracked by DVC (run `dvc add {data}` and commit the .dvc file)")
    if version.tracked and not version.current:
        raise InputError(
            f"{data}: changed since DVC recorded it (md5 {version.dvc_md5} in {version.dvc_file}, "
            f"the file has {version.md5}); run `dvc add {data}` or `dvc checkout`"
        )
    return version.model_dump(mode="json")


@task(name="record-data-version", cache_policy=NO_CACHE)
def stamp_task(store_root: str, run_id: str, version: dict[str, Any]) -> int:
    """Record the data version on the run's manifest and registered models."""
    return stamp_data_version(Store(store_root), run_id, DataVersion.model_validate(version))


@flow(name="retrain")
def retrain_flow(
    data: str,
    store: str | None = None,
    run_id: str | None = None,
    max_evals: int | None = None,
    parallelism: int | None = None,
    cluster: str | None = None,
    prepared_dir: str = "data/prepared",
    params_file: str | None = "params.yaml",
    objective: str | None = None,
    pull: bool = False,
    require_dvc: bool = True,
) -> dict[str, Any]:
    """Retrain on the data version at ``data``; the current model stays unless the new one is better."""
    logger = get_run_logger()
    if pull:
        pull_task(data)
    version = version_task(data, require_dvc)
    logger.info("data version %s: sha256 %s, dvc md5 %s", data, version["sha256"][:12], version["dvc_md5"])
    result_store = Store.from_env(store)
    outcome = pipeline_flow(
        data=data,
        run_id=run_id,
        max_evals=max_evals,
        parallelism=parallelism,
        cluster=cluster,
        store=str(result_store.root),
        prepared_dir=prepared_dir,
        params_file=params_file,
        objective=objective,
        force=False,
    )
    if version["dvc_md5"]:
        stamp_task(str(result_store.root), outcome["run_id"], version)
    registry = result_store.load_registry()
    if outcome.get("promoted"):
        logger.info("promoted %s, trained on %s", outcome["promoted"], data)
    else:
        logger.info("kept the current model %s: the new version's models are not better", registry.current)
    return {**outcome, "data_version": version, "current": registry.current}
