"""The ``tcr-pipeline`` app, its commands wired in the order ``--help`` lists them, and the entry
point: bad input exits with status 2 and one line, no traceback."""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import NoReturn

import typer

import tcr_cli
from tcr_cli import interruption
from tcr_cli.model_commands import baseline, evaluate, predict, prepare, show, synth, train, validate
from tcr_cli.options import console
from tcr_cli.search_commands import pipeline, search
from tcr_cli.service_commands import dashboard_command, monitor, slurm_profiles, slurm_script
from tcr_cli.store_commands import best, runs, store_check
from tcr_pipeline.errors import InfrastructureError, InputError

app = typer.Typer(
    help="Predict TCR–epitope binding: validate data, prepare, train, evaluate and predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for command in (validate, prepare, train, evaluate, search, pipeline, runs, best, monitor, predict, baseline):
    app.command()(command)
app.command("dashboard")(dashboard_command)
app.command()(show)
app.command()(synth)

store_app = typer.Typer(
    help="Check a result store: damaged records, runs left `running`.", no_args_is_help=True
)
store_app.command("check")(store_check)
app.add_typer(store_app, name="store")

slurm_app = typer.Typer(help="Cluster profiles and the SLURM job scripts they submit.", no_args_is_help=True)
slurm_app.command("profiles")(slurm_profiles)
slurm_app.command("script")(slurm_script)
app.add_typer(slurm_app, name="slurm")


_exit_hook: list[bool] = []


def main() -> None:
    """Entry point: run the app, turning bad input into one line on stderr and exit status 2."""
    # Without PREFECT_API_URL the flow commands start a temporary Prefect server; Prefect waits
    # 20 s for it by default, too little on a busy two-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry from a lab's server
    tcr_cli.started()
    interruption.state.clear()
    if not _exit_hook:  # registered before Prefect's and Dask's exit handlers: it runs after them
        atexit.register(interruption.ignore_signals_at_exit)
        _exit_hook.append(True)
    # Prefect drains its event queue at exit with "Still processing items" warnings, which would
    # follow (and bury) the one line a failed command ends with
    logging.getLogger("EventsWorker").setLevel(logging.ERROR)
    try:
        with interruption.stop_on_signals():
            app()
    except InputError as exc:
        _fail(2, str(exc))
    except InfrastructureError as exc:  # the cluster failed, not the input
        _fail(1, str(exc))
    except RuntimeError as exc:
        if "Prefect API" not in str(exc):
            raise
        # the server did not come up (or is unreachable): say so in one line, not a traceback
        _fail(
            1,
            f"{str(exc).splitlines()[0][:300]} Set PREFECT_API_URL to a running server "
            "(`prefect server start`) or PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS higher.",
        )
    except OSError as exc:  # the system refused (disk full, a read-only filesystem…): one line
        if exc.filename is None:
            raise
        _fail(1, f"{exc.filename}: {exc.strerror or exc}")
    except KeyboardInterrupt:  # typer turns it into exit status 130 itself; this is in case it does not
        interruption.report_interruption()
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130:
            interruption.report_interruption()
        interruption.report_late_signal()
        raise


def _fail(status: int, message: str) -> NoReturn:
    """One line on stderr, then exit with ``status``."""
    console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(status)
