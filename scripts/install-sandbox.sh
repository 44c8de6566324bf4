#!/usr/bin/env bash
# Install what Claude Code's OS sandbox needs on Linux: Debian's bubblewrap and socat (apt).
# Scout turns the sandbox on for every mode with sandbox = "auto" (the built-in ones) where
# it works, and fails tasks of sandbox = "required" modes where it does not; /health says
# which. Idempotent and quiet: does nothing when both are there; `apt-get update` only on a
# failed install. Not Linux, or no apt-get: says what to install and exits 0 (the sandbox
# is then simply unavailable; macOS needs nothing, Claude Code uses Seatbelt there).
#
#   scripts/install-sandbox.sh
set -euo pipefail

if [ "$(uname -s)" != Linux ]; then exit 0; fi
missing=""
command -v bwrap >/dev/null 2>&1 || missing="$missing bubblewrap"
command -v socat >/dev/null 2>&1 || missing="$missing socat"
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-sandbox: please install:$missing (as root); tasks run unsandboxed until then" >&2
        exit 0
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-sandbox: no apt-get here; install$missing with your package manager" >&2
    exit 0
fi
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
echo "install-sandbox: installing Debian packages:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -qq --no-install-recommends $missing >"$LOG" 2>&1; then
    $SUDO apt-get update -qq >"$LOG" 2>&1 || { cat "$LOG" >&2; exit 1; }
    $SUDO apt-get install -y -qq --no-install-recommends $missing >"$LOG" 2>&1 || { cat "$LOG" >&2; exit 1; }
fi
bwrap --ro-bind / / --dev /dev --proc /proc --unshare-all true 2>/dev/null \
    || echo "install-sandbox: bubblewrap is installed but cannot create namespaces here (see /health)" >&2
