#!/usr/bin/env bash
# deployments/run.sh on the login node, over SSH: from a laptop, or from GitHub Actions
# (.github/workflows/cluster-run.yml). The arguments reach run.sh exactly as given.
#
#   TCR_SSH_TARGET=me@login01 TCR_REMOTE_DIR=/path/to/tcr-pipeline \
#     deployments/ssh-run.sh DEPLOYMENT [--param KEY=VALUE ...] [--timeout SECONDS]
#
# stdout is run.sh's report (Markdown), stderr its progress; the exit status is run.sh's (0
# Completed, 1 not completed, 2 bad arguments, 3 no Prefect server, 124 timeout), or 255 when ssh
# itself failed. Losing the connection does not stop the flow run: the worker runs it.
#
#   TCR_SSH_TARGET            [user@]host, or ssh://[user@]host:port
#   TCR_REMOTE_DIR            the checkout on the login node that deployments/deploy.sh ran in
#                             (absolute, or ~/...)
#   TCR_SSH_KEY_FILE          optional: the private key to use (else ssh's own configuration)
#   TCR_SSH_KNOWN_HOSTS_FILE  optional: the only host keys to trust (strict checking)
set -euo pipefail

die() { printf '[tcr-ssh] error: %s\n' "$*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: deployments/ssh-run.sh DEPLOYMENT [run.sh options] (see deployments/README.md)"
[ -n "${TCR_SSH_TARGET:-}" ] || die "set TCR_SSH_TARGET to [user@]login-node"
[ -n "${TCR_REMOTE_DIR:-}" ] || die "set TCR_REMOTE_DIR to the tcr-pipeline checkout on the login node"

options=(-o BatchMode=yes -o ServerAliveInterval=60 -o ServerAliveCountMax=10 -o LogLevel=ERROR)
if [ -n "${TCR_SSH_KEY_FILE:-}" ]; then
  options+=(-i "$TCR_SSH_KEY_FILE" -o IdentitiesOnly=yes)
fi
if [ -n "${TCR_SSH_KNOWN_HOSTS_FILE:-}" ]; then
  options+=(-o "UserKnownHostsFile=$TCR_SSH_KNOWN_HOSTS_FILE" -o StrictHostKeyChecking=yes)
fi

# The remote login shell (bash, zsh, tcsh…) only parses `bash -s`; the command itself travels on
# stdin, quoted for bash by printf %q, so no argument is ever re-split or expanded over there.
# A directory under ~/ is expanded on the login node, not here.
# shellcheck disable=SC2088
case $TCR_REMOTE_DIR in
  '~/'*) run_sh="\"\$HOME\"/$(printf '%q' "${TCR_REMOTE_DIR#\~/}/deployments/run.sh")" ;;
  *) run_sh=$(printf '%q' "$TCR_REMOTE_DIR/deployments/run.sh") ;;
esac
printf 'exec %s%s\n' "$run_sh" "$(printf ' %q' "$@")" | ssh "${options[@]}" -- "$TCR_SSH_TARGET" 'bash -s'
