#!/usr/bin/env bash
# Install PostgreSQL for the tests (Debian's `postgresql` package) when it is missing.
# Idempotent and quiet: does nothing when an initdb is already there (on PATH or in
# /usr/lib/postgresql/N/bin). The package's own cluster is not used: the tests start a
# throwaway cluster of their own (scout/pgcluster.py), so a system service need not run.
#
#   scripts/install-postgres.sh
set -euo pipefail

if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
quiet() { "$@" >"$LOG" 2>&1 || { cat "$LOG" >&2; echo "install-postgres: failed: $*" >&2; exit 1; }; }

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
echo "install-postgres: installing Debian's postgresql package" >&2
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -qq --no-install-recommends postgresql >"$LOG" 2>&1; then
    quiet $SUDO apt-get update -qq
    quiet $SUDO apt-get install -y -qq --no-install-recommends postgresql
fi
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "install-postgres: no initdb after installing" >&2; exit 1; }
