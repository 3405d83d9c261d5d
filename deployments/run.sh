#!/usr/bin/env bash
# Run a deployment, wait for its flow run, report its final state, the best model and links.
# The one command behind "From the login node" and "From GitHub" (deployments/README.md) and
# the end-to-end tests (tests/test_deployments.py).
#
#   deployments/run.sh DEPLOYMENT [--param KEY=VALUE ...] [--params JSON] [--timeout SECONDS]
#                      [--summary FILE] [--no-logs]
#   deployments/run.sh --help
#
# Progress and the flow run's logs go to stderr, the report (Markdown) to stdout, and to --summary
# FILE or $GITHUB_STEP_SUMMARY. Exit status: 0 Completed; 1 any other final state (Failed,
# Crashed, Cancelled); 2 bad arguments, unknown deployment or parameter; 3 no Prefect server;
# 124 still running after --timeout (the flow run goes on).
set -euo pipefail
# shellcheck source=deployments/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$TCR_ROOT"   # where the flow runs too (prefect.yaml's pull step): relative paths agree
exec python deployments/run.py "$@"
