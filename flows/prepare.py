"""The ``prepare`` flow: validate, encode and split the raw data."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tcr_pipeline.config import PrepareParams, resolve_params
from tcr_pipeline.prepare import prepare_dataset


@task(name="prepare-data", cache_policy=NO_CACHE)
def prepare_task(raw: str, prepare: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Run the library's prepare stage; return its metadata."""
    prepared = prepare_dataset(raw, PrepareParams.model_validate(prepare), out_dir)
    return prepared.meta


@flow(name="prepare")
def prepare_flow(
    data: str | None = None,
    out_dir: str = "data/prepared",
    params_file: str | None = "params.yaml",
    encoding: str | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """Raw CSV → encoded tensors + encoder in ``out_dir`` (flow parameters override params.yaml)."""
    params = resolve_params(
        params_file, {"data.raw": data, "prepare.encoding": encoding, "prepare.split": split}
    )
    meta = prepare_task(str(params.data.raw), params.prepare.model_dump(mode="json"), out_dir)
    get_run_logger().info(
        "prepared %d rows (%s, split=%s) → %s",
        meta["rows"],
        params.prepare.encoding,
        params.prepare.split,
        out_dir,
    )
    return meta
