"""What the commands share: their common options, the configuration they read, the two consoles,
progress bars and metric tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tcr_pipeline.config import PARAMS_FILE, Params, resolve_params
from tcr_pipeline.errors import InputError
from tcr_pipeline.metrics import HEADLINE_METRICS as HEADLINE
from tcr_pipeline.store import Store

console = Console(stderr=True)  # messages, progress bars and errors
out = Console()  # results

ParamsOption = Annotated[
    Path | None,
    typer.Option("--params", "-p", help="params.yaml to read (default: ./params.yaml if present)."),
]
StoreOption = Annotated[
    Path | None,
    typer.Option("--store", envvar="TCR_STORE", help="Result store directory (default: ./store)."),
]
DataOption = Annotated[Path | None, typer.Option(help="Raw CSV (default: data.raw).")]


def command_params(params_file: Path | None, overrides: dict[str, Any]) -> Params:
    """The configuration of a command: ``--params`` (which must exist), else ./params.yaml when
    present, else the defaults; the command's options (None: not given) on top."""
    return resolve_params(params_file or PARAMS_FILE, overrides, required=params_file is not None)


def flow_params_file(params_file: Path | None) -> str:
    """The ``params_file`` parameter a flow gets for ``--params`` (the flow reads it itself)."""
    return str(params_file or PARAMS_FILE)


def progress_bar(label: str) -> Progress:
    """A progress bar on stderr: label, bar, done/total, a line of information, elapsed time."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    )


def metrics_table(title: str, metrics: dict[str, dict[str, float]]) -> Table:
    """The headline metrics, one column per split (or per model)."""
    table = Table(title=title)
    table.add_column("metric")
    for split in metrics:
        table.add_column(split, justify="right")
    for name in HEADLINE:
        table.add_row(name, *(f"{m.get(name, float('nan')):.4f}" for m in metrics.values()))
    return table


def existing_store(store: Path | None, hint: str = "") -> Store:
    """The store of ``--store`` / $TCR_STORE, which must be a directory already."""
    result_store = Store.from_env(store)
    if result_store.root.exists() and not result_store.root.is_dir():
        raise InputError(
            f"{result_store.root}: not a directory, so not a store (pass --store or set TCR_STORE)"
        )
    if not result_store.root.is_dir():
        raise InputError(
            f"{result_store.root}: no such store directory (pass --store or set TCR_STORE{hint})"
        )
    return result_store
