"""The suite's fixtures, in modules by concern (loaded here as plugins):

- data_fixtures.py: the shipped data, a small sample of it, tiny parameters, a tiny model;
- cli_fixtures.py: running the command line in-process or as a real process;
- cli_process_fixtures.py: real CLI processes started in the background with the session;
- flow_fixtures.py: a temporary Prefect server and a work directory for the flow tests;
- dashboard_fixtures.py: a store made by a real small search;
- slurm_fixtures.py: a SLURM node (skips without SLURM, fails without it in CI).

The bad input files of test_data.py and test_cli.py are a table, bad_inputs.py. The suite must
stay fast: every stage runs on a small CSV with a small model for two epochs, except where a
test needs the whole shipped file.
"""

pytest_plugins = [
    "data_fixtures",
    "cli_fixtures",
    "cli_process_fixtures",
    "flow_fixtures",
    "dashboard_fixtures",
    "slurm_fixtures",
]
