#!/usr/bin/env bash
# Install what the browser tests need: Debian's Chromium (apt) and Playwright for Python (pip).
# Idempotent and quiet: does nothing when both are already there; runs `apt-get update`
# only when chromium has to be installed. Playwright never downloads a browser of its own:
# the tests launch /usr/bin/chromium through executable_path.
#
#   scripts/install-browser.sh            # uses .venv/bin/python when it exists, else python3
#   PYTHON=/path/to/python scripts/install-browser.sh
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
# Run a command with its output kept aside; show it only when the command fails.
quiet() { "$@" >"$LOG" 2>&1 || { cat "$LOG" >&2; echo "install-browser: failed: $*" >&2; exit 1; }; }

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# Chromium, plus fonts so that screenshots show text and emoji as people see them.
APT_PACKAGES="chromium fonts-liberation fonts-noto-color-emoji"
missing=""
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "install-browser: installing Debian packages:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The package lists are refreshed only when chromium itself is missing (or on a retry).
    if [ ! -x /usr/bin/chromium ]; then quiet $SUDO apt-get update -qq; fi
    if ! $SUDO apt-get install -y -qq --no-install-recommends $missing >"$LOG" 2>&1; then
        quiet $SUDO apt-get update -qq
        quiet $SUDO apt-get install -y -qq --no-install-recommends $missing
    fi
fi

if ! "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; then
    echo "install-browser: installing the playwright pip package" >&2
    quiet "$PYTHON" -m pip install -q --disable-pip-version-check "playwright>=1.50"
fi

# Sanity check, still quiet on success.
/usr/bin/chromium --version >/dev/null 2>&1 || { echo "install-browser: /usr/bin/chromium does not run" >&2; exit 1; }
