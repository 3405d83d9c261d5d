"""The commands around a deployed model: ``monitor``, ``dashboard``, and ``slurm`` (cluster profiles)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tcr_cli import interruption
from tcr_cli.options import ParamsOption, StoreOption, command_params, existing_store, flow_params_file, out
from tcr_cli.prefect_server import prefect_server
from tcr_pipeline.data import load_pairs
from tcr_pipeline.errors import InputError


def monitor(
    store: StoreOption = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Labelled CSV of new data: the model's metrics on it vs its test metrics."),
    ] = None,
    window: Annotated[
        int | None, typer.Option(help="Compare the last N logged rows (default: monitor.window).")
    ] = None,
    since_hours: Annotated[float | None, typer.Option(help="Only rows of the last H hours.")] = None,
    model: Annotated[
        str | None, typer.Option(help="A registry id RUN/TRIAL (default: the current model).")
    ] = None,
    reference_data: Annotated[
        Path | None,
        typer.Option(
            help="Only for a model registered without a saved reference profile (older stores): its "
            "training CSV, when its run's data path now holds another version."
        ),
    ] = None,
    params_file: ParamsOption = None,
) -> None:
    """Compare recent queries with the model's training data, write a report, alert; exit 1 on an alert."""
    from flows.monitor import monitor_flow
    from tcr_pipeline.store import EXIT_CODES

    # checked here, before a Prefect server starts
    result_store = existing_store(store)
    command_params(params_file, {})
    if labels is not None:
        load_pairs(labels)
    with prefect_server():
        outcome = monitor_flow(
            store=str(result_store.root),
            labels=str(labels) if labels else None,
            window=window,
            since_hours=since_hours,
            model_id=model,
            reference_data=str(reference_data) if reference_data else None,
            params_file=flow_params_file(params_file),
        )
    out.print(
        f"{outcome['status']}: {len(outcome['alerts'])} alert(s), report {outcome['report']}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for message in outcome["alerts"]:
        out.print(f"  ALERT {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_CODES[outcome["status"]])


def dashboard_command(
    store: StoreOption = None,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on; anything but the loopback address needs a login."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8050,
    auth_file: Annotated[
        Path | None,
        typer.Option(help="File of user:hash lines (default: $TCR_DASHBOARD_AUTH_FILE; none: no login)."),
    ] = None,
) -> None:
    """Serve the web dashboard over a result store: runs, training, class balance, models, predict,
    the query log and monitoring (dashboard/README.md)."""
    result_store = existing_store(store, hint="; `make demo` makes one")
    try:  # the library must not need dash: the dashboard is an optional extra
        from dashboard.app import run as serve_dashboard
    except ImportError as exc:
        raise InputError(
            f"the dashboard needs the `dashboard` extra ({exc.name} is missing): "
            "pip install 'tcr-pipeline[dashboard]'"
        ) from None
    serve_dashboard(result_store.root, host=host, port=port, auth_file=auth_file)
    if "signal" in interruption.state:  # the web server catches the interrupt and returns: still exit 130
        raise typer.Exit(130)


def slurm_profiles() -> None:
    """List the cluster profiles (shipped, $TCR_PROFILES, ./profiles/)."""
    from tcr_pipeline.clusters import list_profiles, load_profile

    table = Table(title="cluster profiles")
    for column in ("name", "kind", "description", "file"):
        table.add_column(column)
    for name in list_profiles():
        profile = load_profile(name)
        table.add_row(name, profile.kind, profile.description or "", str(profile.source))
    out.print(table)


def slurm_script(
    profile: Annotated[str, typer.Option("--profile", help="Profile name or YAML path.")] = "slurm-gpu",
) -> None:
    """Print the exact job script dask-jobqueue will submit for a profile (nothing is submitted)."""
    from tcr_pipeline.clusters import load_profile, render_job_script

    out.print(render_job_script(load_profile(profile)), markup=False, highlight=False, soft_wrap=True)
