#!/usr/bin/env bash
# Build kube-apiserver v1.20.2 from Debian bookworm's kubernetes source package, once, and
# cache it outside the repository. No registry reachable from these machines ships the binary.
# Prints the directory holding kube-apiserver (and a link to etcd) on its last line.
#
# Honours KUBEBUILDER_ASSETS (envtest convention): if it names a directory that already holds
# kube-apiserver and etcd, nothing is built.
set -euo pipefail

VERSION=v1.20.2
CACHE=${HPCHUB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hpchub}
OUT=$CACHE/kube-apiserver-$VERSION
log() { echo "build-kube-apiserver: $*" >&2; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
  echo "$KUBEBUILDER_ASSETS"; exit 0
fi
if [ -x "$OUT/kube-apiserver" ]; then
  echo "$OUT"; exit 0
fi

for cmd in go apt-get dpkg-source; do
  command -v "$cmd" >/dev/null || { log "missing $cmd: run scripts/install-deps.sh first"; exit 1; }
done

WORK=$CACHE/build-$VERSION
rm -rf "$WORK"; mkdir -p "$WORK/src"
cd "$WORK/src"
log "downloading Debian's kubernetes source package"
# apt drops privileges to _apt for downloads; let it write here.
chmod 777 "$WORK/src"
apt-get source --download-only kubernetes >/dev/null 2>&1 || apt-get source --download-only kubernetes
orig=$(ls kubernetes_*.orig.tar.* | head -n1)
log "unpacking $orig"
mkdir unpacked
tar xf "$orig" -C unpacked
top=unpacked/$(ls unpacked | head -n1)

export GOPATH=$WORK/gopath GO111MODULE=off CGO_ENABLED=0 GOFLAGS= GOCACHE=$CACHE/go-build
mkdir -p "$GOPATH/src/k8s.io"
mv "$WORK/src/$top" "$GOPATH/src/k8s.io/kubernetes"
K=$GOPATH/src/k8s.io/kubernetes
cd "$K"

# Go 1.19 + vendored reflect2 1.0.1 segfaults the 1.20 apiserver: use Debian's newer copies.
for pkg in github.com/modern-go/reflect2 github.com/json-iterator/go; do
  rm -rf "vendor/$pkg"
  cp -r "/usr/share/gocode/src/$pkg" "vendor/$pkg"
  find "vendor/$pkg" -name '*_test.go' -delete
done

log "generating OpenAPI definitions"
go build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
inputs=$(
  {
    grep -rl --include='*.go' '+k8s:openapi-gen=true' pkg | xargs -r -n1 dirname | sed 's#^#k8s.io/kubernetes/#'
    grep -rl --include='*.go' '+k8s:openapi-gen=true' staging/src | xargs -r -n1 dirname | sed 's#^staging/src/##'
    grep -rl --include='*.go' '+k8s:openapi-gen=true' vendor | xargs -r -n1 dirname | sed 's#^vendor/##'
    printf '%s\n' k8s.io/apimachinery/pkg/apis/meta/v1 k8s.io/apimachinery/pkg/runtime k8s.io/apimachinery/pkg/version
  } | sort -u | paste -sd, -
)
"$WORK/openapi-gen" --input-dirs "$inputs" \
  --output-package k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
  --go-header-file hack/boilerplate/boilerplate.generatego.txt \
  --report-filename /dev/null

log "building kube-apiserver (a few minutes)"
ldflags="-s -w -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitVersion=$VERSION"
ldflags="$ldflags -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitMajor=1"
ldflags="$ldflags -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitMinor=20"
ldflags="$ldflags -X k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version.gitVersion=$VERSION"
go build -ldflags "$ldflags" -o "$WORK/kube-apiserver" ./cmd/kube-apiserver

mkdir -p "$OUT"
mv "$WORK/kube-apiserver" "$OUT/kube-apiserver"
etcd_bin=$(command -v etcd || true)
[ -n "$etcd_bin" ] && ln -sf "$etcd_bin" "$OUT/etcd"
rm -rf "$WORK"
log "done: $OUT/kube-apiserver"
echo "$OUT"
