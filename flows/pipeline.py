"""The top flow, ``tcr-pipeline``: prepare → search → promote."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.prepare import prepare_flow
from flows.runner import cluster_ahead
from flows.search import search_flow
from tcr_pipeline.config import resolve_params


@flow(name="tcr-pipeline")
def pipeline_flow(
    data: str | None = None,
    run_id: str | None = None,
    max_evals: int | None = None,
    parallelism: int | None = None,
    cluster: str | None = None,
    store: str | None = None,
    prepared_dir: str = "data/prepared",
    params_file: str | None = "params.yaml",
    objective: str | None = None,
    seed: int | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Prepare the data, search hyperparameters on the cluster, promote the best model."""
    # where it pays, the search's Dask cluster starts while the data is prepared
    search = resolve_params(
        params_file, {"search.parallelism": parallelism, "search.cluster": cluster}
    ).search
    with cluster_ahead(search.cluster, search.parallelism, run_id):
        meta = prepare_flow(data=data, out_dir=prepared_dir, params_file=params_file)
        outcome = search_flow(
            run_id=run_id, max_evals=max_evals, parallelism=parallelism, cluster=cluster, store=store,
            prepared_dir=prepared_dir, params_file=params_file, objective=objective, seed=seed,
            promote=True, force=force,
        )  # fmt: skip
    return {"data_sha256": meta["data_sha256"], **outcome}
