#!/usr/bin/env bash
# Run the Prefect worker of the work pool in the foreground: it polls the server and starts each
# flow run as a process on this host, in the deployed checkout. Keep it running on the login node
# (tmux, the user systemd unit deployments/tcr-worker.service, or deployments/worker.sbatch).
#
#   deployments/worker.sh [prefect worker start options, e.g. --limit 2]
#
# Needs PREFECT_API_URL; TCR_STORE and TCR_PROFILES set here reach every flow run.
set -euo pipefail
# shellcheck source=deployments/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$TCR_ROOT"

tcr_require_api
pool=$(tcr_work_pool)
tcr_say "worker for pool '$pool' on $(hostname -s); store ${TCR_STORE:-$TCR_ROOT/store}"

# A script that starts this one in the background (`worker.sh &`) hands it SIGINT ignored, and bash
# cannot undo that; Prefect's worker turns SIGTERM into SIGINT, so it would then never stop. Reset
# SIGINT to its default in Python, then exec the worker.
exec python -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
  prefect worker start --pool "$pool" --type process --install-policy never \
  --name "${TCR_WORKER_NAME:-$(hostname -s)-$(id -un)}" "$@"
