#!/usr/bin/env bash
# The kind path: a kind cluster with the hpchub chart and a mini HPC, portal on
# http://127.0.0.1:8000. Needs docker, kind and kubectl; helm comes from scripts/get-helm.sh.
#   scripts/kind-demo.sh up     create/reuse the cluster, build+load images, install
#   scripts/kind-demo.sh down   uninstall and delete the cluster
# Idempotent: `up` twice upgrades the release in place.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CLUSTER="${KIND_CLUSTER:-hpchub}"
NS=hpchub
TAG=dev
HELM="$(bash "$ROOT/scripts/get-helm.sh")"
KUBECTL=(kubectl --context "kind-$CLUSTER")

need() { command -v "$1" >/dev/null || { echo "kind-demo: $1 is required" >&2; exit 2; }; }

secret_from_literal() {  # name key value: create once, keep afterwards
  "${KUBECTL[@]}" -n "$NS" get secret "$1" >/dev/null 2>&1 \
    || "${KUBECTL[@]}" -n "$NS" create secret generic "$1" --from-literal="$2=$3"
}

up() {
  need docker; need kind; need kubectl
  docker info >/dev/null
  if ! kind get clusters | grep -qx "$CLUSTER"; then
    kind create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 120s
  fi
  for image in operator hub; do
    docker build -q -f "$ROOT/docker/$image.Dockerfile" -t "hpchub/$image:$TAG" "$ROOT"
  done
  docker build -q -f "$ROOT/docker/mini-hpc/Dockerfile" -t "hpchub/mini-hpc:$TAG" "$ROOT"
  kind load docker-image --name "$CLUSTER" "hpchub/operator:$TAG" "hpchub/hub:$TAG" \
    "hpchub/mini-hpc:$TAG"

  "${KUBECTL[@]}" get namespace "$NS" >/dev/null 2>&1 || "${KUBECTL[@]}" create namespace "$NS"
  secret_from_literal mini-hpc-jwt jwt.key "$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
  secret_from_literal mini-hpc-ldap password "$(head -c 18 /dev/urandom | base64 | tr -d '/+=\n')"
  if ! "${KUBECTL[@]}" -n "$NS" get secret mini-hpc-ssh-ca >/dev/null 2>&1; then
    tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' RETURN
    ssh-keygen -q -t ed25519 -N '' -C hpchub-user-ca -f "$tmp/ca"
    "${KUBECTL[@]}" -n "$NS" create secret generic mini-hpc-ssh-ca \
      --from-file=ca.pub="$tmp/ca.pub" --from-file=ca="$tmp/ca"
  fi
  "${KUBECTL[@]}" apply -f "$ROOT/docker/mini-hpc/kind.yaml"
  "${KUBECTL[@]}" -n "$NS" rollout status deployment/mini-hpc --timeout=300s

  "$HELM" upgrade --install hpchub "$ROOT/charts/hpchub" --kube-context "kind-$CLUSTER" \
    --namespace "$NS" --values "$ROOT/charts/hpchub/examples/values-kind.yaml" \
    --wait --timeout 10m
  cat <<MSG

Portal: http://127.0.0.1:8000/   demo users: alice / alice-hpc-pass, bob / bob-hpc-pass
(hpchub_stack.users). HPC cluster: kubectl --context kind-$CLUSTER get hpcclusters
Stop:   make kind-demo-down
MSG
}

down() {
  need kind
  "$HELM" uninstall hpchub --kube-context "kind-$CLUSTER" --namespace "$NS" --wait \
    >/dev/null 2>&1 || true
  kind delete cluster --name "$CLUSTER"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
