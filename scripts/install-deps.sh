#!/usr/bin/env bash
# Install the system packages hpchub's real-services stack needs (idempotent).
# Debian 12 (bookworm). Runs as root, or re-executes itself with sudo.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E bash "$0" "$@"
fi

PKGS=(
  # Kubernetes API server (built from Debian's source package) and etcd
  golang-go etcd-server golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev
  dpkg-dev
  # Slurm
  munge slurmctld slurmd slurm-client slurmrestd slurm-wlm-jwt-plugin
  # Directory, databases, SSH, isolation
  slapd ldap-utils redis-server postgresql openssh-server openssh-client
  bubblewrap slirp4netns uidmap procps iproute2 sudo util-linux
  # Browser tests
  chromium chromium-driver
  # Python for user-side processes (a world-readable interpreter)
  python3 python3-venv python3-dev
  curl ca-certificates
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  # Do not let package scripts start daemons: the stack starts its own, on its own ports.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; created_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ "$created_policy" = 1 ] && rm -f "$policy"
else
  echo "install-deps: system packages present"
fi

# Debian source entries, needed once to fetch the kubernetes source package.
if ! grep -rqs '^Types: deb-src' /etc/apt/sources.list.d/; then
  cat > /etc/apt/sources.list.d/hpchub-deb-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
fi

# slirp4netns needs /dev/net/tun usable by unprivileged users (Debian's usual mode).
if [ -e /dev/net/tun ]; then chmod 0666 /dev/net/tun || true; fi
# sshd privilege separation directory
mkdir -p /run/sshd
