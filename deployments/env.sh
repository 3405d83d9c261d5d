# shellcheck shell=bash
# The environment of deploy.sh, worker.sh and run.sh. Source it: . deployments/env.sh
#
# Sets TCR_ROOT (this checkout), reads the lab's settings file, puts the project's venv first on
# PATH, and makes Prefect non-interactive and quiet. The settings file holds KEY=value lines, no
# quotes, no expansion (the format of systemd's EnvironmentFile=, so the worker's unit reads the same
# file): PREFECT_API_URL, TCR_STORE, TCR_PROFILES, TCR_DASHBOARD_URL... A variable already set in the
# caller's environment wins over the file.
#
#   TCR_ENV_FILE   the settings file (default ~/.config/tcr-pipeline/env; /dev/null: none)
#   TCR_VENV       the virtual environment (default: $TCR_ROOT/.venv when it exists)

tcr_say() { printf '[tcr-deploy] %s\n' "$*" >&2; }
tcr_die() { printf '[tcr-deploy] error: %s\n' "$*" >&2; exit 2; }

TCR_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
export TCR_ROOT

# tcr_read_env_file FILE: export each KEY=value of FILE whose KEY is not set yet.
tcr_read_env_file() {
  local line key value n=0
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line=${line%$'\r'}
    case $line in '' | '#'*) continue ;; esac
    key=${line%%=*}
    value=${line#*=}
    [[ $line == *=* && $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || tcr_die "$1:$n: expected KEY=value"
    [ -n "${!key+set}" ] || export "$key=$value"
  done <"$1"
}

TCR_ENV_FILE=${TCR_ENV_FILE:-${XDG_CONFIG_HOME:-$HOME/.config}/tcr-pipeline/env}
if [ -f "$TCR_ENV_FILE" ]; then
  tcr_read_env_file "$TCR_ENV_FILE"
fi

TCR_VENV=${TCR_VENV:-$TCR_ROOT/.venv}
if [ -x "$TCR_VENV/bin/python" ]; then
  PATH="$TCR_VENV/bin:$PATH"
fi
command -v prefect >/dev/null ||
  tcr_die "prefect is not on PATH: install the project (make test, or pip install -e '.[flows]') or set TCR_VENV"

export PREFECT_CLI_PROMPT=${PREFECT_CLI_PROMPT:-false}
export PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false}

# tcr_require_api: stop unless the Prefect API URL (environment, settings file or Prefect profile)
# names a server that answers. Without one every command would start a temporary server of its
# own, and deployments would vanish with it.
tcr_require_api() {
  python - <<'EOF' || exit 3
import base64
import sys
import urllib.request

from prefect.settings import get_current_settings

settings = get_current_settings()
if not settings.api.url:
    sys.exit(
        "[tcr-deploy] error: PREFECT_API_URL is not set: point it at the lab's Prefect server, "
        "e.g. http://login01:4200/api (deployments/README.md)"
    )
request = urllib.request.Request(settings.api.url.rstrip("/") + "/health")
if settings.api.auth_string:  # a server started with PREFECT_SERVER_API_AUTH_STRING
    token = base64.b64encode(settings.api.auth_string.get_secret_value().encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
try:
    urllib.request.urlopen(request, timeout=10)
except Exception as exc:
    sys.exit(f"[tcr-deploy] error: no Prefect server answers at PREFECT_API_URL ({type(exc).__name__}: {exc})")
EOF
}

# tcr_work_pool: the work pool's name, as prefect.yaml declares it (definitions.work_pool.name).
tcr_work_pool() {
  python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["definitions"]["work_pool"]["name"])' \
    "$TCR_ROOT/prefect.yaml"
}
