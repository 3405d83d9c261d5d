"""Fixtures for tests that run real Prefect flows: a temporary Prefect server, a small prepared set."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tcr_pipeline.config import PrepareParams
from tcr_pipeline.data import tcr_keys
from tcr_pipeline.prepare import prepare_dataset

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw" / "viral_pairs.csv"


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A temporary Prefect server for this module; its URL is exported for subprocesses."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry offline
    previous = os.environ.get("PREFECT_API_URL")
    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


def small_search_params(
    raw: Path, *, lr: tuple[float, float], epochs: dict[str, Any] | None = None, **search: Any
) -> dict[str, Any]:
    """params.yaml for a search of the small network on CPU that finishes in seconds: 1-2 epochs (or
    ``epochs``), learning rates in ``lr``; ``search`` sets the rest of the search section."""
    space = {
        "model.kind": {"choice": ["small"]},
        "lr": {"uniform": list(lr)},
        "epochs": epochs or {"integer": [1, 2]},
    }
    model = {"kind": "small", "small_widths": [32, 16]}
    return {
        "data": {"raw": str(raw)},
        "train": {"model": model, "epochs": 1, "batch_size": 256, "device": "cpu"},
        "search": {**search, "space": space},
    }


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small labelled table (60 TCRs × 14 epitopes), prepared, plus a shrunk params.yaml."""
    root = tmp_path_factory.mktemp("flows")
    frame = pd.read_csv(RAW, dtype=str, keep_default_na=False)
    keys = tcr_keys(frame)
    chosen = sorted(keys.unique())[:60]
    small = frame[keys.isin(chosen)]
    small.to_csv(root / "small.csv", index=False)
    prepare_dataset(root / "small.csv", PrepareParams(), root / "prepared")
    params = small_search_params(
        root / "small.csv", max_evals=4, parallelism=2, n_startup=2, lr=(0.001, 0.05)
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def run_search_process(
    workdir: Path, cwd: Path, prefect_api: str, *options: object, timeout: float
) -> tuple[subprocess.CompletedProcess[str], float]:
    """A real ``tcr-pipeline search --no-promote`` on ``workdir``'s prepared data and params.yaml,
    reporting to ``prefect_api``, with ``options`` (run id, store, budget, cluster); the finished
    process and its wall time in seconds."""
    command = [
        sys.executable, "-m", "tcr_cli", "search", "--prepared", str(workdir / "prepared"),
        "--params", str(workdir / "params.yaml"), "--no-promote", *map(str, options),
    ]  # fmt: skip
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "NO_COLOR": "1", "COLUMNS": "400"}
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started
