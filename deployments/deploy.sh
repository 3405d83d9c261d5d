#!/usr/bin/env bash
# Create or update the work pool, then (re)deploy every deployment of prefect.yaml. Idempotent:
# run it again after every `git pull` on the login node, from any directory.
#
#   deployments/deploy.sh
#
# Needs PREFECT_API_URL (environment or ~/.config/tcr-pipeline/env, see deployments/env.sh).
# The pool's base job template is deployments/process-work-pool.json; an existing pool keeps its
# concurrency limit and paused state, only its template and description are updated.
set -euo pipefail
# shellcheck source=deployments/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$TCR_ROOT"   # prefect deploy reads ./prefect.yaml; its pull step records $PWD, this checkout

tcr_require_api
pool=$(tcr_work_pool)
template=deployments/process-work-pool.json
description="tcr-pipeline flow runs as processes on the login node (deployments/worker.sh)"

if prefect work-pool inspect "$pool" >/dev/null 2>&1; then
  prefect work-pool update "$pool" --base-job-template "$template" --description "$description"
else
  prefect work-pool create "$pool" --type process --base-job-template "$template"
  prefect work-pool update "$pool" --description "$description"
fi

prefect --no-prompt deploy --all
tcr_say "deployed from $TCR_ROOT to work pool '$pool'; start a worker with deployments/worker.sh"
