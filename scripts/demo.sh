#!/usr/bin/env bash
# Installs and starts the Tunnel Broker demo on this machine (a fresh Debian one is fine):
# the broker on its embedded in-memory backend, the WeChat login simulator and the demo
# business server, all on 127.0.0.1. Prints the URL to open; Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

usage() {
    cat <<'USAGE'
Usage: scripts/demo.sh [options]

Installs the project into a virtualenv (.venv, or $VENV) and starts the broker, the
WeChat simulator and the demo business server; then open the printed URL.

Options:
  --host HOST            interface for all three servers (default 127.0.0.1)
  --port PORT            demo page port (default 8000; 0 = any free port)
  --broker-port PORT     broker port (default 8080; 0 = any free port)
  --simulator-port PORT  WeChat simulator port (default 9200; 0 = any free port)
  --state-dir DIR        apps file, board database and logs (default .demo)
  --no-install           use the virtualenv as it is (skip pip install)
  --dry-run              print what would be installed and run; start nothing
  -h, --help             show this help
USAGE
}

install=1
dry_run=0
args=()
for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --no-install) install=0 ;;
        --dry-run) dry_run=1; args+=("$arg") ;;
        *) args+=("$arg") ;;
    esac
done

run() {
    if [ "$dry_run" -eq 1 ]; then
        echo "would run: $*"
    else
        "$@"
    fi
}

if [ "$install" -eq 1 ]; then
    # Debian splits venv (and its pip) out of python3.
    if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 && [ ! -x "$VENV/bin/python" ]; then
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        run $SUDO apt-get update -qq
        run env DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        run "$PYTHON" -m venv "$VENV"
    fi
    run "$VENV/bin/python" -m pip install --quiet --upgrade pip
    run "$VENV/bin/python" -m pip install --quiet -e .
fi

if [ ! -x "$VENV/bin/python" ]; then
    if [ "$dry_run" -eq 1 ]; then
        echo "would run: $VENV/bin/python -m demo_business_app.launch ${args[*]}"
        exit 0
    fi
    echo "demo: no virtualenv at $VENV (run without --no-install)" >&2
    exit 1
fi
exec "$VENV/bin/python" -m demo_business_app.launch "${args[@]}"
