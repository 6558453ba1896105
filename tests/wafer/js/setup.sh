#!/usr/bin/env bash
# Fetches the four published Wafer SDKs (exact versions, unmodified) and what the drivers need
# (ws, express/body-parser as the Wafer 1 demo, koa/koa-bodyparser/koa-router as the wafer2
# quickstart) from npm into tests/wafer/js/node_modules (git-ignored), and prints that path.
#
#   wafer-client-sdk 0.8.4, wafer2-client-sdk 2.1.0, qcloud-weapp-server-sdk 0.8.2, wafer-node-sdk 1.4.5
#
# Idempotent and fast: when node_modules matches package.json + package-lock.json (a stamp of
# their hash) and the four SDKs are at the pinned versions, nothing is fetched (~0.1 s).
# Needs node >= 14 and npm. Install scripts are not run (none is needed).
set -euo pipefail
cd "$(dirname "$0")"

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "setup.sh: '$tool' is required (Debian: apt-get install nodejs npm)" >&2
        exit 1
    fi
done

STAMP=node_modules/.wafer-setup-stamp
want="$(cat package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1)"

check_versions() {
    node -e '
        const want = {"wafer-client-sdk":"0.8.4","wafer2-client-sdk":"2.1.0","qcloud-weapp-server-sdk":"0.8.2","wafer-node-sdk":"1.4.5"};
        for (const [n, v] of Object.entries(want)) {
            let got;
            try { got = require("./node_modules/" + n + "/package.json").version; } catch (e) { got = "missing"; }
            if (got !== v) { console.error(`setup.sh: ${n} is ${got}, want ${v}`); process.exit(1); }
        }'
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && check_versions 2>/dev/null; then
    echo "$PWD/node_modules"
    exit 0
fi

if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2
else
    npm install --no-audit --no-fund --ignore-scripts --loglevel=error >&2
    want="$(cat package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1)"
fi
check_versions
echo "$want" > "$STAMP"
echo "$PWD/node_modules"
