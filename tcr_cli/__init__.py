"""The ``tcr-pipeline`` command line: the top layer, above the library, the flows and the dashboard.

``tcr_pipeline`` (the library) never imports this package, ``flows`` or ``dashboard``; the
command line may import them all (the layers are checked by ``lint-imports``, contracts in
pyproject.toml). One module per concern:

- :mod:`tcr_cli.main`: the app (the commands wired in --help order) and the entry point: bad input
  is one line and exit status 2, no traceback;
- :mod:`tcr_cli.options`: what the commands share: options, params, the consoles, tables;
- :mod:`tcr_cli.model_commands`: validate, prepare, train, evaluate, predict, baseline, show;
- :mod:`tcr_cli.search_commands`: search and pipeline (Prefect flows on a Dask cluster);
- :mod:`tcr_cli.prefect_server`: the temporary Prefect server a flow command starts;
- :mod:`tcr_cli.store_commands`: runs, best, store check;
- :mod:`tcr_cli.service_commands`: monitor, dashboard, slurm profiles / script;
- :mod:`tcr_cli.interruption`: SIGINT / SIGTERM, and what an interrupted command says.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from typing import Any


def _stopped_while_starting(signum: int, frame: object) -> None:
    sys.stderr.write(f"interrupted by {signal.Signals(signum).name} while starting: nothing was done\n")
    sys.stderr.flush()
    os._exit(130)


# The command's imports (torch, pandas, Prefect, Dask) take a second or more before main() installs
# its handlers (tcr_cli.interruption): a Ctrl-C or SIGTERM then is this one line and exit status
# 130, not an import's KeyboardInterrupt traceback (SIGINT) or a silent death (SIGTERM). Only when
# this package is the command (``tcr-pipeline``; ``python -m tcr_cli``, whose package is imported
# while sys.argv[0] is still "-m"), never when a program or a test imports it, nor in a process
# spawned by the command (Dask's workers re-run the console script with its argv).
_starting: dict[int, Any] = {}
_command = sys.argv[:1] == ["-m"] or os.path.basename(sys.argv[0] if sys.argv else "") == "tcr-pipeline"
if _command and multiprocessing.current_process().name == "MainProcess":
    _starting = {sig: signal.signal(sig, _stopped_while_starting) for sig in (signal.SIGINT, signal.SIGTERM)}


def started() -> None:
    """The command's own handlers take over: the ones before the imports come back first."""
    for sig, handler in _starting.items():
        signal.signal(sig, handler)
    _starting.clear()
