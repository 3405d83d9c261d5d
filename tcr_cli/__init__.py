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
