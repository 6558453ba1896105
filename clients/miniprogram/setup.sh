#!/usr/bin/env bash
# Installs the test tools (devDependencies: ws, acorn, typescript; exact versions from
# package-lock.json) into clients/miniprogram/node_modules (git-ignored). The library itself
# has no dependencies. Idempotent: when node_modules matches package.json + package-lock.json
# (a stamp of their hash) nothing is fetched. Needs node >= 14 and npm; runs no install scripts.
set -euo pipefail
cd "$(dirname "$0")"

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "setup.sh: '$tool' is required (Debian: apt-get install nodejs npm)" >&2
        exit 1
    fi
done

STAMP=node_modules/.setup-stamp
want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2
echo "$want" > "$STAMP"
